//! A task's terminal record: the `status/v1` document (`status.json`) every attempt leaves in
//! `processed/` or `failed/`, and the history entries that link an attempt to earlier ones.
//!
//! Owns: the one type every writer (a finished attempt in `worker`, quarantine, a worker that
//! died too often and a requeue that could not happen in `queue`) constructs, so that a record
//! missing a documented key does not compile, and the tail of a failed step's stderr that
//! failure messages quote, and the JSON Schema of `status/v1` rendered from the same types
//! (`docs/schema/status.schema.json`); reading a record back as that type. Does not decide where a
//! record goes (`queue`) or show records to people (`commands`, `observe`).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `schema` of every task record.
pub(crate) const SCHEMA: &str = "status/v1";

/// `status.json` of a finished (or quarantined) task. Every key of `docs/swarm.md`'s list is
/// always written, `null` or empty where it does not apply; the keys after `history` are written
/// only where they apply.
//
// Read back leniently: a key a record lacks (a record from before this type, or written by hand)
// reads as empty, so a reader gets what the record has (`TaskStatus::from_bytes`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(title = "orchestrate task status/v1")]
pub struct TaskStatus {
    /// Always `status/v1`.
    #[schemars(extend("const" = "status/v1"))]
    pub(crate) schema: String,
    /// Links the tasks of one piece of work, handed on from task to task.
    pub correlation_id: Option<String>,
    /// The role that ran the task.
    pub(crate) agent: String,
    /// The task id.
    pub(crate) task: String,
    /// SHA-256 of the workflow file's text (with its sub-workflows') the attempt ran; `None`
    /// where no workflow ran (quarantine, a worker that died too often).
    pub workflow_hash: Option<String>,
    /// Which attempt this was, from 1.
    pub attempt: Option<u32>,
    /// The attempt's run (`.orchestrate/runs/<id>`).
    pub run_id: Option<String>,
    /// The last step run.
    pub step: Option<String>,
    /// When the record was written (RFC 3339).
    pub timestamp: String,
    /// Whether the task succeeded (`processed/`) or not (`failed/`).
    pub success: bool,
    /// The workflow's exit code (the exit-code table: 1 a step failed, 2 invalid, 124, 130).
    pub exit_code: i32,
    /// The failing step's own exit code, when a step's failure ended the run.
    pub step_exit_code: Option<i32>,
    /// Files written through `output_file`, relative to the workspace.
    pub outputs: Vec<String>,
    /// What the attempt measured.
    pub metrics: Option<Metrics>,
    /// Tasks handed to other roles.
    pub next_actions: Vec<NextAction>,
    /// What happened; for a failed step, followed by the last lines of its stderr.
    pub message: String,
    /// When the attempt was claimed, started and finished.
    pub timings: Option<Timings>,
    /// The role process that ran the attempt.
    pub worker: Option<Worker>,
    /// Earlier attempts, and earlier failed records this task was retried from.
    pub history: Vec<HistoryEntry>,
    /// Under `isolation: worktree`: where the attempt ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<WorktreeInfo>,
    /// Stopped by `orchestrate cancel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<crate::cancel::CancelRequest>,
    /// Bad input moved aside unread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) quarantined: Option<bool>,
    /// A quarantined entry's name as it was in the inbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) original_name: Option<String>,
    /// The task file changed after its claim: `task` was put back to the bytes the workflow was
    /// given and the later version kept as `task.changed` (`queue::complete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) task_changed: Option<String>,
}

impl TaskStatus {
    /// A record read back, `None` when it is no `status.json` (not JSON, or a key of the wrong
    /// type).
    pub fn from_bytes(bytes: &[u8]) -> Option<TaskStatus> {
        serde_json::from_slice(bytes).ok()
    }

    /// A record with every optional part empty: writers fill in what applies.
    pub fn new(agent: &str, task: &str, success: bool, exit_code: i32, message: &str) -> Self {
        TaskStatus {
            schema: SCHEMA.to_string(),
            correlation_id: None,
            agent: agent.to_string(),
            task: task.to_string(),
            workflow_hash: None,
            attempt: None,
            run_id: None,
            step: None,
            timestamp: orchestrate_base::clock::now_rfc3339(),
            success,
            exit_code,
            step_exit_code: None,
            outputs: Vec::new(),
            metrics: None,
            next_actions: Vec::new(),
            message: message.to_string(),
            timings: None,
            worker: None,
            history: Vec::new(),
            worktree: None,
            cancelled: None,
            quarantined: None,
            original_name: None,
            task_changed: None,
        }
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// Sizes and durations of one task's run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Metrics {
    /// Seconds from start to finish.
    pub duration_sec: f64,
    /// The task file's size.
    pub task_bytes: u64,
}

/// A task this run handed to another role.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NextAction {
    /// The role the task went to.
    pub agent: String,
    /// The task file, relative to the workspace.
    pub file: String,
    /// The task id.
    pub task: String,
}

