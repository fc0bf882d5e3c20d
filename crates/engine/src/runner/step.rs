//! Process steps (`command`, `provider`, agent): the attempts loop with its logs, pauses at usage
//! limits, retries and their delays, and the classification of a provider CLI's failure.
//!
//! Does not build argv (`prepare`, `agent`), spawn processes (`orchestrate_base::exec`) nor parse
//! agent output (`agent`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::agent::AgentRun;
use super::capture::capture;
use super::phase::WriteGuard;
use super::prepare::Prepared;
use super::{JSON_LIMIT_BYTES, KILL_GRACE, LINES_BYTES_LIMIT, LoopFrame, Runner, TEXT_KEEP_BYTES};
use crate::event::{self, Event};
use crate::step_result::{ClassifiedError, ErrorKind, StepError, StepResult, StepStatus};
use orchestrate_base::exec::{self, Outcome};
use orchestrate_lang::model::{Capture, Step, StepKind};

/// A provider step whose program is an agent CLI (`codex exec PROMPT`, `gemini -p PROMPT`)
/// and whose failure the CLI's words or exit code classify (an untrusted directory, missing
/// credentials, a rate limit): its error gets the class and the CLI's message, and so the
/// hint of what to do, where `exited with code N` said nothing. An unexplained exit keeps the
/// plain message and the provider retry rules.
fn classify_provider_failure(
    argv: &[String],
    finished: &exec::Finished,
    stderr_log: &Path,
    result: &mut StepResult,
) {
    let Outcome::Exited { code } = finished.outcome else {
        return;
    };
    let Some(runtime) = argv
        .first()
        .and_then(|program| Path::new(program).file_name())
        .and_then(|name| name.to_str())
        .and_then(orchestrate_runtime::parse::Runtime::from_name)
    else {
        return;
    };
    let stderr = orchestrate_queue::record::stderr_tail(stderr_log).unwrap_or_default();
    let stdout = String::from_utf8_lossy(&finished.stdout);
    let Some(error) =
        orchestrate_runtime::parse::classify_text_failure(runtime, &stdout, &stderr, code)
    else {
        return;
    };
    let message = format!(
        "{} exited with code {code}: {}",
        runtime.name(),
        error.message
    );
    result.error = Some(StepError::Classified(ClassifiedError {
        message,
        runtime: Some(runtime.name().to_string()),
        ..ClassifiedError::from(error)
    }));
}

/// What to tell the user for an error class that retrying cannot fix.
fn error_hint(kind: &str, runtime: &str) -> Option<String> {
    let login = match runtime {
        "claude" => "run `claude` once to log in, or set ANTHROPIC_API_KEY",
        "codex" => "run `codex login`, or set OPENAI_API_KEY",
        "gemini" => "set GEMINI_API_KEY (or log in with `gemini`)",
        _ => "log the CLI in",
    };
    Some(match kind {
        "auth" => format!("{runtime} is not authenticated: {login}"),
        "bad_argv" => format!(
            "{runtime} rejected the arguments orchestrate built; check that the installed version is supported (`{runtime} --version`)"
        ),
        "untrusted" => match runtime {
            "codex" => "codex runs only inside a git repository unless told otherwise: pass `--skip-git-repo-check` after `exec` (the built-in `codex` template does), or make the workspace a git repository (`git init`)".into(),
            "gemini" => "gemini does not trust this folder: pass `--skip-trust` (the built-in `gemini` template does), set GEMINI_CLI_TRUST_WORKSPACE=true in the step's `env:`, or trust the folder once in an interactive `gemini`".into(),
            _ => format!(
                "{runtime} does not trust this directory; run it once here interactively, or pass its trust flag"
            ),
        },
        "context_too_long" => {
            "the prompt is too long for the model: shorten it or split the step".into()
        }
        "max_turns" => "the agent ran out of turns: raise `max_turns` or narrow the task".into(),
        "budget" => "the agent hit its spending limit".into(),
        _ => return None,
    })
}

