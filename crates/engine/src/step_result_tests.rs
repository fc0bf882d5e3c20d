//! Pins the bytes of step results: each is built the way the runner built it before
//! [`StepResult`] (with `json!`, keys sorted by serde_json) and must read into the type and
//! write back to the same string, in events.jsonl's compact form and state.json's pretty one.

use serde_json::{Value, json};

use super::*;

/// Reads `old` as a [`StepResult`] and writes it back: the same bytes, compact and pretty.
fn same_bytes(old: Value) -> StepResult {
    let typed: StepResult = serde_json::from_value(old.clone())
        .unwrap_or_else(|err| panic!("does not read: {err}\n{old:#}"));
    assert_eq!(
        serde_json::to_string(&typed).unwrap(),
        serde_json::to_string(&old).unwrap()
    );
    assert_eq!(
        serde_json::to_string_pretty(&typed).unwrap(),
        serde_json::to_string_pretty(&old).unwrap()
    );
    assert!(typed.extra.is_empty(), "not typed: {:?}", typed.extra);
    typed
}

fn timed(mut result: Value) -> Value {
    result["started_at"] = json!("2026-01-01T00:00:00.000000Z");
    result["finished_at"] = json!("2026-01-01T00:00:01.250000Z");
    result["duration"] = json!(1.25);
    result
}

#[test]
fn a_command_step_result_keeps_its_bytes() {
    let old = timed(json!({
        "status": "succeeded", "exit_code": 0, "outcome": {"kind": "exited", "code": 0},
        "truncated": false, "output": "hi", "attempts": 1, "stdout_log": ".orchestrate/runs/r/logs/0001-A.stdout",
        "pid": 4242,
    }));
    let typed = same_bytes(old.clone());
    assert_eq!(typed.status, StepStatus::Succeeded);
    assert_eq!(typed.outcome, Some(Outcome::Exited { code: 0 }));
    let built = StepResult {
        exit_code: Some(0),
        outcome: Some(Outcome::Exited { code: 0 }),
        truncated: Some(false),
        output: Some("hi".into()),
        attempts: Some(1),
        stdout_log: Some(".orchestrate/runs/r/logs/0001-A.stdout".into()),
        pid: Some(4242),
        started_at: Some("2026-01-01T00:00:00.000000Z".into()),
        finished_at: Some("2026-01-01T00:00:01.250000Z".into()),
        duration: Some(1.25),
        ..StepResult::new(StepStatus::Succeeded)
    };
    assert_eq!(
        serde_json::to_string(&built).unwrap(),
        serde_json::to_string(&old).unwrap()
    );
}

#[test]
fn failed_skipped_and_interrupted_results_keep_their_bytes() {
    let failed = json!({"status": "failed", "exit_code": 2, "error": "no such step"});
    same_bytes(failed.clone());
    assert_eq!(
        serde_json::to_string(&StepResult::failed(2, "no such step")).unwrap(),
        failed.to_string()
    );
    let skipped = json!({"status": "skipped", "started_at": "t", "duration": 0.0});
    assert_eq!(same_bytes(skipped).duration, Some(0.0));
    same_bytes(
        json!({"status": "interrupted", "exit_code": 130, "error": "interrupted", "poll_count": 3}),
    );
    same_bytes(timed(
        json!({"status": "succeeded", "exit_code": 0, "ended_run": true}),
    ));
    let rejected = json!({"status": "rejected", "exit_code": 0, "rejected_by": "rejected_when", "output": "no"});
    same_bytes(rejected);
}

#[test]
fn captured_lines_json_and_a_parse_error_keep_their_bytes() {
    same_bytes(json!({
        "status": "succeeded", "exit_code": 0, "outcome": {"kind": "exited", "code": 0},
        "output_capture": "lines", "lines": ["a", "b"], "truncated": false,
    }));
    same_bytes(json!({
        "status": "succeeded", "exit_code": 0, "outcome": {"kind": "exited", "code": 0},
        "output_capture": "json", "json": {"z": 1, "a": [null, "x"]}, "truncated": false,
    }));
    // `allow_parse_error`: `json` is present and null.
    let typed = same_bytes(json!({
        "status": "succeeded", "exit_code": 0, "outcome": {"kind": "exited", "code": 0},
        "output_capture": "json", "json": null, "parse_error": "expected value at line 1 column 1",
        "output": "oops", "truncated": false,
    }));
    assert_eq!(typed.json, Some(Value::Null));
    // A schema violation.
    same_bytes(json!({
        "status": "failed", "exit_code": 2, "output_capture": "json", "json": {"n": "x"},
        "error": {"kind": "schema_violation", "message": "the output does not match"},
        "violations": [{"path": "/n", "message": "\"x\" is not of type \"integer\""}],
    }));
}

