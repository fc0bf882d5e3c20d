//! What the events say: the typed views of a run's records (`Execution`, `Tokens`, open steps
//! and waits, the end of the run) folded from `events.jsonl` in one pass, plus the small record
//! helpers every reader shares (timestamps, an execution's label, whether the engine is alive).
//!
//! Does not read files beyond the engine's lock file, or render anything.

use chrono::{DateTime, Utc};
use orchestrate_engine::event::{Envelope, Event, StepFinished, StepStarted};
use orchestrate_engine::step_result::{StepResult, StepStatus};
use orchestrate_runtime::parse::Usage;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

/// Token counts of a step, as the runner normalizes them (`docs/runtimes.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Tokens {
    pub(crate) input: u64,
    pub(crate) output: u64,
    pub(crate) cache_read: u64,
    pub(crate) cache_write: u64,
    pub(crate) reasoning: u64,
}

impl Tokens {
    fn from_usage(usage: Option<&Usage>) -> Tokens {
        let usage = usage.copied().unwrap_or_default();
        Tokens {
            input: usage.input,
            output: usage.output,
            cache_read: usage.cache_read,
            cache_write: usage.cache_write,
            reasoning: usage.reasoning,
        }
    }

    pub(super) fn add(&mut self, other: &Tokens) {
        self.input = self.input.saturating_add(other.input);
        self.output = self.output.saturating_add(other.output);
        self.cache_read = self.cache_read.saturating_add(other.cache_read);
        self.cache_write = self.cache_write.saturating_add(other.cache_write);
        self.reasoning = self.reasoning.saturating_add(other.reasoning);
    }

    pub(crate) fn is_zero(&self) -> bool {
        *self == Tokens::default()
    }

    /// Cache reads and writes together, for a compact column.
    pub(crate) fn cache(&self) -> u64 {
        self.cache_read.saturating_add(self.cache_write)
    }
}

/// One `step_finished` record.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Execution {
    /// The execution number (`NNNN` of the step's log names); repeats across a resume, where
    /// the re-run of an interrupted or failed step takes its number again.
    pub(crate) exec: u64,
    /// The fan-out lane it ran in (`[fan-out exec, item index, ...]`; empty for the run's own
    /// steps): execution numbers count from 1 in each lane.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) lane: Vec<u64>,
    pub(crate) step: String,
    /// Indexes of the enclosing `for_each` iterations, outermost first.
    pub(crate) iteration: Vec<u64>,
    /// `succeeded`, `failed`, `rejected`, `skipped` or `interrupted`.
    pub(crate) status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) exit_code: Option<i64>,
    pub(crate) duration_sec: f64,
    pub(crate) attempts: u32,
    pub(crate) tokens: Tokens,
    pub(crate) cost_usd: f64,
    /// An agent step reported tokens but no price was known for its model.
    pub(crate) unpriced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// A `for_each`: its duration is its body's, so totals leave it out.
    pub(crate) container: bool,
    /// Run again after a resume: its time and cost were spent, but it is not on the path taken.
    pub(crate) superseded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) finished_at: Option<String>,
    /// For a `for_each`: how many items it had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) items: Option<u64>,
    /// A `parallel` step (a container whose body is its branches).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) parallel: bool,
}

/// What a rejection said (the runner's `${feedback.reason}`), on one short line.
fn rejection(result: &StepResult) -> Option<String> {
    if result.status != StepStatus::Rejected {
        return None;
    }
    let said = [&result.reason, &result.result, &result.output]
        .into_iter()
        .find_map(|text| text.as_deref().filter(|t| !t.trim().is_empty()))
        .map(str::to_string)
        .or_else(|| {
            result
                .json
                .as_ref()
                .filter(|json| !json.is_null())
                .map(Value::to_string)
        })
        .unwrap_or_default();
    let line = said.lines().next().unwrap_or("").trim();
    let mut short: String = line.chars().take(160).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    Some(if short.is_empty() {
        "rejected".into()
    } else {
        short
    })
}

pub(super) fn str_field(value: &Value, key: &str) -> Option<String> {
    value[key].as_str().map(str::to_string)
}

/// Where an execution sits in the run's order: its lane, then its number. A fan-out's lanes sort
/// after the fan-out step's own number and before the next step of its list.
fn exec_key(lane: &[u64], exec: u64) -> Vec<u64> {
    let mut key = lane.to_vec();
    key.push(exec);
    key
}

