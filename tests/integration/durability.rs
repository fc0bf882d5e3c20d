//! Durability: crashes, resume by replay, the run lock, atomic records, secrets on disk, and the
//! timeout's SIGKILL escalation. Runs are spawned in the background and observed through the files
//! they write (`ran.log`, pid files, `events.jsonl`), always with deadlines.

#[allow(unused_imports)]
use crate::harness::*;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any single condition may take to come true before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// A background `orchestrate` process, killed (with any step groups it is known to have) if the
/// test ends early.
struct Bg {
    child: Child,
    groups: Vec<String>,
}

impl Bg {
    /// Spawns `orchestrate ARGS` in `ws`, stderr into `WS/orchestrate.stderr`.
    fn spawn(ws: &Ws, args: &[&str]) -> Bg {
        let stderr = std::fs::File::create(ws.join("orchestrate.stderr")).unwrap();
        let child = ws
            .cmd(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn orchestrate");
        Bg {
            child,
            groups: Vec::new(),
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the process to exit (it must within `DEADLINE`).
    fn wait(&mut self) -> ExitStatus {
        exit_within(&mut self.child, DEADLINE).expect("orchestrate did not exit")
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for group in &self.groups {
            signal_quiet("-KILL", &format!("-{group}"));
        }
    }
}

fn signal(signal: &str, target: &str) {
    assert!(
        signal_quiet(signal, target),
        "kill {signal} {target} failed"
    );
}

/// Every complete (newline-terminated) line of `events.jsonl` parses as JSON, and `seq` counts
/// 1, 2, 3, ... Returns the parsed events. A torn final line (no newline) is allowed only when
/// `torn_tail_ok`.
fn check_events_file(path: &Path, torn_tail_ok: bool) -> Vec<Value> {
    let text = std::fs::read(path).expect("events.jsonl");
    let complete = match text.iter().rposition(|&b| b == b'\n') {
        Some(end) => &text[..=end],
        None => &text[..0],
    };
    if !torn_tail_ok {
        assert_eq!(
            complete.len(),
            text.len(),
            "events.jsonl ends in a torn line"
        );
    }
    let complete = complete.strip_suffix(b"\n").unwrap_or(complete);
    let mut events = Vec::new();
    if complete.is_empty() {
        return events;
    }
    for (i, line) in complete.split(|&b| b == b'\n').enumerate() {
        let event: Value = serde_json::from_slice(line).unwrap_or_else(|e| {
            panic!(
                "events.jsonl line {} is not JSON ({e}): {}",
                i + 1,
                String::from_utf8_lossy(line)
            )
        });
        assert_eq!(
            event["seq"].as_u64(),
            Some(i as u64 + 1),
            "events.jsonl line {} has seq {}",
            i + 1,
            event["seq"]
        );
        events.push(event);
    }
    events
}

/// `${run.timestamp_utc}` format of the current time.
fn compact_now() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

fn event_count(events: &[Value], name: &str) -> usize {
    events.iter().filter(|e| e["event"] == name).count()
}

#[test]
fn kill_9_mid_run_then_resume_runs_the_rest_once_with_the_same_timestamp_and_context() {
    let ws = Ws::new();
    let vals = r#"echo "${run.timestamp_utc} ${run.id} ${context.mode}""#;
    ws.workflow(&format!(
        r#"name: crash
context:
  mode: default
steps:
  - name: S1
    command: [bash, -c, 'echo S1 >> ran.log; {vals} >> before.log']
  - name: S2
    command: [bash, -c, 'echo S2 >> ran.log']
  - name: S3
    command: [bash, -c, 'echo S3 >> ran.log']
  - name: S4
    command: [bash, -c, 'echo $$ > s4.pid; echo S4 >> ran.log; while [ -f block ]; do sleep 0.05; done']
  - name: S5
    command: [bash, -c, 'echo S5 >> ran.log; {vals} >> after.log']
  - name: S6
    command: [bash, -c, 'echo S6 >> ran.log']
"#
    ));
    ws.file("block", "");
    let mut bg = Bg::spawn(&ws, &["run", "wf.yaml", "--context", "mode=from-cli"]);
    wait_until("S4 to start", DEADLINE, || {
        lines(&ws, "ran.log").contains(&"S4".to_string())
    });
    let group = pid_from_file(&ws, "s4.pid");
    bg.groups.push(group.clone());
    let id = only_run_id(&ws);

    signal("-KILL", &bg.pid());
    bg.wait();
    signal("-KILL", &format!("-{group}"));
    std::fs::remove_file(ws.join("block")).unwrap();
    assert_eq!(lines(&ws, "ran.log"), ["S1", "S2", "S3", "S4"]);
    assert_eq!(
        ws.state(&id)["status"],
        "running",
        "the killed run is left as running"
    );

    // Resume in a later second than the start, so a recomputed timestamp would differ.
    let before = ws.read("before.log");
    let started = before.split(' ').next().unwrap().to_string();
    wait_until("the clock to pass the run's start second", DEADLINE, || {
        compact_now() > started
    });

    let run = ws.run(&["resume", &id]);
    run.ok();
    assert_eq!(run.id(), id);
    assert_eq!(
        lines(&ws, "ran.log"),
        ["S1", "S2", "S3", "S4", "S4", "S5", "S6"],
        "steps before the killed one ran once; the killed one again, then the rest"
    );
    assert_eq!(before, format!("{started} {id} from-cli\n"));
    assert_eq!(
        ws.read("after.log"),
        before,
        "timestamp and context kept across resume"
    );
    let state = ws.state(&id);
    assert_eq!(state["status"], "succeeded");
    assert_eq!(state["resumes"], 1);
    assert_eq!(state["timestamp_utc"], started.as_str());
    assert_eq!(state["context"]["mode"], "from-cli");
    let events = ws.events(&id);
    assert_eq!(event_count(&events, "run_resumed"), 1);
    assert_eq!(event_count(&events, "run_started"), 1);
}

const FAIL_AT_S3: &str = r#"name: flaky
steps:
  - name: S1
    command: [bash, -c, 'echo S1 >> ran.log']
  - name: S2
    command: [bash, -c, 'echo S2 >> ran.log']
  - name: S3
    command: [bash, -c, 'test -f flag && echo S3 >> ran.log']
  - name: S4
    command: [bash, -c, 'echo S4 >> ran.log']
"#;

#[test]
fn resume_of_a_failed_run_reruns_only_the_failed_step_and_the_rest() {
    let ws = Ws::new();
    ws.workflow(FAIL_AT_S3);
    let first = ws.run_wf(&[]);
    first.code(1);
    assert_eq!(lines(&ws, "ran.log"), ["S1", "S2"]);
    assert_eq!(first.state()["status"], "failed");

    ws.file("flag", "");
    let resumed = ws.run(&["resume", first.id()]);
    resumed.ok();
    assert_eq!(lines(&ws, "ran.log"), ["S1", "S2", "S3", "S4"]);
    assert_eq!(resumed.state()["status"], "succeeded");
}

#[test]
fn resume_of_a_succeeded_run_is_refused_with_exit_2() {
    let ws = Ws::new();
    ws.workflow(FAIL_AT_S3).file("flag", "");
    let first = ws.run_wf(&[]);
    first.ok();
    let again = ws.run(&["resume", first.id()]);
    again.code(2).stderr_has("already succeeded");
    assert_eq!(
        lines(&ws, "ran.log"),
        ["S1", "S2", "S3", "S4"],
        "nothing ran again"
    );
    assert_eq!(ws.state(first.id())["resumes"], 0);
}

#[test]
fn resume_of_an_unknown_run_exits_2_naming_the_runs_directory() {
    let ws = Ws::new();
    let run = ws.run(&["resume", "20200101T000000Z-abcdef"]);
    run.code(2)
        .stderr_has("20200101T000000Z-abcdef")
        .stderr_has(&ws.join(".orchestrate/runs").display().to_string());
}

#[test]
fn resume_replays_gotos_and_for_each_iterations() {
    let ws = Ws::new();
    ws.workflow(
        r#"name: replay
steps:
  - name: Count
    command: [bash, -c, 'echo Count >> ran.log']
  - name: Enough
    command: [bash, -c, '[ "$(grep -c Count ran.log)" -ge 2 ]']
    on:
      failure: {goto: Count}
      success: {goto: Loop}
  - name: Skipped
    command: [bash, -c, 'echo Skipped >> ran.log']
  - name: Loop
    for_each:
      items: [a, b, c, d]
      steps:
        - name: Work
          command: [bash, -c, 'if [ "$1" = c ] && [ ! -f flag ]; then exit 3; fi; echo "Work $1 $2" >> ran.log', _, '${item}', '${loop.index}']
  - name: After
    command: [bash, -c, 'echo After >> ran.log']
"#,
    );
    let first = ws.run_wf(&[]);
    first.code(1);
    assert_eq!(
        lines(&ws, "ran.log"),
        ["Count", "Count", "Work a 0", "Work b 1"]
    );

    ws.file("flag", "");
    let resumed = ws.run(&["resume", first.id()]);
    resumed.ok();
    assert_eq!(
        lines(&ws, "ran.log"),
        [
            "Count", "Count", "Work a 0", "Work b 1", "Work c 2", "Work d 3", "After"
        ],
        "the goto loop and items 0-1 were replayed, not re-run"
    );
    let state = resumed.state();
    assert_eq!(state["status"], "succeeded");
    assert_eq!(state["steps"]["Loop"]["iterations"], 4);
    assert!(state["steps"].get("Skipped").is_none());
}

#[test]
fn running_run_cannot_be_resumed_then_sigint_interrupts_it_and_resume_finishes_it() {
    let ws = Ws::new();
    ws.workflow(
        r#"name: locked
steps:
  - name: S1
    command: [bash, -c, 'echo S1 >> ran.log']
  - name: S2
    command: [bash, -c, 'echo S2 >> ran.log; echo $$ > s2.pid; while [ -f block ]; do sleep 0.05; done']
  - name: S3
    command: [bash, -c, 'echo S3 >> ran.log']
"#,
    );
    ws.file("block", "");
    let mut bg = Bg::spawn(&ws, &["run", "wf.yaml"]);
    // The pid file is the step's last write before it blocks: once it is there, `S2` is in the
    // log (it was written after the log line, so the interrupt cannot come between them).
    let group = pid_from_file(&ws, "s2.pid");
    bg.groups.push(group);
    let id = only_run_id(&ws);

    let refused = ws.run(&["resume", &id]);
    refused.code(2).stderr_has("still running");
    assert!(bg.running(), "a refused resume must not disturb the run");

    signal("-INT", &bg.pid());
    let status = bg.wait();
    assert_eq!(
        status.code(),
        Some(130),
        "stderr: {}",
        ws.read("orchestrate.stderr")
    );
    let state = ws.state(&id);
    assert_eq!(state["status"], "interrupted");
    assert_eq!(state["exit_code"], 130);
    assert_eq!(lines(&ws, "ran.log"), ["S1", "S2"]);

    std::fs::remove_file(ws.join("block")).unwrap();
    let resumed = ws.run(&["resume", &id]);
    resumed.ok();
    assert_eq!(lines(&ws, "ran.log"), ["S1", "S2", "S2", "S3"]);
    assert_eq!(ws.state(&id)["status"], "succeeded");
}

/// A workflow of `n` steps `E0..E{n-1}`, each appending its name to `ran.log`.
fn echo_steps(n: usize) -> String {
    let mut yaml = String::from("name: many\nsteps:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - name: E{i}\n    command: [sh, -c, 'echo E{i} >> ran.log']\n"
        ));
    }
    yaml
}

#[test]
fn state_json_and_events_stay_valid_json_throughout_a_300_step_run() {
    let ws = Ws::new();
    ws.workflow(&echo_steps(300));
    let mut bg = Bg::spawn(&ws, &["run", "wf.yaml", "--quiet"]);
    let id = only_run_id(&ws);
    let dir = ws.run_dir(&id);
    let (mut state_reads, mut event_reads, mut seen_state) = (0, 0, false);
    while bg.running() {
        match std::fs::read(dir.join("state.json")) {
            Ok(bytes) => {
                let state: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "state.json is not JSON mid-run ({e}): {}",
                        String::from_utf8_lossy(&bytes)
                    )
                });
                assert_eq!(state["format_version"], 1);
                seen_state = true;
                state_reads += 1;
            }
            Err(e) => assert!(
                !seen_state && e.kind() == std::io::ErrorKind::NotFound,
                "state.json vanished mid-run: {e}"
            ),
        }
        if dir.join("events.jsonl").exists() {
            check_events_file(&dir.join("events.jsonl"), true);
            event_reads += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(bg.wait().success(), "{}", ws.read("orchestrate.stderr"));
    eprintln!("observed the run {state_reads} (state) and {event_reads} (events) times");
    assert!(
        state_reads >= 10 && event_reads >= 10,
        "the run was observed ({state_reads} state reads, {event_reads} event reads)"
    );
    assert_eq!(lines(&ws, "ran.log").len(), 300);
    let events = check_events_file(&dir.join("events.jsonl"), false);
    assert_eq!(event_count(&events, "step_finished"), 300);
    let state = ws.state(&id);
    assert_eq!(state["format_version"], 1);
    assert_eq!(state["status"], "succeeded");
}

