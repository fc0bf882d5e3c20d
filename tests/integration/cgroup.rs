//! Processes that outlive their stop: a step's grandchild that called `setsid` and a daemon that
//! double-forked are gone after a step's timeout, Ctrl-C of `run`, `orchestrate cancel` of a task,
//! a graceful and a forced `swarm down`, and the task's lock is free for its next attempt. These
//! need cgroup v2 (each step in a cgroup of its own); where the binary cannot use it they print
//! `SKIPPED: why` (fail with `ORCHESTRATE_TEST_REQUIRE_ALL=1`).

#[allow(unused_imports)]
use crate::harness::*;

use std::process::Stdio;
use std::time::Duration;

/// A step that starts a grandchild in a session of its own and a daemon that double-forked (its
/// parent exits at once, so it is adopted elsewhere), neither in the step's process group or
/// session, both holding the task's lock descriptor; records their pids in `gc.pid` and
/// `daemon.pid`, then sleeps. A second attempt (the pid files exist) just succeeds.
const STEP: &str = r#"#!/bin/sh
if [ -e gc.pid ]; then echo again; exit 0; fi
setsid sh -c 'echo $$ > gc.tmp; mv gc.tmp gc.pid; exec sleep 600' </dev/null >/dev/null 2>&1 &
setsid sh -c 'sh -c "echo \$\$ > daemon.tmp; mv daemon.tmp daemon.pid; exec sleep 600" & exit 0' </dev/null >/dev/null 2>&1 &
while [ ! -e gc.pid ] || [ ! -e daemon.pid ]; do sleep 0.05; done
exec sleep 600
"#;

/// Whether the binary puts step processes in cgroups here, from its debug line (shown with
/// `ORCHESTRATE_DEBUG`):
/// `Err(why)` when it does not.
fn cgroups_in_use() -> Result<(), String> {
    let stderr = debug_stderr(&[]);
    if stderr.contains("DEBUG orchestrate_base::cgroup: step processes run in cgroups") {
        return Ok(());
    }
    Err(stderr
        .lines()
        .find_map(|l| {
            l.split_once("DEBUG orchestrate_base::cgroup: step processes are not put in cgroups: ")
                .map(|(_, why)| why)
        })
        .map(|l| l.split("; stopping").next().unwrap_or(l))
        .map_or("the binary said nothing about cgroups".to_string(), |why| {
            format!("step processes are not put in cgroups here: {why}")
        }))
}

/// What `run` of a one-step workflow says on stderr with `ORCHESTRATE_DEBUG` and `env` set.
fn debug_stderr(env: &[(&str, &str)]) -> String {
    let ws = Ws::new();
    ws.workflow("steps:\n  - name: A\n    command: [\"true\"]\n");
    let mut cmd = ws.cmd(&["run", "wf.yaml"]);
    cmd.env("ORCHESTRATE_DEBUG", "1");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("run orchestrate");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Kills whatever still works in the workspace when a test ends (also when it fails).
struct Cleanup<'a>(&'a Ws);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for pid in working_in(self.0.path()) {
            signal_quiet("-KILL", &pid.to_string());
        }
    }
}

/// The grandchild's and the daemon's pids, once the step has written both.
fn escaped(ws: &Ws) -> [u32; 2] {
    ["gc.pid", "daemon.pid"].map(|f| pid_from_file(ws, f).parse().unwrap())
}

fn assert_gone(what: &str, pids: [u32; 2]) {
    for (pid, name) in pids.into_iter().zip(["setsid grandchild", "daemon"]) {
        // Killed processes vanish within moments; a survivor sleeps for 600 s.
        wait_until(
            &format!("the step's {name} (pid {pid}) to be gone after {what}"),
            Duration::from_secs(20),
            || !pid_alive(pid),
        );
    }
}

/// The first entry of `parent/` (processed or failed) for task `id`.
fn entry(ws: &Ws, parent: &str, id: &str) -> Option<String> {
    entries(ws, parent)
        .into_iter()
        .find(|n| n.ends_with(&format!("_{id}")))
        .map(|n| format!("{parent}/{n}"))
}

