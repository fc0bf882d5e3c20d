//! `status`: where a run is now (the step in flight, its phase, pending approvals, retries and
//! usage-limit pauses, child runs, what ran last), as data and as text.
//!
//! Does not find or read runs (`locate`, `load`) or fold events (`fold`).

use super::analyze::{run_status, run_workflow};
use super::children::{ChildView, children_of};
use super::error::ObserveError;
use super::fold::{
    ApprovalWait, Execution, Facts, OpenStep, PauseWait, RetryWait, Tokens, exec_label, fold,
    parse_ts, seconds_between,
};
use super::format::{fmt_cost, fmt_time, fmt_tokens, seconds};
use super::load::{Loaded, load};
use super::locate::{RunLoc, TaskRuns, locate, newest_any_run};
use super::report_data::Failure;
use chrono::Utc;
use orchestrate_base::human;
use orchestrate_engine::state::RunDir;
use orchestrate_lang::model::StepKind;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

/// Where a run is now.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// Set when there is no run to show (and then nothing else is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) workflow: Option<String>,
    /// `running`, `succeeded`, `failed`, `interrupted`, or `stopped` (unfinished, engine gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// The innermost step in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) current: Option<OpenStep>,
    /// Its agent phase, when it is an agent step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) phase: Option<String>,
    /// Enclosing steps in progress (for_each loops), outermost first.
    pub(crate) within: Vec<OpenStep>,
    /// Other steps in progress at the same time: fan-out items besides the current one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) running_too: Vec<OpenStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) elapsed_sec: Option<f64>,
    /// Sums over finished steps.
    pub(crate) steps_finished: u32,
    pub(crate) cost_usd: f64,
    pub(crate) tokens: Tokens,
    pub(crate) unpriced: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) waiting_for_approval: Option<ApprovalWait>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retrying: Option<RetryWait>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) paused: Option<PauseWait>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_failure: Option<Failure>,
    pub(crate) resumes: u32,
    pub(crate) notes: Vec<String>,
    /// Child runs of the run's `workflow:` steps, in the order they started.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) children: Vec<ChildView>,
}

impl StatusView {
    fn empty(message: String) -> StatusView {
        StatusView {
            message: Some(message),
            run_id: None,
            path: None,
            workflow: None,
            status: None,
            error: None,
            current: None,
            phase: None,
            within: Vec::new(),
            running_too: Vec::new(),
            started_at: None,
            elapsed_sec: None,
            steps_finished: 0,
            cost_usd: 0.0,
            tokens: Tokens::default(),
            unpriced: 0,
            waiting_for_approval: None,
            retrying: None,
            paused: None,
            last_failure: None,
            resumes: 0,
            notes: Vec::new(),
            children: Vec::new(),
        }
    }

