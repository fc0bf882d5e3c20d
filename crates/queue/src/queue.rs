//! The filesystem task queue: `inbox/<role>/*.task` in, `processed/` or `failed/` out.
//!
//! Owns: the protocol of `../PROTOCOL.md` on one machine: durable enqueue (tmp, fsync, rename
//! without replace, fsync dir), claiming with a lock and one rename, leases, completion by one
//! rename of the task's directory, recovery of tasks whose owners died, quarantine of bad input,
//! and listing. Does not run workflows (`worker` does) and does not watch directories.
//!
//! Layout, all inside WORKSPACE so every move is a rename on one filesystem:
//!
//! ```text
//! inbox/<role>/<id>.task                   queued (the inbox directory is configurable per role)
//! running/<role>/<id>/task                 claimed: the task file, locked for the whole attempt
//! running/<role>/<id>/lease.json           who holds it (pid, start time, boot id), attempt
//! running/<role>/<id>/events.jsonl etc.    the attempt's run records: events.jsonl, logs/
//! processed/<UTC ts>_<role>_<id>/          finished: task, status.json, lease.json, run records
//! failed/<UTC ts>_<role>_<id>/             failed or quarantined, with status.json saying why
//! .orchestrate/queue/<role>/<id>.json      sidecar: correlation id, attempts so far, history
//! ```
//!
//! The lock is the truth about ownership: the claimer takes `flock` on the task file and the
//! descriptor is inherited by every process of the attempt, so the lock is free exactly when
//! every process of the attempt is gone, however it died. Nothing is decided by age alone.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::{HistoryEntry, TaskStatus};
use orchestrate_base::fsutil::{atomic_write, fsync_dir, rename_noreplace, write_unpublished};

/// Task files larger than this are quarantined unread.
pub const DEFAULT_MAX_TASK_BYTES: u64 = 16 * 1024 * 1024;
/// Format of lease.json and sidecar files.
pub const QUEUE_FORMAT: u32 = 1;

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

use orchestrate_base::fsutil::relative;
use orchestrate_base::ids::{MAX_ID_LEN, check_id};
use orchestrate_base::io_err::FromIo;
use orchestrate_base::process;

/// Where one role's queue lives.
#[derive(Debug, Clone)]
pub struct Layout {
    pub workspace: PathBuf,
    pub role: String,
    pub inbox: PathBuf,
    pub running: PathBuf,
    pub processed: PathBuf,
    pub failed: PathBuf,
    pub meta: PathBuf,
    pub extension: String,
}

impl Layout {
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

