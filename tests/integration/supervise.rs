//! The swarm supervisor (`orchestrate swarm up / down / status`) against real processes: roles
//! validated before anything starts, replicas started and stopped, one supervisor per workspace,
//! crash loops failed after the restart intensity limit, poison tasks charged to the task, graceful
//! and immediate stops, and a killed replica restarted with its task retried.
//!
//! Every test holds a [`Swarm`] guard: on drop (also when the test fails) it runs `swarm down
//! --force`, kills the foreground supervisors it started and every pid the status file names, then
//! any process still working in the workspace (steps run in their own process groups).

#[allow(unused_imports)]
use crate::harness::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Helpers

/// The `processed/` or `failed/` entries of task `id` of `role`.
fn entries_of(ws: &Ws, parent: &str, role: &str, id: &str) -> Vec<String> {
    let suffix = format!("_{role}_{id}");
    entries(ws, parent)
        .into_iter()
        .filter(|n| n.ends_with(&suffix))
        .map(|n| format!("{parent}/{n}"))
        .collect()
}

/// The one `processed/` or `failed/` entry of task `id` of `role`.
fn entry_of(ws: &Ws, parent: &str, role: &str, id: &str) -> String {
    let found = entries_of(ws, parent, role, id);
    assert_eq!(
        found.len(),
        1,
        "expected one {parent}/ entry for {role}/{id}, found {found:?}; {parent}/ holds {:?}",
        entries(ws, parent)
    );
    found[0].clone()
}

fn signal(pid: u32, sig: i32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid > 1 {
        // SAFETY: kill(2) takes two integers; pid > 1 names one process, never a group or all.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Live processes whose working directory is `dir`: everything the swarm of a workspace runs
/// (supervisor, replicas, steps) works there, and nothing else does.
fn procs_in(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&pid| pid != me)
                .filter(|&pid| {
                    std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == dir)
                })
                .filter(|&pid| pid_alive(pid))
                .collect()
        })
        .unwrap_or_default()
}

/// A process's command line, for messages.
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn describe(pids: &[u32]) -> String {
    pids.iter()
        .map(|p| format!("{p}: {}", cmdline(*p)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A step that appends the task id to `seen.log`.
const RECORDING_WORKFLOW: &str = r#"
steps:
  - name: Record
    command:
      - bash
      - -c
      - 'echo "$1" >> seen.log'
      - record
      - ${task.id}
"#;

/// A step that logs `start ID ATTEMPT WORKER` and `end ID ATTEMPT` to `exec.log`, recording its
/// pid in `step-ID.pid`; on the first attempt it sleeps as many seconds as the task's text says.
const SLEEPY_WORKFLOW: &str = r#"
steps:
  - name: Work
    command:
      - bash
      - -c
      - |
        echo "$$" > "step-$1.pid"
        echo "start $1 $2 $PPID" >> exec.log
        if [ "$2" = 1 ]; then sleep "$3"; fi
        echo "end $1 $2" >> exec.log
      - work
      - ${task.id}
      - ${task.attempt}
      - ${task.text}
"#;

fn enqueue(ws: &Ws, role: &str, name: &str, text: &str) {
    run_within(
        ws,
        &["enqueue", role, "--text", text, "--name", name],
        Duration::from_secs(10),
    )
    .ok();
}

/// The `exec.log` lines of [`SLEEPY_WORKFLOW`] as (kind, id, attempt).
fn executions(ws: &Ws) -> Vec<(String, String, u32)> {
    lines(ws, "exec.log")
        .iter()
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (
                parts[0].to_string(),
                parts[1].to_string(),
                parts[2].parse().unwrap(),
            )
        })
        .collect()
}

fn started(ws: &Ws, id: &str) -> bool {
    executions(ws)
        .iter()
        .any(|(kind, task, _)| kind == "start" && task == id)
}

fn step_pid(ws: &Ws, id: &str) -> u32 {
    ws.read(&format!("step-{id}.pid")).trim().parse().unwrap()
}

/// The replica named `name` (`role#N`) in a status (the file or `swarm status --json`).
fn child<'v>(status: &'v Value, name: &str) -> &'v Value {
    status["children"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no replica {name} in {status:#}"))
}

fn pid_of(status: &Value, name: &str) -> u32 {
    let c = child(status, name);
    c["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or_else(|| panic!("replica {name} has no pid: {c:#}"))
}

/// The queue numbers of `role` in `swarm status --json`.
fn load<'v>(status: &'v Value, role: &str) -> &'v Value {
    status["roles"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["role"] == role))
        .unwrap_or_else(|| panic!("no queue numbers for role {role} in {status:#}"))
}

/// The row of replica `role` `replica` in the `swarm status` table, split on whitespace.
fn row(text: &str, role: &str, replica: u32) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.len() > 4 && cells[0] == role && cells[1] == replica.to_string())
        .unwrap_or_else(|| panic!("no row for {role} {replica} in:\n{text}"))
}

/// The supervisor's events (`.orchestrate/swarm/events.jsonl`) named `event` about `role`.
fn events(ws: &Ws, event: &str, role: &str) -> Vec<Value> {
    lines(ws, ".orchestrate/swarm/events.jsonl")
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == event && e["role"] == role)
        .collect()
}

/// A foreground `swarm up` started by a test.
struct Foreground {
    child: Child,
    log: PathBuf,
}

/// The swarm of one test workspace, stopped and cleaned up on drop.
struct Swarm<'a> {
    ws: &'a Ws,
    logs: tempfile::TempDir,
    fg: Vec<Foreground>,
}