/// A number in `lo..hi` that differs between test runs (printed, so a failure can be replayed).
fn random_in(lo: usize, hi: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    lo + (h.finish() as usize) % (hi - lo)
}

#[test]
fn kill_9_at_a_random_point_leaves_parsable_records_and_resume_runs_each_step_once() {
    let ws = Ws::new();
    let n = 300;
    ws.workflow(&echo_steps(n));
    let point = std::env::var("KILL_POINT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| random_in(5, n - 50));
    eprintln!("killing after {point} steps (KILL_POINT={point} replays this)");
    let mut bg = Bg::spawn(&ws, &["run", "wf.yaml", "--quiet"]);
    wait_until("the kill point", DEADLINE, || {
        lines(&ws, "ran.log").len() >= point
    });
    signal("-KILL", &bg.pid());
    bg.wait();
    let id = only_run_id(&ws);
    let dir = ws.run_dir(&id);

    let events = check_events_file(&dir.join("events.jsonl"), true);
    let state: Value = serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap())
        .expect("state.json is JSON after kill -9");
    assert_eq!(state["format_version"], 1);
    assert_eq!(
        event_count(&events, "run_finished"),
        0,
        "the run finished before the kill"
    );
    // The step after the last recorded one may have been running at the kill: resume runs it
    // again (at-least-once), so it alone may appear twice.
    let finished = event_count(&events, "step_finished");
    let in_flight = format!("E{finished}");

    let resumed = ws.run(&["resume", &id]);
    resumed.ok();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for line in lines(&ws, "ran.log") {
        *counts.entry(line).or_default() += 1;
    }
    for i in 0..n {
        let name = format!("E{i}");
        let count = counts.remove(&name).unwrap_or(0);
        if name == in_flight {
            assert!(
                (1..=2).contains(&count),
                "{name} (in flight at the kill) ran {count} times"
            );
        } else {
            assert_eq!(count, 1, "{name} ran {count} times (kill point {point})");
        }
    }
    assert!(counts.is_empty(), "unexpected lines: {counts:?}");
    assert_eq!(ws.state(&id)["status"], "succeeded");
    check_events_file(&dir.join("events.jsonl"), false);
}

