//! `workflow:` steps at run time: the child run, a [`Runner`] of its own under the parent's
//! RUN_ROOT, started, resumed or reused, with the configuration it inherits, its progress shown
//! under the parent's step, and its report turned into the step's result.
//!
//! Does not load child files (`orchestrate_lang::load` loads them with their parent) nor hold
//! the child-run records (`crate::subflow`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;

use super::scope::render_json;
use super::{LoopFrame, RunConfig, RunError, RunReport, Runner};
use crate::event::{self, Event, ParentRun};
use crate::state::{RunDir, RunStatus, child_root};
use crate::step_result::{StepError, StepResult, StepStatus};
use crate::subflow::{ChildOutcome, ChildRun, load_child, spend_of_events};
use orchestrate_base::fsutil::relative;
use orchestrate_lang::model::{Step, SubWorkflow};

impl Runner {
    /// A `workflow:` step: renders `with:` in this run's scope and runs the child (`run_child`),
    /// between a `child_started` and a `child_finished` event; the child's spending counts as
    /// this run's.
    pub(super) async fn sub_workflow(
        &mut self,
        step: &Step,
        exec: u64,
        sub: &orchestrate_lang::model::SubWorkflow,
        loops: &[LoopFrame],
    ) -> Result<StepResult, RunError> {
        let mut with = Map::new();
        for input in &sub.with {
            match render_json(&input.value, &self.scope(loops)) {
                Ok(value) => {
                    with.insert(input.key.clone(), value);
                }
                Err(e) => {
                    return Ok(StepResult::failed(
                        2,
                        format!("in `with.{}`: {e}", input.key),
                    ));
                }
            }
        }
        let root = child_root(&self.dir.root, &self.lane, exec, &step.name);
        self.event(
            Event::ChildStarted(event::ChildStarted {
                step: step.name.clone(),
                exec,
                workflow: sub.path.clone(),
                run_root: self.relative(&root),
            }),
            true,
        )?;
        if let Some(name) = root.file_name() {
            self.children
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(
                    name.to_string_lossy().into_owned(),
                    crate::state::ChildLink {
                        exec,
                        lane: self.lane.clone(),
                        run_root: self.relative(&root),
                        step: step.name.clone(),
                        workflow: sub.path.clone(),
                    },
                );
            if self.config.resumable && self.lane.is_empty() {
                // The parent's state names its running child at once (a lane's owner does at
                // its next snapshot).
                self.snapshot()?;
            }
        }
        self.progress(&format!("▶ {} runs workflow {}", step.name, sub.path));
        let child = ChildRun {
            step,
            sub,
            exec,
            lane: self.lane.clone(),
            with,
            parent_root: &self.dir.root,
            parent_run_id: &self.state.run_id,
            inherited: self.budget.handed_down(),
            secrets: self.secret_names.iter().cloned().collect(),
        };
        let outcome = run_child(&self.config, child, step.timeout).await;
        let mut result = outcome.result;
        self.budget.count(&result);
        if result.status == StepStatus::Failed
            && let Some(crossing) = self.budget.check(self.budget.spent.get())
        {
            // A limit of this run (or an ancestor's) stopped the child: this run stops too,
            // taking no `on` edge, and resume runs the step (continuing its child) again.
            result.budget_exceeded = Some(crossing.limit.to_string());
            self.budget.cross(crossing.limit);
        }
        self.event(
            Event::ChildFinished(event::ChildFinished {
                step: step.name.clone(),
                exec,
                workflow: sub.path.clone(),
                run_id: outcome.run_id.clone(),
                run_root: self.relative(&outcome.run_root),
                resumed: outcome.resumed,
                reused: outcome.reused,
                status: Some(result.status.label().to_string()),
                exit_code: result.exit_code.map(i64::from),
            }),
            true,
        )?;
        Ok(result)
    }
}

