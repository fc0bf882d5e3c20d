//! Role processes pick up edits between tasks (a broken edit keeps the previous version and says
//! why), `swarm reload` starts and stops role processes for added and removed role files, role
//! processes stop when their supervisor dies and `swarm status` never hides a live one, and what
//! `swarm down` and Ctrl-C on `agent` say.

#[allow(unused_imports)]
use crate::harness::*;

use std::time::Duration;

use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// A workflow that appends `<version> <task id>` to `ran.log`.
fn versioned(version: &str) -> String {
    format!(
        "steps:\n  - name: Record\n    command: [sh, -c, 'echo \"$1 $2\" >> ran.log', record, {version}, '${{task.id}}']\n"
    )
}

/// A workflow whose step sleeps (long) after writing `started/<task id>`.
const SLEEPY: &str = r#"
steps:
  - name: Sleep
    command: [sh, -c, 'mkdir -p started && echo $$ > "started/$1" && exec sleep 600', sleep, '${task.id}']
"#;

fn enqueue(ws: &Ws, role: &str, name: &str) {
    run_within(
        ws,
        &["enqueue", role, "--text", "x", "--name", name],
        Duration::from_secs(20),
    )
    .ok();
}

fn ran(ws: &Ws) -> Vec<String> {
    lines(ws, "ran.log")
}

fn sha256(ws: &Ws, rel: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(ws.join(rel))
        .output()
        .expect("run sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// status.json of the processed task `id` of `role`.
fn processed_status(ws: &Ws, role: &str, id: &str) -> Value {
    let suffix = format!("_{role}_{id}");
    let dir = entries(ws, "processed")
        .into_iter()
        .find(|n| n.ends_with(&suffix))
        .unwrap_or_else(|| {
            panic!(
                "no processed/ entry for {id}: {:?}",
                entries(ws, "processed")
            )
        });
    json_file(ws, &format!("processed/{dir}/status.json"))
}

fn status_json(ws: &Ws) -> Value {
    let run = run_within(ws, &["swarm", "status", "--json"], Duration::from_secs(20));
    run.ok();
    serde_json::from_str(&run.stdout).expect("swarm status --json")
}

fn status_text(ws: &Ws) -> String {
    let run = run_within(ws, &["swarm", "status"], Duration::from_secs(20));
    run.ok();
    run.stdout
}

/// Stops a background supervisor (and whatever it runs) when the test ends.
struct Down<'a>(&'a Ws);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .cmd(&["swarm", "down", "--force", "--timeout", "20"])
            .output();
        for pid in working_in(self.0.path()) {
            signal_quiet("-KILL", &pid.to_string());
        }
    }
}

#[test]
fn an_edited_workflow_runs_for_the_next_task_and_a_broken_edit_keeps_the_previous_one() {
    let ws = Ws::new();
    role(&ws, "r", "settle_ms: 50\n", &versioned("v1"));
    let mut agents = Agents::new(&ws);
    let agent = agents.spawn(&ws, "r", &[], &[]);
    enqueue(&ws, "r", "t1");
    wait_until("t1 to run", WAIT, || {
        ran(&ws).contains(&"v1 t1".to_string())
    });
    wait_until("t1 to be processed", WAIT, || {
        entries(&ws, "processed")
            .iter()
            .any(|n| n.ends_with("_r_t1"))
    });
    let v1 = sha256(&ws, "workflows/r.yaml");
    assert_eq!(processed_status(&ws, "r", "t1")["workflow_hash"], v1);

    // The fix, while the role runs: the next task runs it.
    ws.file("workflows/r.yaml", &versioned("v2"));
    enqueue(&ws, "r", "t2");
    wait_until("t2 to run", WAIT, || {
        ran(&ws).iter().any(|l| l.ends_with(" t2"))
    });
    assert!(
        ran(&ws).contains(&"v2 t2".to_string()),
        "t2 ran the old workflow: {:?}\n{}",
        ran(&ws),
        agents.logs()
    );
    wait_until("t2 to be processed", WAIT, || {
        entries(&ws, "processed")
            .iter()
            .any(|n| n.ends_with("_r_t2"))
    });
    let v2 = sha256(&ws, "workflows/r.yaml");
    assert_ne!(v1, v2);
    assert_eq!(processed_status(&ws, "r", "t2")["workflow_hash"], v2);

    // A broken edit: the previous version keeps running, and the role's log and `swarm status`
    // say why, with the file and line.
    ws.file(
        "workflows/r.yaml",
        "steps:\n  - name: Record\n    comand: [true]\n",
    );
    enqueue(&ws, "r", "t3");
    wait_until("t3 to run", WAIT, || {
        ran(&ws).iter().any(|l| l.ends_with(" t3"))
    });
    assert!(ran(&ws).contains(&"v2 t3".to_string()), "{:?}", ran(&ws));
    let log = agents.log(agent);
    assert!(log.contains("does not load"), "{log}");
    assert!(log.contains("workflows/r.yaml:3"), "{log}");
    let text = status_text(&ws);
    assert!(
        text.contains("role r: an edit was refused") && text.contains("workflows/r.yaml:3"),
        "{text}"
    );
    assert!(text.contains(&v2[..12]), "{text}");
    let status = status_json(&ws);
    let load = status["roles"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["role"] == "r"))
        .cloned()
        .unwrap();
    assert!(
        load["reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("workflows/r.yaml:3")),
        "{status:#}"
    );
}

