//! Running workflows: `run`, `resume` (of a run), `run-step` and `watch`.
//!
//! Owns: what a run shows around the runner (its id, its worktree, its result on stdout, how it
//! ended and how to continue) and its exit code. Does not run steps (`orchestrate_engine::runner`)
//! nor make worktrees (`orchestrate_engine::worktree`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Map;

use orchestrate_engine::runner::{RunConfig, RunReport, Runner, exit};
use orchestrate_engine::state::{RunDir, RunStatus};
use orchestrate_queue::processed;

use super::loading::load_for_run;
use super::run_args::{AgentArgs, ContextArgs, build_context};
use super::signals::signal_cancel;
use crate::error::{Error, Outcome};

/// `orchestrate run WORKFLOW`.
pub(crate) async fn run(
    workspace: &Path,
    file: &Path,
    context: &ContextArgs,
    clean: bool,
    archive: Option<Option<PathBuf>>,
    (quiet, json): (bool, bool),
    agents: &AgentArgs,
) -> Outcome {
    let (workflow, text) = load_for_run(workspace, file)?;
    let context = build_context(workspace, &workflow, context)?;
    let needs_processed = clean || archive.is_some();
    let processed_dir = if needs_processed {
        match processed::processed_dir(workspace, &workflow.queue.processed_dir) {
            Ok(dir) => Some(dir),
            Err(err) => {
                return Err(Error::invalid(err.to_string()));
            }
        }
    } else {
        None
    };
    if let (Some(dir), Some(Some(dest))) = (&processed_dir, &archive)
        && let Err(err) = processed::check_archive_dest(dir, &workspace.join(dest))
    {
        return Err(Error::invalid(err.to_string()));
    }
    if clean && let Some(dir) = &processed_dir {
        match processed::clean(dir) {
            Ok(n) if !quiet => eprintln!("cleaned {} ({n} entries removed)", dir.display()),
            Ok(_) => {}
            Err(err) => {
                return Err(Error::invalid(err.to_string()));
            }
        }
    }
    let cancel = signal_cancel();
    let mut config = RunConfig::new(workspace.to_path_buf(), context, cancel);
    config.progress = !quiet;
    let reporter = orchestrate_engine::progress::Mode::choose(quiet, json).reporter();
    config.reporter = reporter.clone();
    agents.apply(workspace, &mut config)?;
    let isolation = orchestrate_engine::worktree::effective(None, workflow.isolation.as_ref());
    let workflow_name = workflow.name.clone();
    let mut runner = match Runner::create(workflow, &text, config) {
        Ok(r) => r,
        Err(err) => {
            return Err(Error::invalid(err.to_string()));
        }
    };
    eprintln!("run_id: {}", runner.run_id());
    let worktree = match isolate(workspace, isolation, &mut runner, &workflow_name, quiet) {
        Ok(record) => record,
        Err(err) => {
            // Nothing ran: no run to resume or to list.
            let root = runner.run_root().to_path_buf();
            drop(runner);
            let _ = std::fs::remove_dir_all(root);
            return Err(err);
        }
    };
    let (outcome, root) = drive(
        runner,
        reporter.as_ref(),
        workspace,
        worktree.as_ref(),
        quiet,
        json,
    )
    .await;
    if matches!(&outcome, Ok(code) if *code == ExitCode::SUCCESS)
        && let (Some(dir), Some(dest)) = (&processed_dir, archive)
    {
        let dest = match dest {
            Some(dest) => workspace.join(dest),
            None => root.join("processed.zip"),
        };
        match processed::archive(dir, &dest) {
            Ok(n) => {
                if !quiet {
                    eprintln!(
                        "archived {n} file(s) from {} to {}",
                        dir.display(),
                        dest.display()
                    );
                }
            }
            Err(err) => {
                return Err(Error::failed(err.to_string()));
            }
        }
    }
    outcome
}

/// `orchestrate resume RUN_ID`: continues a stopped or failed run where it ended, in the
/// worktree it started in (made again from its branch if it was removed).
pub(crate) async fn resume(
    workspace: &Path,
    run_id: &str,
    quiet: bool,
    json: bool,
    agents: &AgentArgs,
) -> Outcome {
    let mut config = RunConfig::new(workspace.to_path_buf(), Map::new(), signal_cancel());
    config.progress = !quiet;
    let reporter = orchestrate_engine::progress::Mode::choose(quiet, json).reporter();
    config.reporter = reporter.clone();
    agents.apply(workspace, &mut config)?;
    let mut runner =
        Runner::resume(run_id, config).map_err(|err| Error::invalid(err.to_string()))?;
    eprintln!("run_id: {}", runner.run_id());
    let owner = orchestrate_engine::worktree::Owner::Run {
        run_id: runner.run_id().to_string(),
    };
    let spec = orchestrate_engine::worktree::record_of(workspace, &owner).map(|r| {
        orchestrate_lang::model::WorktreeSpec {
            base: Some(r.base),
            keep: Some(r.keep),
            dir: r
                .path
                .parent()
                .and_then(Path::parent)
                .map(|d| d.display().to_string()),
            branch: Some(r.branch),
            remote: None,
            at: "the run's worktree record".into(),
        }
    });
    let name = runner.workflow_name().to_string();
    let worktree = isolate(workspace, spec, &mut runner, &name, quiet)?;
    drive(
        runner,
        reporter.as_ref(),
        workspace,
        worktree.as_ref(),
        quiet,
        json,
    )
    .await
    .0
}

