//! `logs`: a run's step logs in execution order, each under a header, optionally following them
//! as they grow until the run records its end (or its engine is gone).
//!
//! Does not interpret the logs' content or the events beyond `run_finished`.

use super::children::children_of;
use super::error::ObserveError;
use super::fold::{engine_alive, lock_pid};
use super::locate::{RunSource, locate};
use orchestrate_base::io_err::FromIo;
use orchestrate_engine::event::Event;
use orchestrate_engine::state::RunDir;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How often `logs --follow` looks for new output.
pub(crate) const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// How often `logs --follow` checks that the engine of an unfinished run is still alive.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

/// A step log's name, `[LANE.]NNNN-STEP[.ATTEMPT][.pN][.rN].stdout|stderr`, taken apart for
/// ordering: by execution (a fan-out item's logs carry its lane, `0003.0002.0001-Work`, and sort
/// as a block after the fan-out step, in item order), then resume session (a resumed run's logs carry `.rN`), attempt (`.2`, `.3`),
/// the run after a usage-limit pause (`.pN`), and stdout before stderr.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct LogName {
    exec: Vec<u64>,
    resume: u32,
    attempt: u32,
    pause: u32,
    /// 0 for stdout, 1 for stderr.
    stream: u8,
    step: String,
    file: String,
}

fn parse_log_name(file: &str) -> Option<LogName> {
    let (base, stream) = if let Some(base) = file.strip_suffix(".stdout") {
        (base, 0)
    } else if let Some(base) = file.strip_suffix(".stderr") {
        (base, 1)
    } else {
        return None;
    };
    let (exec, rest) = base.split_once('-')?;
    let exec: Vec<u64> = exec
        .split('.')
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    // Step names have no dots, so what follows the first dot is suffixes.
    let mut parts = rest.split('.');
    let step = parts.next()?.to_string();
    let (mut attempt, mut pause, mut resume) = (1, 0, 0);
    for part in parts {
        if let Some(n) = part.strip_prefix('r') {
            resume = n.parse().ok()?;
        } else if let Some(n) = part.strip_prefix('p') {
            pause = n.parse().ok()?;
        } else {
            attempt = part.parse().ok()?;
        }
    }
    Some(LogName {
        exec,
        resume,
        attempt,
        pause,
        stream,
        step,
        file: file.to_string(),
    })
}

fn list_logs(dir: &Path, step: Option<&str>) -> Vec<LogName> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut logs: Vec<LogName> = entries
        .flatten()
        .filter_map(|e| parse_log_name(&e.file_name().to_string_lossy()))
        .filter(|l| step.is_none_or(|s| l.step == s))
        .collect();
    logs.sort();
    logs
}

/// Reads new lines of `events.jsonl` from `offset`, returning whether `run_finished` is among
/// them. Only whole lines are consumed, so a line being written is read on the next poll.
fn saw_run_finished(path: &Path, offset: &mut u64) -> io::Result<bool> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    file.seek(SeekFrom::Start(*offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
        return Ok(false);
    };
    *offset += end as u64 + 1;
    // A resume can append after a run_finished; only the last word counts.
    let mut finished = None;
    for line in bytes[..end].split(|&b| b == b'\n') {
        match serde_json::from_slice::<Event>(line) {
            Ok(Event::RunFinished(_)) => finished = Some(true),
            Ok(Event::RunStarted(_) | Event::RunResumed(_)) => finished = Some(false),
            _ => {}
        }
    }
    Ok(finished.unwrap_or(false))
}