#[test]
fn secret_value_reaches_no_file_under_the_orchestrate_dir() {
    let mut ws = Ws::new();
    ws.env("MY_TOKEN", "s3cr3t-value");
    ws.workflow(
        r#"name: secrets
steps:
  - name: Show
    secrets: [MY_TOKEN]
    command: [bash, -c, 'echo "shown=$MY_TOKEN"']
  - name: Leak
    secrets: [MY_TOKEN]
    retry: 2
    command: [bash, -c, 'echo "token=$MY_TOKEN"; echo "err=$MY_TOKEN" >&2; exit 1']
"#,
    );
    let run = ws.run_wf(&[]);
    run.code(1);

    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&ws.join(".orchestrate"), &mut files);
    assert!(files.len() >= 8, "expected the run's records: {files:?}");
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("s3cr3t-value"),
            "{} contains the secret:\n{}",
            file.display(),
            String::from_utf8_lossy(&bytes)
        );
    }
    let leak = run.step("Leak");
    let stdout_log = ws.read(leak["stdout_log"].as_str().unwrap());
    assert_eq!(stdout_log, "token=***\n");
    let stderr_log = ws.read(leak["stderr_log"].as_str().unwrap());
    assert_eq!(stderr_log, "err=***\n");
    assert_eq!(run.step("Show")["output"], "shown=***");
}

