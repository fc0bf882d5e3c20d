//! A step's result as a type: [`StepResult`], what `step_finished.result` and `state.json`'s
//! `steps` hold and what `${steps.NAME.*}` sees, with the outcome of each fan-out item
//! ([`ItemOutcome`]) and a step's error ([`StepError`]). The runner builds these and every
//! reader (status, report, OTLP, metrics, breakers, progress, wftest) reads their fields, so a
//! field cannot be renamed on one side only. `docs/events.md` ("The step result") describes them.
//!
//! The bytes on disk are those the engine wrote when results were built with `json!`: serde_json
//! (without `preserve_order`) sorted their keys at every depth, so a [`StepResult`] is written
//! through a JSON value, which sorts them the same way (its fields are declared in that order
//! too, to read as the records do). A field some steps write as `null` is an `Option<Option<_>>`
//! (absent, or present and `null`). Fields this version does not know (a newer version's) are
//! kept in `extra` and written back in their place. The unit tests pin the bytes against `json!`.
//!
//! Does not decide what a step's result says (the runner does). Templates and jq read results as
//! JSON: [`StepResult::to_value`] converts one where they read it, nowhere else.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::approval::Verdict;
use orchestrate_base::exec::Outcome;
use orchestrate_base::fingerprint::Change;
use orchestrate_lang::model::{Capture, Phase};
use orchestrate_queue::queue::Enqueued;
use orchestrate_runtime::parse::{Denial, Usage};

/// How a step ended. The default is only for a record without a result (hand-written): a
/// reader shows it as failed rather than dropping the step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// It did what it was asked.
    Succeeded,
    /// It failed; the default, so that a record without a status reads as failed.
    #[default]
    Failed,
    /// `rejected_when` held, or an approval was rejected.
    Rejected,
    /// Its `when` was false.
    Skipped,
    /// Stopped by a signal or shutdown; resume runs it again.
    Interrupted,
}

impl StepStatus {
    /// As records write it (`succeeded`).
    pub fn label(self) -> &'static str {
        match self {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Rejected => "rejected",
            StepStatus::Skipped => "skipped",
            StepStatus::Interrupted => "interrupted",
        }
    }
}

/// A failed step's error: a sentence for command, provider, wait, approval, fan-out and
/// workflow steps; a classified error for agent steps (and provider steps whose CLI failure
/// was recognised).
///
/// Untagged because that is the shape on disk (a string or an object); the two cannot be
/// confused, so no error message suffers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StepError {
    /// A sentence: command, provider, wait, approval, fan-out and workflow steps.
    Message(String),
    /// A classified error: agent steps, and provider steps whose CLI failure was recognised.
    Classified(ClassifiedError),
}

impl StepError {
    /// The error as one line: `kind: message` for a classified one.
    pub(crate) fn text(&self) -> String {
        match self {
            StepError::Message(text) => text.clone(),
            StepError::Classified(error) => format!("{}: {}", error.kind.label(), error.message),
        }
    }

    /// The class of a classified error.
    pub(crate) fn kind(&self) -> Option<&ErrorKind> {
        match self {
            StepError::Message(_) => None,
            StepError::Classified(error) => Some(&error.kind),
        }
    }

    /// The classified error, if this is one.
    pub fn classified(&self) -> Option<&ClassifiedError> {
        match self {
            StepError::Message(_) => None,
            StepError::Classified(error) => Some(error),
        }
    }
}

/// An error with a class an engine can act on (retry, wait, fix config, give up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClassifiedError {
    /// HTTP status of the failed model API call, when the CLI revealed it (`null` when a
    /// classified CLI failure did not).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub(crate) http_status: Option<Option<u16>>,
    /// What class of error, which decides whether the step is retried, paused or failed.
    pub kind: ErrorKind,
    /// What went wrong, for a person.
    pub message: String,
    /// When the CLI says a limit lifts, verbatim (`null` when a classified CLI failure did not).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub resets_at: Option<Option<String>>,
    /// A provider step's: the CLI recognised from its argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) runtime: Option<String>,
    /// Fields this version does not know, kept as read.
    #[serde(flatten)]
    #[schemars(skip)]
    pub(crate) extra: Map<String, Value>,
}

impl ClassifiedError {
    /// An error of `kind` saying `message`, without the fields only CLI failures carry.
    pub(crate) fn new(kind: impl Into<ErrorKind>, message: impl Into<String>) -> ClassifiedError {
        ClassifiedError {
            http_status: None,
            kind: kind.into(),
            message: message.into(),
            resets_at: None,
            runtime: None,
            extra: Map::new(),
        }
    }
}

impl From<orchestrate_runtime::parse::RuntimeError> for ClassifiedError {
    /// A CLI failure as the parser classified it: `http_status` and `resets_at` are written
    /// even when `null`.
    fn from(error: orchestrate_runtime::parse::RuntimeError) -> ClassifiedError {
        ClassifiedError {
            http_status: Some(error.http_status),
            resets_at: Some(error.resets_at),
            ..ClassifiedError::new(ErrorKind::Known(error.kind), error.message)
        }
    }
}

