//! Sub-workflows: `workflow:` steps, which run another workflow file as a child run.
//!
//! Owns: finding and loading child workflow files with their parent (containment in the
//! workspace, cycles between files, the child's own problems reported at the child's lines,
//! `with:` keys against the inputs the child reads), the child run's directory and configuration (what it
//! inherits from its parent: workspace and checkout, runtime choices, cancellation, task, correlation id,
//! capabilities, and the parent's limits), starting, resuming or reusing the child run, and
//! turning its report into the step's result.
//!
//! Does not interpret steps (the child is a [`Runner`] like any run), parse YAML (`load`) or
//! render the parent's templates (`runner` renders `with:` and hands the values here).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::diag::{Diagnostic, did_you_mean};
use crate::load::LoadOptions;
use crate::model::{LoadedChild, Step, StepKind, SubWorkflow, Workflow};
use crate::queue::relative;
use crate::runner::{RunConfig, RunReport, Runner};
use crate::state::{RunDir, RunStatus};
use crate::template::Template;
use crate::yaml::Pos;

/// Nesting deeper than this is refused at load time (a chain this long is a mistake, and
/// every level loads the files below it).
pub const MAX_DEPTH: usize = 16;

/// Where the child runs of a run live, inside its RUN_ROOT.
pub const CHILDREN_DIR: &str = "children";

/// One `workflow:` step on the way to a file being loaded: the file it is in and its line.
#[derive(Debug, Clone)]
pub struct Link {
    /// The file, canonicalized (cycles are found by comparing these).
    pub canonical: PathBuf,
    /// The file as loaded, for messages.
    pub file: PathBuf,
    pub line: u32,
    pub step: String,
}

/// Loads the child workflow of every `workflow:` step of `workflow` (nested `for_each` bodies
/// included) and attaches it to the step. Problems of the parent's own lines go to `diags`;
/// the children's own problems are returned, each rendered from the child's text.
pub(crate) fn attach_children(
    workflow: &mut Workflow,
    workspace: &Path,
    options: &LoadOptions,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Diagnostic> {
    let file = workflow.path.clone();
    let canonical = file.canonicalize().unwrap_or_else(|_| file.clone());
    let mut children = Vec::new();
    let mut ctx = Attach {
        workspace,
        options,
        file: &file,
        canonical: &canonical,
        diags,
        children: &mut children,
    };
    ctx.steps(&mut workflow.steps);
    children
}

struct Attach<'a> {
    workspace: &'a Path,
    options: &'a LoadOptions,
    file: &'a Path,
    canonical: &'a Path,
    diags: &'a mut Vec<Diagnostic>,
    children: &'a mut Vec<Diagnostic>,
}

