//! `orchestrate test`: workflows run with agent steps answered from fixtures, checked against
//! expectations.

use crate::harness::*;

use std::path::Path;
use std::process::Command;

/// Every shipped workflow that has fixtures under workflows/tests/ passes them (CI runs this).
#[test]
fn the_shipped_workflows_pass_their_fixture_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut tested = Vec::new();
    for entry in std::fs::read_dir(root.join("workflows/tests")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let workflow = format!("workflows/{name}.yaml");
        assert!(
            root.join(&workflow).is_file(),
            "fixtures for a missing {workflow}"
        );
        let out = Command::new(BIN)
            .args(["--workspace", root.to_str().unwrap(), "test", &workflow])
            .args(["--fixtures", &format!("workflows/tests/{name}")])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{workflow}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
        tested.push(name);
    }
    tested.sort();
    // Every shipped workflow has fixtures.
    let mut shipped: Vec<String> = std::fs::read_dir(root.join("workflows"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".yaml").map(str::to_string)
        })
        .collect();
    shipped.sort();
    assert_eq!(tested, shipped);
}

fn review_loop(ws: &Ws) {
    ws.file(
        "wf.yaml",
        r#"name: loop
steps:
  - name: Review
    phase: readonly
    output_capture: json
    prompt: "Review it. Answer with JSON only."
    rejected_when: '.json.approved != true'
    on:
      rejected: {goto: Fix}
  - name: Done
    command: ["true"]
    on: {success: {goto: _end}}
  - name: Fix
    phase: write
    prompt: "Fix it"
    on: {success: {goto: Review}}
"#,
    );
    ws.file(
        "cases/no-then-yes/agents/Review.1.json",
        r#"{"result": {"approved": false}, "usage": {"input_tokens": 10, "output_tokens": 2}}"#,
    );
    ws.file(
        "cases/no-then-yes/agents/Review.2.json",
        r#"{"result": {"approved": true}, "usage": {"input_tokens": 10, "output_tokens": 2}}"#,
    );
    ws.file(
        "cases/no-then-yes/agents/Fix.json",
        r#"{"result": "fixed", "writes": {"fixed.txt": "yes"}}"#,
    );
}

#[test]
fn a_rejection_edge_is_followed_and_checked() {
    let ws = Ws::new();
    review_loop(&ws);
    ws.file(
        "cases/no-then-yes/expect.yaml",
        "path: [Review, Fix, Review, Done]\nstatus: succeeded\noutputs:\n  Review.json.approved: true\n  Fix.result: fixed\n",
    );
    ws.run(&["test", "wf.yaml", "--fixtures", "cases"])
        .ok()
        .stdout_has("ok      no-then-yes (Review -> Fix -> Review -> Done)")
        .stdout_has("1 case(s): 1 passed, 0 failed");
    // The run happened in a scratch copy: the workspace is untouched.
    assert!(!ws.exists("fixed.txt"));
    assert!(!ws.exists(".orchestrate"));
}

#[test]
fn a_path_or_output_that_differs_fails_the_case_and_keeps_its_workspace() {
    let ws = Ws::new();
    review_loop(&ws);
    ws.file(
        "cases/no-then-yes/expect.yaml",
        "path: [Review, Done]\noutputs:\n  Review.json.approved: false\n  Nope.result: x\n",
    );
    let run = ws.run(&["test", "wf.yaml", "--fixtures", "cases/no-then-yes"]);
    run.code(1)
        .stdout_has("FAILED  no-then-yes")
        .stdout_has("path: expected Review -> Done, ran Review -> Fix -> Review -> Done")
        .stdout_has("outputs: `Review.json.approved`: expected false, got true")
        .stdout_has("outputs: `Nope.result`: step `Nope` did not run")
        .stdout_has("1 case(s): 0 passed, 1 failed");
    let kept = run
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("its workspace is kept in "))
        .expect("the kept workspace is named");
    assert!(Path::new(kept).join("fixed.txt").is_file());
    std::fs::remove_dir_all(Path::new(kept).parent().unwrap()).unwrap();
}

