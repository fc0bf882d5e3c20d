//! The supervisor end to end: replicas in a supervisor run in this test process, and `down` and
//! `wait_up` against a supervisor in a helper process (this test binary, running only
//! [`helper_supervisor_process`]). Unit tests live beside their code.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use orchestrate_base::{clock, process};

use super::actor::supervise;
use super::event::{Record, Restarting, SupervisorEvent, read_events};
use super::exit::ExitReason;
use super::proc::pgid;
use super::status_file::{STATUS_FORMAT, StatusFile, SupervisorState, write_status};
use super::*;

const READY_THEN_SLEEP: &str = r#"echo ready >&"$ORCHESTRATE_READY_FD"; exec sleep 100"#;
const IGNORE_TERM: &str =
    r#"trap '' TERM; echo ready >&"$ORCHESTRATE_READY_FD"; while :; do sleep 0.05; done"#;

fn fast() -> Policy {
    Policy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        reset_after: Duration::from_secs(30),
        max_restarts: 3,
        within: Duration::from_secs(30),
        grace: Duration::from_secs(5),
        ready_timeout: Duration::from_secs(5),
    }
}

pub(super) fn child(role: &str, replica: u32, script: &str) -> ChildSpec {
    ChildSpec {
        name: format!("{role}#{replica}"),
        role: role.to_string(),
        replica,
        argv: vec!["bash".into(), "-c".into(), script.into()],
        env: vec![("SUPERVISOR_TEST".into(), "1".into())],
    }
}

fn never() -> ChargeToTask {
    Arc::new(|_: &str, _: u32| false)
}

/// A supervisor running in this process, on its own temp workspace.
struct Swarm {
    ws: tempfile::TempDir,
    stop: CancellationToken,
    kill: CancellationToken,
    handle: tokio::task::JoinHandle<Result<Report, SupervisorError>>,
}

impl Swarm {
    fn start(children: Vec<ChildSpec>, policy: Policy, charge: ChargeToTask) -> Swarm {
        let ws = tempfile::tempdir().unwrap();
        let (stop, kill) = (CancellationToken::new(), CancellationToken::new());
        let path = ws.path().to_path_buf();
        let (s, k) = (stop.clone(), kill.clone());
        let handle =
            tokio::spawn(async move { supervise(&path, children, policy, charge, s, k).await });
        Swarm {
            ws,
            stop,
            kill,
            handle,
        }
    }

    fn path(&self) -> &Path {
        self.ws.path()
    }

    async fn until(&self, what: &str, cond: impl Fn(&SwarmStatus) -> bool) -> SwarmStatus {
        // Generous deadlines in these tests: they guard against hangs, not slowness.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(status) = super::status(self.path())
                && status.supervisor.is_some()
                && cond(&status)
            {
                return status;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stopped(self) -> (Report, tempfile::TempDir) {
        self.stop.cancel();
        let report = tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("supervisor stops")
            .unwrap()
            .unwrap();
        (report, self.ws)
    }

    fn events(&self) -> Vec<Record> {
        read_events(self.path()).unwrap()
    }
}

fn state_of(status: &SwarmStatus, name: &str) -> ChildState {
    status
        .children
        .iter()
        .find(|c| c.name == name)
        .unwrap()
        .state
}

fn child_of<'a>(status: &'a SwarmStatus, name: &str) -> &'a ChildStatus {
    status.children.iter().find(|c| c.name == name).unwrap()
}

fn events_of(events: &[Record], name: &str) -> Vec<&'static str> {
    events
        .iter()
        .filter(|e| e.replica.as_ref().is_some_and(|r| r.child == name))
        .map(|e| e.event.name())
        .collect()
}

/// The `restarting` events of the replica `name` (any when `None`).
fn restarts_of(events: &[Record], name: Option<&str>) -> Vec<Restarting> {
    events
        .iter()
        .filter(|e| name.is_none_or(|name| e.replica.as_ref().is_some_and(|r| r.child == name)))
        .filter_map(|e| match &e.event {
            SupervisorEvent::Restarting(restarting) => Some(restarting.clone()),
            _ => None,
        })
        .collect()
}

/// Gone, or a zombie nobody has reaped yet (it runs no more).
fn gone(pid: u32) -> bool {
    process::stat(pid).is_none_or(|s| s.exited())
}