impl Attach<'_> {
    fn steps(&mut self, steps: &mut [Step]) {
        for step in steps {
            let name = step.name.clone();
            match &mut step.kind {
                StepKind::ForEach { steps, .. } => self.steps(steps),
                StepKind::Workflow(sub) => self.child(&name, sub),
                _ => {}
            }
        }
    }

    fn error(&mut self, sub: &SubWorkflow, message: String, hint: String) {
        let pos = Pos {
            line: sub.at.0,
            column: sub.at.1,
            offset: None,
        };
        self.diags.push(
            Diagnostic::error(self.file, pos, message)
                .with_hint(hint)
                .with_width(sub.path.chars().count()),
        );
    }

    fn child(&mut self, step: &str, sub: &mut SubWorkflow) {
        let what = format!("step `{step}`");
        let path = match crate::fsutil::resolve_in_workspace(self.workspace, &sub.path) {
            Ok(path) => path,
            Err(err) => {
                self.error(
                    sub,
                    format!("`workflow` of {what}: {err}"),
                    "a child workflow is named relative to the workspace and must stay inside it"
                        .into(),
                );
                return;
            }
        };
        if !path.is_file() {
            self.error(
                sub,
                format!(
                    "{what} runs workflow `{}`, which is not a file in the workspace",
                    sub.path
                ),
                "create it, or fix the path (relative to the workspace, not to this file)".into(),
            );
            return;
        }
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        let mut chain = self.options.ancestors.clone();
        chain.push(Link {
            canonical: self.canonical.to_path_buf(),
            file: self.file.to_path_buf(),
            line: sub.at.0,
            step: step.to_string(),
        });
        if let Some(start) = chain.iter().position(|l| l.canonical == canonical) {
            let mut cycle: Vec<String> = chain[start..]
                .iter()
                .map(|l| {
                    format!(
                        "{}:{} (step `{}`)",
                        relative(self.workspace, &l.file),
                        l.line,
                        l.step
                    )
                })
                .collect();
            cycle.push(relative(self.workspace, &path));
            self.error(
                sub,
                format!("workflow cycle: {}", cycle.join(" -> ")),
                "a workflow may not run itself, directly or through its children: remove one `workflow:` step of the cycle".into(),
            );
            return;
        }
        if chain.len() > MAX_DEPTH {
            self.error(
                sub,
                format!(
                    "{what} nests workflows {} levels deep, more than the {MAX_DEPTH} allowed",
                    chain.len()
                ),
                "flatten the chain of `workflow:` steps".into(),
            );
            return;
        }
        let options = LoadOptions {
            default_provider: self.options.default_provider.clone(),
            workspace: Some(self.workspace.to_path_buf()),
            ancestors: chain,
        };
        match load_with_text(&path, &options) {
            Ok(child) => {
                self.check_with(sub, &what, &child.workflow, &child.text);
                sub.child = Some(Arc::new(child));
            }
            Err(err) => self.failed_child(sub, &what, err),
        }
    }

    /// The parent's line says the child does not load; the child's problems follow it.
    fn failed_child(&mut self, sub: &SubWorkflow, what: &str, err: crate::load::LoadError) {
        self.error(
            sub,
            format!(
                "{what} runs workflow `{}`, which has {} problem(s) (listed below)",
                sub.path,
                err.diagnostics.len()
            ),
            format!("fix {} first", sub.path),
        );
        let source: Option<Arc<str>> = err.source_text.as_deref().map(Arc::from);
        for mut d in err.diagnostics {
            if d.source.is_none() {
                d.source = source.clone();
            }
            self.children.push(d);
        }
    }

    /// The step's `with:` against the child's inputs. Every key the child's templates read
    /// needs a default there or a `with:` value (a child sees only those, so it would be
    /// undefined when it runs). Every `with:` key must be an input of the child: a key of its
    /// `context:` or one it reads as `${context.KEY}` (or `.context.KEY` in jq); one it never
    /// reads is a typo or a leftover, and would be dropped silently.
    fn check_with(&mut self, sub: &SubWorkflow, what: &str, child: &Workflow, text: &str) {
        for key in context_reads(child) {
            if child.context.contains_key(&key) || sub.with.iter().any(|input| input.key == key) {
                continue;
            }
            self.error(
                sub,
                format!(
                    "workflow `{}` reads `${{context.{key}}}`, which has no default under its `context:`, and {what} gives no `with.{key}`",
                    sub.path
                ),
                format!(
                    "add `with: {{{key}: ...}}` to {what}, or a default for `{key}` under `context:` in {} (a child does not see its parent's context)",
                    sub.path
                ),
            );
        }
        for input in &sub.with {
            let key = &input.key;
            if child.context.contains_key(key) || reads_context_key(text, key) {
                continue;
            }
            let declared: Vec<&str> = child.context.keys().map(String::as_str).collect();
            let hint = match did_you_mean(key, declared.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "declare it under `context:` in {} (with a default), or remove it",
                    sub.path
                ),
            };
            let pos = Pos {
                line: input.at.0,
                column: input.at.1,
                offset: None,
            };
            self.diags.push(
                Diagnostic::error(
                    self.file,
                    pos,
                    format!(
                        "`with.{key}` of {what}: workflow {} neither declares `{key}` under `context:` nor reads `${{context.{key}}}`",
                        sub.path
                    ),
                )
                .with_hint(hint)
                .with_width(key.chars().count()),
            );
        }
    }
}

