//! A run from start to end: creating its directory and first state, the `run_started` (or
//! `run_resumed`) and `run_finished` events, the workflow's `outputs:`, and the [`RunReport`].
//!
//! Does not walk the steps (`flow`) nor reopen a run's records (`replay`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};

use super::phase::EngineWrites;
use super::result::shown_output;
use super::{Failure, Flow, Journal, RunConfig, RunError, RunReport, Runner, exit};
use crate::budget::{BudgetState, SharedSpend};
use crate::event::{self, Event};
use crate::events::{self, EventLog};
use crate::state::{RunDir, RunState, RunStatus};
use orchestrate_lang::model::Workflow;

impl Runner {
    /// Creates a new run directory for `workflow` and returns a runner ready to start it.
    pub fn create(
        workflow: Workflow,
        source_text: &str,
        config: RunConfig,
    ) -> Result<Runner, RunError> {
        let run_id = orchestrate_base::ids::new_run_id();
        let dir = match &config.run_root {
            Some(root) => RunDir { root: root.clone() },
            None => RunDir::new(&config.workspace, &run_id),
        };
        dir.create().map_err(|source| RunError::Io {
            path: dir.root.clone(),
            source,
        })?;
        let lock = if config.resumable {
            Some(dir.lock_run()?)
        } else {
            None
        };
        if config.resumable || !source_text.is_empty() {
            // The copy resume uses, and the one `report` checks the path against (a swarm
            // task's run keeps it too: the role's workflow file may change after it).
            dir.write_workflow_copy(&config.workspace, source_text)
                .map_err(|source| RunError::Io {
                    path: dir.workflow_copy(),
                    source,
                })?;
        }
        let started = crate::event::RunStarted {
            run_id: run_id.clone(),
            workflow: workflow.path.display().to_string(),
            name: workflow.name.clone(),
            fingerprint: workflow.fingerprint.clone(),
            context: config.context.clone(),
            timestamp_utc: orchestrate_base::clock::compact(chrono::Utc::now()),
            pid: orchestrate_base::process::own_pid(),
            parent: config.parent.clone(),
        };
        let state = first_state(
            &started,
            config.workspace.display().to_string(),
            orchestrate_base::clock::now_rfc3339(),
        );
        Self::with_state(workflow, config, dir, state, Journal::default(), lock)
    }

    pub(super) fn with_state(
        workflow: Workflow,
        config: RunConfig,
        dir: RunDir,
        state: RunState,
        journal: Journal,
        lock: Option<std::fs::File>,
    ) -> Result<Runner, RunError> {
        let secret_names: HashSet<String> = workflow
            .all_steps()
            .iter()
            .flat_map(|s| s.secrets.iter().cloned())
            .chain(config.inherited_secrets.iter().cloned())
            .collect();
        let secret_values = events::mask_list(
            secret_names
                .iter()
                .filter_map(|name| std::env::var(name).ok()),
        );
        let mut events =
            EventLog::open(&dir.events(), secret_values.clone()).map_err(|source| {
                RunError::Io {
                    path: dir.events(),
                    source,
                }
            })?;
        if let Some(reporter) = config.reporter.clone() {
            events.set_tee(Arc::new(move |line: &str| {
                reporter.report(&crate::progress::Progress::Event(line.to_string()))
            }));
        }
        let results = config.preset_results.clone();
        let inherited = config.inherited.clone();
        let limits = crate::budget::Limits {
            run: orchestrate_lang::model::Budget::stricter(
                workflow.budget.as_ref(),
                config.budget.as_ref(),
            ),
            day: config
                .swarm_budget
                .clone()
                .map(|swarm| (swarm, config.workspace.clone())),
        };
        Ok(Runner {
            workflow: Arc::new(workflow),
            config,
            dir,
            children: Arc::new(std::sync::Mutex::new(state.children.clone())),
            engine_writes: EngineWrites::default(),
            state,
            events: Arc::new(std::sync::Mutex::new(events)),
            journal,
            lane: Vec::new(),
            lane_label: String::new(),
            failure_is_outcome: false,
            last_recorded: None,
            replaying_loop: false,
            results,
            executions: 0,
            events_at_snapshot: 0,
            secret_values,
            secret_names,
            failure: None,
            feedback: json!({"reason": "", "from": "", "to": ""}),
            active_feedback: json!({"reason": "", "from": ""}),
            last_phase: None,
            last_step: None,
            budget: BudgetState {
                limits,
                inherited,
                spent: SharedSpend::default(),
                started: Instant::now(),
                failure: None,
                warned_unpriced: false,
                crossed: Arc::default(),
            },
            enqueued: Vec::new(),
            _lock: lock,
        })
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.state.run_id
    }

