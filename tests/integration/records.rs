//! The records a task leaves (`status.json` in `processed/` and `failed/`) against what
//! docs/swarm.md promises, and the commands that read them back (`tasks`, `show`, `retry`,
//! `trace`, `report`, `logs`, `status`): every kind of record carries every documented key, a
//! failed step's reason reaches its record, a dead holder is named dead, a retried task is listed
//! once, and nothing is read through an entry that leads outside the workspace.

#[allow(unused_imports)]
use crate::harness::*;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

/// The `status.json` keys docs/swarm.md lists: (always written, written only where they apply).
/// Parsed from its paragraph, so the docs and the records cannot drift apart.
fn documented_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/swarm.md"))
        .expect("docs/swarm.md");
    let start = docs
        .find("`status.json` follows the spec's `status/v1`")
        .expect("the status/v1 paragraph of docs/swarm.md");
    let paragraph = &docs[start..];
    let paragraph = &paragraph[..paragraph.find("\n\n").unwrap_or(paragraph.len())];
    let (always, where_apply) = paragraph
        .split_once("Only where they apply")
        .expect("the paragraph says which keys are written only where they apply");
    let (_, always) = always
        .split_once("every one of these keys")
        .expect("the paragraph says which keys every record has");
    (
        backticked_outside_parens(always),
        backticked_outside_parens(where_apply),
    )
}

/// The `names` quoted in `text` outside parentheses (inside them are explanations).
fn backticked_outside_parens(text: &str) -> BTreeSet<String> {
    let mut depth = 0;
    let mut top = String::new();
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => top.push(c),
            _ => {}
        }
    }
    top.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Every `status.json` under `processed/` and `failed/`, by directory.
fn records(ws: &Ws) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for parent in ["processed", "failed"] {
        for name in entries(ws, parent) {
            let rel = format!("{parent}/{name}");
            out.push((rel.clone(), json_file(ws, &format!("{rel}/status.json"))));
        }
    }
    out
}

/// The one record whose directory ends in `_<role>_<id>`.
fn record_of(ws: &Ws, role: &str, id: &str) -> (String, Value) {
    let suffix = format!("_{role}_{id}");
    let mut found: Vec<(String, Value)> = records(ws)
        .into_iter()
        .filter(|(dir, _)| dir.ends_with(&suffix))
        .collect();
    assert_eq!(found.len(), 1, "records of {role}/{id}: {found:#?}");
    found.remove(0)
}

/// A role whose step counts the task's words, and fails with a reason on stderr for "FAIL".
const COUNTING: &str = r#"
steps:
  - name: Count
    command:
      - bash
      - -c
      - 'case "$1" in *FAIL*) echo "looking at the task" >&2; echo "cannot count: task says FAIL" >&2; exit 3;; esac; wc -w < "$2"'
      - count
      - ${task.text}
      - ${task.path}
"#;

/// A role whose step kills its role process (a worker that dies mid-task) and exits.
const POISON: &str = r#"
steps:
  - name: Poison
    command: ["bash", "-c", "echo $$ > poison.pid; kill -9 $PPID"]
"#;

/// Runs the poison role once (it dies) and waits until its step has exited too.
fn die_once(ws: &Ws, agents: &mut Agents) {
    let status = agents.run(ws, "p", &["--once"], Duration::from_secs(30));
    assert_eq!(status.signal_of(), Some(9), "{}", agents.logs());
    let step: u32 = ws.read("poison.pid").trim().parse().unwrap();
    wait_until("the poison step to exit", Duration::from_secs(30), || {
        !pid_alive(step)
    });
}

trait SignalOf {
    fn signal_of(&self) -> Option<i32>;
}

impl SignalOf for std::process::ExitStatus {
    fn signal_of(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(self)
    }
}

