//! The error of reading a run back; an I/O failure is wrapped with its action and path through
//! the tree's one `FromIo` (`ObserveError::io_err`).
//!
//! Does not decide exit codes or print anything: the binary renders these.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(
        "`{id}` is not a run id: {reason} (run ids look like 20261124T005538Z-a1b2c3; task runs \
         can be named by their directory under processed/ or failed/)"
    )]
    BadId { id: String, reason: String },
    #[error(
        "there is no run `{id}`: neither {} nor a task run of that name under processed/, failed/ \
         or running/; list runs with `ls {}`",
        runs_dir.join(id).display(),
        runs_dir.display()
    )]
    NoSuchRun { id: String, runs_dir: PathBuf },
    #[error(
        "refusing to read run `{id}`: {reason}; records are read only inside the workspace \
         (move or remove the entry)"
    )]
    Outside { id: String, reason: String },
    #[error("run {id} cannot be read ({}): {reason}", path.display())]
    Unreadable {
        id: String,
        path: PathBuf,
        reason: String,
    },
    #[error("run {id} has no logs{which}; {hint}")]
    NoLogs {
        id: String,
        which: String,
        hint: String,
    },
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("failed to write the output: {0}")]
    Output(#[source] io::Error),
}

impl orchestrate_base::io_err::FromIo for ObserveError {
    fn from_io(action: &'static str, path: PathBuf, source: io::Error) -> Self {
        ObserveError::Io {
            action,
            path,
            source,
        }
    }
}
