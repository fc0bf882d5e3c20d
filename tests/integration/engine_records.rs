//! The engine's records: what they say after a budget crossing and a resume, what `status` and
//! `report` read back, a step's captured output, a run's result on stdout, the stand-in's usage.

use std::time::Duration;

use serde_json::{Value, json};

use crate::budgets::{AGENT_STEP, stand_in};
use crate::harness::*;

/// Generous: every run here ends long before it on an idle machine; a loaded one gets room.
const DEADLINE: Duration = Duration::from_secs(120);

fn count(events: &[Value], name: &str) -> usize {
    events.iter().filter(|e| e["event"] == name).count()
}

/// A failure handler after the step a budget stops: a crossing must not reach it.
const RECOVER: &str = r#"    on: {failure: {goto: Recover}}
  - name: After
    command: [touch, after]
    on: {success: {goto: _end}}
  - name: Recover
    command: [touch, recovered]
"#;

/// The run stopped at `step` by a crossing of `limit`: no `on` edge, one `budget_exceeded`
/// (the stopped step's), and the run's error names that step.
fn stopped_without_an_edge(ws: &Ws, run: &Run, step: &str, limit: &str) {
    run.code(1)
        .stderr_has(&format!("budget exceeded: {limit}"))
        .stderr_has(&format!(
            "step `{step}` was running and its processes were stopped"
        ));
    assert!(!ws.exists("recovered"), "the failure handler ran");
    assert!(!ws.exists("after"));
    let events = run.events();
    assert_eq!(
        count(&events, "goto"),
        0,
        "an `on` edge was taken: {events:#?}"
    );
    assert_eq!(count(&events, "budget_exceeded"), 1, "{events:#?}");
    let state = run.state();
    let error = state["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("step `{step}` was running")),
        "{error}"
    );
    assert_eq!(run.step(step)["budget_exceeded"], limit);
}

/// After the limit is raised in the workflow file, resume runs the stopped step again and
/// goes on from it, and the failure handler still does not run.
fn resume_reruns_the_stopped_step(ws: &Ws, run: &Run, step: &str) {
    let resumed = run_within(ws, &["resume", run.id()], DEADLINE);
    resumed.ok();
    assert!(ws.exists("after"));
    assert!(!ws.exists("recovered"), "resume ran the failure handler");
    let state = resumed.state();
    assert_eq!(state["status"], "succeeded");
    assert_eq!(state["steps"][step]["status"], "succeeded");
    assert!(state["steps"][step].get("budget_exceeded").is_none());
}

#[test]
fn a_wall_budget_crossing_takes_no_failure_edge_and_resume_reruns_the_stopped_step() {
    let ws = Ws::new();
    let workflow = format!(
        "budget:\n  max_wall_sec: 0.5\nsteps:\n  - name: Long\n    command: [sh, -c, 'test -f go || exec sleep 600']\n{RECOVER}"
    );
    ws.workflow(&workflow);
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    stopped_without_an_edge(&ws, &run, "Long", "max_wall_sec");

    ws.workflow(&workflow.replace("max_wall_sec: 0.5", "max_wall_sec: 600"));
    ws.file("go", "");
    resume_reruns_the_stopped_step(&ws, &run, "Long");
}

/// The stand-in `claude` of `budgets.rs`, which finishes at once (instead of sleeping until it
/// is stopped) once `WS/go` exists.
fn quick_stand_in(ws: &mut Ws) {
    stand_in(ws);
    let script = ws.read("bin/claude").replace(
        "sleep 600 &",
        "if [ -f \"$dir/../go\" ]; then true & else sleep 600 & fi",
    );
    ws.script("bin/claude", &script);
}

#[test]
fn a_token_budget_crossing_takes_no_failure_edge_and_resume_reruns_the_stopped_step() {
    let mut ws = Ws::new();
    quick_stand_in(&mut ws);
    let workflow = format!("budget:\n  max_tokens: 2000\nsteps:{AGENT_STEP}{RECOVER}");
    ws.workflow(&workflow);
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    stopped_without_an_edge(&ws, &run, "Impl", "max_tokens");

    ws.workflow(&workflow.replace("max_tokens: 2000", "max_tokens: 100000"));
    ws.file("go", "");
    resume_reruns_the_stopped_step(&ws, &run, "Impl");
}