    /// The workflow's `name:`.
    pub fn workflow_name(&self) -> &str {
        &self.workflow.name
    }

    /// RUN_ROOT: the directory of the run's records.
    pub fn run_root(&self) -> &Path {
        &self.dir.root
    }

    /// Runs the workflow to its end and records the outcome.
    pub async fn run(mut self) -> Result<RunReport, RunError> {
        self.budget.started = Instant::now();
        let resumed = self.state.resumes > 0;
        if resumed {
            // A cancel request belongs to the session it stopped.
            orchestrate_queue::cancel::clear_run_cancel(&self.dir.root);
            self.event(
                Event::RunResumed(event::RunResumed {
                    resumes: self.state.resumes,
                    journal: self.journal.entries.len() as u64,
                }),
                true,
            )?;
        } else {
            let started = event::RunStarted {
                run_id: self.state.run_id.clone(),
                workflow: self.state.workflow.clone(),
                name: self.workflow.name.clone(),
                fingerprint: self.workflow.fingerprint.clone(),
                context: self.state.context.clone(),
                timestamp_utc: self.state.timestamp_utc.clone(),
                pid: orchestrate_base::process::own_pid(),
                parent: self.config.parent.clone(),
            };
            self.event(Event::RunStarted(started), true)?;
        }
        if self.config.resumable {
            // Resume needs a snapshot from the start; a task's attempt writes its one at the end.
            self.snapshot()?;
        }
        let workflow = Arc::clone(&self.workflow);
        self.warn_unpriceable(&workflow.steps)?;
        let flow = self.run_list(&workflow.steps, &[]).await;
        let (status, exit_code, error) = match flow {
            Err(err) => return Err(err),
            Ok(_) if self.config.cancel.is_cancelled() => {
                // Stopped by `orchestrate cancel` rather than a signal or shutdown: say who.
                let error = match orchestrate_queue::cancel::run_cancel(&self.dir.root) {
                    Some(request) => {
                        self.event(
                            Event::RunCancelled(event::RunCancelled {
                                by: request.by.clone(),
                                at: request.at.clone(),
                                requested_by_pid: request.pid,
                                step: self.last_step.clone(),
                            }),
                            true,
                        )?;
                        request.describe()
                    }
                    None => "interrupted".to_string(),
                };
                (RunStatus::Interrupted, exit::INTERRUPTED, Some(error))
            }
            Ok(Flow::Failed) => {
                let failure = self.failure.clone().unwrap_or(Failure {
                    exit_code: 1,
                    message: "a step failed".into(),
                    step_exit_code: None,
                });
                let code = match failure.exit_code {
                    124 => exit::TIMEOUT,
                    2 => exit::INVALID,
                    _ => exit::STEP_FAILED,
                };
                (RunStatus::Failed, code, Some(failure.message))
            }
            Ok(_) => match self.render_outputs() {
                Ok(()) => (RunStatus::Succeeded, exit::SUCCESS, None),
                Err(message) => (RunStatus::Failed, exit::INVALID, Some(message)),
            },
        };
        self.finish(status, exit_code, error)
    }

