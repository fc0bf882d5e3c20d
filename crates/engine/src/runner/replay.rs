//! Resume as replay: reopening a run from its records, the journal of completed results keyed
//! by lane and execution ordinal, and feeding those results back in order instead of running
//! their steps again, so the path taken is the same and no completed step runs twice.
//!
//! Does not decide where a step's outcome leads (`flow`) nor run steps (`execute`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use super::flow::edge;
use super::{Failure, Flow, Journal, LoopFrame, RunConfig, RunError, Runner};
use crate::event::{Envelope, Event};
use crate::events::{self};
use crate::state::{RunDir, RunState, RunStatus};
use crate::step_result::{StepResult, StepStatus};
use orchestrate_lang::model::{Step, StepKind};

/// The state a run's first snapshot holds, rebuilt from its `run_started` event.
fn state_from_run_started(dir: &RunDir, workspace: &Path) -> Option<RunState> {
    let records = events::read(&dir.events()).ok()?;
    let (record, started) = records.iter().find_map(|r| match Event::from_record(r) {
        Event::RunStarted(started) => Some((r, started)),
        _ => None,
    })?;
    let nonempty = |text: &String| (!text.is_empty()).then_some(());
    let ts = Envelope::from_record(record).ts;
    for required in [
        &started.run_id,
        &started.workflow,
        &started.timestamp_utc,
        &ts,
    ] {
        nonempty(required)?;
    }
    Some(super::lifecycle::first_state(
        &started,
        workspace.display().to_string(),
        ts,
    ))
}

impl Runner {
    /// Reopens run `run_id` to continue it from the first step that did not complete.
    /// `config` gives the workspace, cancellation and runtime choices; the context comes from
    /// the run's own state.
    pub fn resume(run_id: &str, config: RunConfig) -> Result<Runner, RunError> {
        let workspace = config.workspace.clone();
        let workspace = workspace.as_path();
        if orchestrate_base::ids::check_id(run_id).is_err() {
            return Err(RunError::Resume {
                run_id: run_id.to_string(),
                message: format!(
                    "`{run_id}` is not a run id (run ids look like 20261124T005538Z-a1b2c3; see `ls {}`)",
                    RunDir::runs_dir(workspace).display()
                ),
            });
        }
        let dir = RunDir::new(workspace, run_id);
        if !dir.root.is_dir()
            && let Some(parent) = crate::runs::parent_of_child(workspace, run_id)
        {
            // A child run continues only with its parent, which replays up to its step.
            return Err(RunError::Resume {
                run_id: run_id.to_string(),
                message: format!(
                    "it is the child run of a `workflow:` step; resume its parent instead: `orchestrate resume {parent}`"
                ),
            });
        }
        if !dir.root.is_dir() {
            return Err(RunError::Resume {
                run_id: run_id.to_string(),
                message: format!(
                    "no run directory {}; list runs with `ls {}`",
                    dir.root.display(),
                    RunDir::runs_dir(workspace).display()
                ),
            });
        }
        Self::resume_in(dir, config)
    }

    /// Reopens the run in `dir` (a run of the workspace, or a child run inside its parent's
    /// RUN_ROOT) to continue it from the first step that did not complete.
    pub(crate) fn resume_in(dir: RunDir, config: RunConfig) -> Result<Runner, RunError> {
        let workspace = config.workspace.clone();
        let workspace = workspace.as_path();
        let run_id = dir
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let run_id = run_id.as_str();
        let resume_err = |message: String| RunError::Resume {
            run_id: run_id.to_string(),
            message,
        };
        let lock = dir.lock_run()?;
        let mut state = if dir.state().exists() {
            dir.read_state()?
        } else {
            // Killed between recording `run_started` and its first snapshot: that event holds
            // everything the first snapshot would have.
            state_from_run_started(&dir, &config.workspace).ok_or_else(|| {
                resume_err(format!(
                    "it was stopped before it started (no state.json and no run_started event in {}); start it again with `orchestrate run`",
                    dir.events().display()
                ))
            })?
        };
        if state.status == RunStatus::Succeeded {
            return Err(resume_err(
                "it already succeeded; start a new run with `orchestrate run`".into(),
            ));
        }
        // Child workflows (`workflow:` steps) load from the workspace: a child run already
        // started resumes from its own copy, one not started yet runs the file as it is now.
        // A child file that no longer loads does not stop the resume (the children that had
        // started do not need it); its step fails with the problems if it has to start it.
        let workflow = orchestrate_lang::load::load_in(workspace, &dir.workflow_copy())
            .or_else(|err| orchestrate_lang::load::load_file(&dir.workflow_copy()).map_err(|_| err))
            .map_err(|err| resume_err(err.render()))?;
        let mut workflow = workflow;
        workflow.path = PathBuf::from(&state.workflow);
        // The limits come from the workflow file as it is now, where a crossing's message says
        // to raise them; everything else from the saved copy. A file that no longer loads
        // leaves the copy's limits.
        if let Ok(current) =
            orchestrate_lang::load::load_in(workspace, &workspace.join(&state.workflow))
        {
            workflow.budget = current.budget;
        }
        // Strict: a damaged line in the middle would cut the journal short and run completed
        // steps again, so it stops the resume instead.
        let records = events::read_checked(&dir.events())
            .map_err(|message| {
                resume_err(format!(
                    "{message}; look at {} before resuming",
                    dir.events().display()
                ))
            })?
            .records;
        let mut entries = HashMap::new();
        for record in &records {
            if let Event::StepFinished(finished) = Event::from_record(record) {
                entries.insert(
                    (Envelope::from_record(record).lane, finished.exec),
                    (finished.step, *finished.result),
                );
            }
        }
        let journal = Journal {
            entries: Arc::new(entries),
            cutoff: u64::MAX,
        };
        state.resumes += 1;
        state.status = RunStatus::Running;
        state.finished_at = None;
        state.exit_code = None;
        state.error = None;
        let mut config = config;
        config.context = state.context.clone();
        Self::with_state(workflow, config, dir, state, journal, Some(lock))
    }

