//! Fan-out: a `for_each` with `max_parallel` or a `join` policy, and `parallel:` branches.
//!
//! Owns: running the items (or branches) of one fan-out step at once, each on its own *lane*,
//! joining them by the step's policy, and the per-item outcomes the step's result carries
//! (`results` in item order, `branches` by name, the counts).
//!
//! A lane is a runner forked from the one that owns the step: it shares the workflow, the event
//! log (one `events.jsonl`, a `lane` field on each of its events), the run's spending and the
//! cancellation (a child token, so that a failure under `all_success` can stop the siblings
//! without stopping the run), and has its own results, visit counters and execution numbers.
//! Execution numbers count from 1 in each lane, so a lane's steps are numbered the same way on
//! every attempt whatever order the items finish in: resume replays each lane's completed steps
//! from the journal (keyed by lane and number) and runs the rest. A lane is
//! `[..parent lane, the fan-out step's execution number, item index]`; its step logs are named
//! `PPPP.IIII.NNNN-STEP.*` so that each item's output is a file of its own.
//!
//! Every lane forks from the results as they were when the step started (items do not see each
//! other), and their results are merged back in item order at the join: after the step,
//! `${steps.BodyStep}` is the last item's, as after a sequential loop.
//!
//! Does not run steps itself (the lanes' `run_list` does) and does not decide the sequential
//! `for_each` (the spec's loop in `runner`), except for the outcome records both share.

use std::sync::Arc;

use std::collections::BTreeMap;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Failure, Flow, Journal, LoopFrame, RunError, Runner};
use crate::budget::BudgetState;
use crate::event::{self, Event};
use crate::step_result::{ItemOutcome, ItemStatus, StepResult, StepStatus};
use orchestrate_lang::model::{Branch, FanOut, Items, Join, Step};

/// The captured output (`output`, `lines`, `json`) the outcomes of one step keep in all: the
/// step's result goes into the event log and the state snapshot, so a loop over many items with
/// large outputs must not make them grow without bound. Later items beyond it keep their status,
/// exit code and error, and say `"output_dropped": true`; their step logs keep everything.
pub(super) const RESULTS_KEEP_BYTES: usize = 4 * 1024 * 1024;

/// Adds the outcomes and their counts to a fan-out step's result.
pub(super) fn tally(result: &mut StepResult, mut outcomes: Vec<ItemOutcome>) {
    let mut kept = 0;
    let mut dropped = false;
    for outcome in &mut outcomes {
        let size = json_len(&outcome.output) + json_len(&outcome.lines) + json_len(&outcome.json);
        if kept + size > RESULTS_KEEP_BYTES {
            outcome.output = None;
            outcome.lines = None;
            outcome.json = None;
            outcome.output_dropped = Some(true);
            dropped = true;
        } else {
            kept += size;
        }
    }
    if dropped {
        result.results_truncated = Some(true);
    }
    let count = |status: ItemStatus| outcomes.iter().filter(|o| o.status == status).count() as u64;
    result.succeeded = Some(count(ItemStatus::Succeeded));
    result.failed = Some(count(ItemStatus::Failed));
    result.cancelled = Some(count(ItemStatus::Cancelled));
    result.not_started = Some(count(ItemStatus::NotStarted));
    result.results = Some(outcomes);
}

/// The bytes of a captured output as the result writes it (0 when absent).
fn json_len<T: serde::Serialize>(value: &Option<T>) -> usize {
    value
        .as_ref()
        .map_or(0, |v| serde_json::to_string(v).map_or(0, |t| t.len()))
}

/// An item that never ran.
pub(super) fn not_started(index: usize, item: &Value) -> ItemOutcome {
    ItemOutcome {
        index: Some(index as u64),
        item: Some(item.clone()),
        ..ItemOutcome::new(ItemStatus::NotStarted, None)
    }
}

