//! Human approval through files: a request beside the run, a decision written by anyone.
//!
//! Owns: the layout `WORKSPACE/.orchestrate/approvals/<run_id>/<step>.request.json` and
//! `<step>.decision.json` (with the run's other records, so nothing untracked appears in a
//! repository's root; requests of runs started before it moved, in `approvals/<run_id>/`, are
//! still answered there), their formats, writing a decision (`orchestrate approve/reject`, or any
//! tool that writes the file atomically: over ssh, git, cron or a phone), and reading one back.
//! Only an explicit `"decision": "approve"` approves. Does not wait or decide control flow (the
//! runner does).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a run's approval requests and decisions live: `.orchestrate/approvals/<run_id>/`.
pub fn dir(workspace: &Path, run_id: &str) -> PathBuf {
    workspace
        .join(".orchestrate")
        .join("approvals")
        .join(run_id)
}

/// Where requests were written before they moved under `.orchestrate/`: a run started then may
/// still be waiting on one.
fn legacy_dir(workspace: &Path, run_id: &str) -> PathBuf {
    workspace.join("approvals").join(run_id)
}

pub(crate) fn request_path(workspace: &Path, run_id: &str, step: &str) -> PathBuf {
    request_in(&dir(workspace, run_id), step)
}

pub(crate) fn decision_path(workspace: &Path, run_id: &str, step: &str) -> PathBuf {
    decision_in(&dir(workspace, run_id), step)
}

fn request_in(dir: &Path, step: &str) -> PathBuf {
    dir.join(format!("{step}.request.json"))
}

fn decision_in(dir: &Path, step: &str) -> PathBuf {
    dir.join(format!("{step}.decision.json"))
}

/// An approval step's `<step>.request.json`: what the person deciding is asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub(crate) format_version: u32,
    /// Identifies this visit of the step; a decision for an earlier visit does not count.
    pub request_id: String,
    pub(crate) run_id: String,
    pub(crate) step: String,
    pub(crate) message: String,
    /// Files to read before deciding, relative to the workspace.
    pub(crate) artifacts: Vec<String>,
    pub(crate) requested_at: String,
    /// How to answer, for people reading the file.
    pub(crate) how: Vec<String>,
}

/// A person's answer to an approval request, as its decision file writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The step succeeds.
    Approve,
    /// The step ends with status `rejected`.
    Reject,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct Decision {
    pub(crate) decision: Verdict,
    /// The request it answers; when absent, the decision counts only if written after the
    /// request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) at: Option<String>,
}

/// Reads the decision for `request`, if one that answers it is there. A file that does not parse
/// is not a decision (it may be half-written by a tool that does not rename): `Err` says why.
pub(crate) fn read_decision(
    path: &Path,
    request: &Request,
    request_written: std::time::SystemTime,
) -> Result<Option<Decision>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
    };
    let decision: Decision = serde_json::from_slice(&bytes).map_err(|err| {
        format!("{} is not a decision ({err}); write {{\"decision\": \"approve\"}} or {{\"decision\": \"reject\", \"reason\": \"...\"}}", path.display())
    })?;
    match &decision.request_id {
        Some(id) if *id != request.request_id => Ok(None),
        Some(_) => Ok(Some(decision)),
        None => {
            let written = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            Ok(written.filter(|w| *w >= request_written).map(|_| decision))
        }
    }
}

/// Records a decision for the pending request of `step` in run `run_id`.
pub fn decide(
    workspace: &Path,
    run_id: &str,
    step: &str,
    verdict: Verdict,
    reason: Option<String>,
    note: Option<String>,
    by: Option<String>,
) -> Result<PathBuf, String> {
    orchestrate_base::ids::check_id(run_id)
        .map_err(|r| format!("`{run_id}` is not a run id: {r}"))?;
    // The request is where the waiting run wrote it.
    let dir = [dir(workspace, run_id), legacy_dir(workspace, run_id)]
        .into_iter()
        .find(|d| request_in(d, step).exists())
        .unwrap_or_else(|| dir(workspace, run_id));
    let request_path = request_in(&dir, step);
    let bytes = std::fs::read(&request_path).map_err(|err| {
        format!(
            "no approval is pending for step `{step}` of run {run_id} ({}: {err}); pending ones are in {}",
            request_path.display(),
            dir.display()
        )
    })?;
    let request: Request = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a request: {e}", request_path.display()))?;
    let decision_file = decision_in(&dir, step);
    if let Ok(bytes) = std::fs::read(&decision_file)
        && let Ok(existing) = serde_json::from_slice::<Decision>(&bytes)
        && existing.request_id.as_deref() == Some(request.request_id.as_str())
    {
        let verdict = if existing.decision == Verdict::Approve {
            "approved"
        } else {
            "rejected"
        };
        return Err(format!(
            "no approval is pending for step `{step}` of run {run_id}: it was already {verdict}{} at {}; a decision is never overwritten",
            existing
                .by
                .as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default(),
            existing.at.as_deref().unwrap_or("?")
        ));
    }
    if verdict == Verdict::Reject && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(
            "a rejection needs --reason: it is passed to the step the rejection leads to".into(),
        );
    }
    let by = by
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok());
    let decision = Decision {
        decision: verdict,
        request_id: Some(request.request_id),
        reason,
        note,
        by,
        at: Some(orchestrate_base::clock::now_rfc3339()),
    };
    let path = decision_file;
    let bytes = serde_json::to_vec_pretty(&decision).map_err(|e| e.to_string())?;
    orchestrate_base::fsutil::atomic_write(&path, &bytes)
        .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
    Ok(path)
}