/// Starts the child run of `child` (or resumes the one an earlier attempt of the parent began,
/// or reuses the result of one that already succeeded) and waits for it. `timeout` stops it.
async fn run_child(
    parent: &RunConfig,
    child: ChildRun<'_>,
    timeout: Option<Duration>,
) -> ChildOutcome {
    let root = child_root(child.parent_root, &child.lane, child.exec, &child.step.name);
    let mut outcome = ChildOutcome {
        result: StepResult::default(),
        run_id: None,
        run_root: root.clone(),
        resumed: false,
        reused: false,
    };
    let dir = RunDir { root: root.clone() };
    // Started: it has a snapshot or recorded `run_started`. A directory without either (the
    // parent died while creating it) holds nothing to continue, and the child starts afresh.
    let started_before =
        dir.state().exists() || crate::runs::first_run_started(&dir.events()).is_some();
    if started_before && !parent.resumable {
        // A swarm attempt is never resumed: a directory left here is an earlier attempt's,
        // whose records stay. (Never reached in practice: each attempt has its own RUN_ROOT.)
        outcome.result = StepResult::failed(
            1,
            format!(
                "the child run directory {} already exists; remove it",
                root.display()
            ),
        );
        return outcome;
    }
    if started_before
        && let Ok(state) = dir.read_state()
        && state.status == RunStatus::Succeeded
    {
        // Finished before the parent died: its result stands.
        outcome.reused = true;
        outcome.run_id = Some(state.run_id.clone());
        let report = finished_report(&dir, &state);
        outcome.result = result_of(&report, child.sub, &parent.workspace);
        return outcome;
    }
    let cancel = parent.cancel.child_token();
    let config = child_config(parent, &child, cancel.clone());
    let runner = if started_before {
        outcome.resumed = true;
        Runner::resume_in(dir, config)
    } else {
        match create_child(parent, &child, config) {
            Ok(runner) => runner,
            Err(result) => {
                outcome.result = *result;
                return outcome;
            }
        }
    };
    let runner = match runner {
        Ok(runner) => runner,
        Err(err) => {
            outcome.result = StepResult::failed(
                1,
                format!(
                    "failed to {} child run of workflow `{}`: {err}",
                    if outcome.resumed {
                        "resume the"
                    } else {
                        "start a"
                    },
                    child.sub.path
                ),
            );
            return outcome;
        }
    };
    outcome.run_id = Some(runner.run_id().to_string());
    outcome.result = wait_child(runner, cancel, timeout, child.sub, &parent.workspace).await;
    outcome
}

/// The report of a child run that had succeeded before its parent died, from its records.
fn finished_report(dir: &RunDir, state: &crate::state::RunState) -> RunReport {
    let (spent, usage) = spend_of_events(dir);
    RunReport {
        run_id: state.run_id.clone(),
        status: state.status,
        exit_code: 0,
        error: None,
        run_root: dir.root.clone(),
        last_step: None,
        last_output: None,
        enqueued: Vec::new(),
        outputs: Vec::new(),
        spent,
        usage,
        values: state.outputs.clone(),
        step_exit_code: None,
    }
}

/// A new child run of `child`'s workflow with its `with:` in its context; `Err`: the step's
/// result when the workflow does not load.
fn create_child(
    parent: &RunConfig,
    child: &ChildRun<'_>,
    config: RunConfig,
) -> Result<Result<Runner, RunError>, Box<StepResult>> {
    let loaded = match child.sub.child.clone() {
        Some(loaded) => loaded,
        // Not loaded with the parent (a resume whose children no longer all load): load it
        // now, with every check.
        None => match load_child(&parent.workspace, &child.sub.path) {
            Ok(loaded) => loaded,
            Err(message) => return Err(Box::new(StepResult::failed(2, message))),
        },
    };
    let mut workflow = loaded.workflow.clone();
    workflow.path = PathBuf::from(&child.sub.path);
    let mut config = config;
    let mut context = workflow.context.clone();
    context.extend(child.with.clone());
    config.context = context;
    Ok(Runner::create(workflow, &loaded.text, config))
}

/// Runs the child to its end (`timeout` cancels it through `cancel`) and turns its report into
/// the step's result.
async fn wait_child(
    runner: Runner,
    cancel: tokio_util::sync::CancellationToken,
    timeout: Option<Duration>,
    sub: &SubWorkflow,
    workspace: &Path,
) -> StepResult {
    let run: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
        Box::pin(runner.run());
    let mut timed_out = false;
    let report = match timeout {
        None => run.await,
        Some(limit) => {
            tokio::pin!(run);
            tokio::select! {
                report = &mut run => report,
                () = tokio::time::sleep(limit) => {
                    timed_out = true;
                    cancel.cancel();
                    run.await
                }
            }
        }
    };
    match report {
        Ok(report) => {
            let mut result = result_of(&report, sub, workspace);
            if timed_out {
                result.status = StepStatus::Failed;
                result.exit_code = Some(124);
                result.error = Some(StepError::Message(format!(
                    "timed out after {}s (timeout_sec); child run {} was stopped and can be inspected with `orchestrate status {}`",
                    timeout.unwrap_or_default().as_secs_f64(),
                    report.run_id,
                    report.run_id
                )));
            }
            result
        }
        Err(err) => StepResult::failed(
            1,
            format!("child run of workflow `{}` failed: {err}", sub.path),
        ),
    }
}

