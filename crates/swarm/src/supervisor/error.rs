//! The supervisor's one error type: what `swarm up / down / status / reload` can fail with,
//! each message a fragment that reads after "failed to" or a whole sentence with its remedy.
//!
//! Does not print it: the binary crate's one renderer does.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use orchestrate_base::human;
use orchestrate_base::io_err::FromIo;

/// What `swarm up`, `down`, `status` and `reload` fail with; the binary crate renders it.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A swarm file or directory (status, lock, event log) could not be opened, written or created.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`open`, `write`, `create`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Another supervisor holds the workspace's lock.
    #[error(
        "failed to start the supervisor: another one ({}) is running in {}; see `orchestrate swarm status`, or stop it with `orchestrate swarm down`",
        pid_text(*pid),
        workspace.display()
    )]
    AlreadyRunning {
        /// The workspace.
        workspace: PathBuf,
        /// The holder's pid, from the lock file (`None` when it cannot be read).
        pid: Option<u32>,
    },
    /// `swarm down` found no supervisor running.
    #[error("no supervisor is running in {}", workspace.display())]
    NotRunning {
        /// The workspace.
        workspace: PathBuf,
    },
    /// The status file is not valid JSON of its shape.
    #[error("failed to read {}: not a valid swarm status file: {message}", path.display())]
    Corrupt {
        /// The status file.
        path: PathBuf,
        /// What the JSON parser said.
        message: String,
    },
    /// The status file was written by a newer orchestrate (its `format_version` is higher).
    #[error(
        "failed to read {}: format_version {version} is newer than this orchestrate understands; upgrade orchestrate",
        path.display()
    )]
    TooNew {
        /// The status file.
        path: PathBuf,
        /// The `format_version` it has.
        version: u64,
    },
    /// `swarm down` could not signal the supervisor.
    #[error("failed to signal the supervisor (pid {pid}): {source}")]
    Signal {
        /// The supervisor's pid.
        pid: u32,
        /// What `kill(2)` returned.
        #[source]
        source: io::Error,
    },
    /// `swarm up --detach`: the supervisor died before its replicas were up.
    #[error(
        "failed to bring the swarm up: the supervisor (pid {pid}) exited ({how}) before its children were up"
    )]
    ExitedEarly {
        /// The supervisor's pid.
        pid: u32,
        /// How it ended (its exit code or signal).
        how: String,
    },
    /// `swarm up --detach`: the replicas were not all running (or failed) within the wait.
    #[error(
        "failed to bring the swarm up within {}: still waiting for {}",
        human::duration(*waited),
        pending.join(", ")
    )]
    NotUp {
        /// The supervisor's pid.
        pid: u32,
        /// How long `up` waited.
        waited: Duration,
        /// What it still waited for: each replica (`name (state)`), or the supervisor itself.
        pending: Vec<String>,
    },
}

impl FromIo for SupervisorError {
    fn from_io(action: &'static str, path: PathBuf, source: io::Error) -> Self {
        SupervisorError::Io {
            action,
            path,
            source,
        }
    }
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
}