/// The class of a step's error: one of the classes the runtimes and the engine share
/// ([`orchestrate_runtime::parse::ErrorKind`]), or one this version does not know (a newer
/// version's), kept as written. Written as the class's name either way (`rate_limit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ErrorKind {
    /// A class this version knows.
    Known(orchestrate_runtime::parse::ErrorKind),
    /// A class this version does not know, as written.
    Unknown(String),
}

impl ErrorKind {
    /// As records write it (`rate_limit`).
    pub fn label(&self) -> &str {
        match self {
            ErrorKind::Known(kind) => kind.label(),
            ErrorKind::Unknown(kind) => kind,
        }
    }
}

impl From<orchestrate_runtime::parse::ErrorKind> for ErrorKind {
    fn from(kind: orchestrate_runtime::parse::ErrorKind) -> ErrorKind {
        ErrorKind::Known(kind)
    }
}

/// One `output_schema` violation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Violation {
    pub(crate) message: String,
    /// A JSON pointer into the output, `/` for its root.
    pub(crate) path: String,
}

/// How a fan-out item or branch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ItemStatus {
    Succeeded,
    Failed,
    /// Stopped while it ran: a sibling failed under `all_success`, or the run was interrupted.
    Cancelled,
    /// Never started: the join had already failed, or the run was interrupted.
    NotStarted,
}

impl ItemStatus {
    /// As records write it (`not_started`).
    pub(crate) fn label(self) -> &'static str {
        match self {
            ItemStatus::Succeeded => "succeeded",
            ItemStatus::Failed => "failed",
            ItemStatus::Cancelled => "cancelled",
            ItemStatus::NotStarted => "not_started",
        }
    }
}

/// One item's (or branch's) outcome in a fan-out step's `results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ItemOutcome {
    /// A `parallel` branch's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) branch: Option<String>,
    /// Why it failed: the run's failure message of its lane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// `null` for an item that never started.
    #[serde(default)]
    pub(crate) exit_code: Option<i32>,
    /// A `for_each` item's position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) index: Option<u64>,
    /// A `for_each` item's value.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub(crate) item: Option<Value>,
    /// The last recorded step's captured output, as in [`StepResult`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub(crate) json: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lines: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) output: Option<String>,
    /// Its output was left out to bound the step's result (its logs keep it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) output_dropped: Option<bool>,
    pub(crate) status: ItemStatus,
    /// The last step its body recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) step: Option<String>,
    /// Fields this version does not know, kept as read.
    #[serde(flatten)]
    #[schemars(skip)]
    pub(crate) extra: Map<String, Value>,
}

impl ItemOutcome {
    /// An outcome of `status` and nothing else yet.
    pub(crate) fn new(status: ItemStatus, exit_code: Option<i32>) -> ItemOutcome {
        ItemOutcome {
            branch: None,
            error: None,
            exit_code,
            index: None,
            item: None,
            json: None,
            lines: None,
            output: None,
            output_dropped: None,
            status,
            step: None,
            extra: Map::new(),
        }
    }
}

