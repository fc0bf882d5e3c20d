//! The records of `events.jsonl` as types: [`Event`], one variant per kind the runner writes,
//! each a struct of that kind's fields, and the [`Envelope`] every line carries (`v`, `seq`,
//! `ts`, `lane`). The runner writes these and every reader reads them, so a field cannot be
//! renamed on one side only. `docs/events.md` describes each kind.
//!
//! The bytes on disk are those the engine wrote before these types: each line is a JSON object
//! whose keys serde_json sorts, so field order here does not matter, but names, optional fields
//! (left out, or written as `null`) and value types do; the unit tests pin one line per kind.
//! Fields default when absent, so logs of older versions and hand-written fixtures still read.
//!
//! Does not write or read files ([`crate::events`] does); a step's result is
//! [`crate::step_result`]'s.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::approval::Decision;
use crate::state::RunStatus;
use crate::step_result::StepResult;
use orchestrate_base::fingerprint::Change;
use orchestrate_lang::model::Phase;
use orchestrate_queue::queue::Enqueued as EnqueuedTask;

/// One event of a run, tagged by its kind (`"event": "step_finished"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// `run_started`: the first record of a run.
    RunStarted(RunStarted),
    /// `run_resumed`: the first record of each resume.
    RunResumed(RunResumed),
    /// `run_cancelled`: `orchestrate cancel` stopped the run.
    RunCancelled(RunCancelled),
    /// `run_finished`: the last record of a start or resume.
    RunFinished(RunFinished),
    /// `step_started`: an execution of a step began.
    StepStarted(StepStarted),
    /// `process_started`: an attempt of a process step was spawned.
    ProcessStarted(ProcessStarted),
    /// `retry_scheduled`: an attempt failed and another follows after a delay.
    RetryScheduled(RetryScheduled),
    /// `paused`: an agent hit its usage limit; the step waits.
    Paused(Paused),
    /// `step_finished`: an execution ended, with its result.
    StepFinished(StepFinished),
    /// `goto`: an `on` edge was taken.
    Goto(Goto),
    /// `loop_started`: a `for_each` resolved its items.
    LoopStarted(LoopStarted),
    /// `iteration_started`: an item of a loop started.
    IterationStarted(Unit),
    /// `iteration_finished`: an item of a fan-out ended.
    IterationFinished(UnitFinished),
    /// `branch_started`: a branch of a `parallel` step started.
    BranchStarted(Branch),
    /// `branch_finished`: a branch of a `parallel` step ended.
    BranchFinished(BranchFinished),
    /// `loop_detected`: a step went past its `max_visits`.
    LoopDetected(LoopDetected),
    /// `budget_exceeded`: a budget limit was crossed.
    BudgetExceeded(BudgetExceeded),
    /// `budget_unpriced`: a cost limit is set but some spending has no known price.
    BudgetUnpriced(BudgetUnpriced),
    /// `loop_not_converging`: a `converge:` step stopped making progress.
    LoopNotConverging(LoopNotConverging),
    /// `phase_entered`: an agent step's phase differs from the last one.
    PhaseEntered(PhaseEntered),
    /// `runtime_note`: how a runtime approximates a setting it lacks.
    RuntimeNote(RuntimeNote),
    /// `phase_violation`: a readonly or plan step changed the workspace.
    PhaseViolation(PhaseViolation),
    /// `approval_requested`: a step waits for a person's decision.
    ApprovalRequested(ApprovalRequested),
    /// `approval_decided`: the decision an approval step read.
    ApprovalDecided(ApprovalDecided),
    /// `approval_unreadable`: a decision file that does not parse.
    ApprovalUnreadable(ApprovalUnreadable),
    /// `enqueued`: a task was handed to a role's inbox.
    Enqueued(Enqueued),
    /// `child_started`: a `workflow:` step is about to run its child.
    ChildStarted(ChildStarted),
    /// `child_finished`: a child run ended.
    ChildFinished(ChildFinished),
    /// A kind this version does not know (a newer runner may add some): readers skip it.
    /// Never written.
    #[serde(other, skip_serializing)]
    #[schemars(skip)]
    Unknown,
}

