//! Sub-workflows at run time: `workflow:` steps, which run another workflow file as a child run.
//!
//! Owns: the child run's directory and configuration (what it inherits from its parent:
//! workspace and checkout, runtime choices, cancellation, task, correlation id, capabilities, and
//! the parent's limits), starting, resuming or reusing the child run, and turning its report into
//! the step's result.
//!
//! Does not load child files (`load` loads them with their parent: containment, cycles, the
//! child's own problems, `with:` keys), interpret steps (the child is a [`Runner`] like any run)
//! or render the parent's templates (`runner` renders `with:` and hands the values here).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::runner::{RunConfig, RunReport, Runner};
use crate::state::{RunDir, RunStatus};
use orchestrate_base::fsutil::relative;
use orchestrate_lang::load::LoadOptions;
use orchestrate_lang::model::{LoadedChild, Step, SubWorkflow};

/// Where the child runs of a run live, inside its RUN_ROOT.
pub const CHILDREN_DIR: &str = "children";

/// What a child run needs from its parent, besides the parent's configuration.
pub(crate) struct ChildRun<'a> {
    pub step: &'a Step,
    pub sub: &'a SubWorkflow,
    /// Execution ordinal of the step in the parent (names the child's directory; replays the
    /// same on resume).
    pub exec: u64,
    /// The parent's fan-out lane (empty for the run's own step list): items of a fan-out
    /// number their executions each from 1, so it keeps their children's directories apart.
    pub lane: Vec<u64>,
    /// `with:` rendered in the parent's scope.
    pub with: Map<String, Value>,
    pub parent_root: &'a Path,
    pub parent_run_id: &'a str,
    /// The parent's budget state handed down: limits of every ancestor with what was spent
    /// against each before this child started.
    pub inherited: Vec<crate::budget::InheritedLimits>,
    /// Every secret name the parent knows (its own and its ancestors').
    pub secrets: Vec<String>,
}

/// What happened to a child run, for the parent's events and the step's result.
pub(crate) struct ChildOutcome {
    pub result: Value,
    pub run_id: Option<String>,
    pub run_root: PathBuf,
    /// Whether the child was resumed (`true`) or found finished (`reused`) rather than started.
    pub resumed: bool,
    pub reused: bool,
}

/// The directory of a child run: `<parent RUN_ROOT>/children/<lane><exec>-<step>`. The lane
/// and execution ordinal replay identically on resume, so a resumed parent finds the same
/// directory.
pub fn child_root(parent_root: &Path, lane: &[u64], exec: u64, step: &str) -> PathBuf {
    let lane = crate::runner::fanout::log_prefix(lane);
    parent_root
        .join(CHILDREN_DIR)
        .join(format!("{lane}{exec:04}-{step}"))
}