/// An execution as people read it: `7`, or `3.2.1` (execution 1 of item 2 of the fan-out run
/// as execution 3), the numbers of its log names.
pub(crate) fn exec_label(lane: &[u64], exec: u64) -> String {
    exec_key(lane, exec)
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

impl Execution {
    pub(crate) fn key(&self) -> Vec<u64> {
        exec_key(&self.lane, self.exec)
    }
}

pub(super) fn execution(
    finished: &StepFinished,
    envelope: &Envelope,
    container: bool,
) -> Execution {
    let result = &finished.result;
    let cost = result.cost();
    let container = container || result.iterations.is_some() || result.branches.is_some();
    let tokens = Tokens::from_usage(result.usage.as_ref());
    Execution {
        exec: finished.exec,
        lane: envelope.lane.clone(),
        step: finished.step.clone(),
        iteration: finished.iteration.clone(),
        status: result.status.label().to_string(),
        exit_code: result.exit_code.map(i64::from),
        duration_sec: result.duration.unwrap_or(0.0).max(0.0),
        // A for_each runs no process of its own.
        attempts: if container {
            0
        } else {
            result
                .attempts
                // A skipped step never started a process; everything else ran once at least.
                .unwrap_or(u32::from(result.status != StepStatus::Skipped))
        },
        tokens,
        cost_usd: cost.unwrap_or(0.0).max(0.0),
        // Tokens spent with no price known for the model: the cost is understated.
        unpriced: !tokens.is_zero() && cost.is_none(),
        runtime: result.runtime.clone(),
        model: result.model_name().map(str::to_string),
        phase: result.phase.map(|phase| phase.label().to_string()),
        error: result.error_text().or_else(|| rejection(result)),
        container,
        superseded: false,
        finished_at: result
            .finished_at
            .clone()
            .or_else(|| (!envelope.ts.is_empty()).then(|| envelope.ts.clone())),
        items: result.total,
        parallel: result.branches.is_some(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct OpenStep {
    pub(crate) step: String,
    pub(crate) exec: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) lane: Vec<u64>,
    /// `command`, `provider`, `agent`, `for_each`, `wait_for`, `approval` or `enqueue`.
    pub(crate) kind: String,
    pub(crate) iteration: Vec<u64>,
    pub(crate) started_at: String,
    /// The attempt in progress (0 before its process started).
    pub(crate) attempt: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ApprovalWait {
    pub(crate) step: String,
    pub(crate) message: String,
    /// The request file, relative to the workspace.
    pub(crate) request: String,
    pub(crate) since: String,
    /// The commands that answer it.
    pub(crate) approve: String,
    pub(crate) reject: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RetryWait {
    pub(crate) step: String,
    pub(crate) failed_attempt: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) exit_code: Option<i64>,
    pub(crate) delay_sec: f64,
    pub(crate) at: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct PauseWait {
    pub(crate) step: String,
    pub(crate) reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) until: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunEnd {
    pub(crate) status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) exit_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    pub(crate) at: String,
}

/// Everything the event log says about a run, folded in one pass.
#[derive(Default)]
pub(super) struct Facts {
    pub(super) workflow_name: Option<String>,
    pub(super) started_at: Option<String>,
    pub(super) last_ts: Option<String>,
    pub(super) resumes: u32,
    /// `run_finished` of the latest start or resume (a resume reopens a finished run).
    pub(super) end: Option<RunEnd>,
    pub(super) executions: Vec<Execution>,
    /// Indexes into `executions`: the path taken, in execution order.
    pub(super) path: Vec<usize>,
    /// Steps started and not finished in the latest start or resume, outermost first.
    pub(super) open: Vec<OpenStep>,
    /// The agent phase in force (the last `phase_entered` since the latest start or resume).
    pub(super) phase: Option<String>,
    pub(super) approval: Option<ApprovalWait>,
    pub(super) retry: Option<RetryWait>,
    pub(super) paused: Option<PauseWait>,
    pub(super) loop_detected: Option<String>,
}

pub(super) fn fold(events: &[Value], run_id: &str) -> Facts {
    let mut folder = Folder::default();
    for event in events {
        folder.event(event, run_id);
    }
    folder.facts.path = folder.by_exec.into_values().collect();
    folder.facts
}

/// The facts so far, and what the fold keeps besides them to place the next record.
///
/// The path, by execution number. A resume replays completed steps without recording them
/// again and runs live from the first step with no completed record, reusing execution
/// numbers from there: so the first record of a resumed session replaces that number and
/// every later one of the earlier session (a path that diverged leaves no stale tail).
/// Fan-out lanes number their executions from 1 each, so the key is the lane and the
/// number, and a resumed session's first record in each lane replaces that lane's tail.
#[derive(Default)]
struct Folder {
    facts: Facts,
    by_exec: BTreeMap<Vec<u64>, usize>,
    fresh_session: bool,
    fresh_lanes: HashSet<Vec<u64>>,
    containers: HashSet<Vec<u64>>,
}

impl Folder {
    fn event(&mut self, record: &Value, run_id: &str) {
        if !record["event"].is_string() {
            return;
        }
        let envelope = Envelope::from_record(record);
        let facts = &mut self.facts;
        let ts = envelope.ts.clone();
        if !ts.is_empty() {
            facts.last_ts = Some(ts.clone());
        }
        match Event::from_record(record) {
            Event::RunStarted(started) => {
                facts.started_at.get_or_insert(ts);
                if !started.name.is_empty() {
                    facts.workflow_name = Some(started.name);
                }
                self.session_started();
            }
            Event::RunResumed(_) => {
                facts.resumes += 1;
                self.fresh_session = true;
                self.fresh_lanes.clear();
                self.session_started();
            }
            Event::StepStarted(started) => self.step_started(started, envelope.lane, ts),
            Event::ProcessStarted(process) => {
                if let Some(open) = facts
                    .open
                    .iter_mut()
                    .rev()
                    .find(|o| o.exec == process.exec && o.lane == envelope.lane)
                {
                    open.attempt = u64::from(process.attempt);
                }
                facts.retry = None;
                facts.paused = None;
            }
            Event::RetryScheduled(retry) => {
                facts.retry = Some(RetryWait {
                    step: retry.step,
                    failed_attempt: u64::from(retry.attempt),
                    exit_code: Some(retry.exit_code),
                    delay_sec: retry.delay,
                    at: ts,
                });
            }
            Event::Paused(paused) => {
                facts.paused = Some(PauseWait {
                    step: paused.step,
                    reason: paused.reason,
                    until: (!paused.until.is_empty()).then_some(paused.until),
                });
            }
            Event::PhaseEntered(entered) => facts.phase = Some(entered.phase.label().into()),
            Event::ApprovalRequested(requested) => {
                let step = requested.step;
                facts.approval = Some(ApprovalWait {
                    approve: format!("orchestrate approve {run_id} {step}"),
                    reject: format!("orchestrate reject {run_id} {step} --reason TEXT"),
                    step,
                    message: requested.message,
                    request: requested.request,
                    since: ts,
                });
            }
            Event::ApprovalDecided(decided)
                if facts
                    .approval
                    .as_ref()
                    .is_some_and(|a| a.step == decided.step) =>
            {
                facts.approval = None;
            }
            Event::LoopDetected(detected) => {
                facts.loop_detected = Some(format!(
                    "step `{}` entered {} times (max_visits {}); cycle: {}",
                    detected.step, detected.visits, detected.max_visits, detected.cycle
                ));
            }
            Event::StepFinished(finished) => self.step_finished(&finished, &envelope),
            Event::RunFinished(finished) => {
                facts.open.clear();
                facts.approval = None;
                facts.retry = None;
                facts.paused = None;
                facts.end = Some(RunEnd {
                    status: finished.status.label().into(),
                    exit_code: Some(i64::from(finished.exit_code)),
                    error: finished.error,
                    at: ts,
                });
            }
            // Unknown events are skipped: a newer runner may add some (docs/events.md).
            _ => {}
        }
    }

    /// `run_started` or `run_resumed`: a session begins, and what was open or awaited is not.
    fn session_started(&mut self) {
        let facts = &mut self.facts;
        facts.end = None;
        facts.open.clear();
        facts.phase = None;
        facts.approval = None;
        facts.retry = None;
        facts.paused = None;
        self.containers.clear();
    }

    fn step_started(&mut self, started: StepStarted, lane: Vec<u64>, ts: String) {
        if started.kind == "for_each" || started.kind == "parallel" {
            self.containers.insert(exec_key(&lane, started.exec));
        }
        self.facts.open.push(OpenStep {
            step: started.step,
            exec: started.exec,
            lane,
            kind: started.kind,
            iteration: started.iteration,
            started_at: ts,
            attempt: 0,
        });
    }

    /// `step_finished`: the execution joins the path, replacing what it supersedes.
    fn step_finished(&mut self, finished: &StepFinished, envelope: &Envelope) {
        let (step, exec, lane) = (&finished.step, finished.exec, envelope.lane.clone());
        let facts = &mut self.facts;
        facts.open.retain(|o| o.exec != exec || o.lane != lane);
        let key = exec_key(&lane, exec);
        if facts.approval.as_ref().is_some_and(|a| &a.step == step) {
            facts.approval = None;
        }
        facts.retry = None;
        facts.paused = None;
        let index = facts.executions.len();
        facts.executions.push(execution(
            finished,
            envelope,
            self.containers.contains(&key),
        ));
        if self.fresh_session && self.fresh_lanes.insert(lane.clone()) {
            // This lane's steps from `exec` on (and the lanes of fan-outs among them)
            // belong to the earlier session's path; the lanes of steps before it, and
            // of this step itself, are not its tail.
            let stale: Vec<Vec<u64>> = self
                .by_exec
                .range(key.clone()..)
                .map(|(k, _)| k.clone())
                .take_while(|k| k.starts_with(&lane))
                .filter(|k| k.len() == key.len() || k[lane.len()] > exec)
                .collect();
            for k in stale {
                if let Some(old) = self.by_exec.remove(&k) {
                    facts.executions[old].superseded = true;
                }
            }
        }
        if let Some(old) = self.by_exec.insert(key, index) {
            facts.executions[old].superseded = true;
        }
    }
}

/// Whether the engine that holds an unfinished run is alive, from the pid in its lock file.
/// `None` when that cannot be told (a task run has no lock file; an unreadable pid).
pub(super) fn engine_alive(root: &Path) -> Option<bool> {
    let text = fs::read_to_string(root.join("lock")).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    if pid == 0 {
        return None;
    }
    // Whoever it belongs to.
    Some(orchestrate_base::process::exists(pid))
}

pub(super) fn lock_pid(root: &Path) -> Option<String> {
    fs::read_to_string(root.join("lock"))
        .ok()
        .map(|t| t.trim().to_string())
}

pub(super) fn parse_ts(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub(super) fn seconds_between(from: &str, to: &str) -> Option<f64> {
    let (from, to) = (parse_ts(from)?, parse_ts(to)?);
    Some(((to - from).num_microseconds()? as f64 / 1e6).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn finished(step: &str, exec: u64, lane: &[u64], status: &str) -> Value {
        json!({"event": "step_finished", "ts": "2026-01-01T00:00:01Z", "step": step, "exec": exec,
            "lane": lane, "iteration": [], "result": {"status": status, "duration": 1.0}})
    }

    #[test]
    fn a_resume_replaces_only_the_lanes_it_runs_again() {
        let events = [
            json!({"event": "run_started", "ts": "2026-01-01T00:00:00Z", "name": "wf"}),
            json!({"event": "step_started", "ts": "2026-01-01T00:00:00Z", "step": "Each", "exec": 1, "kind": "for_each", "iteration": []}),
            finished("Work", 1, &[1, 0], "succeeded"),
            finished("Work", 1, &[1, 1], "failed"),
            json!({"event": "step_finished", "ts": "2026-01-01T00:00:02Z", "step": "Each", "exec": 1,
                "iteration": [], "result": {"status": "failed", "iterations": 1, "total": 2}}),
            json!({"event": "run_resumed", "ts": "2026-01-01T00:00:03Z", "resumes": 1}),
            json!({"event": "step_started", "ts": "2026-01-01T00:00:03Z", "step": "Each", "exec": 1, "kind": "for_each", "iteration": []}),
            finished("Work", 1, &[1, 1], "succeeded"),
            json!({"event": "step_finished", "ts": "2026-01-01T00:00:04Z", "step": "Each", "exec": 1,
                "iteration": [], "result": {"status": "succeeded", "iterations": 2, "total": 2}}),
            finished("After", 2, &[], "succeeded"),
        ];
        let facts = fold(&events, "R");
        let path: Vec<(String, String, Vec<u64>)> = facts
            .path
            .iter()
            .map(|&i| {
                let e = &facts.executions[i];
                (e.step.clone(), e.status.clone(), e.key())
            })
            .collect();
        assert_eq!(
            path,
            [
                ("Each".to_string(), "succeeded".to_string(), vec![1]),
                ("Work".to_string(), "succeeded".to_string(), vec![1, 0, 1]),
                ("Work".to_string(), "succeeded".to_string(), vec![1, 1, 1]),
                ("After".to_string(), "succeeded".to_string(), vec![2]),
            ]
        );
        let superseded: Vec<&str> = facts
            .executions
            .iter()
            .filter(|e| e.superseded)
            .map(|e| e.status.as_str())
            .collect();
        assert_eq!(superseded, ["failed", "failed"], "the failed item and loop");
        assert_eq!(exec_label(&[1, 1], 1), "1.1.1");
    }
}