/// Under `isolation: worktree`, makes (or reopens) the run's worktree and points the runner's
/// steps at it.
fn isolate(
    workspace: &Path,
    spec: Option<orchestrate_lang::model::WorktreeSpec>,
    runner: &mut Runner,
    workflow: &str,
    quiet: bool,
) -> Result<Option<orchestrate_engine::worktree::Record>, Error> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    let owner = orchestrate_engine::worktree::Owner::Run {
        run_id: runner.run_id().to_string(),
    };
    match orchestrate_engine::worktree::prepare(workspace, &spec, &owner, workflow, None) {
        Ok(record) => {
            if !quiet {
                eprintln!(
                    "worktree: {} (branch `{}`)",
                    record.checkout.display(),
                    record.branch
                );
            }
            runner.set_checkout(record.checkout.clone());
            runner.set_branch(record.branch.clone());
            Ok(Some(record))
        }
        Err(err) => Err(Error::invalid(format!(
            "failed to prepare the worktree of run {}: {err}",
            runner.run_id()
        ))),
    }
}

/// Runs a created or resumed run to its end, as `run` and `resume` do: the live display
/// closed, the outcome reported, the worktree ended, the trace exported. Returns the outcome
/// and RUN_ROOT.
async fn drive(
    runner: Runner,
    reporter: Option<&std::sync::Arc<dyn orchestrate_engine::progress::Reporter>>,
    workspace: &Path,
    worktree: Option<&orchestrate_engine::worktree::Record>,
    quiet: bool,
    json: bool,
) -> (Outcome, PathBuf) {
    let root = runner.run_root().to_path_buf();
    let outcome = runner.run().await;
    if let Some(reporter) = reporter {
        reporter.finish();
    }
    let succeeded = matches!(&outcome, Ok(r) if r.status == RunStatus::Succeeded);
    if let Ok(report) = &outcome
        && report.status == RunStatus::Succeeded
        && !json
    {
        // The run's result on stdout (`--json` has it in its `run_finished` event).
        print!("{}", result_text(report));
    }
    // Shown now, before the worktree's note: the run's end reads first.
    let code = crate::error::render(report(outcome));
    end_worktree(workspace, worktree, succeeded, quiet);
    orchestrate_observe::otlp::export_run(&root);
    (Ok(code), root)
}

/// After an isolated run: a success removes its worktree (per `keep`), anything else keeps it
/// for `resume` and inspection.
fn end_worktree(
    workspace: &Path,
    record: Option<&orchestrate_engine::worktree::Record>,
    succeeded: bool,
    quiet: bool,
) {
    if let Some(record) = record {
        let ending = orchestrate_engine::worktree::finish(workspace, record, succeeded);
        if !quiet || ending.kept && succeeded {
            eprintln!("{}", ending.note);
        }
    }
}