    fn meta_path(&self, id: &str) -> PathBuf {
        self.meta.join(format!("{id}.json"))
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
    pub format_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// What ended each earlier attempt (and the failed records a retry came from).
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

fn read_meta(path: &Path) -> Meta {
    fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn write_meta(path: &Path, meta: &Meta) -> Result<(), QueueError> {
    let mut meta = meta.clone();
    meta.format_version = QUEUE_FORMAT;
    let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| QueueError::Io {
        action: "encode",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    atomic_write(path, &bytes).map_err(QueueError::io_err("write", path))
}

/// A task that was accepted into an inbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enqueued {
    pub role: String,
    pub id: String,
    /// Path of the task file, relative to the workspace.
    pub file: String,
    pub correlation_id: String,
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

/// [`enqueue`] with the history the task's sidecar starts with (a retry's earlier records).
fn enqueue_with(
    layout: &Layout,
    id: Option<&str>,
    content: &[u8],
    correlation_id: Option<&str>,
    source: &str,
    history: Vec<HistoryEntry>,
) -> Result<Enqueued, QueueError> {
    let id = match id {
        Some(id) => {
            check_id(id).map_err(|reason| QueueError::BadName {
                name: id.to_string(),
                reason,
            })?;
            id.to_string()
        }
        None => orchestrate_base::ids::new_task_id(),
    };
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

/// Who holds a claimed task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    pub format_version: u32,
    pub role: String,
    pub id: String,
    pub attempt: u32,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: with the pid and boot id, names one process for good.
    pub pid_start: u64,
    pub boot_id: String,
    pub claimed_at: String,
    pub heartbeat_at: String,
}

/// The identity of this process, for leases.
#[derive(Debug, Clone)]
pub struct Owner {
    pub pid: u32,
    pub pid_start: u64,
    pub boot_id: String,
}

impl Owner {
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            pid_start: process::start_time(pid).unwrap_or(0),
            boot_id: process::boot_id(),
        }
    }

    /// Whether the process this identity names is still alive (same pid, start time and boot).
    pub fn alive(&self) -> bool {
        process::alive(self.pid, self.pid_start, &self.boot_id)
    }
}

/// A task this process holds.
#[derive(Debug)]
pub struct Claim {
    pub id: String,
    pub dir: PathBuf,
    pub task_path: PathBuf,
    /// The locked task file. Keep it open for the whole attempt; pass it to every process of the
    /// attempt so the lock outlives this process if it dies.
    pub lock: File,
    pub attempt: u32,
    pub meta: Meta,
    pub lease: Lease,
    /// The task's bytes, read once at claim time: what the workflow is given, and what the
    /// record keeps (`keep_given` puts them back should the file change meanwhile).
    pub content: Vec<u8>,
}

impl Claim {
    pub fn lease_path(&self) -> PathBuf {
        self.dir.join("lease.json")
    }

    /// The attempt's RUN_ROOT: the task directory itself, so that its records (events.jsonl,
    /// state.json, logs/) move with it in the final rename.
    pub fn run_root(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Rewrites the lease (no fsync: the lock, not the lease, decides ownership).
    pub fn heartbeat(&mut self) {
        self.lease.heartbeat_at = orchestrate_base::clock::now_rfc3339();
        if let Ok(bytes) = serde_json::to_vec_pretty(&self.lease) {
            let _ = write_plain(&self.lease_path(), &bytes);
        }
    }
}

/// Replaces a file by rename without fsync: readers never see a partial file.
fn write_plain(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// What came of trying to claim one inbox entry.
#[derive(Debug)]
pub enum ClaimResult {
    Claimed(Box<Claim>),
    /// Someone else holds it: try again later.
    Busy,
    /// A process still has it open for writing: look again once it is closed.
    Writing,
    /// It is gone (another worker took it, or it was removed).
    Gone,
    /// Still being written by a person (modified within the settle window): look again after it.
    Settling(Duration),
    /// Not a task we may run: moved to `failed/` with the reason.
    Quarantined {
        id: String,
        reason: String,
        dir: PathBuf,
    },
}

/// Claims inbox entry `file_name` for `owner`. A file that any process has open for writing is
/// never taken (`Writing`); where that cannot be known (`fsutil::Writers::Unknown`), `settle` is
/// how long a file written in place must have been still before it is taken (renamed-in files
/// are older than their rename). The content is read once, here.
pub fn claim(
    layout: &Layout,
    file_name: &str,
    owner: &Owner,
    settle: Duration,
    max_bytes: u64,
) -> Result<ClaimResult, QueueError> {
    let Some(id) = layout.task_id(file_name) else {
        return Ok(ClaimResult::Gone);
    };
    let path = layout.inbox.join(file_name);
    let file = match open_task(layout, file_name, &path)? {
        ControlFlow::Continue(file) => file,
        ControlFlow::Break(result) => return Ok(result),
    };
    let meta = file
        .metadata()
        .map_err(QueueError::io_err("inspect", &path))?;
    if let Some(reason) = unfit_kind_or_name(&meta, id) {
        drop(file);
        return quarantine(layout, file_name, &reason);
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Ok(ClaimResult::Busy),
        Err(fs::TryLockError::Error(err)) => {
            return Err(QueueError::Io {
                action: "lock",
                path,
                source: err,
            });
        }
    }
    fault!("claim.locked");
    if let Some(reason) = unfit_links_or_size(&meta, max_bytes) {
        drop(file);
        return quarantine(layout, file_name, &reason);
    }
    if let Some(not_yet) = still_written(&file, &meta, settle) {
        return Ok(not_yet);
    }
    // Read before the move, while the file is known to be closed: these bytes are the task.
    let mut content = Vec::with_capacity(meta.len() as usize);
    Read::by_ref(&mut &file)
        .take(max_bytes)
        .read_to_end(&mut content)
        .map_err(QueueError::io_err("read", &path))?;
    let dir = layout.running.join(id);
    let task_path = match move_to_running(&path, &dir)? {
        ControlFlow::Continue(task_path) => task_path,
        ControlFlow::Break(result) => return Ok(result),
    };
    let sidecar = read_meta(&layout.meta_path(id));
    // The attempt is counted in the lease, before the workflow runs: a task that kills its
    // worker is charged even then (recovery carries the count into the sidecar).
    let attempt = sidecar.attempts + 1;
    let lease = write_lease(layout, id, owner, attempt, &dir)?;
    fault!("claim.leased");
    Ok(ClaimResult::Claimed(Box::new(Claim {
        id: id.to_string(),
        dir,
        task_path,
        lock: file,
        attempt,
        meta: sidecar,
        lease,
        content,
    })))
}

/// Opens an inbox entry without following a link or blocking on a FIFO; an entry that cannot
/// be a task is quarantined, one that is gone is [`ClaimResult::Gone`].
fn open_task(
    layout: &Layout,
    file_name: &str,
    path: &Path,
) -> Result<ControlFlow<ClaimResult, File>, QueueError> {
    let quarantined = |reason: &str| quarantine(layout, file_name, reason).map(ControlFlow::Break);
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => Ok(ControlFlow::Continue(file)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            Ok(ControlFlow::Break(ClaimResult::Gone))
        }
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => quarantined(
            "the task is a symbolic link; tasks must be regular files (links are never followed)",
        ),
        Err(err) if err.raw_os_error() == Some(libc::ENXIO) => {
            quarantined("the task is a FIFO or socket with no writer; tasks must be regular files")
        }
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            quarantined(&format!("the task file is unreadable: {err}"))
        }
        Err(err) => Err(QueueError::Io {
            action: "open",
            path: path.to_path_buf(),
            source: err,
        }),
    }
}

/// Why an opened entry is not a task we may run, judged before it is locked: not a regular
/// file, or a name that is not allowed.
fn unfit_kind_or_name(meta: &fs::Metadata, id: &str) -> Option<String> {
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo_like() {
            "a FIFO, socket or device"
        } else {
            "not a regular file"
        };
        return Some(format!("the task is {what}; tasks must be regular files"));
    }
    check_id(id)
        .err()
        .map(|reason| format!("the task name is not allowed: {reason}"))
}

/// Why a locked entry is not a task we may run: other hard links, or over `max_bytes`.
fn unfit_links_or_size(meta: &fs::Metadata, max_bytes: u64) -> Option<String> {
    if meta.nlink() > 1 {
        return Some(
            "the task has other hard links; a task must be one file with one name (copy it instead)"
                .to_string(),
        );
    }
    (meta.len() > max_bytes).then(|| {
        format!(
            "the task is {} bytes, over the {max_bytes}-byte limit",
            meta.len()
        )
    })
}

/// `Writing` or `Settling` when the file may still be being written, `None` when it is whole.
fn still_written(file: &File, meta: &fs::Metadata, settle: Duration) -> Option<ClaimResult> {
    match orchestrate_base::fsutil::writers(file) {
        orchestrate_base::fsutil::Writers::Some => Some(ClaimResult::Writing),
        // Closed by every writer: complete, however recently it changed.
        orchestrate_base::fsutil::Writers::None => None,
        orchestrate_base::fsutil::Writers::Unknown => {
            let modified = meta.modified().ok()?;
            let age = SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default();
            (age < settle && !settle.is_zero()).then(|| ClaimResult::Settling(settle - age))
        }
    }
}

/// Makes the claim's directory `dir` and renames the task into it as `dir/task`: the one
/// rename that takes the task. `Busy` while a claim of the same id is still in `running/`.
fn move_to_running(
    path: &Path,
    dir: &Path,
) -> Result<ControlFlow<ClaimResult, PathBuf>, QueueError> {
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            // A claim of the same id is still in running/ (a live attempt, or a dead one that
            // recovery has not put back yet): leave this one queued until that is resolved.
            return Ok(ControlFlow::Break(ClaimResult::Busy));
        }
        Err(err) => {
            return Err(QueueError::Io {
                action: "create",
                path: dir.to_path_buf(),
                source: err,
            });
        }
    }
    fault!("claim.dir_made");
    let task_path = dir.join("task");
    if let Err(err) = fs::rename(path, &task_path) {
        let _ = fs::remove_dir(dir);
        if err.kind() == io::ErrorKind::NotFound {
            return Ok(ControlFlow::Break(ClaimResult::Gone));
        }
        return Err(QueueError::Io {
            action: "claim",
            path: path.to_path_buf(),
            source: err,
        });
    }
    fault!("claim.renamed");
    Ok(ControlFlow::Continue(task_path))
}

