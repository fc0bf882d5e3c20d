//! What a run records and shows: events (masked, tagged with the lane), the state snapshot and
//! when to write it, step results, progress lines, and the message of a failed step.
//!
//! Does not decide what happens (every other file of the runner calls in here).

use std::path::Path;

use super::{RunError, Runner};
use crate::event::{self, Event};
use crate::events::{self};
use crate::step_result::StepResult;
use orchestrate_lang::model::Step;

/// A loop position as events record it.
pub(super) fn iteration_of(iteration: &[usize]) -> Vec<u64> {
    iteration.iter().map(|&i| i as u64).collect()
}

/// Lines quoted under a message, indented so they read as part of it.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Runner {
    pub(super) fn event(&mut self, event: Event, durable: bool) -> Result<(), RunError> {
        if self.replaying()
            && matches!(
                event,
                Event::StepStarted(_)
                    | Event::LoopStarted(_)
                    | Event::IterationStarted(_)
                    | Event::IterationFinished(_)
                    | Event::BranchStarted(_)
                    | Event::BranchFinished(_)
            )
        {
            return Ok(());
        }
        if let Some(observer) = &self.config.observer {
            observer(&event);
        }
        let durable = durable && self.config.resumable;
        // With the lane: execution numbers count from 1 in every fan-out lane, so items running
        // at once have the same numbers and only the lane tells their bars apart.
        if let Some(reporter) = &self.config.reporter
            && let Some(progress) = crate::progress::Progress::from_event(&event, &self.lane)
        {
            reporter.report(&progress);
        }
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .append_event(&event, &self.lane, durable)
            .map_err(|source| RunError::Io {
                path: self.dir.events(),
                source,
            })
    }

    /// Rewrites `state.json`. Called at start and end, and during the run only when the events
    /// since the last snapshot reach half the run's length so far: the snapshot grows with the
    /// run, so this keeps the amortized cost per step constant.
    pub(super) fn snapshot(&mut self) -> Result<(), RunError> {
        self.state.executions = self.executions;
        self.state.events_seq = self.events_seq();
        self.state.updated_at = orchestrate_base::clock::now_rfc3339();
        self.state.steps = self.results.clone();
        self.state.children = self
            .children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut state = self.state.clone();
        if !self.secret_values.is_empty() {
            let text = serde_json::to_string(&state).unwrap_or_default();
            if let Ok(masked) = serde_json::from_str(&events::mask(&text, &self.secret_values)) {
                state = masked;
            }
        }
        // The first snapshot of a resumable run and every final one are durable (resume reads
        // them); the ones between are caches of the event log.
        let durable =
            self.config.resumable && (self.events_at_snapshot == 0 || state.finished_at.is_some());
        self.dir
            .write_state(&state, durable)
            .map_err(|source| RunError::Io {
                path: self.dir.state(),
                source,
            })?;
        self.events_at_snapshot = self.events_seq();
        Ok(())
    }

    fn events_seq(&self) -> u64 {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .seq()
    }

    fn maybe_snapshot(&mut self) -> Result<(), RunError> {
        if !self.config.resumable || !self.lane.is_empty() {
            // A fan-out item's lane: the runner that owns the run snapshots it at the join.
            // A swarm task's attempt: its records are events.jsonl and the status.json the
            // role writes; a snapshot would cost a file per task and be read by nobody.
            return Ok(());
        }
        let seq = self.events_seq();
        let since = seq - self.events_at_snapshot;
        if since >= 64.max(seq / 2) {
            self.snapshot()?;
        }
        Ok(())
    }

    pub(super) fn progress(&self, text: &str) {
        // Lines of fan-out items say whose they are: `[Each #2] ✓ Work (0.31s)`.
        let labelled;
        let text = if self.lane_label.is_empty() {
            text
        } else {
            labelled = format!("[{}] {text}", self.lane_label);
            labelled.as_str()
        };
        match &self.config.reporter {
            Some(reporter) => reporter.report(&crate::progress::Progress::Message(events::mask(
                text,
                &self.secret_values,
            ))),
            None if self.config.progress => {
                eprintln!("{}", events::mask(text, &self.secret_values))
            }
            None => {}
        }
    }

    /// A warning for whoever operates the run: a `!` line of the run's display; in a task's run
    /// without one (a role process runs it), a `tracing` warning in that process's log instead.
    pub(super) fn warn(&self, text: &str) {
        self.progress(&format!("! {text}"));
        let shown = self.config.reporter.is_some() || self.config.progress;
        if self.config.task.is_some() && !shown {
            let text = events::mask(text, &self.secret_values);
            // One target for a run's warnings, wherever in the runner they are raised.
            tracing::warn!(target: "orchestrate_engine::runner", run_id = %self.state.run_id, "{text}");
        }
    }

    /// A progress notification for the renderer, if there is one.
    pub(super) fn notify(&self, progress: crate::progress::Progress) {
        if let Some(reporter) = &self.config.reporter {
            reporter.report(&progress);
        }
    }

    pub(super) fn record(
        &mut self,
        step: &Step,
        exec: u64,
        iteration: &[usize],
        result: StepResult,
    ) -> Result<(), RunError> {
        if self.replaying() {
            self.results.insert(step.name.clone(), result);
            return Ok(());
        }
        self.event(
            Event::StepFinished(event::StepFinished {
                step: step.name.clone(),
                exec,
                iteration: iteration_of(iteration),
                result: Box::new(result.clone()),
            }),
            true,
        )?;
        self.results.insert(step.name.clone(), result);
        self.last_recorded = Some(step.name.clone());
        self.maybe_snapshot()
    }

    /// A path as the run's records show it: relative to the workspace, where they live (a
    /// file in a worktree by its path there).
    /// A failed step's message: what failed, and the last lines of its stderr (where the reason
    /// usually is), already masked as the log is.
    pub(super) fn step_failed(&self, step: &Step, detail: &str, result: &StepResult) -> String {
        let mut message = format!("step `{}` (line {}) failed: {detail}", step.name, step.line);
        let tail = result.stderr_log.as_ref().and_then(|log| {
            orchestrate_queue::record::stderr_tail(&self.config.workspace.join(log))
        });
        if let Some(tail) = tail {
            message.push_str("; its stderr ends:\n");
            message.push_str(&indent(&tail));
        }
        message
    }

    pub(super) fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.config.workspace)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}
