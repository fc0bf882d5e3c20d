//! The supervisor's one error type: what `swarm up / down / status / reload` can fail with,
//! each message a fragment that reads after "failed to" or a whole sentence with its remedy.
//!
//! Does not print it: the binary crate's one renderer does.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use orchestrate_base::human;
use orchestrate_base::io_err::FromIo;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "failed to start the supervisor: another one ({}) is running in {}; see `orchestrate swarm status`, or stop it with `orchestrate swarm down`",
        pid_text(*pid),
        workspace.display()
    )]
    AlreadyRunning {
        workspace: PathBuf,
        pid: Option<u32>,
    },
    #[error("no supervisor is running in {}", workspace.display())]
    NotRunning { workspace: PathBuf },
    #[error("failed to read {}: not a valid swarm status file: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "failed to read {}: format_version {version} is newer than this orchestrate understands; upgrade orchestrate",
        path.display()
    )]
    TooNew { path: PathBuf, version: u64 },
    #[error("failed to signal the supervisor (pid {pid}): {source}")]
    Signal {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error(
        "failed to bring the swarm up: the supervisor (pid {pid}) exited ({how}) before its children were up"
    )]
    ExitedEarly { pid: u32, how: String },
    #[error(
        "failed to bring the swarm up within {}: still waiting for {}",
        human::duration(*waited),
        pending.join(", ")
    )]
    NotUp {
        pid: u32,
        waited: Duration,
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