#[test]
fn every_kind_of_task_record_carries_every_documented_status_key() {
    let (always, where_apply) = documented_keys();
    for key in ["correlation_id", "history", "step_exit_code", "worker"] {
        assert!(always.contains(key), "docs list {always:?}");
    }
    let ws = Ws::new();
    role(&ws, "r", "settle_ms: 0\n", COUNTING);
    role(&ws, "p", "settle_ms: 0\nmax_attempts: 1\n", POISON);
    role(
        &ws,
        "s",
        "settle_ms: 0\ntask_timeout_sec: 1\n",
        "steps:\n  - name: Wait\n    command: [sleep, \"600\"]\n",
    );
    ws.run(&["enqueue", "r", "--text", "one two three", "--name", "ok"])
        .ok();
    ws.run(&["enqueue", "r", "--text", "FAIL", "--name", "bad"])
        .ok();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "outside").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), ws.join("inbox/r/evil.task"))
        .unwrap();
    ws.run(&["enqueue", "p", "--text", "poison", "--name", "dies"])
        .ok();
    ws.run(&["enqueue", "s", "--text", "slow", "--name", "slow"])
        .ok();

    let mut agents = Agents::new(&ws);
    for role in ["r", "s"] {
        let status = agents.run(&ws, role, &["--once"], Duration::from_secs(60));
        assert!(status.success(), "{status:?}\n{}", agents.logs());
    }
    die_once(&ws, &mut agents);
    let status = agents.run(&ws, "p", &["--once"], Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", agents.logs());

    let all = records(&ws);
    assert_eq!(
        all.len(),
        5,
        "success, failure, quarantine, timeout, worker died: {all:#?}"
    );
    for (dir, status) in &all {
        let keys: BTreeSet<String> = status.as_object().unwrap().keys().cloned().collect();
        let missing: Vec<&String> = always.difference(&keys).collect();
        assert!(missing.is_empty(), "{dir} lacks {missing:?}: {status:#}");
        let undocumented: Vec<&String> = keys
            .iter()
            .filter(|k| !always.contains(*k) && !where_apply.contains(*k))
            .collect();
        assert!(
            undocumented.is_empty(),
            "{dir} has keys docs/swarm.md does not list: {undocumented:?}"
        );
        assert_eq!(status["schema"], "status/v1", "{dir}");
    }
    let (_, quarantined) = record_of(&ws, "r", "evil");
    assert_eq!(quarantined["quarantined"], true);
    let (_, died) = record_of(&ws, "p", "dies");
    assert!(
        died["message"]
            .as_str()
            .unwrap()
            .contains("worker died 1 time"),
        "{died:#}"
    );
    assert_eq!(died["correlation_id"], "dies");
    assert!(
        died["run_id"].is_string(),
        "the dead attempt's run: {died:#}"
    );
    let (_, slow) = record_of(&ws, "s", "slow");
    assert_eq!(slow["exit_code"], 124, "{slow:#}");
    let (_, ok) = record_of(&ws, "r", "ok");
    assert_eq!(ok["success"], true);
    assert_eq!(ok["step_exit_code"], Value::Null);
}

#[test]
fn a_failed_record_and_show_carry_the_failing_steps_stderr_and_exit_code() {
    let ws = Ws::new();
    role(&ws, "r", "settle_ms: 0\n", COUNTING);
    ws.run(&["enqueue", "r", "--text", "FAIL", "--name", "bad"])
        .ok();
    let mut agents = Agents::new(&ws);
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", agents.logs());
    let (_, bad) = record_of(&ws, "r", "bad");
    let message = bad["message"].as_str().unwrap();
    assert!(
        message.contains("step `Count` (line 3) failed: exited with code 3"),
        "{message}"
    );
    assert!(
        message.contains("cannot count: task says FAIL"),
        "{message}"
    );
    assert!(message.contains("looking at the task"), "{message}");
    assert_eq!(bad["exit_code"], 1, "the workflow's exit code");
    assert_eq!(bad["step_exit_code"], 3, "the step's own exit code");
    ws.run(&["show", "bad"])
        .ok()
        .stdout_has("cannot count: task says FAIL")
        .stdout_has("step_exit_code: 3");
}

#[test]
fn show_and_tasks_say_a_dead_holder_is_dead_and_its_task_will_be_requeued() {
    let ws = Ws::new();
    role(&ws, "p", "settle_ms: 0\nmax_attempts: 2\n", POISON);
    ws.run(&["enqueue", "p", "--text", "poison", "--name", "dies"])
        .ok();
    let mut agents = Agents::new(&ws);
    die_once(&ws, &mut agents);
    let shown = ws.run(&["show", "dies"]);
    shown
        .ok()
        .stdout_has("(dead)")
        .stdout_has("will be requeued")
        .stdout_has("orchestrate agent p");
    let listed = ws.run(&["tasks", "--state", "running"]);
    listed.ok().stdout_has("is dead").stdout_has("requeued");
    let json = ws.run(&["tasks", "--state", "running", "--json"]);
    let list: Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(list[0]["holder_dead"].is_string(), "{list:#}");
}

#[test]
fn a_retried_task_that_succeeds_is_listed_once_with_the_earlier_failure_in_its_history() {
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "settle_ms: 0\n",
        r#"
steps:
  - name: Check
    command: ["bash", "-c", "test -e ok || { echo 'no ok file yet' >&2; exit 4; }"]
"#,
    );
    ws.run(&["enqueue", "r", "--text", "x", "--name", "t"]).ok();
    let mut agents = Agents::new(&ws);
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", agents.logs());
    let (failed_dir, failed) = record_of(&ws, "r", "t");
    let list: Value = serde_json::from_str(&ws.run(&["tasks", "--json"]).stdout).unwrap();
    assert_eq!(list[0]["attempt"], 1, "a finished task's attempt: {list:#}");
    ws.run(&["tasks"]).ok().stdout_has("failed     1 ");

    ws.run(&["retry", "t"]).ok();
    ws.file("ok", "");
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", agents.logs());

    let list: Value = serde_json::from_str(&ws.run(&["tasks", "--json"]).stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "listed once: {list:#?}");
    assert_eq!(list[0]["state"], "processed");
    assert_eq!(list[0]["attempt"], 1);
    assert_eq!(list[0]["earlier"], serde_json::json!([failed_dir]));
    let human = ws.run(&["tasks"]);
    human.ok().stdout_has(&failed_dir);
    assert!(!human.stdout.contains("failed     "), "{}", human.stdout);

    let processed_dir = entries(&ws, "processed").pop().unwrap();
    let done = json_file(&ws, &format!("processed/{processed_dir}/status.json"));
    let history = done["history"].as_array().unwrap();
    let link = history
        .iter()
        .find(|h| h["record"] == failed_dir.as_str())
        .unwrap_or_else(|| panic!("no link to {failed_dir}: {done:#}"));
    assert_eq!(link["run_id"], failed["run_id"]);
    assert!(
        link["reason"].as_str().unwrap().contains("no ok file yet"),
        "{link:#}"
    );
    ws.run(&["show", "t"]).ok().stdout_has(&failed_dir);
    ws.run(&["retry", "t"])
        .code(2)
        .stderr_has("retried already");
}