/// Writes the claim's `lease.json` in `dir`: who holds attempt `attempt`. Creating files is the
/// dominant cost of a claim on ext4, so the claim writes just this one.
fn write_lease(
    layout: &Layout,
    id: &str,
    owner: &Owner,
    attempt: u32,
    dir: &Path,
) -> Result<Lease, QueueError> {
    let now = orchestrate_base::clock::now_rfc3339();
    let lease = Lease {
        format_version: QUEUE_FORMAT,
        role: layout.role.clone(),
        id: id.to_string(),
        attempt,
        pid: owner.pid,
        pid_start: owner.pid_start,
        boot_id: owner.boot_id.clone(),
        claimed_at: now.clone(),
        heartbeat_at: now,
    };
    let bytes = serde_json::to_vec_pretty(&lease).unwrap_or_default();
    // Written in place: the directory is new, and a reader that finds it half-written (or
    // missing) falls back to the sidecar's count.
    fs::write(dir.join("lease.json"), &bytes).map_err(QueueError::io_err("write lease in", dir))?;
    Ok(lease)
}

trait FileTypeExt2 {
    fn is_fifo_like(&self) -> bool;
}

impl FileTypeExt2 for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo() || self.is_socket() || self.is_block_device() || self.is_char_device()
    }
}

/// `processed/` or `failed/` entry name: UTC time first so a listing sorts by finish time.
fn final_name(role: &str, id: &str) -> String {
    let now = chrono::Utc::now();
    format!("{}_{role}_{id}", now.format("%Y%m%dT%H%M%S%.6fZ"))
}

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
fn quarantine(layout: &Layout, file_name: &str, reason: &str) -> Result<ClaimResult, QueueError> {
    quarantine_raw(layout, std::ffi::OsStr::new(file_name), reason)
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

/// Writes `status.json` into the claim's directory and fsyncs it (the commit point: from here on
/// the attempt counts as finished), then moves the directory with one rename into `processed/` or
/// `failed/` and drops the sidecar. Returns the final path.
///
/// The move is not fsynced: should a power loss undo it, the directory is back in `running/`
/// with a whole status.json and a dead owner, and recovery finishes the move (never reruns
/// the task). That leaves one journal commit per task instead of two.
pub fn complete(
    layout: &Layout,
    claim: &Claim,
    success: bool,
    status: &TaskStatus,
) -> Result<PathBuf, QueueError> {
    let bytes = match keep_given(claim) {
        None => status.to_bytes(),
        Some(note) => {
            let mut status = status.clone();
            status.task_changed = Some(note);
            status.to_bytes()
        }
    };
    // The task's directory is published by the move below, after this write is on disk.
    write_unpublished(&claim.dir.join("status.json"), &bytes)
        .map_err(QueueError::io_err("write status in", &claim.dir))?;
    fault!("complete.status_written");
    let parent = if success {
        &layout.processed
    } else {
        &layout.failed
    };
    let dest = finish_move(layout, &claim.dir, &claim.id, parent, MoveSync::Lazy)?;
    let _ = fs::remove_file(layout.meta_path(&claim.id));
    Ok(dest)
}

/// Makes the claim's `task` file hold exactly the bytes the workflow was given
/// (`Claim::content`). Something that wrote to the file after the claim (a writer that opened it
/// in the instant between the check and the move, a step writing to `${task.path}`) would make
/// the record disagree with what ran: its version is kept beside it as `task.changed` and the
/// given bytes are put back. Returns what status.json should say about it, if anything changed.
fn keep_given(claim: &Claim) -> Option<String> {
    use std::os::unix::fs::FileExt;
    // Through the lock's descriptor: the very file that was claimed, whatever its name is now.
    let limit = claim.content.len() + 1;
    let mut found = Vec::with_capacity(limit);
    let mut buf = [0u8; 8192];
    while found.len() < limit {
        match claim.lock.read_at(&mut buf, found.len() as u64) {
            Ok(0) => break,
            Ok(n) => found.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Some(format!(
                    "could not check that the task file still holds the {} bytes the workflow was given: {err}",
                    claim.content.len()
                ));
            }
        }
    }
    if found == claim.content {
        return None;
    }
    // Read the whole changed version (the check above stopped one byte past the given length).
    let changed = fs::read(&claim.task_path).unwrap_or(found);
    let kept = claim.dir.join("task.changed");
    let restore = || -> io::Result<()> {
        write_unpublished(&kept, &changed)?;
        let mut task = OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&claim.task_path)?;
        task.write_all(&claim.content)?;
        task.sync_all()
    };
    Some(match restore() {
        Ok(()) => format!(
            "the task file was written to after it was claimed: the workflow was given {} bytes, \
             the file then held {}; `task` holds the bytes given, `task.changed` the later version",
            claim.content.len(),
            changed.len()
        ),
        Err(err) => format!(
            "the task file was written to after it was claimed (the workflow was given {} bytes, \
             the file then held {}) and could not be put back: {err}",
            claim.content.len(),
            changed.len()
        ),
    })
}