impl<'a> Swarm<'a> {
    fn new(ws: &'a Ws) -> Swarm<'a> {
        Swarm {
            ws,
            logs: tempfile::tempdir().unwrap(),
            fg: Vec::new(),
        }
    }

    /// `swarm up -d EXTRA...`, which must succeed.
    fn up_d(&self, extra: &[&str]) -> Run {
        let mut args = vec!["swarm", "up", "-d"];
        args.extend_from_slice(extra);
        let run = run_within(self.ws, &args, Duration::from_secs(60));
        assert_eq!(
            run.code,
            0,
            "swarm up -d failed\n--- stdout\n{}\n--- stderr\n{}\n{}",
            run.stdout,
            run.stderr,
            self.explain()
        );
        run
    }

    /// Starts a foreground `swarm up EXTRA...` (its stderr to a log); returns its index.
    fn up_fg(&mut self, extra: &[&str]) -> usize {
        self.up_fg_with(extra, |_| {})
    }

    /// [`Swarm::up_fg`], with `tweak` applied to the command before it is spawned.
    fn up_fg_with(&mut self, extra: &[&str], tweak: impl FnOnce(&mut Command)) -> usize {
        let n = self.fg.len();
        let log = self.logs.path().join(format!("up-{n}.log"));
        let mut args = vec!["swarm", "up"];
        args.extend_from_slice(extra);
        let mut command = self.ws.cmd(&args);
        tweak(&mut command);
        let child = command
            .stdout(std::fs::File::create(self.logs.path().join(format!("up-{n}.out"))).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn orchestrate swarm up");
        self.fg.push(Foreground { child, log });
        n
    }

    /// Waits until foreground supervisor `n` runs its one replica `r#1`, then has it start task
    /// `t` of [`SLEEPY_WORKFLOW`] sleeping 600 s; the supervisor's and the replica's pids.
    fn one_replica_busy(&self, n: usize) -> (u32, u32) {
        let sup = self.fg_pid(n);
        let file = self.wait_file("the replica to run", Duration::from_secs(20), |f| {
            f["supervisor"]["pid"] == sup
                && f["children"]
                    .as_array()
                    .is_some_and(|c| c.len() == 1 && c[0]["state"] == "running")
        });
        let agent = pid_of(&file, "r#1");
        enqueue(self.ws, "r", "t", "600");
        self.wait("t to start", Duration::from_secs(10), || {
            started(self.ws, "t")
        });
        (sup, agent)
    }

    fn fg_pid(&self, n: usize) -> u32 {
        self.fg[n].child.id()
    }

    /// Waits for foreground supervisor `n` to exit.
    fn fg_wait(&mut self, n: usize, timeout: Duration) -> ExitStatus {
        exit_within(&mut self.fg[n].child, timeout).unwrap_or_else(|| {
            panic!(
                "the foreground supervisor {n} did not exit within {timeout:?}\n{}",
                self.explain()
            )
        })
    }

    fn fg_log(&self, n: usize) -> String {
        std::fs::read_to_string(&self.fg[n].log).unwrap_or_default()
    }

    /// `swarm status --json`, parsed.
    fn status(&self) -> Value {
        let run = run_within(
            self.ws,
            &["swarm", "status", "--json"],
            Duration::from_secs(10),
        );
        run.ok();
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("swarm status --json is not JSON: {e}\n{}", run.stdout))
    }

    /// `swarm status` as text.
    fn status_text(&self) -> String {
        let run = run_within(self.ws, &["swarm", "status"], Duration::from_secs(10));
        run.ok();
        run.stdout
    }

    /// The status file as the supervisor last wrote it (cheap enough to poll).
    fn file(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.ws.join(".orchestrate/swarm/status.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Waits until the status file satisfies `cond`; returns it.
    fn wait_file(&self, what: &str, timeout: Duration, cond: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        self.wait(what, timeout, || {
            found = self.file().filter(|f| cond(f));
            found.is_some()
        });
        found.unwrap()
    }

    /// Polls `cond` until it holds or `timeout` passes (then fails with the swarm's state).
    fn wait(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let timeout = patient(timeout);
        let deadline = Instant::now() + timeout;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}\n{}",
                self.explain()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything that helps understand a failure: status, logs, queue, events.
    fn explain(&self) -> String {
        let ws = self.ws;
        let read = |rel: &str| std::fs::read_to_string(ws.join(rel)).unwrap_or_default();
        let mut out = format!(
            "--- status.json\n{}\n--- supervisor.log\n{}\n--- events.jsonl\n{}",
            read(".orchestrate/swarm/status.json"),
            read(".orchestrate/swarm/supervisor.log"),
            read(".orchestrate/swarm/events.jsonl"),
        );
        for n in 0..self.fg.len() {
            out.push_str(&format!(
                "\n--- foreground supervisor {n} (pid {})\n{}",
                self.fg_pid(n),
                self.fg_log(n)
            ));
        }
        out.push_str(&format!(
            "\n--- exec.log\n{}\n--- seen.log\n{}\n--- processes in the workspace\n{}",
            read("exec.log"),
            read("seen.log"),
            describe(&procs_in(ws.path()))
        ));
        for dir in ["inbox", "running", "processed", "failed"] {
            let mut all = Vec::new();
            for e in walk(&ws.join(dir)) {
                all.push(e);
            }
            out.push_str(&format!("\n--- {dir}/: {all:?}"));
        }
        out
    }

    /// Asserts that nothing of the swarm runs any more: no supervisor, no replica, no step.
    fn assert_all_gone(&self, pids: &[u32]) {
        for &pid in pids {
            assert!(
                !pid_alive(pid),
                "pid {pid} ({}) still runs\n{}",
                cmdline(pid),
                self.explain()
            );
        }
        // A process in its last moments (exited, reaped a moment later) may still be listed.
        self.wait(
            "every process of the workspace to be gone",
            Duration::from_secs(20),
            || procs_in(self.ws.path()).is_empty(),
        );
    }
}

/// Workspace-relative paths of the files under `dir` (two levels).
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            for f in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                out.push(format!("{name}/{}", f.file_name().to_string_lossy()));
            }
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

impl Drop for Swarm<'_> {
    fn drop(&mut self) {
        let ws = self.ws.path().to_path_buf();
        let _ = self
            .ws
            .cmd(&["swarm", "down", "--force", "--timeout", "5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for fg in &mut self.fg {
            if fg.child.try_wait().ok().flatten().is_none() {
                let _ = fg.child.kill();
                let _ = fg.child.wait();
            }
        }
        // Every pid the status file names, when it still works in this workspace (a pid may
        // have been reused).
        let in_ws =
            |pid: u32| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == ws);
        if let Some(file) = self.file() {
            let mut pids: Vec<u64> = vec![file["supervisor"]["pid"].as_u64().unwrap_or(0)];
            for c in file["children"].as_array().into_iter().flatten() {
                pids.extend(c["pid"].as_u64());
            }
            for pid in pids.into_iter().filter_map(|p| u32::try_from(p).ok()) {
                if pid > 1 && in_ws(pid) {
                    signal(pid, libc::SIGKILL);
                }
            }
        }
        // Then whatever else still works there: steps, in their own groups, and their children.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = procs_in(&ws);
            if left.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in left {
                signal(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation before anything starts

#[test]
fn swarm_up_refuses_invalid_roles_and_starts_nothing() {
    let ws = Ws::new();
    let sw = Swarm::new(&ws);
    role(&ws, "good", "settle_ms: 50\n", RECORDING_WORKFLOW);
    // Two problems in one role file.
    ws.file(
        "agents/bad.yaml",
        "workflow: workflows/bad.yaml\nreplicas: zero\nbogus: 1\n",
    );
    ws.file("workflows/bad.yaml", RECORDING_WORKFLOW);
    // A valid role file whose workflow has a problem.
    role(
        &ws,
        "broken",
        "",
        "steps:\n  - name: Y\n    comand: [true]\n",
    );
    enqueue(&ws, "good", "t", "waiting");
    assert_eq!(queued(&ws, "good"), ["t.task"]);

    for args in [&["swarm", "up"][..], &["swarm", "up", "-d"][..]] {
        let run = run_within(&ws, args, Duration::from_secs(20));
        run.code(2);
        for location in [
            "agents/bad.yaml:2:11:",
            "agents/bad.yaml:3:1:",
            "workflows/broken.yaml:3:5:",
        ] {
            run.stderr_has(location);
        }
        run.stderr_has("not started");
        assert!(
            !ws.exists(".orchestrate/swarm/status.json"),
            "`{}` wrote a status file\n{}",
            args.join(" "),
            sw.explain()
        );
        let left = procs_in(ws.path());
        assert!(
            left.is_empty(),
            "`{}` left processes running:\n{}",
            args.join(" "),
            describe(&left)
        );
        assert_eq!(queued(&ws, "good"), ["t.task"], "the inbox was touched");
        assert!(entries(&ws, "running/good").is_empty());
        assert!(entries(&ws, "processed").is_empty());
        assert!(entries(&ws, "failed").is_empty());
        assert!(!ws.exists("seen.log"), "a task ran");
    }
    // `swarm status` still works and says nothing runs.
    let text = sw.status_text();
    assert!(text.contains("no supervisor is running"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Up, status, work, down

#[test]
fn swarm_up_d_runs_every_replica_processes_tasks_and_down_stops_everything() {
    let ws = Ws::new();
    let sw = Swarm::new(&ws);
    role(&ws, "a", "replicas: 2\nsettle_ms: 50\n", RECORDING_WORKFLOW);
    role(&ws, "b", "settle_ms: 50\n", RECORDING_WORKFLOW);
    // Queued before the swarm is up: depths are visible, and the replicas take it on start.
    enqueue(&ws, "b", "early", "early");

    let up = sw.up_d(&["--grace", "5"]);
    // It returned once every replica runs: no waiting needed.
    let file = sw.file().expect("status.json after swarm up -d");
    let sup = u32::try_from(file["supervisor"]["pid"].as_u64().unwrap()).unwrap();
    assert!(pid_alive(sup), "the supervisor is not running");
    assert!(
        up.stderr.contains(&format!("pid {sup}")),
        "swarm up -d does not name the supervisor: {}",
        up.stderr
    );
    let names = ["a#1", "a#2", "b#1"];
    let mut pids = Vec::new();
    for name in names {
        let c = child(&file, name);
        assert_eq!(c["state"], "running", "{name} right after up -d: {file:#}");
        let pid = pid_of(&file, name);
        assert!(pid_alive(pid), "{name} (pid {pid}) is not alive");
        pids.push(pid);
    }
    assert_eq!(
        file["children"].as_array().unwrap().len(),
        3,
        "replicas: {file:#}"
    );
    let mut distinct = pids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "replicas share a pid: {pids:?}");

    // The text status: one running row per replica, with its live pid.
    let text = sw.status_text();
    assert!(
        text.contains(&format!("supervisor pid {sup} running")),
        "{text}"
    );
    for (name, pid) in names.iter().zip(&pids) {
        let (role, replica) = name.split_once('#').unwrap();
        let cells = row(&text, role, replica.parse().unwrap());
        assert_eq!(cells[2], pid.to_string(), "{text}");
        assert_eq!(cells[3], "running", "{text}");
        assert_eq!(cells[4], "0", "restarts\n{text}");
    }

    // The JSON status: running, with queue depths for every role.
    let status = sw.status();
    assert_eq!(status["state"], "running", "{status:#}");
    assert_eq!(status["supervisor"]["pid"], sup);
    for r in ["a", "b"] {
        let l = load(&status, r);
        assert!(
            l["queued"].is_u64() && l["running"].is_u64(),
            "queue numbers of {r}: {status:#}"
        );
    }
    for (name, pid) in names.iter().zip(&pids) {
        assert_eq!(child(&status, name)["state"], "running");
        assert_eq!(child(&status, name)["pid"], *pid);
    }

    // Tasks are processed.
    for n in 1..=4 {
        enqueue(&ws, "a", &format!("a{n}"), "x");
    }
    enqueue(&ws, "b", "b1", "x");
    sw.wait(
        "every task to be processed",
        Duration::from_secs(20),
        || {
            ["early", "a1", "a2", "a3", "a4", "b1"]
                .iter()
                .all(|id| seen(&ws, id))
        },
    );
    for id in ["a1", "a2", "a3", "a4"] {
        sw.wait("the task's record", Duration::from_secs(5), || {
            entries_of(&ws, "processed", "a", id).len() == 1
        });
    }
    for id in ["early", "b1"] {
        sw.wait("the task's record", Duration::from_secs(5), || {
            entries_of(&ws, "processed", "b", id).len() == 1
        });
    }
    assert_eq!(lines(&ws, "seen.log").len(), 6, "a task ran twice");
    let status = sw.status();
    assert_eq!(load(&status, "a")["queued"], 0, "{status:#}");
    assert_eq!(load(&status, "b")["queued"], 0, "{status:#}");

    // Down stops everything.
    let down = run_within(&ws, &["swarm", "down"], Duration::from_secs(30));
    assert_eq!(
        down.code,
        0,
        "swarm down\n--- stderr\n{}\n{}",
        down.stderr,
        sw.explain()
    );
    let mut all = pids.clone();
    all.push(sup);
    sw.assert_all_gone(&all);
    let status = sw.status();
    assert_eq!(status["state"], "down", "after down: {status:#}");
    assert!(status["supervisor"].is_null(), "{status:#}");
    assert!(entries(&ws, "failed").is_empty());
}

#[test]
fn a_second_swarm_up_is_refused_naming_the_running_supervisor() {
    let ws = Ws::new();
    let sw = Swarm::new(&ws);
    role(&ws, "a", "settle_ms: 50\n", RECORDING_WORKFLOW);
    sw.up_d(&["--grace", "2"]);
    let before = sw.file().unwrap();
    let sup = before["supervisor"]["pid"].as_u64().unwrap();
    let agent = pid_of(&before, "a#1");

    for args in [&["swarm", "up"][..], &["swarm", "up", "-d"][..]] {
        let run = run_within(&ws, args, Duration::from_secs(30));
        assert_ne!(
            run.code,
            0,
            "a second `{}` was not refused\n{}",
            args.join(" "),
            run.stderr
        );
        assert!(
            run.stderr.contains(&format!("pid {sup}")),
            "a second `{}` does not name the running supervisor (pid {sup}):\n--- stderr\n{}",
            args.join(" "),
            run.stderr
        );
        // The first keeps running, untouched.
        let now = sw.file().unwrap();
        assert_eq!(now["supervisor"]["pid"], sup, "{now:#}");
        assert_eq!(now["supervisor"]["state"], "running", "{now:#}");
        assert_eq!(child(&now, "a#1")["state"], "running", "{now:#}");
        assert_eq!(pid_of(&now, "a#1"), agent, "{now:#}");
        assert!(pid_alive(u32::try_from(sup).unwrap()));
        assert!(pid_alive(agent));
    }
    // And still works.
    enqueue(&ws, "a", "t", "x");
    sw.wait("t to be processed", Duration::from_secs(10), || {
        seen(&ws, "t")
    });
    let status = sw.status();
    assert_eq!(status["supervisor"]["pid"], sup);
    assert_eq!(status["children"].as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Restarts

#[test]
fn a_crash_looping_role_is_failed_after_the_intensity_limit_while_another_runs_on() {
    let ws = Ws::new();
    let mut sw = Swarm::new(&ws);
    role(&ws, "good", "settle_ms: 50\n", RECORDING_WORKFLOW);
    // The inbox of `crash` is a regular file: its agent cannot create or watch it and exits.
    role(&ws, "crash", "inbox: crashbox\n", RECORDING_WORKFLOW);
    ws.file("crashbox", "not a directory\n");

    let started = Instant::now();
    let up = sw.up_fg(&["--grace", "2"]);
    let file = sw.wait_file("good#1 to be running", Duration::from_secs(20), |f| {
        f["children"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["name"] == "good#1" && c["state"] == "running")
        })
    });
    let good = pid_of(&file, "good#1");
    // Work goes on while the other role crash-loops.
    enqueue(&ws, "good", "t1", "x");
    sw.wait("t1 to be processed", Duration::from_secs(10), || {
        seen(&ws, "t1")
    });

    // 5 restarts (250 ms doubling: about 7.75 s of backoff), then failed.
    let file = sw.wait_file("crash#1 to be failed", Duration::from_secs(45), |f| {
        f["children"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["name"] == "crash#1" && c["state"] == "failed")
        })
    });
    let took = started.elapsed();
    let crash = child(&file, "crash#1");
    assert_eq!(crash["restarts"], 5, "{file:#}");
    assert!(
        crash["pid"].is_null(),
        "a failed replica has a pid: {crash:#}"
    );
    assert_eq!(crash["last_exit"]["kind"], "exited", "{crash:#}");
    assert_ne!(crash["last_exit"]["code"], 0, "{crash:#}");
    assert!(
        took >= Duration::from_secs(6),
        "failed after {took:?}: the restarts did not back off\n{}",
        sw.explain()
    );

    // The backoff doubles from 250 ms (with up to 20% jitter either way).
    let delays: Vec<u64> = events(&ws, "restarting", "crash")
        .iter()
        .map(|e| e["delay_ms"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        delays.len(),
        5,
        "restart delays: {delays:?}\n{}",
        sw.explain()
    );
    for (k, delay) in delays.iter().enumerate() {
        let base = 250u64 << k;
        assert!(
            *delay >= base * 8 / 10 && *delay <= base * 12 / 10,
            "restart {} waited {delay} ms, expected about {base} ms: {delays:?}",
            k + 1
        );
    }
    assert_eq!(events(&ws, "failed", "crash").len(), 1, "{}", sw.explain());

    // Shown as failed, with its last exit; the other role runs untouched.
    let text = sw.status_text();
    let cells = row(&text, "crash", 1);
    assert_eq!(cells[2], "-", "{text}");
    assert_eq!(cells[3], "failed", "{text}");
    assert_eq!(cells[4], "5", "{text}");
    let crash_row = text.lines().find(|l| l.starts_with("crash")).unwrap();
    assert!(crash_row.contains("exit "), "no last exit shown: {text}");
    let cells = row(&text, "good", 1);
    assert_eq!(cells[2], good.to_string(), "{text}");
    assert_eq!(cells[3], "running", "{text}");
    assert_eq!(cells[4], "0", "{text}");
    assert!(text.contains("1 of 2 replicas running, 1 failed"), "{text}");
    let status = sw.status();
    assert_eq!(status["state"], "running", "{status:#}");
    assert_eq!(child(&status, "good#1")["pid"], good);

    enqueue(&ws, "good", "t2", "x");
    sw.wait("t2 to be processed", Duration::from_secs(10), || {
        seen(&ws, "t2")
    });
    assert!(pid_alive(good));
    // Failed means no more starts.
    assert_eq!(events(&ws, "spawned", "crash").len(), 6, "{}", sw.explain());

    let down = run_within(&ws, &["swarm", "down"], Duration::from_secs(30));
    assert_eq!(down.code, 0, "{}\n{}", down.stderr, sw.explain());
    let status = sw.fg_wait(up, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", sw.explain());
    sw.assert_all_gone(&[good, sw.fg_pid(up)]);
}

#[test]
fn poison_tasks_that_kill_their_worker_are_charged_to_the_task_not_the_role() {
    let ws = Ws::new();
    let sw = Swarm::new(&ws);
    // Two poison tasks with 3 attempts each kill the worker 6 times: over the role's budget of
    // 5 restarts, were the deaths charged to the role.
    role(
        &ws,
        "r",
        "max_attempts: 3\nsettle_ms: 50\n",
        r#"
steps:
  - name: Work
    command:
      - bash
      - -c
      - |
        echo "$1 $2" >> attempts.log
        if [ "$3" = poison ]; then kill -9 $PPID; exit 0; fi
        echo "$1" >> seen.log
      - work
      - ${task.id}
      - ${task.attempt}
      - ${task.text}
"#,
    );
    sw.up_d(&["--grace", "2"]);
    let first = pid_of(&sw.file().unwrap(), "r#1");
    enqueue(&ws, "r", "p1", "poison");
    enqueue(&ws, "r", "p2", "poison");

    sw.wait(
        "both poison tasks to end in failed/",
        Duration::from_secs(40),
        || {
            entries_of(&ws, "failed", "r", "p1").len() == 1
                && entries_of(&ws, "failed", "r", "p2").len() == 1
        },
    );
    for id in ["p1", "p2"] {
        let dir = entry_of(&ws, "failed", "r", id);
        let status = json_file(&ws, &format!("{dir}/status.json"));
        assert_eq!(status["success"], false, "{status:#}");
        assert_eq!(status["attempt"], 3, "{status:#}");
        let message = status["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("worker died 3 time"),
            "{id}: message: {message}"
        );
        let attempts: Vec<String> = lines(&ws, "attempts.log")
            .into_iter()
            .filter(|l| l.starts_with(&format!("{id} ")))
            .collect();
        assert_eq!(
            attempts,
            [format!("{id} 1"), format!("{id} 2"), format!("{id} 3")],
            "attempts seen by the workflow"
        );
    }

    // The supervisor restarted the agent after each death; the role is not failed.
    let file = sw.wait_file("r#1 to be running", Duration::from_secs(10), |f| {
        f["children"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["name"] == "r#1" && c["state"] == "running")
        })
    });
    let r = child(&file, "r#1");
    assert_eq!(r["restarts"], 6, "{file:#}\n{}", sw.explain());
    let now = pid_of(&file, "r#1");
    assert_ne!(now, first);
    assert!(pid_alive(now));
    let restarts = events(&ws, "restarting", "r");
    assert_eq!(restarts.len(), 6, "{}", sw.explain());
    assert!(
        restarts.iter().all(|e| e["charged_to_task"] == true),
        "a death was charged to the role: {restarts:#?}"
    );
    assert!(events(&ws, "failed", "r").is_empty(), "{}", sw.explain());
    let status = sw.status();
    assert_eq!(child(&status, "r#1")["state"], "running", "{status:#}");

    // A normal task afterwards is processed.
    enqueue(&ws, "r", "n", "normal");
    sw.wait("n to be processed", Duration::from_secs(10), || {
        entries_of(&ws, "processed", "r", "n").len() == 1
    });
    assert_eq!(lines(&ws, "seen.log"), ["n"]);
    assert_eq!(pid_of(&sw.file().unwrap(), "r#1"), now);
}

#[test]
fn kill_9_of_a_replica_restarts_it_and_its_task_is_retried_once_its_step_is_gone() {
    let ws = Ws::new();
    let sw = Swarm::new(&ws);
    role(
        &ws,
        "r",
        "replicas: 2\nmax_attempts: 3\nsettle_ms: 50\n",
        SLEEPY_WORKFLOW,
    );
    sw.up_d(&["--grace", "2"]);
    let status = sw.status();
    let (one, two) = (pid_of(&status, "r#1"), pid_of(&status, "r#2"));

    // Attempt 1's step sleeps 3 s in its own process group: it outlives its agent.
    enqueue(&ws, "r", "t", "3");
    sw.wait("t to start", Duration::from_secs(10), || started(&ws, "t"));
    let worker: u32 = lines(&ws, "exec.log")[0]
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    let (victim, other) = if worker == one {
        ("r#1", "r#2")
    } else {
        assert_eq!(worker, two, "the step's parent is not a replica");
        ("r#2", "r#1")
    };
    let step = step_pid(&ws, "t");
    signal(worker, libc::SIGKILL);

    let file = sw.wait_file(
        "the killed replica to run again",
        Duration::from_secs(15),
        |f| {
            let c = &f["children"];
            c.as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["name"] == victim
                        && c["state"] == "running"
                        && c["pid"].as_u64().is_some_and(|p| p != u64::from(worker))
                })
            })
        },
    );
    let restarted = child(&file, victim);
    assert_eq!(restarted["restarts"], 1, "{file:#}");
    let new = pid_of(&file, victim);
    assert!(pid_alive(new));
    assert_eq!(restarted["last_exit"]["kind"], "signaled", "{restarted:#}");
    assert_eq!(restarted["last_exit"]["signal"], 9, "{restarted:#}");
    // The other replica is untouched.
    assert_eq!(child(&file, other)["restarts"], 0, "{file:#}");
    assert_eq!(pid_of(&file, other), if worker == one { two } else { one });

    sw.wait(
        "t to be retried and processed",
        Duration::from_secs(20),
        || entries_of(&ws, "processed", "r", "t").len() == 1,
    );
    assert!(!pid_alive(step));
    let kinds: Vec<(String, u32)> = executions(&ws)
        .into_iter()
        .map(|(kind, _, attempt)| (kind, attempt))
        .collect();
    assert_eq!(
        kinds,
        [
            ("start".to_string(), 1),
            ("end".to_string(), 1),
            ("start".to_string(), 2),
            ("end".to_string(), 2)
        ],
        "attempt 2 ran while attempt 1's step lived, or not at all\n{}",
        sw.explain()
    );
    let dir = entry_of(&ws, "processed", "r", "t");
    let status = json_file(&ws, &format!("{dir}/status.json"));
    assert_eq!(status["attempt"], 2, "{status:#}");
    assert_eq!(status["success"], true, "{status:#}");
    assert!(
        status["history"].to_string().contains("worker died"),
        "{status:#}"
    );
    assert!(entries(&ws, "failed").is_empty());
    assert!(entries(&ws, "running/r").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Stopping

#[test]
fn swarm_down_lets_the_task_in_flight_finish_and_claims_nothing_new() {
    let ws = Ws::new();
    let sw = Swarm::new(&ws);
    role(&ws, "r", "concurrency: 1\nsettle_ms: 50\n", SLEEPY_WORKFLOW);
    sw.up_d(&["--grace", "10"]);
    let file = sw.file().unwrap();
    let sup = u32::try_from(file["supervisor"]["pid"].as_u64().unwrap()).unwrap();
    let agent = pid_of(&file, "r#1");
    enqueue(&ws, "r", "t1", "2");
    sw.wait("t1 to start", Duration::from_secs(10), || {
        started(&ws, "t1")
    });

    let mut down = ws
        .cmd(&["swarm", "down"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sw.wait_file(
        "the supervisor to begin stopping",
        Duration::from_secs(5),
        // `stopped` too: a swarm that (wrongly) stops at once fails on the records below.
        |f| f["supervisor"]["state"] != "running",
    );
    enqueue(&ws, "r", "t2", "0");
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = down.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "swarm down did not return\n{}",
            sw.explain()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut down.stderr.take().unwrap(), &mut stderr).unwrap();
    // That it waited for t1 and not out its grace is in the records below (t1 succeeded), not
    // in how long it took.
    assert_eq!(code, Some(0), "swarm down: {stderr}\n{}", sw.explain());

    assert_eq!(
        lines(&ws, "exec.log")
            .iter()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>(),
        ["start t1 1", "end t1 1"],
        "{}",
        sw.explain()
    );
    let dir = entry_of(&ws, "processed", "r", "t1");
    assert_eq!(
        json_file(&ws, &format!("{dir}/status.json"))["success"],
        true
    );
    assert_eq!(queued(&ws, "r"), ["t2.task"], "{}", sw.explain());
    assert_eq!(sidecar(&ws, "r", "t2")["attempts"], 0);
    assert!(entries(&ws, "running/r").is_empty());
    assert!(entries(&ws, "failed").is_empty());
    sw.assert_all_gone(&[sup, agent, step_pid(&ws, "t1")]);
}

#[test]
fn swarm_down_with_a_short_grace_gives_the_task_back_uncharged() {
    let ws = Ws::new();
    let sw = Swarm::new(&ws);
    role(&ws, "r", "concurrency: 1\nsettle_ms: 50\n", SLEEPY_WORKFLOW);
    sw.up_d(&["--grace", "0.5"]);
    let file = sw.file().unwrap();
    let sup = u32::try_from(file["supervisor"]["pid"].as_u64().unwrap()).unwrap();
    let agent = pid_of(&file, "r#1");
    enqueue(&ws, "r", "t", "600");
    sw.wait("t to start", Duration::from_secs(10), || started(&ws, "t"));
    let step = step_pid(&ws, "t");

    // A wide margin: the grace cut the 600 s task short instead of waiting for it.
    let down = run_within(&ws, &["swarm", "down"], Duration::from_secs(120));
    assert_eq!(down.code, 0, "{}\n{}", down.stderr, sw.explain());
    sw.assert_all_gone(&[sup, agent, step]);
    assert_eq!(executions(&ws).len(), 1, "{}", sw.explain());
    assert_eq!(queued(&ws, "r"), ["t.task"], "{}", sw.explain());
    assert_eq!(ws.read("inbox/r/t.task"), "600");
    let meta = sidecar(&ws, "r", "t");
    assert_eq!(
        meta["attempts"], 0,
        "the stopped attempt was charged: {meta:#}"
    );
    assert!(entries(&ws, "running/r").is_empty());
    assert!(entries(&ws, "processed").is_empty());
    assert!(entries(&ws, "failed").is_empty());
}

#[test]
fn swarm_down_and_status_when_nothing_runs() {
    let ws = Ws::new();
    let sw = Swarm::new(&ws);
    role(&ws, "a", "", RECORDING_WORKFLOW);
    enqueue(&ws, "a", "t1", "x");
    enqueue(&ws, "a", "t2", "x");

    let down = run_within(&ws, &["swarm", "down"], Duration::from_secs(10));
    // Nothing to stop is what was asked for: not an error.
    assert_eq!(down.code, 0, "swarm down with nothing running: {down:?}");
    down.stderr_has("no swarm is running");
    assert!(down.stdout.is_empty(), "{}", down.stdout);

    let text = sw.status_text();
    assert!(text.contains("no supervisor is running"), "{text}");
    // ROLE REPLICA PID STATE RESTARTS SINCE QUEUED RUNNING LAST-EXIT, dashes where no replica.
    let cells: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("a "))
        .unwrap_or_else(|| panic!("no row for role a:\n{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(cells.get(6), Some(&"2"), "queued of a:\n{text}");
    assert_eq!(cells.get(7), Some(&"0"), "running of a:\n{text}");
    let status = sw.status();
    assert_eq!(status["state"], "down", "{status:#}");
    assert!(status["supervisor"].is_null(), "{status:#}");
    assert_eq!(status["children"].as_array().map(Vec::len), Some(0));
    assert_eq!(load(&status, "a")["queued"], 2, "{status:#}");
    assert_eq!(load(&status, "a")["running"], 0, "{status:#}");
    assert!(!ws.exists(".orchestrate/swarm/status.json"));
}

#[test]
fn foreground_swarm_up_stops_gracefully_on_sigint() {
    let ws = Ws::new();
    let mut sw = Swarm::new(&ws);
    role(&ws, "r", "replicas: 2\nsettle_ms: 50\n", SLEEPY_WORKFLOW);
    let up = sw.up_fg(&["--grace", "10"]);
    let sup = sw.fg_pid(up);
    let file = sw.wait_file("every replica to run", Duration::from_secs(20), |f| {
        f["supervisor"]["pid"] == sup
            && f["children"]
                .as_array()
                .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["state"] == "running"))
    });
    let agents = [pid_of(&file, "r#1"), pid_of(&file, "r#2")];
    enqueue(&ws, "r", "t", "1");
    sw.wait("t to start", Duration::from_secs(10), || started(&ws, "t"));

    signal(sup, libc::SIGINT);
    let status = sw.fg_wait(up, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", sw.explain());
    // The task in flight finished.
    assert_eq!(
        entries_of(&ws, "processed", "r", "t").len(),
        1,
        "the task in flight did not finish\n{}",
        sw.explain()
    );
    let dir = entry_of(&ws, "processed", "r", "t");
    assert_eq!(
        json_file(&ws, &format!("{dir}/status.json"))["success"],
        true
    );
    sw.assert_all_gone(&[sup, agents[0], agents[1], step_pid(&ws, "t")]);
    let status = sw.status();
    assert_eq!(status["state"], "down", "{status:#}");
}

/// The signals blocked in `pid` (the `SigBlk` mask of `/proc/PID/status`).
fn blocked_signals(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no SigBlk in /proc/{pid}/status:\n{status}"))
}

#[test]
fn swarm_up_started_with_its_stop_signals_blocked_still_stops_and_so_do_its_steps() {
    // Whatever starts the supervisor (a CI runner, another supervisor, a runtime's `exec`) may
    // leave signals blocked, and a blocked mask survives exec.
    let ws = Ws::new();
    let mut sw = Swarm::new(&ws);
    role(&ws, "r", "settle_ms: 50\n", SLEEPY_WORKFLOW);
    let up = sw.up_fg_with(&["--grace", "10"], |command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: runs in the forked child before exec; sigemptyset, sigaddset and
        // pthread_sigmask are async-signal-safe and touch only the local set.
        unsafe {
            command.pre_exec(|| {
                let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
                libc::sigemptyset(set.as_mut_ptr());
                for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGCHLD] {
                    libc::sigaddset(set.as_mut_ptr(), sig);
                }
                libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut());
                Ok(())
            });
        }
    });
    let (sup, agent) = sw.one_replica_busy(up);
    let step = step_pid(&ws, "t");
    for (what, pid) in [("supervisor", sup), ("replica", agent)] {
        assert_eq!(
            blocked_signals(pid),
            0,
            "the {what} (pid {pid}) runs with signals blocked"
        );
    }
    // The step is bash, which blocks SIGCHLD itself while it waits for its `sleep`.
    let stops = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP]
        .iter()
        .fold(0u64, |mask, sig| mask | 1 << (sig - 1));
    assert_eq!(
        blocked_signals(step) & stops,
        0,
        "the step (pid {step}) runs with SIGINT, SIGTERM or SIGHUP blocked"
    );

