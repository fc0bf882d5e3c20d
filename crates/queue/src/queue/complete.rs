//! Finishing an attempt: its status.json, then one rename of the task's directory into
//! `processed/` or `failed/`.
//!
//! Owns the final move (also recovery's) and keeping the bytes the workflow was given. Does not
//! decide success (the worker does).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::QueueError;
use super::layout::Layout;
use super::lease::Claim;
use crate::record::TaskStatus;
use orchestrate_base::fsutil::{
    fsync_dir, rename_noreplace, sync_together, write_unpublished, write_unsynced,
};
use orchestrate_base::io_err::FromIo;

/// `processed/` or `failed/` entry name: UTC time first so a listing sorts by finish time.
pub fn final_name(role: &str, id: &str) -> String {
    let now = chrono::Utc::now();
    format!("{}_{role}_{id}", now.format("%Y%m%dT%H%M%S%.6fZ"))
}

/// Writes `status.json` into the claim's directory and fsyncs it (the commit point: from here on
/// the attempt counts as finished), then moves the directory with one rename into `processed/` or
/// `failed/` and drops the sidecar. Returns the final path.
///
/// The move is not fsynced: should a power loss undo it, the directory is back in `running/`
/// with a whole status.json and a dead owner, and recovery finishes the move (never reruns
/// the task). That leaves one journal commit per task instead of two.
pub(crate) fn complete(
    layout: &Layout,
    claim: &Claim,
    success: bool,
    status: &TaskStatus,
) -> Result<PathBuf, QueueError> {
    // The task's directory is published by the move below, after this write is on disk.
    write_unpublished(&claim.dir.join("status.json"), &status_bytes(claim, status))
        .map_err(QueueError::io_err("write status in", &claim.dir))?;
    fault!("complete.status_written");
    publish(layout, claim, success)
}

/// One attempt to complete, for [`complete_all`].
#[derive(Clone, Copy)]
pub struct Completion<'a> {
    /// The claim.
    pub claim: &'a Claim,
    /// Whether its workflow succeeded.
    pub success: bool,
    /// Its terminal record.
    pub status: &'a TaskStatus,
}