/// Whether a final move is made durable before it returns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MoveSync {
    /// fsync both parents: the move is the record (recovery's moves to `failed/`).
    Durable,
    /// No fsync: the status.json already on disk is the record and recovery redoes the move.
    Lazy,
}

fn finish_move(
    layout: &Layout,
    dir: &Path,
    id: &str,
    parent: &Path,
    sync: MoveSync,
) -> Result<PathBuf, QueueError> {
    fs::create_dir_all(parent).map_err(QueueError::io_err("create", parent))?;
    loop {
        let dest = parent.join(final_name(&layout.role, id));
        match rename_noreplace(dir, &dest) {
            Ok(()) => {
                fault!("finish.renamed");
                if sync == MoveSync::Durable {
                    fsync_dir(parent).map_err(QueueError::io_err("sync", parent))?;
                    fsync_dir(&layout.running)
                        .map_err(QueueError::io_err("sync", &layout.running))?;
                }
                fault!("finish.synced");
                return Ok(dest);
            }
            // Two finishes of one id in the same microsecond: take the next name.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => {
                return Err(QueueError::Io {
                    action: "move",
                    path: dir.to_path_buf(),
                    source: err,
                });
            }
        }
    }
}

/// What recovery did with one claimed entry.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    pub id: String,
    pub attempt: u32,
    /// `requeued` or `failed`.
    pub action: String,
    pub reason: String,
}

