//! The swarm's role process (`orchestrate agent`) and the queue commands (`init`, `enqueue`,
//! `tasks`, `show`, `retry`, `trace`) against real processes and files: hand-dropped and
//! enqueued tasks, replicas racing on one inbox, workers killed mid-task, poison tasks, graceful
//! stop, quarantine of bad input, and the records a finished task leaves behind.

#[allow(unused_imports)]
use crate::harness::*;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Number of entries of a directory (cheap enough to poll on a 2,000-entry directory).
fn count(ws: &Ws, rel: &str) -> usize {
    std::fs::read_dir(ws.join(rel))
        .map(|it| it.count())
        .unwrap_or(0)
}

/// The one `processed/` or `failed/` entry of task `id` of `role`, as a workspace-relative path.
fn entry_of(ws: &Ws, parent: &str, role: &str, id: &str) -> String {
    let suffix = format!("_{role}_{id}");
    let found: Vec<String> = entries(ws, parent)
        .into_iter()
        .filter(|n| n.ends_with(&suffix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {parent}/ entry for {role}/{id}, found {found:?}; {parent}/ holds {:?}",
        entries(ws, parent)
    );
    format!("{parent}/{}", found[0])
}

/// Drops a task the documented way: write `<name>.tmp`, then rename it to `<name>.task`. With
/// `old`, the file's mtime is set an hour back, so a settle window never delays it.
fn drop_task(ws: &Ws, role: &str, name: &str, content: &str, old: bool) {
    let dir = ws.join(&format!("inbox/{role}"));
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    if old {
        let file = std::fs::File::options().write(true).open(&tmp).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
    }
    std::fs::rename(&tmp, dir.join(format!("{name}.task"))).unwrap();
}

/// Polls `cond` every `every` until it holds or `timeout` passes (then panics with `what` and
/// the output of `explain`).
fn wait_for(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
    explain: impl Fn() -> String,
) {
    let timeout = patient(timeout);
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            explain()
        );
        std::thread::sleep(every);
    }
}

fn assert_success(status: ExitStatus, agents: &Agents) {
    assert!(
        status.success(),
        "agent exited with {status:?}\n{}",
        agents.logs()
    );
}

/// A step that copies the task it sees into `seen/<id>` and appends its id to `seen.log`.
const RECORDING_WORKFLOW: &str = r#"
steps:
  - name: Record
    command:
      - bash
      - -c
      - 'mkdir -p seen && cat "$1" > "seen/$2" && echo "$2" >> seen.log'
      - record
      - ${task.path}
      - ${task.id}
"#;

/// Whether the recording step finished for task `id` (its `seen/<id>` copy is complete).
// ---------------------------------------------------------------------------------------------
// Tasks dropped by hand

#[test]
fn task_written_in_place_in_two_writes_is_never_dispatched_half_written() {
    let ws = Ws::new();
    role(&ws, "r", "settle_ms: 1500\n", RECORDING_WORKFLOW);
    let mut agents = Agents::new(&ws);
    agents.start(&ws, "r", &[]);
    // Once the probe is processed, the agent's watch is registered (it watches, then lists).
    drop_task(&ws, "r", "probe", "probe\n", true);
    wait_until("the probe to be processed", Duration::from_secs(10), || {
        seen(&ws, "probe")
    });

    // `cat > inbox/r/x.task`, written in two parts with a pause shorter than the settle window.
    let mut cat = Command::new("bash")
        .arg("-c")
        .arg("cat > inbox/r/x.task")
        .current_dir(ws.path())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = cat.stdin.take().unwrap();
    stdin.write_all(b"part one\n").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        !ws.exists("seen/x"),
        "x.task was dispatched while still being written: the workflow saw {:?}",
        std::fs::read_to_string(ws.join("seen/x")).unwrap_or_default()
    );
    stdin.write_all(b"part two\n").unwrap();
    drop(stdin);
    assert!(cat.wait().unwrap().success());
    wait_until("x.task to be processed", Duration::from_secs(10), || {
        seen(&ws, "x")
    });
    assert_eq!(
        ws.read("seen/x"),
        "part one\npart two\n",
        "the workflow saw a half-written task"
    );
    wait_until("x.task to reach processed/", Duration::from_secs(5), || {
        entries(&ws, "processed")
            .iter()
            .any(|n| n.ends_with("_r_x"))
    });
    assert_eq!(
        ws.read(&format!("{}/task", entry_of(&ws, "processed", "r", "x"))),
        "part one\npart two\n"
    );

    // The documented way: write x2.tmp (slowly), then `mv` it to x2.task.
    let mut cat = Command::new("bash")
        .arg("-c")
        .arg("cat > inbox/r/x2.tmp")
        .current_dir(ws.path())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = cat.stdin.take().unwrap();
    stdin.write_all(b"first half\n").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"second half\n").unwrap();
    drop(stdin);
    assert!(cat.wait().unwrap().success());
    // Longer than the settle window: a .tmp file is never taken, however still it is.
    std::thread::sleep(Duration::from_millis(1800));
    assert!(!ws.exists("seen/x2"), "x2.tmp was dispatched");
    assert_eq!(
        ws.read("inbox/r/x2.tmp"),
        "first half\nsecond half\n",
        "x2.tmp was moved or changed"
    );
    let mv = Command::new("mv")
        .args(["inbox/r/x2.tmp", "inbox/r/x2.task"])
        .current_dir(ws.path())
        .status()
        .unwrap();
    assert!(mv.success());
    wait_until("x2.task to be processed", Duration::from_secs(5), || {
        seen(&ws, "x2")
    });
    assert_eq!(ws.read("seen/x2"), "first half\nsecond half\n");
    assert_eq!(lines(&ws, "seen.log"), ["probe", "x", "x2"]);
}

#[test]
fn tmp_files_and_dotfiles_in_the_inbox_are_never_dispatched_nor_moved() {
    let ws = Ws::new();
    role(&ws, "r", "settle_ms: 50\n", RECORDING_WORKFLOW);
    // Present before the role starts, and more dropped while it runs.
    let leave = [
        ("a.tmp", "tmp before"),
        (".hidden.task", "dot task before"),
        (".dotfile", "dotfile before"),
    ];
    for (name, content) in leave {
        ws.file(&format!("inbox/r/{name}"), content);
    }
    drop_task(&ws, "r", "before", "before\n", true);
    let mut agents = Agents::new(&ws);
    agents.start(&ws, "r", &[]);
    wait_until("the task present at start", Duration::from_secs(10), || {
        seen(&ws, "before")
    });
    let later = [
        ("b.tmp", "tmp later"),
        (".later.task", "dot task later"),
        (".later.tmp", "dot tmp later"),
    ];
    for (name, content) in later {
        ws.file(&format!("inbox/r/{name}"), content);
    }
    drop_task(&ws, "r", "after", "after\n", false);
    wait_until(
        "the task dropped while running",
        Duration::from_secs(10),
        || {
            entries(&ws, "processed")
                .iter()
                .any(|n| n.ends_with("_r_after"))
        },
    );
    // The agent lists its inbox again every 2 s when idle: give it one full rescan.
    std::thread::sleep(Duration::from_millis(2300));
    for (name, content) in leave.iter().chain(later.iter()) {
        assert_eq!(
            std::fs::read_to_string(ws.join(&format!("inbox/r/{name}")))
                .ok()
                .as_deref(),
            Some(*content),
            "inbox/r/{name} was moved or changed"
        );
    }
    assert_eq!(lines(&ws, "seen.log"), ["before", "after"]);
    assert!(
        entries(&ws, "failed").is_empty(),
        "failed/: {:?}",
        entries(&ws, "failed")
    );
}

// ---------------------------------------------------------------------------------------------
// `orchestrate enqueue`