#[test]
fn agent_results_with_their_nulls_keep_their_bytes() {
    let typed = same_bytes(timed(json!({
        "status": "succeeded", "exit_code": 0, "outcome": {"kind": "exited", "code": 0},
        "runtime": "claude", "profile": "claude", "model": null, "requested_model": null,
        "phase": "readonly", "result": "done", "session_id": null,
        "usage": {"input": 1, "output": 2, "cache_read": 3, "cache_write": 4, "reasoning": 0},
        "cost_usd": null, "turns": null, "denials": [], "api_retries": 0, "truncated": false,
        "output": "done", "attempts": 1,
    })));
    assert_eq!(typed.model, Some(None));
    assert_eq!(typed.cost_usd, Some(None));
    same_bytes(json!({
        "status": "succeeded", "exit_code": 0, "runtime": "codex", "profile": "fast",
        "model": "gpt-5", "requested_model": "gpt-5", "phase": "write", "result": "ok",
        "session_id": "abc", "usage": {"input": 10, "output": 2, "cache_read": 0, "cache_write": 0, "reasoning": 1},
        "usage_cumulative": {"input": 20, "output": 4, "cache_read": 0, "cache_write": 0, "reasoning": 1},
        "cost_usd": 0.0125, "cost_usd_cumulative": null, "turns": 3,
        "denials": [{"tool": "Bash", "input": {"command": "rm -rf /"}}], "api_retries": 2,
        "truncated": false, "output": "ok",
    }));
    // Errors: the parser's (with its nulls), the engine's, a provider's with its runtime.
    let typed = same_bytes(json!({
        "status": "failed", "exit_code": 1,
        "error": {"kind": "usage_limit", "message": "limit", "http_status": null, "resets_at": "5pm"},
    }));
    let error = typed
        .error
        .as_ref()
        .and_then(StepError::classified)
        .unwrap();
    assert_eq!(
        error.kind,
        ErrorKind::Known(orchestrate_runtime::parse::ErrorKind::UsageLimit)
    );
    // A class this version does not know is kept as written.
    let newer = json!({"status": "failed", "error": {"kind": "quota_v2", "message": "m"}});
    same_bytes(newer.clone());
    let read: StepResult = serde_json::from_value(newer).unwrap();
    let kind = read.error.as_ref().and_then(StepError::kind).unwrap();
    assert_eq!(kind, &ErrorKind::Unknown("quota_v2".into()));
    assert_eq!(kind.label(), "quota_v2");
    assert_eq!(error.resets_at, Some(Some("5pm".into())));
    let timeout = json!({"status": "failed", "error": {"kind": "timeout", "message": "timed out"}});
    same_bytes(timeout.clone());
    let built = StepResult {
        error: Some(StepError::Classified(ClassifiedError::new(
            orchestrate_runtime::parse::ErrorKind::Timeout,
            "timed out",
        ))),
        ..StepResult::new(StepStatus::Failed)
    };
    assert_eq!(built.to_value(), timeout);
    same_bytes(json!({
        "status": "failed", "exit_code": 1,
        "error": {"kind": "auth", "message": "claude exited with code 1: no", "runtime": "claude",
                  "http_status": 401, "resets_at": null},
    }));
    // A phase violation names each changed path and how it changed.
    same_bytes(json!({
        "status": "failed", "exit_code": 1,
        "changed_files": [{"path": "src/a.rs", "kind": "modified"}, {"path": "b", "kind": "type_changed"}],
        "error": {"kind": "phase_violation", "message": "changed 2 files"},
        "budget_exceeded": "max_usd",
    }));
}

#[test]
fn outcomes_of_every_kind_keep_their_bytes() {
    for outcome in [
        json!({"kind": "exited", "code": 3}),
        json!({"kind": "signaled", "signal": 9}),
        json!({"kind": "timed_out"}),
        json!({"kind": "idle_timed_out", "after_ms": 1500}),
        json!({"kind": "stopped"}),
        json!({"kind": "cancelled"}),
        json!({"kind": "spawn_failed", "message": "x not found"}),
    ] {
        same_bytes(json!({"status": "failed", "exit_code": 1, "outcome": outcome}));
    }
    // A bare kind, as a hand-written record may say it, still reads.
    let typed: StepResult =
        serde_json::from_value(json!({"status": "failed", "outcome": "timed_out"})).unwrap();
    assert_eq!(typed.outcome, Some(Outcome::TimedOut));
}