/// Whether nobody holds the lock on `rel` (a task file): every process of its attempt is gone.
fn lock_free(ws: &Ws, rel: &str) -> bool {
    let file = std::fs::File::open(ws.join(rel)).unwrap_or_else(|e| panic!("open {rel}: {e}"));
    file.try_lock().is_ok()
}

fn role_w(ws: &Ws) {
    ws.script("step.sh", STEP);
    // A silent holder is never killed for being hung during the test: only the stop can free it.
    role(
        ws,
        "w",
        "settle_ms: 50\nhung_after_sec: 600\n",
        "steps:\n  - name: Work\n    command: [./step.sh]\n",
    );
}

/// A step that times out takes its setsid grandchild and its daemon with it, spawned the way
/// `spawn` (`ORCHESTRATE_SPAWN`) says.
fn timed_out_step_takes_its_escapees(spawn: Option<&str>) {
    if let Err(why) = cgroups_in_use() {
        return skip_or_fail(&why);
    }
    let mut ws = Ws::new();
    if let Some(how) = spawn {
        ws.env("ORCHESTRATE_SPAWN", how);
    }
    let _cleanup = Cleanup(&ws);
    ws.script("step.sh", STEP);
    ws.workflow("steps:\n  - name: Work\n    timeout_sec: 5\n    command: [./step.sh]\n");
    let run = run_within(&ws, &["run", "wf.yaml"], Duration::from_secs(120));
    run.code(124);
    assert_gone("the step timed out", escaped(&ws));
}

#[test]
fn a_timed_out_step_takes_its_setsid_grandchild_and_daemon_with_it() {
    timed_out_step_takes_its_escapees(None);
}

#[test]
fn ctrl_c_of_run_takes_the_steps_setsid_grandchild_and_daemon_with_it() {
    if let Err(why) = cgroups_in_use() {
        return skip_or_fail(&why);
    }
    let ws = Ws::new();
    let _cleanup = Cleanup(&ws);
    ws.script("step.sh", STEP);
    ws.workflow("steps:\n  - name: Work\n    command: [./step.sh]\n");
    let started = Started::new(&ws, &["run", "wf.yaml"]);
    let pids = escaped(&ws);
    let run_id = only_run_id(&ws);
    // `orchestrate cancel RUN` is a SIGTERM, which the run takes like Ctrl-C.
    let cancel = run_within(&ws, &["cancel", &run_id], Duration::from_secs(60));
    cancel.ok();
    let run = started.finish(Duration::from_secs(60));
    run.code(130);
    assert_gone("the run was cancelled", pids);
}

#[test]
fn a_second_ctrl_c_of_run_exits_at_once_and_leaves_no_step_process_behind() {
    if let Err(why) = cgroups_in_use() {
        return skip_or_fail(&why);
    }
    let ws = Ws::new();
    let _cleanup = Cleanup(&ws);
    ws.script("step.sh", STEP);
    // The step ignores SIGTERM, so the first Ctrl-C leaves it running for its 5 s grace.
    ws.workflow(
        "steps:\n  - name: Work\n    command: [sh, -c, \"trap '' TERM; echo $$ > step.pid; exec ./step.sh\"]\n",
    );
    let mut run = ws
        .cmd(&["run", "wf.yaml"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(ws.join("run.err")).unwrap())
        .spawn()
        .unwrap();
    let [gc, daemon] = escaped(&ws);
    let step: u32 = pid_from_file(&ws, "step.pid").parse().unwrap();
    let run_pid = run.id().to_string();
    signal_quiet("-INT", &run_pid);
    wait_until(
        "the first Ctrl-C to be seen",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(ws.join("run.err"))
                .is_ok_and(|t| t.contains("press Ctrl-C again"))
        },
    );
    signal_quiet("-INT", &run_pid);
    let status = exit_within(&mut run, Duration::from_secs(60)).expect("the run to exit");
    assert_eq!(status.code(), Some(130), "{}", ws.read("run.err"));
    wait_until(
        "the step's own process to be gone",
        Duration::from_secs(20),
        || !pid_alive(step),
    );
    assert_gone("a second Ctrl-C", [gc, daemon]);
}

