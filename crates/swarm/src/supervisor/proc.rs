//! One running process of a replica: spawned as the leader of a new session with the ready pipe,
//! watched through its pidfd, signalled as a group, reaped only by its own actor; and the
//! registry of managed pids that keeps the orphan reaper off them.
//!
//! Does not decide when to stop or restart (the replica's actor does); the OS calls themselves
//! are `orchestrate_base::process`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use orchestrate_base::process::{self, kill_group};

use super::exit::ExitReason;
use super::ready::{READY_FD_ENV, ReadyPipe, ready_pipe};
use super::spec::ChildSpec;

/// Poll interval where no descriptor can be waited on (exit without pidfd, `down`, `wait_up`).
pub(super) const POLL: Duration = Duration::from_millis(20);

/// Pids of the children that supervisors in this process manage; the orphan reaper leaves them
/// alone. Spawning a managed child, reaping one and the reaper's scan all hold this lock, so a
/// status is never reaped by the wrong party, even when a pid is reused at once.
static MANAGED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

pub(super) fn managed() -> MutexGuard<'static, Vec<u32>> {
    // Nothing panics while holding it; if something did, the list is still consistent.
    MANAGED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One running process of a replica.
pub(super) struct Proc {
    child: std::process::Child,
    pub(super) pid: u32,
    /// Readable once the process has exited (and before it is reaped).
    pub(super) exit: Option<AsyncFd<OwnedFd>>,
    pub(super) ready: ReadyPipe,
    reaped: bool,
}

impl Proc {
    pub(super) fn spawn(spec: &ChildSpec, cwd: &Path) -> Result<Proc, String> {
        let Some((program, args)) = spec.argv.split_first() else {
            return Err("cannot run an empty command line".to_string());
        };
        let (read_end, write_end) =
            ready_pipe().map_err(|e| format!("failed to create the ready pipe: {e}"))?;
        let write_fd = write_end.as_raw_fd();
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env(READY_FD_ENV, write_fd.to_string())
            .current_dir(cwd)
            .stdin(Stdio::null());
        // A new session, hence a new process group led by the child; the write end is the one
        // descriptor of ours it keeps across exec.
        process::new_session(&mut command);
        process::keep_across_exec(&mut command, write_fd);
        let child = {
            let mut managed = managed();
            let child = command
                .spawn()
                .map_err(|e| format!("failed to start `{program}`: {e}"))?;
            managed.push(child.id());
            child
        };
        // Only the child holds the write end now.
        drop(write_end);
        let pid = child.id();
        Ok(Proc {
            child,
            pid,
            exit: process::exit_watch(pid),
            ready: ReadyPipe::new(read_end),
            reaped: false,
        })
    }

    /// Reaps the exited process. Call only once [`exited`] has returned. Never blocks (the
    /// registry lock is held): a process that somehow still runs is left to `Drop`, which kills
    /// it and hands it to the orphan reaper.
    pub(super) fn reap(&mut self) -> ExitReason {
        let mut managed = managed();
        let status = match self.child.try_wait() {
            Ok(Some(status)) => ExitReason::of(status),
            Ok(None) => {
                return ExitReason::Lost {
                    message: format!("pid {} was reported exited but still runs", self.pid),
                };
            }
            Err(err) => ExitReason::Lost {
                message: format!("failed to wait for pid {}: {err}", self.pid),
            },
        };
        self.reaped = true;
        managed.retain(|&pid| pid != self.pid);
        status
    }
}

impl Drop for Proc {
    /// If the actor is dropped mid-watch (the supervisor's future was dropped), the replica must
    /// not live on unsupervised; the zombie is left to the orphan reaper.
    fn drop(&mut self) {
        if !self.reaped {
            signal_child(self.pid, libc::SIGKILL);
            managed().retain(|&pid| pid != self.pid);
        }
    }
}

/// Returns once `pid` (our unreaped child) has exited, without reaping it.
pub(super) async fn exited(pidfd: Option<&AsyncFd<OwnedFd>>, pid: u32) {
    // Readiness is not cleared: an exited child stays exited, so a second wait returns at once.
    if let Some(fd) = pidfd
        && fd.readable().await.is_ok()
    {
        return;
    }
    while !process::exited_unreaped(pid) {
        tokio::time::sleep(POLL).await;
    }
}

pub(super) fn pgid(pid: u32) -> i32 {
    // 0 makes kill_group a no-op; a pid always fits.
    i32::try_from(pid).unwrap_or(0)
}

/// Signals an unreaped child's group, and the child itself in case it left the group.
///
/// One signal per process: a role process counts signals (the second SIGTERM means "stop now"),
/// so a leader still in its group must not get the group's signal and its own.
pub(super) fn signal_child(pid: u32, signal: i32) {
    kill_group(pgid(pid), signal);
    if process::group_of(pid) != Some(pgid(pid)) {
        let _ = process::kill(pid, signal);
    }
}
