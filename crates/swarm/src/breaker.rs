//! Circuit breakers, one per runtime (or runtimes.yaml profile), shared by every role process of
//! a workspace.
//!
//! Owns: the state files `.orchestrate/breakers/<runtime>.json` (read-modify-write under a
//! `flock` on `<runtime>.lock`), the classification of agent step results into successes,
//! breaker-relevant failure classes and neutral outcomes, the transitions (closed -> open after
//! N consecutive failures of one class, or at once until a usage limit's reset time; open ->
//! half-open after the cool-down; half-open lets one trial task through, whose success closes
//! and whose failure reopens with the cool-down doubled), the `breaker_*` records of the control
//! log, and the admission check role processes make before each claim (`Gate`). Does not run or
//! stop anything.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::control_log::{BreakerOpened, ControlEvent};
use orchestrate_engine::event::Event;
use orchestrate_engine::step_result::{StepError, StepResult, StepStatus};
use orchestrate_lang::model::{Role, StepKind, Workflow};
use orchestrate_queue::queue::Owner;
use orchestrate_runtime::profile::BreakerConfig;
use orchestrate_runtime::profile::Profiles;

/// The failure classes that open a breaker: the runtime (its API, login, binary), not the task,
/// is at fault. Anything else (max_turns, context_too_long, budget, phase_violation, ...) is
/// neutral: it neither counts nor resets the count.
pub(crate) const CLASSES: &[&str] = &[
    "rate_limit",
    "usage_limit",
    "server",
    "auth",
    "timeout",
    "bad_argv",
    "untrusted",
    "spawn_failed",
    "crash",
];

/// `.orchestrate/breakers/`.
pub(crate) fn dir(workspace: &Path) -> PathBuf {
    workspace.join(".orchestrate").join("breakers")
}