    /// The status as text for a terminal: the run, its open steps and what it waits on.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(message) = &self.message {
            let _ = writeln!(out, "{message}");
            return out;
        }
        let _ = write!(out, "run {}", self.run_id.as_deref().unwrap_or("?"));
        if let Some(workflow) = &self.workflow {
            let _ = write!(out, "  workflow {workflow}");
        }
        let _ = write!(out, "  {}", self.status.as_deref().unwrap_or("unknown"));
        if let Some(elapsed) = self.elapsed_sec {
            let _ = write!(out, "  {}", human::duration(seconds(elapsed)));
        }
        if self.resumes > 0 {
            let _ = write!(out, "  (resumed {}×)", self.resumes);
        }
        out.push('\n');
        self.render_now(&mut out);
        self.render_waits(&mut out);
        self.render_spent(&mut out);
        if let Some(failure) = &self.last_failure {
            let _ = writeln!(
                out,
                "last failure: {} (exec {}): {}",
                failure.step,
                exec_label(&failure.lane, failure.exec),
                failure.error
            );
        }
        if let Some(error) = &self.error {
            let _ = writeln!(out, "error: {error}");
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        for child in &self.children {
            let id = child.run_id.as_deref().unwrap_or("?");
            let now = match &child.now {
                Some(step) => format!(" at {step}"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "child: {} (workflow {}): run {id} {}{now}  (orchestrate status {id} | orchestrate logs {id})",
                child.step, child.workflow, child.status
            );
        }
        out
    }

    /// The step in flight, the loops it is in, and what else runs beside it.
    fn render_now(&self, out: &mut String) {
        if let Some(current) = &self.current {
            let mut line = format!("now: {} ({}", current.step, current.kind);
            if let Some(phase) = &self.phase {
                let _ = write!(line, ", {phase} phase");
            }
            if current.attempt > 1 {
                let _ = write!(line, ", attempt {}", current.attempt);
            }
            line.push(')');
            for open in &self.within {
                let index = open_index(current, open);
                let _ = write!(line, " in {}{index}", open.step);
            }
            if let Some(since) = parse_ts(&current.started_at) {
                let secs = (Utc::now() - since).num_milliseconds() as f64 / 1e3;
                let _ = write!(line, ", for {}", human::duration(seconds(secs.max(0.0))));
            }
            let _ = writeln!(out, "{line}");
            if !self.running_too.is_empty() {
                let others: Vec<String> = self
                    .running_too
                    .iter()
                    .map(|o| format!("{} (exec {})", o.step, exec_label(&o.lane, o.exec)))
                    .collect();
                let _ = writeln!(out, "running too: {}", others.join(", "));
            }
        }
    }

    /// What the run waits for: an approval, a retry, the end of a usage-limit pause.
    fn render_waits(&self, out: &mut String) {
        if let Some(wait) = &self.waiting_for_approval {
            let _ = writeln!(
                out,
                "waiting for approval of {} since {}: {}\n  {}\n  {}",
                wait.step,
                fmt_time(&wait.since),
                wait.message,
                wait.approve,
                wait.reject
            );
        }
        if let Some(retry) = &self.retrying {
            let _ = writeln!(
                out,
                "retrying {}: attempt {} failed{}, next in {}",
                retry.step,
                retry.failed_attempt,
                retry
                    .exit_code
                    .map(|c| format!(" (exit code {c})"))
                    .unwrap_or_default(),
                human::duration(seconds(retry.delay_sec))
            );
        }
        if let Some(pause) = &self.paused {
            let _ = writeln!(
                out,
                "paused {} ({}){}",
                pause.step,
                pause.reason,
                pause
                    .until
                    .as_ref()
                    .map(|u| format!(" until {u}"))
                    .unwrap_or_default()
            );
        }
    }

    /// The steps finished so far and what they spent.
    fn render_spent(&self, out: &mut String) {
        let spent = if self.cost_usd > 0.0 {
            format!(", cost {}", fmt_cost(self.cost_usd))
        } else if self.tokens.is_zero() && self.unpriced == 0 {
            "; no agent usage recorded".to_string()
        } else {
            ", cost unknown".to_string()
        };
        let _ = write!(
            out,
            "so far: {} step{} finished{spent}",
            self.steps_finished,
            if self.steps_finished == 1 { "" } else { "s" },
        );
        if self.unpriced > 0 {
            let _ = write!(out, " (+{} unpriced)", self.unpriced);
        }
        if !self.tokens.is_zero() {
            let _ = write!(
                out,
                ", tokens in {} / out {} / cache {}",
                fmt_tokens(self.tokens.input),
                fmt_tokens(self.tokens.output),
                fmt_tokens(self.tokens.cache())
            );
        }
        out.push('\n');
    }
}

/// " (item 2)" for a loop whose body holds `current`.
fn open_index(current: &OpenStep, open: &OpenStep) -> String {
    let depth = open.iteration.len();
    current
        .iteration
        .get(depth)
        .map(|i| format!(" (item {})", i + 1))
        .unwrap_or_default()
}