/// An item's value, short enough for a message.
fn describe(item: &Value) -> String {
    let text = match item {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// One item or branch to run.
struct Unit {
    index: usize,
    label: Label,
    body: Arc<Vec<Step>>,
    frames: Vec<LoopFrame>,
}

#[derive(Clone)]
enum Label {
    Item(Value),
    Branch(String),
}

impl Label {
    fn describe(&self, index: usize) -> String {
        match self {
            Label::Item(item) => format!("item {index} (`{}`)", describe(item)),
            Label::Branch(name) => format!("branch `{name}`"),
        }
    }
}

/// What is kept of a unit's lane once it ended (the lane itself, with its copy of the run's
/// results, is dropped at once).
struct Ended {
    status: ItemStatus,
    /// [`Runner::outcome`] of the lane, without the item's index and value.
    outcome: ItemOutcome,
    /// Results of the body's steps that the lane changed, to merge in unit order.
    changed: Vec<(String, StepResult)>,
    enqueued: Vec<orchestrate_queue::queue::Enqueued>,
    warned_unpriced: bool,
}

impl Runner {
    /// The outcome of the items run by this runner (a lane, or the sequential loop's runner
    /// after one item): its status, exit code, the last step it recorded and that step's
    /// captured output (`output`, `lines` or `json`), and the failure.
    pub(super) fn outcome(&self, status: ItemStatus, item: Option<(usize, Value)>) -> ItemOutcome {
        let exit_code = match status {
            ItemStatus::Succeeded => Some(0),
            ItemStatus::Failed => Some(self.failure.as_ref().map_or(1, |f| f.exit_code)),
            ItemStatus::Cancelled => Some(130),
            ItemStatus::NotStarted => None,
        };
        let mut outcome = ItemOutcome::new(status, exit_code);
        if let Some((index, item)) = item {
            outcome.index = Some(index as u64);
            outcome.item = Some(item);
        }
        if let Some(last) = &self.last_recorded
            && let Some(result) = self.results.get(last)
        {
            outcome.step = Some(last.clone());
            outcome.output = result.output.clone();
            outcome.lines = result.lines.clone();
            outcome.json = result.json.clone();
        }
        if status == ItemStatus::Failed
            && let Some(failure) = &self.failure
        {
            outcome.error = Some(failure.message.clone());
        }
        outcome
    }

    /// A `for_each` with `max_parallel` above 1 or a `join` other than `all_success`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the for_each's parts, as the dispatch destructures them"
    )]
    pub(super) async fn fan_out_items(
        &mut self,
        step: &Step,
        exec: u64,
        items: &Items,
        var: &str,
        body: &[Step],
        fan: &FanOut,
        loops: &[LoopFrame],
    ) -> Result<StepResult, RunError> {
        let values = match items {
            Items::Literal(values) => Ok(values.clone()),
            Items::From(pointer) => self.resolve_pointer(pointer),
        };
        let values = match values {
            Ok(values) => values,
            Err(message) => return Ok(StepResult::failed(2, message)),
        };
        let total = values.len();
        self.event(
            Event::LoopStarted(event::LoopStarted {
                step: step.name.clone(),
                total: total as u64,
                max_parallel: Some(fan.max_parallel),
                join: Some(fan.join.label().to_string()),
            }),
            false,
        )?;
        let body = Arc::new(body.to_vec());
        let units = values
            .iter()
            .enumerate()
            .map(|(index, item)| {
                let mut frames = loops.to_vec();
                frames.push(LoopFrame {
                    var: var.to_string(),
                    item: item.clone(),
                    index,
                    total,
                });
                Unit {
                    index,
                    label: Label::Item(item.clone()),
                    body: Arc::clone(&body),
                    frames,
                }
            })
            .collect();
        let (ended, failure) = self.fan_out(step, exec, units, fan).await?;
        let outcomes: Vec<ItemOutcome> = ended
            .iter()
            .zip(&values)
            .enumerate()
            .map(|(index, (ended, item))| match ended {
                Some(e) => ItemOutcome {
                    index: Some(index as u64),
                    item: Some(item.clone()),
                    ..e.outcome.clone()
                },
                None => not_started(index, item),
            })
            .collect();
        let succeeded = outcomes
            .iter()
            .filter(|o| o.status == ItemStatus::Succeeded)
            .count();
        let mut result = self.joined(step, fan, failure, succeeded, total);
        result.iterations = Some(succeeded as u64);
        result.total = Some(total as u64);
        result.max_parallel = Some(fan.max_parallel);
        result.join = Some(fan.join.label().to_string());
        tally(&mut result, outcomes);
        Ok(result)
    }

    /// A `parallel` step: its branches run at once (up to `max_parallel`) and are joined.
    pub(super) async fn fan_out_branches(
        &mut self,
        step: &Step,
        exec: u64,
        branches: &[Branch],
        fan: &FanOut,
        loops: &[LoopFrame],
    ) -> Result<StepResult, RunError> {
        let total = branches.len();
        let units = branches
            .iter()
            .enumerate()
            .map(|(index, branch)| Unit {
                index,
                label: Label::Branch(branch.name.clone()),
                body: Arc::new(branch.steps.clone()),
                frames: loops.to_vec(),
            })
            .collect();
        let (ended, failure) = self.fan_out(step, exec, units, fan).await?;
        let mut by_name = BTreeMap::new();
        let mut outcomes = Vec::new();
        for (branch, ended) in branches.iter().zip(&ended) {
            let mut outcome = match ended {
                Some(e) => e.outcome.clone(),
                None => ItemOutcome::new(ItemStatus::NotStarted, None),
            };
            outcome.branch = Some(branch.name.clone());
            by_name.insert(branch.name.clone(), outcome.clone());
            outcomes.push(outcome);
        }
        let succeeded = outcomes
            .iter()
            .filter(|o| o.status == ItemStatus::Succeeded)
            .count();
        let mut result = self.joined(step, fan, failure, succeeded, total);
        result.total = Some(total as u64);
        result.join = Some(fan.join.label().to_string());
        tally(&mut result, outcomes);
        result.branches = Some(by_name);
        Ok(result)
    }

    /// The fan-out step's own status under its join policy.
    fn joined(
        &self,
        step: &Step,
        fan: &FanOut,
        failure: Option<String>,
        succeeded: usize,
        total: usize,
    ) -> StepResult {
        if self.config.cancel.is_cancelled() {
            return StepResult::interrupted("interrupted");
        }
        let what = match step.kind {
            orchestrate_lang::model::StepKind::Parallel { .. } => "branch",
            _ => "item",
        };
        // A spending limit crossed by the items fails the step whatever the join: the items'
        // results say what they did, the limit says the run may not go on.
        if !self.budget.limits.is_empty()
            && let Some(crossing) = self
                .budget
                .limits
                .check(self.budget.spent.get(), self.budget.started.elapsed())
        {
            let message = crossing.message(&self.config.workspace, None, false);
            self.budget.cross(crossing.limit);
            let mut result = StepResult::failed(
                1,
                format!(
                    "{message}; the {what}s of `{}` still running were stopped",
                    step.name
                ),
            );
            result.budget_exceeded = Some(crossing.limit.to_string());
            return result;
        }
        match fan.join {
            Join::AllSuccess => match failure {
                Some(message) => StepResult::failed(1, message),
                None => StepResult::succeeded(),
            },
            Join::AnySuccess if succeeded == 0 => StepResult::failed(
                1,
                format!(
                    "no {what} of {total} succeeded (join: any_success); see `${{steps.{}.results}}` for each one's error",
                    step.name
                ),
            ),
            Join::AnySuccess | Join::AllDone => StepResult::succeeded(),
        }
    }

    /// Runs `units` on lanes of their own, at most `max_parallel` at once, and joins them: the
    /// lanes in unit order (`None` for a unit never started) and, under `all_success`, the
    /// first failure's message (the siblings still running are cancelled, no more start).
    async fn fan_out(
        &mut self,
        step: &Step,
        exec: u64,
        units: Vec<Unit>,
        fan: &FanOut,
    ) -> Result<(Vec<Option<Ended>>, Option<String>), RunError> {
        let total = units.len();
        let cancel = self.config.cancel.child_token();
        let outlives_failure = fan.join != Join::AllSuccess;
        let forked_results = self.results.clone();
        let mut set: tokio::task::JoinSet<(usize, Runner, Result<Flow, RunError>)> =
            tokio::task::JoinSet::new();
        let labels: Vec<Label> = units.iter().map(|u| u.label.clone()).collect();
        let bodies: Vec<Arc<Vec<Step>>> = units.iter().map(|u| Arc::clone(&u.body)).collect();
        let mut pending = units.into_iter();
        let mut ended: Vec<Option<Ended>> = (0..total).map(|_| None).collect();
        let mut failure: Option<String> = None;
        let mut error: Option<RunError> = None;
        loop {
            while failure.is_none()
                && error.is_none()
                && set.len() < fan.max_parallel as usize
                && !self.config.cancel.is_cancelled()
            {
                let Some(unit) = pending.next() else { break };
                if let Err(err) = self.unit_event(step, &unit.label, unit.index, total, None) {
                    cancel.cancel();
                    error = Some(err);
                    break;
                }
                let mut runner = self.lane_runner(step, exec, &unit, &cancel, outlives_failure);
                set.spawn(async move {
                    let flow = runner.run_list(&unit.body, &unit.frames).await;
                    (unit.index, runner, flow)
                });
            }
            let Some(joined) = set.join_next().await else {
                break;
            };
            let (index, mut lane, flow) = match joined {
                Ok(joined) => joined,
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                Err(err) => {
                    // Only a dropped set aborts its tasks, and this one is held: say so rather
                    // than lose the item.
                    cancel.cancel();
                    error.get_or_insert(RunError::Lane {
                        step: step.name.clone(),
                        message: err.to_string(),
                    });
                    continue;
                }
            };
            let flow = match flow {
                Ok(flow) => flow,
                Err(err) => {
                    // The records cannot be written: stop the siblings and report it once
                    // they are gone (dropping them would leave their processes running).
                    cancel.cancel();
                    error.get_or_insert(err);
                    continue;
                }
            };
            let status = lane.lane_status(flow);
            if let Err(err) = self.unit_event(step, &labels[index], index, total, Some(status)) {
                cancel.cancel();
                error.get_or_insert(err);
            }
            if status == ItemStatus::Failed && !outlives_failure && failure.is_none() {
                let what = labels[index].describe(index);
                let message = lane
                    .failure
                    .as_ref()
                    .map_or("it failed".to_string(), |f| f.message.clone());
                failure = Some(format!("{what} failed: {message}"));
                cancel.cancel();
            }
            ended[index] = Some(lane.ended(status, &bodies[index], &forked_results));
        }
        if let Some(err) = error {
            return Err(err);
        }
        if let Some(message) = &mut failure {
            let cancelled = ended
                .iter()
                .filter(|e| {
                    e.as_ref()
                        .is_some_and(|e| e.status == ItemStatus::Cancelled)
                })
                .count();
            let never = ended.iter().filter(|e| e.is_none()).count();
            if cancelled + never > 0 {
                message.push_str(&format!(
                    " (join: all_success; {cancelled} running cancelled, {never} not started)"
                ));
            }
        }
        self.merge(&mut ended);
        Ok((ended, failure))
    }

    /// A runner for `unit` on a lane of its own under this one, labelled for progress lines.
    fn lane_runner(
        &self,
        step: &Step,
        exec: u64,
        unit: &Unit,
        cancel: &CancellationToken,
        outlives_failure: bool,
    ) -> Runner {
        let mut lane = self.lane.clone();
        lane.extend([exec, unit.index as u64]);
        let mut runner = self.fork(lane, exec, cancel.clone(), outlives_failure);
        let which = match &unit.label {
            Label::Item(_) => format!("{} #{}", step.name, unit.index),
            Label::Branch(name) => format!("{} {name}", step.name),
        };
        runner.lane_label = if self.lane_label.is_empty() {
            which
        } else {
            format!("{} › {which}", self.lane_label)
        };
        runner
    }

    /// How this lane's unit ended, from the flow its step list returned.
    fn lane_status(&self, flow: Flow) -> ItemStatus {
        // Stopped by the cancel, unless its last step failed on its own (the failure that
        // cancelled the others, or one that came at the same time).
        let last_status = self
            .last_recorded
            .as_ref()
            .and_then(|name| self.results.get(name))
            .map(|r| r.status);
        let stopped = self.config.cancel.is_cancelled()
            && !matches!(last_status, Some(StepStatus::Failed | StepStatus::Rejected));
        match flow {
            Flow::Succeeded | Flow::Skipped | Flow::End => ItemStatus::Succeeded,
            Flow::Failed | Flow::Rejected if !stopped && self.failure.is_some() => {
                ItemStatus::Failed
            }
            Flow::Failed | Flow::Rejected => ItemStatus::Cancelled,
        }
    }

    /// What this finished lane hands back: its outcome, the results of `body`'s steps that
    /// changed since the fork (`forked_results`), its tasks.
    fn ended(
        &mut self,
        status: ItemStatus,
        body: &[Step],
        forked_results: &BTreeMap<String, StepResult>,
    ) -> Ended {
        let mut names = Vec::new();
        collect_names(body, &mut names);
        let changed = names
            .into_iter()
            .filter_map(|name| {
                let value = self.results.get(&name)?;
                (forked_results.get(&name) != Some(value)).then(|| (name, value.clone()))
            })
            .collect();
        Ended {
            status,
            outcome: self.outcome(status, None),
            changed,
            enqueued: std::mem::take(&mut self.enqueued),
            warned_unpriced: self.budget.warned_unpriced,
        }
    }

    /// Takes the lanes' results, tasks and warnings into this runner.
    fn merge(&mut self, ended: &mut [Option<Ended>]) {
        // Merged in unit order: after the step, a body step's result is the last unit's.
        for e in ended.iter_mut().flatten() {
            for (name, value) in std::mem::take(&mut e.changed) {
                self.results.insert(name, value);
            }
            self.enqueued.append(&mut e.enqueued);
            self.budget.warned_unpriced |= e.warned_unpriced;
        }
    }

    /// `iteration_started`/`iteration_finished` of an item, `branch_started`/`branch_finished` of
    /// a branch (`status`: finished).
    fn unit_event(
        &mut self,
        step: &Step,
        label: &Label,
        index: usize,
        total: usize,
        status: Option<ItemStatus>,
    ) -> Result<(), RunError> {
        let (step, index, total) = (step.name.clone(), index as u64, total as u64);
        let event = match (label, status) {
            (Label::Item(_), None) => Event::IterationStarted(event::Unit { step, index, total }),
            (Label::Item(_), Some(status)) => Event::IterationFinished(event::UnitFinished {
                step,
                index,
                total,
                status: status.label().to_string(),
            }),
            (Label::Branch(branch), None) => Event::BranchStarted(event::Branch {
                step,
                branch: branch.clone(),
                index,
                total,
            }),
            (Label::Branch(branch), Some(status)) => Event::BranchFinished(event::BranchFinished {
                step,
                branch: branch.clone(),
                index,
                total,
                status: status.label().to_string(),
            }),
        };
        self.event(event, false)
    }

    /// A runner for one lane: the run's shared parts, a copy of the results so far, its own
    /// counters. `outlives_failure`: its join does not stop at a failure, so a failed step's
    /// record is its outcome on resume rather than the place to run again.
    fn fork(
        &self,
        lane: Vec<u64>,
        exec: u64,
        cancel: CancellationToken,
        outlives_failure: bool,
    ) -> Runner {
        let mut config = self.config.clone();
        config.cancel = cancel;
        Runner {
            workflow: Arc::clone(&self.workflow),
            config,
            dir: self.dir.clone(),
            state: self.state.clone(),
            events: Arc::clone(&self.events),
            children: Arc::clone(&self.children),
            engine_writes: self.engine_writes.clone(),
            journal: Journal {
                entries: Arc::clone(&self.journal.entries),
                // A path that left the recorded one before this step replays nothing in it.
                cutoff: if self.journal.cutoff > exec {
                    u64::MAX
                } else {
                    0
                },
            },
            lane,
            lane_label: String::new(),
            failure_is_outcome: outlives_failure,
            last_recorded: None,
            replaying_loop: self.replaying_loop,
            results: self.results.clone(),
            executions: 0,
            events_at_snapshot: 0,
            secret_values: self.secret_values.clone(),
            secret_names: self.secret_names.clone(),
            failure: None::<Failure>,
            feedback: self.feedback.clone(),
            active_feedback: self.active_feedback.clone(),
            last_phase: self.last_phase,
            last_step: None,
            enqueued: Vec::new(),
            budget: BudgetState {
                limits: self.budget.limits.clone(),
                inherited: self.budget.inherited.clone(),
                spent: self.budget.spent.clone(),
                started: self.budget.started,
                failure: None,
                warned_unpriced: self.budget.warned_unpriced,
                crossed: Arc::clone(&self.budget.crossed),
            },
            _lock: None,
        }
    }
}

