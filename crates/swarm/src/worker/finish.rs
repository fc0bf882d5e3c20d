//! The end of an attempt: status.json, the move to processed/ or failed/, metrics and trace.
//!
//! Owns: the task's status record, ending its worktree, completing the claim off the async
//! threads (on the completer, one thread that completes the attempts which ended while it was
//! busy in one go), counting it in the metrics, queueing its trace, and saying how it ended.
//! Does not run the workflow (`attempt`).

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

/// An attempt to complete, handed to the completer.
struct Job {
    shared: Arc<Shared>,
    claim: Claim,
    success: bool,
    status: TaskStatus,
    worktree: Option<orchestrate_engine::worktree::Record>,
    reply: tokio::sync::oneshot::Sender<Finished>,
}

/// At most this many attempts are completed in one go.
const BATCH: usize = 64;

/// How long the completer gathers finished attempts before a batch, when batches come back to
/// back. Measured on a fresh journaled ext4, 2,000 no-op tasks at 2 slots: without it 1,361 to
/// 1,480 journal commits and 912-921 tasks/s; with 2 ms, 356-396 commits and 1,093-1,132 tasks/s.
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// Batches closer together than this count as back to back.
const BUSY_WITHIN: std::time::Duration = std::time::Duration::from_millis(20);

/// The completer's queue: a thread of its own, started with the first completion.
fn completer() -> &'static std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>> {
    static SENDER: std::sync::OnceLock<std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>>> =
        std::sync::OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("complete".into())
            .spawn(move || {
                let mut last_end: Option<std::time::Instant> = None;
                while let Ok(first) = rx.recv() {
                    // Back to back with the previous batch: gather a little longer, so that one
                    // journal commit covers more tasks. After a quiet spell, complete at once.
                    if last_end.is_some_and(|end| end.elapsed() < BUSY_WITHIN) {
                        std::thread::sleep(GATHER);
                    }
                    let mut batch = vec![first];
                    while batch.len() < BATCH
                        && let Ok(job) = rx.try_recv()
                    {
                        batch.push(job);
                    }
                    complete_batch(batch);
                    last_end = Some(std::time::Instant::now());
                }
            });
        std::sync::Mutex::new(started.ok().map(|_| tx))
    })
}

/// Completes the claim off the async threads: its status.json's fsync waits on the disk, and
/// on a 2-core machine tasks finishing at once would otherwise stall every other task (and new
/// claims) for that long. The completer syncs the records of the attempts that ended while it
/// was busy (and, when busy, within [`GATHER`]) together, so a busy role pays one journal commit
/// for many tasks, and one that was idle completes at once.
pub(super) async fn finish(
    shared: Arc<Shared>,
    claim: Claim,
    success: bool,
    status: TaskStatus,
    worktree: Option<orchestrate_engine::worktree::Record>,
) -> Finished {
    let id = claim.id.clone();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = Job {
        shared,
        claim,
        success,
        status,
        worktree,
        reply,
    };
    let refused = {
        let sender = completer()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match sender.as_ref() {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        }
    };
    // No completer thread (it could not start, or it died): complete on the blocking pool.
    if let Some(job) = refused {
        let _ = tokio::task::spawn_blocking(move || complete_batch(vec![job])).await;
    }
    answer.await.unwrap_or_else(|_| {
        tracing::error!(target: TARGET, task = %id, "finishing `{id}` failed unexpectedly");
        Finished {
            id,
            outcome: "failed",
        }
    })
}

/// Completes a batch of attempts, those of each role together.
fn complete_batch(batch: Vec<Job>) {
    let mut rest = batch;
    while !rest.is_empty() {
        let shared = Arc::clone(&rest[0].shared);
        let (same, other): (Vec<Job>, Vec<Job>) = rest
            .into_iter()
            .partition(|job| Arc::ptr_eq(&job.shared, &shared));
        complete_role(&shared, same);
        rest = other;
    }
}

/// Completes attempts of one role: worktrees ended, records written and synced together, each
/// moved, then each one's end reported.
fn complete_role(shared: &Shared, mut jobs: Vec<Job>) {
    for job in &mut jobs {
        // Before status.json, which says whether the worktree is still there.
        if let Some(record) = &job.worktree {
            let ending =
                orchestrate_engine::worktree::finish(&shared.workspace, record, job.success);
            job.status.worktree = Some(record.status(&shared.workspace, ending.kept));
            let id = &job.claim.id;
            say!(&shared.log, INFO, task = %id, "`{id}`: {}", ending.note);
        }
    }
    let done: Vec<orchestrate_queue::queue::Completion<'_>> = jobs
        .iter()
        .map(|job| orchestrate_queue::queue::Completion {
            claim: &job.claim,
            success: job.success,
            status: &job.status,
        })
        .collect();
    let outcomes = shared.queue.complete_all(&done);
    drop(done);
    for (job, outcome) in jobs.into_iter().zip(outcomes) {
        let finished = ended(shared, job.claim, job.success, &job.status, outcome);
        let _ = job.reply.send(finished);
    }
}

/// Counts, traces and says how the attempt ended, once it is completed (or failed to be).
fn ended(
    shared: &Shared,
    claim: Claim,
    success: bool,
    status: &TaskStatus,
    outcome: Result<std::path::PathBuf, orchestrate_queue::queue::QueueError>,
) -> Finished {
    let id = claim.id.clone();
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
        // The lease was lost meanwhile: another attempt runs the task (or will); this one's
        // files are set aside, its result unrecorded.
        Err(err @ orchestrate_queue::queue::QueueError::Superseded { .. }) => {
            say!(
                always &shared.log,
                WARN,
                task = %id,
                attempt = claim.attempt,
                "gave up attempt {} of `{id}`: {err}",
                claim.attempt,
            );
            Finished {
                id,
                outcome: "given up",
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