/// Puts back the claimed tasks of `layout.role` whose every process is gone: into the inbox for
/// another attempt, or into `failed/` once `max_attempts` attempts have started. A claim whose
/// lock is held is left alone (its processes still run), unless its holder is dead or hung
/// past `hung_after` and `kill_hung` is set: then its step's process group is killed first, so
/// that the next pass finds the lock free. Serialized per role by a recovery lock.
pub fn recover(
    layout: &Layout,
    max_attempts: u32,
    hung_after: Option<Duration>,
) -> Result<Vec<Recovered>, QueueError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(&layout.running) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(err) => {
            return Err(QueueError::Io {
                action: "list",
                path: layout.running.clone(),
                source: err,
            });
        }
    };
    let Some(_guard) = lock_recovery(layout)? else {
        return Ok(out);
    };
    fault!("recover.locked");
    for entry in entries.flatten() {
        let dir = entry.path();
        let Some(id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if id.starts_with('.') {
            continue;
        }
        let Some(task) = lock_dead_claim(layout, &dir, &id, hung_after)? else {
            continue;
        };
        out.push(recover_claim(layout, &dir, id, task, max_attempts)?);
    }
    Ok(out)
}

/// Takes the role's recovery lock, `None` while another recovery holds it.
fn lock_recovery(layout: &Layout) -> Result<Option<File>, QueueError> {
    fs::create_dir_all(&layout.meta).map_err(QueueError::io_err("create", &layout.meta))?;
    let guard_path = layout.meta.join(".recover.lock");
    let guard = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&guard_path)
        .map_err(QueueError::io_err("open", &guard_path))?;
    match guard.try_lock() {
        Ok(()) => Ok(Some(guard)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(err)) => Err(QueueError::Io {
            action: "lock",
            path: guard_path,
            source: err,
        }),
    }
}

/// The locked task file of claim `dir` when every process of its attempt is gone; `None` when
/// the claim is still held (its step is killed first if its holder is dead or hung past
/// `hung_after`) or holds no task (left over from a claim or requeue that died midway, tidied
/// here).
fn lock_dead_claim(
    layout: &Layout,
    dir: &Path,
    id: &str,
    hung_after: Option<Duration>,
) -> Result<Option<File>, QueueError> {
    let task_path = dir.join("task");
    let task = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&task_path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            // A claim that died between mkdir and rename, or a directory already emptied.
            if fs::remove_dir(dir).is_err() && dir.join("lease.json").exists() {
                // A requeue that died between putting the task back and moving the
                // attempt's records aside: finish it, or the directory would keep the
                // name busy and the requeued task would never be claimed again.
                let attempt = fs::read(dir.join("lease.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Lease>(&b).ok())
                    .map_or(0, |l| l.attempt);
                let keep = layout.meta.join(format!("{id}.attempt-{attempt}"));
                let _ = fs::remove_dir_all(&keep);
                fs::rename(dir, &keep).map_err(QueueError::io_err("move aside", dir))?;
            }
            return Ok(None);
        }
        Err(err) => {
            return Err(QueueError::Io {
                action: "open",
                path: task_path,
                source: err,
            });
        }
    };
    match task.try_lock() {
        Ok(()) => Ok(Some(task)),
        Err(fs::TryLockError::WouldBlock) => {
            if let Some(limit) = hung_after {
                kill_if_hung(dir, limit);
            }
            Ok(None)
        }
        Err(fs::TryLockError::Error(err)) => Err(QueueError::Io {
            action: "lock",
            path: task_path,
            source: err,
        }),
    }
}

