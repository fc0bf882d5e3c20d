//! Listing: where each task of a role is (`orchestrate tasks`), what an inbox holds besides
//! tasks ready to be taken, and the queue's depth.
//!
//! Owns `TaskState`, `TaskInfo` and the inbox notes (ignored entries, files being written).
//! Reads only; never moves a task.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Serialize;

use super::layout::{Layout, read_meta};
use super::lease::{Lease, dead_holder, open_by};
use crate::record::{HistoryEntry, TaskStatus};
use orchestrate_base::fsutil::relative;

/// Where a task is, as `orchestrate tasks` lists it and `--state` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// In the inbox, waiting to be claimed.
    Queued,
    /// Claimed by a role process.
    Running,
    /// Finished successfully (its record is in processed/).
    Processed,
    /// Finished unsuccessfully (its record is in failed/).
    Failed,
    /// An inbox entry no role process takes.
    Ignored,
}

impl TaskState {
    /// The state named `name` (as [`name`](Self::name) writes it), if it is one.
    pub fn of_name(name: &str) -> Option<TaskState> {
        [
            TaskState::Queued,
            TaskState::Running,
            TaskState::Processed,
            TaskState::Failed,
            TaskState::Ignored,
        ]
        .into_iter()
        .find(|state| state.name() == name)
    }