#[test]
fn swarm_status_lists_a_role_process_started_by_hand() {
    let ws = Ws::new();
    role(&ws, "r", "", &versioned("v1"));
    let mut agents = Agents::new(&ws);
    let agent = agents.spawn(&ws, "r", &[], &[]);
    let pid = agents.pid(agent);
    let mut text = String::new();
    wait_until("the role process in swarm status", WAIT, || {
        text = status_text(&ws);
        text.contains(&pid.to_string())
    });
    assert!(text.contains("unsupervised"), "{text}");

    // With no supervisor, `swarm reload` signals the role processes themselves (SIGHUP).
    let reload = run_within(&ws, &["swarm", "reload"], WAIT);
    assert_eq!(reload.code, 0, "{reload:?}");
    assert!(reload.stdout.contains("r#1: unchanged"), "{reload:?}");
    ws.file("workflows/r.yaml", &versioned("v2"));
    let reload = run_within(&ws, &["swarm", "reload"], WAIT);
    assert!(reload.stdout.contains("r#1: reloaded"), "{reload:?}");
    assert!(pid_alive(pid), "{}", agents.logs());
}

#[test]
fn role_processes_stop_when_their_supervisor_is_killed() {
    let ws = Ws::new();
    let _down = Down(&ws);
    role(&ws, "r", "settle_ms: 50\n", SLEEPY);
    run_within(&ws, &["swarm", "up", "-d", "--grace", "1"], WAIT).ok();
    let file = json_file(&ws, ".orchestrate/swarm/status.json");
    let supervisor = file["supervisor"]["pid"].as_u64().unwrap() as u32;
    let child = file["children"][0]["pid"].as_u64().unwrap() as u32;
    enqueue(&ws, "r", "t1");
    wait_until("t1 to start", WAIT, || ws.exists("started/t1"));

    signal_quiet("-KILL", &supervisor.to_string());
    // The role process notices, stops claiming, and hands its task back after its grace.
    wait_until("the role process to stop", WAIT, || !pid_alive(child));
    assert!(
        queued(&ws, "r").contains(&"t1.task".to_string()),
        "t1 was not handed back: inbox {:?}, running {:?}",
        queued(&ws, "r"),
        entries(&ws, "running/r")
    );
    // Nothing claims it meanwhile: no role process is left.
    let status = status_json(&ws);
    assert_eq!(status["state"], "down", "{status:#}");
    assert_eq!(
        status["children"].as_array().map(Vec::len),
        Some(0),
        "{status:#}"
    );
}

#[test]
fn swarm_reload_starts_added_roles_and_stops_removed_ones() {
    let ws = Ws::new();
    let _down = Down(&ws);
    role(&ws, "a", "settle_ms: 50\n", &versioned("a"));
    role(&ws, "gone", "settle_ms: 50\n", &versioned("gone"));
    run_within(&ws, &["swarm", "up", "-d", "--grace", "5"], WAIT).ok();

    role(&ws, "b", "settle_ms: 50\n", &versioned("b"));
    std::fs::remove_file(ws.join("agents/gone.yaml")).unwrap();
    let reload = run_within(&ws, &["swarm", "reload"], WAIT);
    reload.ok();
    enqueue(&ws, "b", "t1");
    wait_until("the added role to run its task", WAIT, || {
        ran(&ws).contains(&"b t1".to_string())
    });
    wait_until("the removed role's process to stop", WAIT, || {
        let status = status_json(&ws);
        let children = status["children"].as_array().cloned().unwrap_or_default();
        children.iter().all(|c| c["role"] != "gone")
            && children
                .iter()
                .any(|c| c["role"] == "b" && c["state"] == "running")
    });

    // A role file that does not load is not started, and status says why.
    ws.file("agents/c.yaml", "workflow: workflows/c.yaml\nreplicas: [\n");
    let reload = run_within(&ws, &["swarm", "reload"], WAIT);
    assert_eq!(reload.code, 2, "{reload:?}");
    assert!(reload.stdout.contains("role c: not started"), "{reload:?}");
    let text = status_text(&ws);
    assert!(text.contains("role c has no role process"), "{text}");
    assert!(text.contains("agents/c.yaml:"), "{text}");
}

