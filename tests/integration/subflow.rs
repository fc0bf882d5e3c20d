//! Sub-workflows (`workflow:` steps): `with:` inputs and declared `outputs:` across a child run,
//! failures routed by the parent, nesting, the loader's checks of child files (snapshots under
//! `tests/fixtures/validate/subflow*`), resume of a parent killed while its child ran, the
//! parent's budget and cancel reaching into the child, a role's capabilities checked inside child
//! workflows, and a child run inside a swarm task.

#[allow(unused_imports)]
use crate::harness::*;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);

/// The child run directory of a parent's `workflow:` step, from the step's result.
fn child_dir(ws: &Ws, result: &Value) -> std::path::PathBuf {
    ws.join(
        result["run_root"]
            .as_str()
            .expect("run_root in the step result"),
    )
}

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn events_in(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn count_events(events: &[Value], name: &str) -> usize {
    events.iter().filter(|e| e["event"] == name).count()
}

const CHILD: &str = r#"name: child
context:
  greeting: hello
outputs:
  message: "${steps.Say.output}"
  parsed: "${steps.Parse.json}"
  items: "${context.items}"
  config: "${context.config}"
  fixed: "v1"
steps:
  - name: Say
    command: [bash, -c, 'printf "%s %s" "$0" "$1"', "${context.greeting}", "${context.who}"]
  - name: Parse
    command: [bash, -c, 'echo "{\"n\": 3, \"ok\": true}"']
    output_capture: json
"#;

#[test]
fn with_inputs_and_declared_outputs_round_trip_json_values_through_a_child_run() {
    let ws = Ws::new();
    ws.file("flows/child.yaml", CHILD);
    ws.workflow(
        r#"name: parent
steps:
  - name: Config
    command: [bash, -c, 'echo "{\"retries\": 2, \"tags\": [\"a\", \"b\"]}"']
    output_capture: json
  - name: Sub
    workflow: flows/child.yaml
    with:
      who: world
      items: [1, 2, 3]
      config: "${steps.Config.json}"
  - name: Use
    command: [bash, -c, 'printf "%s|%s|%s|%s|%s" "$@" > used.txt', _, "${steps.Sub.outputs.message}", "${steps.Sub.outputs.parsed.n}", "${steps.Sub.outputs.config.tags}", "${steps.Sub.outputs.fixed}", "${steps.Sub.status}"]
"#,
    );
    ws.run(&["validate", "wf.yaml"]).ok();
    let run = ws.run_wf(&[]);
    run.ok()
        .stderr_has("▶ Sub runs workflow flows/child.yaml")
        .stderr_has("  Sub › ✓ Say (");
    assert_eq!(
        ws.read("used.txt"),
        r#"hello world|3|["a","b"]|v1|succeeded"#
    );

    let sub = run.step("Sub");
    assert_eq!(sub["status"], "succeeded");
    assert_eq!(sub["exit_code"], 0);
    assert_eq!(sub["workflow"], "flows/child.yaml");
    // Typed values stay typed: a literal list, an object from a single reference, a number.
    assert_eq!(sub["outputs"]["items"], json!([1, 2, 3]));
    assert_eq!(
        sub["outputs"]["config"],
        json!({"retries": 2, "tags": ["a", "b"]})
    );
    assert_eq!(sub["outputs"]["parsed"], json!({"n": 3, "ok": true}));
    assert_eq!(sub["outputs"]["message"], "hello world");

    // The child has its own RUN_ROOT inside the parent's, with its own records.
    let dir = child_dir(&ws, &sub);
    assert!(
        dir.starts_with(ws.run_dir(run.id()).join("children")),
        "{}",
        dir.display()
    );
    let state = read_json(&dir.join("state.json"));
    assert_eq!(state["run_id"], sub["run_id"]);
    assert_eq!(state["status"], "succeeded");
    assert_eq!(state["workflow"], "flows/child.yaml");
    assert_eq!(state["context"]["who"], "world");
    assert_eq!(
        state["context"]["greeting"], "hello",
        "the child's own default"
    );
    assert_eq!(state["outputs"]["fixed"], "v1");
    assert!(dir.join("workflow.yaml").is_file());
    let child_events = events_in(&dir);
    assert_eq!(child_events[0]["event"], "run_started");
    assert_eq!(child_events[0]["parent"]["run_id"], run.id());
    assert_eq!(child_events[0]["parent"]["step"], "Sub");
    assert_eq!(
        child_events.last().unwrap()["outputs"]["message"],
        "hello world"
    );

    // The parent's log links the child: started, then finished with its run id.
    let events = run.events();
    let started = events
        .iter()
        .find(|e| e["event"] == "child_started")
        .expect("child_started");
    let finished = events
        .iter()
        .find(|e| e["event"] == "child_finished")
        .expect("child_finished");
    assert_eq!(started["step"], "Sub");
    assert_eq!(started["run_root"], sub["run_root"]);
    assert_eq!(finished["run_id"], sub["run_id"]);
    assert_eq!(finished["status"], "succeeded");

    // status lists the child; status and logs reach it by its id.
    let child_id = sub["run_id"].as_str().unwrap();
    ws.run(&["status", run.id()]).ok().stdout_has(&format!(
        "child: Sub (workflow flows/child.yaml): run {child_id} succeeded"
    ));
    let status: Value =
        serde_json::from_str(&ws.run(&["status", run.id(), "--json"]).ok().stdout).unwrap();
    assert_eq!(status["run"]["children"][0]["run_id"], child_id);
    ws.run(&["status", child_id])
        .ok()
        .stdout_has(&format!("run {child_id}  workflow child  succeeded"));
    ws.run(&["logs", child_id])
        .ok()
        .stdout_has("0001-Say.stdout")
        .stdout_has("hello world");
    ws.run(&["logs", run.id(), "Sub"])
        .ok()
        .stdout_has(&format!(
            "== step `Sub` runs workflow flows/child.yaml: child run {child_id} =="
        ))
        .stdout_has("hello world");
    ws.run(&["report", run.id()])
        .ok()
        .stdout_has(&format!(
            "  Sub (exec 2): workflow flows/child.yaml, run {child_id} succeeded  (orchestrate report {child_id})"
        ));
    // The graph shows the step as a sub-workflow.
    ws.run(&["graph", "wf.yaml"])
        .ok()
        .stdout_has(r#"[["Sub (workflow flows/child.yaml)"]]"#);
}

#[test]
fn a_failed_child_is_routed_by_the_parents_on_failure() {
    let ws = Ws::new();
    ws.file(
        "flows/child.yaml",
        "name: child\nsteps:\n  - name: Ok\n    command: [touch, child-ok]\n  - name: Breaks\n    command: [bash, -c, 'echo broken >&2; exit 3']\n  - name: Never\n    command: [touch, child-never]\n",
    );
    ws.workflow(
        "name: parent\nsteps:\n  - name: Sub\n    workflow: flows/child.yaml\n    on:\n      failure: {goto: Recover}\n  - name: Skipped\n    command: [touch, skipped]\n  - name: Recover\n    command: [bash, -c, 'echo \"$0 $1\" > recovered', \"${steps.Sub.status}\", \"${steps.Sub.exit_code}\"]\n",
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert!(ws.exists("child-ok"));
    assert!(
        !ws.exists("child-never"),
        "the child stopped at its failure"
    );
    assert!(!ws.exists("skipped"), "the parent took on.failure");
    assert_eq!(ws.read("recovered"), "failed 1\n");
    let sub = run.step("Sub");
    assert_eq!(sub["status"], "failed");
    let error = sub["error"].as_str().unwrap();
    assert!(
        error.contains("workflow flows/child.yaml (child run")
            && error.contains("step `Breaks` (line 5) failed: exited with code 3"),
        "{error}"
    );
    assert_eq!(sub["last_step"], "Breaks");
    let state = read_json(&child_dir(&ws, &sub).join("state.json"));
    assert_eq!(state["status"], "failed");

    // Without a failure edge the parent fails with the child's reason.
    ws.workflow("name: parent\nsteps:\n  - name: Sub\n    workflow: flows/child.yaml\n  - name: After\n    command: [touch, after]\n");
    ws.run_wf(&[])
        .code(1)
        .stderr_has("step `Sub` (line 3) failed: workflow flows/child.yaml (child run")
        .stderr_has("step `Breaks` (line 5) failed: exited with code 3");
    assert!(!ws.exists("after"));
}

#[test]
fn workflows_nest_two_levels_and_outputs_bubble_up() {
    let ws = Ws::new();
    ws.file(
        "flows/leaf.yaml",
        "name: leaf\ncontext:\n  n: 0\noutputs:\n  doubled: \"${steps.Double.json}\"\nsteps:\n  - name: Double\n    command: [bash, -c, 'echo $(( $0 * 2 ))', \"${context.n}\"]\n    output_capture: json\n",
    );
    ws.file(
        "flows/middle.yaml",
        "name: middle\ncontext:\n  n: 0\noutputs:\n  result: \"${steps.Leaf.outputs.doubled}\"\n  leaf_run: \"${steps.Leaf.run_id}\"\nsteps:\n  - name: Leaf\n    workflow: flows/leaf.yaml\n    with:\n      n: \"${context.n}\"\n",
    );
    ws.workflow(
        "name: top\nsteps:\n  - name: Middle\n    workflow: flows/middle.yaml\n    with:\n      n: 21\n  - name: Show\n    command: [bash, -c, 'echo $0 > answer', \"${steps.Middle.outputs.result}\"]\n",
    );
    ws.run(&["validate", "wf.yaml"]).ok();
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(ws.read("answer"), "42\n");
    let middle = run.step("Middle");
    assert_eq!(middle["outputs"]["result"], 42, "a number stays a number");
    let middle_dir = child_dir(&ws, &middle);
    let middle_state = read_json(&middle_dir.join("state.json"));
    let leaf = &middle_state["steps"]["Leaf"];
    assert_eq!(leaf["run_id"], middle["outputs"]["leaf_run"]);
    let leaf_dir = child_dir(&ws, leaf);
    assert!(
        leaf_dir.starts_with(middle_dir.join("children")),
        "the grandchild lives inside the child: {}",
        leaf_dir.display()
    );
    assert_eq!(
        read_json(&leaf_dir.join("state.json"))["status"],
        "succeeded"
    );
    // The grandchild is reachable by its id too.
    let leaf_id = leaf["run_id"].as_str().unwrap();
    ws.run(&["status", leaf_id])
        .ok()
        .stdout_has("workflow leaf  succeeded");
}

// ---------------------------------------------------------------------------------------------
// validate

#[test]
fn a_cycle_between_two_workflow_files_is_refused_naming_the_cycle() {
    crate::validate::refused("subflow_cycle_a")
        .stderr_has("subflow_cycle_a.yaml:6:15: error: step `ToB` runs workflow `subflow/cycle_b.yaml`, which has 1 problem(s)")
        .stderr_has("subflow/cycle_b.yaml:4:15: error: workflow cycle: subflow_cycle_a.yaml:6 (step `ToB`) -> subflow/cycle_b.yaml:4 (step `BackToA`) -> subflow_cycle_a.yaml");
}

#[test]
fn a_workflow_that_runs_itself_is_refused() {
    crate::validate::refused("subflow_self").stderr_has(
        "subflow_self.yaml:4:15: error: workflow cycle: subflow_self.yaml:4 (step `Again`) -> subflow_self.yaml",
    );
}

#[test]
fn a_missing_child_file_is_refused_at_the_workflow_line() {
    crate::validate::refused("subflow_missing").stderr_has(
        "subflow_missing.yaml:4:15: error: step `Build` runs workflow `subflow/no_such_child.yaml`, which is not a file in the workspace",
    );
    // A child outside the workspace is refused the same way, and `run` refuses it before
    // anything starts.
    let ws = Ws::new();
    ws.workflow("steps:\n  - name: Out\n    workflow: ../elsewhere.yaml\n");
    ws.run(&["validate", "wf.yaml"])
        .code(2)
        .stderr_has(
            "wf.yaml:3:15: error: `workflow` of step `Out`: `../elsewhere.yaml` resolves to",
        )
        .stderr_has("outside the workspace");
    ws.run_wf(&[]).code(2).stderr_has("nothing was run");
    assert!(!ws.exists(".orchestrate/runs"));
}

#[test]
fn outputs_the_child_does_not_declare_and_inputs_that_do_not_match_are_refused() {
    crate::validate::refused("subflow_outputs")
        .stderr_has("subflow_outputs.yaml:7:7: error: `with.targte` of step `Build`: workflow subflow/child.yaml neither declares `targte` under `context:` nor reads `${context.targte}`")
        .stderr_has("did you mean `target`?")
        .stderr_has("subflow_outputs.yaml:9:56: error: step `Ship` uses `${steps.Build.outputs.artefact}`, but workflow subflow/child.yaml (run by step `Build`) declares no output `artefact`")
        .stderr_has("did you mean `artifact`?")
        .stderr_has("only `workflow` steps have outputs")
        .stderr_has("subflow_outputs.yaml:13:15: error: workflow `subflow/needs.yaml` reads `${context.branch}`, which has no default under its `context:`, and step `NoInput` gives no `with.branch`");
}

#[test]
fn a_problem_in_the_child_is_reported_at_the_childs_line_and_at_the_parents() {
    crate::validate::refused("subflow_bad_child")
        .stderr_has("subflow_bad_child.yaml:6:15: error: step `Sub` runs workflow `subflow/broken.yaml`, which has 2 problem(s)")
        .stderr_has("subflow/broken.yaml:4:5: error: unknown field `comand` in step `Build`")
        .stderr_has("4 |     comand: [make]")
        .stderr_has("subflow/broken.yaml:6:22: error: step `Test` uses `${steps.Biuld.output}`")
        .stderr_has("`retry` has no meaning on a workflow step");
}

// ---------------------------------------------------------------------------------------------
// resume

/// A background `orchestrate`, killed if the test ends early.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(ws: &Ws, args: &[&str]) -> Bg {
    Bg(ws
        .cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn orchestrate"))
}

const RESUMABLE_CHILD: &str = r#"name: child
outputs:
  second: "${steps.C2.output}"
steps:
  - name: C1
    command: [bash, -c, 'echo C1 >> ran.log']
  - name: C2
    command: [bash, -c, 'echo $$ > c2.pid; echo C2 >> ran.log; while [ -f block ]; do sleep 0.05; done; printf two']
  - name: C3
    command: [bash, -c, 'echo C3 >> ran.log']
"#;

const RESUMABLE_PARENT: &str = r#"name: parent
steps:
  - name: P1
    command: [bash, -c, 'echo P1 >> ran.log']
  - name: Sub
    workflow: flows/child.yaml
  - name: P2
    command: [bash, -c, 'echo "P2 $0" >> ran.log', "${steps.Sub.outputs.second}"]
"#;

#[test]
fn kill_9_of_the_parent_while_the_child_runs_then_resume_continues_the_same_child_run() {
    let ws = Ws::new();
    ws.file("flows/child.yaml", RESUMABLE_CHILD);
    ws.workflow(RESUMABLE_PARENT);
    ws.file("block", "");
    let mut bg = spawn(&ws, &["run", "wf.yaml"]);
    wait_until("C2 to start", DEADLINE, || {
        lines(&ws, "ran.log").contains(&"C2".to_string())
    });
    let group = pid_from_file(&ws, "c2.pid");
    let id = only_run_id(&ws);
    // While the child runs, the parent's state names it and its RUN_ROOT.
    let link = ws.state(&id)["children"]["0002-Sub"].clone();
    assert_eq!(link["step"], "Sub", "{link:#}");
    assert_eq!(link["workflow"], "flows/child.yaml");
    let linked_root = link["run_root"].as_str().unwrap().to_string();
    assert!(
        ws.join(&linked_root).join("events.jsonl").is_file(),
        "{linked_root}"
    );
    crash(&mut bg.0, &group);
    std::fs::remove_file(ws.join("block")).unwrap();
    assert_eq!(lines(&ws, "ran.log"), ["P1", "C1", "C2"]);
    // The child resumes from the copy saved in its own directory: an edit of its file since
    // (even one that breaks it) changes nothing for this run.
    ws.file("flows/child.yaml", "steps: [oops\n");

    let run = run_within(&ws, &["resume", &id], DEADLINE);
    run.ok();
    assert_eq!(
        lines(&ws, "ran.log"),
        ["P1", "C1", "C2", "C2", "C3", "P2 two"],
        "P1 and C1 completed before the kill and did not run again; C2 (in flight) ran again"
    );
    let sub = ws.state(&id)["steps"]["Sub"].clone();
    assert_eq!(sub["status"], "succeeded");
    let dir = child_dir(&ws, &sub);
    assert_eq!(sub["run_root"], linked_root.as_str(), "the same child run");
    let child_events = events_in(&dir);
    assert_eq!(
        count_events(&child_events, "run_started"),
        1,
        "one child run"
    );
    assert_eq!(
        count_events(&child_events, "run_resumed"),
        1,
        "resumed, not restarted"
    );
    assert_eq!(read_json(&dir.join("state.json"))["run_id"], sub["run_id"]);
    let finished: Vec<Value> = ws
        .events(&id)
        .into_iter()
        .filter(|e| e["event"] == "child_finished")
        .collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["resumed"], true);
    // The child's lock was released with its run; a second resume of the finished parent is
    // refused as for any run.
    ws.run(&["resume", &id])
        .code(2)
        .stderr_has("already succeeded");
    // A child run is continued (or cancelled) through its parent only.
    let child_id = sub["run_id"].as_str().unwrap();
    ws.run(&["resume", child_id])
        .code(2)
        .stderr_has(&format!(
            "it is the child run of a `workflow:` step; resume its parent instead: `orchestrate resume {id}`"
        ));
    ws.run(&["cancel", child_id])
        .code(2)
        .stderr_has(&format!("cancel the parent (`orchestrate cancel {id}`)"));
}

#[test]
fn an_approval_inside_a_child_is_answered_by_the_child_run_id() {
    let ws = Ws::new();
    ws.file(
        "flows/gated.yaml",
        "name: gated\noutputs:\n  note: \"${steps.Gate.note}\"\nsteps:\n  - name: Gate\n    approval:\n      message: ship it?\n",
    );
    ws.workflow("name: parent\nsteps:\n  - name: Sub\n    workflow: flows/gated.yaml\n  - name: After\n    command: [bash, -c, 'echo \"$0\" > note', \"${steps.Sub.outputs.note}\"]\n");
    let mut bg = spawn(&ws, &["run", "wf.yaml"]);
    let mut child_id = String::new();
    wait_until("the child's approval request", DEADLINE, || match entries(
        &ws,
        ".orchestrate/approvals",
    )
    .first()
    {
        Some(id) if ws.exists(&format!(".orchestrate/approvals/{id}/Gate.request.json")) => {
            child_id = id.clone();
            true
        }
        _ => false,
    });
    let parent = only_run_id(&ws);
    assert_ne!(child_id, parent, "the request is the child run's");
    ws.run(&["approve", &child_id, "Gate", "--note", "go"]).ok();
    let status = exit_within(&mut bg.0, DEADLINE).expect("the parent did not finish");
    assert!(status.success());
    assert_eq!(ws.read("note"), "go\n");
    assert_eq!(ws.state(&parent)["steps"]["Sub"]["run_id"], child_id);
}

#[test]
fn a_child_that_finished_before_the_parent_died_is_not_run_again() {
    let ws = Ws::new();
    ws.file("flows/child.yaml", RESUMABLE_CHILD);
    ws.workflow(
        r#"name: parent
steps:
  - name: P1
    command: [bash, -c, 'echo P1 >> ran.log']
  - name: Sub
    workflow: flows/child.yaml
  - name: P2
    command: [bash, -c, 'echo "P2 $0" >> ran.log; echo $$ > p2.pid; while [ -f block2 ]; do sleep 0.05; done', "${steps.Sub.outputs.second}"]
"#,
    );
    ws.file("block2", "");
    let mut bg = spawn(&ws, &["run", "wf.yaml"]);
    let group = pid_from_file(&ws, "p2.pid");
    let id = only_run_id(&ws);
    crash(&mut bg.0, &group);
    std::fs::remove_file(ws.join("block2")).unwrap();
    // The crash came after the child finished but before the parent recorded it: cut the
    // parent's log back to the child's start, as if it had died at that instant.
    let events_path = ws.run_dir(&id).join("events.jsonl");
    let text = std::fs::read_to_string(&events_path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .take_while(|l| !l.contains("\"child_finished\""))
        .collect();
    std::fs::write(&events_path, format!("{}\n", kept.join("\n"))).unwrap();
    assert_eq!(lines(&ws, "ran.log"), ["P1", "C1", "C2", "C3", "P2 two"]);

    run_within(&ws, &["resume", &id], DEADLINE).ok();
    assert_eq!(
        lines(&ws, "ran.log"),
        ["P1", "C1", "C2", "C3", "P2 two", "P2 two"],
        "the finished child was not run again; its outputs still reached P2"
    );
    let finished: Vec<Value> = ws
        .events(&id)
        .into_iter()
        .filter(|e| e["event"] == "child_finished")
        .collect();
    assert_eq!(finished.last().unwrap()["reused"], true);
}

// ---------------------------------------------------------------------------------------------
// limits and steering

#[test]
fn the_parents_budget_stops_an_expensive_child_and_counts_its_spending() {
    let mut ws = Ws::new();
    crate::budgets::stand_in(&mut ws);
    ws.file(
        "flows/agent.yaml",
        &format!("name: spender\nsteps:{}", crate::budgets::AGENT_STEP),
    );
    ws.workflow(
        "budget:\n  max_tokens: 2000\nsteps:\n  - name: Sub\n    workflow: flows/agent.yaml\n  - name: After\n    command: [touch, after]\n",
    );
    let run = crate::budgets::run_until_stopped(&ws, &["run", "wf.yaml"]);
    run.code(1)
        .stderr_has("budget exceeded: max_tokens (the run's budget, set at wf.yaml:2): spent 4500 tokens against a limit of 2000 tokens")
        .stderr_has("step `Impl` was running and its processes were stopped");
    assert!(!ws.exists("after"), "the parent stopped too");
    let sub = run.step("Sub");
    assert_eq!(sub["status"], "failed");
    let usage = &sub["usage"];
    let total: u64 = ["input", "output", "cache_read", "cache_write"]
        .iter()
        .map(|k| usage[k].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 4500, "the child's spending is the step's: {sub}");
    let report = ws.run(&["report", run.id(), "--json"]);
    let report: Value = serde_json::from_str(&report.ok().stdout).unwrap();
    assert_eq!(
        report["totals"]["tokens"]["input"], 3000,
        "the parent's report counts the child's tokens: {report}"
    );
}

#[test]
fn cancel_of_the_parent_stops_the_childs_processes() {
    let ws = Ws::new();
    ws.file(
        "flows/child.yaml",
        "name: child\nsteps:\n  - name: Work\n    command: [sh, -c, 'sleep 60 & echo $! > sleeper.pid; wait']\n  - name: Later\n    command: [touch, later]\n",
    );
    ws.workflow("name: parent\nsteps:\n  - name: Sub\n    workflow: flows/child.yaml\n  - name: After\n    command: [touch, after]\n");
    let mut bg = spawn(&ws, &["run", "wf.yaml"]);
    let sleeper: u32 = pid_from_file(&ws, "sleeper.pid").parse().unwrap();
    let id = only_run_id(&ws);
    // While it runs, the parent's status says where the child is.
    ws.run(&["status", &id])
        .ok()
        .stdout_has("now: Sub (workflow)")
        .stdout_has(" running at Work  (orchestrate status ");
    run_within(&ws, &["cancel", &id], DEADLINE)
        .ok()
        .stderr_has(&format!("cancelled run {id}"));
    let status = exit_within(&mut bg.0, DEADLINE).expect("the parent did not exit");
    assert_eq!(status.code(), Some(130));
    assert!(
        !pid_alive(sleeper),
        "the child's step process group is gone"
    );
    assert!(!ws.exists("later") && !ws.exists("after"));
    let sub = ws.state(&id)["steps"]["Sub"].clone();
    assert_eq!(
        sub["status"], "interrupted",
        "resume would continue it: {sub}"
    );
    let child = read_json(&child_dir(&ws, &sub).join("state.json"));
    assert_eq!(child["status"], "interrupted");
}

#[test]
fn a_timeout_on_the_workflow_step_stops_the_child() {
    let ws = Ws::new();
    ws.file(
        "flows/child.yaml",
        "name: child\nsteps:\n  - name: Slow\n    command: [sh, -c, 'sleep 60 & echo $! > sleeper.pid; wait']\n",
    );
    ws.workflow("name: parent\nsteps:\n  - name: Sub\n    workflow: flows/child.yaml\n    timeout_sec: 0.5\n    on:\n      failure: {goto: Handle}\n  - name: Handle\n    command: [bash, -c, 'echo $0 > code', \"${steps.Sub.exit_code}\"]\n");
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.ok();
    assert_eq!(ws.read("code"), "124\n");
    let sleeper: u32 = ws.read("sleeper.pid").trim().parse().unwrap();
    assert!(!pid_alive(sleeper));
    let error = run.step("Sub")["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("timed out after 0.5s (timeout_sec); child run"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// swarm

#[test]
fn a_role_is_refused_a_child_workflow_with_a_step_beyond_its_capabilities() {
    let ws = Ws::new();
    ws.file(
        "workflows/build.yaml",
        "name: build\nsteps:\n  - name: Hand\n    enqueue: {role: dev, text: go}\n  - name: Make\n    command: [make]\n",
    );
    role(
        &ws,
        "coord",
        "capabilities: [enqueue, approval]\n",
        "name: coord\nsteps:\n  - name: Sub\n    workflow: workflows/build.yaml\n",
    );
    ws.run(&["validate", "agents/coord.yaml"])
        .code(2)
        .stderr_has("workflows/build.yaml:5:1: error: step `Make` (in child workflow")
        .stderr_has("needs capability `command`, which role `coord` does not have (its capabilities: [enqueue, approval])")
        .stderr_has("5 |   - name: Make");
    ws.run(&["enqueue", "coord", "--text", "x", "--name", "t1"])
        .ok();
    ws.run(&["agent", "coord", "--once"])
        .code(2)
        .stderr_has("needs capability `command`");
    assert_eq!(queued(&ws, "coord"), ["t1.task"], "nothing ran");
}

#[test]
fn a_swarm_task_runs_a_child_workflow_that_sees_the_task() {
    let ws = Ws::new();
    ws.file(
        "workflows/echo.yaml",
        "name: echo\ncontext:\n  prefix: ''\noutputs:\n  said: \"${steps.Say.output}\"\nsteps:\n  - name: Say\n    command: [bash, -c, 'printf \"%s%s\" \"$0\" \"$1\"', \"${context.prefix}\", \"${task.text}\"]\n",
    );
    role(
        &ws,
        "r",
        "",
        "name: r\nsteps:\n  - name: Sub\n    workflow: workflows/echo.yaml\n    with:\n      prefix: 'task: '\n  - name: Keep\n    command: [bash, -c, 'echo \"$0\" > kept', \"${steps.Sub.outputs.said}\"]\n",
    );
    ws.run(&["enqueue", "r", "--text", "hello", "--name", "t1"])
        .ok();
    run_within(&ws, &["agent", "r", "--once"], DEADLINE).ok();
    assert_eq!(ws.read("kept"), "task: hello\n");
    let done: Vec<String> = entries(&ws, "processed");
    assert_eq!(done.len(), 1, "{done:?}");
    let task_dir = ws.join(&format!("processed/{}", done[0]));
    // The child's records moved with the task; a task's runs keep no state.json.
    let children: Vec<_> = walk(&task_dir)
        .into_iter()
        .filter(|p| p.ends_with("events.jsonl") && p.to_string_lossy().contains("/children/"))
        .collect();
    assert_eq!(
        children.len(),
        1,
        "one child event log under {}",
        task_dir.display()
    );
    let child_events = events_in(children[0].parent().unwrap());
    assert_eq!(child_events.last().unwrap()["event"], "run_finished");
    assert_eq!(child_events.last().unwrap()["status"], "succeeded");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

#[test]
fn a_parents_secret_reaches_only_the_child_steps_that_list_it_and_is_masked() {
    let mut ws = Ws::new();
    ws.env("DEPLOY_TOKEN", "s3cr3t-value");
    ws.file(
        "flows/child.yaml",
        "name: child\nsteps:\n  - name: Blind\n    command: [bash, -c, 'echo \"blind:$${DEPLOY_TOKEN:-unset}\"']\n",
    );
    // A grandchild that lists the secret sees it, masked in its records.
    ws.file(
        "flows/sees.yaml",
        "name: sees\nsteps:\n  - name: Sees\n    command: [bash, -c, 'echo \"sees:$DEPLOY_TOKEN\"']\n    secrets: [DEPLOY_TOKEN]\n",
    );
    ws.workflow("name: parent\nsteps:\n  - name: Login\n    command: [bash, -c, 'test -n \"$DEPLOY_TOKEN\"']\n    secrets: [DEPLOY_TOKEN]\n  - name: Sub\n    workflow: flows/child.yaml\n  - name: Sub2\n    workflow: flows/sees.yaml\n");
    let run = ws.run_wf(&[]);
    run.ok();
    let state = read_json(&child_dir(&ws, &run.step("Sub")).join("state.json"));
    assert_eq!(
        state["steps"]["Blind"]["output"], "blind:unset",
        "the child's step does not list the parent's secret"
    );
    let state = read_json(&child_dir(&ws, &run.step("Sub2")).join("state.json"));
    assert_eq!(state["steps"]["Sees"]["output"], "sees:***");
    for entry in walk(&ws.join(".orchestrate")) {
        if entry.is_file() {
            let bytes = std::fs::read(&entry).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains("s3cr3t-value"),
                "{} holds the secret",
                entry.display()
            );
        }
    }
}

#[test]
fn a_child_file_broken_before_its_step_started_fails_that_step_on_resume_with_its_problems() {
    let ws = Ws::new();
    ws.file("flows/child.yaml", RESUMABLE_CHILD);
    ws.workflow(
        r#"name: parent
steps:
  - name: P0
    command: [bash, -c, 'echo P0 >> ran.log; echo $$ > p0.pid; while [ -f block ]; do sleep 0.05; done']
  - name: Sub
    workflow: flows/child.yaml
"#,
    );
    ws.file("block", "");
    let mut bg = spawn(&ws, &["run", "wf.yaml"]);
    let group = pid_from_file(&ws, "p0.pid");
    let id = only_run_id(&ws);
    crash(&mut bg.0, &group);
    std::fs::remove_file(ws.join("block")).unwrap();
    ws.file(
        "flows/child.yaml",
        "steps:\n  - name: X\n    comand: [true]\n",
    );
    run_within(&ws, &["resume", &id], DEADLINE)
        .code(2)
        .stderr_has("step `Sub` (line 5) failed: workflow `flows/child.yaml` does not load (1 problem(s)); fix it and resume:")
        .stderr_has("unknown field `comand` in step `X`");
    // Fixed, the next resume runs it.
    ws.file("flows/child.yaml", RESUMABLE_CHILD);
    run_within(&ws, &["resume", &id], DEADLINE).ok();
    assert_eq!(lines(&ws, "ran.log"), ["P0", "P0", "C1", "C2", "C3"]);
}

/// Under `isolation: worktree` the child's steps work in the parent's worktree.
#[test]
fn a_child_of_an_isolated_run_works_in_the_parents_worktree() {
    let ws = Ws::new();
    let out = ws.join("where");
    ws.file(
        "flows/child.yaml",
        &format!(
            "name: child\nsteps:\n  - name: Where\n    command: [sh, -c, 'pwd > {}']\n",
            out.display()
        ),
    );
    ws.workflow("isolation: worktree\nsteps:\n  - name: Sub\n    workflow: flows/child.yaml\n");
    ws.file(".gitignore", "/.orchestrate/\n/where\n");
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["config", "user.email", "test@example.com"],
        &["config", "user.name", "Test"],
        &["add", "-A"],
        &["commit", "-q", "-m", "setup"],
    ] {
        let status = Command::new("git")
            .args(args)
            .current_dir(ws.path())
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(
        ws.read("where").trim(),
        ws.join(&format!(".orchestrate/worktrees/_runs/{}", run.id()))
            .display()
            .to_string()
    );
}

/// Items of a parallel `for_each` that each run the same child workflow get a child run each
/// (their executions are numbered per item, so the lane keeps the directories apart), and the
/// children run at once.
#[test]
fn parallel_items_each_run_their_own_child_run() {
    let ws = Ws::new();
    ws.file(
        "flows/greet.yaml",
        r#"name: greet
outputs:
  message: "${steps.Say.output}"
steps:
  - name: Say
    command: [bash, -c, 'touch "started-$0"; for i in $(seq 100); do [ $(ls started-* | wc -l) -ge 3 ] && break; sleep 0.05; done; printf "hi %s" "$0"', "${context.who}"]
"#,
    );
    ws.workflow(
        r#"name: fan
steps:
  - name: Each
    for_each:
      items: [ann, bob, cy]
      as: who
      max_parallel: 3
      steps:
        - name: Greet
          workflow: flows/greet.yaml
          with: {who: "${who}"}
        - name: Keep
          command: [bash, -c, 'printf "%s\n" "$0" >> greetings.txt', "${steps.Greet.outputs.message}"]
"#,
    );
    ws.run(&["validate", "wf.yaml"]).ok();
    let run = ws.run_wf(&[]);
    run.ok();
    let mut lines: Vec<String> = ws
        .read("greetings.txt")
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(lines, ["hi ann", "hi bob", "hi cy"]);
    // One child run per item, each with its own directory, context and outputs.
    let children = ws.run_dir(run.id()).join("children");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&children).unwrap() {
        let dir = entry.unwrap().path();
        let state = read_json(&dir.join("state.json"));
        assert_eq!(state["status"], "succeeded", "{}", dir.display());
        seen.push(state["context"]["who"].as_str().unwrap().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["ann", "bob", "cy"]);
    // The parent's state links each item's child run.
    let links = ws.state(run.id())["children"].clone();
    assert_eq!(links.as_object().map(|m| m.len()), Some(3), "{links:#}");
    for link in links.as_object().unwrap().values() {
        assert!(
            ws.join(link["run_root"].as_str().unwrap()).is_dir(),
            "{link:#}"
        );
        assert_eq!(link["lane"].as_array().map(Vec::len), Some(2), "{link:#}");
    }
    let each = run.step("Each");
    let statuses: Vec<&str> = each["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "succeeded", "succeeded"]);
}