/// Recovers one claim whose attempt is over (`task` is its locked task file): charges the
/// attempt in the sidecar, then finishes a move the attempt started, fails a task out of
/// attempts, or requeues it.
fn recover_claim(
    layout: &Layout,
    dir: &Path,
    id: String,
    task: File,
    max_attempts: u32,
) -> Result<Recovered, QueueError> {
    // Every process of that attempt is gone.
    let lease: Option<Lease> = fs::read(dir.join("lease.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let meta_path = layout.meta_path(&id);
    let mut meta = read_meta(&meta_path);
    // No readable lease: the claimer died right after the rename, before writing it; the
    // claim counted an attempt all the same.
    let attempt = lease
        .as_ref()
        .map(|l| l.attempt)
        .unwrap_or(meta.attempts + 1)
        .max(meta.attempts);
    let reason = format!("attempt {attempt} ended without finishing: its worker died");
    meta.history.push(HistoryEntry {
        attempt,
        ended: orchestrate_base::clock::now_rfc3339(),
        reason: reason.clone(),
        ..HistoryEntry::default()
    });
    meta.attempts = attempt;
    let written: Option<Value> = fs::read(dir.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if written.is_none() {
        // Died while writing it (or never got there): the attempt did not finish.
        let _ = fs::remove_file(dir.join("status.json"));
    }
    if let Some(status) = written {
        // The attempt finished and wrote its status but died before the final move:
        // finish the move it started.
        let success = status["success"].as_bool().unwrap_or(false);
        let parent = if success {
            &layout.processed
        } else {
            &layout.failed
        };
        drop(task);
        finish_move(layout, dir, &id, parent, MoveSync::Durable)?;
        let _ = fs::remove_file(&meta_path);
        return Ok(Recovered {
            id,
            attempt,
            action: if success { "processed" } else { "failed" }.into(),
            reason: "completed the final move".into(),
        });
    }
    if attempt >= max_attempts {
        fail_out_of_attempts(layout, dir, &id, &meta, max_attempts)?;
        drop(task);
        finish_move(layout, dir, &id, &layout.failed, MoveSync::Durable)?;
        let _ = fs::remove_file(&meta_path);
        return Ok(Recovered {
            id,
            attempt,
            action: "failed".into(),
            reason,
        });
    }
    write_meta(&meta_path, &meta)?;
    fault!("recover.sidecar_written");
    drop(task);
    let action = requeue(layout, dir, &id, attempt)?;
    Ok(Recovered {
        id,
        attempt,
        action: action.into(),
        reason,
    })
}

/// Writes the `status.json` of a task whose worker died on its last allowed attempt
/// (`meta.attempts`), before it moves to `failed/`.
fn fail_out_of_attempts(
    layout: &Layout,
    dir: &Path,
    id: &str,
    meta: &Meta,
    max_attempts: u32,
) -> Result<(), QueueError> {
    let attempt = meta.attempts;
    let message = format!(
        "worker died {attempt} time(s) while running this task; max_attempts is {max_attempts}"
    );
    let mut status = TaskStatus::new(&layout.role, id, false, 1, &message);
    status.correlation_id = meta.correlation_id.clone();
    status.attempt = Some(attempt);
    status.run_id = started_run_id(dir);
    status.history = meta.history.clone();
    atomic_write(&dir.join("status.json"), &status.to_bytes())
        .map_err(QueueError::io_err("write status in", dir))?;
    fault!("recover.status_written");
    Ok(())
}

/// The run id an attempt's `events.jsonl` starts with (its `run_started`), if it got that far.
fn started_run_id(dir: &Path) -> Option<String> {
    use std::io::BufRead;
    let file = File::open(dir.join("events.jsonl")).ok()?;
    let mut first = String::new();
    // One line, bounded: a run_started event is small.
    io::BufReader::new(file)
        .take(64 * 1024)
        .read_line(&mut first)
        .ok()?;
    let event: Value = serde_json::from_str(&first).ok()?;
    (event["event"] == "run_started")
        .then(|| event["run_id"].as_str().map(str::to_string))
        .flatten()
}

/// Puts a claimed task's file back into the inbox (the sidecar already says what happened) and
/// keeps the attempt's directory beside the sidecar for `show`. If a new task took the name
/// meanwhile, the old one goes to `failed/` instead: nothing is overwritten.
fn requeue(
    layout: &Layout,
    dir: &Path,
    id: &str,
    attempt: u32,
) -> Result<&'static str, QueueError> {
    let task_path = dir.join("task");
    let back = layout.inbox.join(format!("{id}{}", layout.extension));
    match rename_noreplace(&task_path, &back) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            let meta = read_meta(&layout.meta_path(id));
            let mut status = TaskStatus::new(
                &layout.role,
                id,
                false,
                1,
                "could not requeue: a new task with the same name is queued",
            );
            status.correlation_id = meta.correlation_id;
            status.attempt = Some(attempt);
            status.history = meta.history;
            atomic_write(&dir.join("status.json"), &status.to_bytes())
                .map_err(QueueError::io_err("write status in", dir))?;
            finish_move(layout, dir, id, &layout.failed, MoveSync::Durable)?;
            return Ok("failed");
        }
        Err(err) => {
            return Err(QueueError::Io {
                action: "requeue",
                path: task_path,
                source: err,
            });
        }
    }
    fault!("recover.requeued");
    let keep = layout.meta.join(format!("{id}.attempt-{attempt}"));
    let _ = fs::remove_dir_all(&keep);
    let _ = fs::rename(dir, &keep);
    fault!("recover.kept");
    let _ = fsync_dir(&layout.inbox);
    Ok("requeued")
}

