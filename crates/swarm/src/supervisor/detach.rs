//! `swarm up -d`: starts the supervisor detached (a new session, its output appended to a log)
//! and waits until its replicas are up, or says why they are not.
//!
//! Does not supervise anything itself.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orchestrate_base::process;

use super::error::SupervisorError;
use super::exit::ExitReason;
use super::proc::POLL;
use super::status::{SwarmStatus, status};
use super::status_file::ChildState;

/// Starts `argv` in a new session (no terminal, its own process group), stdin `/dev/null`,
/// stdout and stderr appended to `log` (parent directories created), and returns its pid without
/// waiting. The caller should reap it ([`wait_up`] does when it exits early) or exit soon after.
pub fn detach(argv: &[String], log: &Path) -> io::Result<u32> {
    let (program, args) = argv.split_first().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot run an empty command line",
        )
    })?;
    if let Some(parent) = log.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    process::new_session(&mut command);
    // Dropping the handle neither waits nor kills: the process runs on.
    Ok(command.spawn()?.id())
}

/// For `swarm up -d`: waits until the supervisor `pid` (started by [`detach`]) has written a
/// status where every replica is running or failed. Fails when it exits first (reaping it, so
/// its exit status is in the error) or after `timeout`. Blocks the calling thread.
pub fn wait_up(
    workspace: &Path,
    pid: u32,
    timeout: Duration,
) -> Result<SwarmStatus, SupervisorError> {
    let start = Instant::now();
    loop {
        if let Some(how) = exited_child(pid) {
            return Err(SupervisorError::ExitedEarly { pid, how });
        }
        let status = status(workspace)?;
        let ours = status.supervisor.as_ref().is_some_and(|s| s.pid == pid);
        if ours && status.settled() {
            return Ok(status);
        }
        if start.elapsed() >= timeout {
            let pending = if ours {
                status
                    .children
                    .iter()
                    .filter(|c| !matches!(c.state, ChildState::Running | ChildState::Failed))
                    .map(|c| format!("{} ({})", c.name, c.state.as_str()))
                    .collect()
            } else {
                vec![format!("the supervisor (pid {pid}) to start")]
            };
            return Err(SupervisorError::NotUp {
                pid,
                waited: start.elapsed(),
                pending,
            });
        }
        std::thread::sleep(POLL);
    }
}

/// How `pid` ended, if it has: reaped when it is our child, else judged from /proc.
fn exited_child(pid: u32) -> Option<String> {
    let reaped = process::try_reap(pid);
    if let Ok(Some(status)) = reaped {
        return Some(ExitReason::of(status).to_string());
    }
    match process::stat(pid) {
        Some(stat) if !stat.exited() => None,
        _ if matches!(reaped, Ok(None)) => None,
        _ => Some("status unknown".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::proc::pgid;
    use super::*;

    #[test]
    fn detach_starts_a_new_session_logging_to_the_file() {
        let ws = tempfile::tempdir().unwrap();
        let log = ws.path().join("logs/swarm.log");
        fs::create_dir_all(log.parent().unwrap()).unwrap();
        fs::write(&log, "before\n").unwrap();
        let argv: Vec<String> = [
            "bash",
            "-c",
            "echo out; echo err >&2; read -t 5 x; echo stdin=$?; exec sleep 100",
        ]
        .map(String::from)
        .to_vec();
        let pid = detach(&argv, &log).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = fs::read_to_string(&log).unwrap();
            if text.contains("stdin=") {
                assert!(text.starts_with("before\n"), "appended: {text}");
                assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
                // `read` hit end of file at once: stdin is /dev/null.
                assert!(text.contains("stdin=1"), "{text}");
                break;
            }
            assert!(Instant::now() < deadline, "timed out: {text}");
            std::thread::sleep(Duration::from_millis(5));
        }
        let stat = process::stat(pid).unwrap();
        assert_eq!(stat.session, pgid(pid), "a session of its own");
        let _ = process::kill(pid, libc::SIGKILL);
        // Reap it if it is still ours (a supervisor test's reaper may have beaten us to it).
        let _ = exited_child(pid);
        assert!(detach(&[], &log).is_err());
    }
}