/// The first record of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct RunStarted {
    /// The run's id; an `orchestrate run`'s records are in `.orchestrate/runs/<run_id>/`.
    pub run_id: String,
    /// The workflow file as named.
    pub workflow: String,
    /// The workflow's `name:`.
    pub name: String,
    /// Of the workflow's text.
    pub fingerprint: String,
    pub(crate) context: Map<String, Value>,
    /// `YYYYMMDDTHHMMSSZ`.
    pub(crate) timestamp_utc: String,
    pub(crate) pid: u32,
    /// A child run's: the parent's `workflow:` step that started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parent: Option<ParentRun>,
}

/// The run and step a child run was started by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub(crate) struct ParentRun {
    pub(crate) run_id: String,
    pub(crate) step: String,
    pub(crate) exec: u64,
}

/// The first record of each resume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct RunResumed {
    /// How many resumes so far, this one included.
    pub resumes: u32,
    /// Completed `step_finished` records available for replay.
    pub(crate) journal: u64,
}

/// `orchestrate cancel` stopped the run; written just before its `run_finished`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct RunCancelled {
    pub(crate) by: String,
    /// When it was asked.
    pub(crate) at: String,
    /// The `orchestrate cancel` process.
    pub(crate) requested_by_pid: u32,
    /// The last step started.
    pub(crate) step: Option<String>,
}

/// The last record of a start or resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunFinished {
    /// How the start or resume ended: `succeeded`, `failed` or `interrupted`.
    pub status: RunStatus,
    /// The command's exit code.
    #[serde(default)]
    pub exit_code: u8,
    /// Why the run failed or was interrupted; `None` when it succeeded.
    #[serde(default)]
    pub error: Option<String>,
    /// The workflow's `outputs:` as rendered, when it declares any and succeeded.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub(crate) outputs: Map<String, Value>,
}

/// An execution of a step began; not written for a skip or a replayed step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct StepStarted {
    /// The step's name.
    pub step: String,
    /// The execution number: executions in the order they start, from 1 (`docs/events.md`).
    pub exec: u64,
    /// `command`, `provider`, `agent`, `for_each`, `parallel`, `wait_for`, `approval`,
    /// `enqueue` or `workflow`.
    pub kind: String,
    /// The enclosing `for_each` item indexes, outermost first.
    pub iteration: Vec<u64>,
}

/// One attempt of a process step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ProcessStarted {
    pub(crate) step: String,
    /// The execution number, as in its `step_started`.
    pub exec: u64,
    /// 1 for the first attempt, 2 for the first retry, ...
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// As run, secrets masked.
    pub(crate) argv: Vec<String>,
}

/// An attempt failed and the step's `retry:` allows another.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct RetryScheduled {
    /// The step's name.
    pub step: String,
    /// The execution number, as in its `step_started`.
    pub exec: u64,
    /// The attempt that failed.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// The failed attempt's exit code.
    pub exit_code: i64,
    /// Seconds until the next attempt.
    pub delay: f64,
}

/// An agent's usage limit: the step waits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Paused {
    /// The step's name.
    pub step: String,
    /// The execution number, as in its `step_started`.
    pub exec: u64,
    /// The runtime or profile name.
    pub runtime: Option<String>,
    /// `usage_limit`.
    pub reason: String,
    /// RFC 3339.
    pub until: String,
    /// As the CLI reported it.
    pub(crate) resets_at: Option<String>,
}

/// Every execution ends with exactly one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct StepFinished {
    /// The step's name.
    pub step: String,
    /// The execution number, as in its `step_started`.
    pub exec: u64,
    /// The enclosing `for_each` item indexes, outermost first.
    pub iteration: Vec<u64>,
    // Boxed: the largest record by far, it would size every event.
    /// The step's result as `${steps.NAME.*}` sees it (`docs/events.md`, "The step result").
    pub result: Box<StepResult>,
}

/// An `on` edge was taken.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Goto {
    pub(crate) from: String,
    /// A step, or `_end`.
    pub(crate) to: String,
}

/// A `for_each` resolved its items.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct LoopStarted {
    pub(crate) step: String,
    pub(crate) total: u64,
    /// A fan-out's (a sequential loop has neither).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_parallel: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) join: Option<String>,
}