/// The status of run `run_id`, or of the newest run under `.orchestrate/runs/`. With no runs at
/// all, a view with only `message` set.
pub fn status(workspace: &Path, run_id: Option<&str>) -> Result<StatusView, ObserveError> {
    let view = match run_id {
        Some(id) => status_of(workspace, locate(workspace, id)?, Some(id))?,
        None => {
            let tasks = TaskRuns::count(workspace);
            let Some(loc) = newest_any_run(workspace) else {
                return Ok(StatusView::empty(format!(
                    "no runs yet in {} and no task runs in running/, processed/ or failed/; start one with `orchestrate run WORKFLOW` (or `orchestrate enqueue ROLE` in a swarm)",
                    RunDir::runs_dir(workspace).display()
                )));
            };
            let mut view = status_of(workspace, loc, None)?;
            if let Some(note) = tasks.note() {
                view.notes.push(note);
            }
            view
        }
    };
    Ok(view)
}

/// The status of the run at `loc` (`run_id`: how the user named it).
fn status_of(
    workspace: &Path,
    loc: RunLoc,
    run_id: Option<&str>,
) -> Result<StatusView, ObserveError> {
    let id = run_id.unwrap_or(&loc.name).to_string();
    let loaded = load(workspace, &loc).map_err(|reason| ObserveError::Unreadable {
        id,
        path: loc.root.clone(),
        reason,
    })?;
    let facts = fold(&loaded.events, &loaded.run_id);
    let (status, error) = run_status(&loaded, &facts);
    let running = status == "running";
    let mut open = if running {
        facts.open.clone()
    } else {
        Vec::new()
    };
    let current = open.pop();
    // Fan-out items run at once: of the other open steps, those of the current step's lane or
    // of a lane it descends from enclose it; the rest are its siblings, running too.
    let (open, running_too): (Vec<OpenStep>, Vec<OpenStep>) = open
        .into_iter()
        .partition(|o| current.as_ref().is_none_or(|c| c.lane.starts_with(&o.lane)));
    let phase = current
        .as_ref()
        .and_then(|c| agent_phase(workspace, &loaded, &facts, c));
    let (tokens, cost, unpriced, finished) = spent(&facts.executions);
    let started_at = facts
        .started_at
        .clone()
        .or_else(|| loaded.state.as_ref().map(|s| s.started_at.clone()));
    let elapsed_sec = started_at.as_deref().and_then(|from| {
        let to = match &facts.end {
            Some(end) => end.at.clone(),
            None if running => orchestrate_base::clock::now_rfc3339(),
            None => facts.last_ts.clone()?,
        };
        seconds_between(from, &to)
    });
    let last_failure = last_failure(&facts.executions);
    Ok(StatusView {
        message: None,
        run_id: Some(loaded.run_id.clone()),
        path: Some(loaded.loc.label(workspace)),
        workflow: facts
            .workflow_name
            .clone()
            .or_else(|| loaded.state.as_ref().map(|s| s.workflow_name.clone())),
        status: Some(status),
        error,
        current,
        phase,
        within: open,
        running_too,
        started_at,
        elapsed_sec,
        steps_finished: finished,
        cost_usd: cost,
        tokens,
        unpriced,
        waiting_for_approval: if running {
            facts.approval.clone()
        } else {
            None
        },
        retrying: if running { facts.retry.clone() } else { None },
        paused: if running { facts.paused.clone() } else { None },
        last_failure,
        resumes: facts.resumes,
        notes: {
            let mut notes = loaded.notes.clone();
            notes.extend(orchestrate_engine::worktree::describe_run(
                workspace,
                &loaded.run_id,
            ));
            notes
        },
        children: children_now(workspace, &loaded.events, running),
    })
}