/// Prints the step logs of run `run_id` in execution order, each under a header
/// (`== 0003-Build.stdout ==`); with `step`, only that step's logs (all its executions and
/// attempts). With `follow`, keeps printing output as the files grow and new ones appear, polling
/// every 100 ms, until the run's `events.jsonl` records `run_finished` (or its engine is gone);
/// it blocks the calling thread and needs no async runtime.
pub fn logs(
    workspace: &Path,
    run_id: &str,
    step: Option<&str>,
    follow: bool,
    out: &mut dyn Write,
) -> Result<(), ObserveError> {
    let loc = locate(workspace, run_id)?;
    let dir = RunDir {
        root: loc.root.clone(),
    };
    if let Some(step) = step {
        // A `workflow:` step has no logs of its own: its child run's are shown (its latest).
        let events = orchestrate_engine::events::read(&dir.events()).unwrap_or_default();
        if let Some(child) = children_of(workspace, &events, true)
            .into_iter()
            .rfind(|c| c.step == step)
            && let Some(child_id) = child.run_id
        {
            writeln!(
                out,
                "== step `{step}` runs workflow {}: child run {child_id} ==",
                child.workflow
            )
            .map_err(ObserveError::Output)?;
            return logs(workspace, &child_id, None, follow, out);
        }
    }
    let logs_dir = dir.logs();
    let events_path = dir.events();
    let mut events_offset = 0u64;
    // Finished runs (and task runs already moved to processed/ or failed/) are printed once.
    let mut done = !follow
        || matches!(loc.source, RunSource::Processed | RunSource::Failed)
        || saw_run_finished(&events_path, &mut events_offset)
            .map_err(ObserveError::io_err("read", &events_path))?;
    let mut printer = Printer::default();
    let mut checked_alive = Instant::now();
    loop {
        printer.drain(&logs_dir, step, out)?;
        if done {
            break;
        }
        std::thread::sleep(FOLLOW_POLL);
        // Logs are written before the events that end their step, so a drain after
        // run_finished is seen has all the output.
        done = saw_run_finished(&events_path, &mut events_offset)
            .map_err(ObserveError::io_err("read", &events_path))?;
        if !done && !loc.root.exists() {
            // A task attempt's directory is moved to processed/ or failed/ as it ends.
            printer.finish(out)?;
            writeln!(
                out,
                "== the run's records moved (the task finished); see `orchestrate logs {run_id}` =="
            )
            .map_err(ObserveError::Output)?;
            return Ok(());
        }
        if !done && checked_alive.elapsed() >= LIVENESS_EVERY {
            checked_alive = Instant::now();
            if engine_alive(&loc.root) == Some(false) {
                printer.drain(&logs_dir, step, out)?;
                printer.finish(out)?;
                writeln!(
                    out,
                    "== the run's engine (pid {}) is gone without finishing; `orchestrate resume {run_id}` continues it ==",
                    lock_pid(&loc.root).unwrap_or_default()
                )
                .map_err(ObserveError::Output)?;
                return Ok(());
            }
        }
    }
    printer.finish(out)?;
    if printer.seen == 0 && !follow {
        let mut steps: Vec<String> = Vec::new();
        for log in list_logs(&logs_dir, None) {
            if !steps.contains(&log.step) {
                steps.push(log.step);
            }
        }
        let which = step.map(|s| format!(" for step `{s}`")).unwrap_or_default();
        let hint = match step {
            Some(s) if !steps.is_empty() => {
                match orchestrate_lang::diag::did_you_mean(s, steps.iter().map(String::as_str)) {
                    Some(near) => format!(
                        "did you mean `{near}`? (steps with logs: {})",
                        steps.join(", ")
                    ),
                    None => format!("steps with logs: {}", steps.join(", ")),
                }
            }
            _ => format!(
                "a log exists only when a step wrote to that stream ({})",
                logs_dir.display()
            ),
        };
        return Err(ObserveError::NoLogs {
            id: run_id.to_string(),
            which,
            hint,
        });
    }
    Ok(())
}

/// What `logs` has printed so far.
#[derive(Default)]
struct Printer {
    /// Bytes printed of each log file.
    offsets: HashMap<String, u64>,
    /// The file whose header was printed last.
    current: Option<String>,
    /// Whether the output ends a line (so that a header can start one).
    at_line_start: bool,
    /// Log files seen, empty ones included.
    seen: usize,
}

