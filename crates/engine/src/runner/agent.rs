//! Agent steps: the runtime choice (`--runtime`, the step's, the role's, `runtimes.yaml`'s), the
//! invocation built by the runtime's adapter, and the agent's output turned into the step's
//! result (usage, cost, session totals, errors by class).
//!
//! Does not hold the argv tables or output parsers (`orchestrate_runtime`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::capture::{capture, idle_message, parse_json_limited, strip_fences, text_output};
use super::scope::{ProviderScope, Scope};
use super::{LINES_LIMIT, LoopFrame, Runner};
use crate::step_result::{ClassifiedError, StepError, StepResult, StepStatus};
use orchestrate_base::exec::{self, Outcome};
use orchestrate_base::fsutil;
use orchestrate_lang::model::{Capture, Step};
use orchestrate_runtime::parse::ErrorKind;

/// The value of `name` an agent process sees: its environment is the engine's, then the
/// workflow's and step's `env:` (`step_env`), then the profile's entries, the last one winning.
fn effective_var(
    name: &str,
    profile: &orchestrate_runtime::profile::Profile,
    step_env: &[(String, String)],
) -> Option<String> {
    let last = |env: &[(String, String)]| {
        env.iter()
            .rfind(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    last(&profile.env)
        .or_else(|| last(step_env))
        .or_else(|| std::env::var(name).ok())
}

/// The model `runtime` uses by itself (its configuration, else the pinned version's default),
/// with the environment it will see (`effective_var`).
pub(super) fn cli_default_model(
    runtime: orchestrate_runtime::parse::Runtime,
    profile: &orchestrate_runtime::profile::Profile,
    step_env: &[(String, String)],
) -> Option<orchestrate_runtime::defaults::Guess> {
    let env = |name: &str| effective_var(name, profile, step_env);
    orchestrate_runtime::defaults::default_model(runtime, &profile.args, &env)
}

/// Who runs an agent step and how, decided before it starts.
#[derive(Debug, Clone)]
pub(super) struct AgentRun {
    /// `None`: a provider template stands in for the agent (plain text output).
    pub(super) runtime: Option<orchestrate_runtime::parse::Runtime>,
    /// The name it was chosen by (profile or runtime).
    pub(super) name: String,
    pub(super) model: Option<String>,
    /// The model the CLI uses by itself when `model` is `None` (its config, its default).
    pub(super) cli_default: Option<orchestrate_runtime::defaults::Guess>,
    pub(super) phase: orchestrate_lang::model::Phase,
    pub(super) notes: Vec<String>,
    /// The totals of the session being resumed after its latest step (claude and codex report
    /// per-session totals; see `parse::step_share`).
    pub(super) previous_session: Option<orchestrate_runtime::parse::SessionTotals>,
    /// Paths a readonly/plan step may write.
    pub(super) artifacts: Vec<String>,
}

/// The running totals `session` stood at after its latest step: of the results that recorded
/// them for it, the largest (a session's totals only grow). Not necessarily the resumed step's
/// own: another step may have resumed the same session since.
fn session_totals_before(
    results: &BTreeMap<String, StepResult>,
    session: &str,
) -> Option<orchestrate_runtime::parse::SessionTotals> {
    results
        .values()
        .filter(|result| result.session_id.as_ref().and_then(Option::as_deref) == Some(session))
        .filter_map(|result| {
            Some(orchestrate_runtime::parse::SessionTotals {
                usage: result.usage_cumulative?,
                cost_usd: result.cost_usd_cumulative.flatten(),
            })
        })
        .max_by_key(|totals| totals.usage.total())
}

/// How an agent step ended, and its error by class, from the process's end and the parse.
fn agent_status(
    run: &AgentRun,
    finished: &exec::Finished,
    outcome: &orchestrate_runtime::parse::Outcome,
    code: i32,
) -> (StepStatus, Option<ClassifiedError>) {
    use orchestrate_runtime::parse;
    let mut error = outcome.error.clone().map(ClassifiedError::from);
    let status = match &finished.outcome {
        Outcome::Cancelled => StepStatus::Interrupted,
        Outcome::TimedOut => {
            error = Some(ClassifiedError::new(
                ErrorKind::Timeout,
                "timed out (timeout_sec); its process group was stopped",
            ));
            StepStatus::Failed
        }
        Outcome::IdleTimedOut { after_ms } => {
            error = Some(ClassifiedError::new(
                ErrorKind::IdleTimeout,
                idle_message(*after_ms),
            ));
            StepStatus::Failed
        }
        // Stopped at claude's first authentication failure (`run_watched`): the parse
        // says so. A budget stop overwrites the error later (`budget_stopped`).
        Outcome::Stopped
            if outcome
                .error
                .as_ref()
                .is_some_and(|e| e.kind == parse::ErrorKind::Auth) =>
        {
            StepStatus::Failed
        }
        Outcome::Stopped => {
            error = Some(ClassifiedError::new(
                ErrorKind::Budget,
                "stopped: the run's budget was exceeded",
            ));
            StepStatus::Failed
        }
        Outcome::SpawnFailed { message } => {
            error = Some(ClassifiedError::new(ErrorKind::Other, message.clone()));
            StepStatus::Failed
        }
        _ if outcome.ok => StepStatus::Succeeded,
        _ => StepStatus::Failed,
    };
    if status == StepStatus::Failed && error.is_none() {
        error = Some(ClassifiedError::new(
            ErrorKind::Other,
            format!("{} exited with code {code}", run.name),
        ));
    }
    (status, error)
}

/// The agent's answer in the step's capture mode (`output`, `lines` or `json`); an answer that
/// is not the JSON asked for fails a step that succeeded otherwise.
fn answer_by_capture(
    step: &Step,
    outcome: &orchestrate_runtime::parse::Outcome,
    text: &str,
    status: StepStatus,
    result: &mut StepResult,
) {
    match step.capture {
        Capture::Text => {
            let (output, cut) = text_output(text, true);
            result.output = Some(output.to_string());
            result.truncated = Some(cut);
        }
        Capture::Lines => {
            result.output_capture = Some(Capture::Lines);
            let lines: Vec<String> = text.lines().take(LINES_LIMIT).map(str::to_string).collect();
            result.truncated = Some(text.lines().count() > LINES_LIMIT);
            result.lines = Some(lines);
        }
        Capture::Json => {
            result.output_capture = Some(Capture::Json);
            let parsed = match &outcome.structured_output {
                // Answered through the schema the CLI was given: already JSON.
                Some(answer) => Ok(answer.clone()),
                None => parse_json_limited(strip_fences(text).as_bytes()),
            };
            match parsed {
                Ok(value) => result.json = Some(value),
                Err(_) if step.allow_parse_error => result.json = Some(Value::Null),
                Err(message) if status == StepStatus::Succeeded => {
                    result.status = StepStatus::Failed;
                    result.exit_code = Some(2);
                    result.error = Some(StepError::Classified(ClassifiedError::new(
                        ErrorKind::Other,
                        format!("the agent's answer is not valid JSON: {message}"),
                    )));
                }
                Err(_) => {}
            }
        }
    }
}

/// Writes the files an invocation needs (its policy, output schema) and lays down gemini's
/// private home over the user's.
fn lay_down(
    invocation: &orchestrate_runtime::adapter::Invocation,
    profile: &orchestrate_runtime::profile::Profile,
    step_env: &[(String, String)],
) -> Result<(), String> {
    for (path, text) in &invocation.files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(home) = &invocation.gemini_home {
        // The home gemini would otherwise use: the profile's, the step's `env:`,
        // orchestrate's, else HOME.
        let var = |name: &str| effective_var(name, profile, step_env).filter(|v| !v.is_empty());
        let user_home = var("GEMINI_CLI_HOME")
            .or_else(|| var("HOME"))
            .ok_or_else(|| {
                "gemini's max_turns needs the user's home: neither GEMINI_CLI_HOME nor HOME is set"
                    .to_string()
            })?;
        home.lay_down(Path::new(&user_home))?;
    }
    Ok(())
}

impl Runner {
    /// Parses an agent's structured output into the step's result.
    pub(super) fn agent_capture(
        &self,
        step: &Step,
        finished: &exec::Finished,
        run: &AgentRun,
        stdout_log: &Path,
        stderr_log: &Path,
    ) -> StepResult {
        use orchestrate_runtime::parse;
        let Some(runtime) = run.runtime else {
            // A stand-in provider: its stdout is the answer.
            let mut result = capture(step, finished);
            let text = String::from_utf8_lossy(&finished.stdout).into_owned();
            result.result = Some(text);
            result.runtime = Some(run.name.clone());
            result.phase = Some(run.phase);
            return result;
        };
        let stdout = std::fs::read_to_string(stdout_log).unwrap_or_default();
        let stderr = std::fs::read_to_string(stderr_log).unwrap_or_default();
        let code = finished.outcome.exit_code();
        let outcome = parse::parse(runtime, &stdout, &stderr, code);
        let (spending, usage, cost, model) = self.agent_spending(runtime, run, &outcome, &stdout);
        let (status, error) = agent_status(run, finished, &outcome, code);
        let text = outcome.result.clone().unwrap_or_default();
        let mut result = StepResult {
            status,
            exit_code: Some(code),
            outcome: Some(finished.outcome.clone()),
            runtime: Some(runtime.name().to_string()),
            profile: Some(run.name.clone()),
            model: Some(model),
            requested_model: Some(run.model.clone()),
            phase: Some(run.phase),
            result: Some(text.clone()),
            session_id: Some(outcome.session_id.clone()),
            usage: Some(usage),
            cost_usd: Some(cost),
            turns: Some(outcome.turns),
            denials: Some(outcome.denials.clone()),
            api_retries: Some(outcome.retries.len() as u64),
            truncated: Some(false),
            error: error.map(StepError::Classified),
            ..spending
        };
        answer_by_capture(step, &outcome, &text, status, &mut result);
        result
    }

    /// What an agent's run spent, this step's share of a resumed session's totals: the result
    /// so far (the session's running totals), the usage, its cost and the model it is priced as.
    fn agent_spending(
        &self,
        runtime: orchestrate_runtime::parse::Runtime,
        run: &AgentRun,
        outcome: &orchestrate_runtime::parse::Outcome,
        stdout: &str,
    ) -> (
        StepResult,
        orchestrate_runtime::parse::Usage,
        Option<f64>,
        Option<String>,
    ) {
        use orchestrate_runtime::parse;
        let mut usage = outcome.usage;
        if usage == parse::Usage::default() {
            // No final statistics (the CLI was stopped or died): what the stream reported so
            // far was still spent, and budgets and the ledger count it.
            let mut live = parse::StreamParser::new(runtime);
            live.line(stdout);
            usage = live.usage_so_far();
        }
        let mut result = StepResult::default();
        let mut priced = outcome.clone();
        if let Some(now) = parse::SessionTotals::of(runtime, outcome) {
            // claude and codex report a resumed session's running totals: this step's share
            // is the difference from what the session's latest earlier step recorded.
            result.usage_cumulative = Some(now.usage);
            result.cost_usd_cumulative = Some(now.cost_usd);
            let own = parse::step_share(&now, run.previous_session.as_ref());
            if own != now {
                // The per-model breakdown is the session's too: price the share as one model.
                priced.model_usage.clear();
            }
            usage = own.usage;
            priced.cost_usd = own.cost_usd;
        }
        let model = outcome
            .model
            .clone()
            .or_else(|| run.model.clone())
            .or_else(|| run.cli_default.as_ref().map(|guess| guess.model.clone()));
        priced.usage = usage;
        let cost = self
            .config
            .profiles
            .prices
            .outcome_cost(&priced, model.as_deref());
        (result, usage, cost, model)
    }

    /// Resolves who runs an agent step and builds its command: `--runtime`, then the step's
    /// `runtime:`, then the role's, then `runtimes.yaml`'s default; a name may be a profile.
    #[expect(
        clippy::type_complexity,
        reason = "one private caller destructures it at once"
    )]
    pub(super) fn prepare_agent(
        &self,
        step: &Step,
        agent: &orchestrate_lang::model::AgentStep,
        loops: &[LoopFrame],
    ) -> Result<(Vec<String>, Vec<(String, String)>, Vec<u8>, AgentRun), String> {
        use orchestrate_runtime::adapter;
        use orchestrate_runtime::parse::Runtime;
        let scope = self.scope(loops);
        let profiles = &self.config.profiles;
        let name = self.runtime_name(agent).ok_or_else(|| {
                "no runtime for this agent step: set `runtime:` on it, pass `--runtime claude|codex|gemini`, or set `default:` in runtimes.yaml".to_string()
            })?;
        let profile = profiles.resolve(&name);
        if agent.phase == orchestrate_lang::model::Phase::Full && !self.config.allow_full {
            return Err("phase `full` lets the agent do anything: it runs only with `--allow-full` on the run (inside a sandbox you trust)".into());
        }
        let prompt = self.agent_prompt(agent, &scope)?;
        let model = match &agent.model {
            Some(t) => Some(t.render(&scope).map_err(|e| format!("in `model`: {e}"))?),
            None => self
                .config
                .default_model
                .clone()
                .or_else(|| profile.model.clone()),
        };
        let runtime = Runtime::from_name(&profile.runtime);
        let step_env = self.step_env(step, loops)?;
        // What the CLI will run when told no model (codex never says): priced and recorded.
        let cli_default = match (runtime, &model) {
            (Some(runtime), None) => cli_default_model(runtime, &profile, &step_env),
            _ => None,
        };
        let mut run = AgentRun {
            runtime,
            name: name.clone(),
            model: model.clone(),
            cli_default,
            phase: agent.phase,
            notes: Vec::new(),
            previous_session: None,
            artifacts: agent.artifacts.clone(),
        };
        let resume_session = self.resumed_session(agent, &mut run)?;
        let Some(runtime) = run.runtime else {
            let argv = self.stand_in_argv(&profile, prompt, &model, &scope)?;
            return Ok((argv, profile.env.clone(), Vec::new(), run));
        };
        let scratch = self.scratch_dir(step, loops);
        let is_root = orchestrate_base::process::is_root();
        let invocation = adapter::build(&adapter::Request {
            runtime,
            bin: profile.bin.as_deref(),
            extra_args: &profile.args,
            model: model.as_deref(),
            phase: agent.phase,
            max_turns: agent.max_turns,
            resume_session: resume_session.as_deref(),
            allow_shell: &agent.allow_shell,
            workspace: self.config.code_dir(),
            scratch: &scratch,
            is_root,
            output_schema: step.output_schema.as_ref().map(|s| &s.schema),
        });
        lay_down(&invocation, &profile, &step_env)?;
        run.notes = invocation.notes;
        let mut env = invocation.env;
        // Which step and run an agent process serves (scripts, wrappers and `orchestrate test`'s
        // fixture answers use them).
        env.push(("ORCHESTRATE_STEP".into(), step.name.clone()));
        env.push(("ORCHESTRATE_RUN_ID".into(), self.state.run_id.clone()));
        // A profile's own GEMINI_CLI_HOME is the user's home the private one links to.
        env.extend(
            profile
                .env
                .iter()
                .filter(|(key, _)| invocation.gemini_home.is_none() || key != "GEMINI_CLI_HOME")
                .cloned(),
        );
        Ok((invocation.argv, env, prompt.into_bytes(), run))
    }

    /// The agent's prompt: its text, or the file it names, rendered.
    fn agent_prompt(
        &self,
        agent: &orchestrate_lang::model::AgentStep,
        scope: &Scope<'_>,
    ) -> Result<String, String> {
        use orchestrate_lang::model::Prompt;
        Ok(match &agent.prompt {
            Prompt::Text(t) => t.render(scope).map_err(|e| format!("in `prompt`: {e}"))?,
            Prompt::File(t) => {
                let rel = t
                    .render(scope)
                    .map_err(|e| format!("in `prompt_file`: {e}"))?;
                let path = fsutil::resolve_in_workspace(self.config.code_dir(), &rel)
                    .map_err(|e| format!("`prompt_file`: {e}"))?;
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read `prompt_file` {rel}: {e}"))?
            }
        })
    }

    /// The session an agent step's `resume:` continues, with the totals it stood at (into
    /// `run`).
    fn resumed_session(
        &self,
        agent: &orchestrate_lang::model::AgentStep,
        run: &mut AgentRun,
    ) -> Result<Option<String>, String> {
        Ok(match &agent.resume {
            Some(target) => {
                let previous = self
                    .results
                    .get(target)
                    .ok_or_else(|| format!("`resume: {target}`: step `{target}` has not run"))?;
                let session = previous.session_id.as_ref().and_then(Option::as_deref);
                let session = session.ok_or_else(|| {
                    format!("`resume: {target}`: step `{target}` recorded no session id")
                })?;
                run.previous_session = session_totals_before(&self.results, session);
                Some(session.to_string())
            }
            None => None,
        })
    }

    /// The argv of a provider template standing in for the agent.
    fn stand_in_argv(
        &self,
        profile: &orchestrate_runtime::profile::Profile,
        prompt: String,
        model: &Option<String>,
        scope: &Scope<'_>,
    ) -> Result<Vec<String>, String> {
        // A provider template (the offline stand-in, or a workflow's own): the prompt is its
        // `${PROMPT}`, the model its `${model}`.
        let template = self
            .workflow
            .providers
            .get(&profile.runtime)
            .ok_or_else(|| {
                format!(
                    "runtime `{}` is neither claude, codex, gemini nor a provider of this workflow",
                    profile.runtime
                )
            })?;
        let mut values: HashMap<String, String> = template.defaults.clone().into_iter().collect();
        values.insert("PROMPT".into(), prompt);
        if let Some(model) = &model {
            values.insert("model".into(), model.clone());
        }
        let layered = ProviderScope {
            values: &values,
            base: scope,
        };
        let mut argv = template
            .command
            .iter()
            .map(|t| {
                t.render(&layered)
                    .map_err(|e| format!("in provider `{}`: {e}", profile.runtime))
            })
            .collect::<Result<Vec<_>, _>>()?;
        argv.extend(template.model_args(values.get("model")));
        Ok(argv)
    }

    /// One private directory per invocation: the items of a fan-out run at once, and each
    /// lays down files (gemini's home, policy, output schema) the others must not race on.
    fn scratch_dir(&self, step: &Step, loops: &[LoopFrame]) -> PathBuf {
        let mut scratch = self.dir.root.join("scratch").join(&step.name);
        if !loops.is_empty() {
            let indices: Vec<String> = loops.iter().map(|frame| frame.index.to_string()).collect();
            scratch.push(format!("item-{}", indices.join("-")));
        }
        scratch
    }

    /// Who runs an agent step, first match wins: `--runtime`, the step's `runtime:`, the role's
    /// (the run's default provider), then `default:` of runtimes.yaml.
    pub(super) fn runtime_name(
        &self,
        agent: &orchestrate_lang::model::AgentStep,
    ) -> Option<String> {
        self.config
            .runtime_override
            .clone()
            .or_else(|| agent.runtime.clone())
            .or_else(|| self.config.default_provider.clone())
            .or_else(|| self.config.profiles.default.clone())
    }
}
