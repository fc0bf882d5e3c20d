//! One attempt of one task: the run of the role's workflow for it.
//!
//! Owns: the run's configuration (variables, budgets, capabilities, the task's lock kept open),
//! the task's worktree under `isolation: worktree`, the heartbeat and `task_timeout` while it
//! runs, telling a cancel from a shutdown, and the spending appended to the ledger. Hands the
//! outcome to `finish` for status.json and the move. Does not claim (`dispatch`).

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use orchestrate_engine::runner::{RunConfig, RunReport, Runner};
use orchestrate_engine::state::RunStatus;
use orchestrate_queue::queue::{Claim, LeaseCheck};

use super::finish::{Finished, finish, status_json};
use super::log::say;
use super::shared::{Shared, Slot};
use super::task_vars::task_vars;

/// One attempt of one task: run the workflow, write status.json, move the task directory.
pub(super) async fn run_task(
    shared: Arc<Shared>,
    mut claim: Claim,
    cancel: CancellationToken,
    slot: Slot,
) -> Finished {
    let started = Instant::now();
    let started_at = orchestrate_base::clock::now_rfc3339();
    let id = claim.id.clone();
    let (vars, correlation_id) = task_vars(&shared, &claim);
    // A JSON task's `branch`: the branch a role before this one handed on (its worktree
    // starts from it).
    let from = vars
        .get("json")
        .and_then(|json| json.get("branch"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string);
    let mut config = run_config(&shared, &claim, vars, correlation_id.clone(), &cancel);
    // A worktree that cannot be made, or a run that cannot start, fails the attempt like a
    // failed run (exit code 1, no report).
    let (worktree, started_run) = match worktree(&shared, &claim, from.as_deref()).await {
        Err(message) => (None, Err(message)),
        Ok(worktree) => {
            config.checkout = worktree.as_ref().map(|w| w.checkout.clone());
            config.branch = worktree.as_ref().map(|w| w.branch.clone());
            let runner = Runner::create((*shared.workflow).clone(), &shared.workflow_text, config)
                .map_err(|err| format!("failed to start the run: {err}"));
            (worktree, runner)
        }
    };
    let (outcome, ending) = match started_run {
        Ok(runner) => drive(&shared, &mut claim, runner, &cancel).await,
        Err(message) => (Err(message), Ending::Ran),
    };
    drop(slot);
    if let Ending::Fenced(reason) = ending {
        // The lease is lost: its processes are stopped, and its result would be refused.
        if let Ok(report) = &outcome {
            ledger(&shared, &claim, report);
        }
        let attempt = claim.attempt;
        let done = shared.queue.give_up(claim, &reason);
        say!(
            always &shared.log,
            WARN,
            task = %id,
            attempt,
            "gave up attempt {attempt} of `{id}`: {reason}; its processes were stopped and the queue runs it again{}",
            done.err().map(|e| format!(" (setting its files aside failed: {e})")).unwrap_or_default()
        );
        if let Some(metrics) = &shared.metrics {
            metrics.finished("released", None);
        }
        return Finished {
            id,
            outcome: "given up",
        };
    }
    let timed_out = ending == Ending::TimedOut;
    // Stopped by `orchestrate cancel`: failed/, not back to the inbox, never retried.
    let cancelled = match &outcome {
        Ok(report) if report.status == RunStatus::Interrupted && !timed_out => {
            orchestrate_queue::cancel::run_cancel(&claim.run_root())
        }
        _ => None,
    };
    let (report, success, exit_code, message) = match (outcome, &cancelled) {
        (Ok(report), Some(request)) => {
            let message = format!(
                "{}; not retried (`orchestrate retry {id}` queues it again)",
                request.describe()
            );
            let code = i32::from(orchestrate_engine::runner::exit::INTERRUPTED);
            (Some(report), false, code, message)
        }
        (Ok(report), None) if report.status == RunStatus::Interrupted && !timed_out => {
            ledger(&shared, &claim, &report);
            // Stopped by our own shutdown: not the task's fault, so it goes back uncharged.
            say!(
                &shared.log,
                INFO,
                task = %id,
                attempt = claim.attempt,
                run_id = %report.run_id,
                "`{id}` stopped by shutdown; back in the inbox",
            );
            let _ = shared
                .queue
                .release(claim, "stopped by the worker's shutdown");
            if let Some(metrics) = &shared.metrics {
                metrics.finished("released", None);
            }
            return Finished {
                id,
                outcome: "released",
            };
        }
        (Ok(report), None) => {
            ledger(&shared, &claim, &report);
            let success = report.status == RunStatus::Succeeded;
            let message = if timed_out {
                format!(
                    "timed out after {:?} (task_timeout_sec); its processes were stopped",
                    shared.role.task_timeout.unwrap_or_default()
                )
            } else {
                report
                    .error
                    .clone()
                    .unwrap_or_else(|| "workflow succeeded".into())
            };
            let exit_code = if timed_out {
                124
            } else {
                i32::from(report.exit_code)
            };
            (Some(report), success, exit_code, message)
        }
        (Err(message), _) => (None, false, 1, message),
    };
    // The branch goes to the remote, for the next role on any machine; a push that fails
    // fails the attempt (its worktree is kept, and a retry pushes again).
    let (success, exit_code, message) = match (&worktree, &shared.isolation) {
        (Some(record), Some(spec)) if success && spec.remote.is_some() => {
            let (workspace, record, remote) = (
                shared.workspace.clone(),
                record.clone(),
                spec.remote.clone().unwrap_or_default(),
            );
            let pushed = tokio::task::spawn_blocking(move || {
                orchestrate_engine::worktree::push(&workspace, &record, &remote)
            })
            .await
            .unwrap_or_else(|err| Err(format!("pushing panicked: {err}")));
            match pushed {
                Ok(to) => {
                    say!(&shared.log, INFO, task = %id, "`{id}`: pushed its branch to {to}");
                    (success, exit_code, message)
                }
                Err(why) => (
                    false,
                    1,
                    format!("{why}; the worktree is kept, `orchestrate retry {id}` pushes again"),
                ),
            }
        }
        _ => (success, exit_code, message),
    };
    let mut status = status_json(
        &shared,
        &claim,
        &correlation_id,
        report.as_ref(),
        &started_at,
        started,
        success,
        exit_code,
        &message,
    );
    status.cancelled = cancelled;
    finish(shared, claim, success, status, worktree).await
}

/// The run's configuration for a claimed task: its variables, budgets, capabilities, and the
/// task's lock kept open in the steps' processes.
fn run_config(
    shared: &Shared,
    claim: &Claim,
    vars: serde_json::Value,
    correlation_id: String,
    cancel: &CancellationToken,
) -> RunConfig {
    let mut config = RunConfig::new(
        shared.workspace.clone(),
        shared.workflow.context.clone(),
        cancel.clone(),
    );
    config.run_root = Some(claim.run_root());
    config.task = Some(vars);
    config.correlation_id = Some(correlation_id);
    config.inherit_fds = vec![claim.lock.as_raw_fd()];
    config.default_provider = shared.role.runtime.clone();
    config.default_model = shared.role.model.clone();
    config.resumable = false;
    config.profiles = Arc::clone(&shared.profiles);
    config.budget = shared.role.budget.clone();
    config.swarm_budget = shared.swarm_budget.clone();
    config.default_idle_timeout = shared.role.idle_timeout;
    config.ignore_changes = shared.queue_dirs.clone();
    config.capabilities = shared
        .role
        .capabilities
        .clone()
        .map(|c| (shared.role.name.clone(), c));
    config.observer = Some(Arc::clone(&shared.observer));
    config.enqueuer = shared.enqueuer.clone();
    config
}

/// How a run ended besides its report.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ending {
    /// By itself, or cancelled.
    Ran,
    /// Stopped at `task_timeout`.
    TimedOut,
    /// Stopped because the claim's lease was lost (self-fencing): why.
    Fenced(String),
}