impl Printer {
    /// Prints what is new in each log file, in execution order, with a header whenever the
    /// output switches to another file.
    fn drain(
        &mut self,
        dir: &Path,
        step: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<(), ObserveError> {
        let logs = list_logs(dir, step);
        self.seen = self.seen.max(logs.len());
        for log in logs {
            let path = dir.join(&log.file);
            let offset = self.offsets.get(&log.file).copied().unwrap_or(0);
            // A log is never a link: one that is could lead outside the workspace.
            let opened = {
                use std::os::unix::fs::OpenOptionsExt;
                fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
            };
            let mut file = match opened {
                Ok(file) => file,
                // Gone between the listing and now: nothing to print.
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) if err.raw_os_error() == Some(libc::ELOOP) => continue,
                Err(err) => return Err(ObserveError::io_err("read", &path)(err)),
            };
            let len = file
                .metadata()
                .map_err(ObserveError::io_err("read", &path))?
                .len();
            if len <= offset {
                continue;
            }
            file.seek(SeekFrom::Start(offset))
                .map_err(ObserveError::io_err("read", &path))?;
            let mut bytes = Vec::new();
            file.take(len - offset)
                .read_to_end(&mut bytes)
                .map_err(ObserveError::io_err("read", &path))?;
            if bytes.is_empty() {
                continue;
            }
            if self.current.as_deref() != Some(log.file.as_str()) {
                // A header starts its own line even when the previous file's last line did not
                // end (a process still writing it, or one that never wrote a newline).
                let lead = if self.at_line_start || self.current.is_none() {
                    ""
                } else {
                    "\n"
                };
                writeln!(out, "{lead}== {} ==", log.file).map_err(ObserveError::Output)?;
                self.current = Some(log.file.clone());
            }
            out.write_all(&bytes).map_err(ObserveError::Output)?;
            self.at_line_start = bytes.last() == Some(&b'\n');
            self.offsets
                .insert(log.file.clone(), offset + bytes.len() as u64);
        }
        out.flush().map_err(ObserveError::Output)
    }

    /// Ends the output on a whole line.
    fn finish(&mut self, out: &mut dyn Write) -> Result<(), ObserveError> {
        if self.current.is_some() && !self.at_line_start {
            out.write_all(b"\n").map_err(ObserveError::Output)?;
            self.at_line_start = true;
        }
        out.flush().map_err(ObserveError::Output)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Log, looping_run, ok, run_root};
    use super::*;
    use serde_json::json;

    fn write_logs(root: &Path, files: &[(&str, &str)]) {
        fs::create_dir_all(root.join("logs")).unwrap();
        for (name, text) in files {
            fs::write(root.join("logs").join(name), text).unwrap();
        }
    }

    #[test]
    fn logs_print_in_execution_order_and_filter_by_step() {
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path();
        let id = looping_run(ws);
        let root = run_root(ws, &id);
        write_logs(
            &root,
            &[
                ("0010-Notify.stdout", "sent\n"),
                ("0002-Build.stdout", "cc main.c\n"),
                ("0002-Build.stderr", "warning: unused\n"),
                ("0003-Test.stdout", "1 failed\n"),
                ("0003-Test.2.stdout", "still failing"),
                ("0003-Test.r1.stdout", "passed after resume\n"),
                ("0004-Build.stdout", "cc main.c\n"),
                ("notes.txt", "not a log\n"),
            ],
        );
        let mut out = Vec::new();
        logs(ws, &id, None, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "== 0002-Build.stdout ==\ncc main.c\n== 0002-Build.stderr ==\nwarning: unused\n\
             == 0003-Test.stdout ==\n1 failed\n== 0003-Test.2.stdout ==\nstill failing\n\
             == 0003-Test.r1.stdout ==\npassed after resume\n== 0004-Build.stdout ==\ncc main.c\n== 0010-Notify.stdout ==\nsent\n"
        );
        let mut out = Vec::new();
        logs(ws, &id, Some("Build"), false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "== 0002-Build.stdout ==\ncc main.c\n== 0002-Build.stderr ==\nwarning: unused\n\
             == 0004-Build.stdout ==\ncc main.c\n"
        );
        let err = logs(ws, &id, Some("Buidl"), false, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("did you mean `Build`?"), "{err}");

        // A task run is found by its task id; its logs live in its directory.
        let task = ws.join("failed/20261122T090000.000001Z_qa_t-9");
        Log::new("2026-11-22T09:00:00Z")
            .at(
                0.0,
                "run_started",
                json!({"run_id": "20261122T090000Z-999999", "name": "qa"}),
            )
            .write(&task);
        write_logs(&task, &[("0001-Review.stdout", "{\"passed\": false}\n")]);
        let mut out = Vec::new();
        logs(ws, "t-9", None, true, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "== 0001-Review.stdout ==\n{\"passed\": false}\n"
        );
    }