async fn until_true(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn ready_replica_runs_in_its_own_session_and_stops_on_sigterm() {
    let swarm = Swarm::start(
        vec![child("engineer", 1, READY_THEN_SLEEP)],
        fast(),
        never(),
    );
    let status = swarm
        .until("running", |s| {
            state_of(s, "engineer#1") == ChildState::Running
        })
        .await;
    assert_eq!(status.state, SwarmState::Running);
    assert_eq!(status.supervisor.as_ref().unwrap().pid, std::process::id());
    let pid = child_of(&status, "engineer#1").pid.unwrap();
    let stat = process::stat(pid).unwrap();
    assert_eq!(stat.session, pgid(pid), "a session (and group) of its own");
    assert_eq!(child_of(&status, "engineer#1").pid_start, Some(stat.start));
    let raw: Value = serde_json::from_slice(&fs::read(status_path(swarm.path())).unwrap()).unwrap();
    assert_eq!(raw["format_version"], 1);
    assert_eq!(raw["children"][0]["state"], "running");
    assert!(raw["supervisor"]["pid_start"].as_u64().unwrap() > 0);

    let events = swarm.events();
    let ws = swarm.path().to_path_buf();
    let (report, _dir) = swarm.stopped().await;
    assert!(!report.killed);
    assert_eq!(report.children[0].state, ChildState::Stopped);
    assert_eq!(
        report.children[0].last_exit,
        Some(ExitReason::Signaled {
            signal: libc::SIGTERM
        })
    );
    assert!(gone(pid));
    assert_eq!(events_of(&events, "engineer#1"), ["spawned", "ready"]);
    let events = read_events(&ws).unwrap();
    assert_eq!(
        events_of(&events, "engineer#1"),
        ["spawned", "ready", "stopping", "exited", "stopped"]
    );
    let after = super::status(&ws).unwrap();
    assert_eq!(after.state, SwarmState::Down);
    assert!(after.children.is_empty());
}

#[tokio::test]
async fn replica_is_starting_until_it_reports_ready() {
    let script = r#"while [ ! -e go ]; do sleep 0.01; done; echo ready >&"$ORCHESTRATE_READY_FD"; exec sleep 100"#;
    let swarm = Swarm::start(vec![child("qa", 1, script)], fast(), never());
    let status = swarm
        .until("spawned", |s| child_of(s, "qa#1").pid.is_some())
        .await;
    assert_eq!(state_of(&status, "qa#1"), ChildState::Starting);
    fs::write(swarm.path().join("go"), "").unwrap();
    swarm
        .until("running", |s| state_of(s, "qa#1") == ChildState::Running)
        .await;
    swarm.stopped().await;
}

#[tokio::test]
async fn crash_loop_fails_the_replica_after_the_intensity_limit_others_keep_running() {
    let swarm = Swarm::start(
        vec![
            child("qa", 1, "exit 3"),
            child("engineer", 1, READY_THEN_SLEEP),
        ],
        fast(),
        never(),
    );
    let status = swarm
        .until("failed", |s| {
            state_of(s, "qa#1") == ChildState::Failed
                && state_of(s, "engineer#1") == ChildState::Running
        })
        .await;
    let qa = child_of(&status, "qa#1");
    assert_eq!(qa.restarts, 3);
    assert_eq!(qa.last_exit, Some(ExitReason::Exited { code: 3 }));
    assert_eq!(qa.pid, None);
    let engineer = child_of(&status, "engineer#1").clone();
    let events = swarm.events();
    let spawns = events_of(&events, "qa#1")
        .iter()
        .filter(|e| **e == "spawned")
        .count();
    assert_eq!(spawns, 4, "first start and three restarts");
    let delays: Vec<u64> = restarts_of(&events, Some("qa#1"))
        .iter()
        .map(|r| r.delay_ms)
        .collect();
    assert_eq!(delays.len(), 3);
    // 10, 20, 40 ms with jitter of at most 20%.
    for (delay, base) in delays.iter().zip([10, 20, 40]) {
        assert!(
            (base * 8 / 10..=base * 12 / 10).contains(delay),
            "{delay} vs {base}"
        );
    }
    let rendered = render_status(&status);
    assert!(rendered.contains("failed"), "{rendered}");
    assert!(rendered.contains("exit 3"), "{rendered}");

    let (report, _ws) = swarm.stopped().await;
    let qa = report.children.iter().find(|c| c.name == "qa#1").unwrap();
    assert_eq!(
        qa.state,
        ChildState::Failed,
        "a failed replica stays failed"
    );
    let eng = report
        .children
        .iter()
        .find(|c| c.name == "engineer#1")
        .unwrap();
    assert_eq!(eng.state, ChildState::Stopped);
    assert_eq!(eng.restarts, 0);
    assert_eq!(engineer.restarts, 0);
}

#[tokio::test]
async fn deaths_charged_to_a_task_restart_at_once_and_do_not_count() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let charge: ChargeToTask = Arc::new(move |role: &str, pid: u32| {
        assert_eq!(role, "engineer");
        assert!(pid > 1);
        // The first five deaths were a task's doing.
        seen.fetch_add(1, Ordering::SeqCst) < 5
    });
    let swarm = Swarm::start(vec![child("engineer", 1, "exit 1")], fast(), charge);
    let status = swarm
        .until("failed", |s| {
            state_of(s, "engineer#1") == ChildState::Failed
        })
        .await;
    assert_eq!(child_of(&status, "engineer#1").restarts, 5 + 3);
    assert_eq!(calls.load(Ordering::SeqCst), 5 + 3 + 1);
    let restarts: Vec<(bool, u64)> = restarts_of(&swarm.events(), None)
        .iter()
        .map(|r| (r.charged_to_task, r.delay_ms))
        .collect();
    assert_eq!(restarts.len(), 8);
    assert!(
        restarts[..5].iter().all(|r| *r == (true, 0)),
        "{restarts:?}"
    );
    assert!(
        restarts[5..].iter().all(|r| !r.0 && r.1 > 0),
        "{restarts:?}"
    );
    swarm.stopped().await;
}