#[test]
fn enqueue_text_file_and_stdin_are_processed_by_a_role_started_later() {
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "settle_ms: 50\nconcurrency: 2\n",
        RECORDING_WORKFLOW,
    );
    ws.file("input.txt", "from a file\n");

    let out = ws.run(&["enqueue", "r", "--text", "from text", "--name", "t-text"]);
    out.ok();
    assert_eq!(out.stdout.trim(), "inbox/r/t-text.task");
    ws.run(&["enqueue", "r", "--file", "input.txt", "--name", "t-file"])
        .ok();
    let mut child = ws
        .cmd(&["enqueue", "r", "-", "--name", "t-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\nline 2\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // Without --name: a new time-ordered id.
    let out = ws.run(&["enqueue", "r", "--text", "anonymous"]);
    out.ok();
    let anon_path = out.stdout.trim().to_string();
    let anon = anon_path
        .strip_prefix("inbox/r/")
        .and_then(|s| s.strip_suffix(".task"))
        .unwrap_or_else(|| panic!("enqueue printed {anon_path:?}"))
        .to_string();
    assert_eq!(ws.read(&anon_path), "anonymous");
    assert_eq!(sidecar(&ws, "r", &anon)["correlation_id"], anon.as_str());
    assert_eq!(sidecar(&ws, "r", "t-text")["attempts"], 0);
    assert_eq!(queued(&ws, "r").len(), 4);
    // No temporary file is left behind.
    assert_eq!(
        entries(&ws, "inbox/r").len(),
        4,
        "{:?}",
        entries(&ws, "inbox/r")
    );

    let mut agents = Agents::new(&ws);
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(20));
    assert_success(status, &agents);
    assert_eq!(ws.read("seen/t-text"), "from text");
    assert_eq!(ws.read("seen/t-file"), "from a file\n");
    assert_eq!(ws.read("seen/t-stdin"), "from stdin\nline 2\n");
    assert_eq!(ws.read(&format!("seen/{anon}")), "anonymous");
    assert_eq!(
        count(&ws, "processed"),
        4,
        "{:?}",
        entries(&ws, "processed")
    );
    assert!(queued(&ws, "r").is_empty());
    assert!(entries(&ws, "running/r").is_empty());
    // Sidecars are dropped once a task is finished.
    assert!(
        entries(&ws, ".orchestrate/queue/r")
            .iter()
            .all(|n| n.starts_with('.')),
        "{:?}",
        entries(&ws, ".orchestrate/queue/r")
    );
}

#[test]
fn enqueue_rejects_bad_names_and_existing_names_without_overwriting() {
    let ws = Ws::new();
    role(&ws, "r", "", RECORDING_WORKFLOW);
    let long = "n".repeat(201);
    for bad in [
        "a b",
        ".hidden",
        "../escape",
        "x/y",
        "$(id)",
        "new\nline",
        "",
        long.as_str(),
    ] {
        let out = ws.run(&["enqueue", "r", "--text", "x", "--name", bad]);
        out.code(2);
        assert!(
            out.stderr.contains("not a valid task name"),
            "name {bad:?}: {}",
            out.stderr
        );
    }
    assert!(
        entries(&ws, "inbox/r").is_empty(),
        "{:?}",
        entries(&ws, "inbox/r")
    );
    assert!(!ws.exists("inbox/escape.task"));
    assert!(!ws.exists("inbox/r/x"));

    ws.run(&["enqueue", "r", "--text", "first", "--name", "dup"])
        .ok();
    let before = ws.read(".orchestrate/queue/r/dup.json");
    let out = ws.run(&["enqueue", "r", "--text", "second", "--name", "dup"]);
    out.code(2).stderr_has("already queued");
    assert_eq!(ws.read("inbox/r/dup.task"), "first");
    assert_eq!(entries(&ws, "inbox/r"), ["dup.task"]);
    assert_eq!(
        ws.read(".orchestrate/queue/r/dup.json"),
        before,
        "the sidecar of the queued task was overwritten"
    );

    // Over the 16 MiB limit.
    assert!(
        Command::new("truncate")
            .args(["-s", "17M"])
            .arg(ws.join("big.bin"))
            .status()
            .unwrap()
            .success()
    );
    ws.run(&["enqueue", "r", "--file", "big.bin", "--name", "big"])
        .code(2)
        .stderr_has("limit");
    assert_eq!(entries(&ws, "inbox/r"), ["dup.task"]);

    // An unknown role is refused rather than filling an inbox nobody reads.
    ws.run(&["enqueue", "nobody", "--text", "x"]).code(2);
    assert!(!ws.exists("inbox/nobody"));
}

// ---------------------------------------------------------------------------------------------
// Replicas racing

