//! Recovery: claims whose every process is gone go back to the inbox, or to `failed/` once out
//! of attempts; `release` gives a claim back uncharged.
//!
//! Owns the recovery lock, finishing moves and requeues that died midway, charging attempts,
//! and killing the steps of a dead or hung holder. Does not decide when recovery runs (the
//! worker and the supervisor do).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::complete::{MoveSync, finish_move};
use super::error::QueueError;
use super::layout::{Layout, Meta, read_meta, write_meta};
use super::lease::{Claim, Lease, holders};
use crate::record::{HistoryEntry, TaskStatus};
use orchestrate_base::fsutil::{atomic_write, fsync_dir, rename_noreplace};
use orchestrate_base::io_err::FromIo;
use orchestrate_base::process;

/// What recovery did with one claimed entry.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    /// The task id.
    pub id: String,
    /// The attempt that ended.
    pub attempt: u32,
    /// `requeued` or `failed` (or what a database queue did: `given up`).
    pub action: String,
    /// Why.
    pub reason: String,
}

/// Puts back the claimed tasks of `layout.role` whose every process is gone: into the inbox for
/// another attempt, or into `failed/` once `max_attempts` attempts have started. A claim whose
/// lock is held is left alone (its processes still run), unless its holder is dead or hung
/// past `hung_after` and `kill_hung` is set: then its step's process group is killed first, so
/// that the next pass finds the lock free. Serialized per role by a recovery lock.
pub(crate) fn recover(
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
    // One line, bounded: a run_started event is small.
    let first = orchestrate_base::fsutil::first_line(&dir.join("events.jsonl"), 64 * 1024)?;
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
    let _ = set_aside(layout, dir, id, attempt);
    fault!("recover.kept");
    let _ = fsync_dir(&layout.inbox);
    Ok("requeued")
}

/// Keeps the records of attempt `attempt` of task `id` (its directory `dir`, out of `running/`)
/// beside the task's sidecar, where `show` finds them: an attempt that did not finish. Returns
/// where they are now.
pub fn set_aside(
    layout: &Layout,
    dir: &Path,
    id: &str,
    attempt: u32,
) -> Result<std::path::PathBuf, QueueError> {
    let keep = layout.meta.join(format!("{id}.attempt-{attempt}"));
    let _ = fs::remove_dir_all(&keep);
    fs::create_dir_all(&layout.meta).map_err(QueueError::io_err("create", &layout.meta))?;
    fs::rename(dir, &keep).map_err(QueueError::io_err("move aside", dir))?;
    Ok(keep)
}

/// Gives a claimed task back without charging it an attempt (the worker is shutting down and
/// stopped the attempt itself). Consumes the claim: its lock is released after the move.
pub(crate) fn release(
    layout: &Layout,
    claim: Claim,
    reason: &str,
) -> Result<&'static str, QueueError> {
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
