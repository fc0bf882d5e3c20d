//! Seeing a run as it goes: plain lines, `--json` event lines, the live terminal display
//! (under a pseudo-terminal), and stopping loops that do not converge.

use crate::harness::*;
use serde_json::Value;

/// A step, a three-item loop, a wait that times out into a handler, and a last step.
const SHOW: &str = r#"name: show
steps:
  - name: Build
    command: ["sleep", "0.3"]
  - name: Each
    for_each:
      items: [a, b, c]
      steps:
        - name: Item
          command: ["sleep", "0.25"]
  - name: Wait
    wait_for: {glob: "never-*", timeout_sec: 0.5, poll_ms: 100}
    on: {failure: {goto: Done}}
  - name: Done
    command: ["true"]
"#;

#[test]
fn plain_lines_when_stderr_is_not_a_terminal() {
    let ws = Ws::new();
    ws.workflow(SHOW);
    let run = ws.run_wf(&[]);
    run.ok()
        .stderr_has("✓ Build (")
        .stderr_has("✓ Item (")
        .stderr_has("✓ Each (")
        .stderr_has("✗ Wait (")
        .stderr_has("✓ Done (")
        .stderr_has("succeeded");
    assert_eq!(run.stderr.matches("✓ Item (").count(), 3, "{}", run.stderr);
    assert!(
        !run.stderr.contains('\u{1b}'),
        "no terminal control codes when stderr is not a terminal:\n{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn quiet_prints_no_step_lines() {
    let ws = Ws::new();
    ws.workflow(SHOW);
    let run = ws.run_wf(&["--quiet"]);
    run.ok();
    assert!(!run.stderr.contains("✓"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

#[test]
fn json_prints_each_event_line_on_stdout_as_recorded() {
    let ws = Ws::new();
    ws.workflow(SHOW);
    let run = ws.run_wf(&["--json"]);
    run.ok();
    let log = std::fs::read_to_string(ws.run_dir(run.id()).join("events.jsonl")).unwrap();
    assert_eq!(run.stdout, log, "stdout is the event log, line for line");
    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(events[0]["event"], "run_started");
    assert_eq!(events.last().unwrap()["event"], "run_finished");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "iteration_started")
            .count(),
        3
    );
    // The person's lines stay off both streams; the outcome is still said on stderr.
    assert!(!run.stderr.contains("✓"), "{}", run.stderr);
    run.stderr_has("succeeded");
}

#[test]
fn json_follows_a_resumed_run_too() {
    let ws = Ws::new();
    ws.workflow(
        r#"name: again
steps:
  - name: First
    command: ["true"]
  - name: Flaky
    command: ["bash", "-c", "test -e fixed"]
"#,
    );
    let first = ws.run_wf(&["--json"]);
    first.code(1);
    assert!(first.stdout.contains("\"event\":\"run_finished\""));
    ws.file("fixed", "");
    let resumed = ws.run(&["resume", first.id(), "--json"]);
    resumed.ok();
    let events: Vec<Value> = resumed
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "run_resumed");
    let finished: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "step_finished")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(finished, ["Flaky"], "a replayed step is not recorded again");
}

/// `script` from util-linux runs a command under a pseudo-terminal.
fn script_available() -> bool {
    std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn live_display_under_a_pseudo_terminal() {
    if !script_available() {
        eprintln!(
            "skipped: `script` (util-linux) is not installed, no pseudo-terminal to test with"
        );
        return;
    }
    let ws = Ws::new();
    ws.workflow(SHOW);
    let command = format!("{BIN} --workspace {} run wf.yaml", ws.path().display());
    let output = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .current_dir(ws.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script");
    let screen = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{screen}");
    // Drawn live: cursor movement and line clearing, which plain lines never have.
    assert!(screen.contains("\u{1b}[2K"), "no live drawing:\n{screen}");
    // The header, the running steps and the loop's counter.
    assert!(screen.contains("steps done"), "{screen}");
    assert!(screen.contains("Build (command)"), "{screen}");
    assert!(screen.contains("Item (command)"), "{screen}");
    for counter in ["item 1/3", "item 2/3", "item 3/3"] {
        assert!(screen.contains(counter), "no `{counter}`:\n{screen}");
    }
    assert!(screen.contains("Wait (wait_for) poll"), "{screen}");
    // Finished steps leave their lines, and the outcome comes last.
    for line in ["✓ Build (", "✓ Each (", "✗ Wait (", "✓ Done ("] {
        assert!(screen.contains(line), "no `{line}`:\n{screen}");
    }
    let last = screen.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("run ") && last.ends_with("succeeded"),
        "last line: {last:?}\n{screen}"
    );
}

// ---------------------------------------------------------------------------------------------
// Loops that do not converge.

/// A review/fix loop whose scripted reviewer answers, on its Nth visit, with `counts[N-1]`
/// findings (the last count repeats). Findings are tagged with the round (`r2-1`) unless
/// `same_from` says from which round on they are the same text each time.
fn review_loop(counts: &[u32], same_from: Option<u32>, converge: &str) -> String {
    let cases: String = counts
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}) c={c};; ", i + 1))
        .collect();
    let last = counts.last().unwrap();
    let same = same_from.unwrap_or(u32::MAX);
    format!(
        r#"name: review-loop
steps:
  - name: Review
    command:
      - bash
      - -c
      - |
        n=$(cat round 2>/dev/null || echo 0); n=$((n+1)); echo $n > round
        case $n in {cases}*) c={last};; esac
        tag="r$n"; if [ "$n" -ge {same} ]; then tag=same; fi
        items=$(for i in $(seq 1 $c); do printf '"%s-%s",' "$tag" "$i"; done)
        echo "{{\"findings\": [$${{items%,}}]}}"
    output_capture: json
    rejected_when: '.json.findings | length > 0'
    converge:
{converge}
    on:
      rejected: {{goto: Fix}}
      success: {{goto: _end}}
  - name: Fix
    command: [bash, -c, 'echo fixed >> fixes.log']
    on: {{success: {{goto: Review}}}}
  - name: Escalate
    command: [bash, -c, 'echo "asked a person" > escalated']