#[test]
fn a_cost_budget_crossing_takes_no_failure_edge_and_resume_reruns_the_stopped_step() {
    let mut ws = Ws::new();
    quick_stand_in(&mut ws);
    let workflow = format!("budget:\n  max_cost_usd: 0.02\nsteps:{AGENT_STEP}{RECOVER}");
    ws.workflow(&workflow);
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    stopped_without_an_edge(&ws, &run, "Impl", "max_cost_usd");

    // Not raised: the resume is stopped again, at the same step, and takes no edge either.
    let again = run_within(&ws, &["resume", run.id()], DEADLINE);
    again.code(1).stderr_has("budget exceeded: max_cost_usd");
    assert!(!ws.exists("recovered"));

    ws.workflow(&workflow.replace("max_cost_usd: 0.02", "max_cost_usd: 5"));
    ws.file("go", "");
    resume_reruns_the_stopped_step(&ws, &run, "Impl");
}

#[test]
fn a_crossing_inside_a_loop_takes_no_edge_of_the_loop_step() {
    let ws = Ws::new();
    ws.workflow(
        "budget:\n  max_wall_sec: 0.5\nsteps:\n  - name: Loop\n    for_each:\n      items: [a]\n      steps:\n        - name: Long\n          command: [sh, -c, 'exec sleep 600']\n    on: {failure: {goto: Recover}}\n  - name: Recover\n    command: [touch, recovered]\n",
    );
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.code(1).stderr_has("budget exceeded: max_wall_sec");
    assert!(!ws.exists("recovered"));
    let events = run.events();
    assert_eq!(count(&events, "goto"), 0, "{events:#?}");
    assert_eq!(count(&events, "budget_exceeded"), 1, "{events:#?}");
    assert!(
        run.state()["error"]
            .as_str()
            .unwrap()
            .starts_with("budget exceeded")
    );
}

/// The events of one session of a run: those after its last `run_resumed`.
fn last_session(events: &[Value]) -> Vec<Value> {
    let start = events
        .iter()
        .rposition(|e| e["event"] == "run_resumed")
        .expect("a run_resumed event");
    events[start..].to_vec()
}

#[test]
fn resume_does_not_record_a_completed_for_each_again() {
    let ws = Ws::new();
    ws.workflow(
        r#"steps:
  - name: Loop
    for_each:
      items: [a, b]
      steps:
        - name: Work
          command: [sh, -c, 'echo "$1" >> ran.log; echo "$1"', _, '${item}']
  - name: Fan
    for_each:
      items: [x, y]
      max_parallel: 2
      steps:
        - name: Item
          command: [sh, -c, 'echo "$1" >> ran.log', _, '${item}']
  - name: Branches
    parallel:
      branches:
        one:
          - name: One
            command: [sh, -c, 'echo one >> ran.log']
        two:
          - name: Two
            command: [sh, -c, 'echo two >> ran.log']
  - name: Gate
    command: [sh, -c, 'test -f flag']
  - name: Last
    command: [sh, -c, 'echo "last $(printf %s "$1")" >> ran.log', _, '${steps.Work.output}']
"#,
    );
    let first = ws.run_wf(&[]);
    first.code(1);
    let before = first.events().len();
    ws.file("flag", "");
    let resumed = ws.run(&["resume", first.id()]);
    resumed.ok();
    let mut ran = lines(&ws, "ran.log");
    ran[2..6].sort();
    assert_eq!(ran, ["a", "b", "one", "two", "x", "y", "last b"]);
    let events = resumed.events();
    let session = last_session(&events[before..]);
    for name in [
        "loop_started",
        "iteration_started",
        "iteration_finished",
        "branch_started",
        "branch_finished",
    ] {
        assert_eq!(count(&session, name), 0, "{name} again: {session:#?}");
    }
    let steps: Vec<&str> = session
        .iter()
        .filter(|e| e["event"] == "step_finished" || e["event"] == "step_started")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["Gate", "Gate", "Last", "Last"], "{session:#?}");
    let state = resumed.state();
    assert_eq!(state["steps"]["Loop"]["iterations"], 2);
    assert_eq!(state["steps"]["Fan"]["succeeded"], 2);

    // `report` still sees the loops' bodies entered.
    let report = ws.run(&["report", first.id()]);
    report.ok();
    for step in ["Work", "Item", "One", "Two"] {
        assert!(
            report.stdout.contains(step),
            "{step} missing:\n{}",
            report.stdout
        );
    }
}

