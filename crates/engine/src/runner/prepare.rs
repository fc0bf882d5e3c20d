//! What a process step runs with: argv (a command, a provider template, an agent), environment
//! (the workflow's and step's `env:`, secrets given or removed) and its `output_file`.
//!
//! Does not start the process (`step`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::agent::AgentRun;
use super::scope::{ProviderScope, Scope};
use super::{LoopFrame, Runner};
use orchestrate_base::fsutil;
use orchestrate_lang::model::{Step, StepKind};
use orchestrate_lang::template::Template;

pub(super) struct Prepared {
    pub(super) argv: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) env_remove: Vec<String>,
    pub(super) output_file: Option<PathBuf>,
    /// Written to the process's stdin (agent prompts), else /dev/null.
    pub(super) stdin: Option<Vec<u8>>,
    pub(super) agent: Option<AgentRun>,
}

impl Runner {
    /// Renders argv, env and paths for a process step. Errors name the step and what is wrong.
    pub(super) fn prepare(&self, step: &Step, loops: &[LoopFrame]) -> Result<Prepared, String> {
        let mut agent_parts = None;
        let scope = self.scope(loops);
        let render =
            |t: &Template, what: &str| t.render(&scope).map_err(|e| format!("in {what}: {e}"));
        let argv = match &step.kind {
            StepKind::Command { argv } => argv
                .iter()
                .map(|t| render(t, "`command`"))
                .collect::<Result<Vec<_>, _>>()?,
            StepKind::Provider {
                provider,
                params,
                input_file,
                command_override,
            } => self.provider_argv(
                provider.as_ref(),
                params,
                input_file.as_ref(),
                command_override.as_ref(),
                &scope,
            )?,
            StepKind::Agent(agent) => {
                let (argv, env, stdin, run) = self.prepare_agent(step, agent, loops)?;
                agent_parts = Some((env, stdin, run));
                argv
            }
            StepKind::ForEach { .. }
            | StepKind::Parallel { .. }
            | StepKind::WaitFor { .. }
            | StepKind::Enqueue { .. }
            | StepKind::Approval { .. }
            | StepKind::Workflow(_) => Vec::new(),
        };
        // An `orchestrate` the step runs works on this run's workspace (a task's worktree is a
        // checkout that may have an agents/ of its own); the workflow's `env:` may override it.
        let mut env = vec![(
            orchestrate_base::fsutil::WORKSPACE_ENV.to_string(),
            self.config.workspace.display().to_string(),
        )];
        env.extend(self.step_env(step, loops)?);
        for name in &step.secrets {
            match std::env::var(name) {
                Ok(value) => env.push((name.clone(), value)),
                Err(_) => {
                    return Err(format!(
                        "secret `{name}` is not set in orchestrate's environment; export it before running"
                    ));
                }
            }
        }
        // Secrets the step did not ask for are removed from its environment.
        let env_remove: Vec<String> = self
            .secret_names
            .iter()
            .filter(|name| !step.secrets.contains(name))
            .cloned()
            .collect();
        let output_file = match &step.output_file {
            Some(t) => {
                let rel = render(t, "`output_file`")?;
                Some(
                    fsutil::resolve_in_workspace(self.config.code_dir(), &rel)
                        .map_err(|e| format!("`output_file`: {e}"))?,
                )
            }
            None => None,
        };
        if matches!(step.kind, StepKind::Provider { .. }) {
            // A provider's CLI is an agent too: it learns its step and run as agent steps do.
            env.push(("ORCHESTRATE_STEP".into(), step.name.clone()));
            env.push(("ORCHESTRATE_RUN_ID".into(), self.state.run_id.clone()));
        }
        let (stdin, agent) = match agent_parts {
            Some((agent_env, stdin, run)) => {
                env.extend(agent_env);
                (Some(stdin), Some(run))
            }
            None => (None, None),
        };
        Ok(Prepared {
            argv,
            env,
            env_remove,
            output_file,
            stdin,
            agent,
        })
    }

    /// A provider step's argv: its template (or `command_override`) rendered over the
    /// template's defaults, the run's model, `provider_params` and the `input_file` prompt.
    fn provider_argv(
        &self,
        provider: Option<&String>,
        params: &BTreeMap<String, Template>,
        input_file: Option<&Template>,
        command_override: Option<&Vec<Template>>,
        scope: &Scope<'_>,
    ) -> Result<Vec<String>, String> {
        let render =
            |t: &Template, what: &str| t.render(scope).map_err(|e| format!("in {what}: {e}"));
        let mut values: HashMap<String, String> = HashMap::new();
        let provider = provider
            .cloned()
            .or_else(|| self.config.default_provider.clone());
        let template = provider
            .as_ref()
            .and_then(|name| self.workflow.providers.get(name));
        if let Some(template) = template {
            values.extend(template.defaults.clone());
        }
        if let Some(model) = &self.config.default_model {
            values.insert("model".into(), model.clone());
        }
        for (key, t) in params {
            values.insert(key.clone(), render(t, &format!("`provider_params.{key}`"))?);
        }
        if let Some(input) = input_file {
            let rel = render(input, "`input_file`")?;
            let path = fsutil::resolve_in_workspace(self.config.code_dir(), &rel)
                .map_err(|e| format!("`input_file`: {e}"))?;
            let prompt = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read `input_file` {rel}: {e}"))?;
            values.insert("PROMPT".into(), prompt);
        }
        let layered = ProviderScope {
            values: &values,
            base: scope,
        };
        let (argv, model_args) = match (command_override, template) {
            (Some(argv), _) => (argv, Vec::new()),
            (None, Some(template)) => (&template.command, template.model_args(values.get("model"))),
            (None, None) => {
                return Err(format!(
                    "provider `{}` is not defined",
                    provider.clone().unwrap_or_default()
                ));
            }
        };
        let mut argv = argv
            .iter()
            .map(|t| {
                t.render(&layered)
                    .map_err(|e| format!("in the provider command: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        argv.extend(model_args);
        Ok(argv)
    }

    /// The workflow's and the step's `env:`, rendered (the step's entries after, so they win).
    pub(super) fn step_env(
        &self,
        step: &Step,
        loops: &[LoopFrame],
    ) -> Result<Vec<(String, String)>, String> {
        let scope = self.scope(loops);
        self.workflow
            .env
            .iter()
            .chain(step.env.iter())
            .map(|(key, t)| {
                let value = t
                    .render(&scope)
                    .map_err(|e| format!("in `env.{key}`: {e}"))?;
                Ok((key.clone(), value))
            })
            .collect()
    }
}