/// Starts the child run of `child` (or resumes the one an earlier attempt of the parent began,
/// or reuses the result of one that already succeeded) and waits for it. `timeout` stops it.
pub(crate) async fn run(
    parent: &RunConfig,
    child: ChildRun<'_>,
    timeout: Option<Duration>,
) -> ChildOutcome {
    let root = child_root(child.parent_root, &child.lane, child.exec, &child.step.name);
    let mut outcome = ChildOutcome {
        result: Value::Null,
        run_id: None,
        run_root: root.clone(),
        resumed: false,
        reused: false,
    };
    let dir = RunDir { root: root.clone() };
    // Started: it has a snapshot or recorded `run_started`. A directory without either (the
    // parent died while creating it) holds nothing to continue, and the child starts afresh.
    let started_before = dir.state().exists()
        || crate::events::read(&dir.events())
            .ok()
            .and_then(|records| records.into_iter().next())
            .is_some_and(|first| first["event"] == "run_started");
    if started_before && !parent.resumable {
        // A swarm attempt is never resumed: a directory left here is an earlier attempt's,
        // whose records stay. (Never reached in practice: each attempt has its own RUN_ROOT.)
        outcome.result = failed(
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
        let (spent, usage) = spend_of_events(&dir);
        let report = RunReport {
            run_id: state.run_id.clone(),
            status: state.status,
            exit_code: 0,
            error: None,
            run_root: root.clone(),
            last_step: None,
            last_output: None,
            enqueued: Vec::new(),
            outputs: Vec::new(),
            spent,
            usage,
            values: state.outputs.clone(),
            step_exit_code: None,
        };
        outcome.result = result_of(&report, child.sub, &parent.workspace);
        return outcome;
    }
    let cancel = parent.cancel.child_token();
    let config = child_config(parent, &child, cancel.clone());
    let runner = if started_before {
        outcome.resumed = true;
        Runner::resume_in(dir, config)
    } else {
        let loaded = match child.sub.child.clone() {
            Some(loaded) => loaded,
            // Not loaded with the parent (a resume whose children no longer all load): load it
            // now, with every check.
            None => match load_child(&parent.workspace, &child.sub.path) {
                Ok(loaded) => loaded,
                Err(message) => {
                    outcome.result = failed(2, message);
                    return outcome;
                }
            },
        };
        let mut workflow = loaded.workflow.clone();
        workflow.path = PathBuf::from(&child.sub.path);
        let mut config = config;
        let mut context = workflow.context.clone();
        context.extend(child.with.clone());
        config.context = context;
        Runner::create(workflow, &loaded.text, config)
    };
    let runner = match runner {
        Ok(runner) => runner,
        Err(err) => {
            outcome.result = failed(
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
    outcome.result = match report {
        Ok(report) => {
            let mut result = result_of(&report, child.sub, &parent.workspace);
            if timed_out {
                result["status"] = json!("failed");
                result["exit_code"] = json!(124);
                result["error"] = json!(format!(
                    "timed out after {}s (timeout_sec); child run {} was stopped and can be inspected with `orchestrate status {}`",
                    timeout.unwrap_or_default().as_secs_f64(),
                    report.run_id,
                    report.run_id
                ));
            }
            result
        }
        Err(err) => failed(
            1,
            format!("child run of workflow `{}` failed: {err}", child.sub.path),
        ),
    };
    outcome
}

/// Loads a child workflow file on its own (its children included), for a step whose child was
/// not loaded with the parent.
fn load_child(workspace: &Path, rel: &str) -> Result<Arc<LoadedChild>, String> {
    let path = orchestrate_base::fsutil::resolve_in_workspace(workspace, rel)
        .map_err(|e| format!("`workflow: {rel}`: {e}"))?;
    let options = LoadOptions {
        workspace: Some(workspace.to_path_buf()),
        ..LoadOptions::default()
    };
    let loaded = orchestrate_lang::load::load_with_text(&path, &options).map_err(|e| {
        format!(
            "workflow `{rel}` does not load ({} problem(s)); fix it and resume:\n{}",
            e.diagnostics.len(),
            e.render()
        )
    })?;
    Ok(Arc::new(loaded))
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
    config.parent = Some(json!({
        "run_id": child.parent_run_id,
        "step": child.step.name,
        "exec": child.exec,
    }));
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
fn result_of(report: &RunReport, sub: &SubWorkflow, workspace: &Path) -> Value {
    let status = match report.status {
        RunStatus::Succeeded => "succeeded",
        // Not the step's doing (the parent was stopped): resume continues the child.
        RunStatus::Interrupted | RunStatus::Running => "interrupted",
        RunStatus::Failed => "failed",
    };
    let mut result = json!({
        "status": status,
        "exit_code": report.exit_code,
        "run_id": report.run_id,
        "run_root": relative(workspace, &report.run_root),
        "workflow": sub.path,
        "outputs": report.values,
    });
    if report.spent.tokens > 0 || report.spent.cost_usd > 0.0 {
        result["usage"] = json!(report.usage);
        result["cost_usd"] = if report.spent.cost_usd > 0.0 || report.spent.unpriced_tokens == 0 {
            json!(report.spent.cost_usd)
        } else {
            Value::Null
        };
    }
    if let Some(error) = &report.error {
        result["error"] = json!(format!(
            "workflow {} (child run {}) failed: {error}",
            sub.path, report.run_id
        ));
    }
    if let Some(step) = &report.last_step {
        result["last_step"] = json!(step);
    }
    result
}

fn failed(exit_code: i32, message: String) -> Value {
    json!({"status": "failed", "exit_code": exit_code, "error": message})
}

/// What a finished child spent: every `step_finished` result in its event log (every visit
/// and attempt, its own children's totals included).
fn spend_of_events(dir: &RunDir) -> (crate::budget::Spend, orchestrate_runtime::parse::Usage) {
    let mut spent = crate::budget::Spend::default();
    let mut usage = orchestrate_runtime::parse::Usage::default();
    for record in crate::events::read(&dir.events()).unwrap_or_default() {
        if record["event"] != "step_finished" {
            continue;
        }
        let result = &record["result"];
        spent = spent.plus(crate::budget::Spend::of_result(result));
        if let Ok(u) =
            serde_json::from_value::<orchestrate_runtime::parse::Usage>(result["usage"].clone())
        {
            usage.add(&u);
        }
    }
    (spent, usage)
}