#[test]
fn a_steps_output_drops_the_commands_trailing_newline() {
    let ws = Ws::new();
    ws.file("words.txt", "one two three\n");
    ws.workflow(
        r#"steps:
  - name: Answer
    command: [echo, yes]
  - name: Yes
    when: {equals: {left: "${steps.Answer.output}", right: "yes"}}
    command: [touch, said-yes]
  - name: Count
    command: [sh, -c, 'wc -w < words.txt | tr -d " "']
  - name: Say
    command: [sh, -c, 'printf "%s" "$1" > said', _, "has ${steps.Count.output} words"]
  - name: Blank
    command: [printf, 'a\n\n']
  - name: Json
    command: [echo, '{"n": 1}']
    output_capture: json
  - name: Lines
    command: [printf, 'x\r\ny\n']
    output_capture: lines
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert!(ws.exists("said-yes"), "`echo yes` did not equal \"yes\"");
    assert_eq!(ws.read("said"), "has 3 words");
    assert_eq!(run.step("Answer")["output"], "yes");
    assert_eq!(
        run.step("Blank")["output"],
        "a\n",
        "only one newline is dropped"
    );
    assert_eq!(run.step("Json")["json"]["n"], 1);
    assert_eq!(run.step("Lines")["lines"], serde_json::json!(["x", "y"]));
    // The log keeps the bytes as the command wrote them.
    let log = run.step("Answer")["stdout_log"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ws.read(&log), "yes\n");
}

/// A role whose workflow has a provider step that takes its provider from the role's runtime
/// (so the workflow loads only as the role loads it).
fn provider_role(ws: &Ws) {
    role(
        ws,
        "dev",
        "runtime: echoer\n",
        "name: dev\nproviders:\n  echoer:\n    command: [echo, '${PROMPT}']\nsteps:\n  - name: Ask\n    agent: dev\n    input_file: task.txt\n  - name: Done\n    command: [echo, done]\n",
    );
    ws.file("task.txt", "hello\n");
}

#[test]
fn status_and_report_find_a_swarm_workspaces_task_runs() {
    let ws = Ws::new();
    provider_role(&ws);
    for name in ["one", "two"] {
        ws.run(&["enqueue", "dev", "--name", name, "--text", "x"])
            .ok();
    }
    run_within(&ws, &["agent", "dev", "--once"], DEADLINE).ok();
    assert_eq!(entries(&ws, "processed").len(), 2);

    // No run of its own under .orchestrate/runs/: the newest task run, and how many there are.
    let status = ws.run(&["status"]);
    status
        .ok()
        .stdout_has("workflow dev  succeeded")
        .stdout_has("so far: 2 steps finished; no agent usage recorded")
        .stdout_has("task runs: 0 running, 2 processed, 0 failed");
    assert!(!status.stdout.contains("no runs yet"), "{}", status.stdout);
    assert!(!status.stdout.contains(", -"), "{}", status.stdout);

    // The task's run keeps the role's workflow as it ran, and report checks the path with it,
    // even after the role's file changed.
    let dir = entries(&ws, "processed")[0].clone();
    assert!(ws.exists(&format!("processed/{dir}/workflow.yaml")));
    ws.file(
        "workflows/dev.yaml",
        "name: dev\nsteps:\n  - name: Other\n    command: [true]\n",
    );
    let report = ws.run(&["report", "one"]);
    report
        .ok()
        .stdout_has("checked against workflow.yaml saved with the run")
        .stdout_has("every transition follows an edge of the graph");
    assert!(
        !report.stdout.contains("path not checked"),
        "{}",
        report.stdout
    );
}

#[test]
fn a_successful_run_shows_its_result_on_stdout() {
    let ws = Ws::new();
    ws.workflow(
        "steps:\n  - name: Work\n    command: [echo, working]\n  - name: Summary\n    command: [echo, 'processed 3 task(s)']\n",
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(run.stdout, "processed 3 task(s)\n");
    let quiet = ws.run_wf(&["--quiet"]);
    assert_eq!(quiet.stdout, "processed 3 task(s)\n");
    // `--json`'s stdout holds only event lines.
    let json = ws.run_wf(&["--json"]);
    for line in json.stdout.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|_| panic!("not an event: {line}"));
    }

    // Declared `outputs:` are the result.
    ws.workflow(
        "outputs:\n  count: \"${steps.Count.output}\"\n  ok: true\nsteps:\n  - name: Count\n    command: [echo, '3']\n  - name: Last\n    command: [echo, ignored]\n",
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(run.stdout, "count: 3\nok: true\n");

    // A failed run prints no result.
    ws.workflow("steps:\n  - name: Say\n    command: [sh, -c, 'echo partial; exit 1']\n");
    assert_eq!(ws.run_wf(&[]).code(1).stdout, "");
}

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Copies `rel` (a file or a directory) from the repository into the workspace.
fn from_repo(ws: &Ws, rel: &str) {
    let from = std::path::Path::new(REPO).join(rel);
    for entry in walk(&from) {
        let inside = entry
            .strip_prefix(REPO)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let text = std::fs::read_to_string(&entry).unwrap();
        ws.script(&inside, &text);
    }
}

fn walk(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    std::fs::read_dir(path)
        .unwrap()
        .flatten()
        .flat_map(|e| walk(&e.path()))
        .collect()
}

#[test]
fn the_stand_in_reports_usage_as_claude_does_and_the_demo_shows_it() {
    let ws = Ws::new();
    from_repo(&ws, "scripts/stand-in-agent");
    ws.file(
        "runtimes.yaml",
        "profiles:\n  standin: {runtime: claude, bin: scripts/stand-in-agent, model: stand-in-1}\n",
    );
    ws.workflow("steps:\n  - name: Ask\n    runtime: standin\n    prompt: \"hello world\"\n");
    let run = ws.run_wf(&[]);
    run.ok();
    let ask = run.step("Ask");
    // One token per 4 bytes: "hello world" is 11 bytes.
    assert_eq!(ask["usage"]["input"], 3, "{ask:#}");
    let output = ask["usage"]["output"].as_u64().unwrap();
    assert!(output > 0, "{ask:#}");
    let cost = ask["cost_usd"].as_f64().unwrap();
    let expected = (3.0 * 3.0 + output as f64 * 15.0) / 1e6;
    assert!((cost - expected).abs() < 1e-6, "{cost} != {expected}");
    assert!(ask["result"].as_str().unwrap().contains("stand-in agent"));
    // The same answer again: deterministic.
    assert_eq!(ws.run_wf(&[]).step("Ask")["usage"], ask["usage"]);
    run.stderr_has("✓ Ask (")
        .stderr_has(&format!("{} tokens", 3 + output));

    // The demo, as the README runs it: its agent steps' usage and its summary are shown.
    let demo = Ws::new();
    for rel in [
        "scripts/stand-in-agent",
        "workflows/demo.yaml",
        "runtimes.yaml",
    ] {
        from_repo(&demo, rel);
    }
    let run = run_within(&demo, &["run", "workflows/demo.yaml"], DEADLINE);
    run.ok()
        .stderr_has("✓ ImplementWithAgent (")
        .stderr_has(" tokens, $0.0");
    assert_eq!(run.stdout, "processed 3 task(s); QA inbox holds 3\n");
}

#[test]
fn a_crossing_in_a_child_run_takes_no_edge_of_the_workflow_step() {
    let ws = Ws::new();
    ws.file(
        "flows/long.yaml",
        "name: long\nsteps:\n  - name: Long\n    command: [sh, -c, 'test -f go || exec sleep 600']\n",
    );
    let workflow = "budget:\n  max_wall_sec: 0.5\nsteps:\n  - name: Sub\n    workflow: flows/long.yaml\n    on: {failure: {goto: Recover}}\n  - name: After\n    command: [touch, after]\n    on: {success: {goto: _end}}\n  - name: Recover\n    command: [touch, recovered]\n";
    ws.workflow(workflow);
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.code(1).stderr_has("budget exceeded: max_wall_sec");
    assert!(!ws.exists("recovered"), "the failure handler ran");
    let events = run.events();
    assert_eq!(count(&events, "goto"), 0, "{events:#?}");
    assert_eq!(
        count(&events, "budget_exceeded"),
        0,
        "the child's log has it: {events:#?}"
    );
    assert_eq!(run.step("Sub")["budget_exceeded"], "max_wall_sec");

    ws.workflow(&workflow.replace("max_wall_sec: 0.5", "max_wall_sec: 600"));
    ws.file("go", "");
    resume_reruns_the_stopped_step(&ws, &run, "Sub");
}

/// Every line a run writes reads back as a typed `Event` of a kind docs/events.md lists, with
/// the fields the docs give that kind, and writing that event again gives the same bytes: the
/// writer and the readers share one type, and the format is the documented one.
#[test]
fn every_event_line_is_a_documented_typed_event_and_writes_back_byte_for_byte() {
    use orchestrate_engine::event::{Envelope, Event};
    use std::collections::{BTreeMap, BTreeSet};

    let ws = Ws::new();
    ws.file(
        "flows/child.yaml",
        "name: child\noutputs:\n  said: \"${steps.Say.output}\"\nsteps:\n  - name: Say\n    command: [echo, hi]\n",
    );
    ws.workflow(
        r#"name: kinds
outputs:
  done: "${steps.Sub.outputs.said}"
steps:
  - name: Flaky
    command: [sh, -c, 'if [ -f tried ]; then echo ok; else touch tried; exit 3; fi']
    retry: {max_attempts: 2, delay_sec: 0}
  - name: Each
    for_each:
      items: [1, 2]
      as: n
      steps:
        - name: Item
          command: [echo, "${n}"]
  - name: Fan
    for_each:
      items: [1, 2]
      as: n
      max_parallel: 2
      steps:
        - name: Lane
          command: [echo, "${n}"]
  - name: Checks
    parallel:
      branches:
        lint:
          - name: Lint
            command: [echo, lint]
  - name: Sub
    workflow: flows/child.yaml
  - name: Skip
    when: {equals: {left: "a", right: "b"}}
    command: [echo, never]
  - name: Jump
    command: [echo, jump]
    on: {success: {goto: _end}}
  - name: Never
    command: [echo, never]
"#,
    );
    let run = ws.run(&["run", "wf.yaml"]);
    run.ok();

    // The kinds this run writes, each with its fields as docs/events.md lists them.
    let documented: BTreeMap<&str, &[&str]> = BTreeMap::from([
        (
            "run_started",
            &[
                "run_id",
                "workflow",
                "name",
                "fingerprint",
                "context",
                "timestamp_utc",
                "pid",
            ][..],
        ),
        (
            "run_finished",
            &["status", "exit_code", "error", "outputs"][..],
        ),
        ("step_started", &["step", "exec", "kind", "iteration"][..]),
        ("process_started", &["step", "exec", "attempt", "argv"][..]),
        (
            "retry_scheduled",
            &["step", "exec", "attempt", "exit_code", "delay"][..],
        ),
        (
            "step_finished",
            &["step", "exec", "iteration", "result"][..],
        ),
        ("goto", &["from", "to"][..]),
        (
            "loop_started",
            &["step", "total", "max_parallel", "join"][..],
        ),
        ("iteration_started", &["step", "index", "total"][..]),
        (
            "iteration_finished",
            &["step", "index", "total", "status"][..],
        ),
        ("branch_started", &["step", "branch", "index", "total"][..]),
        (
            "branch_finished",
            &["step", "branch", "index", "total", "status"][..],
        ),
        (
            "child_started",
            &["step", "exec", "workflow", "run_root"][..],
        ),
        (
            "child_finished",
            &[
                "step",
                "exec",
                "workflow",
                "run_id",
                "run_root",
                "resumed",
                "reused",
                "status",
                "exit_code",
            ][..],
        ),
    ]);
    let envelope = ["v", "seq", "ts", "event", "lane"];
    let text = std::fs::read_to_string(ws.run_dir(run.id()).join("events.jsonl")).unwrap();
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let event = Event::from_record(&record);
        assert_ne!(
            event,
            Event::Unknown,
            "a kind the types do not know: {line}"
        );
        let name = event.name();
        seen.insert(name);
        let fields = documented
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not expected of this run: {line}"));
        for key in record.as_object().unwrap().keys() {
            assert!(
                envelope.contains(&key.as_str()) || fields.contains(&key.as_str()),
                "{name} has `{key}`, which docs/events.md does not list: {line}"
            );
        }
        // Written again, through the same types: the same bytes (keys are sorted either way).
        let mut again = serde_json::to_value(&event).unwrap();
        let Envelope { v, seq, ts, lane } = Envelope::from_record(&record);
        again["v"] = json!(v);
        again["seq"] = json!(seq);
        again["ts"] = json!(ts);
        if !lane.is_empty() {
            again["lane"] = json!(lane);
        }
        assert_eq!(again.to_string(), line);
    }
    let all: BTreeSet<&str> = documented.keys().copied().collect();
    assert_eq!(seen, all, "every kind this run should write");
}
