//! The queue's one error type: what failed, on which path, and why.
//!
//! Owns `QueueError` and how an `io::Error` becomes one. Does not decide what is retried.

use std::io;
use std::path::PathBuf;

use orchestrate_base::io_err::FromIo;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("a task named `{id}` is already queued or running for {}; choose another name", inbox.display())]
    Exists { id: String, inbox: PathBuf },
    #[error("`{name}` is not a valid task name: {reason}")]
    BadName { name: String, reason: String },
    #[error("the task in {} cannot be retried: {reason}", path.display())]
    NotRetryable { path: PathBuf, reason: String },
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