#[tokio::test]
async fn backoff_resets_after_healthy_running() {
    let policy = Policy {
        reset_after: Duration::from_millis(100),
        ..fast()
    };
    // Healthy (ready) for a second each time, then a crash: ten times `reset_after`, so that a
    // supervisor slow to read the ready line on a loaded machine still counts the run healthy
    // (150 ms once failed a CI run).
    let script = r#"echo ready >&"$ORCHESTRATE_READY_FD"; sleep 1; exit 1"#;
    let swarm = Swarm::start(vec![child("qa", 1, script)], policy, never());
    swarm
        .until("failed", |s| state_of(s, "qa#1") == ChildState::Failed)
        .await;
    let delays: Vec<u64> = restarts_of(&swarm.events(), None)
        .iter()
        .map(|r| r.delay_ms)
        .collect();
    assert_eq!(delays.len(), 3);
    assert!(delays.iter().all(|d| (8..=12).contains(d)), "{delays:?}");
    swarm.stopped().await;
}

#[tokio::test]
async fn replica_that_cannot_start_fails_with_the_reason() {
    let mut spec = child("qa", 1, "");
    spec.argv = vec!["/nonexistent/orchestrate".into(), "agent".into()];
    let swarm = Swarm::start(vec![spec], fast(), never());
    let status = swarm
        .until("failed", |s| state_of(s, "qa#1") == ChildState::Failed)
        .await;
    let exit = child_of(&status, "qa#1").last_exit.clone().unwrap();
    assert!(
        matches!(&exit, ExitReason::SpawnFailed { message } if message.starts_with("failed to start `/nonexistent/orchestrate`")),
        "{exit:?}"
    );
    assert!(render_status(&status).contains("failed to start"));
    swarm.stopped().await;
}

#[tokio::test]
async fn replica_that_never_reports_ready_is_killed_and_restarted() {
    let policy = Policy {
        ready_timeout: Duration::from_millis(150),
        max_restarts: 1,
        ..fast()
    };
    let swarm = Swarm::start(vec![child("qa", 1, "exec sleep 100")], policy, never());
    let status = swarm
        .until("failed", |s| state_of(s, "qa#1") == ChildState::Failed)
        .await;
    let qa = child_of(&status, "qa#1");
    assert_eq!(qa.restarts, 1);
    assert_eq!(qa.last_exit, Some(ExitReason::NotReady { timeout_ms: 150 }));
    assert_eq!(
        qa.last_exit.as_ref().unwrap().to_string(),
        "not ready within 0.15s"
    );
    let pids: Vec<u32> = swarm
        .events()
        .iter()
        .filter(|e| e.replica.as_ref().is_some_and(|r| r.child == "qa#1"))
        .filter_map(|e| match &e.event {
            SupervisorEvent::Spawned(spawned) => Some(spawned.pid),
            _ => None,
        })
        .collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| gone(*p)));
    swarm.stopped().await;
}

