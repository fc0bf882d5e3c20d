//! One test per kind: the typed event serializes to exactly the JSON the runner's `json!` call
//! for it produced before [`Event`] (the call's shape copied here, with the same value types),
//! and reads back to itself.

use super::*;
use crate::approval::Verdict;
use orchestrate_base::fingerprint::ChangeKind;
use serde_json::json;

/// `event` as a line's fields, next to the old `json!` object with its `event` name.
fn same_as_before(event: Event, name: &str, old: Value) {
    let mut old = old;
    old["event"] = json!(name);
    let new = serde_json::to_value(&event).unwrap();
    assert_eq!(
        serde_json::to_string(&new).unwrap(),
        serde_json::to_string(&old).unwrap(),
        "{name}"
    );
    assert_eq!(event.name(), name);
    assert_eq!(Event::from_record(&old), event, "{name} reads back");
}

#[test]
fn run_started() {
    let context = json!({"topic": "x", "n": 2});
    let Value::Object(map) = context.clone() else {
        unreachable!()
    };
    let event = Event::RunStarted(RunStarted {
        run_id: "20260101T000000Z-ab12".into(),
        workflow: "wf.yaml".into(),
        name: "wf".into(),
        fingerprint: "0123456789abcdef".into(),
        context: map.clone(),
        timestamp_utc: "20260101T000000Z".into(),
        pid: 4242,
        parent: None,
    });
    let old = json!({
        "run_id": "20260101T000000Z-ab12",
        "workflow": "wf.yaml",
        "name": "wf",
        "fingerprint": "0123456789abcdef",
        "context": map,
        "timestamp_utc": "20260101T000000Z",
        "pid": 4242u32,
    });
    same_as_before(event.clone(), "run_started", old.clone());

    // A child run's names its parent.
    let Event::RunStarted(mut started) = event else {
        unreachable!()
    };
    started.parent = Some(ParentRun {
        run_id: "P".into(),
        step: "Sub".into(),
        exec: 3,
    });
    let mut old = old;
    old["parent"] = json!({"run_id": "P", "step": "Sub", "exec": 3u64});
    same_as_before(Event::RunStarted(started), "run_started", old);
}

#[test]
fn run_resumed() {
    let event = Event::RunResumed(RunResumed {
        resumes: 2,
        journal: 7,
    });
    same_as_before(
        event,
        "run_resumed",
        json!({"resumes": 2u32, "journal": 7usize}),
    );
}

#[test]
fn run_cancelled() {
    let event = Event::RunCancelled(RunCancelled {
        by: "ann".into(),
        at: "2026-01-01T00:00:00.000001Z".into(),
        requested_by_pid: 99,
        step: Some("Work".into()),
    });
    same_as_before(
        event,
        "run_cancelled",
        json!({"by": "ann", "at": "2026-01-01T00:00:00.000001Z", "requested_by_pid": 99u32, "step": Some("Work")}),
    );
    let nothing_started = Event::RunCancelled(RunCancelled {
        step: None,
        ..RunCancelled::default()
    });
    same_as_before(
        nothing_started,
        "run_cancelled",
        json!({"by": "", "at": "", "requested_by_pid": 0u32, "step": None::<String>}),
    );
}

#[test]
fn run_finished() {
    let failed = Event::RunFinished(RunFinished {
        status: RunStatus::Failed,
        exit_code: 1,
        error: Some("step `A` (line 3) failed: exit 1".into()),
        outputs: Map::new(),
    });
    same_as_before(
        failed,
        "run_finished",
        json!({"status": RunStatus::Failed, "exit_code": 1u8, "error": Some("step `A` (line 3) failed: exit 1")}),
    );
    let mut outputs = Map::new();
    outputs.insert("summary".into(), json!("done"));
    let succeeded = Event::RunFinished(RunFinished {
        status: RunStatus::Succeeded,
        exit_code: 0,
        error: None,
        outputs: outputs.clone(),
    });
    let mut old =
        json!({"status": RunStatus::Succeeded, "exit_code": 0u8, "error": None::<String>});
    old["outputs"] = json!(outputs);
    same_as_before(succeeded, "run_finished", old);
}