/// [`complete`] for several attempts at once, with one result each in order: every status.json
/// is written, then all are synced together (their writeback started first, so that a
/// journaling filesystem commits them in one transaction), then each directory is moved. Each
/// file still gets its own fsync before its directory is published.
pub(crate) fn complete_all(
    layout: &Layout,
    done: &[Completion<'_>],
) -> Vec<Result<PathBuf, QueueError>> {
    done.iter()
        .zip(write_records(done))
        .map(|(c, written)| {
            written?;
            fault!("complete.status_written");
            publish(layout, c.claim, c.success)
        })
        .collect()
}

/// Writes the status.json of each attempt into its directory, then syncs them all together
/// (their writeback started first, so that a journaling filesystem commits them in one
/// transaction); one result each, in order. The first half of [`complete_all`]: a backend that
/// records completions elsewhere too (a database) commits them between this and [`publish`].
pub fn write_records(done: &[Completion<'_>]) -> Vec<Result<(), QueueError>> {
    let mut written: Vec<Result<std::fs::File, QueueError>> = done
        .iter()
        .map(|c| {
            write_unsynced(
                &c.claim.dir.join("status.json"),
                &status_bytes(c.claim, c.status),
            )
            .map_err(QueueError::io_err("write status in", &c.claim.dir))
        })
        .collect();
    let files: Vec<&std::fs::File> = written.iter().filter_map(|w| w.as_ref().ok()).collect();
    let mut sync_errors = sync_together(&files).into_iter();
    for (w, c) in written.iter_mut().zip(done) {
        if w.is_ok()
            && let Some(Some(source)) = sync_errors.next()
        {
            *w = Err(QueueError::Io {
                action: "sync status in",
                path: c.claim.dir.clone(),
                source,
            });
        }
    }
    written.into_iter().map(|w| w.map(drop)).collect()
}

/// The status record's bytes, noting a task file changed after its claim.
fn status_bytes(claim: &Claim, status: &TaskStatus) -> Vec<u8> {
    match keep_given(claim) {
        None => status.to_bytes(),
        Some(note) => {
            let mut status = status.clone();
            status.task_changed = Some(note);
            status.to_bytes()
        }
    }
}

/// Moves the finished claim's directory into `processed/` or `failed/` and drops its sidecar;
/// its status.json must be on disk already ([`write_records`]).
pub fn publish(layout: &Layout, claim: &Claim, success: bool) -> Result<PathBuf, QueueError> {
    let parent = if success {
        &layout.processed
    } else {
        &layout.failed
    };
    let dest = finish_move(layout, &claim.dir, &claim.id, parent, MoveSync::Lazy)?;
    if claim.has_sidecar {
        let _ = fs::remove_file(layout.meta_path(&claim.id));
    }
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

/// Moves the directory `dir` of a finished attempt of task `id`, whose status.json is on disk,
/// into `processed/` or `failed/` durably: a move its worker died before making.
pub fn move_finished(
    layout: &Layout,
    dir: &Path,
    id: &str,
    success: bool,
) -> Result<PathBuf, QueueError> {
    let parent = if success {
        &layout.processed
    } else {
        &layout.failed
    };
    finish_move(layout, dir, id, parent, MoveSync::Durable)
}

/// Whether a final move is made durable before it returns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum MoveSync {
    /// fsync both parents: the move is the record (recovery's moves to `failed/`).
    Durable,
    /// No fsync: the status.json already on disk is the record and recovery redoes the move.
    Lazy,
}

pub(super) fn finish_move(
    layout: &Layout,
    dir: &Path,
    id: &str,
    parent: &Path,
    sync: MoveSync,
) -> Result<PathBuf, QueueError> {
    loop {
        let dest = parent.join(final_name(&layout.role, id));
        match rename_noreplace(dir, &dest) {
            // `processed/` or `failed/` not made yet (the first task to end there).
            Err(err) if err.kind() == io::ErrorKind::NotFound && !parent.is_dir() => {
                fs::create_dir_all(parent).map_err(QueueError::io_err("create", parent))?;
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{ClaimResult, Owner, TaskQueue};

    fn claimed(layout: &Layout, id: &str) -> Claim {
        fs::write(layout.inbox.join(format!("{id}.task")), id).unwrap();
        let owner = Owner::current();
        match layout
            .claim(
                &format!("{id}.task"),
                &owner,
                std::time::Duration::ZERO,
                1 << 20,
            )
            .unwrap()
        {
            ClaimResult::Claimed(claim) => *claim,
            _ => panic!("{id} not claimed"),
        }
    }

    #[test]
    fn complete_all_answers_each_attempt_in_order_and_one_failure_stays_its_own() {
        let ws = tempfile::tempdir().unwrap();
        let layout = Layout::new(ws.path(), "r", Path::new("inbox/r"));
        layout.create_dirs().unwrap();
        let claims: Vec<Claim> = ["a", "b", "c"]
            .iter()
            .map(|id| claimed(&layout, id))
            .collect();
        // b's directory vanished under it (someone removed it by hand): its status cannot be
        // written, and a and c still complete.
        fs::remove_dir_all(&claims[1].dir).unwrap();
        let statuses: Vec<TaskStatus> = claims
            .iter()
            .map(|c| TaskStatus::new("r", &c.id, c.id != "c", 0, "done"))
            .collect();
        let done: Vec<Completion<'_>> = claims
            .iter()
            .zip(&statuses)
            .map(|(claim, status)| Completion {
                claim,
                success: status.success,
                status,
            })
            .collect();
        let results = layout.complete_all(&done);
        assert_eq!(results.len(), 3);
        let a = results[0].as_ref().unwrap();
        assert!(a.starts_with(&layout.processed), "{a:?}");
        assert!(a.join("status.json").is_file() && a.join("task").is_file());
        let err = results[1].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("write status in") && err.contains("b"),
            "{err}"
        );
        let c = results[2].as_ref().unwrap();
        assert!(c.starts_with(&layout.failed), "{c:?}");
        let status: serde_json::Value =
            serde_json::from_slice(&fs::read(c.join("status.json")).unwrap()).unwrap();
        assert_eq!(status["task"], "c");
        assert!(!layout.running.join("a").exists() && !layout.running.join("c").exists());
    }
}