#[test]
fn readers_refuse_records_that_lead_outside_the_workspace() {
    let ws = Ws::new();
    role(&ws, "r", "settle_ms: 0\n", COUNTING);
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path();
    std::fs::create_dir_all(out.join("logs")).unwrap();
    std::fs::write(
        out.join("status.json"),
        r#"{"schema": "status/v1", "success": true, "exit_code": 0, "message": "LEAKED-STATUS", "correlation_id": "c-evil"}"#,
    )
    .unwrap();
    std::fs::write(
        out.join("events.jsonl"),
        "{\"event\":\"run_started\",\"run_id\":\"evilrun\",\"ts\":\"2026-01-01T00:00:00Z\",\"workflow\":\"LEAKED-WORKFLOW\"}\n",
    )
    .unwrap();
    std::fs::write(out.join("logs/0001-Leak.stdout"), "LEAKED-LOG\n").unwrap();
    std::fs::create_dir_all(ws.join("processed")).unwrap();
    std::fs::create_dir_all(ws.join(".orchestrate/runs")).unwrap();
    std::os::unix::fs::symlink(out, ws.join("processed/20260101T000000.000000Z_r_evil")).unwrap();
    std::os::unix::fs::symlink(out, ws.join(".orchestrate/runs/evilrun")).unwrap();
    // A real task directory whose records are links to the outside.
    let linked = ws.join("failed/20260101T000001.000000Z_r_linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink(out.join("status.json"), linked.join("status.json")).unwrap();
    std::os::unix::fs::symlink(out.join("events.jsonl"), linked.join("events.jsonl")).unwrap();

    let leaked = |run: &Run| {
        for secret in ["LEAKED-STATUS", "LEAKED-WORKFLOW", "LEAKED-LOG"] {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "{secret} was read through a link\n--- stdout\n{}\n--- stderr\n{}",
                run.stdout,
                run.stderr
            );
        }
    };
    let shown = ws.run(&["show", "evil"]);
    leaked(&shown);
    shown.ok().stdout_has("refused");
    let shown = ws.run(&["show", "linked"]);
    leaked(&shown);
    let listed = ws.run(&["tasks", "--json"]);
    leaked(&listed);
    let list: Value = serde_json::from_str(&listed.stdout).unwrap();
    let evil = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "evil")
        .unwrap_or_else(|| panic!("{list:#}"));
    assert!(
        evil["refused"].as_str().unwrap().contains("outside"),
        "{evil:#}"
    );
    leaked(&ws.run(&["tasks"]));
    leaked(&ws.run(&["trace", "c-evil"]));
    for args in [
        vec!["report", "evilrun"],
        vec!["logs", "evilrun"],
        vec!["status", "evilrun"],
        vec!["report", "linked"],
    ] {
        let run = ws.run(&args);
        leaked(&run);
        assert_ne!(run.code, 0, "{args:?} read a run outside the workspace");
        run.stderr_has("outside the workspace");
    }
    leaked(&ws.run(&["report"]));
}

#[test]
fn each_run_keeps_the_workflow_text_it_ran_and_runs_of_one_text_share_one_file() {
    use std::os::unix::fs::MetadataExt;
    let ws = Ws::new();
    let first = "steps:\n  - name: A\n    command: [\"true\"]\n";
    ws.workflow(first);
    ws.run_wf(&["--quiet"]).code(0);
    ws.run_wf(&["--quiet"]).code(0);
    let second = "steps:\n  - name: B\n    command: [\"true\"]\n";
    ws.workflow(second);
    ws.run_wf(&["--quiet"]).code(0);
    let mut copies: Vec<(String, u64)> = std::fs::read_dir(ws.join(".orchestrate/runs"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path().join("workflow.yaml");
            let meta = std::fs::metadata(&path).unwrap();
            (std::fs::read_to_string(&path).unwrap(), meta.ino())
        })
        .collect();
    copies.sort();
    let texts: Vec<&str> = copies.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(texts, [first, first, second]);
    // The two runs of the first text share its kept copy; the edit made a new file.
    assert_eq!(copies[0].1, copies[1].1);
    assert_ne!(copies[0].1, copies[2].1);
}
