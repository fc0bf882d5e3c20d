//! Seeing and steering: `orchestrate cancel` of a run and of a swarm task, `pause`/`resume` of a
//! role, `resume` of a run next to it, and the per-runtime circuit breaker shared by role
//! processes: real binary, real processes, temp workspaces, waits on conditions with deadlines.

#[allow(unused_imports)]
use crate::harness::*;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/runtimes");

/// A role process in the background; stopped (SIGTERM, then waited for) when dropped.
struct Agent(Child);

impl Agent {
    fn start(ws: &Ws, role: &str) -> Agent {
        let child = ws
            .cmd(&["agent", role, "--grace", "5"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(ws.join(&format!("agent-{role}.log"))).unwrap())
            .spawn()
            .expect("spawn orchestrate agent");
        Agent(child)
    }

    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child, which has not been waited for yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.0.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.0.kill();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Like `wait_until`, but a timeout shows the role processes' logs and the control records.
fn wait_on(ws: &Ws, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + patient(timeout);
    while !cond() {
        if Instant::now() >= deadline {
            let mut explain = String::new();
            for name in entries(ws, ".") {
                if name.starts_with("agent-") || name == "calls" {
                    explain += &format!("--- {name}\n{}\n", ws.read(&name));
                }
            }
            for name in entries(ws, ".orchestrate/breakers") {
                explain += &format!(
                    "--- {name}\n{}\n",
                    ws.read(&format!(".orchestrate/breakers/{name}"))
                );
            }
            explain += &format!(
                "--- control log\n{}\n",
                lines(ws, ".orchestrate/control/events.jsonl").join("\n")
            );
            panic!("timed out waiting for {what}\n{explain}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_pid(ws: &Ws, rel: &str) -> Option<u32> {
    std::fs::read_to_string(ws.join(rel))
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

/// The one entry of `parent/` for task `id` of `role`.
fn finished_entry(ws: &Ws, parent: &str, role: &str, id: &str) -> Option<String> {
    entries(ws, parent)
        .into_iter()
        .find(|n| n.ends_with(&format!("_{role}_{id}")))
        .map(|n| format!("{parent}/{n}"))
}

fn swarm_json(ws: &Ws) -> Value {
    let out = ws.run(&["swarm", "status", "--json"]);
    out.ok();
    serde_json::from_str(&out.stdout).expect("swarm status --json")
}

fn role_json(ws: &Ws, role: &str) -> Value {
    swarm_json(ws)["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == role)
        .cloned()
        .unwrap_or_else(|| panic!("no role {role} in swarm status"))
}

fn control_events(ws: &Ws) -> Vec<String> {
    lines(ws, ".orchestrate/control/events.jsonl")
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|r| r["event"].as_str().unwrap_or("").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// cancel

#[test]
fn cancel_stops_a_standalone_run_and_its_step_process_group() {
    let ws = Ws::new();
    ws.workflow(
        "name: long\nsteps:\n  - name: Work\n    command: [sh, -c, 'sleep 60 & echo $! > sleeper.pid; wait']\n  - name: After\n    command: [touch, after]\n",
    );
    let mut run = ws
        .cmd(&["run", "wf.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "the step's sleeper to start",
        Duration::from_secs(10),
        || read_pid(&ws, "sleeper.pid").is_some(),
    );
    let sleeper = read_pid(&ws, "sleeper.pid").unwrap();
    let run_id = entries(&ws, ".orchestrate/runs")
        .pop()
        .expect("a run directory");

    let cancel = run_within(&ws, &["cancel", &run_id], Duration::from_secs(20));
    cancel.ok().stderr_has(&format!("cancelled run {run_id}"));

    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(130), "the run exits like Ctrl-C");
    assert!(!pid_alive(sleeper), "the step's process group is gone");
    assert!(!ws.exists("after"), "no step after the cancelled one ran");
    let events = ws.events(&run_id);
    let cancelled = events
        .iter()
        .find(|e| e["event"] == "run_cancelled")
        .expect("a run_cancelled event");
    assert!(cancelled["by"].as_str().is_some_and(|b| !b.is_empty()));
    let finished = events.last().unwrap();
    assert_eq!(finished["event"], "run_finished");
    assert_eq!(finished["status"], "interrupted");
    assert_eq!(finished["exit_code"], 130);
    assert!(
        finished["error"].as_str().unwrap().contains("cancelled by"),
        "{finished}"
    );
    assert!(control_events(&ws).contains(&"run_cancel_requested".to_string()));

    // Cancelling it again: it is over, and the error says so and what to do.
    ws.run(&["cancel", &run_id])
        .code(2)
        .stderr_has("already finished (interrupted")
        .stderr_has(&format!("orchestrate resume {run_id}"));
}

#[test]
fn cancel_of_a_finished_or_unknown_run_is_a_clear_error() {
    let ws = Ws::new();
    ws.workflow("name: quick\nsteps:\n  - name: A\n    command: [true]\n");
    let run = ws.run_wf(&[]);
    run.ok();
    ws.run(&["cancel", run.id()])
        .code(2)
        .stderr_has(&format!("run {} already finished (succeeded", run.id()));
    ws.run(&["cancel", "no-such-run"])
        .code(2)
        .stderr_has("no run or task `no-such-run`");
    ws.run(&["cancel", "../etc"])
        .code(2)
        .stderr_has("is not a run or task id");
}

#[test]
fn cancel_moves_a_running_task_to_failed_unretried_and_the_role_keeps_working() {
    let ws = Ws::new();
    role(
        &ws,
        "w",
        "max_attempts: 3\n",
        "name: w\nsteps:\n  - name: Work\n    command: [sh, -c, 'echo $$ > \"$1.pid\"; if [ \"$2\" = slow ]; then exec sleep 60; fi', sh, '${task.id}', '${task.text}']\n",
    );
    ws.run(&["enqueue", "w", "--name", "a", "--text", "slow"])
        .ok();
    let _agent = Agent::start(&ws, "w");
    wait_until("task a to start its step", Duration::from_secs(10), || {
        read_pid(&ws, "a.pid").is_some()
    });
    let sleeper = read_pid(&ws, "a.pid").unwrap();

    let cancel = run_within(&ws, &["cancel", "a"], Duration::from_secs(20));
    cancel
        .ok()
        .stderr_has("cancelled task `a` of role `w`: failed/");
    let entry = finished_entry(&ws, "failed", "w", "a").expect("a in failed/");
    let status = json_file(&ws, &format!("{entry}/status.json"));
    assert_eq!(status["success"], false);
    assert_eq!(status["exit_code"], 130);
    assert!(
        status["message"].as_str().unwrap().contains("cancelled by"),
        "{status}"
    );
    assert!(status["cancelled"]["by"].is_string(), "{status}");
    assert!(!pid_alive(sleeper), "the task's step was stopped");
    let events = lines(&ws, &format!("{entry}/events.jsonl"));
    assert!(events.iter().any(|l| l.contains("\"run_cancelled\"")));
    assert!(queued(&ws, "w").is_empty(), "not requeued");
    assert!(
        entries(&ws, ".orchestrate/control/w/cancel").is_empty(),
        "the request is cleared once acted on"
    );

    // The role keeps working, and the cancelled task is not tried again.
    ws.run(&["enqueue", "w", "--name", "b", "--text", "quick"])
        .ok();
    wait_until("task b to be processed", Duration::from_secs(10), || {
        finished_entry(&ws, "processed", "w", "b").is_some()
    });
    assert_eq!(
        entries(&ws, "failed").len(),
        1,
        "a is failed once, not retried"
    );
    // A finished task cannot be cancelled; the error names where it is.
    ws.run(&["cancel", "a"])
        .code(2)
        .stderr_has("task `a` of role `w` already finished (failed/");
}

// ---------------------------------------------------------------------------------------------
// pause / resume

#[test]
fn a_paused_role_keeps_its_queue_until_resumed_even_across_restarts() {
    let ws = Ws::new();
    role(
        &ws,
        "w",
        "",
        "name: w\nsteps:\n  - name: Work\n    command: [true]\n",
    );
    ws.run(&["pause", "w"]).ok().stderr_has("paused role `w`");
    ws.run(&["pause", "nope"])
        .code(2)
        .stderr_has("there is no role `nope`");
    let mut agent = Agent::start(&ws, "w");
    ws.run(&["enqueue", "w", "--name", "t1", "--text", "x"])
        .ok();
    ws.run(&["enqueue", "w", "--name", "t2", "--text", "x"])
        .ok();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(queued(&ws, "w").len(), 2, "nothing claimed while paused");
    let load = role_json(&ws, "w");
    assert_eq!(load["paused"]["role"], "w", "{load}");
    assert!(load["paused"]["since"].is_string());
    let text = ws.run(&["swarm", "status"]);
    text.ok().stdout_has("role w paused since");

    // The pause is a file: a new role process honours it too.
    agent.stop();
    let _agent = Agent::start(&ws, "w");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(queued(&ws, "w").len(), 2, "still held after a restart");

    ws.run(&["resume", "w"]).ok().stderr_has("resumed role `w`");
    wait_until(
        "both tasks to be processed",
        Duration::from_secs(10),
        || entries(&ws, "processed").len() == 2,
    );
    assert!(role_json(&ws, "w")["paused"].is_null());
    let log = control_events(&ws);
    assert!(log.contains(&"role_paused".to_string()) && log.contains(&"role_resumed".to_string()));
}

#[test]
fn resume_still_resumes_a_run_and_flags_force_either_meaning() {
    let ws = Ws::new();
    ws.workflow(
        "name: flaky\nsteps:\n  - name: Check\n    command: [test, -f, ok]\n  - name: Done\n    command: [touch, done]\n",
    );
    let run = ws.run_wf(&[]);
    run.code(1);
    let id = run.id().to_string();
    ws.file("ok", "");
    ws.run(&["resume", &id]).ok().stderr_has("succeeded");
    assert!(ws.exists("done"));
    // --run on a finished run: the run's own error, not a role's.
    ws.run(&["resume", "--run", &id]).code(2);
    // --role on a name that is no role.
    ws.run(&["resume", "--role", &id])
        .code(2)
        .stderr_has("no role");
    // A role named like nothing else is resumed as a role.
    role(
        &ws,
        "w",
        "",
        "name: w\nsteps:\n  - name: Work\n    command: [true]\n",
    );
    ws.run(&["resume", "w"])
        .ok()
        .stderr_has("role `w` is not paused");
}

// ---------------------------------------------------------------------------------------------
// circuit breaker

#[test]
fn a_breaker_opens_after_n_rate_limits_holds_the_role_then_half_opens_and_closes() {
    let mut ws = Ws::new();
    ws.with_bin_path();
    // A fake claude: rate-limited (the recorded 429 answer) until `healthy` exists. The steps
    // are `phase: write`: a readonly step would see other tasks' moves into failed/ as changes.
    ws.script(
        "bin/claude",
        &format!(
            "#!/bin/sh\ncat > /dev/null\necho call >> \"{calls}\"\nif [ -f \"{healthy}\" ]; then cat \"{fx}/claude.stream-json.tool-success.jsonl\"; exit 0; fi\ncat \"{fx}/claude.stream-json.rate-limit-429.jsonl\"\nexit 1\n",
            calls = ws.join(".orchestrate/calls").display(),
            healthy = ws.join("healthy").display(),
            fx = FIXTURES,
        ),
    );
    ws.file(
        "runtimes.yaml",
        "breaker: {failures: 2, cooldown_sec: 1.5}\n",
    );
    role(
        &ws,
        "coder",
        "runtime: claude\n",
        "name: coder\nsteps:\n  - name: Ask\n    prompt: \"do ${task.text}\"\n    phase: write\n    retry: {max_attempts: 1}\n",
    );
    role(
        &ws,
        "shell",
        "",
        "name: shell\nsteps:\n  - name: Work\n    command: [true]\n",
    );
    for id in ["t1", "t2", "t3"] {
        ws.run(&["enqueue", "coder", "--name", id, "--text", id])
            .ok();
    }
    let _coder = Agent::start(&ws, "coder");
    let _shell = Agent::start(&ws, "shell");
    let breaker = || -> Value {
        std::fs::read_to_string(ws.join(".orchestrate/breakers/claude.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    wait_on(
        &ws,
        "the claude breaker to open",
        Duration::from_secs(20),
        || breaker()["state"] == "open",
    );
    let state = breaker();
    assert_eq!(state["class"], "rate_limit", "{state}");
    assert_eq!(state["consecutive"], 2, "{state}");
    // The role stops claiming: t3 waits, and the fake was called twice.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        queued(&ws, "coder"),
        ["t3.task"],
        "{}\n{}",
        ws.read("agent-coder.log"),
        lines(&ws, ".orchestrate/control/events.jsonl").join("\n")
    );
    assert_eq!(lines(&ws, ".orchestrate/calls").len(), 2);
    assert_eq!(entries(&ws, "failed").len(), 2);
    let load = role_json(&ws, "coder");
    assert_eq!(load["breakers"][0]["runtime"], "claude", "{load}");
    assert_eq!(load["breakers"][0]["state"], "open", "{load}");
    let text = ws.run(&["swarm", "status"]);
    text.ok()
        .stdout_has("breaker open for claude: 2 consecutive rate_limit failures; half-opens at");
    // A role that does not use claude is not held.
    assert!(
        role_json(&ws, "shell")["breakers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    ws.run(&["enqueue", "shell", "--name", "s1", "--text", "x"])
        .ok();
    wait_until(
        "the shell role to process s1",
        Duration::from_secs(10),
        || finished_entry(&ws, "processed", "shell", "s1").is_some(),
    );

    // The runtime recovers; after the cool-down one trial goes through and closes it.
    ws.file("healthy", "");
    wait_on(
        &ws,
        "t3 to be processed as the trial",
        Duration::from_secs(20),
        || finished_entry(&ws, "processed", "coder", "t3").is_some(),
    );
    wait_on(&ws, "the breaker to close", Duration::from_secs(5), || {
        breaker()["state"] == "closed"
    });
    let log = control_events(&ws);
    let opened = log.iter().position(|e| e == "breaker_opened").unwrap();
    let half = log.iter().position(|e| e == "breaker_half_open").unwrap();
    let closed = log.iter().position(|e| e == "breaker_closed").unwrap();
    assert!(opened < half && half < closed, "{log:?}");
    // The class is visible in the failed tasks' step results.
    let failed = entries(&ws, "failed");
    let events = lines(&ws, &format!("failed/{}/events.jsonl", failed[0]));
    assert!(
        events
            .iter()
            .any(|l| l.contains("\"step_finished\"") && l.contains("\"rate_limit\"")),
        "{events:?}"
    );
}

#[test]
fn a_failed_half_open_trial_reopens_with_the_cool_down_doubled() {
    let mut ws = Ws::new();
    ws.with_bin_path();
    ws.script(
        "bin/claude",
        &format!(
            "#!/bin/sh\ncat > /dev/null\ncat \"{fx}/claude.stream-json.rate-limit-429.jsonl\"\nexit 1\n",
            fx = FIXTURES,
        ),
    );
    ws.file(
        "runtimes.yaml",
        "profiles:\n  fast: {runtime: claude, breaker: {failures: 1, cooldown_sec: 0.5, max_cooldown_sec: 0.8}}\n",
    );
    role(
        &ws,
        "coder",
        "runtime: fast\n",
        "name: coder\nsteps:\n  - name: Ask\n    prompt: \"do it\"\n    phase: write\n    retry: {max_attempts: 1}\n",
    );
    for id in ["t1", "t2", "t3"] {
        ws.run(&["enqueue", "coder", "--name", id, "--text", id])
            .ok();
    }
    let _coder = Agent::start(&ws, "coder");
    wait_on(
        &ws,
        "three attempts through open/half-open",
        Duration::from_secs(20),
        || entries(&ws, "failed").len() == 3,
    );
    let state: Value = serde_json::from_str(&ws.read(".orchestrate/breakers/fast.json")).unwrap();
    assert_eq!(state["state"], "open", "{state}");
    // 0.5 s, then doubled to 1.0 s but capped at 0.8 s.
    assert_eq!(state["cooldown_sec"], 0.8, "{state}");
    let log = control_events(&ws);
    assert_eq!(
        log.iter().filter(|e| *e == "breaker_opened").count(),
        3,
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|e| *e == "breaker_half_open").count(),
        2,
        "{log:?}"
    );
}

#[test]
fn runtimes_yaml_breaker_settings_are_validated() {
    let ws = Ws::new();
    ws.file(
        "runtimes.yaml",
        "breaker:\n  failures: 2.5\n  cooldown_sec: -1\n",
    );
    ws.workflow("name: x\nsteps:\n  - name: A\n    command: [true]\n");
    ws.run_wf(&[])
        .code(2)
        .stderr_has("runtimes.yaml:2:13")
        .stderr_has("`failures` of the top-level `breaker` must be a whole number")
        .stderr_has("runtimes.yaml:3:17");
}