/// Names of `steps` and the steps nested in them.
fn collect_names(steps: &[Step], out: &mut Vec<String>) {
    for step in steps {
        out.push(step.name.clone());
        for body in step.kind.bodies() {
            collect_names(body, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tally_counts_each_status() {
        let mut result = StepResult::succeeded();
        tally(
            &mut result,
            vec![
                ItemOutcome::new(ItemStatus::Succeeded, None),
                ItemOutcome::new(ItemStatus::Failed, None),
                ItemOutcome::new(ItemStatus::Cancelled, None),
                not_started(3, &json!("d")),
            ],
        );
        assert_eq!(result.succeeded, Some(1));
        assert_eq!(result.failed, Some(1));
        assert_eq!(result.cancelled, Some(1));
        assert_eq!(result.not_started, Some(1));
        assert_eq!(result.results.unwrap()[3].item, Some(json!("d")));
    }

    #[test]
    fn outcomes_keep_outputs_up_to_a_bound() {
        let big = "x".repeat(RESULTS_KEEP_BYTES / 4);
        let outcomes = (0..4)
            .map(|i| ItemOutcome {
                index: Some(i),
                output: Some(big.clone()),
                ..ItemOutcome::new(ItemStatus::Succeeded, None)
            })
            .collect();
        let mut result = StepResult::succeeded();
        tally(&mut result, outcomes);
        let results = result.results.unwrap();
        assert_eq!(results[2].output.as_ref(), Some(&big));
        assert!(results[3].output.is_none());
        assert_eq!(results[3].output_dropped, Some(true));
        assert_eq!(results[3].status, ItemStatus::Succeeded);
        assert_eq!(result.results_truncated, Some(true));
    }

    #[test]
    fn long_items_are_shortened_in_messages() {
        assert_eq!(describe(&json!("a")), "a");
        assert_eq!(describe(&json!({"k": 1})), "{\"k\":1}");
        assert!(describe(&json!("x".repeat(100))).ends_with('…'));
    }
}