    fn finish(
        mut self,
        status: RunStatus,
        exit_code: u8,
        error: Option<String>,
    ) -> Result<RunReport, RunError> {
        self.state.status = status;
        self.state.exit_code = Some(i32::from(exit_code));
        self.state.error = error.clone();
        self.state.finished_at = Some(orchestrate_base::clock::now_rfc3339());
        self.state.current_step = None;
        let finished = event::RunFinished {
            status,
            exit_code,
            error: error.clone(),
            outputs: self.state.outputs.clone(),
        };
        self.event(Event::RunFinished(finished), true)?;
        if self.config.resumable {
            self.snapshot()?;
        }
        Ok(RunReport {
            run_id: self.state.run_id.clone(),
            status,
            exit_code,
            error: error.map(|e| events::mask(&e, &self.secret_values)),
            run_root: self.dir.root.clone(),
            last_step: self.last_step.clone(),
            last_output: self
                .last_recorded
                .as_ref()
                .and_then(|name| self.results.get(name))
                .and_then(shown_output)
                .map(|text| events::mask(&text, &self.secret_values)),
            enqueued: self.enqueued.clone(),
            outputs: self
                .results
                .values()
                .filter_map(|r| r.output_file.clone())
                .collect(),
            spent: self.budget.spent.get(),
            usage: self.budget.spent.usage(),
            values: self.state.outputs.clone(),
            step_exit_code: (status == RunStatus::Failed)
                .then(|| self.failure.as_ref().and_then(|f| f.step_exit_code))
                .flatten(),
        })
    }

    /// Renders the workflow's `outputs:` at its successful end, into the state (and so the
    /// report and `run_finished`). A value that cannot be rendered fails the run.
    fn render_outputs(&mut self) -> Result<(), String> {
        let workflow = Arc::clone(&self.workflow);
        let mut values = Map::new();
        for (name, template) in &workflow.outputs {
            let value = template.render_value(&self.scope(&[])).map_err(|e| {
                let file = self.workflow.path.display();
                format!(
                    "output `{name}` ({file} line {}) could not be rendered: {e}",
                    template.at.0
                )
            })?;
            values.insert(name.clone(), value);
        }
        if !self.secret_values.is_empty() {
            let text = serde_json::to_string(&values).unwrap_or_default();
            if let Ok(Value::Object(masked)) =
                serde_json::from_str(&events::mask(&text, &self.secret_values))
            {
                values = masked;
            }
        }
        self.state.outputs = values;
        Ok(())
    }

    /// Steps of this run work in `dir` (a worktree made once the run id is known).
    pub fn set_checkout(&mut self, dir: PathBuf) {
        self.config.checkout = Some(dir);
    }

    /// The branch of that worktree (`${run.branch}`).
    pub fn set_branch(&mut self, branch: String) {
        self.config.branch = Some(branch);
    }
}

/// The state of a run that has just started: running, nothing executed yet. `started` is
/// its `run_started` event (what names the run), `workspace` where it runs, `at` when it
/// started (RFC 3339).
pub(super) fn first_state(
    started: &crate::event::RunStarted,
    workspace: String,
    at: String,
) -> RunState {
    RunState {
        format_version: crate::state::STATE_FORMAT,
        run_id: started.run_id.clone(),
        workflow: started.workflow.clone(),
        workflow_name: started.name.clone(),
        fingerprint: started.fingerprint.clone(),
        workspace,
        status: RunStatus::Running,
        started_at: at.clone(),
        updated_at: at,
        finished_at: None,
        timestamp_utc: started.timestamp_utc.clone(),
        context: started.context.clone(),
        current_step: None,
        exit_code: None,
        error: None,
        executions: 0,
        events_seq: 0,
        resumes: 0,
        steps: std::collections::BTreeMap::new(),
        outputs: serde_json::Map::new(),
        children: std::collections::BTreeMap::new(),
    }
}