#[test]
fn step_started() {
    let iteration: &[usize] = &[1, 0];
    let event = Event::StepStarted(StepStarted {
        step: "Work".into(),
        exec: 3,
        kind: "command".into(),
        iteration: vec![1, 0],
    });
    same_as_before(
        event,
        "step_started",
        json!({"step": "Work", "exec": 3u64, "kind": "command", "iteration": iteration}),
    );
}

#[test]
fn process_started() {
    let argv = vec!["sh".to_string(), "-c".into(), "echo ***".into()];
    let event = Event::ProcessStarted(ProcessStarted {
        step: "Work".into(),
        exec: 3,
        attempt: 2,
        argv: argv.clone(),
    });
    same_as_before(
        event,
        "process_started",
        json!({"step": "Work", "exec": 3u64, "attempt": 2u32, "argv": argv}),
    );
}

#[test]
fn retry_scheduled() {
    let code: i32 = -1;
    let delay = std::time::Duration::from_millis(1500);
    let event = Event::RetryScheduled(RetryScheduled {
        step: "Work".into(),
        exec: 3,
        attempt: 1,
        exit_code: i64::from(code),
        delay: delay.as_secs_f64(),
    });
    same_as_before(
        event,
        "retry_scheduled",
        json!({"step": "Work", "exec": 3u64, "attempt": 1u32, "exit_code": code, "delay": delay.as_secs_f64()}),
    );
}

#[test]
fn paused() {
    let result = json!({"runtime": "claude", "error": {"kind": "usage_limit", "resets_at": "5pm"}});
    let event = Event::Paused(Paused {
        step: "Ask".into(),
        exec: 1,
        runtime: Some("claude".into()),
        reason: "usage_limit".into(),
        until: "2026-01-01T17:00:00+00:00".into(),
        resets_at: Some("5pm".into()),
    });
    same_as_before(
        event,
        "paused",
        json!({"step": "Ask", "exec": 1u64, "runtime": result["profile"].as_str().or(result["runtime"].as_str()), "reason": "usage_limit", "until": "2026-01-01T17:00:00+00:00", "resets_at": result["error"]["resets_at"]}),
    );
    // No runtime and no reset time reported: both `null`.
    let result = json!({"error": {"kind": "usage_limit"}});
    let event = Event::Paused(Paused {
        step: "Ask".into(),
        exec: 1,
        runtime: None,
        reason: "usage_limit".into(),
        until: "u".into(),
        resets_at: None,
    });
    same_as_before(
        event,
        "paused",
        json!({"step": "Ask", "exec": 1u64, "runtime": result["profile"].as_str().or(result["runtime"].as_str()), "reason": "usage_limit", "until": "u", "resets_at": result["error"]["resets_at"]}),
    );
}

#[test]
fn step_finished() {
    let iteration: &[usize] = &[];
    let result = json!({"status": "succeeded", "exit_code": 0, "duration": 0.25, "output": "hi\n",
        "usage": {"input": 1, "output": 2, "cache_read": 0, "cache_write": 0, "reasoning": 0},
        "cost_usd": null});
    let event = Event::StepFinished(StepFinished {
        step: "Work".into(),
        exec: 4,
        iteration: vec![],
        result: Box::new(serde_json::from_value(result.clone()).unwrap()),
    });
    same_as_before(
        event,
        "step_finished",
        json!({"step": "Work", "exec": 4u64, "iteration": iteration, "result": result}),
    );
}

#[test]
fn goto() {
    let event = Event::Goto(Goto {
        from: "Review".into(),
        to: "_end".into(),
    });
    same_as_before(event, "goto", json!({"from": "Review", "to": "_end"}));
}

