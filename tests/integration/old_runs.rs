//! Runs written by an earlier version still read: `status`, `report` and `resume` of a run
//! directory the binary wrote before step results were typed (`tests/fixtures/old-run/`).

#[allow(unused_imports)]
use crate::harness::*;

use std::path::Path;

use serde_json::Value;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/old-run");
const RUN_ID: &str = "20261207T190702Z-340383";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A workspace holding the old run.
fn old_run() -> Ws {
    let ws = Ws::new();
    let fixture = Path::new(FIXTURE);
    copy_dir(&fixture.join(RUN_ID), &ws.run_dir(RUN_ID));
    ws.file(
        "wf.yaml",
        &std::fs::read_to_string(fixture.join("wf.yaml")).unwrap(),
    );
    ws
}

#[test]
fn an_old_run_shows_and_reports() {
    let ws = old_run();
    ws.run(&["status", RUN_ID])
        .ok()
        .stdout_has("7 steps finished, cost $0.0123, tokens in 10 / out 5 / cache 5")
        .stdout_has("last failure: Gate (exec 7): exited with code 1");
    ws.run(&["report", RUN_ID])
        .ok()
        .stdout_has("1 skipped")
        .stdout_has("path: Greet → Lines → Data → Skip → Each → Work → Work → Ask → Gate");
    ws.run(&["report", "--json", RUN_ID])
        .ok()
        .stdout_has("\"step\": \"Ask\"");
}

#[test]
fn an_old_run_resumes_and_keeps_its_recorded_results() {
    let ws = old_run();
    let before = ws.state(RUN_ID);
    let old_events = std::fs::read(ws.run_dir(RUN_ID).join("events.jsonl")).unwrap();
    ws.file("go", "");
    ws.run(&["resume", RUN_ID])
        .ok()
        .stderr_has("↺ Ask (completed earlier; not run again)")
        .stderr_has("[Each #1] ↺ Work (completed earlier; not run again)")
        .stderr_has("✓ Gate");
    // Nothing that completed ran again.
    assert!(!ws.exists("greeted"));
    let after = ws.state(RUN_ID);
    assert_eq!(after["status"], "succeeded");
    let (Value::Object(old), Value::Object(new)) = (&before["steps"], &after["steps"]) else {
        panic!("no steps in the state");
    };
    for (name, result) in old.iter().filter(|(name, _)| *name != "Gate") {
        assert_eq!(&new[name], result, "{name}");
    }
    assert_eq!(new["Gate"]["status"], "succeeded");
    // The log was appended to: the old records are still its first bytes.
    let events = std::fs::read(ws.run_dir(RUN_ID).join("events.jsonl")).unwrap();
    assert!(events.starts_with(&old_events));
}