/// The context keys a workflow's templates read (`${context.KEY...}`), sorted: the inputs it
/// cannot run without. jq conditions are not counted: a missing key is `null` there.
fn context_reads(workflow: &Workflow) -> Vec<String> {
    use crate::model::{Condition, EnqueueContent, Findings, Prompt};
    let mut templates: Vec<Template> = Vec::new();
    let json_strings = |value: &Value, out: &mut Vec<Template>| {
        crate::load::visit_strings(value, &mut |text| {
            if let Ok(t) = Template::parse(text) {
                out.push(t);
            }
        });
    };
    for provider in workflow.providers.values() {
        templates.extend(provider.command.iter().cloned());
    }
    templates.extend(workflow.env.iter().map(|(_, t)| t.clone()));
    templates.extend(workflow.outputs.iter().map(|(_, t)| t.clone()));
    for step in workflow.all_steps() {
        templates.extend(step.output_file.iter().cloned());
        templates.extend(step.env.iter().map(|(_, t)| t.clone()));
        if let Some(Condition::Equals { left, right } | Condition::NotEquals { left, right }) =
            &step.when
        {
            templates.extend([left.clone(), right.clone()]);
        }
        if let Some(converge) = &step.converge
            && let Findings::Pointer(t) = &converge.findings
        {
            templates.push(t.clone());
        }
        match &step.kind {
            StepKind::Command { argv } => templates.extend(argv.iter().cloned()),
            StepKind::Provider {
                params,
                input_file,
                command_override,
                ..
            } => {
                templates.extend(params.values().cloned());
                templates.extend(input_file.iter().cloned());
                templates.extend(command_override.iter().flatten().cloned());
            }
            StepKind::Agent(agent) => {
                let (Prompt::Text(t) | Prompt::File(t)) = &agent.prompt;
                templates.push(t.clone());
                templates.extend(agent.model.iter().cloned());
            }
            StepKind::Approval {
                message, artifacts, ..
            } => {
                templates.push(message.clone());
                templates.extend(artifacts.iter().cloned());
            }
            StepKind::Enqueue {
                role,
                content,
                name,
            } => {
                templates.push(role.clone());
                templates.extend(name.iter().cloned());
                match content {
                    EnqueueContent::Text(t) | EnqueueContent::File(t) => templates.push(t.clone()),
                    EnqueueContent::Json(value) => json_strings(value, &mut templates),
                }
            }
            StepKind::WaitFor { glob, .. } => templates.push(glob.clone()),
            StepKind::Workflow(sub) => {
                for input in &sub.with {
                    json_strings(&input.value, &mut templates);
                }
            }
            StepKind::ForEach { .. } | StepKind::Parallel { .. } => {}
        }
    }
    let mut keys: Vec<String> = templates
        .iter()
        .flat_map(Template::vars)
        .filter(|var| var.root() == "context")
        .filter_map(|var| var.segments.get(1).cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Whether the workflow text reads `context.KEY` anywhere (`${context.KEY...}`, jq's
/// `.context.KEY`).
fn reads_context_key(text: &str, key: &str) -> bool {
    let needle = format!("context.{key}");
    text.match_indices(&needle).any(|(at, _)| {
        let next = text[at + needle.len()..].chars().next();
        !next.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-')
    })
}

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
    pub inherited: Vec<crate::runner::InheritedLimits>,
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
    let path = crate::fsutil::resolve_in_workspace(workspace, rel)
        .map_err(|e| format!("`workflow: {rel}`: {e}"))?;
    let options = LoadOptions {
        workspace: Some(workspace.to_path_buf()),
        ..LoadOptions::default()
    };
    let loaded = load_with_text(&path, &options).map_err(|e| {
        format!(
            "workflow `{rel}` does not load ({} problem(s)); fix it and resume:\n{}",
            e.diagnostics.len(),
            e.render()
        )
    })?;
    Ok(Arc::new(loaded))
}

/// [`crate::load::load_file_with`], keeping the text: a child run saves it in its RUN_ROOT,
/// and `with:` keys are checked against it.
fn load_with_text(
    path: &Path,
    options: &LoadOptions,
) -> Result<LoadedChild, crate::load::LoadError> {
    let text = crate::load::read_source(path)?;
    let workflow = crate::load::load_str_with(path, &text, options)?;
    Ok(LoadedChild { workflow, text })
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
fn spend_of_events(dir: &RunDir) -> (crate::budget::Spend, crate::runtime::parse::Usage) {
    let mut spent = crate::budget::Spend::default();
    let mut usage = crate::runtime::parse::Usage::default();
    for record in crate::events::read(&dir.events()).unwrap_or_default() {
        if record["event"] != "step_finished" {
            continue;
        }
        let result = &record["result"];
        spent = spent.plus(crate::budget::Spend::of_result(result));
        if let Ok(u) =
            serde_json::from_value::<crate::runtime::parse::Usage>(result["usage"].clone())
        {
            usage.add(&u);
        }
    }
    (spent, usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keys_are_found_whole() {
        let text = "steps:\n  - name: A\n    command: [echo, \"${context.name}\"]\n    when: {jq: '.context.mode == 1'}\n";
        assert!(reads_context_key(text, "name"));
        assert!(reads_context_key(text, "mode"));
        assert!(!reads_context_key(text, "nam"));
        assert!(!reads_context_key(text, "names"));
    }

    #[test]
    fn context_reads_are_the_templates_not_comments_nor_jq() {
        let text = "# needs ${context.commented}\nenv:\n  A: \"${context.from_env}\"\nsteps:\n  - name: A\n    command: [echo, \"${context.b.c} $${context.lit}\"]\n    when: {jq: '.context.optional'}\n  - name: Loop\n    for_each:\n      items: [1]\n      steps:\n        - name: Inner\n          command: [echo, \"${context.inner}\"]\n";
        let workflow = crate::load::load_str(Path::new("w.yaml"), text).unwrap();
        assert_eq!(context_reads(&workflow), ["b", "from_env", "inner"]);
    }
}