/// What a successful run produced, as stdout shows it: the workflow's `outputs:`, one
/// `NAME: VALUE` line each, or without them the output of the step recorded last (the demo's
/// summary). Empty when there is neither.
fn result_text(report: &RunReport) -> String {
    let mut out = String::new();
    if !report.values.is_empty() {
        for (name, value) in &report.values {
            let value = match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{name}: {value}\n"));
        }
    } else if let Some(text) = &report.last_output {
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// The end of a run on stderr: succeeded, interrupted, or failed with where to look and how to
/// continue. A run that failed is shown here: its exit code is an `Ok`.
fn report(outcome: Result<RunReport, orchestrate_engine::runner::RunError>) -> Outcome {
    match outcome {
        Ok(report) => {
            match report.status {
                RunStatus::Succeeded => eprintln!("run {} succeeded", report.run_id),
                RunStatus::Interrupted => eprintln!(
                    "run {} interrupted; continue it with `orchestrate resume {}`",
                    report.run_id, report.run_id
                ),
                _ => eprintln!(
                    "run {} failed: {}\n  logs: {}\n  after fixing the cause, continue with `orchestrate resume {}`",
                    report.run_id,
                    report.error.as_deref().unwrap_or("a step failed"),
                    report.run_root.join("logs").display(),
                    report.run_id
                ),
            }
            Ok(ExitCode::from(report.exit_code))
        }
        Err(err) => Err(Error::failed(err.to_string())),
    }
}

/// `orchestrate run-step STEP WORKFLOW`: one step alone, its inputs from `--from-run`.
pub(crate) async fn run_step(
    workspace: &Path,
    name: &str,
    file: &Path,
    context: &ContextArgs,
    from_run: Option<&str>,
    quiet: bool,
    agents: &AgentArgs,
) -> Outcome {
    let (workflow, text) = load_for_run(workspace, file)?;
    let Some(step) = workflow.find_step(name).cloned() else {
        let names: Vec<String> = workflow
            .all_steps()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let hint = orchestrate_lang::diag::did_you_mean(name, names.iter().map(String::as_str))
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| format!("steps: {}", names.join(", ")));
        return Err(Error::invalid(format!(
            "{} has no step `{name}`; {hint}",
            file.display()
        )));
    };
    let context = build_context(workspace, &workflow, context)?;
    let preset = match from_run {
        Some(run_id) => match RunDir::new(workspace, run_id).read_state() {
            Ok(state) => state.steps,
            Err(err) => {
                return Err(Error::invalid(err.to_string()));
            }
        },
        None => Default::default(),
    };
    let mut single = workflow;
    let mut step = step;
    step.on = Default::default();
    single.steps = vec![step];
    let mut config = RunConfig::new(workspace.to_path_buf(), context, signal_cancel());
    config.progress = !quiet;
    config.preset_results = preset;
    agents.apply(workspace, &mut config)?;
    let runner = match Runner::create(single, &text, config) {
        Ok(r) => r,
        Err(err) => {
            return Err(Error::invalid(err.to_string()));
        }
    };
    eprintln!("run_id: {}", runner.run_id());
    report(runner.run().await)
}

/// Runs the workflow, then again whenever its file changes; a change during a run stops it
/// first (like watchexec's restart).
pub(crate) async fn watch(
    workspace: &Path,
    file: &Path,
    context: &ContextArgs,
    agents: &AgentArgs,
) -> Outcome {
    use notify::{RecursiveMode, Watcher};
    let path = workspace.join(file);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let target = path.clone();
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                let relevant = event.need_rescan() || event.paths.iter().any(|p| p == &target);
                if relevant && !matches!(event.kind, notify::EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        }) {
            Ok(w) => w,
            Err(err) => {
                return Err(Error::invalid(format!(
                    "failed to watch {}: {err}",
                    file.display()
                )));
            }
        };
    // Editors often replace the file by rename, so watch the directory.
    let dir = path.parent().unwrap_or(workspace).to_path_buf();
    if let Err(err) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        return Err(Error::invalid(format!(
            "failed to watch {}: {err}",
            dir.display()
        )));
    }
    let stop = signal_cancel();
    loop {
        let cancel = stop.child_token();
        let run_cancel = cancel.clone();
        let ws = workspace.to_path_buf();
        let run_file = file.to_path_buf();
        let context = context.clone();
        let agents = agents.clone();
        let run = async move {
            let (workflow, text) = load_for_run(&ws, &run_file)?;
            let context = build_context(&ws, &workflow, &context)?;
            let mut config = RunConfig::new(ws.clone(), context, run_cancel);
            config.progress = true;
            agents.apply(&ws, &mut config)?;
            match Runner::create(workflow, &text, config) {
                Ok(runner) => {
                    eprintln!("run_id: {}", runner.run_id());
                    report(runner.run().await)
                }
                Err(err) => Err(Error::invalid(err.to_string())),
            }
        };
        tokio::pin!(run);
        let mut changed = false;
        // Each run's outcome is shown as it ends; watching goes on whatever it was.
        tokio::select! {
            outcome = &mut run => {
                crate::error::render(outcome);
            }
            Some(()) = rx.recv() => {
                changed = true;
                cancel.cancel();
                crate::error::render(run.await);
            }
        }
        if stop.is_cancelled() {
            return Ok(ExitCode::from(exit::INTERRUPTED));
        }
        if !changed {
            eprintln!("watching {} for changes (Ctrl-C to stop)", file.display());
            tokio::select! {
                Some(()) = rx.recv() => {}
                _ = stop.cancelled() => return Ok(ExitCode::from(exit::INTERRUPTED)),
            }
        }
        // Let a burst of writes settle, then drain it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while rx.try_recv().is_ok() {}
        eprintln!("{} changed; running again", file.display());
    }
}