#[test]
fn swarm_down_says_what_it_waits_for_and_nothing_running_is_not_an_error() {
    let ws = Ws::new();
    role(&ws, "r", "settle_ms: 50\n", SLEEPY);
    let down = run_within(&ws, &["swarm", "down"], WAIT);
    assert_eq!(down.code, 0, "{down:?}");
    down.stderr_has("no swarm is running");

    let _down = Down(&ws);
    run_within(&ws, &["swarm", "up", "-d", "--grace", "600"], WAIT).ok();
    enqueue(&ws, "r", "t1");
    wait_until("t1 to start", WAIT, || ws.exists("started/t1"));
    let file = json_file(&ws, ".orchestrate/swarm/status.json");
    let child = file["children"][0]["pid"].as_u64().unwrap();
    let down = run_within(&ws, &["swarm", "down", "--timeout", "0"], WAIT);
    for needle in [
        "role r task `t1`",
        &format!("pid {child}"),
        "at most 600s",
        "swarm down --force",
    ] {
        assert!(
            down.stderr.contains(needle),
            "no {needle:?} in:\n{}",
            down.stderr
        );
    }
}

#[test]
fn ctrl_c_on_agent_says_a_second_one_stops_at_once_and_it_does() {
    let ws = Ws::new();
    role(&ws, "r", "settle_ms: 50\n", SLEEPY);
    let mut agents = Agents::new(&ws);
    let agent = agents.spawn(&ws, "r", &["--grace", "600"], &[]);
    enqueue(&ws, "r", "t1");
    wait_until("t1 to start", WAIT, || ws.exists("started/t1"));
    agents.signal(agent, "INT");
    wait_until("the first Ctrl-C to be acknowledged", WAIT, || {
        agents.log(agent).contains("a second Ctrl-C")
    });
    agents.signal(agent, "INT");
    // Far less than the 600 s grace and the 600 s sleep: the second Ctrl-C stopped them.
    let status = agents.wait(agent, Duration::from_secs(120));
    assert!(status.success(), "{}", agents.logs());
    assert!(
        queued(&ws, "r").contains(&"t1.task".to_string()),
        "{}",
        agents.logs()
    );
}

#[test]
fn a_retried_task_runs_the_fixed_workflow() {
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "settle_ms: 50\nmax_attempts: 1\n",
        "steps:\n  - name: Record\n    command: [sh, -c, 'echo \"v1 $1\" >> ran.log; exit 3', record, '${task.id}']\n",
    );
    let mut agents = Agents::new(&ws);
    agents.spawn(&ws, "r", &[], &[]);
    enqueue(&ws, "r", "t1");
    wait_until("t1 to fail", WAIT, || {
        entries(&ws, "failed").iter().any(|n| n.ends_with("_r_t1"))
    });
    ws.file("workflows/r.yaml", &versioned("v2"));
    run_within(&ws, &["retry", "t1"], Duration::from_secs(20)).ok();
    wait_until("the retry to run", WAIT, || ran(&ws).len() == 2);
    assert_eq!(ran(&ws), ["v1 t1", "v2 t1"], "{}", agents.logs());
}

#[test]
fn swarm_down_stops_role_processes_a_killed_supervisor_left() {
    let ws = Ws::new();
    let _down = Down(&ws);
    role(&ws, "r", "settle_ms: 50\n", SLEEPY);
    run_within(&ws, &["swarm", "up", "-d", "--grace", "600"], WAIT).ok();
    let file = json_file(&ws, ".orchestrate/swarm/status.json");
    let supervisor = file["supervisor"]["pid"].as_u64().unwrap() as u32;
    let child = file["children"][0]["pid"].as_u64().unwrap() as u32;
    enqueue(&ws, "r", "t1");
    wait_until("t1 to start", WAIT, || ws.exists("started/t1"));
    signal_quiet("-KILL", &supervisor.to_string());
    // Its task has a 600 s grace: the orphan is still there, and listed.
    let mut text = String::new();
    wait_until("swarm status to list the orphan", WAIT, || {
        text = status_text(&ws);
        text.contains("orphaned")
    });
    assert!(text.contains(&child.to_string()), "{text}");
    let down = run_within(&ws, &["swarm", "down", "--force"], WAIT);
    assert_eq!(down.code, 0, "{down:?}");
    assert!(down.stderr.contains(&format!("pid {child}")), "{down:?}");
    wait_until("the orphan to be gone", WAIT, || !pid_alive(child));
    // --force: its step too (a 600 s sleep), not left holding the task.
    let step: u32 = ws.read("started/t1").trim().parse().unwrap();
    wait_until("the orphan's step to be gone", WAIT, || !pid_alive(step));
}