    // SIGINT reaches the supervisor; the step, asked to stop by its replica, stops too.
    signal(sup, libc::SIGINT);
    signal(sup, libc::SIGINT);
    let status = sw.fg_wait(up, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", sw.explain());
    sw.assert_all_gone(&[sup, agent, step]);
}

#[test]
fn swarm_up_runs_in_a_pid_namespace_whose_session_leader_is_outside_it() {
    // A container's shell started by `docker exec`, or anything under `unshare --pid`: our
    // session's (and group's) leader is outside the namespace, and getsid(2) says 0.
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        // Not a missing component: the machine forbids new namespaces (a container without
        // CAP_SYS_ADMIN). Such a CI runs its own tests in one, which the others then cover.
        eprintln!("SKIPPED: `unshare --pid --fork --mount-proc` is not permitted here");
        return;
    }
    let ws = Ws::new();
    role(&ws, "r", "replicas: 2\nsettle_ms: 50\n", RECORDING_WORKFLOW);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("up.log");
    // When unshare dies (SIGKILLed below), the supervisor, pid 1 in the namespace, gets
    // SIGTERM; when it exits, the kernel kills whatever is left in the namespace.
    let mut unshare = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child=SIGTERM",
            BIN,
        ])
        .arg("--workspace")
        .arg(ws.path())
        .args(["swarm", "up", "--grace", "5"])
        .current_dir(ws.path())
        .env_remove("ORCHESTRATE_WORKSPACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn unshare");
    struct Stop<'a>(&'a mut Child, &'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            for pid in procs_in(self.1) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
    let ws_path = ws.path().to_path_buf();
    let stop = Stop(&mut unshare, &ws_path);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let status_file = || -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(ws.join(".orchestrate/swarm/status.json")).unwrap_or_default(),
        )
        .unwrap_or_default()
    };
    wait_until("both replicas to run", Duration::from_secs(20), || {
        let f = status_file();
        assert!(
            !log_text().contains("panicked"),
            "the supervisor panicked:\n{}",
            log_text()
        );
        f["children"]
            .as_array()
            .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["state"] == "running"))
    });
    enqueue(&ws, "r", "t", "x");
    wait_until("t to be processed", Duration::from_secs(10), || {
        !entries_of(&ws, "processed", "r", "t").is_empty()
    });
    // Only unshare: the namespace's processes are the supervisor's to stop.
    let _ = stop.0.kill();
    wait_until("the supervisor to stop", Duration::from_secs(20), || {
        log_text().contains("swarm stopped")
    });
    let text = log_text();
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(status_file()["supervisor"]["state"], "stopped", "{text}");
    drop(stop);
}