#[tokio::test]
async fn graceful_stop_sigkills_what_ignores_sigterm_after_the_grace() {
    let policy = Policy {
        grace: Duration::from_millis(300),
        ..fast()
    };
    let swarm = Swarm::start(vec![child("qa", 1, IGNORE_TERM)], policy, never());
    let status = swarm
        .until("running", |s| state_of(s, "qa#1") == ChildState::Running)
        .await;
    let pid = child_of(&status, "qa#1").pid.unwrap();
    let start = Instant::now();
    let (report, _ws) = swarm.stopped().await;
    let took = start.elapsed();
    // Not before the grace; that the SIGKILL came is `last_exit` below (the child never
    // exits on its own).
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert_eq!(
        report.children[0].last_exit,
        Some(ExitReason::Signaled {
            signal: libc::SIGKILL
        })
    );
    assert!(gone(pid));
}

#[tokio::test]
async fn kill_token_kills_at_once_during_a_graceful_stop() {
    let policy = Policy {
        grace: Duration::from_secs(600),
        ..fast()
    };
    let swarm = Swarm::start(vec![child("qa", 1, IGNORE_TERM)], policy, never());
    swarm
        .until("running", |s| state_of(s, "qa#1") == ChildState::Running)
        .await;
    swarm.stop.cancel();
    let status = swarm
        .until("stopping", |s| state_of(s, "qa#1") == ChildState::Stopping)
        .await;
    assert_eq!(status.state, SwarmState::Stopping);
    swarm.kill.cancel();
    // A wide margin: killed at once, not after the 600 s grace.
    let report = tokio::time::timeout(Duration::from_secs(120), swarm.handle)
        .await
        .expect("killed promptly")
        .unwrap()
        .unwrap();
    assert!(report.killed);
    assert_eq!(report.children[0].state, ChildState::Stopped);
    assert_eq!(
        report.children[0].last_exit,
        Some(ExitReason::Signaled {
            signal: libc::SIGKILL
        })
    );
}