"#
    )
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

#[test]
fn the_same_findings_twice_stop_the_loop_and_go_to_on_stall() {
    let ws = Ws::new();
    ws.workflow(&review_loop(
        &[3, 2],
        Some(2),
        "      findings: .json.findings\n      rounds: 3\n      on_stall: Escalate",
    ));
    let run = ws.run_wf(&[]);
    run.ok()
        .stderr_has("↪ not converging: step `Review` (wf.yaml line 3) returned the same 2 findings in round 3 as in round 2; going to `Escalate`");
    assert_eq!(ws.read("escalated"), "asked a person\n");
    assert_eq!(ws.read("round"), "3\n", "the reviewer ran 3 times");
    assert_eq!(ws.read("fixes.log").lines().count(), 2);
    let events = run.events();
    let stalls = of_kind(&events, "loop_not_converging");
    assert_eq!(stalls.len(), 1);
    let stall = stalls[0];
    assert_eq!(stall["step"], "Review");
    assert_eq!(stall["reason"], "repeated");
    assert_eq!(stall["rounds"], 3);
    assert_eq!(stall["counts"], serde_json::json!([3, 2, 2]));
    assert_eq!(stall["on_stall"], "Escalate");
    let prints = stall["fingerprints"].as_array().unwrap();
    assert_eq!(prints.len(), 3);
    assert_eq!(prints[1], prints[2]);
    assert_ne!(prints[0], prints[1]);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "goto" && e["from"] == "Review" && e["to"] == "Escalate"),
        "the stall is recorded as a goto"
    );
    // The report finds the path within the graph: `on_stall` is an edge of it.
    let report = ws.run(&["report", run.id()]);
    report.ok();
    assert!(!report.stdout.contains("out of order"), "{}", report.stdout);
    ws.run(&["graph", "wf.yaml"])
        .ok()
        .stdout_has("-->|\"stalled\"|");
}

#[test]
fn findings_that_do_not_shrink_for_k_rounds_fail_the_run_with_the_counts() {
    let ws = Ws::new();
    ws.workflow(&review_loop(
        &[4, 4, 5, 3],
        None,
        "      findings: .json.findings\n      rounds: 2",
    ));
    let run = ws.run_wf(&[]);
    run.code(1).stderr_has(
        "not converging: step `Review` (wf.yaml line 3) found 4, 4, 5 findings in its last 3 rounds: no fewer than 4 for 2 rounds in a row (`converge.rounds: 2`)",
    )
    .stderr_has("set `converge.on_stall`")
    .stderr_has(&format!("run {} failed", run.id()));
    assert_eq!(ws.read("round"), "3\n", "stopped at the third review");
    assert!(!ws.exists("escalated"));
    let stall = run
        .events()
        .into_iter()
        .find(|e| e["event"] == "loop_not_converging")
        .expect("a loop_not_converging event");
    assert_eq!(stall["reason"], "not_shrinking");
    assert_eq!(stall["counts"], serde_json::json!([4, 4, 5]));
    assert_eq!(stall["on_stall"], Value::Null);
    let state = run.state();
    assert_eq!(state["status"], "failed");
    assert!(
        state["error"].as_str().unwrap().contains("not converging"),
        "{state:#}"
    );
}

#[test]
fn a_loop_whose_findings_shrink_to_zero_runs_to_completion() {
    let ws = Ws::new();
    // The `${...}` form of `findings`, and the strictest `rounds`.
    ws.workflow(&review_loop(
        &[3, 2, 1, 0],
        None,
        "      findings: ${steps.Review.json.findings}\n      rounds: 1\n      on_stall: Escalate",
    ));
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(ws.read("round"), "4\n");
    assert_eq!(ws.read("fixes.log").lines().count(), 3);
    assert!(!ws.exists("escalated"));
    assert!(of_kind(&run.events(), "loop_not_converging").is_empty());
    assert!(!run.stderr.contains("not converging"), "{}", run.stderr);
}

#[test]
fn findings_that_are_not_a_list_fail_the_step_with_what_to_do() {
    let ws = Ws::new();
    ws.workflow(
        r#"name: odd
steps:
  - name: Review
    command: [bash, -c, 'echo "{\"findings\": \"many\"}"']
    output_capture: json
    converge:
      findings: .json.findings
"#,
    );
    ws.run_wf(&[])
        .code(2)
        .stderr_has("step `Review` (wf.yaml line 3): `converge.findings` could not be counted: the findings must be an array or a number, found a string");
}