/// When the task was claimed, when its workflow started and when it finished.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Timings {
    /// RFC 3339.
    pub claimed_at: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
}

/// The role process that ran the task.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Worker {
    /// The role process's pid.
    pub pid: u32,
    /// Its label, `<role>#<replica>`.
    pub label: String,
}

/// The git worktree an attempt ran in (`isolation: worktree`), as its record names it. The
/// fields are in the order they have always been written (alphabetical).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct WorktreeInfo {
    /// The base as configured (a branch, tag or commit).
    pub base: String,
    /// The commit the base was when the branch was made.
    pub base_commit: String,
    /// The branch checked out in it.
    pub branch: String,
    /// Whether the worktree is still there (`false`: removed after the success).
    pub kept: bool,
    /// Its top directory, relative to the workspace.
    pub path: String,
}

/// What ended one earlier attempt of a task (the queue's sidecar keeps these between attempts).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct HistoryEntry {
    /// Which attempt it was.
    pub attempt: u32,
    /// When it ended (RFC 3339).
    pub ended: String,
    /// Why it ended.
    pub reason: String,
    /// `false`: given back at shutdown, not counted against `max_attempts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged: Option<bool>,
    /// The earlier attempt's record (`failed/<ts>_<role>_<id>`) this task was retried from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// The earlier attempt's run id, when it had a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

/// The JSON Schema of `status/v1` as written (every key the writer always writes is
/// required), pretty, with a final newline: `docs/schema/status.schema.json`.
pub fn json_schema() -> String {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    let schema = generator.into_root_schema_for::<TaskStatus>();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Lines of a failed step's stderr quoted in its failure message.
pub(crate) const STDERR_TAIL_LINES: usize = 5;
/// Bytes of a failed step's stderr read for its failure message.
pub(crate) const STDERR_TAIL_BYTES: u64 = 1024;

/// The last lines of a step's stderr log (already masked, as every log is): at most
/// [`STDERR_TAIL_LINES`] lines from its last [`STDERR_TAIL_BYTES`] bytes, blank lines dropped.
pub fn stderr_tail(log: &Path) -> Option<String> {
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    let from = len.saturating_sub(STDERR_TAIL_BYTES);
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut bytes = Vec::new();
    file.take(STDERR_TAIL_BYTES).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if from > 0 && !lines.is_empty() {
        // The first line was cut by the byte window.
        lines.remove(0);
    }
    let kept: Vec<&str> = lines
        .into_iter()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let start = kept.len().saturating_sub(STDERR_TAIL_LINES);
    let tail = kept[start..].join("\n");
    (!tail.is_empty()).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tail_keeps_the_last_five_nonblank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("err");
        std::fs::write(&log, "1\n2\n\n3\n4\n5\n6\n7\n").unwrap();
        assert_eq!(stderr_tail(&log).as_deref(), Some("3\n4\n5\n6\n7"));
        std::fs::write(&log, "").unwrap();
        assert_eq!(stderr_tail(&log), None);
    }

    #[test]
    fn stderr_tail_reads_only_the_last_kilobyte() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("err");
        let mut text = "x".repeat(5000);
        text.push_str("\nreason\n");
        std::fs::write(&log, &text).unwrap();
        assert_eq!(stderr_tail(&log).as_deref(), Some("reason"));
    }

    #[test]
    fn every_documented_key_is_written_even_when_empty() {
        let value = serde_json::to_value(TaskStatus::new("r", "t", false, 2, "bad")).unwrap();
        for key in [
            "correlation_id",
            "attempt",
            "run_id",
            "step",
            "outputs",
            "metrics",
        ] {
            assert!(value.get(key).is_some(), "{key} missing");
        }
        assert!(value.get("worktree").is_none());
    }
}