#[test]
fn four_agents_race_on_2000_tasks_each_processed_exactly_once() {
    const TASKS: usize = 2000;
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "concurrency: 4\nsettle_ms: 50\n",
        r#"
steps:
  - name: Log
    command: ["sh", "-c", "echo \"$1\" >> shared.log", "log", "${task.id}"]
"#,
    );
    let started = Instant::now();
    // Half present before the agents start, half dropped while they run.
    for i in 0..TASKS / 2 {
        drop_task(&ws, "r", &format!("t{i:04}"), &format!("task {i}\n"), false);
    }
    let mut agents = Agents::new(&ws);
    for _ in 0..4 {
        agents.start(&ws, "r", &[]);
    }
    for i in TASKS / 2..TASKS {
        drop_task(&ws, "r", &format!("t{i:04}"), &format!("task {i}\n"), false);
    }
    wait_for(
        "2,000 entries in processed/",
        Duration::from_secs(120),
        Duration::from_millis(100),
        || count(&ws, "processed") >= TASKS,
        || {
            format!(
                "processed: {}, failed: {}, queued: {}, running: {}\n{}",
                count(&ws, "processed"),
                count(&ws, "failed"),
                queued(&ws, "r").len(),
                count(&ws, "running/r"),
                agents.logs()
            )
        },
    );
    let elapsed = started.elapsed();
    for n in 0..4 {
        agents.signal(n, "TERM");
    }
    for n in 0..4 {
        let status = agents.wait(n, Duration::from_secs(10));
        assert_success(status, &agents);
    }
    eprintln!("swarm race: {TASKS} tasks, 4 agents x concurrency 4: {elapsed:?}");

    let processed = entries(&ws, "processed");
    assert_eq!(processed.len(), TASKS);
    let ids: BTreeSet<String> = processed
        .iter()
        .map(|n| {
            n.split_once("_r_")
                .unwrap_or_else(|| panic!("processed/{n}"))
                .1
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), TASKS, "some task finished twice");
    let log = lines(&ws, "shared.log");
    let mut executions: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &log {
        *executions.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = executions.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "workflows executed more than once: {twice:?}"
    );
    assert_eq!(log.len(), TASKS, "workflow executions");
    assert_eq!(executions.len(), TASKS);
    assert!(
        entries(&ws, "failed").is_empty(),
        "{:?}",
        entries(&ws, "failed")
    );
    assert!(
        entries(&ws, "inbox/r").is_empty(),
        "{:?}",
        entries(&ws, "inbox/r")
    );
    assert!(
        entries(&ws, "running/r").is_empty(),
        "{:?}",
        entries(&ws, "running/r")
    );
    // Every agent took part (the work was shared, not serialized behind one replica).
    let workers: BTreeSet<u64> = processed
        .iter()
        .take(400)
        .map(|n| {
            json_file(&ws, &format!("processed/{n}/status.json"))["worker"]["pid"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(workers.len() >= 2, "only {workers:?} processed tasks");
}

// ---------------------------------------------------------------------------------------------
// Workers dying

/// An execution recorded by a step: `start|end ATTEMPT NANOS` lines in `exec.log`.
fn executions(ws: &Ws) -> Vec<(String, u32, u128)> {
    lines(ws, "exec.log")
        .iter()
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (
                parts[0].to_string(),
                parts[1].parse().unwrap(),
                parts[2].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn kill_9_of_an_agent_mid_task_keeps_it_locked_until_its_step_ends_then_it_is_retried() {
    let ws = Ws::new();
    // The step of attempt 1 outlives its agent by ~3 s (a sleep in the step's own process group).
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
        echo "$$" > "step-$1.pid"
        echo "start $1 $(date +%s%N)" >> exec.log
        if [ "$1" = 1 ]; then sleep 3; fi
        echo "end $1 $(date +%s%N)" >> exec.log
      - work
      - ${task.attempt}
"#,
    );
    let mut agents = Agents::new(&ws);
    let first = agents.start(&ws, "r", &[]);
    ws.run(&["enqueue", "r", "--text", "work", "--name", "t"])
        .ok();
    wait_until("attempt 1 to start", Duration::from_secs(10), || {
        ws.exists("step-1.pid") && !lines(&ws, "exec.log").is_empty()
    });
    let step: u32 = ws.read("step-1.pid").trim().parse().unwrap();
    agents.signal(first, "KILL");
    let status = agents.wait(first, Duration::from_secs(5));
    assert_eq!(status.signal(), Some(9));
    assert!(pid_alive(step), "the step died with its agent");

    let second = agents.start(&ws, "r", &[]);
    // While the step lives, the task stays claimed and nobody starts it again (the second agent
    // recovers at start and every 2 s).
    while pid_alive(step) {
        let exec = executions(&ws);
        assert_eq!(
            exec.iter().filter(|e| e.0 == "start").count(),
            1,
            "the task was started again while attempt 1's step still ran: {exec:?}\n{}",
            agents.logs()
        );
        assert!(
            queued(&ws, "r").is_empty(),
            "requeued while its step still ran"
        );
        assert!(
            ws.exists("running/r/t/task"),
            "the claim left running/ while its step ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for(
        "the task to be retried and processed",
        Duration::from_secs(15),
        Duration::from_millis(20),
        || {
            entries(&ws, "processed")
                .iter()
                .any(|n| n.ends_with("_r_t"))
        },
        || format!("exec: {:?}\n{}", executions(&ws), agents.logs()),
    );
    let exec = executions(&ws);
    let kinds: Vec<(&str, u32)> = exec.iter().map(|e| (e.0.as_str(), e.1)).collect();
    assert_eq!(
        kinds,
        [("start", 1), ("end", 1), ("start", 2), ("end", 2)],
        "executions: {exec:?}"
    );
    // Never two executions at once.
    assert!(
        exec[2].2 >= exec[1].2,
        "attempt 2 started before attempt 1 ended: {exec:?}"
    );
    let dir = entry_of(&ws, "processed", "r", "t");
    let status = json_file(&ws, &format!("{dir}/status.json"));
    assert_eq!(status["attempt"], 2, "{status:#}");
    assert_eq!(status["success"], true);
    assert_eq!(status["worker"]["pid"], agents.pid(second));
    let history = status["history"].to_string();
    assert!(history.contains("worker died"), "history: {history}");
    assert!(entries(&ws, "failed").is_empty());
    assert!(entries(&ws, "running/r").is_empty());
}

#[test]
fn poison_task_that_kills_its_worker_fails_after_max_attempts() {
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "max_attempts: 2\nsettle_ms: 50\n",
        r#"
steps:
  - name: Poison
    command:
      - bash
      - -c
      - 'echo "$$" > poison.pid; echo "$1" >> attempts.log; kill -9 $PPID'
      - poison
      - ${task.attempt}
"#,
    );
    ws.run(&["enqueue", "r", "--text", "poison", "--name", "p"])
        .ok();
    let mut agents = Agents::new(&ws);
    // The test plays the supervisor: restart the agent by hand after each death.
    for attempt in 1..=2u32 {
        let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(15));
        assert_eq!(
            status.signal(),
            Some(9),
            "attempt {attempt}: the agent was not killed by its task: {status:?}\n{}",
            agents.logs()
        );
        let step: u32 = ws.read("poison.pid").trim().parse().unwrap();
        wait_until("the poison step to exit", Duration::from_secs(5), || {
            !pid_alive(step)
        });
        assert_eq!(lines(&ws, "attempts.log").len(), attempt as usize);
    }
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(15));
    assert_success(status, &agents);
    assert_eq!(
        lines(&ws, "attempts.log"),
        ["1", "2"],
        "attempts seen by the workflow"
    );
    let dir = entry_of(&ws, "failed", "r", "p");
    let status = json_file(&ws, &format!("{dir}/status.json"));
    assert_eq!(status["success"], false);
    assert_eq!(status["schema"], "status/v1");
    assert_eq!(status["attempt"], 2);
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("worker died 2 time"), "message: {message}");
    assert_eq!(ws.read(&format!("{dir}/task")), "poison");
    assert!(entries(&ws, "processed").is_empty());
    assert!(queued(&ws, "r").is_empty());
    assert!(entries(&ws, "running/r").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Graceful stop

const SLOW_WORKFLOW: &str = r#"
steps:
  - name: Slow
    command:
      - bash
      - -c
      - |
        echo "$$" > "step-$1.pid"
        echo "start $1 $2" >> g.log
        if [ -e slow ]; then sleep 30; else sleep 1; fi
        echo "end $1 $2" >> g.log
      - slow
      - ${task.id}
      - ${task.attempt}
"#;

#[test]
fn sigterm_lets_the_task_in_flight_finish_within_the_grace_and_claims_nothing_new() {
    let ws = Ws::new();
    role(&ws, "r", "concurrency: 1\nsettle_ms: 50\n", SLOW_WORKFLOW);
    let mut agents = Agents::new(&ws);
    let agent = agents.start(&ws, "r", &["--grace", "20"]);
    ws.run(&["enqueue", "r", "--text", "one", "--name", "t1"])
        .ok();
    wait_until("t1 to start", Duration::from_secs(10), || {
        !lines(&ws, "g.log").is_empty()
    });
    ws.run(&["enqueue", "r", "--text", "two", "--name", "t2"])
        .ok();
    agents.signal(agent, "TERM");
    std::thread::sleep(Duration::from_millis(100));
    ws.run(&["enqueue", "r", "--text", "three", "--name", "t3"])
        .ok();
    let status = agents.wait(agent, Duration::from_secs(10));
    assert_success(status, &agents);
    assert_eq!(lines(&ws, "g.log"), ["start t1 1", "end t1 1"]);
    let dir = entry_of(&ws, "processed", "r", "t1");
    assert_eq!(
        json_file(&ws, &format!("{dir}/status.json"))["success"],
        true
    );
    assert_eq!(queued(&ws, "r"), ["t2.task", "t3.task"]);
    assert_eq!(sidecar(&ws, "r", "t2")["attempts"], 0);
    assert_eq!(sidecar(&ws, "r", "t3")["attempts"], 0);
    assert!(entries(&ws, "running/r").is_empty());
    assert!(entries(&ws, "failed").is_empty());
}

#[test]
fn sigterm_with_a_grace_shorter_than_the_task_puts_it_back_uncharged() {
    let ws = Ws::new();
    role(&ws, "r", "concurrency: 1\nsettle_ms: 50\n", SLOW_WORKFLOW);
    ws.file("slow", "");
    let mut agents = Agents::new(&ws);
    let agent = agents.start(&ws, "r", &["--grace", "0.3"]);
    ws.run(&["enqueue", "r", "--text", "long", "--name", "t"])
        .ok();
    wait_until("t to start", Duration::from_secs(10), || {
        !lines(&ws, "g.log").is_empty()
    });
    let step: u32 = ws.read("step-t.pid").trim().parse().unwrap();
    agents.signal(agent, "TERM");
    let status = agents.wait(agent, Duration::from_secs(10));
    assert_success(status, &agents);
    assert!(!pid_alive(step), "the step outlived the stopped agent");
    assert_eq!(lines(&ws, "g.log"), ["start t 1"]);
    assert_eq!(
        queued(&ws, "r"),
        ["t.task"],
        "the task is not back in the inbox"
    );
    assert_eq!(ws.read("inbox/r/t.task"), "long");
    let meta = sidecar(&ws, "r", "t");
    assert_eq!(
        meta["attempts"], 0,
        "the stopped attempt was charged: {meta:#}"
    );
    assert!(entries(&ws, "running/r").is_empty());
    assert!(entries(&ws, "processed").is_empty());
    assert!(entries(&ws, "failed").is_empty());

    // The next agent processes it, as a first attempt.
    std::fs::remove_file(ws.join("slow")).unwrap();
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(15));
    assert_success(status, &agents);
    assert_eq!(lines(&ws, "g.log"), ["start t 1", "start t 1", "end t 1"]);
    let dir = entry_of(&ws, "processed", "r", "t");
    let status = json_file(&ws, &format!("{dir}/status.json"));
    assert_eq!(status["attempt"], 1, "{status:#}");
    assert_eq!(status["success"], true);
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[test]
fn bad_inputs_are_quarantined_with_a_reason_and_nothing_outside_is_followed() {
    let ws = Ws::new();
    role(&ws, "r", "settle_ms: 50\n", RECORDING_WORKFLOW);
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "outside, do not touch\n").unwrap();
    let linked = outside.path().join("linked.txt");
    std::fs::write(&linked, "hard-linked, do not touch\n").unwrap();
    let passwd_before = std::fs::read("/etc/passwd").unwrap();
    let inbox = ws.join("inbox/r");
    std::fs::create_dir_all(&inbox).unwrap();

    std::os::unix::fs::symlink("/etc/passwd", inbox.join("evil.task")).unwrap();
    std::os::unix::fs::symlink(&secret, inbox.join("evil2.task")).unwrap();
    let ok = |c: &mut Command| assert!(c.current_dir(&inbox).status().unwrap().success());
    ok(Command::new("mkfifo").arg("fifo.task"));
    // Hard links: to a file outside the workspace (same filesystem) and to one inside.
    let hard_outside = std::fs::hard_link(&linked, inbox.join("hard.task")).is_ok();
    ws.file("inside.txt", "inside\n");
    ok(Command::new("ln").args(["../../inside.txt", "hard2.task"]));
    std::fs::create_dir(inbox.join("d.task")).unwrap();
    std::fs::write(inbox.join("d.task/inner"), "inner").unwrap();
    ok(Command::new("truncate").args(["-s", "17M", "big.task"]));
    std::fs::write(inbox.join("locked.task"), "unreadable\n").unwrap();
    std::fs::set_permissions(
        inbox.join("locked.task"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let long_name = format!("{}.task", "x".repeat(245));
    assert_eq!(long_name.len(), 250);
    let odd = [
        "a b.task",
        "$(id).task",
        "new\nline.task",
        long_name.as_str(),
    ];
    for name in odd {
        std::fs::write(inbox.join(name), "odd\n").unwrap();
    }
    // Never touched: temporary files and dotfiles.
    ws.file("inbox/r/.hidden.task", "hidden");
    ws.file("inbox/r/partial.tmp", "partial");
    drop_task(&ws, "r", "good", "good\n", true);

    let mut agents = Agents::new(&ws);
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(20));
    assert_success(status, &agents);

    let root = running_as_root();
    // Quarantine reasons by original name.
    let mut reasons: BTreeMap<String, (String, String)> = BTreeMap::new();
    for name in entries(&ws, "failed") {
        let status = json_file(&ws, &format!("failed/{name}/status.json"));
        assert_eq!(status["schema"], "status/v1");
        assert_eq!(status["success"], false);
        assert_eq!(status["quarantined"], true, "failed/{name}: {status:#}");
        let original = status["original_name"].as_str().unwrap().to_string();
        let message = status["message"].as_str().unwrap().to_string();
        assert!(!message.is_empty());
        reasons.insert(original, (format!("failed/{name}"), message));
    }
    let mut expected: Vec<(&str, &str)> = vec![
        ("evil.task", "symbolic link"),
        ("evil2.task", "symbolic link"),
        ("fifo.task", "FIFO"),
        ("hard2.task", "hard link"),
        ("d.task", "directory"),
        ("big.task", "over the"),
        ("a b.task", "not allowed"),
        ("$(id).task", "not allowed"),
        ("new\nline.task", "not allowed"),
        (long_name.as_str(), "not allowed"),
    ];
    if hard_outside {
        expected.push(("hard.task", "hard link"));
    }
    if root {
        eprintln!(
            "note: running as root, which can read a chmod 000 file: the unreadable-task assertion is skipped"
        );
    } else {
        expected.push(("locked.task", "unreadable"));
    }
    for (name, reason) in &expected {
        let Some((dir, message)) = reasons.get(*name) else {
            panic!(
                "{name:?} was not quarantined; failed/ holds {:?}; processed/ holds {:?}; inbox holds {:?}\n{}",
                reasons.keys().collect::<Vec<_>>(),
                entries(&ws, "processed"),
                entries(&ws, "inbox/r"),
                agents.logs()
            )
        };
        assert!(
            message.contains(reason),
            "{name:?}: reason {message:?} lacks {reason:?}"
        );
        // The bad input itself is kept, as it was (never followed, never read into a copy).
        let kept = std::fs::symlink_metadata(ws.join(&format!("{dir}/task")))
            .unwrap_or_else(|e| panic!("{dir}/task: {e}"));
        match *name {
            "evil.task" | "evil2.task" => assert!(kept.file_type().is_symlink()),
            "fifo.task" => assert!(kept.file_type().is_fifo()),
            "d.task" => assert!(kept.is_dir()),
            "big.task" => assert_eq!(kept.len(), 17 * 1024 * 1024),
            _ => {}
        }
    }
    assert_eq!(
        reasons.len(),
        expected.len(),
        "unexpected quarantines: {:?}",
        reasons.keys().collect::<Vec<_>>()
    );
    // Nothing outside the workspace was touched.
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd_before);
    assert!(std::fs::symlink_metadata("/etc/passwd").unwrap().is_file());
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "outside, do not touch\n"
    );
    assert_eq!(
        std::fs::read_to_string(&linked).unwrap(),
        "hard-linked, do not touch\n"
    );
    assert_eq!(ws.read("inside.txt"), "inside\n");
    // Only good tasks ran (and, as root, the chmod 000 one).
    let mut ran = lines(&ws, "seen.log");
    ran.sort();
    if root {
        assert_eq!(ran, ["good", "locked"]);
    } else {
        assert_eq!(ran, ["good"]);
    }
    assert_eq!(
        entries(&ws, "inbox/r"),
        [".hidden.task", "partial.tmp"],
        "temporary files and dotfiles stay; everything else left the inbox"
    );
    assert_eq!(ws.read("inbox/r/.hidden.task"), "hidden");
    assert_eq!(ws.read("inbox/r/partial.tmp"), "partial");
    assert!(entries(&ws, "running/r").is_empty());
}

