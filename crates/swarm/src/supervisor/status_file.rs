//! The supervisor's records on disk: where they are (`WORKSPACE/.orchestrate/swarm/`), the types
//! of `status.json` (the supervisor and each replica's state), and reading and writing it.
//!
//! Does not decide what goes in it (the supervisor loop does) nor add live queue numbers
//! (`status` does).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use orchestrate_base::process;
use orchestrate_base::{clock, json_file};

use super::error::SupervisorError;
use super::exit::ExitReason;
use super::spec::{ChildSpec, RoleProblem};

/// Version of `status.json`; a reader refuses a newer one.
pub(crate) const STATUS_FORMAT: u32 = 1;

/// `WORKSPACE/.orchestrate/swarm`: the supervisor's lock and records.
pub fn swarm_dir(workspace: &Path) -> PathBuf {
    workspace.join(".orchestrate").join("swarm")
}

/// `WORKSPACE/.orchestrate/swarm/status.json`: the supervisor's view of its replicas,
/// rewritten atomically on every change.
pub fn status_path(workspace: &Path) -> PathBuf {
    swarm_dir(workspace).join("status.json")
}

/// `WORKSPACE/.orchestrate/swarm/events.jsonl`: the supervisor's event log (JSON Lines,
/// append-only).
pub(crate) fn events_path(workspace: &Path) -> PathBuf {
    swarm_dir(workspace).join("events.jsonl")
}

pub(crate) fn lock_path(workspace: &Path) -> PathBuf {
    swarm_dir(workspace).join("supervisor.lock")
}

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Spawned, not ready yet.
    Starting,
    /// Reported ready.
    Running,
    /// Died; waiting out the backoff before the next start.
    Backoff,
    /// Restarted too often; left down until the next `swarm up`.
    Failed,
    /// Asked to stop, not gone yet.
    Stopping,
    /// Stopped on purpose (`swarm down`, a reload that dropped it); not started again.
    Stopped,
    /// Only in [`status`](fn@super::status::status) when no supervisor runs: the process of a
    /// replica whose supervisor died is still alive.
    Orphaned,
    /// Only in [`status`](fn@super::status::status): a role process started by hand
    /// (`orchestrate agent`), which no supervisor manages.
    Unsupervised,
}

impl ChildState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChildState::Starting => "starting",
            ChildState::Running => "running",
            ChildState::Backoff => "backoff",
            ChildState::Failed => "failed",
            ChildState::Stopping => "stopping",
            ChildState::Stopped => "stopped",
            ChildState::Orphaned => "orphaned",
            ChildState::Unsupervised => "unsupervised",
        }
    }
}

/// One replica in `status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildStatus {
    /// The replica's name, e.g. `engineer#1`.
    pub name: String,
    pub(crate) role: String,
    pub(crate) replica: u32,
    /// The live process, if any.
    pub pid: Option<u32>,
    /// Its start time (`/proc/<pid>/stat` field 22): with the pid, names the process for good.
    pub(crate) pid_start: Option<u64>,
    /// Where it is in its life.
    pub state: ChildState,
    /// Restarts so far, charged to a task or not.
    pub(crate) restarts: u32,
    pub(crate) last_exit: Option<ExitReason>,
    /// When the current state began (RFC 3339).
    pub(crate) since: String,
    /// In `backoff`: when the next start is due.
    pub(crate) next_restart_at: Option<String>,
}

impl ChildStatus {
    pub(super) fn new(spec: &ChildSpec) -> ChildStatus {
        ChildStatus {
            name: spec.name.clone(),
            role: spec.role.clone(),
            replica: spec.replica,
            pid: None,
            pid_start: None,
            state: ChildState::Starting,
            restarts: 0,
            last_exit: None,
            since: clock::now_rfc3339(),
            next_restart_at: None,
        }
    }

    /// The live process this status names, if it still runs.
    pub(super) fn live_process(&self) -> Option<(u32, u64)> {
        let (pid, start) = (self.pid?, self.pid_start?);
        process::running(pid, start).then_some((pid, start))
    }
}

/// Where the supervisor is in its life, as `status.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SupervisorState {
    /// Starting or supervising its replicas.
    Running,
    /// Asked to stop: its replicas are being stopped.
    Stopping,
    /// Every replica is down; the supervisor exits (its last write).
    Stopped,
}

/// The supervisor process, as recorded in `status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorInfo {
    /// The supervisor's process id.
    pub pid: u32,
    pub(crate) pid_start: u64,
    pub(crate) boot_id: String,
    pub(crate) state: SupervisorState,
    pub(crate) started_at: String,
    pub(crate) updated_at: String,
}

impl SupervisorInfo {
    /// Whether the process this names still runs as a supervisor (same pid, start time, boot).
    pub(super) fn alive(&self) -> bool {
        self.state != SupervisorState::Stopped
            && process::alive(self.pid, self.pid_start, &self.boot_id)
    }
}

/// `WORKSPACE/.orchestrate/swarm/status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StatusFile {
    pub(crate) format_version: u32,
    pub(crate) supervisor: SupervisorInfo,
    pub(crate) children: Vec<ChildStatus>,
    /// When the supervisor last looked at `agents/` again (a reload).
    #[serde(default)]
    pub(crate) reloaded_at: Option<String>,
    /// Roles the last reload could not start.
    #[serde(default)]
    pub(crate) problems: Vec<RoleProblem>,
}

pub(super) fn write_status(path: &Path, file: &StatusFile) -> io::Result<()> {
    json_file::write(path, file, true)
}

/// `Ok(None)` when no supervisor ever ran in the workspace.
pub(super) fn read_status_file(workspace: &Path) -> Result<Option<StatusFile>, SupervisorError> {
    let path = status_path(workspace);
    match json_file::read(&path, STATUS_FORMAT) {
        Ok(file) => Ok(Some(file)),
        Err(json_file::ReadError::Io(err)) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(json_file::ReadError::Io(source)) => Err(SupervisorError::Io {
            action: "read",
            path,
            source,
        }),
        Err(json_file::ReadError::Corrupt(err)) => Err(SupervisorError::Corrupt {
            path,
            message: err.to_string(),
        }),
        Err(json_file::ReadError::TooNew(version)) => {
            Err(SupervisorError::TooNew { path, version })
        }
    }
}
