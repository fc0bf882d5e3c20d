//! The end of an attempt: status.json, the move to processed/ or failed/, metrics and trace.
//!
//! Owns: the task's status record, ending its worktree, completing the claim off the async
//! threads, counting it in the metrics, queueing its trace, and saying how it ended. Does not
//! run the workflow (`attempt`).

use std::sync::Arc;
use std::time::Instant;

use orchestrate_engine::runner::RunReport;
use orchestrate_queue::queue::Claim;
use orchestrate_queue::record::{Metrics, NextAction, TaskStatus, Timings, Worker};

use super::log::{TARGET, say};
use super::shared::Shared;

/// How an attempt ended, for the loop's counts: `processed`, `failed` or `released`.
pub(super) struct Finished {
    pub(super) id: String,
    pub(super) outcome: &'static str,
}

/// Completes the claim off the async threads: the completion's fsyncs wait on the disk, and
/// on a 2-core machine two tasks finishing at once would otherwise stall every other task (and
/// new claims) for that long.
pub(super) async fn finish(
    shared: Arc<Shared>,
    claim: Claim,
    success: bool,
    status: TaskStatus,
    worktree: Option<orchestrate_engine::worktree::Record>,
) -> Finished {
    let id = claim.id.clone();
    tokio::task::spawn_blocking(move || {
        finish_blocking(&shared, claim, success, status, worktree.as_ref())
    })
    .await
    .unwrap_or_else(|err| {
        tracing::error!(target: TARGET, task = %id, "finishing `{id}` panicked: {err}");
        Finished {
            id,
            outcome: "failed",
        }
    })
}

pub(super) fn finish_blocking(
    shared: &Shared,
    claim: Claim,
    success: bool,
    mut status: TaskStatus,
    worktree: Option<&orchestrate_engine::worktree::Record>,
) -> Finished {
    let id = claim.id.clone();
    // Before status.json, which says whether the worktree is still there.
    if let Some(record) = worktree {
        let ending = orchestrate_engine::worktree::finish(&shared.workspace, record, success);
        status.worktree = Some(record.status(&shared.workspace, ending.kept));
        say!(&shared.log, INFO, task = %id, "`{id}`: {}", ending.note);
    }
    let outcome = shared.queue.complete(&claim, success, &status);
    let verdict = if success { "processed" } else { "failed" };
    // The attempt's event log, looked for only when metrics or traces read it.
    let exporting = orchestrate_observe::otlp::Exporter::from_env().is_some();
    let events = outcome
        .as_ref()
        .ok()
        .filter(|_| shared.metrics.is_some() || exporting)
        .map(|dest| dest.join("events.jsonl"))
        .filter(|p| p.exists());
    if let Some(metrics) = &shared.metrics {
        metrics.finished(verdict, events.as_deref());
    }
    if let Some(events) = events.filter(|_| exporting) {
        orchestrate_observe::otlp::submit_task(
            events,
            orchestrate_observe::otlp::TaskInfo {
                id: claim.id.clone(),
                role: shared.role.name.clone(),
                attempt: u64::from(claim.attempt),
                correlation_id: status.correlation_id.clone().unwrap_or_default(),
            },
        );
    }
    match outcome {
        Ok(dest) => {
            let dest = orchestrate_base::fsutil::relative(&shared.workspace, &dest);
            let run_id = status.run_id.as_deref().unwrap_or_default();
            let attempt = claim.attempt;
            // A failed task is worth a look: a warning, so that `--log-level warn` keeps it.
            if success {
                say!(
                    &shared.log,
                    INFO,
                    task = %id,
                    attempt,
                    run_id = %run_id,
                    outcome = %verdict,
                    "`{id}` attempt {attempt} {verdict}: {dest}",
                );
            } else {
                say!(
                    &shared.log,
                    WARN,
                    task = %id,
                    attempt,
                    run_id = %run_id,
                    outcome = %verdict,
                    "`{id}` attempt {attempt} {verdict}: {dest}",
                );
            }
            Finished {
                id,
                outcome: verdict,
            }
        }
        Err(err) => {
            // The claim stays in running/ with its lock released when `claim` drops: the next
            // recovery pass completes the move (status.json is written) or requeues it.
            say!(
                always &shared.log,
                ERROR,
                task = %id,
                attempt = claim.attempt,
                "failed to finish `{id}`: {err}",
            );
            Finished {
                id,
                outcome: "failed",
            }
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
pub(super) fn status_json(
    shared: &Shared,
    claim: &Claim,
    correlation_id: &str,
    report: Option<&RunReport>,
    started_at: &str,
    started: Instant,
    success: bool,
    exit_code: i32,
    message: &str,
) -> TaskStatus {
    let mut status = TaskStatus::new(&shared.role.name, &claim.id, success, exit_code, message);
    status.correlation_id = Some(correlation_id.to_string());
    status.attempt = Some(claim.attempt);
    status.workflow_hash = Some(shared.workflow_hash.clone());
    if let Some(report) = report {
        status.run_id = Some(report.run_id.clone());
        status.step = report.last_step.clone();
        status.step_exit_code = report.step_exit_code;
        status.outputs = report.outputs.clone();
        status.next_actions = report
            .enqueued
            .iter()
            .map(|t| NextAction {
                agent: t.role.clone(),
                file: t.file.clone(),
                task: t.id.clone(),
            })
            .collect();
    }
    status.metrics = Some(Metrics {
        duration_sec: started.elapsed().as_secs_f64(),
        task_bytes: claim.content.len() as u64,
    });
    status.timings = Some(Timings {
        claimed_at: claim.lease.claimed_at.clone(),
        started_at: started_at.to_string(),
        finished_at: orchestrate_base::clock::now_rfc3339(),
    });
    status.worker = Some(Worker {
        pid: claim.lease.pid,
        label: shared.label.clone(),
    });
    status.history = claim.meta.history.clone();
    status
}