/// Whether the tests run as root (root reads chmod 000 files).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// The example, the commands, and the records

#[test]
fn init_lays_down_the_three_role_example_that_runs_end_to_end_offline() {
    let ws = Ws::new();
    ws.run(&["init"]).ok();
    for path in [
        "agents/architect.yaml",
        "agents/engineer.yaml",
        "agents/qa.yaml",
        "workflows/architect.yaml",
        "workflows/engineer.yaml",
        "workflows/qa.yaml",
        "prompts/architect.md",
        "scripts/stand-in-agent",
        "inbox/architect",
        "inbox/engineer",
        "inbox/qa",
        "processed",
        "failed",
    ] {
        assert!(ws.exists(path), "init did not create {path}");
    }
    // A second init keeps what is there.
    ws.file("prompts/architect.md", "my own prompt\nWrite nothing.\n");
    ws.run(&["init"]).ok();
    assert_eq!(
        ws.read("prompts/architect.md"),
        "my own prompt\nWrite nothing.\n"
    );
    std::fs::remove_file(ws.join("prompts/architect.md")).unwrap();
    ws.run(&["init"]).ok();

    let out = ws.run(&["enqueue", "architect", "--text", "Design a rate limiter"]);
    out.ok();
    let id = out
        .stdout
        .trim()
        .strip_prefix("inbox/architect/")
        .and_then(|s| s.strip_suffix(".task"))
        .unwrap_or_else(|| panic!("enqueue printed {:?}", out.stdout))
        .to_string();
    let mut agents = Agents::new(&ws);
    for role in ["architect", "engineer", "qa"] {
        let status = agents.run(&ws, role, &["--once"], Duration::from_secs(30));
        assert_success(status, &agents);
        entry_of(&ws, "processed", role, &id);
    }
    let processed = entries(&ws, "processed");
    assert_eq!(processed.len(), 3, "{processed:?}");
    assert!(
        entries(&ws, "failed").is_empty(),
        "{:?}",
        entries(&ws, "failed")
    );
    for role in ["architect", "engineer", "qa"] {
        let dir = entry_of(&ws, "processed", role, &id);
        let status = json_file(&ws, &format!("{dir}/status.json"));
        assert_eq!(status["correlation_id"], id.as_str(), "{role}: {status:#}");
        assert_eq!(status["success"], true);
    }
    assert!(ws.exists(&format!("artifacts/architect/{id}/design.md")));
    assert!(ws.exists(&format!("artifacts/engineer/{id}/implementation.md")));
    assert!(ws.exists(&format!("artifacts/qa/{id}/review.md")));

    let trace = ws.run(&["trace", &id]);
    trace.ok();
    let roles: Vec<&str> = trace
        .stdout
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        roles,
        ["architect", "engineer", "qa"],
        "trace:\n{}",
        trace.stdout
    );
    assert!(
        trace.stdout.lines().all(|l| l.contains("processed")),
        "{}",
        trace.stdout
    );
    let json: Value = serde_json::from_str(&ws.run(&["trace", &id, "--json"]).stdout).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(3));

    let show = ws.run(&["show", &id]);
    show.ok()
        .stdout_has(&format!("task {id} (role architect): processed"))
        .stdout_has(&format!("task {id} (role qa): processed"))
        .stdout_has("result: success (exit 0)")
        .stdout_has(&format!("correlation_id: {id}"))
        .stdout_has(&format!("next: engineer inbox/engineer/{id}.task"));
    ws.run(&["show", "no-such-task"]).code(2);
}