#[test]
fn fan_out_results_keep_their_bytes() {
    same_bytes(timed(json!({
        "status": "succeeded", "exit_code": 0, "iterations": 2, "total": 3, "max_parallel": 2,
        "join": "all_done", "succeeded": 2, "failed": 0, "cancelled": 0, "not_started": 1,
        "results_truncated": true,
        "results": [
            {"index": 0, "item": "a", "status": "succeeded", "exit_code": 0, "step": "S", "output": "x"},
            {"index": 1, "item": {"k": [1]}, "status": "succeeded", "exit_code": 0, "step": "S", "output_dropped": true},
            {"index": 2, "item": null, "status": "not_started", "exit_code": null},
        ],
    })));
    let outcome = json!({"branch": "b", "status": "failed", "exit_code": 1, "error": "step `X` failed", "step": "X", "json": null});
    same_bytes(json!({
        "status": "failed", "exit_code": 1, "error": "step `X` failed", "total": 2, "join": "all_success",
        "succeeded": 0, "failed": 1, "cancelled": 1, "not_started": 0,
        "results": [outcome, {"branch": "c", "status": "cancelled", "exit_code": 130}],
        "branches": {"b": outcome, "c": {"branch": "c", "status": "cancelled", "exit_code": 130}},
    }));
    let not_started = json!({"index": 3, "item": "d", "status": "not_started", "exit_code": null});
    let built = ItemOutcome {
        index: Some(3),
        item: Some(json!("d")),
        ..ItemOutcome::new(ItemStatus::NotStarted, None)
    };
    assert_eq!(
        serde_json::to_string(&built).unwrap(),
        not_started.to_string()
    );
}

#[test]
fn approval_wait_enqueue_and_workflow_results_keep_their_bytes() {
    same_bytes(json!({
        "status": "succeeded", "exit_code": 0, "decision": "approve", "reason": "", "note": "ok",
        "by": null, "at": "2026-01-01T00:00:00Z", "waited": 0.4,
    }));
    same_bytes(json!({
        "status": "failed", "exit_code": 124, "error": "timed out", "files": ["a.txt"],
        "wait_duration": 2.0, "poll_count": 4,
    }));
    same_bytes(json!({
        "status": "succeeded", "exit_code": 0,
        "task": {"role": "dev", "id": "t-1", "file": "inbox/dev/t-1.task", "correlation_id": "c"},
    }));
    same_bytes(json!({
        "status": "succeeded", "exit_code": 0, "run_id": "20260101-x", "run_root": ".orchestrate/runs/p/children/c",
        "workflow": "child.yaml", "outputs": {}, "last_step": "Last",
        "usage": {"input": 1, "output": 1, "cache_read": 0, "cache_write": 0, "reasoning": 0}, "cost_usd": 0.5,
        "output_file": "out.txt",
    }));
}

#[test]
fn fields_of_a_newer_version_survive_a_read() {
    let old = json!({"status": "succeeded", "exit_code": 0, "zz_new": {"a": 1}, "aa_new": [1],
        "error": {"kind": "brand_new", "message": "m", "hint": "h"},
        "results": [{"status": "succeeded", "exit_code": 0, "lane_new": 3}]});
    let typed: StepResult = serde_json::from_value(old.clone()).unwrap();
    assert_eq!(typed.extra["zz_new"], json!({"a": 1}));
    assert_eq!(
        typed.error.as_ref().and_then(StepError::kind),
        Some(&ErrorKind::Unknown("brand_new".into()))
    );
    assert_eq!(typed.to_value(), old);
    // Written back sorted, as before, whatever the field.
    assert_eq!(serde_json::to_string(&typed).unwrap(), old.to_string());
    assert_eq!(typed.error_text().unwrap(), "brand_new: m");
}

#[test]
fn a_parsed_cli_error_is_written_as_the_parser_serialized_it() {
    use orchestrate_runtime::parse::{ErrorKind as Parsed, RuntimeError};
    for (http_status, resets_at) in [(None, None), (Some(429), Some("5pm".to_string()))] {
        let error = RuntimeError {
            kind: Parsed::RateLimit,
            message: "slow down".into(),
            http_status,
            resets_at,
        };
        // Before: `serde_json::to_value(error)` into the result.
        let old = json!({"status": "failed", "error": serde_json::to_value(&error).unwrap()});
        let new = StepResult {
            error: Some(StepError::Classified(error.into())),
            ..StepResult::new(StepStatus::Failed)
        };
        assert_eq!(
            serde_json::to_string(&new).unwrap(),
            serde_json::to_string(&old).unwrap()
        );
    }
}