fn state_path(workspace: &Path, name: &str) -> PathBuf {
    dir(workspace).join(format!("{name}.json"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

/// The one task let through while half-open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Trial {
    pub(crate) pid: u32,
    pub(crate) pid_start: u64,
    pub(crate) boot_id: String,
    /// The role process (`role#replica`) that took it.
    pub(crate) by: String,
    pub(crate) since: String,
}

impl Trial {
    fn alive(&self) -> bool {
        orchestrate_base::process::alive(self.pid, self.pid_start, &self.boot_id)
    }

    fn mine(&self) -> bool {
        self.pid == std::process::id() && self.alive()
    }
}

/// A breaker's state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub(crate) struct State {
    pub(crate) runtime: String,
    pub(crate) state: Phase,
    /// The class of the failures being counted (or that opened it).
    pub(crate) class: Option<String>,
    /// Consecutive failures of `class`.
    pub(crate) consecutive: u32,
    pub(crate) opened_at: Option<String>,
    /// While open: when it half-opens (RFC 3339).
    pub(crate) until: Option<String>,
    /// The cool-down of the current or last opening, seconds.
    pub(crate) cooldown_sec: f64,
    /// Why it opened, in words.
    pub(crate) reason: Option<String>,
    pub(crate) trial: Option<Trial>,
    pub(crate) updated_at: String,
}

impl State {
    fn until(&self) -> Option<DateTime<Utc>> {
        self.until
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    }

    /// The phase as of now: an open breaker past its time is half-open.
    pub(crate) fn effective(&self) -> Phase {
        match self.state {
            Phase::Open if self.until().is_none_or(|u| u <= Utc::now()) => Phase::HalfOpen,
            phase => phase,
        }
    }

    /// "breaker open for claude: 5 consecutive rate_limit failures; half-opens at 12:34:56Z (in 42s)".
    pub(crate) fn describe(&self) -> String {
        let reason = self.reason.clone().unwrap_or_else(|| "failures".into());
        match self.effective() {
            Phase::Closed => format!("breaker closed for {}", self.runtime),
            Phase::Open => {
                let until = self.until().unwrap_or_else(Utc::now);
                let left = (until - Utc::now()).to_std().unwrap_or_default();
                format!(
                    "breaker open for {}: {reason}; half-opens at {} (in {}s)",
                    self.runtime,
                    until.format("%H:%M:%SZ"),
                    left.as_secs() + 1
                )
            }
            Phase::HalfOpen => match &self.trial {
                Some(trial) if trial.alive() => format!(
                    "breaker half-open for {}: {reason}; one trial task is running ({} since {})",
                    self.runtime, trial.by, trial.since
                ),
                _ => format!(
                    "breaker half-open for {}: {reason}; the next task is a trial",
                    self.runtime
                ),
            },
        }
    }
}

/// Reads a breaker's state (no lock: one atomic rename replaces it).
pub(crate) fn read(workspace: &Path, name: &str) -> Option<State> {
    let bytes = fs::read(state_path(workspace, name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Every breaker of the workspace that is not closed.
pub(crate) fn tripped(workspace: &Path) -> Vec<State> {
    let Ok(entries) = fs::read_dir(dir(workspace)) else {
        return Vec::new();
    };
    let mut out: Vec<State> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            let name = e.path().file_stem()?.to_string_lossy().into_owned();
            read(workspace, &name)
        })
        .filter(|s| s.state != Phase::Closed)
        .collect();
    out.sort_by(|a, b| a.runtime.cmp(&b.runtime));
    out
}

/// Runs `f` on the breaker's state under its lock; writes it back (atomically) if changed.
fn update<R>(workspace: &Path, name: &str, f: impl FnOnce(&mut State) -> R) -> std::io::Result<R> {
    let dir = dir(workspace);
    fs::create_dir_all(&dir)?;
    let lock: File = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{name}.lock")))?;
    lock.lock()?;
    let before = read(workspace, name).unwrap_or_else(|| State {
        runtime: name.to_string(),
        ..State::default()
    });
    let mut state = before.clone();
    let out = f(&mut state);
    if state != before {
        state.updated_at = orchestrate_base::clock::now_rfc3339();
        orchestrate_base::json_file::write(&state_path(workspace, name), &state, false)?;
    }
    drop(lock);
    Ok(out)
}

/// Every breaker state file of the workspace, as (runtime, its text, when it last changed): what
/// a role process on a shared database offers the other machines.
pub(crate) fn local_states(workspace: &Path) -> Vec<(String, String, String)> {
    let Ok(entries) = fs::read_dir(dir(workspace)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            let name = e.path().file_stem()?.to_string_lossy().into_owned();
            let text = fs::read_to_string(e.path()).ok()?;
            let state: State = serde_json::from_str(&text).ok()?;
            Some((name, text, state.updated_at))
        })
        .collect()
}

/// Takes the state of breaker `name` that another machine left (`text`, a state file) when it
/// is newer than this machine's: a runtime that fails there stops claims here too, and its
/// closing there lets them through. Its trial, a process of that machine, is not alive here.
/// True when the file changed.
pub(crate) fn adopt(workspace: &Path, name: &str, text: &str) -> bool {
    if orchestrate_base::ids::check_id(name).is_err() {
        return false;
    }
    let Ok(remote) = serde_json::from_str::<State>(text) else {
        return false;
    };
    let dir = dir(workspace);
    if fs::create_dir_all(&dir).is_err() {
        return false;
    }
    let Ok(lock) = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{name}.lock")))
    else {
        return false;
    };
    if lock.lock().is_err() {
        return false;
    }
    let newer = read(workspace, name).is_none_or(|local| local.updated_at < remote.updated_at);
    let written = newer
        && orchestrate_base::json_file::write(&state_path(workspace, name), &remote, false).is_ok();
    drop(lock);
    if written && remote.state != Phase::Closed {
        tracing::warn!(
            runtime = name,
            "{} (said by another machine)",
            remote.describe()
        );
    }
    written
}

/// What an agent step's result means to its runtime's breaker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Success,
    /// A failure of a breaker class; with the time its limit resets, when the CLI said.
    Failure {
        class: String,
        resets: Option<DateTime<Utc>>,
    },
    Neutral,
}

/// The breaker name (profile or runtime) and outcome of a `step_finished` result; `None` for
/// steps that are not agent steps.
pub(crate) fn classify(result: &StepResult) -> Option<(String, Outcome)> {
    use orchestrate_base::exec::Outcome as Exit;
    result.phase?;
    let name = result.profile.clone().or_else(|| result.runtime.clone())?;
    let outcome = match result.status {
        StepStatus::Succeeded => Outcome::Success,
        StepStatus::Failed => {
            let error = result.error.as_ref().and_then(StepError::classified);
            let kind = error.map_or("other", |e| e.kind.label());
            let class = match (kind, &result.outcome) {
                (_, Some(Exit::SpawnFailed { .. })) => "spawn_failed",
                (_, Some(Exit::TimedOut)) => "timeout",
                ("other", Some(Exit::Signaled { .. })) => "crash",
                ("other", _) if result.result.as_deref().is_none_or(str::is_empty) => "crash",
                (kind, _) => kind,
            };
            if CLASSES.contains(&class) {
                let resets = error
                    .and_then(|e| e.resets_at.clone().flatten())
                    .as_deref()
                    .and_then(orchestrate_runtime::parse::parse_reset_time)
                    .filter(|t| *t > Utc::now());
                Outcome::Failure {
                    class: class.to_string(),
                    resets,
                }
            } else {
                Outcome::Neutral
            }
        }
        _ => Outcome::Neutral,
    };
    Some((name, outcome))
}

