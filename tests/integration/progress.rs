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
