//! `swarm down`: SIGTERM (or SIGKILL) to the running supervisor, the wait for it, and on a
//! forced stop SIGKILL to the replicas it leaves; [`stop_orphans`] when no supervisor runs.
//!
//! Does not stop the replicas of a supervisor stopping gracefully: the supervisor does.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use orchestrate_base::process::{self, kill_group};

use super::error::SupervisorError;
use super::policy::millis;
use super::proc::{POLL, pgid, signal_child};
use super::status::SwarmStatus;
use super::status_file::{ChildState, SupervisorState, read_status_file};

/// What [`down`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DownReport {
    /// The supervisor's pid.
    pub pid: u32,
    /// `SIGTERM` (graceful) or `SIGKILL` (forced, or a second `down`).
    pub signal: &'static str,
    /// Whether the supervisor was gone before the timeout.
    pub exited: bool,
    /// How long `down` waited, in milliseconds.
    pub waited_ms: u64,
    /// Replica processes killed directly (forced stop only).
    pub(crate) killed_children: Vec<u32>,
}

/// `swarm down`: SIGTERM to the running supervisor (verified by its pid start time), then waits
/// up to `timeout` for it to exit. With `force`, or when the supervisor is already stopping (a
/// second `down`), SIGKILL to it, then SIGKILL to the groups and sessions of the replicas it
/// leaves behind.
pub fn down(
    workspace: &Path,
    timeout: Duration,
    force: bool,
) -> Result<DownReport, SupervisorError> {
    let not_running = || SupervisorError::NotRunning {
        workspace: workspace.to_path_buf(),
    };
    let Some(file) = read_status_file(workspace)? else {
        return Err(not_running());
    };
    let sup = file.supervisor;
    if !sup.alive() {
        return Err(not_running());
    }
    let escalate = force || sup.state == SupervisorState::Stopping;
    let (signal, name) = if escalate {
        (libc::SIGKILL, "SIGKILL")
    } else {
        (libc::SIGTERM, "SIGTERM")
    };
    let start = Instant::now();
    // Checked just above: `pid` is the supervisor, started at `pid_start`.
    if sup.pid > 1
        && let Err(err) = process::kill(sup.pid, signal)
        // ESRCH: it exited in between, which is what we want.
        && err.raw_os_error() != Some(libc::ESRCH)
    {
        return Err(SupervisorError::Signal {
            pid: sup.pid,
            source: err,
        });
    }
    let exited = wait_while(timeout, || process::running(sup.pid, sup.pid_start));
    let mut killed_children = Vec::new();
    if escalate {
        // Read after the supervisor is gone: the file names the replicas as it left them.
        let children = read_status_file(workspace)
            .ok()
            .flatten()
            .map(|f| f.children)
            .unwrap_or(file.children);
        for child in &children {
            if let Some((pid, _)) = child.live_process() {
                kill_replica(pid);
                killed_children.push(pid);
            }
        }
    }
    Ok(DownReport {
        pid: sup.pid,
        signal: name,
        exited,
        waited_ms: millis(start.elapsed()),
        killed_children,
    })
}

/// SIGKILL to a replica's process group and session, then to its steps' cgroups. Call only
/// while `pid` is verified to be the replica (`ChildStatus::live_process`).
fn kill_replica(pid: u32) {
    // Found while `pid` is the replica; its steps that left its session (`setsid`, daemons) are
    // killed through their cgroups once it is gone.
    let steps = orchestrate_base::cgroup::StepsOf::find(pid);
    kill_group(pgid(pid), libc::SIGKILL);
    process::kill_session(pid, libc::SIGKILL);
    if let Some(steps) = steps {
        steps.kill();
    }
}

/// `swarm down` with no supervisor: stops the role processes a dead supervisor left
/// (`orphaned` in [`status`](fn@super::status::status)): SIGTERM (they finish or hand back
/// their tasks), or with `force` SIGKILL to them and everything they run. Returns their names
/// and pids.
pub fn stop_orphans(status: &SwarmStatus, force: bool) -> Vec<(String, u32)> {
    let mut stopped = Vec::new();
    for child in &status.children {
        if child.state != ChildState::Orphaned {
            continue;
        }
        // Verified again just before signalling: the pid is still that process.
        let Some((pid, _)) = child.live_process() else {
            continue;
        };
        if force {
            kill_replica(pid);
        } else {
            signal_child(pid, libc::SIGTERM);
        }
        stopped.push((child.name.clone(), pid));
    }
    stopped
}

/// Polls `cond` until it is false (true) or `timeout` passes (false).
fn wait_while(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_without_a_supervisor_is_a_clear_error() {
        let ws = tempfile::tempdir().unwrap();
        let err = down(ws.path(), Duration::from_secs(1), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no supervisor is running in {}", ws.path().display())
        );
    }
}
