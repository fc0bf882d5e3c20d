//! Chaos: the swarm under crashes at every protocol point, orphaned and hung workers, lost
//! inotify events and a full disk, judged by the checker (`checker.rs`): nothing lost, no
//! duplicate terminal record, no concurrent executions of one task, executions per task at most
//! its attempts. The soak is `scripts/chaos-soak`, checked by `check_a_soaked_workspace`.

#[allow(unused_imports)]
use crate::harness::*;

use crate::checker::{self, EXEC_LOG, check, recording_workflow};

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Helpers

/// `orchestrate enqueue ROLE --text T --name ID` with `env`; the id when acknowledged (exit 0).
fn enqueue(
    ws: &Ws,
    role: &str,
    id: &str,
    env: &[(&str, &str)],
) -> (Option<String>, ExitStatus, String) {
    let mut cmd = ws.cmd(&["enqueue", role, "--text", id, "--name", id]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn orchestrate enqueue");
    let acknowledged = out
        .status
        .success()
        .then(|| checker::enqueued_id(&String::from_utf8_lossy(&out.stdout)))
        .flatten();
    if out.status.success() {
        assert_eq!(
            acknowledged.as_deref(),
            Some(id),
            "enqueue printed {:?}",
            out.stdout
        );
    }
    (
        acknowledged,
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn execution_starts(ws: &Ws) -> usize {
    lines(ws, EXEC_LOG)
        .iter()
        .filter(|l| l.starts_with("start "))
        .count()
}

// ---------------------------------------------------------------------------------------------
// The checker itself

/// The checker finds each kind of violation in records made up for it (so that the chaos tests
/// below can fail), and passes a clean run.
#[test]
fn the_checker_reports_lost_duplicate_overrun_concurrent_and_unexpected_tasks() {
    let ws = Ws::new();
    let status = |dir: &str, id: &str, attempt: u32| {
        ws.file(
            &format!("{dir}/status.json"),
            &format!(r#"{{"task": "{id}", "attempt": {attempt}, "success": true}}"#),
        );
    };
    status("processed/20260101T000000.000001Z_r_ok", "ok", 2);
    status("processed/20260101T000000.000002Z_r_dup", "dup", 1);
    status("failed/20260101T000000.000003Z_r_dup", "dup", 1);
    status("processed/20260101T000000.000004Z_r_twice", "twice", 1);
    status("processed/20260101T000000.000005Z_r_overlap", "overlap", 2);
    status("processed/20260101T000000.000006Z_r_killed", "killed", 2);
    status(
        "processed/20260101T000000.000007Z_r_stranger",
        "stranger",
        1,
    );
    status("processed/20260101T000000.000008Z_r_maybe", "maybe", 1);
    ws.file("inbox/r/lost.task", "x");
    ws.file(
        EXEC_LOG,
        "start ok 1 100\nstart ok 2 300\nend ok 2 400\n\
         start twice 1 100\nend twice 1 200\nstart twice 1 300\nend twice 1 400\n\
         start overlap 1 100\nstart overlap 2 150\nend overlap 2 160\nend overlap 1 200\n\
         start killed 1 100\noverlap killed 2 1\nstart killed 2 300\nend killed 2 400\n",
    );
    let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let accepted = ids(&["ok", "dup", "twice", "overlap", "killed", "lost"]);
    let report = check(ws.path(), &accepted, &ids(&["maybe"]));
    assert!(!report.passes());
    let names = |list: &[(String, String)]| list.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>();
    assert_eq!(
        report.lost,
        [("lost".to_string(), "inbox/r/lost.task".to_string())]
    );
    assert_eq!(report.duplicates.len(), 1, "{}", report.full());
    assert_eq!(report.duplicates[0].0, "dup");
    assert_eq!(names(&report.over_attempts), ["twice"], "{}", report.full());
    assert_eq!(
        names(&report.concurrent),
        ["killed", "overlap"],
        "{}",
        report.full()
    );
    assert_eq!(report.unexpected, ["stranger"]);
    assert_eq!(report.max_executions_per_id, 2);
    assert_eq!(report.never_ended, 2, "{}", report.full());
    let full = report.full();
    assert!(
        full.contains("lost (1):\n  lost: inbox/r/lost.task"),
        "{full}"
    );

    // The same records without the violations pass.
    let clean = Ws::new();
    clean.file(
        "processed/20260101T000000.000001Z_r_ok/status.json",
        r#"{"task": "ok", "attempt": 2, "success": true}"#,
    );
    clean.file(EXEC_LOG, "start ok 1 100\nstart ok 2 300\nend ok 2 400\n");
    let report = check(clean.path(), &ids(&["ok"]), &BTreeSet::new());
    report.assert_passes();
    assert_eq!(report.never_ended, 1);
}

// ---------------------------------------------------------------------------------------------
// Kill at every protocol point

/// Hundreds of runs, each killing a process (SIGKILL, from a fault point) right after one step
/// of enqueue, claim, completion or recovery, then cleaning up with an ordinary `agent --once`:
/// the checker must pass every time, a 0 exit of `enqueue` must mean the task is there, and
/// every fault point must have killed something.
#[cfg(feature = "failpoints")]
#[test]
fn kill_at_every_protocol_point_loses_nothing_and_runs_nothing_twice_at_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let runs: usize = std::env::var("CHAOS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c4a0_5eed);
    let budget = Duration::from_secs(
        std::env::var("CHAOS_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120),
    );
    let points = orchestrate_queue::fault::POINTS;
    let next = Arc::new(AtomicUsize::new(0));
    let kills: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new(vec![0; points.len()]));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (next, kills, done) = (next.clone(), kills.clone(), done.clone());
            std::thread::spawn(move || {
                loop {
                    let run = next.fetch_add(1, Ordering::SeqCst);
                    // The time budget cuts the soak short, never the coverage: every fault point
                    // gets its three runs however slow the machine is.
                    let covered = run >= runs.min(points.len() * 3);
                    if run >= runs || (covered && started.elapsed() > budget) {
                        break;
                    }
                    // Each run has its own generator, so a failing run repeats alone.
                    let mut rng = Rng::new(seed ^ (run as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    let point = points[run % points.len()];
                    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| one_faulty_run(&mut rng, point)))
                        .unwrap_or_else(|panic| {
                            let message = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            panic!(
                                "run {run} (fault point {point}) failed; repeat it with CHAOS_SEED={seed} CHAOS_RUNS={}: {message}",
                                run + 1
                            )
                        });
                    if killed {
                        kills.lock().unwrap()[run % points.len()] += 1;
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let mut failure = None;
    for t in threads {
        if let Err(panic) = t.join() {
            failure = Some(panic);
        }
    }
    if let Some(panic) = failure {
        std::panic::resume_unwind(panic);
    }
    let kills = kills.lock().unwrap().clone();
    let done = done.load(Ordering::SeqCst);
    let total: usize = kills.iter().sum();
    eprintln!(
        "chaos fault points: {done} runs (seed {seed}), {total} processes killed at a fault point in {:?}; per point: {}",
        started.elapsed(),
        points
            .iter()
            .zip(&kills)
            .map(|(p, k)| format!("{p}={k}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(
        done >= runs.min(points.len() * 3),
        "only {done} runs: every fault point needs three"
    );
    let never: Vec<&str> = points
        .iter()
        .zip(&kills)
        .filter(|(_, k)| **k == 0)
        .map(|(p, _)| *p)
        .collect();
    assert!(
        never.is_empty(),
        "fault points that never killed a process: {never:?}"
    );
}

/// One run: tasks enqueued (one of them killed at `point` if it is an enqueue point), an agent
/// killed at `point` (after a claim left behind for recovery, for recovery points), a clean
/// `agent --once`, then the checker. Returns whether a process was killed at the point.
#[cfg(feature = "failpoints")]
fn one_faulty_run(rng: &mut Rng, point: &str) -> bool {
    let ws = Ws::new();
    let max_attempts = if point.starts_with("recover.") && rng.below(2) == 0 {
        1
    } else {
        5
    };
    let concurrency = 1 + rng.below(2);
    role(
        &ws,
        "r",
        &format!("concurrency: {concurrency}\nmax_attempts: {max_attempts}\nsettle_ms: 0\n"),
        &recording_workflow(""),
    );
    let tasks = 1 + rng.below(4);
    let mut accepted = BTreeSet::new();
    let mut maybe = BTreeSet::new();
    let mut killed = false;
    let faulty = rng.below(tasks);
    for i in 0..tasks {
        let id = format!("t{i}");
        let env: Vec<(&str, String)> = if point.starts_with("enqueue.") && i == faulty {
            vec![("FAILPOINTS", format!("{point}=return"))]
        } else {
            Vec::new()
        };
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (ack, status, stderr) = enqueue(&ws, "r", &id, &env);
        match ack {
            Some(id) => {
                // No false acknowledgement: a 0 exit means the task is in the inbox, whole.
                assert_eq!(ws.read(&format!("inbox/r/{id}.task")), id);
                accepted.insert(id);
            }
            None => {
                assert_eq!(
                    status.signal(),
                    Some(9),
                    "enqueue failed otherwise: {stderr}"
                );
                killed = true;
                maybe.insert(id);
            }
        }
    }
    let mut procs = Agents::new(&ws);
    let once = |procs: &mut Agents, env: &[(&str, &str)]| {
        let n = procs.spawn(&ws, "r", &["--once", "-q"], env);
        let status = procs.wait(n, Duration::from_secs(30));
        // Steps of a killed agent may still run (they hold their task): let them end.
        wait_until("orphaned steps to end", Duration::from_secs(10), || {
            working_in(ws.path()).is_empty()
        });
        status
    };
    if !point.starts_with("enqueue.") {
        if point.starts_with("recover.") {
            // Leave a dead claim behind for recovery: killed before or after its status.
            let setup = ["claim.leased", "complete.status_written"][rng.below(2)];
            let status = once(&mut procs, &[("FAILPOINTS", &format!("{setup}=return"))]);
            assert_eq!(
                status.signal(),
                Some(9),
                "setup at {setup}\n{}",
                procs.logs()
            );
        }
        let skip = rng.below(tasks);
        let config = format!(
            "{point}={}",
            if skip == 0 {
                "return".to_string()
            } else {
                format!("{skip}*off->return")
            }
        );
        let status = once(&mut procs, &[("FAILPOINTS", &config)]);
        if status.signal() == Some(9) {
            killed = true;
        } else {
            assert!(
                status.success(),
                "agent with {config}: {status:?}\n{}",
                procs.logs()
            );
        }
    }
    let status = once(&mut procs, &[]);
    assert!(
        status.success(),
        "the clean agent: {status:?}\n{}",
        procs.logs()
    );
    let report = check(ws.path(), &accepted, &maybe);
    assert!(
        report.passes(),
        "fault point {point}: {}\n{}",
        report.full(),
        procs.logs()
    );
    assert!(
        entries(&ws, "running/r").is_empty(),
        "{:?}",
        entries(&ws, "running/r")
    );
    assert!(queued(&ws, "r").is_empty(), "{:?}", queued(&ws, "r"));
    killed
}

// ---------------------------------------------------------------------------------------------
// Orphaned and hung workers

/// A worker SIGKILLed while its task's step and a grandchild of it run: a second worker started
/// at once does not claim the task while any process of that tree lives (they all inherit the
/// task's lock), even after the step itself has exited; then the task runs as attempt 2, after
/// the grandchild is gone.
#[test]
fn orphaned_step_and_grandchild_keep_the_task_until_the_whole_tree_is_gone() {
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "max_attempts: 3\nsettle_ms: 0\n",
        &recording_workflow(
            r#"if [ "$att" = 1 ]; then
  setsid bash -c 'echo $$ > grandchild.pid; sleep 2.5; echo "gone $(date +%s%6N)" >> grandchild.log' < /dev/null > /dev/null 2>&1 &
  while [ ! -s grandchild.pid ]; do sleep 0.01; done
  sleep 1
fi"#,
        ),
    );
    let mut procs = Agents::new(&ws);
    let first = procs.spawn(&ws, "r", &["-q"], &[]);
    let (ack, _, stderr) = enqueue(&ws, "r", "t", &[]);
    assert!(ack.is_some(), "{stderr}");
    wait_until("attempt 1 to start", Duration::from_secs(10), || {
        execution_starts(&ws) == 1 && ws.exists("grandchild.pid")
    });
    procs.signal(first, "KILL");
    procs.wait(first, Duration::from_secs(5));
    let grandchild: u32 = ws.read("grandchild.pid").trim().parse().unwrap();
    assert!(pid_alive(grandchild));
    procs.spawn(&ws, "r", &["-q"], &[]);
    // The step ends after ~1 s, the grandchild (in a session of its own) after ~2.5 s: until
    // then, nothing starts attempt 2 and the claim stays where it is.
    let mut step_ended = false;
    while pid_alive(grandchild) {
        step_ended |= lines(&ws, EXEC_LOG)
            .iter()
            .any(|l| l.starts_with("end t 1 "));
        assert_eq!(
            execution_starts(&ws),
            1,
            "attempt 2 started while attempt 1's grandchild still ran\n{}",
            procs.logs()
        );
        assert!(
            ws.exists("running/r/t/task"),
            "the claim left running/ early"
        );
        assert!(
            queued(&ws, "r").is_empty(),
            "requeued while its tree still ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(step_ended, "the step did not end before its grandchild");
    wait_until("attempt 2 to finish", Duration::from_secs(15), || {
        entries(&ws, "processed").len() == 1
    });
    let gone: u128 = lines(&ws, "grandchild.log")[0]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let start2: u128 = lines(&ws, EXEC_LOG)
        .iter()
        .find_map(|l| l.strip_prefix("start t 2 "))
        .expect("attempt 2 started")
        .parse()
        .unwrap();
    assert!(
        start2 >= gone,
        "attempt 2 started at {start2}, the grandchild ended at {gone}"
    );
    let report = check(
        ws.path(),
        &BTreeSet::from(["t".to_string()]),
        &BTreeSet::new(),
    );
    report.assert_passes();
    assert_eq!(report.max_attempt, 2, "{}", report.full());
}

/// A worker stopped (SIGSTOP) past its `hung_after_sec` while its task runs: another worker's
/// recovery kills the hung holder and its step, requeues the task and runs it as attempt 2; the
/// stopped attempt's step never runs at the same time as attempt 2.
#[test]
fn a_sigstopped_worker_past_its_heartbeat_is_killed_and_its_task_rerun_never_concurrently() {
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "hung_after_sec: 1\nmax_attempts: 3\nsettle_ms: 0\n",
        &recording_workflow(r#"if [ "$att" = 1 ]; then sleep 30; fi"#),
    );
    let mut procs = Agents::new(&ws);
    let first = procs.spawn(&ws, "r", &["-q"], &[]);
    let (ack, _, stderr) = enqueue(&ws, "r", "t", &[]);
    assert!(ack.is_some(), "{stderr}");
    wait_until("attempt 1 to start", Duration::from_secs(10), || {
        execution_starts(&ws) == 1
    });
    procs.signal(first, "STOP");
    procs.spawn(&ws, "r", &["-q"], &[]);
    wait_until("attempt 2 to finish", Duration::from_secs(20), || {
        entries(&ws, "processed").len() == 1
    });
    // The hung worker was killed, not left stopped forever.
    let status = procs.wait(first, Duration::from_secs(5));
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let report = check(
        ws.path(),
        &BTreeSet::from(["t".to_string()]),
        &BTreeSet::new(),
    );
    report.assert_passes();
    assert_eq!(report.never_ended, 1, "{}", report.full());
    assert_eq!(report.max_attempt, 2, "{}", report.full());
}

// ---------------------------------------------------------------------------------------------
// inotify overflow

const MAX_QUEUED_EVENTS: &str = "/proc/sys/fs/inotify/max_queued_events";

/// Puts a sysctl back on drop.
struct Restore(&'static str, String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0, &self.1);
    }
}

/// More tasks than the watcher's event queue holds arrive while the role process is stopped
/// (SIGSTOP): the queue overflows, the watcher asks for a rescan, and every task is processed.
/// The limit is global and root-only: when it is writable it is lowered only while the role
/// process creates its watcher (an inotify instance keeps the limit it was created with), then
/// put back; otherwise the test creates more tasks than the current limit, or skips.
#[test]
fn inotify_overflow_while_the_role_process_is_stopped_loses_no_task() {
    let Ok(current) = std::fs::read_to_string(MAX_QUEUED_EVENTS) else {
        return skip_or_fail(&format!("{MAX_QUEUED_EVENTS} is not readable"));
    };
    let current = current.trim().to_string();
    let lowered = std::fs::write(MAX_QUEUED_EVENTS, "64").is_ok();
    let restore = lowered.then(|| Restore(MAX_QUEUED_EVENTS, current.clone()));
    let limit: usize = if lowered {
        64
    } else {
        current.parse().unwrap_or(usize::MAX)
    };
    if limit > 20_000 {
        return skip_or_fail(&format!(
            "max_queued_events is {current} and cannot be lowered (not root?)"
        ));
    }
    let tasks = limit * 3 + 10;
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "concurrency: 4\nsettle_ms: 0\n",
        &recording_workflow(""),
    );
    let mut procs = Agents::new(&ws);
    let agent = procs.spawn(&ws, "r", &[], &[]);
    wait_until(
        "the role process to watch its inbox",
        Duration::from_secs(10),
        || procs.log(agent).contains("watching"),
    );
    drop(restore);
    procs.signal(agent, "STOP");
    let dir = ws.join("inbox/r");
    let mut accepted = BTreeSet::new();
    for i in 0..tasks {
        let id = format!("t{i:05}");
        std::fs::write(dir.join(format!("{id}.tmp")), &id).unwrap();
        std::fs::rename(
            dir.join(format!("{id}.tmp")),
            dir.join(format!("{id}.task")),
        )
        .unwrap();
        accepted.insert(id);
    }
    procs.signal(agent, "CONT");
    let resumed = Instant::now();
    wait_until(
        "every task to be processed",
        Duration::from_secs(60),
        || std::fs::read_dir(ws.join("processed")).map_or(0, |d| d.count()) >= tasks,
    );
    let elapsed = resumed.elapsed();
    let log = procs.log(agent);
    eprintln!(
        "inotify overflow: {tasks} tasks over a queue of {limit} events, all processed {elapsed:?} after SIGCONT"
    );
    if lowered {
        assert!(
            log.contains("watcher asked for a rescan"),
            "no overflow seen with {tasks} events over a limit of {limit}:\n{log}"
        );
    }
    check(ws.path(), &accepted, &BTreeSet::new()).assert_passes();
}

// ---------------------------------------------------------------------------------------------
// Disk full

/// A small tmpfs mounted over a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem of `dir` with `dir/filler` until a write fails with ENOSPC.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(err) => panic!("filling the disk: {err}"),
        }
    }
    // Page by page, the last few bytes too.
    while file.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
}

/// On a full disk (a tiny tmpfs; skipped where it cannot be mounted): `enqueue` fails with a
/// clear error and exit != 0 and leaves no task behind; a task whose status write fails stays
/// claimed (not lost) and is finished once space is freed; a standalone run whose state write
/// fails leaves the previous state.json whole, and resumes once space is freed.
#[test]
fn a_full_disk_fails_writes_cleanly_and_loses_no_task() {
    let ws = Ws::new();
    let _mount = match Tmpfs::mount(ws.path(), "2m") {
        Ok(mount) => mount,
        Err(why) => {
            return skip_or_fail(&format!(
                "cannot mount a small tmpfs for the disk-full test: {why}"
            ));
        }
    };
    // The executions log lives off the small disk, so that the checker sees every line.
    let records = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(records.path().join("exec.log"), ws.join(EXEC_LOG)).unwrap();
    std::os::unix::fs::symlink(records.path(), ws.join("exec.pids")).unwrap();
    role(
        &ws,
        "r",
        "max_attempts: 5\nsettle_ms: 0\n",
        &recording_workflow("while [ ! -e go ]; do sleep 0.02; done"),
    );
    let mut procs = Agents::new(&ws);
    let agent = procs.spawn(&ws, "r", &[], &[]);
    let (ack, _, stderr) = enqueue(&ws, "r", "a", &[]);
    assert!(ack.is_some(), "{stderr}");
    wait_until("task a to start", Duration::from_secs(10), || {
        execution_starts(&ws) == 1
    });
    fill(ws.path());

    // No false acknowledgement, nothing half-written.
    let (ack, status, stderr) = enqueue(&ws, "r", "b", &[]);
    assert!(
        ack.is_none() && !status.success(),
        "enqueue on a full disk: {status:?} {stderr}"
    );
    assert!(
        stderr.contains("No space left on device") && stderr.starts_with("error: failed to"),
        "unclear error: {stderr}"
    );
    assert!(
        !queued(&ws, "r").contains(&"b.task".to_string()) && !ws.exists("inbox/r/b.tmp"),
        "a partial task was left: {:?}",
        entries(&ws, "inbox/r")
    );

    // Task a's workflow ends now, and its status cannot be written.
    std::fs::write(ws.join("go"), "").unwrap();
    wait_until("task a's attempt to end", Duration::from_secs(10), || {
        lines(&ws, EXEC_LOG)
            .iter()
            .any(|l| l.starts_with("end a 1 "))
    });
    wait_until(
        "the failed finish to be reported",
        Duration::from_secs(10),
        || procs.log(agent).contains("failed to finish"),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        entries(&ws, "processed").is_empty() && ws.exists("running/r/a/task"),
        "task a is not where a failed finish leaves it: processed {:?}, running {:?}\n{}",
        entries(&ws, "processed"),
        entries(&ws, "running/r"),
        procs.logs()
    );

    // Space comes back: a is finished (its status written and moved, or attempted again).
    std::fs::remove_file(ws.join("filler")).unwrap();
    let (ack, _, stderr) = enqueue(&ws, "r", "b", &[]);
    assert!(ack.is_some(), "{stderr}");
    wait_until("a and b to be processed", Duration::from_secs(20), || {
        entries(&ws, "processed").len() == 2
    });
    let ids = BTreeSet::from(["a".to_string(), "b".to_string()]);
    check(ws.path(), &ids, &BTreeSet::new()).assert_passes();
    procs.signal(agent, "TERM");
    procs.wait(agent, Duration::from_secs(10));

    // A standalone run: the state snapshot fails to be written when the disk fills mid-run.
    ws.workflow(
        "name: full\nsteps:\n  - name: one\n    command: [\"true\"]\n  - name: fill\n    command: [\"sh\", \"-c\", \"head -c 10M /dev/zero > filler; exit 0\"]\n  - name: three\n    command: [\"true\"]\n  - name: four\n    command: [\"true\"]\n",
    );
    let run = ws.run_wf(&[]);
    eprintln!(
        "standalone run on a full disk: exit {}\n{}",
        run.code, run.stderr
    );
    let run_id = run.id().to_string();
    let state_path = ws.run_dir(&run_id).join("state.json");
    if state_path.exists() {
        let text = std::fs::read_to_string(&state_path).unwrap();
        serde_json::from_str::<Value>(&text)
            .unwrap_or_else(|e| panic!("state.json is torn ({e}): {text:?}"));
    }
    assert!(
        !std::fs::read_dir(ws.run_dir(&run_id))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp")),
        "a temp file was left in the run's directory"
    );
    std::fs::remove_file(ws.join("filler")).unwrap();
    if run.code != 0 {
        ws.run(&["resume", &run_id]).ok();
    }
    assert_eq!(
        ws.state(&run_id)["status"],
        "succeeded",
        "{:#}",
        ws.state(&run_id)
    );
}

// ---------------------------------------------------------------------------------------------
// The soak (`scripts/chaos-soak`): its workspace and its check

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var(name).unwrap_or_else(|_| panic!("set {name} (scripts/chaos-soak does)")),
    )
}

/// Lays out the soak's roles in `CHAOS_WS`: `CHAOS_ROLES` independent roles `r1..`, each with
/// `CHAOS_REPLICAS` replicas of concurrency 2 and the recording workflow around a short random
/// sleep. Run by `scripts/chaos-soak`.
#[test]
#[ignore = "run by scripts/chaos-soak"]
fn soak_lay_out_a_workspace() {
    let ws = env_path("CHAOS_WS");
    let count = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (roles, replicas) = (count("CHAOS_ROLES", 4), count("CHAOS_REPLICAS", 2));
    let workflow = recording_workflow("sleep 0.$((RANDOM % 20))");
    for n in 1..=roles {
        let write = |rel: String, text: &str| {
            let path = ws.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            format!("agents/r{n}.yaml"),
            &format!(
                "workflow: workflows/r{n}.yaml\nconcurrency: 2\nreplicas: {replicas}\nmax_attempts: 20\nsettle_ms: 0\nhung_after_sec: 2\n"
            ),
        );
        write(format!("workflows/r{n}.yaml"), &workflow);
    }
}

/// Runs the checker on `CHAOS_WS` with the acknowledged ids in the file `CHAOS_ACCEPTED` and the
/// unacknowledged ones in `CHAOS_MAYBE` (one a line); prints the report's figures as
/// `chaos report: ...`. Run by `scripts/chaos-soak --check`.
#[test]
#[ignore = "run by scripts/chaos-soak"]
fn check_a_soaked_workspace() {
    let ws = env_path("CHAOS_WS");
    let ids = |name: &str| -> BTreeSet<String> {
        std::env::var(name)
            .ok()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    let report = check(&ws, &ids("CHAOS_ACCEPTED"), &ids("CHAOS_MAYBE"));
    println!(
        "chaos report: lost={} duplicates={} concurrent={} over_attempts={} unexpected={} max_executions_per_id={} executions={} never_ended={} terminal={} processed={} failed={} accepted={} max_attempt={}",
        report.lost.len(),
        report.duplicates.len(),
        report.concurrent.len(),
        report.over_attempts.len(),
        report.unexpected.len(),
        report.max_executions_per_id,
        report.executions,
        report.never_ended,
        report.terminal_records,
        report.processed,
        report.failed,
        report.accepted,
        report.max_attempt
    );
    println!("{}", report.full());
    report.assert_passes();
}
