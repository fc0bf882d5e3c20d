//! Cancel requests: who asked a run or a task to stop, and a run's request on disk.
//!
//! Owns: the request record (target, who, when, which process), kept in a task's `status.json`
//! and in `RUN_ROOT/cancel.json`, which the runner reads when it stops. Does not stop anything
//! and does not know where a role's requests are kept (`control` does).

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A request to stop a run or a task, and who made it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct CancelRequest {
    /// The run id or task id named on the command line.
    pub(crate) target: String,
    /// Who asked: `$USER`, else the uid.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// The process that asked (`orchestrate cancel`).
    pub pid: u32,
}

impl CancelRequest {
    /// A request to stop `target`, made now by this process and user.
    pub fn new(target: &str) -> CancelRequest {
        CancelRequest {
            target: target.to_string(),
            by: who(),
            at: orchestrate_base::clock::now_rfc3339(),
            pid: std::process::id(),
        }
    }

    /// "cancelled by alice at <time> (orchestrate cancel)".
    pub fn describe(&self) -> String {
        format!(
            "cancelled by {} at {} (orchestrate cancel)",
            self.by, self.at
        )
    }
}

/// Who is asking: `$USER`, else the uid.
pub fn who() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid {}", orchestrate_base::process::uid()))
}

/// `RUN_ROOT/cancel.json`: who asked a run to stop. The runner reads it when it stops.
pub(crate) fn run_cancel_path(run_root: &Path) -> PathBuf {
    run_root.join("cancel.json")
}

/// Writes `request` to `RUN_ROOT/cancel.json` atomically; the error says which file could not be
/// written.
pub fn write_run_cancel(run_root: &Path, request: &CancelRequest) -> Result<(), String> {
    let path = run_cancel_path(run_root);
    orchestrate_base::fsutil::atomic_write(&path, &serde_json::to_vec(request).unwrap_or_default())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The cancel request of a run, if one was made.
pub fn run_cancel(run_root: &Path) -> Option<CancelRequest> {
    let bytes = std::fs::read(run_cancel_path(run_root)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Forgets an earlier request (a resumed run starts without one).
pub fn clear_run_cancel(run_root: &Path) {
    let _ = std::fs::remove_file(run_cancel_path(run_root));
}