/// One attempt of a process step, as it ended.
struct Attempt {
    result: StepResult,
    /// The limit the attempt crossed, if one stopped it.
    crossing: Option<crate::budget::Crossing>,
    /// The engine's write of the step's `output_file`, registered until the attempt's retry
    /// decision is made.
    _writing: Option<WriteGuard>,
}

/// What the retry rules say about a failed attempt.
enum Next {
    /// The result stands (the last attempt, or not worth another).
    Done,
    /// Another attempt after this delay.
    Retry(Duration),
}

impl Runner {
    /// A `command` or `provider` step: compose argv, run with retries, capture output.
    pub(super) async fn process_step(
        &mut self,
        step: &Step,
        exec: u64,
        loops: &[LoopFrame],
    ) -> StepResult {
        let prepared = match self.prepare(step, loops) {
            Ok(p) => p,
            Err(message) => return StepResult::failed(2, message),
        };
        if let Some(run) = &prepared.agent {
            self.enter_phase(step, run);
        }
        // Agent steps retry on their error class (rate limits, 5xx, timeouts) up to 3 attempts
        // unless the step says otherwise.
        let max_attempts = if prepared.agent.is_some() && !step.retry.explicit {
            3
        } else {
            step.retry.max_attempts
        };
        let mut attempt = 1;
        let mut pauses = 0;
        loop {
            let Attempt {
                mut result,
                crossing,
                _writing,
            } = self
                .attempt(step, exec, &prepared, attempt, max_attempts, pauses)
                .await;
            if let Some(crossing) = crossing {
                self.budget_stopped(step, &crossing, &mut result);
                return result;
            }
            let code = result.exit_code.unwrap_or(1);
            let succeeded = result.status == StepStatus::Succeeded;
            if succeeded || self.config.cancel.is_cancelled() {
                return result;
            }
            let kind = result.error.as_ref().and_then(StepError::kind);
            // A usage limit with a reset time pauses the step until then (not an attempt).
            if kind
                == Some(&ErrorKind::Known(
                    orchestrate_runtime::parse::ErrorKind::UsageLimit,
                ))
                && pauses < 3
            {
                pauses += 1;
                if !self.pause_at_usage_limit(step, exec, &result).await {
                    return result;
                }
                continue;
            }
            let delay = match self.next_attempt(step, attempt, max_attempts, &mut result) {
                Next::Done => return result,
                Next::Retry(delay) => delay,
            };
            let _ = self.event(
                Event::RetryScheduled(event::RetryScheduled {
                    step: step.name.clone(),
                    exec,
                    attempt,
                    exit_code: i64::from(code),
                    delay: delay.as_secs_f64(),
                }),
                false,
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.config.cancel.cancelled() => return result,
            }
            attempt += 1;
        }
    }

    /// Records an agent step's phase when it differs from the last one, and its runtime's notes.
    fn enter_phase(&mut self, step: &Step, run: &AgentRun) {
        if self.last_phase != Some(run.phase) {
            let _ = self.event(
                Event::PhaseEntered(event::PhaseEntered {
                    step: step.name.clone(),
                    phase: run.phase,
                    from: self.last_phase,
                    runtime: run.name.clone(),
                }),
                false,
            );
            self.last_phase = Some(run.phase);
        }
        for note in &run.notes {
            let _ = self.event(
                Event::RuntimeNote(event::RuntimeNote {
                    step: step.name.clone(),
                    runtime: run.name.clone(),
                    note: note.clone(),
                }),
                false,
            );
        }
    }