#[test]
fn tasks_json_lists_failed_tasks_and_retry_requeues_them_with_attempts_reset() {
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "settle_ms: 50\n",
        r#"
steps:
  - name: Check
    command: ["bash", "-c", "echo \"$1\" >> attempts.log; test -e ok", "check", "${task.attempt}"]
"#,
    );
    ws.run(&[
        "enqueue",
        "r",
        "--text",
        "flaky",
        "--name",
        "t",
        "--correlation-id",
        "c-7",
    ])
    .ok();
    let mut agents = Agents::new(&ws);
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(15));
    assert_success(status, &agents);
    let failed_dir = entry_of(&ws, "failed", "r", "t");
    let status = json_file(&ws, &format!("{failed_dir}/status.json"));
    assert_eq!(status["success"], false);
    assert_eq!(status["exit_code"], 1);
    assert_eq!(status["correlation_id"], "c-7");

    let out = ws.run(&["tasks", "--state", "failed", "--json"]);
    out.ok();
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["role"], "r");
    assert_eq!(list[0]["id"], "t");
    assert_eq!(list[0]["state"], "failed");
    assert_eq!(list[0]["path"], failed_dir.as_str());
    let out = ws.run(&["tasks", "--state", "processed", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );

    let out = ws.run(&["retry", "t"]);
    out.ok();
    assert_eq!(out.stdout.trim(), "inbox/r/t.task");
    assert_eq!(ws.read("inbox/r/t.task"), "flaky");
    let meta = sidecar(&ws, "r", "t");
    assert_eq!(meta["attempts"], 0, "{meta:#}");
    assert_eq!(meta["correlation_id"], "c-7");
    // The failed record stays.
    assert!(ws.exists(&format!("{failed_dir}/status.json")));
    let out = ws.run(&["tasks", "r", "--state", "queued", "--json"]);
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list[0]["id"], "t", "{list:#}");

    ws.file("ok", "");
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(15));
    assert_success(status, &agents);
    let dir = entry_of(&ws, "processed", "r", "t");
    let status = json_file(&ws, &format!("{dir}/status.json"));
    assert_eq!(status["success"], true);
    assert_eq!(status["attempt"], 1);
    assert_eq!(status["correlation_id"], "c-7");
    assert_eq!(lines(&ws, "attempts.log"), ["1", "1"]);
    assert!(queued(&ws, "r").is_empty());
    // Retrying something that is not failed is refused.
    ws.run(&["retry", "nothing-here"]).code(2);
}

#[test]
fn task_variables_reach_the_workflow() {
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "settle_ms: 50\n",
        r#"
steps:
  - name: Vars
    command:
      - bash
      - -c
      - |
        printf '%s\n' "$@" > vars.out
        test -f "$4" && echo path-is-a-file >> vars.out
        cat "$4" >> vars.out
      - vars
      - ${task.json.x}
      - ${task.id}
      - ${task.name}
      - ${task.path}
      - ${task.correlation_id}
      - ${task.attempt}
      - ${task.json.n}
      - ${task.text}
"#,
    );
    let text = r#"{"x": "hello world", "n": 7}"#;
    ws.run(&[
        "enqueue",
        "r",
        "--name",
        "v1",
        "--correlation-id",
        "corr-9",
        "--text",
        text,
    ])
    .ok();
    let mut agents = Agents::new(&ws);
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(15));
    assert_success(status, &agents);
    entry_of(&ws, "processed", "r", "v1");
    assert_eq!(
        lines(&ws, "vars.out"),
        [
            "hello world",
            "v1",
            "v1.task",
            "running/r/v1/task",
            "corr-9",
            "1",
            "7",
            text,
            "path-is-a-file",
            text,
        ]
    );
}