/// Opens breaker `name` for `class` until `until`, and the control-log event that says so
/// (`by` the role process; no `failures` nor `reopened`: the caller adds what applies).
fn open(
    state: &mut State,
    name: &str,
    by: &str,
    class: &str,
    cooldown: Duration,
    until: DateTime<Utc>,
    reason: String,
) -> BreakerOpened {
    state.state = Phase::Open;
    state.class = Some(class.to_string());
    state.opened_at = Some(orchestrate_base::clock::now_rfc3339());
    state.until = Some(until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    state.cooldown_sec = cooldown.as_secs_f64();
    state.reason = Some(reason.clone());
    state.trial = None;
    BreakerOpened {
        runtime: name.to_string(),
        class: class.to_string(),
        reason,
        until: state.until.clone(),
        cooldown_sec: state.cooldown_sec,
        failures: None,
        reopened: None,
        by: by.to_string(),
    }
}

/// Records an agent step's outcome for breaker `name`; `by` names the role process.
pub(crate) fn record(
    workspace: &Path,
    name: &str,
    config: &BreakerConfig,
    outcome: &Outcome,
    by: &str,
) {
    if config.failures == 0 || *outcome == Outcome::Neutral {
        return;
    }
    let transition = update(workspace, name, |state| -> Option<ControlEvent> {
        let phase = state.effective();
        match outcome {
            Outcome::Failure {
                class,
                resets: Some(resets),
            } if state.until().is_none_or(|u| u < *resets) || phase != Phase::Open => {
                let cooldown = (*resets - Utc::now()).to_std().unwrap_or_default();
                state.consecutive += 1;
                let reason = format!("{class} until its reset time");
                Some(ControlEvent::BreakerOpened(open(
                    state, name, by, class, cooldown, *resets, reason,
                )))
            }
            Outcome::Success => match phase {
                Phase::Closed => {
                    state.consecutive = 0;
                    state.class = None;
                    None
                }
                Phase::Open => None,
                Phase::HalfOpen => {
                    let was = state.reason.take();
                    *state = State {
                        runtime: name.to_string(),
                        ..State::default()
                    };
                    Some(ControlEvent::BreakerClosed {
                        runtime: name.to_string(),
                        after: was,
                        by: by.to_string(),
                    })
                }
            },
            Outcome::Failure { class, .. } => match phase {
                Phase::Closed => {
                    if state.class.as_deref() == Some(class) {
                        state.consecutive += 1;
                    } else {
                        state.class = Some(class.clone());
                        state.consecutive = 1;
                    }
                    if state.consecutive < config.failures {
                        return None;
                    }
                    let reason = format!("{} consecutive {class} failures", state.consecutive);
                    let until = Utc::now()
                        + chrono::Duration::from_std(config.cooldown).unwrap_or_default();
                    Some(ControlEvent::BreakerOpened(BreakerOpened {
                        failures: Some(state.consecutive),
                        ..open(state, name, by, class, config.cooldown, until, reason)
                    }))
                }
                Phase::Open => None,
                Phase::HalfOpen => {
                    let previous = Duration::from_secs_f64(state.cooldown_sec.max(0.0));
                    let cooldown = if previous.is_zero() {
                        config.cooldown
                    } else {
                        (previous * 2).min(config.max_cooldown.max(config.cooldown))
                    };
                    let until =
                        Utc::now() + chrono::Duration::from_std(cooldown).unwrap_or_default();
                    let reason = format!("the half-open trial failed ({class})");
                    state.consecutive += 1;
                    Some(ControlEvent::BreakerOpened(BreakerOpened {
                        reopened: Some(true),
                        ..open(state, name, by, class, cooldown, until, reason)
                    }))
                }
            },
            Outcome::Neutral => None,
        }
    });
    if let Ok(Some(event)) = transition {
        log_transition(name, &event);
        crate::control_log::log_event(workspace, &event);
    }
}

/// A transition as a log event of the role process that made it: an opening is a warning.
fn log_transition(name: &str, event: &ControlEvent) {
    let fields = event.fields();
    let event = event.name();
    if event == "breaker_opened" {
        tracing::warn!(runtime = name, event = %event, fields = %fields, "breaker {name}: {event}");
    } else {
        tracing::info!(runtime = name, event = %event, fields = %fields, "breaker {name}: {event}");
    }
}

/// Whether a role process may start a task that uses breaker `name`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Admission {
    /// Closed: go.
    Admit,
    /// Half-open: go, as the one trial (end it with `end_trial` if no result settles it).
    Trial,
    /// Open, or half-open with a trial already running: wait (until `until`, when known).
    Deny {
        reason: String,
        until: Option<DateTime<Utc>>,
    },
}