#[test]
fn a_missing_answer_names_the_file_to_add() {
    let ws = Ws::new();
    review_loop(&ws);
    std::fs::remove_file(ws.join("cases/no-then-yes/agents/Fix.json")).unwrap();
    ws.file("cases/no-then-yes/expect.yaml", "status: succeeded\n");
    let run = ws.run(&["test", "wf.yaml", "--fixtures", "cases"]);
    run.code(1)
        .stdout_has("status: expected succeeded, got failed");
    let kept = run
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("its workspace is kept in "))
        .unwrap();
    let logs: String = std::fs::read_dir(Path::new(kept).join(".orchestrate/runs"))
        .unwrap()
        .flat_map(|run| std::fs::read_dir(run.unwrap().path().join("logs")).unwrap())
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("no fixture answer for step `Fix` (visit 1)"),
        "{logs}"
    );
    std::fs::remove_dir_all(Path::new(kept).parent().unwrap()).unwrap();
}

#[test]
fn approvals_are_answered_per_visit_and_a_missing_answer_is_reported() {
    let ws = Ws::new();
    ws.file(
        "wf.yaml",
        "name: gate\nsteps:\n  - name: Gate\n    approval: {message: ok?}\n    on: {rejected: {goto: Redo}}\n  - name: Ship\n    command: [\"true\"]\n    on: {success: {goto: _end}}\n  - name: Redo\n    command: [\"true\"]\n    on: {success: {goto: Gate}}\n",
    );
    ws.file(
        "cases/a/expect.yaml",
        "path: [Gate, Redo, Gate, Ship]\napprovals:\n  Gate: [{reject: not yet}, approve]\n",
    );
    ws.file("cases/b/expect.yaml", "path: [Gate, Ship]\n");
    let run = ws.run(&["test", "wf.yaml", "--fixtures", "cases"]);
    run.code(1)
        .stdout_has("ok      a (Gate -> Redo -> Gate -> Ship)")
        .stdout_has("FAILED  b")
        .stdout_has("approval step `Gate` asked (visit 1) but expect.yaml has no answer for it");
    for kept in run
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("its workspace is kept in "))
    {
        std::fs::remove_dir_all(Path::new(kept).parent().unwrap()).unwrap();
    }
}

#[test]
fn a_bad_expect_file_is_an_error_naming_it() {
    let ws = Ws::new();
    review_loop(&ws);
    ws.file("cases/no-then-yes/expect.yaml", "pathh: [Review]\n");
    ws.run(&["test", "wf.yaml", "--fixtures", "cases"])
        .code(2)
        .stderr_has("expect.yaml is not a valid expect.yaml")
        .stderr_has("pathh");
    ws.run(&["test", "wf.yaml", "--fixtures", "nowhere"])
        .code(2)
        .stderr_has("cannot read the fixtures directory");
}

/// A role's workflow in a task case: `${task.*}` set as a role process sets it (JSON task),
/// the role's provider step answered by the fixture agent as text, and what the run enqueued
/// compared entry by entry.
fn role_case(ws: &Ws) {
    ws.file(
        "agents/triage.yaml",
        "workflow: workflows/triage.yaml\nruntime: mycli\n",
    );
    ws.file("agents/backend.yaml", "workflow: workflows/other.yaml\n");
    ws.file(
        "workflows/other.yaml",
        "name: other\nsteps:\n  - name: A\n    command: [\"true\"]\n",
    );
    ws.file(
        "workflows/triage.yaml",
        r#"name: triage
providers:
  mycli:
    command: ["mycli-not-installed", "${PROMPT}"]
steps:
  - name: Classify
    agent: triage
    input_file: "${task.path}"
    output_capture: json
  - name: Hand
    enqueue:
      role: "${steps.Classify.json.team}"
      name: "${task.id}-${task.json.n}"
      text: "from ${task.role}: ${task.json.title} (${task.correlation_id})"
"#,
    );
    ws.file(
        "cases/bug/agents/Classify.json",
        r#"{"result": {"team": "backend"}}"#,
    );
}