/// The phase of `current`, an agent step: the last `phase_entered` since the start, else the one
/// the workflow gives the step.
fn agent_phase(
    workspace: &Path,
    loaded: &Loaded,
    facts: &Facts,
    current: &OpenStep,
) -> Option<String> {
    if current.kind != "agent" {
        return None;
    }
    facts.phase.clone().or_else(|| {
        // No phase_entered since the start: the phase the workflow gives the step.
        run_workflow(workspace, loaded).ok().and_then(|(w, _)| {
            match &w.find_step(&current.step)?.kind {
                StepKind::Agent(agent) => Some(agent.phase.label().to_string()),
                _ => None,
            }
        })
    })
}

/// What the finished executions spent: tokens, cost, executions without a price, and how many
/// finished (skipped ones not counted). A container's own numbers are its body's.
fn spent(executions: &[Execution]) -> (Tokens, f64, u32, u32) {
    let mut tokens = Tokens::default();
    let mut cost = 0.0;
    let mut unpriced = 0;
    let mut finished = 0;
    for e in executions.iter().filter(|e| !e.container) {
        tokens.add(&e.tokens);
        cost += e.cost_usd;
        unpriced += u32::from(e.unpriced);
        finished += u32::from(e.status != "skipped");
    }
    (tokens, cost, unpriced, finished)
}

/// The latest execution that failed or was rejected.
fn last_failure(executions: &[Execution]) -> Option<Failure> {
    executions
        .iter()
        .rev()
        .find(|e| matches!(e.status.as_str(), "failed" | "rejected"))
        .map(|e| Failure {
            step: e.step.clone(),
            exec: e.exec,
            lane: e.lane.clone(),
            status: e.status.clone(),
            error: e
                .error
                .clone()
                .unwrap_or_else(|| format!("exit code {}", e.exit_code.unwrap_or(1))),
            superseded: e.superseded,
        })
}