/// Runs the task's workflow to its end, renewing the claim's lease meanwhile and stopping it
/// at `task_timeout`, or at once when the queue says the lease is lost.
pub(super) async fn drive(
    shared: &Shared,
    claim: &mut Claim,
    runner: Runner,
    cancel: &CancellationToken,
) -> (Result<RunReport, String>, Ending) {
    let run = runner.run();
    tokio::pin!(run);
    // Eight looks per lease: a database queue's holder must notice a lease it cannot renew
    // (half of it gone) well before the lease runs out.
    let heartbeat_every = (shared.role.hung_after / 8).max(Duration::from_millis(250));
    // Not `interval`: its first tick is due at once, and tokio fires timers on its 1 ms wheel, so
    // awaiting it would delay every task's start by up to a millisecond.
    let mut heartbeat =
        tokio::time::interval_at((Instant::now() + heartbeat_every).into(), heartbeat_every);
    let deadline = shared.role.task_timeout.map(|t| Instant::now() + t);
    let mut ending = Ending::Ran;
    let outcome = loop {
        tokio::select! {
            result = &mut run => break result.map_err(|e| e.to_string()),
            _ = heartbeat.tick(), if ending == Ending::Ran => {
                if let LeaseCheck::Lost(reason) = shared.queue.heartbeat(claim) {
                    self_fence(claim);
                    cancel.cancel();
                    ending = Ending::Fenced(reason);
                }
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()).await }, if deadline.is_some() && ending == Ending::Ran => {
                ending = Ending::TimedOut;
                cancel.cancel();
            }
        }
    };
    (outcome, ending)
}