#[test]
fn a_task_case_sets_task_variables_answers_provider_steps_and_checks_what_was_enqueued() {
    let ws = Ws::new();
    role_case(&ws);
    ws.file(
        "cases/bug/expect.yaml",
        r#"task: {id: t7, json: {n: 3, title: "login fails", correlation_id: req-1}}
path: [Classify, Hand]
status: succeeded
outputs:
  Classify.json.team: backend
enqueued:
  - {role: backend, id: t7-3, text: "from triage: login fails (req-1)"}
"#,
    );
    ws.run(&["test", "workflows/triage.yaml", "--fixtures", "cases"])
        .ok()
        .stdout_has("ok      bug (Classify -> Hand)");
    assert!(!ws.exists("inbox"), "the case ran in a scratch copy");

    // The same case expecting something else handed on fails, naming the difference.
    ws.file(
        "cases/bug/expect.yaml",
        r#"task: {id: t7, json: {n: 3, title: "login fails"}}
enqueued:
  - {role: backend, id: t7-3, text: "something else"}
  - {role: qa}
"#,
    );
    let run = ws.run(&["test", "workflows/triage.yaml", "--fixtures", "cases"]);
    run.code(1)
        .stdout_has("enqueued: expected 2 task(s), the run handed on 1 (backend/t7-3)")
        .stdout_has(
            r#"enqueued[0] (backend/t7-3): expected the text "something else", got "from triage: login fails (t7)""#,
        );
    let kept = run
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("its workspace is kept in "))
        .unwrap();
    std::fs::remove_dir_all(Path::new(kept).parent().unwrap()).unwrap();
}

#[test]
fn a_task_case_for_a_role_that_runs_another_workflow_is_an_error() {
    let ws = Ws::new();
    role_case(&ws);
    ws.file(
        "cases/bug/expect.yaml",
        "task: {role: triage, id: t7, text: hi}\nstatus: succeeded\n",
    );
    ws.run(&["test", "workflows/other.yaml", "--fixtures", "cases"])
        .code(2)
        .stderr_has("role `triage` (agents/triage.yaml) runs workflows/triage.yaml, not workflows/other.yaml");
}

/// Fixtures answer the agent and provider steps of a child workflow too.
#[test]
fn fixtures_answer_the_steps_of_a_child_workflow() {
    let ws = Ws::new();
    ws.file(
        "flows/child.yaml",
        r#"name: child
providers:
  mycli:
    command: ["mycli-not-installed", "${PROMPT}"]
outputs:
  verdict: "${steps.Judge.json.verdict}"
  note: "${steps.Draft.output}"
steps:
  - name: Draft
    provider: mycli
    input_file: prompt.md
  - name: Judge
    phase: readonly
    output_capture: json
    prompt: "judge it"
"#,
    );
    ws.file(
        "wf.yaml",
        r#"name: parent
steps:
  - name: Sub
    workflow: flows/child.yaml
  - name: Show
    command: [echo, "${steps.Sub.outputs.verdict}: ${steps.Sub.outputs.note}"]
"#,
    );
    ws.file("prompt.md", "draft it");
    ws.file("cases/ok/agents/Draft.json", r#"{"result": "a draft"}"#);
    ws.file(
        "cases/ok/agents/Judge.json",
        r#"{"result": {"verdict": "good"}}"#,
    );
    ws.file(
        "cases/ok/expect.yaml",
        "path: [Sub, Show]\nstatus: succeeded\noutputs:\n  Sub.outputs.verdict: good\n  Sub.outputs.note: \"a draft\"\n",
    );
    ws.run(&["test", "wf.yaml", "--fixtures", "cases"])
        .ok()
        .stdout_has("ok      ok (Sub -> Show)");
}

/// A built-in provider template given a model still reaches the fixture agent as it expects
/// (the model flag belongs to the real CLI, not to the fixture agent).
#[test]
fn fixtures_answer_a_builtin_provider_step_that_names_a_model() {
    let ws = Ws::new();
    ws.file(
        "wf.yaml",
        r#"name: named
steps:
  - name: Draft
    provider: claude
    provider_params: {model: claude-opus-4-1-20250805}
    input_file: prompt.md
  - name: Show
    command: [echo, "${steps.Draft.output}"]
"#,
    );
    ws.file("prompt.md", "draft it");
    ws.file("cases/ok/agents/Draft.json", r#"{"result": "a draft"}"#);
    ws.file(
        "cases/ok/expect.yaml",
        "path: [Draft, Show]\nstatus: succeeded\n",
    );
    ws.run(&["test", "wf.yaml", "--fixtures", "cases"])
        .ok()
        .stdout_has("ok      ok (Draft -> Show)");
}
