//! The flags every run shares and what they do to it: `--context` and `--context-file` (the
//! run's context values over the workflow's defaults) and `--runtime` and `--allow-full` (who
//! executes agent steps, with the workspace's runtimes.yaml).
//!
//! Does not run anything (`run`) nor parse the command line around them (`cli`).

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Map, Value};

use orchestrate_engine::runner::RunConfig;
use orchestrate_lang::model::Workflow;

use super::loading::relative_render;
use crate::error::Error;

/// Who executes agent steps.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct AgentArgs {
    /// Run every agent step on this runtime or runtimes.yaml profile (claude, codex, gemini, ...).
    #[arg(long, value_name = "NAME")]
    pub runtime: Option<String>,
    /// Allow agent steps with `phase: full` (no permission checks; use inside a sandbox).
    #[arg(long)]
    pub allow_full: bool,
}

impl AgentArgs {
    /// Applies the options and the workspace's runtimes.yaml to a run's configuration.
    pub(crate) fn apply(&self, workspace: &Path, config: &mut RunConfig) -> Result<(), Error> {
        match orchestrate_runtime::profile::Profiles::load(workspace) {
            Ok(profiles) => config.profiles = std::sync::Arc::new(profiles),
            Err(err) => {
                eprint!("{}", relative_render(&err, workspace));
                return Err(Error::invalid(
                    "runtimes.yaml has problems; nothing was run",
                ));
            }
        }
        config.runtime_override = self.runtime.clone();
        config.allow_full = self.allow_full;
        Ok(())
    }
}

#[derive(Debug, Args, Clone)]
pub(crate) struct ContextArgs {
    /// A context value, `${context.KEY}` in the workflow (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub pairs: Vec<String>,
    /// A JSON object of context values; `--context` wins over it.
    #[arg(long, value_name = "FILE")]
    pub context_file: Option<PathBuf>,
}

/// Context precedence: workflow `context:` defaults, then `--context-file`, then `--context`.
pub(crate) fn build_context(
    workspace: &Path,
    workflow: &Workflow,
    args: &ContextArgs,
) -> Result<Map<String, Value>, Error> {
    context_values(workspace, workflow, args).map_err(Error::Invalid)
}

fn context_values(
    workspace: &Path,
    workflow: &Workflow,
    args: &ContextArgs,
) -> Result<Map<String, Value>, String> {
    let mut context = workflow.context.clone();
    if let Some(file) = &args.context_file {
        let path = workspace.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read --context-file {}: {e}", file.display()))?;
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => context.extend(map),
            Ok(_) => {
                return Err(format!(
                    "--context-file {} must hold a JSON object",
                    file.display()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "--context-file {} is not valid JSON: {e}",
                    file.display()
                ));
            }
        }
    }
    for pair in &args.pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("--context `{pair}` must be KEY=VALUE"));
        };
        if key.is_empty() {
            return Err(format!("--context `{pair}` has an empty key"));
        }
        context.insert(key.to_string(), Value::String(value.to_string()));
    }
    Ok(context)
}