// Written with its keys sorted at every depth, as the `json!` objects it replaces were:
// `remote = "Self"` keeps the derived code as inherent functions that the `Serialize` and
// `Deserialize` impls below wrap.
/// A step's result. Which fields are set depends on the step's kind and how it ended (the
/// tables of `docs/events.md`); a field left `None` is not written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(remote = "Self")]
pub struct StepResult {
    /// Agent steps: API calls the CLI retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_retries: Option<u64>,
    /// Approval steps: when it was decided, as the decision file says.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub at: Option<Option<String>>,
    /// Process steps: the attempts made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// `parallel`: the outcomes by branch name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<BTreeMap<String, ItemOutcome>>,
    /// The step was stopped by a budget: the limit's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_exceeded: Option<String>,
    /// Approval steps: who decided.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub by: Option<Option<String>>,
    /// Fan-outs: items or branches stopped while they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<u64>,
    /// A phase violation: what changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_files: Option<Vec<Change>>,
    /// USD; `null` when no price is known for the model.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub cost_usd: Option<Option<f64>>,
    /// claude and codex: the session's running total (`null` for codex).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub cost_usd_cumulative: Option<Option<f64>>,
    /// Approval steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Verdict>,
    /// Agent steps: tool calls the CLI refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denials: Option<Vec<Denial>>,
    /// Seconds, microsecond precision (`0.0` for a skip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// A `for_each` whose body took `goto: _end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_run: Option<bool>,
    /// Why the step failed; absent when it succeeded or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    /// Every step that ran: 2 for invalid input, 124 for a timeout, 130 when interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Fan-outs: items or branches that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
    /// `wait_for`: the files found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// `for_each`: items completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u64>,
    /// Fan-outs: the join policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
    /// The parsed output of `output_capture: json` (`null` when it did not parse and
    /// `allow_parse_error` is set). The user's data.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub json: Option<Value>,
    /// `workflow` steps: the child run's last step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<String>,
    /// The output of `output_capture: lines`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<String>>,
    /// `for_each` fan-outs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Agent steps: the model the CLI reported (`null` when it did not).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub model: Option<Option<String>>,
    /// Fan-outs: items or branches never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_started: Option<u64>,
    /// Approval steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Process steps: how the process ended.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "outcome"
    )]
    pub outcome: Option<Outcome>,
    /// The captured text output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// `lines` or `json`; absent for text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_capture: Option<Capture>,
    /// The step's `output_file`, relative to the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
    /// `workflow` steps: the child's declared outputs (`{}` unless it succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Map<String, Value>>,
    /// `allow_parse_error`: why the output was not JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
    /// Agent steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Process steps: the process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `wait_for`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_count: Option<u64>,
    /// Agent steps: the runtime profile's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Approval steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `rejected_when` turned a success into a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<String>,
    /// Agent steps: the model asked for, `null` for the CLI's default.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub requested_model: Option<Option<String>>,
    /// Agent steps: the agent's final text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Fan-outs: each item's outcome, in item order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<ItemOutcome>>,
    /// Fan-outs: some outcomes' outputs were dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results_truncated: Option<bool>,
    /// `workflow` steps: the child run's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// `workflow` steps: the child run's directory, relative to the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_root: Option<String>,
    /// Agent steps: the CLI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Agent steps (`null` when the CLI reported none).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub session_id: Option<Option<String>>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// How the step ended.
    #[serde(default)]
    pub status: StepStatus,
    /// The step's logs, relative to the workspace (only streams it wrote to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_log: Option<String>,
    /// The step's stdout log, relative to the workspace (only when it wrote to stdout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_log: Option<String>,
    /// Fan-outs: items or branches that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<u64>,
    /// `enqueue`: the task written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Enqueued>,
    /// Fan-outs: items or branches in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// The captured output was cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Agent steps (`null` when the CLI did not say).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub turns: Option<Option<u64>>,
    /// Agent steps, and `workflow` steps whose child spent any: tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// claude and codex: the session's running totals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_cumulative: Option<Usage>,
    /// `output_schema` violations (routed by `on.invalid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violations: Option<Vec<Violation>>,
    /// `wait_for`: seconds waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_duration: Option<f64>,
    /// Approval steps: seconds waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited: Option<f64>,
    /// `workflow` steps: the child workflow's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Fields this version does not know (a newer version's), kept as read.
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Map<String, Value>,
}

impl Serialize for StepResult {
    /// The derived fields, through a JSON value: serde_json's map sorts keys, so nested
    /// records (the outcome, usage, a task) and unknown fields come out sorted too.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Fields<'a>(&'a StepResult);
        impl Serialize for Fields<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                StepResult::serialize(self.0, serializer)
            }
        }
        serde_json::to_value(Fields(self))
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StepResult {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StepResult, D::Error> {
        StepResult::deserialize(deserializer)
    }
}

impl StepResult {
    /// A result of `status` with nothing else set.
    pub(crate) fn new(status: StepStatus) -> StepResult {
        StepResult {
            status,
            ..StepResult::default()
        }
    }

    /// A failed result: `exit_code` and a sentence.
    pub fn failed(exit_code: i32, message: impl Into<String>) -> StepResult {
        StepResult {
            exit_code: Some(exit_code),
            error: Some(StepError::Message(message.into())),
            ..StepResult::new(StepStatus::Failed)
        }
    }

    /// An interrupted result (exit code 130): stopped by a signal or shutdown, not by the step.
    pub(crate) fn interrupted(message: impl Into<String>) -> StepResult {
        StepResult {
            status: StepStatus::Interrupted,
            ..StepResult::failed(130, message)
        }
    }

    /// A succeeded result with exit code 0.
    pub fn succeeded() -> StepResult {
        StepResult {
            exit_code: Some(0),
            ..StepResult::new(StepStatus::Succeeded)
        }
    }

    /// The result as the JSON `${steps.NAME.*}` and jq see.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Its error as one line (`kind: message` for a classified one).
    pub fn error_text(&self) -> Option<String> {
        self.error.as_ref().map(StepError::text)
    }

    /// Its cost: `None` when unknown or not an agent's.
    pub fn cost(&self) -> Option<f64> {
        self.cost_usd.flatten()
    }

    /// The model the CLI reported.
    pub fn model_name(&self) -> Option<&str> {
        self.model.as_ref().and_then(|m| m.as_deref())
    }
}

/// A field that may be written as `null`: `null` reads as `Some(None)`, absent as `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A process's outcome: `{"kind": ...}`, or the bare kind of an outcome without fields.
fn outcome<'de, D>(deserializer: D) -> Result<Option<Outcome>, D::Error>
where
    D: Deserializer<'de>,
{
    let value = match Value::deserialize(deserializer)? {
        Value::String(kind) => serde_json::json!({ "kind": kind }),
        Value::Null => return Ok(None),
        value => value,
    };
    serde_json::from_value(value)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
#[path = "step_result_tests.rs"]
mod tests;