#[test]
fn status_json_and_the_processed_directory_hold_the_full_record() {
    let ws = Ws::new();
    role(&ws, "s", "", RECORDING_WORKFLOW);
    role(
        &ws,
        "r",
        "settle_ms: 50\n",
        r#"
steps:
  - name: Say
    command: ["bash", "-c", "echo out-line-$1; echo err-line-$1 >&2", "say", "${task.id}"]
  - name: Hand
    enqueue:
      role: s
      name: "${task.id}-next"
      text: "next for ${task.id}"
"#,
    );
    ws.run(&[
        "enqueue",
        "r",
        "--text",
        "hello",
        "--name",
        "st1",
        "--correlation-id",
        "c-1",
    ])
    .ok();
    let mut agents = Agents::new(&ws);
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(15));
    assert_success(status, &agents);
    ws.run(&["enqueue", "r", "--text", "again", "--name", "st2"])
        .ok();
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(15));
    assert_success(status, &agents);

    let dir = entry_of(&ws, "processed", "r", "st1");
    let name = dir.strip_prefix("processed/").unwrap();
    let (ts, rest) = name.split_once('_').unwrap();
    assert_eq!(rest, "r_st1");
    // <UTC ts>: YYYYMMDDTHHMMSS.ffffffZ
    assert_eq!(ts.len(), 23, "{ts}");
    assert!(
        ts.chars().enumerate().all(|(i, c)| match i {
            8 => c == 'T',
            15 => c == '.',
            22 => c == 'Z',
            _ => c.is_ascii_digit(),
        }),
        "{ts}"
    );
    let status = json_file(&ws, &format!("{dir}/status.json"));
    assert_eq!(status["schema"], "status/v1");
    assert_eq!(status["correlation_id"], "c-1");
    assert_eq!(status["agent"], "r");
    assert_eq!(status["task"], "st1");
    assert_eq!(status["attempt"], 1);
    assert_eq!(status["success"], true);
    assert_eq!(status["exit_code"], 0);
    let run_id = status["run_id"].as_str().expect("run_id");
    assert!(!run_id.is_empty());
    assert_eq!(
        status["next_actions"],
        serde_json::json!([{"agent": "s", "file": "inbox/s/st1-next.task", "task": "st1-next"}])
    );
    for key in ["claimed_at", "started_at", "finished_at"] {
        assert!(
            status["timings"][key].is_string(),
            "timings.{key}: {status:#}"
        );
    }
    let finished = status["timings"]["finished_at"]
        .as_str()
        .unwrap()
        .replace(['-', ':'], "");
    assert!(
        ts >= finished.as_str(),
        "directory time {ts} is before finished_at {finished}"
    );
    // The enqueued task carries the correlation id.
    assert_eq!(ws.read("inbox/s/st1-next.task"), "next for st1");
    assert_eq!(sidecar(&ws, "s", "st1-next")["correlation_id"], "c-1");

    // The original task, status.json and the run's logs.
    assert_eq!(ws.read(&format!("{dir}/task")), "hello");
    let logs = entries(&ws, &format!("{dir}/logs"));
    let all: String = logs
        .iter()
        .map(|l| ws.read(&format!("{dir}/logs/{l}")))
        .collect();
    assert!(all.contains("out-line-st1"), "logs {logs:?}: {all:?}");
    assert!(all.contains("err-line-st1"), "logs {logs:?}: {all:?}");
    // A task's records are its event log and status.json: no state snapshot per task.
    assert!(!ws.exists(&format!("{dir}/state.json")));
    let events = ws.read(&format!("{dir}/events.jsonl"));
    let first: Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "run_started");
    assert_eq!(first["run_id"], run_id);

    // Names sort by time.
    let processed = entries(&ws, "processed");
    assert_eq!(processed.len(), 2);
    assert!(
        processed[0].ends_with("_r_st1") && processed[1].ends_with("_r_st2"),
        "{processed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Beyond the list: guarantees of PROTOCOL.md that the cases above do not reach

#[test]
fn enqueue_of_a_name_that_is_running_overwrites_nothing() {
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "concurrency: 1\nsettle_ms: 50\n",
        r#"
steps:
  - name: Work
    command:
      - bash
      - -c
      - 'echo "$1 $2 $3" >> runs.log; if [ "$3" = first ]; then sleep 1.5; fi'
      - work
      - ${task.correlation_id}
      - ${task.attempt}
      - ${task.text}
"#,
    );
    let mut agents = Agents::new(&ws);
    agents.start(&ws, "r", &[]);
    ws.run(&[
        "enqueue",
        "r",
        "--name",
        "t",
        "--text",
        "first",
        "--correlation-id",
        "c-old",
    ])
    .ok();
    wait_until("the first t to start", Duration::from_secs(10), || {
        !lines(&ws, "runs.log").is_empty()
    });
    // Same name while the first is running (not in the inbox any more).
    let again = ws.run(&[
        "enqueue",
        "r",
        "--name",
        "t",
        "--text",
        "second",
        "--correlation-id",
        "c-new",
    ]);
    let expected_runs = if again.code == 2 {
        // Refused: fine, as long as nothing was touched.
        assert!(queued(&ws, "r").is_empty());
        1
    } else {
        again.ok();
        2
    };
    wait_for(
        "every t to finish",
        Duration::from_secs(15),
        Duration::from_millis(20),
        || {
            entries(&ws, "processed").len() + entries(&ws, "failed").len() >= expected_runs
                && queued(&ws, "r").is_empty()
        },
        || agents.logs(),
    );
    let mut records: Vec<(String, String, u64)> = entries(&ws, "processed")
        .iter()
        .map(|n| {
            let status = json_file(&ws, &format!("processed/{n}/status.json"));
            (
                ws.read(&format!("processed/{n}/task")),
                status["correlation_id"].as_str().unwrap_or("").to_string(),
                status["attempt"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    records.sort();
    let mut expected = vec![("first".to_string(), "c-old".to_string(), 1)];
    if expected_runs == 2 {
        expected.push(("second".to_string(), "c-new".to_string(), 1));
    }
    assert_eq!(
        records,
        expected,
        "(task, correlation_id, attempt) of the records; runs: {:?}",
        lines(&ws, "runs.log")
    );
    assert!(
        entries(&ws, "failed").is_empty(),
        "{:?}",
        entries(&ws, "failed")
    );
}

/// Quarantines `inbox/r/<name>` made by `make`, then runs `orchestrate retry <id>` with a
/// 5-second limit; returns its output, or panics if it blocked.
fn quarantine_then_retry(ws: &Ws, id: &str, make: impl FnOnce(&Path)) -> std::process::Output {
    role(ws, "r", "settle_ms: 50\n", RECORDING_WORKFLOW);
    std::fs::create_dir_all(ws.join("inbox/r")).unwrap();
    make(&ws.join(&format!("inbox/r/{id}.task")));
    let mut agents = Agents::new(ws);
    let status = agents.run(ws, "r", &["--once"], Duration::from_secs(15));
    assert_success(status, &agents);
    entry_of(ws, "failed", "r", id);
    let mut child = ws
        .cmd(&["retry", id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A generous deadline: a retry that opened the FIFO would block for ever.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            signal_quiet("-KILL", &child.id().to_string());
            let _ = child.wait();
            panic!("`orchestrate retry {id}` blocked for 60 s on the quarantined task file");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn retry_of_a_quarantined_symlink_never_copies_what_it_points_to() {
    let ws = Ws::new();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "outside, do not copy\n").unwrap();
    let out = quarantine_then_retry(&ws, "evil", |path| {
        std::os::unix::fs::symlink(&secret, path).unwrap()
    });
    let said = format!(
        "retry said {:?}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Whatever retry decides (refuse, or queue the link itself to be quarantined again), it must
    // not copy the target, outside the workspace, into the inbox.
    for name in entries(&ws, "inbox/r") {
        let path = ws.join(&format!("inbox/r/{name}"));
        if std::fs::symlink_metadata(&path).unwrap().is_file() {
            let content = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                !content.contains("outside, do not copy"),
                "retry copied the target of a quarantined symlink (a file outside the workspace) into inbox/r/{name}; {said}"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "outside, do not copy\n"
    );
}

#[test]
fn retry_of_a_quarantined_fifo_does_not_block() {
    let ws = Ws::new();
    let out = quarantine_then_retry(&ws, "fifo", |path| {
        assert!(Command::new("mkfifo").arg(path).status().unwrap().success())
    });
    // Refusing is fine; hanging is not (checked by the helper).
    eprintln!("retry fifo: {out:?}");
    if out.status.success() {
        let queued = std::fs::symlink_metadata(ws.join("inbox/r/fifo.task")).unwrap();
        assert!(queued.is_file(), "retry queued a non-regular file");
    }
}

#[test]
fn a_hung_agent_is_stopped_with_its_step_and_the_task_retried() {
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "hung_after_sec: 1\nmax_attempts: 3\nsettle_ms: 50\n",
        r#"
steps:
  - name: Work
    command:
      - bash
      - -c
      - |
        echo "$$" > "step-$1.pid"
        if [ "$1" != 1 ]; then
          p=$(cat step-1.pid)
          if [ -e "/proc/$p" ] && ! grep -q ') Z' "/proc/$p/stat"; then echo "overlap $1" >> exec.log; fi
        fi
        echo "start $1 $(date +%s%N)" >> exec.log
        if [ "$1" = 1 ]; then sleep 30; fi
        echo "end $1 $(date +%s%N)" >> exec.log
      - work
      - ${task.attempt}
"#,
    );
    let mut agents = Agents::new(&ws);
    let first = agents.start(&ws, "r", &[]);
    ws.run(&["enqueue", "r", "--text", "work", "--name", "t"])
        .ok();
    wait_until("attempt 1 to start", Duration::from_secs(10), || {
        !lines(&ws, "exec.log").is_empty()
    });
    let step: u32 = ws.read("step-1.pid").trim().parse().unwrap();
    // Hung: alive, holding the task, no heartbeat.
    agents.signal(first, "STOP");
    agents.start(&ws, "r", &[]);
    wait_for(
        "the hung attempt to be stopped and the task retried",
        Duration::from_secs(15),
        Duration::from_millis(20),
        || {
            entries(&ws, "processed")
                .iter()
                .any(|n| n.ends_with("_r_t"))
        },
        || {
            format!(
                "hung agent alive: {}, its step alive: {}, running/r: {:?}, lease: {}\nexec: {:?}\n{}",
                pid_alive(agents.pid(first)),
                pid_alive(step),
                entries(&ws, "running/r"),
                std::fs::read_to_string(ws.join("running/r/t/lease.json")).unwrap_or_default(),
                lines(&ws, "exec.log"),
                agents.logs()
            )
        },
    );
    assert!(!pid_alive(step), "attempt 1's step still runs");
    let exec = lines(&ws, "exec.log");
    let kinds: Vec<&str> = exec
        .iter()
        .map(|l| l.rsplit_once(' ').map_or(l.as_str(), |p| p.0))
        .collect();
    assert_eq!(kinds, ["start 1", "start 2", "end 2"], "{exec:?}");
    let dir = entry_of(&ws, "processed", "r", "t");
    assert_eq!(json_file(&ws, &format!("{dir}/status.json"))["attempt"], 2);
}

/// A worker that died after its task's workflow ended leaves the task's directory in running/
/// with the status.json it was writing: complete (the move is finished for it) or torn (the
/// attempt counts as died, and the task runs again).
#[test]
fn recovery_finishes_a_written_status_and_reruns_a_torn_one() {
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "max_attempts: 3\n",
        "name: r\nsteps:\n  - name: Mark\n    command: [\"sh\", \"-c\", \"echo ran >> ran-$0\", \"${task.id}\"]\n",
    );
    // Two claims of a worker that is gone (pid 0 never names a live process).
    for (id, status) in [
        (
            "done",
            r#"{"schema": "status/v1", "task": "done", "success": true}"#,
        ),
        ("torn", r#"{"schema": "status/v1", "task": "to"#),
    ] {
        ws.file(&format!("running/r/{id}/task"), "x");
        ws.file(
            &format!("running/r/{id}/lease.json"),
            r#"{"format_version": 1, "role": "r", "id": "ID", "attempt": 1, "pid": 0,
                "pid_start": 0, "boot_id": "gone", "claimed_at": "", "heartbeat_at": ""}"#,
        );
        ws.file(&format!("running/r/{id}/status.json"), status);
    }
    let mut agents = Agents::new(&ws);
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(20));
    assert_success(status, &agents);

    // The complete one was only moved: its workflow did not run again.
    let done = entry_of(&ws, "processed", "r", "done");
    assert_eq!(
        json_file(&ws, &format!("{done}/status.json"))["success"],
        true
    );
    assert!(!ws.exists("ran-done"));
    // The torn one ran again as attempt 2 and has a whole status.json now.
    let torn = entry_of(&ws, "processed", "r", "torn");
    assert_eq!(ws.read("ran-torn"), "ran\n");
    let status = json_file(&ws, &format!("{torn}/status.json"));
    assert_eq!(status["success"], true);
    assert_eq!(status["attempt"], 2);
    assert!(entries(&ws, "running/r").is_empty());
}

/// A role's `capabilities:` remove what its workflow may do: a coordinator that may only hand
/// work on and ask people is refused a `command` step before anything starts.
#[test]
fn a_role_is_refused_a_workflow_with_steps_beyond_its_capabilities() {
    let ws = Ws::new();
    role(
        &ws,
        "coord",
        "capabilities: [enqueue, approval]\n",
        "name: coord\nsteps:\n  - name: Hand\n    enqueue: {role: dev, text: go}\n  - name: Build\n    command: [make]\n",
    );
    ws.run(&["enqueue", "coord", "--text", "x", "--name", "t1"])
        .ok();
    ws.run(&["agent", "coord", "--once"])
        .code(2)
        .stderr_has("workflows/coord.yaml:5")
        .stderr_has("step `Build` needs capability `command`, which role `coord` does not have (its capabilities: [enqueue, approval])")
        .stderr_has("add `command` to `capabilities`");
    // Nothing ran: the task is still queued.
    assert_eq!(queued(&ws, "coord"), ["t1.task"]);
    ws.run(&["validate", "agents/coord.yaml"])
        .code(2)
        .stderr_has("needs capability `command`");

    // A reviewer limited to reading: a readonly agent step is fine, a write step is not; an
    // unknown capability gets a did-you-mean.
    role(
        &ws,
        "rev",
        "capabilities: [readonly, enqueue]\n",
        "name: rev\nsteps:\n  - name: Read\n    prompt: look\n    runtime: claude\n  - name: Edit\n    prompt: change it\n    runtime: claude\n    phase: write\n",
    );
    let run = ws.run(&["validate", "agents/rev.yaml"]);
    run.code(2)
        .stderr_has("step `Edit` needs capability `write`");
    assert!(!run.stderr.contains("step `Read`"), "{}", run.stderr);
    role(
        &ws,
        "typo",
        "capabilities: [enqeue]\n",
        "name: typo\nsteps:\n  - name: A\n    enqueue: {role: dev, text: go}\n",
    );
    ws.run(&["validate", "agents/typo.yaml"])
        .code(2)
        .stderr_has("unknown capability `enqeue`")
        .stderr_has("did you mean `enqueue`?");
}

// ---------------------------------------------------------------------------------------------
// Bad input the quarantine test above does not cover

/// The quarantine reasons in `failed/`, by the task's original name.
fn quarantined(ws: &Ws) -> BTreeMap<String, String> {
    entries(ws, "failed")
        .into_iter()
        .filter_map(|name| {
            let status = json_file(ws, &format!("failed/{name}/status.json"));
            (status["quarantined"] == true).then(|| {
                (
                    status["original_name"].as_str().unwrap().to_string(),
                    status["message"].as_str().unwrap().to_string(),
                )
            })
        })
        .collect()
}

#[test]
fn odd_task_names_are_quarantined_or_run_safely_and_never_evaluated() {
    use std::os::unix::ffi::OsStrExt;
    let ws = Ws::new();
    role(&ws, "r", "settle_ms: 50\n", RECORDING_WORKFLOW);
    let inbox = ws.join("inbox/r");
    std::fs::create_dir_all(&inbox).unwrap();
    let longest = format!("{}.task", "y".repeat(250)); // 255 bytes: the most a name can have
    let odd: Vec<&[u8]> = vec![
        b"it's.task",
        b"say\"hi\".task",
        b"`touch pwned1`.task",
        b"$(touch pwned2).task",
        b"semi;touch pwned3.task",
        b"bad\xff\xfe.task",
        b"tab\there.task",
        longest.as_bytes(),
    ];
    for name in &odd {
        std::fs::write(inbox.join(std::ffi::OsStr::from_bytes(name)), "odd\n").unwrap();
    }
    // `..` inside a name is only dots: no separator can be in a file name, so it runs; a name
    // that starts with dots is a dotfile and is left alone.
    drop_task(&ws, "r", "a..b", "dots\n", true);
    ws.file("inbox/r/...task", "dotfile");
    drop_task(&ws, "r", "good", "good\n", true);

    let mut agents = Agents::new(&ws);
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(20));
    assert_success(status, &agents);

    let reasons = quarantined(&ws);
    for name in &odd {
        let shown = String::from_utf8_lossy(name).into_owned();
        let reason = reasons.get(&shown).unwrap_or_else(|| {
            panic!(
                "{shown:?} was not quarantined: {:?}\n{}",
                reasons.keys().collect::<Vec<_>>(),
                agents.logs()
            )
        });
        assert!(
            reason.contains("not allowed") || reason.contains("UTF-8"),
            "{shown:?}: {reason}"
        );
    }
    assert_eq!(reasons.len(), odd.len(), "{reasons:?}");
    let mut ran = lines(&ws, "seen.log");
    ran.sort();
    assert_eq!(ran, ["a..b", "good"]);
    assert_eq!(ws.read("seen/a..b"), "dots\n");
    entry_of(&ws, "processed", "r", "a..b");
    for pwned in ["pwned1", "pwned2", "pwned3"] {
        assert!(!ws.exists(pwned), "a task name was evaluated by a shell");
    }
    assert_eq!(entries(&ws, "inbox/r"), ["...task"]);

    // The same names through `enqueue` are refused with exit 2, naming the rule; so are `..`
    // and a 300-byte name (longer than any file name can be).
    let long = "z".repeat(300);
    let mut refused: Vec<std::ffi::OsString> = [
        "..",
        "a/../b",
        "it's",
        "say\"hi\"",
        "$(touch pwned4)",
        long.as_str(),
    ]
    .iter()
    .map(std::ffi::OsString::from)
    .collect();
    refused.push(std::ffi::OsStr::from_bytes(b"bad\xff").to_owned());
    for name in refused {
        let out = ws
            .cmd(&["enqueue", "r", "--text", "x", "--name"])
            .arg(&name)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name:?}: {stderr}");
        assert!(
            stderr.contains("task name") || stderr.contains("UTF-8") || stderr.contains("invalid"),
            "{name:?}: {stderr}"
        );
    }
    assert_eq!(entries(&ws, "inbox/r"), ["...task"]);
    assert!(!ws.exists("pwned4"));
}

#[test]
fn a_one_gigabyte_task_is_quarantined_by_its_size_without_being_read() {
    let ws = Ws::new();
    role(&ws, "r", "settle_ms: 50\n", RECORDING_WORKFLOW);
    std::fs::create_dir_all(ws.join("inbox/r")).unwrap();
    // Sparse: 1 GiB long, no data blocks; reading it would take seconds and a gigabyte.
    let file = std::fs::File::create(ws.join("inbox/r/huge.task")).unwrap();
    file.set_len(1 << 30).unwrap();
    drop(file);
    drop_task(&ws, "r", "good", "good\n", true);

    let (run, read) = ws.run_counting_reads(&["agent", "r", "--once"]);
    run.ok();
    let reasons = quarantined(&ws);
    let reason = reasons.get("huge.task").expect("huge.task quarantined");
    assert!(
        reason.contains("1073741824 bytes, over the 16777216-byte limit"),
        "{reason}"
    );
    let dir = entry_of(&ws, "failed", "r", "huge");
    assert_eq!(
        std::fs::metadata(ws.join(&format!("{dir}/task")))
            .unwrap()
            .len(),
        1 << 30,
        "the task is kept as it was"
    );
    assert_eq!(lines(&ws, "seen.log"), ["good"]);
    // Bounded by work, not time: the role process and its steps read a few megabytes at most.
    assert!(read < 64 << 20, "the role process read {read} bytes");

    // `enqueue --file` refuses it the same way, before reading it.
    let (out, read) = ws.run_counting_reads(&[
        "enqueue",
        "r",
        "--file",
        &format!("{dir}/task"),
        "--name",
        "again",
    ]);
    out.code(2).stderr_has("limit");
    assert!(entries(&ws, "inbox/r").is_empty());
    assert!(read < 1 << 20, "enqueue read {read} bytes");
}

#[test]
fn a_task_of_json_nested_100k_deep_fails_with_a_clear_error_and_the_role_goes_on() {
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "settle_ms: 50\nmax_attempts: 1\n",
        r#"
steps:
  - name: Use
    command: [bash, -c, 'echo "$1" >> used.log', use, '${task.json.0}']
"#,
    );
    let depth = 100_000;
    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    drop_task(&ws, "r", "deep", &deep, true);
    drop_task(&ws, "r", "shallow", "[\"fine\"]", true);
    let mut agents = Agents::new(&ws);
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(20));
    assert_success(status, &agents);
    assert_eq!(lines(&ws, "used.log"), ["fine"]);
    entry_of(&ws, "processed", "r", "shallow");
    let dir = entry_of(&ws, "failed", "r", "deep");
    let status = json_file(&ws, &format!("{dir}/status.json"));
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("${task.json.0}")
            && message.contains("Use")
            && message.contains("not JSON (or nests deeper than 128 levels)"),
        "{status:#}"
    );
    assert_eq!(
        ws.read(&format!("{dir}/task")),
        deep,
        "the task is kept whole"
    );
}