/// The child runs, each running one with the step it is at (its own running child's included).
fn children_now(workspace: &Path, events: &[Value], running: bool) -> Vec<ChildView> {
    children_of(workspace, events, running)
        .into_iter()
        .map(|mut child| {
            if child.status == "running"
                && let Some(id) = &child.run_id
                && let Ok(view) = self::status(workspace, Some(id))
            {
                child.now = view.current.map(|c| match view.children.last() {
                    Some(inner) if inner.status == "running" => match &inner.now {
                        Some(now) => format!("{} › {now}", c.step),
                        None => c.step.clone(),
                    },
                    _ => c.step.clone(),
                });
            }
            child
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Log, agent, failed, resumed_run, run_root};
    use super::*;
    use serde_json::json;
    use std::fs;

    #[test]
    fn status_shows_the_step_in_flight_its_phase_and_a_pending_approval() {
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path();
        let empty = status(ws, None).unwrap();
        assert!(
            empty.message.as_deref().unwrap().contains("no runs yet"),
            "{empty:?}"
        );
        assert!(empty.render().contains("orchestrate run WORKFLOW"));

        // An older finished run, and the newest one waiting for an approval.
        resumed_run(ws);
        let id = "20261124T120000Z-123456";
        let root = run_root(ws, id);
        let mut log = Log::new("2026-11-24T12:00:00Z");
        log.at(
            0.0,
            "run_started",
            json!({"run_id": id, "name": "ship", "pid": 1}),
        )
        .at(
            0.0,
            "phase_entered",
            json!({"step": "Plan", "phase": "plan", "from": null, "runtime": "claude"}),
        )
        .step(
            0.0,
            "Plan",
            1,
            &[],
            "agent",
            agent(30.0, "plan", 2000, 500, Some(0.25)),
        )
        .step(30.0, "Build", 2, &[], "command", failed(1.0, 2))
        .at(
            31.0,
            "step_started",
            json!({"step": "Approve", "exec": 3, "kind": "approval", "iteration": []}),
        )
        .at(
            31.0,
            "approval_requested",
            json!({"step": "Approve", "message": "Ship it?",
                "request": format!("approvals/{id}/Approve.request.json"), "artifacts": []}),
        );
        log.write(&root);
        fs::write(root.join("lock"), format!("{}\n", std::process::id())).unwrap();
        let view = status(ws, None).unwrap();
        assert_eq!(view.run_id.as_deref(), Some(id));
        assert_eq!(view.status.as_deref(), Some("running"));
        assert_eq!(view.current.as_ref().unwrap().step, "Approve");
        assert!(view.phase.is_none(), "an approval has no phase");
        let wait = view.waiting_for_approval.as_ref().unwrap();
        assert_eq!(wait.step, "Approve");
        assert_eq!(wait.approve, format!("orchestrate approve {id} Approve"));
        assert_eq!(view.steps_finished, 2);
        assert!((view.cost_usd - 0.25).abs() < 1e-9);
        assert_eq!(view.tokens.output, 500);
        assert_eq!(view.last_failure.as_ref().unwrap().step, "Build");
        let text = view.render();
        assert!(text.contains("waiting for approval of Approve"), "{text}");
        assert!(text.contains("orchestrate reject"), "{text}");

        // Decided and now in an agent step whose phase was entered earlier (same phase: no new
        // phase_entered event), inside a loop.
        log.at(
            40.0,
            "approval_decided",
            json!({"step": "Approve", "decision": {"decision": "approve"}}),
        )
        .finished(
            40.0,
            "Approve",
            3,
            &[],
            json!({"status": "succeeded", "exit_code": 0, "decision": "approve", "duration": 9.0}),
        )
        .at(
            40.0,
            "step_started",
            json!({"step": "Each", "exec": 4, "kind": "for_each", "iteration": []}),
        )
        .at(
            40.0,
            "iteration_started",
            json!({"step": "Each", "index": 1, "total": 3}),
        )
        .at(
            40.0,
            "step_started",
            json!({"step": "Review", "exec": 5, "kind": "agent", "iteration": [1]}),
        )
        .at(
            40.0,
            "process_started",
            json!({"step": "Review", "exec": 5, "attempt": 1, "argv": []}),
        )
        .at(
            41.0,
            "retry_scheduled",
            json!({"step": "Review", "exec": 5, "attempt": 1, "exit_code": 1, "delay": 2.0}),
        );
        log.write(&root);
        let view = status(ws, Some(id)).unwrap();
        assert!(view.waiting_for_approval.is_none());
        assert_eq!(view.current.as_ref().unwrap().step, "Review");
        assert_eq!(view.phase.as_deref(), Some("plan"));
        assert_eq!(view.within.len(), 1);
        assert_eq!(view.retrying.as_ref().unwrap().failed_attempt, 1);
        let text = view.render();
        assert!(
            text.contains("now: Review (agent, plan phase) in Each (item 2)"),
            "{text}"
        );
        assert!(
            text.contains("retrying Review: attempt 1 failed (exit code 1)"),
            "{text}"
        );

        // The engine died without an end: not "running".
        fs::write(root.join("lock"), "999999999\n").unwrap();
        let view = status(ws, Some(id)).unwrap();
        assert_eq!(view.status.as_deref(), Some("stopped"));
        assert!(
            view.error
                .as_deref()
                .unwrap()
                .contains("orchestrate resume"),
            "{view:?}"
        );
        assert!(view.current.is_none());

        // A finished run: no current step, its elapsed time from start to end.
        let view = status(ws, Some("20261120T100000Z-aaaaaa")).unwrap();
        assert_eq!(view.status.as_deref(), Some("succeeded"));
        assert!((view.elapsed_sec.unwrap() - 64.0).abs() < 1e-6);
        assert_eq!(view.resumes, 1);
        let err = status(ws, Some("nope")).unwrap_err();
        assert!(err.to_string().contains("there is no run `nope`"), "{err}");
    }
}