    /// The stdout and stderr logs of one attempt.
    fn attempt_logs(
        &self,
        step: &Step,
        exec: u64,
        attempt: u32,
        pauses: u32,
    ) -> (PathBuf, PathBuf) {
        let mut suffix = if attempt > 1 {
            format!(".{attempt}")
        } else {
            String::new()
        };
        if pauses > 0 {
            // The answer that caused a pause keeps its log.
            suffix.push_str(&format!(".p{pauses}"));
        }
        if self.state.resumes > 0 {
            // Execution numbers repeat on resume: keep the earlier attempt's logs.
            suffix.push_str(&format!(".r{}", self.state.resumes));
        }
        // A fan-out item's logs carry its lane, so each item's output is its own file.
        let base = format!(
            "{}{exec:04}-{}{suffix}",
            crate::state::log_prefix(&self.lane),
            step.name
        );
        let stdout_log = self.dir.logs().join(format!("{base}.stdout"));
        let stderr_log = self.dir.logs().join(format!("{base}.stderr"));
        (stdout_log, stderr_log)
    }

    /// What `exec` runs for one attempt.
    fn process_spec(
        &self,
        step: &Step,
        prepared: &Prepared,
        stdout_log: &Path,
        stderr_log: &Path,
    ) -> exec::Spec {
        let limit = match step.capture {
            Capture::Text => TEXT_KEEP_BYTES,
            Capture::Json => JSON_LIMIT_BYTES + 1,
            Capture::Lines => LINES_BYTES_LIMIT,
        };
        exec::Spec {
            argv: prepared.argv.clone(),
            env: prepared.env.clone(),
            env_remove: prepared.env_remove.clone(),
            cwd: self.config.code_dir().to_path_buf(),
            stdin: match &prepared.stdin {
                Some(bytes) => exec::Stdin::Bytes(bytes.clone()),
                None => exec::Stdin::Null,
            },
            stdout_log: stdout_log.to_path_buf(),
            stderr_log: stderr_log.to_path_buf(),
            stdout_file: prepared.output_file.clone(),
            capture_limit: limit,
            timeout: step.timeout,
            idle_timeout: step.idle_timeout.or(match &prepared.agent {
                Some(_) => self.config.default_idle_timeout,
                None => None,
            }),
            stdout_lines: None,
            stop: None,
            kill_grace: KILL_GRACE,
            secrets: self.secret_values.clone(),
            inherit_fds: self.config.inherit_fds.clone(),
        }
    }

    /// Runs one attempt of a process step and captures its result: logs, the readonly check,
    /// what it spent.
    async fn attempt(
        &mut self,
        step: &Step,
        exec: u64,
        prepared: &Prepared,
        attempt: u32,
        max_attempts: u32,
        pauses: u32,
    ) -> Attempt {
        let (stdout_log, stderr_log) = self.attempt_logs(step, exec, attempt, pauses);
        let spec = self.process_spec(step, prepared, &stdout_log, &stderr_log);
        if attempt > 1 {
            self.progress(&format!("↻ {} attempt {attempt}/{max_attempts}", step.name));
        }
        // The engine's own write of the output file is not the step's change (nor a
        // fan-out sibling's change to this step's workspace).
        let _writing = prepared
            .output_file
            .as_ref()
            .and_then(|path| self.engine_writes.begin(self.config.code_dir(), path));
        let before = match &prepared.agent {
            Some(run) if run.phase.verified_readonly() => {
                let window = self.engine_writes.window(self.config.code_dir());
                Some(self.fingerprint(run).map(|snapshot| (snapshot, window)))
            }
            _ => None,
        };
        let _ = self.event(
            Event::ProcessStarted(event::ProcessStarted {
                step: step.name.clone(),
                exec,
                attempt,
                argv: prepared.argv.clone(),
            }),
            false,
        );
        let (finished, crossing) = self.run_watched(spec, prepared.agent.as_ref()).await;
        let mut result = match &prepared.agent {
            Some(run) => self.agent_capture(step, &finished, run, &stdout_log, &stderr_log),
            None => {
                let mut result = capture(step, &finished);
                if matches!(step.kind, StepKind::Provider { .. }) {
                    classify_provider_failure(&prepared.argv, &finished, &stderr_log, &mut result);
                }
                result
            }
        };
        self.budget.count(&result);
        if let (Some(Ok((before, window))), Some(run)) = (before, &prepared.agent) {
            let cgroup = finished.cgroup.as_deref();
            self.verify_unchanged(step, run, &before, window, cgroup, &mut result);
        }
        result.attempts = Some(attempt);
        // Logs exist only for streams the process wrote to.
        let written = |logged: bool, path: &Path| logged.then(|| self.relative(path));
        result.stdout_log = written(finished.logged.0, &stdout_log);
        result.stderr_log = written(finished.logged.1, &stderr_log);
        if let Some(file) = &prepared.output_file {
            result.output_file = Some(self.relative(file));
        }
        if let Some(pid) = finished.pid {
            result.pid = Some(pid);
        }
        Attempt {
            result,
            crossing,
            _writing,
        }
    }