#[test]
fn timeout_kills_a_step_that_ignores_sigterm_and_exits_124() {
    let ws = Ws::new();
    ws.workflow(
        r#"name: stubborn
steps:
  - name: Stubborn
    timeout_sec: 1
    command: [bash, -c, 'echo $$ > stubborn.pid; trap "" TERM; sleep 60']
"#,
    );
    let started = Instant::now();
    let run = ws.run_wf(&[]);
    let took = started.elapsed();
    run.code(124);
    // Not before the timeout; and the SIGKILL after the grace came, well before the trapped
    // step's 60 s sleep would have ended on its own (a wide margin: this proves the mechanism,
    // not its speed).
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(50),
        "the run took {took:?} (timeout 1 s + 5 s grace; the step sleeps 60 s)"
    );
    assert_eq!(run.step("Stubborn")["exit_code"], 124);
    let group = ws.read("stubborn.pid").trim().to_string();
    assert!(
        !signal_quiet("-0", &format!("-{group}")),
        "the step's process group {group} is still alive"
    );
}

#[test]
fn interrupted_step_with_a_failure_handler_runs_again_on_resume() {
    let ws = Ws::new();
    ws.workflow(
        r#"name: handled
steps:
  - name: S1
    command: [bash, -c, 'echo S1 >> ran.log']
  - name: S2
    command: [bash, -c, 'echo S2 >> ran.log; echo $$ > s2.pid; while [ -f block ]; do sleep 0.05; done']
    on:
      failure: {goto: Handler}
  - name: S3
    command: [bash, -c, 'echo S3 >> ran.log']
    on:
      success: {goto: _end}
  - name: Handler
    command: [bash, -c, 'echo Handler >> ran.log']
"#,
    );
    ws.file("block", "");
    let mut bg = Bg::spawn(&ws, &["run", "wf.yaml"]);
    // The pid file is the step's last write before it blocks: once it is there, `S2` is in the
    // log (it was written after the log line, so the interrupt cannot come between them).
    let group = pid_from_file(&ws, "s2.pid");
    bg.groups.push(group);
    let id = only_run_id(&ws);
    signal("-INT", &bg.pid());
    assert_eq!(bg.wait().code(), Some(130));
    assert_eq!(lines(&ws, "ran.log"), ["S1", "S2"]);

    std::fs::remove_file(ws.join("block")).unwrap();
    ws.run(&["resume", &id]).ok();
    assert_eq!(
        lines(&ws, "ran.log"),
        ["S1", "S2", "S2", "S3"],
        "the interrupted step runs again; its failure handler is not taken"
    );
}