/// An item of a loop started (`iteration_started`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Unit {
    pub(crate) step: String,
    /// 0-based.
    pub(crate) index: u64,
    pub(crate) total: u64,
}

/// An item of a fan-out ended (`iteration_finished`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct UnitFinished {
    pub(crate) step: String,
    pub(crate) index: u64,
    pub(crate) total: u64,
    /// `succeeded`, `failed` or `cancelled`.
    pub(crate) status: String,
}

/// A branch of a `parallel` step started (`branch_started`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Branch {
    pub(crate) step: String,
    pub(crate) branch: String,
    pub(crate) index: u64,
    pub(crate) total: u64,
}

/// A branch of a `parallel` step ended (`branch_finished`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct BranchFinished {
    pub(crate) step: String,
    pub(crate) branch: String,
    pub(crate) index: u64,
    pub(crate) total: u64,
    pub(crate) status: String,
}

/// A step went past its `max_visits`; the run fails right after.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct LoopDetected {
    /// The step's name.
    pub step: String,
    /// How many times the step was entered, this visit included.
    pub visits: u32,
    /// The step's limit.
    pub max_visits: u32,
    /// `A -> B -> A`.
    pub cycle: String,
}

/// A budget limit was crossed; the run fails right after.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct BudgetExceeded {
    pub(crate) step: Option<String>,
    /// The limit's name (`max_tokens`, `max_cost_usd`, ...).
    pub(crate) limit: String,
    /// `file:line` where the limit was set.
    pub(crate) at: String,
    /// Spent and the limit, as text with their unit.
    pub(crate) spent: String,
    pub(crate) max: String,
    /// The run's spending.
    pub(crate) tokens: u64,
    pub(crate) cost_usd: f64,
    pub(crate) unpriced_tokens: u64,
    /// The day's ledger before this run, for a daily limit.
    pub(crate) day_tokens: Option<u64>,
    pub(crate) day_cost_usd: Option<f64>,
    /// The step was running and its processes were stopped (else it was not started).
    pub(crate) stopped: bool,
    pub(crate) message: String,
}

/// A cost limit is set but some spending has, or will have, no known price: at the start, one
/// per agent step whose model has no price (`step`, `runtime`, `model`); while running, once
/// (`unpriced_tokens`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct BudgetUnpriced {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) unpriced_tokens: Option<u64>,
    pub(crate) message: String,
}

/// A `converge:` step stopped making progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct LoopNotConverging {
    pub(crate) step: String,
    /// `not_shrinking` or `repeated`.
    pub(crate) reason: String,
    pub(crate) rounds: u32,
    /// Findings per visit in this activation, in order.
    pub(crate) counts: Vec<u64>,
    /// Of the findings per visit.
    pub(crate) fingerprints: Vec<String>,
    /// The step it goes to; `None`: the run fails.
    pub(crate) on_stall: Option<String>,
}

/// An agent step's phase differs from the last one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PhaseEntered {
    #[serde(default)]
    pub(crate) step: String,
    /// The phase entered.
    pub phase: Phase,
    /// The previous phase in this start or resume.
    #[serde(default)]
    pub(crate) from: Option<Phase>,
    #[serde(default)]
    pub(crate) runtime: String,
}

/// How a runtime approximates a setting it lacks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct RuntimeNote {
    pub(crate) step: String,
    pub(crate) runtime: String,
    pub(crate) note: String,
}

/// A readonly or plan step changed the workspace; the step fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PhaseViolation {
    #[serde(default)]
    pub(crate) step: String,
    pub(crate) phase: Phase,
    #[serde(default)]
    pub(crate) changes: Vec<Change>,
}

/// The step now waits for a person's decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ApprovalRequested {
    /// The step's name.
    pub step: String,
    /// The request file, relative to the workspace.
    pub request: String,
    /// The text shown to the person deciding.
    pub message: String,
    pub(crate) artifacts: Vec<String>,
}

/// The decision an approval step read from its decision file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalDecided {
    /// The step's name.
    #[serde(default)]
    pub step: String,
    pub(crate) decision: Decision,
}

/// A decision file that does not parse; written once per wait.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ApprovalUnreadable {
    pub(crate) step: String,
    pub(crate) error: String,
}

