//! Who holds a claimed task: the owner's identity, its lease, the claim itself, and the
//! processes that still hold a task's file.
//!
//! Owns `Owner`, `Lease`, `Claim` (with its heartbeat), `ClaimResult`, finding the holders of a
//! task file in `/proc`, and saying what becomes of a task whose holder died. Does not take or
//! give back tasks (`claim`, `complete`, `recover` do).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::layout::{Layout, Meta};
use orchestrate_base::process;

/// Who holds a claimed task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    pub(crate) format_version: u32,
    /// The role whose queue the task is in.
    pub role: String,
    /// The task id.
    pub id: String,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The holder's pid.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: with the pid and boot id, names one process for good.
    pub(crate) pid_start: u64,
    pub(crate) boot_id: String,
    /// When the task was claimed (RFC 3339).
    pub claimed_at: String,
    pub(crate) heartbeat_at: String,
    /// The fence of a database queue's claim: what its heartbeats and completion name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<i64>,
    /// The machine that holds it, in a queue shared by several machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
}

impl Lease {
    /// Attempt `attempt` of task `id` of `role`, held by `owner` from now.
    pub fn new(role: &str, id: &str, attempt: u32, owner: &Owner) -> Lease {
        let now = orchestrate_base::clock::now_rfc3339();
        Lease {
            format_version: super::layout::QUEUE_FORMAT,
            role: role.to_string(),
            id: id.to_string(),
            attempt,
            pid: owner.pid,
            pid_start: owner.pid_start,
            boot_id: owner.boot_id.clone(),
            claimed_at: now.clone(),
            heartbeat_at: now,
            fence: None,
            machine: None,
        }
    }
}

/// The file a lease guard writes into a claim's directory before it stops the attempt's
/// processes: the attempt's end is then not its result.
pub const GUARD_STOPPED: &str = "guard-stopped";

/// Whether the holder of a claim may go on running it, as its queue sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseCheck {
    /// Held: go on.
    Held,
    /// No longer held, or about to run out unrenewed: stop the attempt's processes now and give
    /// the attempt up (its completion would be refused). Says why.
    Lost(String),
}

/// The identity of this process, for leases.
#[derive(Debug, Clone)]
pub struct Owner {
    /// This process's pid.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot), so that a reused pid
    /// is not taken for this process.
    pub pid_start: u64,
    /// The kernel's boot id, so that a pid from before a reboot is not taken for this process.
    pub boot_id: String,
}

impl Owner {
    /// This process, as a lease names it.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            pid_start: process::start_time(pid).unwrap_or(0),
            boot_id: process::boot_id(),
        }
    }
}

/// A task this process holds.
#[derive(Debug)]
pub struct Claim {
    /// The task id.
    pub id: String,
    /// The task's directory in `running/<role>/`, which is also the attempt's RUN_ROOT.
    pub dir: PathBuf,
    /// The task file inside it (`<dir>/task`).
    pub task_path: PathBuf,
    /// The locked task file. Keep it open for the whole attempt; pass it to every process of the
    /// attempt so the lock outlives this process if it dies.
    pub lock: File,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The sidecar as read at claim time.
    pub meta: Meta,
    /// Whether there was a sidecar to read (the completion removes it only then).
    pub has_sidecar: bool,
    /// The lease written for this attempt.
    pub lease: Lease,
    /// The task's bytes, read once at claim time: what the workflow is given, and what the
    /// record keeps (`keep_given` puts them back should the file change meanwhile).
    pub content: Vec<u8>,
}

impl Claim {
    pub(crate) fn lease_path(&self) -> PathBuf {
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
    /// Claimed: moved to `running/` and leased to this process.
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
        /// The task id.
        id: String,
        /// Why it may not run.
        reason: String,
        /// Its record in `failed/`.
        dir: PathBuf,
    },
}

/// Processes that have `path` open (by device and inode), from `/proc/*/fd`.
pub fn holders(path: &Path) -> Vec<u32> {
    open_by(path, false)
}

/// Processes that have `path` open (by device and inode), from `/proc/*/fd`; with `writing`,
/// only through a descriptor open for writing (its `/proc/*/fdinfo` flags).
pub(super) fn open_by(path: &Path, writing: bool) -> Vec<u32> {
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

/// When the holder of a claimed task has died: what becomes of the task (None while it lives).
pub(crate) fn dead_holder(layout: &Layout, dir: &Path, lease: &Lease) -> Option<String> {
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