#[test]
fn resume_after_a_torn_final_event_line_does_not_rerun_completed_steps() {
    let ws = Ws::new();
    ws.workflow(
        r#"name: torn
steps:
  - name: S1
    command: [bash, -c, 'echo S1 >> ran.log']
  - name: S2
    command: [bash, -c, 'test -f flagA && echo S2 >> ran.log']
  - name: S3
    command: [bash, -c, 'test -f flagB && echo S3 >> ran.log']
  - name: S4
    command: [bash, -c, 'echo S4 >> ran.log']
"#,
    );
    let first = ws.run_wf(&[]);
    first.code(1);
    // What a crash in the middle of an append leaves: a final line without its newline.
    let events = ws.run_dir(first.id()).join("events.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&events)
        .unwrap();
    std::io::Write::write_all(&mut file, br#"{"v":1,"seq":99,"event":"step_fin"#).unwrap();
    drop(file);

    ws.file("flagA", "");
    ws.run(&["resume", first.id()]).code(1);
    assert_eq!(lines(&ws, "ran.log"), ["S1", "S2"]);
    ws.file("flagB", "");
    ws.run(&["resume", first.id()]).ok();
    assert_eq!(
        lines(&ws, "ran.log"),
        ["S1", "S2", "S3", "S4"],
        "S2 completed in the first resume and must be replayed by the second"
    );
}

#[test]
fn resume_of_a_run_id_outside_the_runs_directory_is_refused_and_writes_nothing() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.join(".orchestrate/runs")).unwrap();
    for id in ["..", "../.."] {
        let run = ws.run(&["resume", id]);
        run.code(2);
        assert!(
            !ws.exists(".orchestrate/lock") && !ws.exists("lock"),
            "`resume {id}` created a lock file outside the runs directory\n{}",
            run.stderr
        );
    }
}