    /// Waits until a usage limit resets (at most 6 hours; 5 minutes when it gave no time).
    /// `false`: the run was cancelled meanwhile.
    async fn pause_at_usage_limit(&mut self, step: &Step, exec: u64, result: &StepResult) -> bool {
        let resets_at = result
            .error
            .as_ref()
            .and_then(StepError::classified)
            .and_then(|e| e.resets_at.clone().flatten());
        let until = resets_at
            .as_deref()
            .and_then(orchestrate_runtime::parse::parse_reset_time);
        let wait = until
            .map(|t| (t - chrono::Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(300))
            .min(Duration::from_secs(6 * 3600));
        let until = chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        let paused = event::Paused {
            step: step.name.clone(),
            exec,
            runtime: result.profile.clone().or_else(|| result.runtime.clone()),
            reason: "usage_limit".into(),
            until: until.to_rfc3339(),
            resets_at,
        };
        let _ = self.event(Event::Paused(paused), true);
        self.progress(&format!(
            "⏸ {} hit a usage limit; paused {:.0}s until it resets",
            step.name,
            wait.as_secs_f64()
        ));
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = self.config.cancel.cancelled() => false,
        }
    }

    /// Whether a failed attempt is tried again, and after what delay; a final failure of a
    /// class retrying cannot fix gets the hint of what to do in its message.
    fn next_attempt(
        &self,
        step: &Step,
        attempt: u32,
        max_attempts: u32,
        result: &mut StepResult,
    ) -> Next {
        let code = result.exit_code.unwrap_or(1);
        let kind = result
            .error
            .as_ref()
            .and_then(StepError::kind)
            .map(|k| k.label().to_string());
        let is_provider = matches!(step.kind, StepKind::Provider { .. });
        let retryable = |code: i32| match &step.retry.on_exit_codes {
            Some(codes) => codes.contains(&code),
            None if is_provider => code == 1 || code == 124,
            None => code != 0 && code != 130,
        };
        let worth_retrying = match kind.as_deref() {
            // Transient: the API or the clock, not the request.
            Some("rate_limit" | "server" | "timeout") => step
                .retry
                .on_exit_codes
                .as_ref()
                .is_none_or(|c| c.contains(&code)),
            // The request itself is wrong: another attempt gives the same answer.
            Some(_) => false,
            None => retryable(code),
        };
        if attempt >= max_attempts || !worth_retrying {
            if let Some(hint) = kind.as_deref().and_then(|k| {
                // A provider step's error names the CLI (`classify_provider_failure`).
                let runtime = result.runtime.as_deref().or(result
                    .error
                    .as_ref()
                    .and_then(StepError::classified)
                    .and_then(|e| e.runtime.as_deref()));
                error_hint(k, runtime.unwrap_or(""))
            }) && let Some(StepError::Classified(error)) = &mut result.error
            {
                error.message = format!("{}; {hint}", error.message);
            }
            return Next::Done;
        }
        let base = if kind.as_deref() == Some("rate_limit") {
            step.retry.delay.max(Duration::from_secs(5))
        } else {
            step.retry.delay
        };
        Next::Retry(base.mul_f64(step.retry.backoff.powi(attempt as i32 - 1)))
    }
}