    /// Runs (or replays) one step and records its result.
    pub(super) async fn run_step(
        &mut self,
        step: &Step,
        loops: &[LoopFrame],
    ) -> Result<Flow, RunError> {
        self.executions += 1;
        let exec = self.executions;
        // Feedback is for the step the rejection led to, on that visit only.
        self.active_feedback = if self.feedback["to"] == step.name.as_str() {
            let mut active =
                json!({"reason": self.feedback["reason"], "from": self.feedback["from"]});
            if let Some(violations) = self.feedback.get("violations") {
                active["violations"] = violations.clone();
            }
            self.feedback = json!({"reason": "", "from": "", "to": ""});
            active
        } else {
            json!({"reason": "", "from": ""})
        };
        if !matches!(
            step.kind,
            StepKind::ForEach { .. } | StepKind::Parallel { .. }
        ) {
            if let Some(flow) = self.replay(step, exec) {
                return Ok(flow);
            }
        } else if let Some((recorded_flow, recorded)) = self.recorded(step, exec) {
            if recorded_flow == Flow::Skipped {
                return Ok(self.replay(step, exec).unwrap_or(Flow::Skipped));
            }
            // A loop that completed: its body is walked again to replay its steps' results
            // (later steps read them), but the loop's own events are not written again.
            let cutoff = self.journal.cutoff;
            let outer = std::mem::replace(&mut self.replaying_loop, true);
            let flow = self.execute(step, exec, loops).await;
            self.replaying_loop = outer;
            let flow = flow?;
            if self.journal.cutoff != cutoff {
                // The body left the recorded path and ran live: what it did now is the record.
                return Ok(flow);
            }
            // Its body's replayed steps counted what it spent.
            self.replayed(step, recorded_flow, recorded);
            return Ok(flow);
        }
        self.execute(step, exec, loops).await
    }

    /// The recorded result of execution `exec` and its outcome, when the earlier attempt
    /// completed it on the path this one is retracing.
    fn recorded(&self, step: &Step, exec: u64) -> Option<(Flow, StepResult)> {
        if exec >= self.journal.cutoff {
            return None;
        }
        let (name, result) = self.journal.entries.get(&(self.lane.clone(), exec))?;
        if *name != step.name {
            // The path differs from the recorded one.
            return None;
        }
        if result.budget_exceeded.is_some() {
            // Stopped by a crossing, not finished: it runs again (under the raised limit).
            return None;
        }
        let flow = match result.status {
            StepStatus::Succeeded => Flow::Succeeded,
            StepStatus::Skipped => Flow::Skipped,
            StepStatus::Failed => Flow::Failed,
            StepStatus::Rejected => Flow::Rejected,
            // Interrupted: the step did not complete.
            StepStatus::Interrupted => return None,
        };
        let handled = edge(step, flow, Some(result)).is_some()
            || (flow == Flow::Failed && (!self.workflow.strict_flow || self.failure_is_outcome));
        if matches!(flow, Flow::Failed | Flow::Rejected) && !handled {
            // This failure ended the earlier attempt: the step runs again.
            return None;
        }
        Some((flow, result.clone()))
    }

    /// Feeds back the recorded result of execution `exec` when the earlier attempt completed
    /// it; otherwise stops replaying here.
    fn replay(&mut self, step: &Step, exec: u64) -> Option<Flow> {
        let Some((flow, result)) = self.recorded(step, exec) else {
            self.journal.cutoff = self.journal.cutoff.min(exec);
            return None;
        };
        self.budget.count(&result);
        self.replayed(step, flow, result);
        Some(flow)
    }

    /// A completed step's recorded result becomes its result, as when it ran.
    fn replayed(&mut self, step: &Step, flow: Flow, result: StepResult) {
        if let Some(task) = &result.task {
            self.enqueued.push(task.clone());
        }
        if flow == Flow::Failed {
            // As when it ran: the failure is the run's (or the item's) to report.
            let exit_code = result.exit_code.unwrap_or(1);
            let detail = result
                .error_text()
                .unwrap_or_else(|| format!("exit code {exit_code}"));
            self.failure = Some(Failure {
                exit_code,
                message: self.step_failed(step, &detail, &result),
                step_exit_code: Some(exit_code),
            });
        }
        self.results.insert(step.name.clone(), result);
        self.last_recorded = Some(step.name.clone());
        self.progress(&format!(
            "↺ {} (completed earlier; not run again)",
            step.name
        ));
    }

    /// Walking a completed loop's body again on resume, still on the recorded path: the
    /// loop's own events (its start, items, branches and `step_finished`) were written when it
    /// ran and are not written again.
    pub(super) fn replaying(&self) -> bool {
        self.replaying_loop && self.journal.cutoff == u64::MAX
    }
}
