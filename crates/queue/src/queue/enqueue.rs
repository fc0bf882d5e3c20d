//! Putting a task into an inbox durably: a new task (`enqueue`) or a failed one again (`retry`).
//!
//! Owns the enqueue protocol (temp file as the name's lock, fsync, sidecar before the rename,
//! rename without replace, fsync the directory) and reading a task file that must be one
//! regular file. Does not claim or run tasks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::QueueError;
use super::layout::{DEFAULT_MAX_TASK_BYTES, Layout, Meta, QUEUE_FORMAT, write_meta};
use crate::record::HistoryEntry;
use orchestrate_base::fsutil::{fsync_dir, relative, rename_noreplace};
use orchestrate_base::ids::check_id;
use orchestrate_base::io_err::FromIo;

/// A task that was accepted into an inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Enqueued {
    /// The role whose inbox took it.
    pub role: String,
    /// The task id (the file's name without `.task`).
    pub id: String,
    /// Path of the task file, relative to the workspace.
    pub file: String,
    /// The chain this task belongs to: the one given, else the task's own id.
    pub correlation_id: String,
    /// Why it went into the inbox instead of its queue's database (unreachable), if it did: it
    /// is taken in once a role process on this machine reaches the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spooled: Option<String>,
}

/// Adds a task durably. Returns only once the task file and its directory entry are on disk.
pub fn enqueue(
    layout: &Layout,
    id: Option<&str>,
    content: &[u8],
    correlation_id: Option<&str>,
    source: &str,
) -> Result<Enqueued, QueueError> {
    enqueue_with(layout, id, content, correlation_id, source, Vec::new())
}

/// The id a task to enqueue gets: the name given, checked, else a new time-ordered id.
pub fn task_id(given: Option<&str>) -> Result<String, QueueError> {
    match given {
        Some(id) => {
            check_id(id).map_err(|reason| QueueError::BadName {
                name: id.to_string(),
                reason,
            })?;
            Ok(id.to_string())
        }
        None => Ok(orchestrate_base::ids::new_task_id()),
    }
}

/// [`enqueue`] with the history the task's sidecar starts with (a retry's earlier records).
fn enqueue_with(
    layout: &Layout,
    id: Option<&str>,
    content: &[u8],
    correlation_id: Option<&str>,
    source: &str,
    history: Vec<HistoryEntry>,
) -> Result<Enqueued, QueueError> {
    let id = task_id(id)?;
    let correlation_id = correlation_id
        .map(str::to_string)
        .unwrap_or_else(|| id.clone());
    for dir in [&layout.inbox, &layout.meta] {
        fs::create_dir_all(dir).map_err(QueueError::io_err("create", dir))?;
    }
    let task = layout.inbox.join(format!("{id}{}", layout.extension));
    let exists = || QueueError::Exists {
        id: id.clone(),
        inbox: layout.inbox.clone(),
    };
    // A task of the same name still queued or in flight owns the name (and its sidecar).
    if task.exists() || layout.running.join(&id).exists() {
        return Err(exists());
    }
    // The temp file, created exclusively, is the name's lock while we enqueue: a concurrent
    // enqueue of the same name fails here, before touching the sidecar.
    let tmp = layout.inbox.join(format!("{id}.tmp"));
    let mut file = match open_exclusive(&tmp) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && is_stale(&tmp) => {
            // Left by an enqueue that died (a day-old temp file); nothing else owns it.
            let _ = fs::remove_file(&tmp);
            open_exclusive(&tmp).map_err(|_| exists())?
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Err(exists()),
        Err(source) => {
            return Err(QueueError::Io {
                action: "create",
                path: tmp,
                source,
            });
        }
    };
    let written = file.write_all(content).and_then(|()| {
        fault!("enqueue.written");
        file.sync_all()
    });
    drop(file);
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(QueueError::Io {
            action: "write",
            path: tmp,
            source,
        });
    }
    fault!("enqueue.synced");
    // The sidecar before the rename: a task is never visible without its correlation id.
    let meta = Meta {
        format_version: QUEUE_FORMAT,
        correlation_id: Some(correlation_id.clone()),
        enqueued_at: Some(orchestrate_base::clock::now_rfc3339()),
        source: Some(source.to_string()),
        attempts: 0,
        history,
    };
    if let Err(err) = write_meta(&layout.meta_path(&id), &meta) {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    fault!("enqueue.sidecar");
    if let Err(err) = rename_noreplace(&tmp, &task) {
        let _ = fs::remove_file(&tmp);
        if err.kind() == io::ErrorKind::AlreadyExists {
            // Someone put a task of this name in place by hand meanwhile: it keeps the name.
            return Err(exists());
        }
        return Err(QueueError::Io {
            action: "rename into",
            path: task,
            source: err,
        });
    }
    fault!("enqueue.renamed");
    fsync_dir(&layout.inbox).map_err(QueueError::io_err("sync", &layout.inbox))?;
    fault!("enqueue.dir_synced");
    Ok(Enqueued {
        role: layout.role.clone(),
        file: relative(&layout.workspace, &task),
        id,
        correlation_id,
        spooled: None,
    })
}

fn open_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// A temp file nobody has touched for a day.
fn is_stale(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > Duration::from_secs(86_400))
}

/// Moves a failed task back to its role's inbox with its attempt count reset (`orchestrate retry`).
pub fn retry(layout: &Layout, failed_dir: &Path) -> Result<Enqueued, QueueError> {
    let name = failed_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let id = name
        .split_once('_')
        .and_then(|(_, rest)| rest.strip_prefix(&format!("{}_", layout.role)))
        .unwrap_or(&name)
        .to_string();
    orchestrate_base::fsutil::check_inside(&layout.workspace, failed_dir).map_err(|err| {
        QueueError::NotRetryable {
            path: failed_dir.to_path_buf(),
            reason: err.to_string(),
        }
    })?;
    let status: Value = fs::read(failed_dir.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let correlation = status["correlation_id"].as_str().map(str::to_string);
    let content =
        read_regular(&failed_dir.join("task"), DEFAULT_MAX_TASK_BYTES).map_err(|reason| {
            QueueError::NotRetryable {
                path: failed_dir.to_path_buf(),
                reason,
            }
        })?;
    // The new attempts' history starts with the failed record's own, then the record itself.
    let mut history: Vec<HistoryEntry> =
        serde_json::from_value(status["history"].clone()).unwrap_or_default();
    history.push(HistoryEntry {
        attempt: status["attempt"].as_u64().unwrap_or(0) as u32,
        ended: status["timestamp"].as_str().unwrap_or_default().to_string(),
        reason: status["message"].as_str().unwrap_or_default().to_string(),
        charged: None,
        record: Some(relative(&layout.workspace, failed_dir)),
        run_id: status["run_id"].as_str().map(str::to_string),
    });
    let queued = enqueue_with(
        layout,
        Some(&id),
        &content,
        correlation.as_deref(),
        "retry",
        history,
    )?;
    // The failed record stays where it is: nothing is deleted.
    Ok(queued)
}

/// Reads a file that must be one regular file with one name, without following a link or
/// blocking on a FIFO; the error says what it is instead.
pub(crate) fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ELOOP) => "it is a symbolic link".to_string(),
            _ => format!("cannot open it: {err}"),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot inspect it: {e}"))?;
    if !meta.is_file() {
        return Err("it is not a regular file (a directory, FIFO, socket or device)".into());
    }
    if meta.nlink() > 1 {
        return Err("it has other hard links".into());
    }
    if meta.len() > max_bytes {
        return Err(format!(
            "it is {} bytes, over the {max_bytes}-byte limit",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(bytes)
}