#[test]
fn a_second_sigint_during_a_long_grace_stops_at_once() {
    let ws = Ws::new();
    let mut sw = Swarm::new(&ws);
    role(&ws, "r", "settle_ms: 50\n", SLEEPY_WORKFLOW);
    let up = sw.up_fg(&["--grace", "600"]);
    let (sup, agent) = sw.one_replica_busy(up);
    let step = step_pid(&ws, "t");

    signal(sup, libc::SIGINT);
    // `stopped` too: a swarm that (wrongly) stops at once fails on the checks below.
    sw.wait_file(
        "the replica to begin stopping",
        Duration::from_secs(5),
        |f| f["supervisor"]["state"] != "running" && f["children"][0]["state"] != "running",
    );
    // The first SIGINT waits for the task (600 s of grace).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        sw.fg[up].child.try_wait().unwrap().is_none(),
        "the first SIGINT did not wait for the task in flight\n{}",
        sw.explain()
    );
    assert!(pid_alive(step), "the first SIGINT killed the task's step");

    let began = Instant::now();
    signal(sup, libc::SIGINT);
    let status = sw.fg_wait(up, Duration::from_secs(120));
    let took = began.elapsed();
    // A wide margin that proves the stop: the task sleeps 600 s and the grace is 600 s.
    assert!(
        took < Duration::from_secs(120),
        "the second SIGINT took {took:?} to stop the swarm"
    );
    assert!(
        status.code().is_some(),
        "the supervisor died of a signal: {status:?}\n{}",
        sw.explain()
    );
    sw.assert_all_gone(&[sup, agent, step]);
    assert!(
        sw.fg_log(up).contains("killed"),
        "the supervisor does not say it killed: {}",
        sw.fg_log(up)
    );
}