#[test]
fn cancel_of_a_task_takes_its_setsid_grandchild_and_daemon_and_frees_its_lock() {
    if let Err(why) = cgroups_in_use() {
        return skip_or_fail(&why);
    }
    let ws = Ws::new();
    let _cleanup = Cleanup(&ws);
    role_w(&ws);
    ws.run(&["enqueue", "w", "--name", "a", "--text", "x"]).ok();
    let mut agents = Agents::new(&ws);
    agents.start(&ws, "w", &[]);
    let pids = escaped(&ws);

    run_within(&ws, &["cancel", "a"], Duration::from_secs(60))
        .ok()
        .stderr_has("failed/");
    assert_gone("the task was cancelled", pids);
    let failed = entry(&ws, "failed", "a").expect("a in failed/");
    assert!(
        lock_free(&ws, &format!("{failed}/task")),
        "a process of the cancelled attempt still holds the task's lock\n{}",
        agents.logs()
    );
}

#[test]
fn graceful_swarm_down_takes_a_steps_setsid_grandchild_and_daemon_and_the_next_up_runs_the_task() {
    if let Err(why) = cgroups_in_use() {
        return skip_or_fail(&why);
    }
    swarm_down_then_up(&[]);
}

#[test]
fn forced_swarm_down_takes_a_steps_setsid_grandchild_and_daemon_and_the_next_up_runs_the_task() {
    if let Err(why) = cgroups_in_use() {
        return skip_or_fail(&why);
    }
    swarm_down_then_up(&["--force"]);
}

/// `swarm down DOWN_ARGS` while a task's step and its escaped processes run: they are all gone
/// afterwards, and the next `swarm up` finishes the task (its lock is free at once; the role's
/// `hung_after_sec` is far away).
fn swarm_down_then_up(down_args: &[&str]) {
    let ws = Ws::new();
    let _cleanup = Cleanup(&ws);
    let _down = SwarmDown(&ws);
    role_w(&ws);
    run_within(
        &ws,
        &["swarm", "up", "-d", "--grace", "0.5"],
        Duration::from_secs(60),
    )
    .ok();
    ws.run(&["enqueue", "w", "--name", "t", "--text", "x"]).ok();
    let pids = escaped(&ws);

    let mut down = vec!["swarm", "down"];
    down.extend_from_slice(down_args);
    run_within(&ws, &down, Duration::from_secs(60)).ok();
    assert_gone(&down.join(" "), pids);

    run_within(
        &ws,
        &["swarm", "up", "-d", "--grace", "0.5"],
        Duration::from_secs(60),
    )
    .ok();
    wait_until(
        "the task to be processed after the next swarm up",
        Duration::from_secs(60),
        || entry(&ws, "processed", "t").is_some(),
    );
    let done = entry(&ws, "processed", "t").unwrap();
    assert_eq!(
        json_file(&ws, &format!("{done}/status.json"))["success"],
        true
    );
}

/// `swarm down --force` when a test ends.
struct SwarmDown<'a>(&'a Ws);

impl Drop for SwarmDown<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .cmd(&["swarm", "down", "--force"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// What the binary says about how it spawns steps (`ORCHESTRATE_DEBUG`), with `env` set.
fn spawn_line(env: &[(&str, &str)]) -> String {
    debug_stderr(env)
        .lines()
        .find(|l| l.contains("DEBUG orchestrate_base::spawn: steps are spawned by"))
        .unwrap_or("")
        .to_string()
}

#[test]
fn steps_are_spawned_by_clone3_where_the_kernel_allows_it_and_by_std_when_told() {
    let line = spawn_line(&[]);
    if !line.ends_with("steps are spawned by clone3") {
        return skip_or_fail(&format!(
            "steps are not spawned by clone3 here (Linux x86-64 5.7+ without a seccomp filter \
             that refuses it): {line:?}"
        ));
    }
    let line = spawn_line(&[("ORCHESTRATE_SPAWN", "std")]);
    assert!(
        line.ends_with("steps are spawned by std's Command: turned off by ORCHESTRATE_SPAWN=std"),
        "{line:?}"
    );
}

#[test]
fn with_std_spawning_a_timed_out_step_still_takes_its_setsid_grandchild_and_daemon_with_it() {
    timed_out_step_takes_its_escapees(Some("std"));
}
