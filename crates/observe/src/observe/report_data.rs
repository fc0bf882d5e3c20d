//! The report's data: the plain `Serialize` types of one run's report (`RunReport` and its
//! rows) and of a many-run report (`RunsReport`), the shape `report --json` prints.
//!
//! Does not compute them (`analyze`, `many`) or render them (`report_text`).

use super::children::ChildView;
use super::fold::{Execution, Tokens};
use super::locate::RunSource;
use serde::Serialize;

/// A task run's identity, from its directory and `status.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskInfo {
    pub role: Option<String>,
    pub task: Option<String>,
    pub attempt: Option<u64>,
    pub message: Option<String>,
}

/// One step of one run: its executions summed.
#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    pub step: String,
    /// Times on the path taken (skips by `when` included).
    pub visits: u32,
    /// Process attempts over every execution (retries, and re-runs after a resume).
    pub attempts: u32,
    pub skipped: u32,
    pub failed: u32,
    pub rejected: u32,
    pub duration_sec: f64,
    pub tokens: Tokens,
    pub cost_usd: f64,
    /// Executions whose tokens had no price.
    pub unpriced: u32,
    /// Of the run's total step time (a for_each's share is its body's).
    pub duration_share: f64,
    pub cost_share: f64,
    pub container: bool,
    /// A `parallel` step (shown as such rather than as a for_each).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub parallel: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Places on the path taken (for_each steps not counted: their bodies are).
    pub visits: u32,
    /// Step executions (for_each steps not counted: their bodies are).
    pub executions: u32,
    pub attempts: u32,
    /// Summed step time, for_each steps left out (their time is their body's).
    pub duration_sec: f64,
    pub tokens: Tokens,
    pub cost_usd: f64,
    pub unpriced: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Repeat {
    pub step: String,
    pub visits: u32,
    /// The most visits within one activation (one iteration of its enclosing loops).
    pub most_in_one_pass: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutOfOrder {
    /// Position of `to` in the path (0-based).
    pub position: usize,
    pub from: String,
    pub to: String,
    /// Where the graph lets control go from `from`.
    pub allowed: Vec<String>,
}

/// The path taken, checked against the workflow's graph.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PathCheck {
    /// Which workflow the check used.
    pub workflow: String,
    /// On the default (all-success) path, never entered, and the run went on past them (or
    /// ended successfully without them).
    pub skipped: Vec<String>,
    /// On the default path after the point where an unfinished or failed run stopped.
    pub not_reached: Vec<String>,
    pub repeated: Vec<Repeat>,
    pub out_of_order: Vec<OutOfOrder>,
    /// Steps on the path that the workflow does not have.
    pub unknown: Vec<String>,
}

impl PathCheck {
    pub fn is_clean(&self) -> bool {
        self.skipped.is_empty() && self.out_of_order.is_empty() && self.unknown.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub step: String,
    pub exec: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lane: Vec<u64>,
    pub status: String,
    pub error: String,
    /// A later attempt (after a resume) replaced it.
    pub superseded: bool,
}

/// The report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub source: RunSource,
    /// RUN_ROOT relative to the workspace.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// `running`, `succeeded`, `failed`, `interrupted`, or `stopped` (unfinished, its engine
    /// gone: resume it).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// From the first record to the last (or to the end), downtime between resumes included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_sec: Option<f64>,
    pub resumes: u32,
    /// One row per step, in order of first execution.
    pub steps: Vec<StepRow>,
    pub totals: Totals,
    /// The steps in execution order, a resume's replay merged (each completed step once).
    pub path_taken: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<PathCheck>,
    /// Why the path was not checked, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_skipped: Option<String>,
    pub failures: Vec<Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loop_detected: Option<String>,
    /// Every step execution, superseded ones included.
    pub executions: Vec<Execution>,
    pub notes: Vec<String>,
    /// Child runs of its `workflow:` steps (each reported on by its own run id).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildView>,
}

/// A run left out of a many-run report, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedRun {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunLine {
    pub run_id: String,
    pub source: RunSource,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    pub duration_sec: f64,
    pub cost_usd: f64,
}

/// One step name over many runs.
#[derive(Debug, Clone, Serialize)]
pub struct StepStats {
    pub step: String,
    /// Executions that ran (skips by `when` not counted).
    pub count: u32,
    /// Runs in which it ran.
    pub runs: u32,
    pub p50_duration_sec: f64,
    pub p95_duration_sec: f64,
    pub p50_cost_usd: f64,
    pub p95_cost_usd: f64,
    pub failed: u32,
    pub rejected: u32,
    /// `failed / count`.
    pub failure_rate: f64,
    pub total_duration_sec: f64,
    pub total_cost_usd: f64,
    pub tokens: Tokens,
    pub unpriced: u32,
}

/// One step execution singled out (slowest, costliest).
#[derive(Debug, Clone, Serialize)]
pub struct Notable {
    pub run_id: String,
    pub path: String,
    pub step: String,
    pub exec: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lane: Vec<u64>,
    pub duration_sec: f64,
    pub cost_usd: f64,
}

/// The report over many runs.
#[derive(Debug, Clone, Serialize)]
pub struct RunsReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    pub runs: Vec<RunLine>,
    pub skipped: Vec<SkippedRun>,
    /// Sorted by total time, longest first.
    pub steps: Vec<StepStats>,
    pub slowest: Vec<Notable>,
    pub costliest: Vec<Notable>,
    pub total_duration_sec: f64,
    pub total_cost_usd: f64,
}