/// Asks breaker `name` to let one task through.
pub(crate) fn admit(workspace: &Path, name: &str, by: &str) -> Admission {
    // Fast path without the lock: nearly always closed.
    match read(workspace, name) {
        None => return Admission::Admit,
        Some(state) if state.state == Phase::Closed => return Admission::Admit,
        Some(state) if state.effective() == Phase::Open => {
            return Admission::Deny {
                reason: state.describe(),
                until: state.until(),
            };
        }
        Some(_) => {}
    }
    let result = update(
        workspace,
        name,
        |state| -> (Admission, Option<ControlEvent>) {
            let mut event = None;
            match state.effective() {
                Phase::Closed => return (Admission::Admit, None),
                Phase::Open => {
                    return (
                        Admission::Deny {
                            reason: state.describe(),
                            until: state.until(),
                        },
                        None,
                    );
                }
                Phase::HalfOpen => {}
            }
            if state.state == Phase::Open {
                state.state = Phase::HalfOpen;
                event = Some(ControlEvent::BreakerHalfOpen {
                    runtime: name.to_string(),
                    after: state.reason.clone(),
                    cooldown_sec: state.cooldown_sec,
                });
            }
            if let Some(trial) = &state.trial
                && trial.alive()
            {
                return (
                    Admission::Deny {
                        reason: state.describe(),
                        until: None,
                    },
                    event,
                );
            }
            let me = Owner::current();
            state.trial = Some(Trial {
                pid: me.pid,
                pid_start: me.pid_start,
                boot_id: me.boot_id,
                by: by.to_string(),
                since: orchestrate_base::clock::now_rfc3339(),
            });
            (Admission::Trial, event)
        },
    );
    match result {
        Ok((admission, event)) => {
            if let Some(event) = event {
                log_transition(name, &event);
                crate::control_log::log_event(workspace, &event);
            }
            admission
        }
        // A breaker that cannot be read must not stop the swarm: let the task through.
        Err(_) => Admission::Admit,
    }
}

/// Gives back a trial this process holds that no result settled (its task never reached the
/// runtime, or was not claimed after all), so that another task can be the trial.
pub(crate) fn end_trial(workspace: &Path, name: &str) {
    let _ = update(workspace, name, |state| {
        if state.state == Phase::HalfOpen && state.trial.as_ref().is_some_and(Trial::mine) {
            state.trial = None;
        }
    });
}

