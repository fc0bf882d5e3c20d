//! Where one role's queue lives on disk, and the sidecar that travels with a task.
//!
//! Owns `Layout` (the inbox, `running/`, `processed/`, `failed/` and sidecar directories of a
//! role), the sidecar `Meta` and reading and writing it. Does not move tasks (the other files
//! of this folder do).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::QueueError;
use crate::record::HistoryEntry;
use orchestrate_base::fsutil::atomic_write;
use orchestrate_base::io_err::FromIo;

/// Task files larger than this are quarantined unread.
pub const DEFAULT_MAX_TASK_BYTES: u64 = 16 * 1024 * 1024;
/// Format of lease.json and sidecar files.
pub(crate) const QUEUE_FORMAT: u32 = 1;

/// Where one role's queue lives.
#[derive(Debug, Clone)]
pub struct Layout {
    pub(crate) workspace: PathBuf,
    /// The role the queue belongs to.
    pub role: String,
    /// Where new tasks are dropped (`WORKSPACE/<inbox>`).
    pub inbox: PathBuf,
    /// Where claimed tasks live while they run: `WORKSPACE/running/<role>/<id>/`.
    pub running: PathBuf,
    pub(crate) processed: PathBuf,
    pub(crate) failed: PathBuf,
    /// The sidecars kept between attempts: `WORKSPACE/.orchestrate/queue/<role>/<id>.json`.
    pub meta: PathBuf,
    /// A task file's name ending (`.task`).
    pub extension: String,
}

impl Layout {
    /// The queue of `role`, whose inbox is `inbox` relative to `workspace`. Creates nothing.
    pub fn new(workspace: &Path, role: &str, inbox: &Path) -> Layout {
        Layout {
            workspace: workspace.to_path_buf(),
            role: role.to_string(),
            inbox: workspace.join(inbox),
            running: workspace.join("running").join(role),
            processed: workspace.join("processed"),
            failed: workspace.join("failed"),
            meta: workspace.join(".orchestrate").join("queue").join(role),
            extension: ".task".to_string(),
        }
    }

    /// Creates the inbox, running, processed, failed and sidecar directories that are missing.
    pub fn create_dirs(&self) -> Result<(), QueueError> {
        for dir in [
            &self.inbox,
            &self.running,
            &self.processed,
            &self.failed,
            &self.meta,
        ] {
            fs::create_dir_all(dir).map_err(QueueError::io_err("create", dir))?;
        }
        Ok(())
    }

    pub(super) fn meta_path(&self, id: &str) -> PathBuf {
        self.meta.join(format!("{id}.json"))
    }

    /// The correlation id that `enqueue` noted beside inbox task `id`, if it did (a task
    /// spooled while the database was unreachable keeps its chain when it is taken in).
    pub fn noted_correlation(&self, id: &str) -> Option<String> {
        read_meta(&self.meta_path(id)).correlation_id
    }

    /// Removes what `enqueue` noted beside inbox task `id`, once the task left the inbox for
    /// a database.
    pub fn forget_notes(&self, id: &str) {
        let _ = fs::remove_file(self.meta_path(id));
    }

    /// The id of an inbox entry, when it is a task file by name (`<id>.task`, not hidden).
    pub fn task_id<'a>(&self, file_name: &'a str) -> Option<&'a str> {
        if file_name.starts_with('.') {
            return None;
        }
        file_name.strip_suffix(self.extension.as_str())
    }
}

/// The sidecar that travels with a task between attempts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub(crate) format_version: u32,
    /// The chain the task belongs to (see [`Enqueued::correlation_id`](super::Enqueued)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// When the task was first enqueued (RFC 3339), where `enqueue` wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) source: Option<String>,
    /// Attempts started so far.
    #[serde(default)]
    pub(crate) attempts: u32,
    /// What ended each earlier attempt (and the failed records a retry came from).
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

/// The sidecar at `path`, and whether there is one (a sidecar that cannot be read counts as
/// there, to be removed with its task).
pub(super) fn read_sidecar(path: &Path) -> (Meta, bool) {
    match fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Meta::default(), false),
        Err(_) => (Meta::default(), true),
        Ok(bytes) => (serde_json::from_slice(&bytes).unwrap_or_default(), true),
    }
}

pub(super) fn read_meta(path: &Path) -> Meta {
    fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

pub(super) fn write_meta(path: &Path, meta: &Meta) -> Result<(), QueueError> {
    let mut meta = meta.clone();
    meta.format_version = QUEUE_FORMAT;
    let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| QueueError::Io {
        action: "encode",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    atomic_write(path, &bytes).map_err(QueueError::io_err("write", path))
}
