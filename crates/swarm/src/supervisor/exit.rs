//! Why a replica's process ended, as data ([`ExitReason`]): serialized into `status.json` and the
//! event log as it is, shown as `exit 3`, `SIGSEGV`, `not ready within 30s`.
//!
//! Does not wait for or reap processes (`proc` does).

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use orchestrate_base::human;

/// Why a replica's process ended, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum ExitReason {
    /// Exited with this status code.
    Exited { code: i32 },
    /// Killed by this signal (by us only when stopping; see the event log).
    Signaled { signal: i32 },
    /// Killed because it did not report ready within the timeout.
    NotReady { timeout_ms: u64 },
    /// Could not be started at all.
    SpawnFailed { message: String },
    /// Its status could not be read (someone else reaped it).
    Lost { message: String },
}

impl ExitReason {
    pub(super) fn of(status: ExitStatus) -> ExitReason {
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitReason::Exited { code },
            (None, Some(signal)) => ExitReason::Signaled { signal },
            (None, None) => ExitReason::Exited {
                code: status.into_raw(),
            },
        }
    }

    /// A death of the process's own making (as opposed to one we caused or a failed start).
    pub(super) fn is_own_death(&self) -> bool {
        matches!(
            self,
            ExitReason::Exited { .. } | ExitReason::Signaled { .. }
        )
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Exited { code } => write!(f, "exit {code}"),
            ExitReason::Signaled { signal } => match signal_name(*signal) {
                Some(name) => write!(f, "{name}"),
                None => write!(f, "signal {signal}"),
            },
            ExitReason::NotReady { timeout_ms } => write!(
                f,
                "not ready within {}",
                human::duration(Duration::from_millis(*timeout_ms))
            ),
            ExitReason::SpawnFailed { message } => write!(f, "{message}"),
            ExitReason::Lost { message } => write!(f, "lost: {message}"),
        }
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => return None,
    })
}