#[test]
fn masked_secret_does_not_truncate_captured_output() {
    let mut ws = Ws::new();
    ws.env("MY_TOKEN", "s3cr3t-value");
    ws.workflow(
        r#"name: masked-capture
steps:
  - name: Lines
    secrets: [MY_TOKEN]
    output_capture: lines
    command: [bash, -c, 'echo "a=$MY_TOKEN"; echo b; echo c']
  - name: Text
    secrets: [MY_TOKEN]
    command: [bash, -c, 'echo "a=$MY_TOKEN"']
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    let lines_result = run.step("Lines");
    assert_eq!(
        lines_result["lines"],
        serde_json::json!(["a=***", "b", "c"]),
        "{lines_result:#}"
    );
    assert_eq!(lines_result["truncated"], false, "{lines_result:#}");
    let text = run.step("Text");
    assert_eq!(text["output"], "a=***");
    assert_eq!(text["truncated"], false, "{text:#}");
}

#[test]
fn resume_runs_the_workflow_copy_saved_at_the_start() {
    let ws = Ws::new();
    ws.workflow(FAIL_AT_S3);
    let first = ws.run_wf(&[]);
    first.code(1);
    ws.workflow(&FAIL_AT_S3.replace("echo S4", "echo EDITED"));
    ws.file("flag", "");
    ws.run(&["resume", first.id()]).ok();
    assert_eq!(lines(&ws, "ran.log"), ["S1", "S2", "S3", "S4"]);
}

/// ~30 steps with every kind of control flow: plain steps, a retried step, a goto loop and two
/// for_each loops. Every process appends its key to `ran.log` (O_APPEND) and prints `out-KEY`.
fn crash_workflow() -> String {
    let step = |key: &str| format!(r#"[sh, -c, 'echo "$0" >> ran.log; echo "out-$0"', '{key}']"#);
    let mut yaml = String::from("name: crash-suite\nsteps:\n");
    for i in 0..8 {
        yaml.push_str(&format!(
            "  - name: A{i}\n    command: {}\n",
            step(&format!("A{i}"))
        ));
    }
    yaml.push_str(
        r#"  - name: Flaky
    retry: {max_attempts: 3, delay_sec: 0}
    command: [sh, -c, 'echo Flaky >> ran.log; echo out-Flaky; test -f flaky.flag || { touch flaky.flag; exit 1; }']
  - name: Count
    command: [sh, -c, 'echo Count >> ran.log; echo x >> count.txt; echo out-Count']
  - name: Enough
    command: [sh, -c, 'echo Enough >> ran.log; echo out-Enough; test "$(wc -l < count.txt)" -ge 3']
    on:
      failure: {goto: Count}
  - name: Loop1
    for_each:
      items: [a, b, c, d, e, f]
      steps:
        - name: W
          command: [sh, -c, 'echo "W-$0" >> ran.log; echo "out-W-$0"', '${item}']
"#,
    );
    for i in 0..8 {
        yaml.push_str(&format!(
            "  - name: B{i}\n    command: {}\n",
            step(&format!("B{i}"))
        ));
    }
    yaml.push_str(
        r#"  - name: Loop2
    for_each:
      items: ['1', '2', '3', '4']
      steps:
        - name: X
          command: [sh, -c, 'echo "X-$0" >> ran.log; echo "out-X-$0"', '${item}']
        - name: Y
          command: [sh, -c, 'echo "Y-$0" >> ran.log; echo "out-Y-$0"', '${item}']
"#,
    );
    for i in 0..6 {
        yaml.push_str(&format!(
            "  - name: C{i}\n    command: {}\n",
            step(&format!("C{i}"))
        ));
    }
    yaml
}

/// The outputs a finished run leaves in state.json, by step name.
fn step_outputs(state: &Value) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = state["steps"]
        .as_object()
        .expect("state.json steps")
        .iter()
        .map(|(name, r)| {
            (
                name.clone(),
                serde_json::json!([r["status"], r["output"], r["iterations"]]),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn engine_killed_at_random_moments_and_resumed_until_done_runs_each_completed_step_once() {
    let (mut rng, seed) = Rng::from_env("CRASH_SEED");
    eprintln!("crash suite seed {seed} (CRASH_SEED={seed} replays the kill delays)");
    let kills_wanted: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);

    // The reference: the same workflow, uninterrupted.
    let reference = Ws::new();
    reference.workflow(&crash_workflow());
    let t0 = Instant::now();
    let clean = reference.run_wf(&["--quiet"]);
    let run_ms = t0.elapsed().as_millis() as u64;
    clean.ok();
    let expected = step_outputs(&clean.state());

    // Runs (each in a fresh workspace) are killed and resumed until enough kills have landed.
    // Bounded by count, not time: nearly every run takes several kills (its delays are a sixth
    // of an uninterrupted run at most), so ten runs per kill wanted means kills stopped landing.
    let (mut kills, mut resumes, mut runs, mut reran) = (0, 0, 0, 0);
    while kills < kills_wanted {
        assert!(
            runs < 10 * kills_wanted,
            "seed {seed}: only {kills} kills in {runs} runs"
        );
        // Delays up to a sixth of an uninterrupted run: several kills per run.
        let (k, r, x) = crash_campaign(
            &mut rng,
            seed,
            run_ms / 6 + 10,
            kills_wanted - kills,
            &expected,
        );
        kills += k;
        resumes += r;
        reran += x;
        runs += 1;
    }
    eprintln!(
        "crash suite: {runs} runs, {kills} kills, {resumes} resumes, {reran} steps ran again after being killed in flight (uninterrupted run {run_ms} ms)"
    );
}

/// One run of [`crash_workflow`], SIGKILLed up to `budget` times at random moments in the next
/// `max_delay_ms` after each start and resumed until it finishes. Returns (kills, resumes,
/// re-executions).
fn crash_campaign(
    rng: &mut Rng,
    seed: u64,
    max_delay_ms: u64,
    budget: usize,
    expected: &[(String, Value)],
) -> (usize, usize, usize) {
    let ws = Ws::new();
    ws.workflow(&crash_workflow());
    let mut bg = Bg::spawn(&ws, &["run", "wf.yaml", "--quiet"]);
    let id = only_run_id(&ws);
    let dir = ws.run_dir(&id);
    // A run killed before its event log exists is not a run yet: nothing to resume.
    wait_until("the run's event log", DEADLINE, || {
        dir.join("events.jsonl").exists()
    });
    // Bounded by count: at most `budget` kills, then each start runs to its end; a refused
    // resume is retried at most 50 times (below).
    let (mut kills, mut resumes, mut refused) = (0usize, 0usize, 0usize);
    loop {
        let finished = if kills < budget {
            let delay = Duration::from_millis(rng.below(max_delay_ms as usize) as u64);
            let until = Instant::now() + delay;
            while Instant::now() < until && bg.running() {
                std::thread::sleep(Duration::from_millis(1));
            }
            if bg.running() {
                signal_quiet("-KILL", &bg.pid());
                bg.wait();
                kills += 1;
                false
            } else {
                true
            }
        } else {
            bg.wait();
            true
        };
        // At every stop: state.json parses, every complete event line parses (a torn last line
        // is the only damage allowed).
        if dir.join("state.json").exists() {
            let bytes = std::fs::read(dir.join("state.json")).unwrap();
            let state: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "seed {seed}, kill {kills}: state.json is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            assert_eq!(state["format_version"], 1);
        }
        let events = check_events_file(&dir.join("events.jsonl"), true);
        if finished {
            let status = bg.wait();
            if status.success() {
                assert_eq!(event_count(&events, "run_finished"), 1);
                break;
            }
            // A resume that found the killed run's step still holding on to something is
            // refused with exit 2 ("running"); anything else is a failure.
            let stderr = ws.read("orchestrate.stderr");
            assert_eq!(
                status.code(),
                Some(2),
                "seed {seed}: resume failed after {kills} kills: {stderr}"
            );
            refused += 1;
            assert!(refused < 50, "seed {seed}: resume refused again: {stderr}");
            std::thread::sleep(Duration::from_millis(20));
        } else if event_count(&events, "run_finished") == 1 {
            // Killed between recording the end and exiting: the run is over; a resume must
            // say so, and state.json must agree with the event log.
            let again = ws.run(&["resume", &id]);
            eprintln!(
                "killed after run_finished: resume exits {:?}: {}",
                again.code,
                again.stderr.trim()
            );
            assert!(
                again.code == 0 || again.stderr.contains("succeeded"),
                "seed {seed}: resume of a finished run: {}",
                again.stderr
            );
            break;
        }
        resumes += 1;
        bg = Bg::spawn(&ws, &["resume", &id, "--quiet"]);
    }

    // The same outcome as the uninterrupted run.
    let state = ws.state(&id);
    assert_eq!(state["status"], "succeeded");
    assert_eq!(step_outputs(&state), expected, "seed {seed}");

    // Each execution the final event log records happened once; only a step in flight at a kill
    // may have run again (its retry attempts with it).
    let events = check_events_file(&dir.join("events.jsonl"), false);
    let mut recorded: HashMap<String, usize> = HashMap::new();
    for e in events.iter().filter(|e| e["event"] == "step_finished") {
        let Some(output) = e["result"]["output"].as_str() else {
            continue; // a for_each step
        };
        let key = output
            .trim()
            .strip_prefix("out-")
            .unwrap_or_else(|| panic!("seed {seed}: unexpected output {output:?}"));
        let attempts = e["result"]["attempts"].as_u64().unwrap_or(1) as usize;
        *recorded.entry(key.to_string()).or_default() += attempts;
    }
    let mut ran: HashMap<String, usize> = HashMap::new();
    for line in lines(&ws, "ran.log") {
        *ran.entry(line).or_default() += 1;
    }
    let mut reran = 0;
    for (key, &n) in &ran {
        let r = recorded.get(key).copied().unwrap_or(0);
        assert!(
            n >= r,
            "seed {seed}: {key} is recorded {r} times but ran {n} times"
        );
        if n > r {
            reran += if key == "Flaky" { 1 } else { n - r };
        }
    }
    for key in recorded.keys() {
        assert!(
            ran.contains_key(key),
            "seed {seed}: {key} recorded, never ran"
        );
    }
    assert!(
        reran <= kills,
        "seed {seed}: {reran} re-executions for {kills} kills: ran {ran:?}, recorded {recorded:?}"
    );
    (kills, resumes, reran)
}

#[test]
fn a_run_killed_before_its_first_snapshot_resumes_from_its_run_started_event() {
    // The crash suite found this window: `run_started` recorded, state.json not yet written.
    let ws = Ws::new();
    ws.workflow(FAIL_AT_S3);
    let first = ws.run_wf(&["--context", "k=v"]);
    first.code(1);
    let id = first.id().to_string();
    let dir = ws.run_dir(&id);
    let timestamp = ws.state(&id)["timestamp_utc"].clone();
    std::fs::remove_file(dir.join("state.json")).unwrap();
    ws.file("flag", "");
    let resumed = ws.run(&["resume", &id]);
    resumed.ok();
    assert_eq!(lines(&ws, "ran.log"), ["S1", "S2", "S3", "S4"]);
    let state = ws.state(&id);
    assert_eq!(state["status"], "succeeded");
    assert_eq!(state["timestamp_utc"], timestamp);
    assert_eq!(state["context"]["k"], "v");

    // Killed before even `run_started`: nothing to resume, and it says what to do.
    std::fs::remove_file(dir.join("state.json")).unwrap();
    std::fs::write(dir.join("events.jsonl"), "").unwrap();
    ws.run(&["resume", &id])
        .code(2)
        .stderr_has("it was stopped before it started")
        .stderr_has("start it again with `orchestrate run`");
}