#[tokio::test]
async fn second_supervisor_is_refused_naming_the_first() {
    let swarm = Swarm::start(vec![child("qa", 1, READY_THEN_SLEEP)], fast(), never());
    swarm
        .until("running", |s| state_of(s, "qa#1") == ChildState::Running)
        .await;
    let err = supervise(
        swarm.path(),
        vec![child("qa", 1, READY_THEN_SLEEP)],
        fast(),
        never(),
        CancellationToken::new(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SupervisorError::AlreadyRunning { pid: Some(pid), .. } if pid == std::process::id())
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    assert!(message.contains("orchestrate swarm status"), "{message}");
    assert!(message.contains("orchestrate swarm down"), "{message}");
    // The refused one touched nothing: the first is still the one recorded.
    let status = super::status(swarm.path()).unwrap();
    assert_eq!(state_of(&status, "qa#1"), ChildState::Running);
    let (_, ws) = swarm.stopped().await;

    // Once the first is gone, the lock is free again.
    let stop = CancellationToken::new();
    stop.cancel();
    let report = supervise(
        ws.path(),
        Vec::new(),
        fast(),
        never(),
        stop,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.children.is_empty());
}

#[tokio::test]
async fn orphans_are_reaped_and_managed_exit_statuses_are_kept() {
    let orphan_maker = r#"( sleep 0.3 & echo $! > orphan.pid ); echo ready >&"$ORCHESTRATE_READY_FD"; exec sleep 100"#;
    let swarm = Swarm::start(
        vec![child("engineer", 1, orphan_maker), child("qa", 1, "exit 5")],
        fast(),
        never(),
    );
    let pid_file = swarm.path().join("orphan.pid");
    let mut orphan = 0u32;
    until_true("the orphan's pid", || {
        orphan = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        orphan > 0
    })
    .await;
    // Its parent (the subshell) exits at once: the orphan is reparented to us, the subreaper.
    let me = i32::try_from(std::process::id()).unwrap();
    let mut seen_adopted = false;
    until_true("the orphan to be adopted, then reaped", || {
        match process::stat(orphan) {
            Some(stat) => {
                seen_adopted |= stat.ppid == me;
                false
            }
            // Fully gone, not a zombie: someone reaped it.
            None => true,
        }
    })
    .await;
    assert!(seen_adopted, "the orphan was reparented to the supervisor");
    let status = swarm
        .until("qa failed", |s| state_of(s, "qa#1") == ChildState::Failed)
        .await;
    // The reaper, busy meanwhile, never took a managed child's status.
    assert_eq!(
        child_of(&status, "qa#1").last_exit,
        Some(ExitReason::Exited { code: 5 })
    );
    swarm.stopped().await;
}

#[tokio::test]
async fn leftover_replicas_of_a_dead_supervisor_are_stopped_at_start() {
    let ws = tempfile::tempdir().unwrap();
    // A replica whose supervisor died: its own session, still running, noting the SIGTERM.
    let mut command = Command::new("bash");
    command
        .args([
            "-c",
            "trap 'echo term > got-term; exit 0' TERM; touch trapped; while :; do sleep 0.05; done",
        ])
        .current_dir(ws.path());
    process::new_session(&mut command);
    let mut leftover = command.spawn().unwrap();
    let pid = leftover.id();
    until_true("the leftover's trap", || ws.path().join("trapped").exists()).await;
    let start = process::stat(pid).unwrap().start;
    let mut dead = ChildStatus::new(&child("qa", 1, ""));
    dead.state = ChildState::Running;
    dead.pid = Some(pid);
    dead.pid_start = Some(start);
    let old = StatusFile {
        format_version: STATUS_FORMAT,
        supervisor: SupervisorInfo {
            pid: u32::MAX - 1,
            pid_start: 1,
            boot_id: process::boot_id(),
            state: SupervisorState::Running,
            started_at: clock::now_rfc3339(),
            updated_at: clock::now_rfc3339(),
        },
        children: vec![dead],
        reloaded_at: None,
        problems: Vec::new(),
    };
    fs::create_dir_all(swarm_dir(ws.path())).unwrap();
    write_status(&status_path(ws.path()), &old).unwrap();

    let before = super::status(ws.path()).unwrap();
    assert_eq!(before.state, SwarmState::Down);
    assert_eq!(before.children.len(), 1);
    assert_eq!(before.children[0].state, ChildState::Orphaned);
    assert!(render_status(&before).contains("orphaned"));

    let stop = CancellationToken::new();
    stop.cancel();
    supervise(
        ws.path(),
        Vec::new(),
        fast(),
        never(),
        stop,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(gone(pid));
    assert_eq!(
        fs::read_to_string(ws.path().join("got-term")).unwrap(),
        "term\n"
    );
    // The supervisor's reaper may have reaped it already: it is in another session.
    let _ = leftover.try_wait();
    let events = read_events(ws.path()).unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e.event, SupervisorEvent::LeftoverStopping(_)))
    );
}

// -----------------------------------------------------------------------------------------
// `down` signals a supervisor process, so the supervisor runs in a separate process: this
// test binary, running only the helper below.

const HELPER_WS: &str = "ORCHESTRATE_SUPERVISOR_HELPER_WS";
const HELPER_SCRIPT: &str = "ORCHESTRATE_SUPERVISOR_HELPER_SCRIPT";
const HELPER_GRACE_MS: &str = "ORCHESTRATE_SUPERVISOR_HELPER_GRACE_MS";

#[test]
#[ignore = "run as a separate supervisor process by the `down` tests"]
fn helper_supervisor_process() {
    let Some(ws) = std::env::var_os(HELPER_WS) else {
        return;
    };
    let script = std::env::var(HELPER_SCRIPT).unwrap();
    let grace: u64 = std::env::var(HELPER_GRACE_MS).unwrap().parse().unwrap();
    let policy = Policy {
        grace: Duration::from_millis(grace),
        ..fast()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (stop, kill) = (CancellationToken::new(), CancellationToken::new());
        // As the CLI does: the first SIGTERM stops, the second kills.
        let mut term = signal(SignalKind::terminate()).unwrap();
        let (s, k) = (stop.clone(), kill.clone());
        tokio::spawn(async move {
            term.recv().await;
            s.cancel();
            term.recv().await;
            k.cancel();
        });
        supervise(
            Path::new(&ws),
            vec![child("qa", 1, &script)],
            policy,
            never(),
            stop,
            kill,
        )
        .await
        .unwrap();
    });
}