#[test]
fn loop_started() {
    let sequential = Event::LoopStarted(LoopStarted {
        step: "Each".into(),
        total: 3,
        max_parallel: None,
        join: None,
    });
    same_as_before(
        sequential,
        "loop_started",
        json!({"step": "Each", "total": 3usize}),
    );
    let fan_out = Event::LoopStarted(LoopStarted {
        step: "Each".into(),
        total: 3,
        max_parallel: Some(2),
        join: Some("all_success".into()),
    });
    same_as_before(
        fan_out,
        "loop_started",
        json!({"step": "Each", "total": 3usize, "max_parallel": 2u32, "join": "all_success"}),
    );
}

#[test]
fn items_and_branches() {
    let fields = || json!({"step": "Each", "index": 1usize, "total": 3usize});
    let started = Event::IterationStarted(Unit {
        step: "Each".into(),
        index: 1,
        total: 3,
    });
    same_as_before(started, "iteration_started", fields());
    let finished = Event::IterationFinished(UnitFinished {
        step: "Each".into(),
        index: 1,
        total: 3,
        status: "cancelled".into(),
    });
    let mut old = fields();
    old["status"] = json!("cancelled");
    same_as_before(finished, "iteration_finished", old);
    let branch = Event::BranchStarted(Branch {
        step: "Each".into(),
        branch: "lint".into(),
        index: 1,
        total: 3,
    });
    let mut old = fields();
    old["branch"] = json!("lint");
    same_as_before(branch, "branch_started", old.clone());
    let branch = Event::BranchFinished(BranchFinished {
        step: "Each".into(),
        branch: "lint".into(),
        index: 1,
        total: 3,
        status: "succeeded".into(),
    });
    old["status"] = json!("succeeded");
    same_as_before(branch, "branch_finished", old);
}

#[test]
fn loop_detected() {
    let event = Event::LoopDetected(LoopDetected {
        step: "Fix".into(),
        visits: 4,
        max_visits: 3,
        cycle: "Fix -> Test -> Fix".into(),
    });
    same_as_before(
        event,
        "loop_detected",
        json!({"step": "Fix", "visits": 4u32, "max_visits": 3u32, "cycle": "Fix -> Test -> Fix"}),
    );
}

#[test]
fn budget_exceeded() {
    let day: Option<(u64, f64)> = Some((100, 0.5));
    let event = Event::BudgetExceeded(BudgetExceeded {
        step: Some("Ask".into()),
        limit: "max_cost_usd_per_day".into(),
        at: "wf.yaml:4".into(),
        spent: "$1.20".into(),
        max: "$1.00".into(),
        tokens: 1200,
        cost_usd: 0.7,
        unpriced_tokens: 0,
        day_tokens: day.map(|d| d.0),
        day_cost_usd: day.map(|d| d.1),
        stopped: true,
        message: "budget exceeded".into(),
    });
    same_as_before(
        event,
        "budget_exceeded",
        json!({
            "step": Some("Ask"),
            "limit": "max_cost_usd_per_day",
            "at": "wf.yaml:4",
            "spent": "$1.20",
            "max": "$1.00",
            "tokens": 1200u64,
            "cost_usd": 0.7f64,
            "unpriced_tokens": 0u64,
            "day_tokens": day.map(|d| d.0),
            "day_cost_usd": day.map(|d| d.1),
            "stopped": true,
            "message": "budget exceeded",
        }),
    );
    let run_limit = Event::BudgetExceeded(BudgetExceeded {
        step: None,
        day_tokens: None,
        day_cost_usd: None,
        ..BudgetExceeded::default()
    });
    same_as_before(
        run_limit,
        "budget_exceeded",
        json!({"step": None::<&str>, "limit": "", "at": "", "spent": "", "max": "", "tokens": 0u64,
            "cost_usd": 0.0f64, "unpriced_tokens": 0u64, "day_tokens": None::<u64>,
            "day_cost_usd": None::<f64>, "stopped": false, "message": ""}),
    );
}