    #[test]
    fn logs_follow_prints_growing_files_until_run_finished() {
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path().to_path_buf();
        let id = "20261124T130000Z-abcdef";
        let root = run_root(&ws, id);
        let mut log = Log::new("2026-11-24T13:00:00Z");
        log.at(
            0.0,
            "run_started",
            json!({"run_id": id, "name": "ship", "pid": 1}),
        )
        .at(
            0.0,
            "step_started",
            json!({"step": "Build", "exec": 1, "kind": "command", "iteration": []}),
        );
        log.write(&root);
        fs::write(root.join("lock"), format!("{}\n", std::process::id())).unwrap();
        write_logs(&root, &[("0001-Build.stdout", "step 1\n")]);

        let writer_root = root.clone();
        let mut writer_log = Log {
            seq: log.seq,
            t0: log.t0,
            lines: String::new(),
        };
        let writer = std::thread::spawn(move || {
            let append = |name: &str, text: &str| {
                let mut file = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(writer_root.join("logs").join(name))
                    .unwrap();
                file.write_all(text.as_bytes()).unwrap();
            };
            std::thread::sleep(Duration::from_millis(250));
            append("0001-Build.stdout", "step 2 (no newl");
            std::thread::sleep(Duration::from_millis(250));
            append("0001-Build.stdout", "ine yet)\n");
            std::thread::sleep(Duration::from_millis(250));
            append("0002-Test.stdout", "ok\n");
            writer_log.finished(1.0, "Build", 1, &[], ok(1.0)).step(
                1.0,
                "Test",
                2,
                &[],
                "command",
                ok(0.5),
            );
            std::thread::sleep(Duration::from_millis(250));
            writer_log.at(
                2.0,
                "run_finished",
                json!({"status": "succeeded", "exit_code": 0, "error": null}),
            );
            let mut events = fs::OpenOptions::new()
                .append(true)
                .open(writer_root.join("events.jsonl"))
                .unwrap();
            // The output of a step is on disk before the event that ends the run.
            append("0002-Test.stderr", "done\n");
            events.write_all(writer_log.lines.as_bytes()).unwrap();
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let follow_ws = ws.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let result = logs(&follow_ws, id, None, true, &mut out).map_err(|e| e.to_string());
            let _ = tx.send((result, out));
        });
        let (result, out) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("follow returns once run_finished is recorded");
        writer.join().unwrap();
        result.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "== 0001-Build.stdout ==\nstep 1\nstep 2 (no newline yet)\n== 0002-Test.stdout ==\nok\n\
             == 0002-Test.stderr ==\ndone\n"
        );
    }

    #[test]
    fn log_names_sort_by_execution_resume_attempt_and_stream() {
        let mut names: Vec<LogName> = [
            "0012-B.stdout",
            "0003-A.2.stderr",
            "0003-A.stdout",
            "0003-A.r1.stdout",
            "0003-A.2.stdout",
            "0003-A.p1.stdout",
            "0003-A.2.p1.stdout",
            "0003-A.3.r1.stdout",
            "10000-Z.stdout",
        ]
        .iter()
        .filter_map(|n| parse_log_name(n))
        .collect();
        names.sort();
        let files: Vec<&str> = names.iter().map(|n| n.file.as_str()).collect();
        assert_eq!(
            files,
            [
                "0003-A.stdout",
                "0003-A.p1.stdout",
                "0003-A.2.stdout",
                "0003-A.2.stderr",
                "0003-A.2.p1.stdout",
                "0003-A.r1.stdout",
                "0003-A.3.r1.stdout",
                "0012-B.stdout",
                "10000-Z.stdout"
            ]
        );
        assert!(parse_log_name("notes.txt").is_none());
        assert!(parse_log_name("x-A.stdout").is_none());
        assert!(parse_log_name("0001-A.q.stdout").is_none());
    }
}