    /// As `tasks` and `show` print it and `--state` takes it (`queued`, `running`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Processed => "processed",
            TaskState::Failed => "failed",
            TaskState::Ignored => "ignored",
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad` keeps width and alignment (`{:<10}` in the tasks table).
        f.pad(self.name())
    }
}

/// A task as listed by `orchestrate tasks`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskInfo {
    /// The role whose queue holds it.
    pub role: String,
    /// The task id.
    pub id: String,
    /// Where in its life it is.
    pub state: TaskState,
    /// Its file or directory, relative to the workspace.
    pub path: String,
    /// A running task's attempt, from its lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// A finished task's end time, the timestamp its record's name starts with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// A running task whose holder died: what happens to it next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_dead: Option<String>,
    /// Why the entry is not read: it leads outside the workspace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Earlier failed records of this task that `orchestrate retry` queued again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<String>,
    /// A failed record that was retried: a later entry of the task supersedes it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retried: bool,
    /// Why an inbox entry is not taken (yet): on an `ignored` entry, and on a queued task that
    /// a process still has open for writing ("being written: ...").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On a swarm whose queue is a database: the machine that runs or ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
}

/// An inbox entry that is not a task ready to be taken, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboxEntry {
    /// Its name in the inbox.
    pub name: String,
    /// Workspace-relative.
    pub path: String,
    /// Why it is not taken.
    pub reason: String,
}

/// What an inbox holds besides tasks ready to be taken.
#[derive(Debug, Clone, Default)]
pub struct InboxExtras {
    /// Entries no role process takes: other extensions, temporary files, directories (hidden
    /// files are left out, as `ls` leaves them out).
    pub ignored: Vec<InboxEntry>,
    /// Task files a process still has open for writing: taken once every writer closed them.
    pub being_written: Vec<InboxEntry>,
}

/// Lists `layout`'s inbox for the entries `list` does not show as plain queued tasks: the ones
/// a role process ignores (with what to do about them) and the task files still being written.
pub fn inbox_extras(layout: &Layout) -> InboxExtras {
    let mut out = InboxExtras::default();
    let Ok(entries) = fs::read_dir(&layout.inbox) else {
        return out;
    };
    let mut entries: Vec<fs::DirEntry> = entries.flatten().collect();
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Hidden files are the temp files of atomic writes and editors: not worth a mention.
        if name.starts_with('.') {
            continue;
        }
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let note = |reason: String| InboxEntry {
            path: relative(&layout.workspace, &entry.path()),
            name: name.clone(),
            reason,
        };
        if layout.task_id(&name).is_some() {
            if let Some(reason) = being_written(&entry.path()) {
                out.being_written.push(note(reason));
            }
            continue;
        }
        out.ignored
            .push(note(ignored_because(layout, &name, is_dir)));
    }
    out
}

/// Why a role process never takes inbox entry `name` (one that is not `<id>.task`).
fn ignored_because(layout: &Layout, name: &str, is_dir: bool) -> String {
    let ext = layout.extension.as_str();
    let (stem, extension) = match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => (stem, Some(extension)),
        _ => (name, None),
    };
    if is_dir {
        format!("a directory: tasks are `<id>{ext}` files directly in the inbox")
    } else if extension == Some("tmp") {
        format!("a temporary file: rename it to `{stem}{ext}` once it is complete")
    } else if let Some(extension) = extension
        && extension.eq_ignore_ascii_case(ext.trim_start_matches('.'))
    {
        format!("the extension is case-sensitive: rename it to `{stem}{ext}`")
    } else if let Some(extension) = extension {
        format!("not a `{ext}` file (extension `.{extension}`)")
    } else {
        format!("not a `{ext}` file (no extension)")
    }
}

/// "being written: ..." when some process has the regular file at `path` open for writing.
fn being_written(path: &Path) -> Option<String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().is_ok_and(|m| m.is_file())
        || orchestrate_base::fsutil::writers(&file) != orchestrate_base::fsutil::Writers::Some
    {
        return None;
    }
    let pids = open_by(path, true);
    let who = match pids.as_slice() {
        [] => "a process has it".to_string(),
        [pid] => format!("pid {pid} has it"),
        pids => format!(
            "pids {} have it",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Some(format!(
        "being written: {who} open for writing; it is taken once closed"
    ))
}

impl TaskInfo {
    /// An entry of `layout`'s role at `path`, with nothing known beyond its state.
    pub fn new(layout: &Layout, id: &str, state: TaskState, path: &Path) -> TaskInfo {
        TaskInfo {
            role: layout.role.clone(),
            id: id.to_string(),
            state,
            path: relative(&layout.workspace, path),
            attempt: None,
            finished: None,
            holder_dead: None,
            refused: None,
            earlier: Vec::new(),
            retried: false,
            reason: None,
            machine: None,
        }
    }
}

/// The earlier records a task's history links to (`orchestrate retry`).
fn linked_records(history: &[HistoryEntry]) -> impl Iterator<Item = &String> {
    history.iter().filter_map(|h| h.record.as_ref())
}

/// Queued (inbox), running (claimed) and finished tasks of a role. A finished entry that leads
/// outside the workspace is listed with `refused` and not read; a failed record that a retry
/// queued again is marked `retried` and linked from the later entry's `earlier`.
pub fn list(layout: &Layout) -> Vec<TaskInfo> {
    let mut out = Vec::new();
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let inside = |path: &Path| orchestrate_base::fsutil::check_inside(&layout.workspace, path);
    for name in names(&layout.inbox) {
        if let Some(id) = layout.task_id(&name) {
            let meta = read_meta(&layout.meta_path(id));
            let mut info = TaskInfo::new(layout, id, TaskState::Queued, &layout.inbox.join(&name));
            info.attempt = (meta.attempts > 0).then_some(meta.attempts);
            info.earlier = linked_records(&meta.history).cloned().collect();
            out.push(info);
        }
    }
    for name in names(&layout.running) {
        if name.starts_with('.') {
            continue;
        }
        let dir = layout.running.join(&name);
        let mut info = TaskInfo::new(layout, &name, TaskState::Running, &dir);
        if let Err(err) = inside(&dir) {
            info.refused = Some(err.to_string());
            out.push(info);
            continue;
        }
        let lease: Option<Lease> =
            orchestrate_base::fsutil::read_inside(&layout.workspace, &dir.join("lease.json"))
                .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(lease) = &lease {
            info.holder_dead = dead_holder(layout, &dir, lease);
        }
        info.attempt = lease.map(|l| l.attempt);
        info.earlier = linked_records(&read_meta(&layout.meta_path(&name)).history)
            .cloned()
            .collect();
        out.push(info);
    }
    let suffix = |name: &str| name.split_once('_').map(|(_, rest)| rest.to_string());
    for (state, parent) in [
        (TaskState::Processed, &layout.processed),
        (TaskState::Failed, &layout.failed),
    ] {
        for name in names(parent) {
            let Some(rest) = suffix(&name) else { continue };
            let Some(id) = rest.strip_prefix(&format!("{}_", layout.role)) else {
                continue;
            };
            let dir = parent.join(&name);
            let mut info = TaskInfo::new(layout, id, state, &dir);
            info.finished = name.split('_').next().map(str::to_string);
            if let Err(err) = inside(&dir) {
                info.refused = Some(err.to_string());
                out.push(info);
                continue;
            }
            let status =
                orchestrate_base::fsutil::read_inside(&layout.workspace, &dir.join("status.json"))
                    .and_then(|b| TaskStatus::from_bytes(&b));
            if let Some(status) = status {
                info.attempt = status.attempt;
                info.earlier = linked_records(&status.history).cloned().collect();
            }
            out.push(info);
        }
    }
    let superseded: std::collections::HashSet<String> =
        out.iter().flat_map(|t| t.earlier.clone()).collect();
    for info in &mut out {
        info.retried = info.state == TaskState::Failed && superseded.contains(&info.path);
    }
    out
}

/// Number of queued task files in an inbox (one directory listing).
pub fn depth(layout: &Layout) -> usize {
    fs::read_dir(&layout.inbox)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| layout.task_id(n).is_some())
                })
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_entries_say_why_and_what_to_do() {
        let layout = Layout::new(Path::new("/ws"), "r", Path::new("inbox/r"));
        let why = |name: &str, is_dir: bool| ignored_because(&layout, name, is_dir);
        assert_eq!(
            why("notes.txt", false),
            "not a `.task` file (extension `.txt`)"
        );
        assert_eq!(why("README", false), "not a `.task` file (no extension)");
        assert_eq!(
            why("x.task.bak", false),
            "not a `.task` file (extension `.bak`)"
        );
        assert_eq!(
            why("UPPER.TASK", false),
            "the extension is case-sensitive: rename it to `UPPER.task`"
        );
        assert_eq!(
            why("Mixed.Task", false),
            "the extension is case-sensitive: rename it to `Mixed.task`"
        );
        assert_eq!(
            why("draft.tmp", false),
            "a temporary file: rename it to `draft.task` once it is complete"
        );
        assert_eq!(
            why("sub.task.d", true),
            "a directory: tasks are `<id>.task` files directly in the inbox"
        );
    }
}