/// Every file under `rel` (symlinks not followed), recursively.
fn files_under(ws: &Ws, rel: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => walk(&path, out),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(&ws.join(rel), &mut out);
    out
}

const TOKEN: &str = "tok-9f8e7d6c5b4a";

/// Shows the secret every way a step can: stdout, stderr, captured output, an output file, the
/// text and the file of enqueued tasks, and the error of a failing step.
const LEAKY_WORKFLOW: &str = r#"
steps:
  - name: Show
    secrets: [MY_TOKEN]
    command: [bash, -c, 'echo "out=$MY_TOKEN"; echo "err=$MY_TOKEN" >&2; printf %s "$MY_TOKEN" > ${task.id}.secret']
  - name: Captured
    secrets: [MY_TOKEN]
    command: [bash, -c, 'printf "{\"token\": \"%s\"}" "$MY_TOKEN"']
    output_capture: json
  - name: ToFile
    secrets: [MY_TOKEN]
    command: [bash, -c, 'echo "file=$MY_TOKEN"']
    output_file: out/${task.id}.txt
  - name: SendText
    enqueue: {role: sink, text: 'text ${steps.Show.output} ${steps.Captured.json.token}'}
  - name: SendFile
    enqueue: {role: sink, file: '${task.id}.secret'}
  - name: Fail
    secrets: [MY_TOKEN]
    command: [bash, -c, 'echo "failing with $MY_TOKEN" >&2; echo "status $MY_TOKEN"; exit 3']