/// The child's configuration: everything the parent's has that concerns how steps run, with
/// its own RUN_ROOT and a cancellation token under the parent's.
fn child_config(
    parent: &RunConfig,
    child: &ChildRun<'_>,
    cancel: tokio_util::sync::CancellationToken,
) -> RunConfig {
    let mut config = RunConfig::new(parent.workspace.clone(), Map::new(), cancel);
    // An isolated parent's child works in the same worktree (its own `isolation:` applies only
    // when it runs on its own).
    config.checkout = parent.checkout.clone();
    config.progress = parent.progress;
    config.run_root = Some(child_root(
        child.parent_root,
        &child.lane,
        child.exec,
        &child.step.name,
    ));
    config.task = parent.task.clone();
    config.correlation_id = Some(
        parent
            .correlation_id
            .clone()
            .unwrap_or_else(|| child.parent_run_id.to_string()),
    );
    config.inherit_fds = parent.inherit_fds.clone();
    config.default_provider = parent.default_provider.clone();
    config.default_model = parent.default_model.clone();
    config.resumable = parent.resumable;
    config.runtime_override = parent.runtime_override.clone();
    config.profiles = Arc::clone(&parent.profiles);
    config.allow_full = parent.allow_full;
    // The parent's (and the role's and the swarm's) limits apply through `inherited`.
    config.budget = None;
    config.swarm_budget = None;
    config.default_idle_timeout = parent.default_idle_timeout;
    config.enqueuer = parent.enqueuer.clone();
    config.branch = parent.branch.clone();
    config.reporter = parent.reporter.clone().map(|inner| {
        Arc::new(ChildReporter {
            inner,
            prefix: format!("  {} › ", child.step.name),
        }) as Arc<dyn crate::progress::Reporter>
    });
    config.observer = parent.observer.clone();
    config.ignore_changes = parent.ignore_changes.clone();
    config.capabilities = parent.capabilities.clone();
    config.inherited = child.inherited.clone();
    config.inherited_secrets = child.secrets.clone();
    config.parent = Some(ParentRun {
        run_id: child.parent_run_id.to_string(),
        step: child.step.name.clone(),
        exec: child.exec,
    });
    config
}

/// Shows a child run's lines under its parent's step (`  Sub › ✓ Build (0.52s)`). Only the
/// plain lines pass: the child's step notifications and event lines would be taken for the
/// parent's (execution numbers repeat across runs); the child's events are in its own log.
struct ChildReporter {
    inner: Arc<dyn crate::progress::Reporter>,
    prefix: String,
}

impl crate::progress::Reporter for ChildReporter {
    fn report(&self, progress: &crate::progress::Progress) {
        if let crate::progress::Progress::Message(text) = progress {
            let text = text
                .lines()
                .map(|line| format!("{}{line}", self.prefix))
                .collect::<Vec<_>>()
                .join("\n");
            self.inner.report(&crate::progress::Progress::Message(text));
        }
    }
}

/// The step's result from the child's report: status, exit code, outputs, run id and root,
/// and what the child spent (its `usage` and `cost_usd`, so the parent's budget and report
/// count it like an agent step's).
fn result_of(report: &RunReport, sub: &SubWorkflow, workspace: &Path) -> StepResult {
    let status = match report.status {
        RunStatus::Succeeded => StepStatus::Succeeded,
        // Not the step's doing (the parent was stopped): resume continues the child.
        RunStatus::Interrupted | RunStatus::Running => StepStatus::Interrupted,
        RunStatus::Failed => StepStatus::Failed,
    };
    let mut result = StepResult {
        exit_code: Some(i32::from(report.exit_code)),
        run_id: Some(report.run_id.clone()),
        run_root: Some(relative(workspace, &report.run_root)),
        workflow: Some(sub.path.clone()),
        outputs: Some(report.values.clone()),
        ..StepResult::new(status)
    };
    if report.spent.tokens > 0 || report.spent.cost_usd > 0.0 {
        result.usage = Some(report.usage);
        result.cost_usd = Some(
            (report.spent.cost_usd > 0.0 || report.spent.unpriced_tokens == 0)
                .then_some(report.spent.cost_usd),
        );
    }
    if let Some(error) = &report.error {
        result.error = Some(StepError::Message(format!(
            "workflow {} (child run {}) failed: {error}",
            sub.path, report.run_id
        )));
    }
    if let Some(step) = &report.last_step {
        result.last_step = Some(step.clone());
    }
    result
}