/// A task was handed to a role's inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Enqueued {
    #[serde(default)]
    pub(crate) step: String,
    pub(crate) task: EnqueuedTask,
}

/// A `workflow:` step is about to start, resume or reuse its child run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ChildStarted {
    /// The step's name.
    pub step: String,
    /// The execution number, as in its `step_started`.
    pub exec: u64,
    /// The child workflow file.
    pub workflow: String,
    /// The child's directory, relative to the workspace.
    pub run_root: String,
}

/// A child run ended; written before its step's `step_finished`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ChildFinished {
    pub(crate) step: String,
    pub(crate) exec: u64,
    pub(crate) workflow: String,
    /// `None` when it could not start.
    pub run_id: Option<String>,
    /// The child's directory, relative to the workspace.
    pub run_root: String,
    /// An earlier attempt's child run was continued.
    pub(crate) resumed: bool,
    /// It had already succeeded and was not run again.
    pub(crate) reused: bool,
    /// The step's result's `status` and `exit_code`.
    pub status: Option<String>,
    pub(crate) exit_code: Option<i64>,
}

impl Event {
    /// The kind, as the `event` field names it.
    pub fn name(&self) -> &'static str {
        match self {
            Event::RunStarted(_) => "run_started",
            Event::RunResumed(_) => "run_resumed",
            Event::RunCancelled(_) => "run_cancelled",
            Event::RunFinished(_) => "run_finished",
            Event::StepStarted(_) => "step_started",
            Event::ProcessStarted(_) => "process_started",
            Event::RetryScheduled(_) => "retry_scheduled",
            Event::Paused(_) => "paused",
            Event::StepFinished(_) => "step_finished",
            Event::Goto(_) => "goto",
            Event::LoopStarted(_) => "loop_started",
            Event::IterationStarted(_) => "iteration_started",
            Event::IterationFinished(_) => "iteration_finished",
            Event::BranchStarted(_) => "branch_started",
            Event::BranchFinished(_) => "branch_finished",
            Event::LoopDetected(_) => "loop_detected",
            Event::BudgetExceeded(_) => "budget_exceeded",
            Event::BudgetUnpriced(_) => "budget_unpriced",
            Event::LoopNotConverging(_) => "loop_not_converging",
            Event::PhaseEntered(_) => "phase_entered",
            Event::RuntimeNote(_) => "runtime_note",
            Event::PhaseViolation(_) => "phase_violation",
            Event::ApprovalRequested(_) => "approval_requested",
            Event::ApprovalDecided(_) => "approval_decided",
            Event::ApprovalUnreadable(_) => "approval_unreadable",
            Event::Enqueued(_) => "enqueued",
            Event::ChildStarted(_) => "child_started",
            Event::ChildFinished(_) => "child_finished",
            Event::Unknown => "unknown",
        }
    }

    /// The event of a record read back. A kind this version does not know, or a record whose
    /// fields do not fit its kind, is [`Event::Unknown`]: readers skip it rather than fail.
    pub fn from_record(record: &Value) -> Event {
        Event::deserialize(record).unwrap_or(Event::Unknown)
    }
}

/// The fields every line carries besides its event's own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Envelope {
    /// The record format ([`crate::events::EVENTS_FORMAT`]); a line without one is `v: 1`.
    #[serde(default = "first_format")]
    pub v: u32,
    /// 1, 2, 3, ... in the order written, across resumes.
    pub seq: u64,
    /// When it was written: RFC 3339, UTC, microseconds.
    pub ts: String,
    /// The fan-out lane (`[F, I, ...]`) of the item it belongs to; empty for the run's own
    /// steps, and then not written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lane: Vec<u64>,
}

/// Attempts count from 1 (a record without one is of the first).
fn first_attempt() -> u32 {
    1
}

fn first_format() -> u32 {
    1
}

impl Envelope {
    /// The envelope of a record read back (defaults for what it lacks or cannot be read).
    pub fn from_record(record: &Value) -> Envelope {
        Envelope::deserialize(record).unwrap_or_else(|_| Envelope {
            v: first_format(),
            ..Envelope::default()
        })
    }
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