"#;

#[test]
fn a_secret_shown_every_way_reaches_no_file_under_the_queue_or_records() {
    let mut ws = Ws::new();
    ws.env("MY_TOKEN", TOKEN);
    role(
        &ws,
        "leaky",
        "settle_ms: 0\nmax_attempts: 1\n",
        LEAKY_WORKFLOW,
    );
    role(
        &ws,
        "sink",
        "settle_ms: 0\n",
        "steps:\n  - name: S\n    command: [\"true\"]\n",
    );
    ws.run(&["enqueue", "leaky", "--name", "t1", "--text", "{}"])
        .ok();
    let mut agents = Agents::new(&ws);
    let status = agents.run(&ws, "leaky", &["--once"], Duration::from_secs(20));
    assert_success(status, &agents);
    let dir = entry_of(&ws, "failed", "leaky", "t1");
    let task_status = json_file(&ws, &format!("{dir}/status.json"));
    assert_eq!(task_status["success"], false);
    assert_eq!(entries(&ws, "inbox/sink").len(), 2, "both enqueues ran");
    let status = agents.run(&ws, "sink", &["--once"], Duration::from_secs(20));
    assert_success(status, &agents);

    // The same workflow as a standalone run.
    ws.file("wf.yaml", &LEAKY_WORKFLOW.replace("${task.id}", "run"));
    let run = ws.run_wf(&[]);
    run.code(1);
    assert_eq!(ws.read("run.secret"), TOKEN, "the step did see the secret");

    let mut checked = 0;
    // `out/` is not checked: an `output_file` is the step's own stdout, written where the
    // workflow asked, as it asked.
    for rel in [".orchestrate", "processed", "failed", "inbox", "running"] {
        for file in files_under(&ws, rel) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(TOKEN),
                "{} contains the secret:\n{}",
                file.display(),
                String::from_utf8_lossy(&bytes)
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} files checked");
    // What was masked is still there, as `***`.
    let message = task_status["message"].as_str().unwrap_or_default();
    assert!(message.contains("Fail"), "{task_status:#}");
    assert!(
        message.contains("exit") || message.contains('3'),
        "{task_status:#}"
    );
    let mut sent: Vec<String> = entries(&ws, "processed")
        .iter()
        .filter(|n| n.contains("_sink_"))
        .map(|n| ws.read(&format!("processed/{n}/task")))
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        ["***", "text out=*** ***"],
        "the enqueued tasks, masked"
    );
}