/// Stops every process of the attempt now, with SIGKILL: each holds the task's lock (steps
/// inherit it, and so do their children, whatever group or session they moved to). No grace:
/// the lease may run out soon, and then another machine may start the task.
fn self_fence(claim: &Claim) {
    for pid in orchestrate_queue::queue::holders(&claim.task_path) {
        let _ = orchestrate_base::process::kill(pid, libc::SIGKILL);
    }
}

/// The task's worktree under `isolation: worktree` (made, or the one an earlier attempt left),
/// or why there is none: the attempt fails with that message.
pub(super) async fn worktree(
    shared: &Arc<Shared>,
    claim: &Claim,
    from: Option<&str>,
) -> Result<Option<orchestrate_engine::worktree::Record>, String> {
    let Some(spec) = shared.isolation.clone() else {
        return Ok(None);
    };
    let owner = orchestrate_engine::worktree::Owner::Task {
        role: shared.role.name.clone(),
        task: claim.id.clone(),
    };
    let (workspace, workflow) = (shared.workspace.clone(), shared.workflow.name.clone());
    let from = from.map(str::to_string);
    let made = tokio::task::spawn_blocking(move || {
        orchestrate_engine::worktree::prepare(&workspace, &spec, &owner, &workflow, from.as_deref())
    })
    .await
    .map_err(|err| format!("it panicked: {err}"))
    .and_then(|made| made.map_err(|err| err.to_string()));
    let record = made.map_err(|why| {
        format!(
            "failed to prepare the worktree of task `{}` (role `{}`): {why}",
            claim.id, shared.role.name
        )
    })?;
    say!(
        &shared.log,
        INFO,
        task = %claim.id,
        branch = %record.branch,
        "`{}` works in {} (branch `{}`)",
        claim.id,
        orchestrate_base::fsutil::relative(&shared.workspace, &record.checkout),
        record.branch
    );
    Ok(Some(record))
}

/// Appends the attempt's spending to today's ledger (what the swarm's daily budget counts).
pub(super) fn ledger(shared: &Shared, claim: &Claim, report: &RunReport) {
    let spent = report.spent;
    if spent.tokens == 0 && spent.unpriced_tokens == 0 && spent.cost_usd == 0.0 {
        // Nothing to count (a task of command steps): no write on the swarm's hot path.
        return;
    }
    let entry = json!({
        "at": orchestrate_base::clock::now_rfc3339(),
        "role": shared.role.name,
        "task": claim.id,
        "attempt": claim.attempt,
        "run_id": report.run_id,
        "tokens": spent.tokens,
        "cost_usd": spent.cost_usd,
        "unpriced_tokens": spent.unpriced_tokens,
    });
    // On a shared database, every machine's daily budget counts it too.
    if let Some(pg) = &shared.pg
        && let Err(err) = pg.note_spent(
            &claim.id,
            claim.attempt,
            &report.run_id,
            spent.tokens,
            spent.cost_usd,
        )
    {
        say!(
            always &shared.log,
            WARN,
            task = %claim.id,
            "cannot note `{}`'s spending in the queue database (other machines' daily budget misses it): {err}",
            claim.id
        );
    }
    if let Err(err) = orchestrate_engine::budget::append(&shared.workspace, &entry) {
        say!(
            always &shared.log,
            ERROR,
            task = %claim.id,
            attempt = claim.attempt,
            "cannot append `{}`'s spending to the ledger: {err}",
            claim.id
        );
    }
}