/// The helper supervisor process; killed and reaped when dropped.
struct Helper(std::process::Child);

impl Helper {
    fn start(ws: &Path, script: &str, grace: Duration) -> Helper {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "supervisor::tests::helper_supervisor_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "--quiet",
            ])
            .env(HELPER_WS, ws)
            .env(HELPER_SCRIPT, script)
            .env(HELPER_GRACE_MS, grace.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Helper(child)
    }

    fn until_running(&self, ws: &Path) -> SwarmStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(status) = super::status(ws)
                && status
                    .supervisor
                    .as_ref()
                    .is_some_and(|s| s.pid == self.0.id())
                && status.settled()
            {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "helper supervisor did not come up"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn down_stops_a_running_supervisor_gracefully() {
    let ws = tempfile::tempdir().unwrap();
    let mut helper = Helper::start(ws.path(), READY_THEN_SLEEP, Duration::from_secs(5));
    let up = helper.until_running(ws.path());
    let replica = up.children[0].pid.unwrap();
    let report = down(ws.path(), Duration::from_secs(10), false).unwrap();
    assert_eq!(report.pid, helper.0.id());
    assert_eq!(report.signal, "SIGTERM");
    assert!(report.exited);
    assert!(report.killed_children.is_empty());
    assert!(helper.0.wait().unwrap().success());
    assert!(gone(replica));
    let after = super::status(ws.path()).unwrap();
    assert_eq!(after.state, SwarmState::Down);
    let err = down(ws.path(), Duration::from_secs(1), false).unwrap_err();
    assert!(matches!(err, SupervisorError::NotRunning { .. }));
}

#[test]
fn second_down_kills_a_supervisor_stuck_in_its_grace_period() {
    let ws = tempfile::tempdir().unwrap();
    let mut helper = Helper::start(ws.path(), IGNORE_TERM, Duration::from_secs(60));
    let up = helper.until_running(ws.path());
    let replica = up.children[0].pid.unwrap();
    let first = down(ws.path(), Duration::from_millis(200), false).unwrap();
    assert_eq!(first.signal, "SIGTERM");
    assert!(
        !first.exited,
        "the replica ignores SIGTERM and the grace is long"
    );
    assert_eq!(
        super::status(ws.path()).unwrap().state,
        SwarmState::Stopping
    );
    let second = down(ws.path(), Duration::from_secs(10), false).unwrap();
    assert_eq!(second.signal, "SIGKILL");
    assert!(second.exited);
    assert_eq!(second.killed_children, [replica]);
    assert_eq!(helper.0.wait().unwrap().signal(), Some(libc::SIGKILL));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(replica) {
        assert!(Instant::now() < deadline, "replica still runs");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(super::status(ws.path()).unwrap().state, SwarmState::Down);
}

#[test]
fn forced_down_kills_the_supervisor_and_its_replicas() {
    let ws = tempfile::tempdir().unwrap();
    let mut helper = Helper::start(ws.path(), READY_THEN_SLEEP, Duration::from_secs(5));
    let up = helper.until_running(ws.path());
    let replica = up.children[0].pid.unwrap();
    let report = down(ws.path(), Duration::from_secs(10), true).unwrap();
    assert_eq!(report.signal, "SIGKILL");
    assert!(report.exited);
    assert_eq!(report.killed_children, [replica]);
    assert_eq!(helper.0.wait().unwrap().signal(), Some(libc::SIGKILL));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(replica) {
        assert!(Instant::now() < deadline, "replica still runs");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn wait_up_reports_a_supervisor_that_exits_early() {
    let ws = tempfile::tempdir().unwrap();
    let log = ws.path().join("swarm.log");
    let argv: Vec<String> = ["bash", "-c", "echo boom; exit 4"]
        .map(String::from)
        .to_vec();
    let pid = detach(&argv, &log).unwrap();
    let err = wait_up(ws.path(), pid, Duration::from_secs(10)).unwrap_err();
    match &err {
        SupervisorError::ExitedEarly { pid: p, how } => {
            assert_eq!(*p, pid);
            // Reaped by wait_up (exit 4), or by a reaper of another test first.
            assert!(how == "exit 4" || how == "status unknown", "{how}");
        }
        other => panic!("unexpected {other}"),
    }
}