#[test]
fn budget_unpriced() {
    let at_start = Event::BudgetUnpriced(BudgetUnpriced {
        step: Some("Ask".into()),
        runtime: Some("codex".into()),
        model: Some("gpt-x".into()),
        unpriced_tokens: None,
        message: "no price".into(),
    });
    same_as_before(
        at_start,
        "budget_unpriced",
        json!({"step": "Ask", "runtime": "codex", "model": "gpt-x", "message": "no price"}),
    );
    let running = Event::BudgetUnpriced(BudgetUnpriced {
        unpriced_tokens: Some(500),
        message: "no price".into(),
        ..BudgetUnpriced::default()
    });
    same_as_before(
        running,
        "budget_unpriced",
        json!({"unpriced_tokens": 500u64, "message": "no price"}),
    );
}

#[test]
fn loop_not_converging() {
    let on_stall: Option<String> = None;
    let event = Event::LoopNotConverging(LoopNotConverging {
        step: "Review".into(),
        reason: "repeated".into(),
        rounds: 2,
        counts: vec![3, 2, 2],
        fingerprints: vec!["00000000000000aa".into(), "00000000000000bb".into()],
        on_stall: on_stall.clone(),
    });
    same_as_before(
        event,
        "loop_not_converging",
        json!({
            "step": "Review",
            "reason": "repeated",
            "rounds": 2u32,
            "counts": [3u64, 2, 2],
            "fingerprints": ["00000000000000aa", "00000000000000bb"],
            "on_stall": on_stall,
        }),
    );
}

#[test]
fn phases() {
    let last: Option<Phase> = Some(Phase::Readonly);
    let entered = Event::PhaseEntered(PhaseEntered {
        step: "Build".into(),
        phase: Phase::Write,
        from: last,
        runtime: "claude".into(),
    });
    same_as_before(
        entered,
        "phase_entered",
        json!({"step": "Build", "phase": Phase::Write, "from": last, "runtime": "claude"}),
    );
    let first = Event::PhaseEntered(PhaseEntered {
        step: "Plan".into(),
        phase: Phase::Plan,
        from: None,
        runtime: "codex".into(),
    });
    same_as_before(
        first,
        "phase_entered",
        json!({"step": "Plan", "phase": Phase::Plan, "from": None::<Phase>, "runtime": "codex"}),
    );
    let note = Event::RuntimeNote(RuntimeNote {
        step: "Plan".into(),
        runtime: "codex".into(),
        note: "plan runs as readonly".into(),
    });
    same_as_before(
        note,
        "runtime_note",
        json!({"step": "Plan", "runtime": "codex", "note": "plan runs as readonly"}),
    );
    let changes = vec![Change {
        path: "src/a.rs".into(),
        kind: ChangeKind::Modified,
    }];
    let violation = Event::PhaseViolation(PhaseViolation {
        step: "Plan".into(),
        phase: Phase::Readonly,
        changes: changes.clone(),
    });
    same_as_before(
        violation,
        "phase_violation",
        json!({"step": "Plan", "phase": Phase::Readonly, "changes": changes}),
    );
}

#[test]
fn approvals() {
    let files = vec!["plan.md".to_string()];
    let requested = Event::ApprovalRequested(ApprovalRequested {
        step: "Gate".into(),
        request: ".orchestrate/approvals/R/Gate.request.json".into(),
        message: "ship it?".into(),
        artifacts: files.clone(),
    });
    same_as_before(
        requested,
        "approval_requested",
        json!({"step": "Gate", "request": ".orchestrate/approvals/R/Gate.request.json", "message": "ship it?", "artifacts": files}),
    );
    let decision = Decision {
        decision: Verdict::Reject,
        request_id: Some("q1".into()),
        reason: Some("no tests".into()),
        note: None,
        by: Some("ann".into()),
        at: None,
    };
    let decided = Event::ApprovalDecided(ApprovalDecided {
        step: "Gate".into(),
        decision: decision.clone(),
    });
    same_as_before(
        decided,
        "approval_decided",
        json!({"step": "Gate", "decision": decision}),
    );
    let unreadable = Event::ApprovalUnreadable(ApprovalUnreadable {
        step: "Gate".into(),
        error: "expected value at line 1".into(),
    });
    same_as_before(
        unreadable,
        "approval_unreadable",
        json!({"step": "Gate", "error": "expected value at line 1"}),
    );
}