/// Gives a claimed task back without charging it an attempt (the worker is shutting down and
/// stopped the attempt itself). Consumes the claim: its lock is released after the move.
pub fn release(layout: &Layout, claim: Claim, reason: &str) -> Result<&'static str, QueueError> {
    let meta_path = layout.meta_path(&claim.id);
    let mut meta = read_meta(&meta_path);
    // The sidecar's count is untouched: attempts are only charged when an attempt dies.
    meta.history.push(HistoryEntry {
        attempt: claim.attempt,
        ended: orchestrate_base::clock::now_rfc3339(),
        reason: reason.to_string(),
        charged: Some(false),
        ..HistoryEntry::default()
    });
    write_meta(&meta_path, &meta)?;
    let Claim {
        id,
        dir,
        lock,
        attempt,
        ..
    } = claim;
    let action = requeue(layout, &dir, &id, attempt);
    drop(lock);
    action
}

/// Kills the step process group of a claim whose holder is dead, or alive but silent (no
/// heartbeat) for longer than `limit` (stopped or wedged): its lock is then released once the
/// group is gone, and the next recovery pass requeues the task.
fn kill_if_hung(dir: &Path, limit: Duration) {
    let Some(lease) = fs::read(dir.join("lease.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Lease>(&b).ok())
    else {
        return;
    };
    let silent = chrono::DateTime::parse_from_rfc3339(&lease.heartbeat_at)
        .map(|t| {
            chrono::Utc::now()
                .signed_duration_since(t)
                .to_std()
                .unwrap_or_default()
                > limit
        })
        .unwrap_or(false);
    if !silent {
        return;
    }
    if process::alive(lease.pid, lease.pid_start, &lease.boot_id) {
        // A live holder that stopped heartbeating is hung (SIGSTOP, deadlock): stop it for good.
        // Verified just above (pid, start time, boot id): the pid names the holder.
        let _ = process::kill(lease.pid, libc::SIGKILL);
    }
    // Every process of the attempt holds the task's lock descriptor (steps inherit it, and so
    // do their children, whatever group or session they moved to): kill exactly those.
    for pid in holders(&dir.join("task")) {
        // A pid that holds this task's file open right now.
        let _ = process::kill(pid, libc::SIGKILL);
    }
}

/// Processes that have `path` open (by device and inode), from `/proc/*/fd`.
pub fn holders(path: &Path) -> Vec<u32> {
    open_by(path, false)
}

/// Processes that have `path` open (by device and inode), from `/proc/*/fd`; with `writing`,
/// only through a descriptor open for writing (its `/proc/*/fdinfo` flags).
fn open_by(path: &Path, writing: bool) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = fs::metadata(path) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut out = Vec::new();
    for pid in process::all_pids() {
        if pid == me {
            continue;
        }
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let Ok(fds) = fs::read_dir(proc_dir.join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::metadata(fd.path())
                .is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
                && (!writing || writes(&proc_dir.join("fdinfo").join(fd.file_name())))
        });
        if holds {
            out.push(pid);
        }
    }
    out
}

/// Whether the descriptor whose `/proc/<pid>/fdinfo/<fd>` is `fdinfo` is open for writing.
fn writes(fdinfo: &Path) -> bool {
    fs::read_to_string(fdinfo).is_ok_and(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("flags:"))
            .and_then(|flags| i32::from_str_radix(flags.trim(), 8).ok())
            .is_some_and(|flags| flags & libc::O_ACCMODE != libc::O_RDONLY)
    })
}

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
    pub role: String,
    pub id: String,
    pub state: TaskState,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
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
}

