//! The queue's one error type: what failed, on which path, and why.
//!
//! Owns `QueueError` and how an `io::Error` becomes one. Does not decide what is retried.

use std::io;
use std::path::PathBuf;

use orchestrate_base::io_err::FromIo;

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A file operation failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What was being done, read after "failed to" (`rename`, `lock`).
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A task of that id is already queued or running: ids are unique per role.
    #[error("a task named `{id}` is already queued or running for {}; choose another name", inbox.display())]
    Exists {
        /// The task id asked for.
        id: String,
        /// The role's inbox.
        inbox: PathBuf,
    },
    /// The task name given is not a valid task id (`ids::check_id` says why).
    #[error("`{name}` is not a valid task name: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The queue's database failed or could not be reached (`reason` names it, never a
    /// password).
    #[error("{reason}")]
    Backend {
        /// What failed and why, as its backend says it.
        reason: String,
    },
    /// The queue's database cannot be reached just now (its link says so once, and reconnects).
    #[error("{reason}")]
    Unavailable {
        /// Why, as its backend says it.
        reason: String,
    },
    /// The attempt no longer holds its task: its lease ran out and the task was requeued (and
    /// perhaps run again elsewhere), so this completion was refused.
    #[error(
        "attempt {attempt} of `{id}` no longer holds the task (its lease ran out and the task was \
         requeued); its result was not recorded and its files are kept in {}", kept.display()
    )]
    Superseded {
        /// The task id.
        id: String,
        /// The attempt that was refused.
        attempt: u32,
        /// Where its files are now.
        kept: PathBuf,
    },
    /// `orchestrate retry` was pointed at something it cannot queue again.
    #[error("the task in {} cannot be retried: {reason}", path.display())]
    NotRetryable {
        /// The failed record.
        path: PathBuf,
        /// Why it cannot be queued again.
        reason: String,
    },
}

impl FromIo for QueueError {
    fn from_io(action: &'static str, path: PathBuf, source: io::Error) -> Self {
        QueueError::Io {
            action,
            path,
            source,
        }
    }
}
