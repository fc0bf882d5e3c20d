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
pub(crate) struct TaskInfo {
    pub(crate) role: Option<String>,
    pub(crate) task: Option<String>,
    pub(crate) attempt: Option<u64>,
    pub(crate) message: Option<String>,
}

/// One step of one run: its executions summed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepRow {
    pub(crate) step: String,
    /// Times on the path taken (skips by `when` included).
    pub(crate) visits: u32,
    /// Process attempts over every execution (retries, and re-runs after a resume).
    pub(crate) attempts: u32,
    pub(crate) skipped: u32,
    pub(crate) failed: u32,
    pub(crate) rejected: u32,
    pub(crate) duration_sec: f64,
    pub(crate) tokens: Tokens,
    pub(crate) cost_usd: f64,
    /// Executions whose tokens had no price.
    pub(crate) unpriced: u32,
    /// Of the run's total step time (a for_each's share is its body's).
    pub(crate) duration_share: f64,
    pub(crate) cost_share: f64,
    pub(crate) container: bool,
    /// A `parallel` step (shown as such rather than as a for_each).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) parallel: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Totals {
    /// Places on the path taken (for_each steps not counted: their bodies are).
    pub(crate) visits: u32,
    /// Step executions (for_each steps not counted: their bodies are).
    pub(crate) executions: u32,
    pub(crate) attempts: u32,
    /// Summed step time, for_each steps left out (their time is their body's).
    pub(crate) duration_sec: f64,
    pub(crate) tokens: Tokens,
    pub(crate) cost_usd: f64,
    pub(crate) unpriced: u32,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Repeat {
    pub(crate) step: String,
    pub(crate) visits: u32,
    /// The most visits within one activation (one iteration of its enclosing loops).
    pub(crate) most_in_one_pass: u32,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct OutOfOrder {
    /// Position of `to` in the path (0-based).
    pub(crate) position: usize,
    pub(crate) from: String,
    pub(crate) to: String,
    /// Where the graph lets control go from `from`.
    pub(crate) allowed: Vec<String>,
}

/// The path taken, checked against the workflow's graph.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct PathCheck {
    /// Which workflow the check used.
    pub(crate) workflow: String,
    /// On the default (all-success) path, never entered, and the run went on past them (or
    /// ended successfully without them).
    pub(crate) skipped: Vec<String>,
    /// On the default path after the point where an unfinished or failed run stopped.
    pub(crate) not_reached: Vec<String>,
    pub(crate) repeated: Vec<Repeat>,
    pub(crate) out_of_order: Vec<OutOfOrder>,
    /// Steps on the path that the workflow does not have.
    pub(crate) unknown: Vec<String>,
}

impl PathCheck {
    #[cfg(test)]
    pub(crate) fn is_clean(&self) -> bool {
        self.skipped.is_empty() && self.out_of_order.is_empty() && self.unknown.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Failure {
    pub(crate) step: String,
    pub(crate) exec: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) lane: Vec<u64>,
    pub(crate) status: String,
    pub(crate) error: String,
    /// A later attempt (after a resume) replaced it.
    pub(crate) superseded: bool,
}

/// The report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub(crate) run_id: String,
    pub(crate) source: RunSource,
    /// RUN_ROOT relative to the workspace.
    pub(crate) path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) task: Option<TaskInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) workflow: Option<String>,
    /// `running`, `succeeded`, `failed`, `interrupted`, or `stopped` (unfinished, its engine
    /// gone: resume it).
    pub(crate) status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) finished_at: Option<String>,
    /// From the first record to the last (or to the end), downtime between resumes included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) wall_sec: Option<f64>,
    pub(crate) resumes: u32,
    /// One row per step, in order of first execution.
    pub(crate) steps: Vec<StepRow>,
    pub(crate) totals: Totals,
    /// The steps in execution order, a resume's replay merged (each completed step once).
    pub(crate) path_taken: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) check: Option<PathCheck>,
    /// Why the path was not checked, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) check_skipped: Option<String>,
    pub(crate) failures: Vec<Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) loop_detected: Option<String>,
    /// Every step execution, superseded ones included.
    pub(crate) executions: Vec<Execution>,
    pub(crate) notes: Vec<String>,
    /// Child runs of its `workflow:` steps (each reported on by its own run id).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) children: Vec<ChildView>,
}

/// A run left out of a many-run report, with the reason.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SkippedRun {
    pub(crate) path: String,
    pub(crate) reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunLine {
    pub(crate) run_id: String,
    pub(crate) source: RunSource,
    pub(crate) path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) workflow: Option<String>,
    pub(crate) status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) started_at: Option<String>,
    pub(crate) duration_sec: f64,
    pub(crate) cost_usd: f64,
}

/// One step name over many runs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepStats {
    pub(crate) step: String,
    /// Executions that ran (skips by `when` not counted).
    pub(crate) count: u32,
    /// Runs in which it ran.
    pub(crate) runs: u32,
    pub(crate) p50_duration_sec: f64,
    pub(crate) p95_duration_sec: f64,
    pub(crate) p50_cost_usd: f64,
    pub(crate) p95_cost_usd: f64,
    pub(crate) failed: u32,
    pub(crate) rejected: u32,
    /// `failed / count`.
    pub(crate) failure_rate: f64,
    pub(crate) total_duration_sec: f64,
    pub(crate) total_cost_usd: f64,
    pub(crate) tokens: Tokens,
    pub(crate) unpriced: u32,
}

/// One step execution singled out (slowest, costliest).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Notable {
    pub(crate) run_id: String,
    pub(crate) path: String,
    pub(crate) step: String,
    pub(crate) exec: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) lane: Vec<u64>,
    pub(crate) duration_sec: f64,
    pub(crate) cost_usd: f64,
}

/// The report over many runs.
#[derive(Debug, Clone, Serialize)]
pub struct RunsReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) since: Option<String>,
    pub(crate) runs: Vec<RunLine>,
    pub(crate) skipped: Vec<SkippedRun>,
    /// Sorted by total time, longest first.
    pub(crate) steps: Vec<StepStats>,
    pub(crate) slowest: Vec<Notable>,
    pub(crate) costliest: Vec<Notable>,
    pub(crate) total_duration_sec: f64,
    pub(crate) total_cost_usd: f64,
}
