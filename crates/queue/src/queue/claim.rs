//! Claiming one inbox entry: open it safely, judge it, lock it, move it into `running/` with
//! one rename, and write its lease.
//!
//! Owns the claim protocol and its checks (kind, name, links, size, still being written). Does
//! not discover entries (the worker does) and does not run the task.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::error::QueueError;
use super::layout::{Layout, read_sidecar};
use super::lease::{Claim, ClaimResult, Lease, Owner};
use super::quarantine::quarantine;
use orchestrate_base::ids::check_id;
use orchestrate_base::io_err::FromIo;

/// Claims inbox entry `file_name` for `owner`. A file that any process has open for writing is
/// never taken (`Writing`); where that cannot be known (`fsutil::Writers::Unknown`), `settle` is
/// how long a file written in place must have been still before it is taken (renamed-in files
/// are older than their rename). The content is read once, here.
pub(crate) fn claim(
    layout: &Layout,
    file_name: &str,
    owner: &Owner,
    settle: Duration,
    max_bytes: u64,
) -> Result<ClaimResult, QueueError> {
    let InboxFile {
        id,
        path,
        lock: file,
        content,
        ..
    } = match take_inbox_file(layout, file_name, settle, max_bytes)? {
        ControlFlow::Continue(taken) => taken,
        ControlFlow::Break(result) => return Ok(result),
    };
    let dir = layout.running.join(&id);
    let task_path = match move_to_running(&path, &dir)? {
        ControlFlow::Continue(task_path) => task_path,
        ControlFlow::Break(result) => return Ok(result),
    };
    let (sidecar, has_sidecar) = read_sidecar(&layout.meta_path(&id));
    // The attempt is counted in the lease, before the workflow runs: a task that kills its
    // worker is charged even then (recovery carries the count into the sidecar).
    let attempt = sidecar.attempts + 1;
    let lease = Lease::new(&layout.role, &id, attempt, owner);
    write_lease(&lease, &dir)?;
    fault!("claim.leased");
    Ok(ClaimResult::Claimed(Box::new(Claim {
        id,
        dir,
        task_path,
        lock: file,
        attempt,
        meta: sidecar,
        has_sidecar,
        lease,
        content,
    })))
}

/// An inbox file judged fit to be a task, locked, whole (no writer) and read.
#[derive(Debug)]
pub struct InboxFile {
    /// The task id (its name without the extension).
    pub id: String,
    /// Where it is in the inbox.
    pub path: PathBuf,
    /// The file, open and locked: no other claimer takes it while this is held.
    pub lock: File,
    /// Its bytes, read once.
    pub content: Vec<u8>,
    /// Which file this is, for as long as it exists (device, inode, change time): the same
    /// file seen again after a crash is known for the one taken before.
    pub identity: String,
}

/// Opens, judges, locks and reads inbox entry `file_name` without moving it: the first half of a
/// claim, also how a database queue ingests dropped files. A file that any process has open for
/// writing is never taken (`Writing`); where that cannot be known (`fsutil::Writers::Unknown`),
/// `settle` is how long a file written in place must have been still before it is taken
/// (renamed-in files are older than their rename). An entry that cannot be a task is
/// quarantined; the answer is then the [`ClaimResult`] to act on.
pub fn take_inbox_file(
    layout: &Layout,
    file_name: &str,
    settle: Duration,
    max_bytes: u64,
) -> Result<ControlFlow<ClaimResult, InboxFile>, QueueError> {
    let Some(id) = layout.task_id(file_name) else {
        return Ok(ControlFlow::Break(ClaimResult::Gone));
    };
    let path = layout.inbox.join(file_name);
    let file = match open_task(layout, file_name, &path)? {
        ControlFlow::Continue(file) => file,
        ControlFlow::Break(result) => return Ok(ControlFlow::Break(result)),
    };
    let meta = file
        .metadata()
        .map_err(QueueError::io_err("inspect", &path))?;
    if let Some(reason) = unfit_kind_or_name(&meta, id) {
        drop(file);
        return quarantine(layout, file_name, &reason).map(ControlFlow::Break);
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Ok(ControlFlow::Break(ClaimResult::Busy)),
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
        return quarantine(layout, file_name, &reason).map(ControlFlow::Break);
    }
    if let Some(not_yet) = still_written(&file, &meta, settle) {
        return Ok(ControlFlow::Break(not_yet));
    }
    // Read before the move, while the file is known to be closed: these bytes are the task.
    let mut content = Vec::with_capacity(meta.len() as usize);
    Read::by_ref(&mut &file)
        .take(max_bytes)
        .read_to_end(&mut content)
        .map_err(QueueError::io_err("read", &path))?;
    let identity = format!(
        "{}:{}:{}.{}",
        meta.dev(),
        meta.ino(),
        meta.ctime(),
        meta.ctime_nsec()
    );
    Ok(ControlFlow::Continue(InboxFile {
        id: id.to_string(),
        path,
        lock: file,
        content,
        identity,
    }))
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

/// Writes the claim's `lease.json` in `dir`. Creating files is the dominant cost of a claim on
/// ext4, so the claim writes just this one.
pub fn write_lease(lease: &Lease, dir: &Path) -> Result<(), QueueError> {
    let bytes = serde_json::to_vec_pretty(lease).unwrap_or_default();
    // Written in place: the directory is new, and a reader that finds it half-written (or
    // missing) falls back to the sidecar's count.
    fs::write(dir.join("lease.json"), &bytes).map_err(QueueError::io_err("write lease in", dir))
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