/// The breaker names (runtimes or profiles) a role's agent steps may run on: the step's
/// `runtime`, else the role's, else runtimes.yaml's `default`.
pub(crate) fn role_runtimes(role: &Role, workflow: &Workflow, profiles: &Profiles) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for step in workflow.all_steps() {
        if let StepKind::Agent(agent) = &step.kind
            && let Some(name) = agent
                .runtime
                .clone()
                .or_else(|| role.runtime.clone())
                .or_else(|| profiles.default.clone())
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

/// A role process's view of its runtimes' breakers.
pub(crate) struct Gate {
    workspace: PathBuf,
    names: Vec<String>,
    label: String,
}

impl Gate {
    pub(crate) fn new(workspace: &Path, names: Vec<String>, label: &str) -> Gate {
        Gate {
            workspace: workspace.to_path_buf(),
            names,
            label: label.to_string(),
        }
    }

    /// Before a claim: `Ok(trials taken)` to go ahead, `Err((why, until))` to wait.
    pub(crate) fn admit(&self) -> Result<Vec<String>, (String, Option<DateTime<Utc>>)> {
        let mut trials = Vec::new();
        for name in &self.names {
            match admit(&self.workspace, name, &self.label) {
                Admission::Admit => {}
                Admission::Trial => trials.push(name.clone()),
                Admission::Deny { reason, until } => {
                    self.release(&trials);
                    return Err((reason, until));
                }
            }
        }
        Ok(trials)
    }

    pub(crate) fn release(&self, trials: &[String]) {
        for name in trials {
            end_trial(&self.workspace, name);
        }
    }
}

/// Feeds a run's events to the breakers: agent `step_finished` results, and usage-limit pauses
/// (which open the runtime's breaker until the limit resets, so the swarm waits with the step).
pub(crate) fn observe(workspace: &Path, profiles: &Profiles, by: &str, event: &Event) {
    match event {
        Event::StepFinished(finished) => {
            if let Some((name, outcome)) = classify(&finished.result) {
                record(workspace, &name, &profiles.breaker(&name), &outcome, by);
            }
        }
        Event::Paused(paused) if paused.reason == "usage_limit" => {
            let Some(name) = paused.runtime.as_deref() else {
                return;
            };
            let resets = DateTime::parse_from_rfc3339(&paused.until)
                .ok()
                .map(|t| t.with_timezone(&Utc));
            let outcome = Outcome::Failure {
                class: "usage_limit".into(),
                resets,
            };
            record(workspace, name, &profiles.breaker(name), &outcome, by);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failed(kind: &str) -> StepResult {
        serde_json::from_value(json!({"status": "failed", "phase": "readonly", "runtime": "claude", "profile": "claude", "error": {"kind": kind, "message": "x"}, "outcome": {"kind": "exited", "code": 1}, "result": "x"})).unwrap()
    }

    #[test]
    fn classes() {
        assert_eq!(
            classify(&failed("rate_limit")),
            Some((
                "claude".into(),
                Outcome::Failure {
                    class: "rate_limit".into(),
                    resets: None
                }
            ))
        );
        assert_eq!(
            classify(&failed("max_turns")).map(|x| x.1),
            Some(Outcome::Neutral)
        );
        assert_eq!(classify(&StepResult::failed(1, "x")), None);
        let ok = StepResult {
            phase: Some(orchestrate_lang::model::Phase::Write),
            runtime: Some("fake".into()),
            ..StepResult::succeeded()
        };
        assert_eq!(classify(&ok), Some(("fake".into(), Outcome::Success)));
    }

    #[test]
    fn opens_after_n_then_half_opens_and_closes() {
        let ws = tempfile::tempdir().unwrap();
        let config = BreakerConfig {
            failures: 3,
            cooldown: Duration::from_millis(1),
            max_cooldown: Duration::from_secs(10),
        };
        let fail = |c: &str| Outcome::Failure {
            class: c.into(),
            resets: None,
        };
        record(ws.path(), "claude", &config, &fail("rate_limit"), "t");
        record(ws.path(), "claude", &config, &fail("auth"), "t");
        record(ws.path(), "claude", &config, &fail("rate_limit"), "t");
        record(ws.path(), "claude", &config, &fail("rate_limit"), "t");
        assert_eq!(read(ws.path(), "claude").unwrap().state, Phase::Closed);
        record(ws.path(), "claude", &config, &fail("rate_limit"), "t");
        let state = read(ws.path(), "claude").unwrap();
        assert_eq!(state.state, Phase::Open);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(admit(ws.path(), "claude", "t"), Admission::Trial);
        assert!(matches!(
            admit(ws.path(), "claude", "t"),
            Admission::Deny { .. }
        ));
        record(ws.path(), "claude", &config, &fail("rate_limit"), "t");
        let state = read(ws.path(), "claude").unwrap();
        assert_eq!(state.state, Phase::Open);
        assert!(state.cooldown_sec > 0.0019 && state.cooldown_sec < 0.0021);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(admit(ws.path(), "claude", "t"), Admission::Trial);
        record(ws.path(), "claude", &config, &Outcome::Success, "t");
        assert_eq!(read(ws.path(), "claude").unwrap().state, Phase::Closed);
        assert_eq!(admit(ws.path(), "claude", "t"), Admission::Admit);
        let log: Vec<&str> = crate::control_log::read_log(ws.path())
            .iter()
            .map(ControlEvent::name)
            .collect();
        assert_eq!(
            log,
            [
                "breaker_opened",
                "breaker_half_open",
                "breaker_opened",
                "breaker_half_open",
                "breaker_closed"
            ]
        );
    }

    #[test]
    fn a_reset_time_opens_at_once_until_then() {
        let ws = tempfile::tempdir().unwrap();
        let resets = Utc::now() + chrono::Duration::seconds(600);
        let outcome = Outcome::Failure {
            class: "usage_limit".into(),
            resets: Some(resets),
        };
        record(ws.path(), "codex", &BreakerConfig::default(), &outcome, "t");
        let state = read(ws.path(), "codex").unwrap();
        assert_eq!(state.effective(), Phase::Open);
        assert!(
            state
                .describe()
                .contains("usage_limit until its reset time")
        );
        match admit(ws.path(), "codex", "t") {
            Admission::Deny { until, .. } => {
                assert!((until.unwrap() - resets).num_milliseconds().abs() < 5)
            }
            other => panic!("{other:?}"),
        }
    }
}