#[test]
fn enqueued() {
    let task = EnqueuedTask {
        role: "reviewer".into(),
        id: "t1".into(),
        file: ".orchestrate/inbox/reviewer/t1.task".into(),
        correlation_id: "R".into(),
        spooled: None,
    };
    let result = json!({"status": "succeeded", "exit_code": 0, "task": task});
    let event = Event::Enqueued(Enqueued {
        step: "Hand".into(),
        task,
    });
    same_as_before(
        event,
        "enqueued",
        json!({"step": "Hand", "task": result["task"]}),
    );
}

#[test]
fn children() {
    let started = Event::ChildStarted(ChildStarted {
        step: "Sub".into(),
        exec: 2,
        workflow: "child.yaml".into(),
        run_root: ".orchestrate/runs/R/children/0002-Sub".into(),
    });
    same_as_before(
        started,
        "child_started",
        json!({"step": "Sub", "exec": 2u64, "workflow": "child.yaml", "run_root": ".orchestrate/runs/R/children/0002-Sub"}),
    );
    let result = json!({"status": "failed", "exit_code": 1});
    let run_id: Option<String> = None;
    let finished = Event::ChildFinished(ChildFinished {
        step: "Sub".into(),
        exec: 2,
        workflow: "child.yaml".into(),
        run_id: run_id.clone(),
        run_root: "r".into(),
        resumed: false,
        reused: true,
        status: Some("failed".into()),
        exit_code: Some(1),
    });
    same_as_before(
        finished,
        "child_finished",
        json!({
            "step": "Sub",
            "exec": 2u64,
            "workflow": "child.yaml",
            "run_id": run_id,
            "run_root": "r",
            "resumed": false,
            "reused": true,
            "status": result["status"],
            "exit_code": result["exit_code"],
        }),
    );
}

#[test]
fn a_kind_this_version_does_not_know_is_skipped_not_an_error() {
    let record = json!({"v": 1, "seq": 3, "ts": "t", "event": "something_new", "step": "X"});
    assert_eq!(Event::from_record(&record), Event::Unknown);
    // A known kind whose fields do not fit it is not guessed at either.
    let record = json!({"event": "step_started", "exec": "three"});
    assert_eq!(Event::from_record(&record), Event::Unknown);
    assert_eq!(Event::from_record(&json!({"no": "event"})), Event::Unknown);
    assert!(
        serde_json::to_value(Event::Unknown).is_err(),
        "never written"
    );
}

#[test]
fn fields_an_older_log_lacks_default() {
    let record = json!({"event": "run_resumed", "resumes": 1});
    assert_eq!(
        Event::from_record(&record),
        Event::RunResumed(RunResumed {
            resumes: 1,
            journal: 0
        })
    );
}

#[test]
fn the_envelope_reads_beside_the_event() {
    let record = json!({"v": 1, "seq": 9, "ts": "2026-01-01T00:00:00.000001Z", "lane": [3, 1],
        "event": "goto", "from": "A", "to": "B"});
    let envelope = Envelope::from_record(&record);
    assert_eq!(
        envelope,
        Envelope {
            v: 1,
            seq: 9,
            ts: "2026-01-01T00:00:00.000001Z".into(),
            lane: vec![3, 1],
        }
    );
    assert_eq!(
        Event::from_record(&record),
        Event::Goto(Goto {
            from: "A".into(),
            to: "B".into()
        })
    );
    assert_eq!(Envelope::from_record(&json!({"event": "goto"})).v, 1);
}

/// `docs/schema/events.schema.json` is the schema of these types; `ORCHESTRATE_BLESS=1`
/// rewrites it after a change to them.
#[test]
fn the_published_schema_is_generated_from_the_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/schema/events.schema.json");
    let schema = schemars::schema_for!(Event);
    let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    if std::env::var_os("ORCHESTRATE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        published == text,
        "{} is not the schema of `Event`: run `ORCHESTRATE_BLESS=1 cargo test -p orchestrate-engine \
         published_schema` and review the change",
        path.display()
    );
}