/// An inbox entry that is not a task ready to be taken, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboxEntry {
    /// Its name in the inbox.
    pub name: String,
    /// Workspace-relative.
    pub path: String,
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
        }
    }
}

/// When the holder of a claimed task has died: what becomes of the task (None while it lives).
pub fn dead_holder(layout: &Layout, dir: &Path, lease: &Lease) -> Option<String> {
    if process::alive(lease.pid, lease.pid_start, &lease.boot_id) {
        return None;
    }
    let pid = lease.pid;
    let role = &layout.role;
    let holders = holders(&dir.join("task"));
    Some(if holders.is_empty() {
        format!(
            "pid {pid} is dead; the task will be requeued (or failed after max_attempts) by role \
             `{role}`'s next recovery scan: a running `orchestrate agent {role}`, or the next \
             `orchestrate swarm up`"
        )
    } else {
        let pids: Vec<String> = holders.iter().map(u32::to_string).collect();
        format!(
            "pid {pid} is dead; its step processes (pid {}) still hold the task; it is requeued by \
             role `{role}`'s next recovery scan once they exit",
            pids.join(", ")
        )
    })
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
            let status: Option<Value> =
                orchestrate_base::fsutil::read_inside(&layout.workspace, &dir.join("status.json"))
                    .and_then(|b| serde_json::from_slice(&b).ok());
            if let Some(status) = status {
                info.attempt = status["attempt"].as_u64().map(|a| a as u32);
                let history: Vec<HistoryEntry> =
                    serde_json::from_value(status["history"].clone()).unwrap_or_default();
                info.earlier = linked_records(&history).cloned().collect();
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
pub fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
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

/// The queue operations a role process needs, behind one interface: the filesystem queue
/// ([`Layout`]) implements it today; a PostgreSQL queue for many machines (`FOR UPDATE SKIP
/// LOCKED`, an attempt column as the fence on completion, a rescuer for dead workers) will
/// implement the same operations. `candidate` is a discovery hint (an inbox file name); a
/// backend that has no such notion claims the next available task instead.
pub trait TaskQueue: Send + Sync {
    fn role(&self) -> &str;
    fn enqueue(
        &self,
        id: Option<&str>,
        content: &[u8],
        correlation_id: Option<&str>,
        source: &str,
    ) -> Result<Enqueued, QueueError>;
    fn claim(
        &self,
        candidate: &str,
        owner: &Owner,
        settle: Duration,
        max_bytes: u64,
    ) -> Result<ClaimResult, QueueError>;
    fn heartbeat(&self, claim: &mut Claim);
    /// Success or failure: the task's terminal record.
    fn complete(
        &self,
        claim: &Claim,
        success: bool,
        status: &TaskStatus,
    ) -> Result<PathBuf, QueueError>;
    /// Gives a claim back uncharged (shutdown).
    fn release(&self, claim: Claim, reason: &str) -> Result<&'static str, QueueError>;
    fn recover(
        &self,
        max_attempts: u32,
        hung_after: Option<Duration>,
    ) -> Result<Vec<Recovered>, QueueError>;
    fn list(&self) -> Vec<TaskInfo>;
    fn depth(&self) -> usize;
}

impl TaskQueue for Layout {
    fn role(&self) -> &str {
        &self.role
    }
    fn enqueue(
        &self,
        id: Option<&str>,
        content: &[u8],
        correlation_id: Option<&str>,
        source: &str,
    ) -> Result<Enqueued, QueueError> {
        enqueue(self, id, content, correlation_id, source)
    }
    fn claim(
        &self,
        candidate: &str,
        owner: &Owner,
        settle: Duration,
        max_bytes: u64,
    ) -> Result<ClaimResult, QueueError> {
        claim(self, candidate, owner, settle, max_bytes)
    }
    fn heartbeat(&self, claim: &mut Claim) {
        claim.heartbeat();
    }
    fn complete(
        &self,
        claim: &Claim,
        success: bool,
        status: &TaskStatus,
    ) -> Result<PathBuf, QueueError> {
        complete(self, claim, success, status)
    }
    fn release(&self, claim: Claim, reason: &str) -> Result<&'static str, QueueError> {
        release(self, claim, reason)
    }
    fn recover(
        &self,
        max_attempts: u32,
        hung_after: Option<Duration>,
    ) -> Result<Vec<Recovered>, QueueError> {
        recover(self, max_attempts, hung_after)
    }
    fn list(&self) -> Vec<TaskInfo> {
        list(self)
    }
    fn depth(&self) -> usize {
        depth(self)
    }
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
