//! Quarantine: a bad inbox entry moves to `failed/` unread, never followed, with a status.json
//! saying why.
//!
//! Owns the move of entries that are not tasks we may run (links, FIFOs, directories, bad or
//! non-UTF-8 names, oversized files). Does not judge entries (`claim` does).

use std::fs;
use std::io;

use super::complete::final_name;
use super::error::QueueError;
use super::layout::Layout;
use super::lease::ClaimResult;
use crate::record::TaskStatus;
use orchestrate_base::fsutil::{atomic_write, fsync_dir};
use orchestrate_base::ids::MAX_ID_LEN;
use orchestrate_base::io_err::FromIo;

/// Replaces characters that cannot be part of a directory name we create.
fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    out = out.trim_start_matches('.').to_string();
    out.truncate(MAX_ID_LEN);
    if out.is_empty() {
        "unnamed".into()
    } else {
        out
    }
}

/// Moves a bad inbox entry to `failed/` (never following it) with a status.json saying why.
pub(super) fn quarantine(
    layout: &Layout,
    file_name: &str,
    reason: &str,
) -> Result<ClaimResult, QueueError> {
    quarantine_raw(layout, std::ffi::OsStr::new(file_name), reason)
}

/// Moves inbox entry `file_name` to `failed/` unrun with a status.json saying `reason`: a task a
/// queue refuses (a database queue's name already taken by a live task).
pub fn refuse(layout: &Layout, file_name: &str, reason: &str) -> Result<ClaimResult, QueueError> {
    quarantine(layout, file_name, reason)
}

/// Quarantines an inbox entry whose name is not UTF-8 (it cannot even be shown as a task id).
pub fn quarantine_invalid_name(
    layout: &Layout,
    raw: &std::ffi::OsStr,
) -> Result<ClaimResult, QueueError> {
    quarantine_raw(
        layout,
        raw,
        "the task name is not valid UTF-8; use letters, digits, `.`, `_` and `-`",
    )
}

fn quarantine_raw(
    layout: &Layout,
    raw: &std::ffi::OsStr,
    reason: &str,
) -> Result<ClaimResult, QueueError> {
    let lossy = raw.to_string_lossy();
    let file_name: &str = &lossy;
    let id = layout.task_id(file_name).unwrap_or(file_name);
    let safe = sanitize(id);
    fs::create_dir_all(&layout.failed).map_err(QueueError::io_err("create", &layout.failed))?;
    // A fresh directory each time (two bad names may sanitize alike in the same microsecond).
    let dir = loop {
        let dir = layout.failed.join(final_name(&layout.role, &safe));
        match fs::create_dir(&dir) {
            Ok(()) => break dir,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => {
                return Err(QueueError::Io {
                    action: "create",
                    path: dir,
                    source: err,
                });
            }
        }
    };
    let from = layout.inbox.join(raw);
    let to = dir.join("task");
    match fs::rename(&from, &to) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let _ = fs::remove_dir(&dir);
            return Ok(ClaimResult::Gone);
        }
        Err(err) => {
            let _ = fs::remove_dir(&dir);
            return Err(QueueError::Io {
                action: "quarantine",
                path: from,
                source: err,
            });
        }
    }
    let mut status = TaskStatus::new(&layout.role, id, false, 2, reason);
    status.quarantined = Some(true);
    status.original_name = Some(file_name.to_string());
    atomic_write(&dir.join("status.json"), &status.to_bytes())
        .map_err(QueueError::io_err("write status in", &dir))?;
    let _ = fsync_dir(&layout.inbox);
    let _ = fsync_dir(&layout.failed);
    Ok(ClaimResult::Quarantined {
        id: id.to_string(),
        reason: reason.to_string(),
        dir,
    })
}
