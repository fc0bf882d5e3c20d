//! Dispatch: claims within the role's concurrency, and the count of how tasks ended.
//!
//! Owns: taking inbox entries while slots (and completions) allow and nothing holds claims back,
//! the breaker trials a claim carries, what each claim result means (run it, look again later,
//! say it is still being written, quarantined), and counting finished tasks. Does not discover
//! entries (`discover`), run them (`attempt`) or decide what holds claims back (`steer`).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;

use orchestrate_queue::queue::{self, ClaimResult};

use super::agent::Agent;
use super::attempt::run_task;
use super::discover::{BUSY_RETRY, WRITING_RECHECK};
use super::finish::Finished;
use super::log::say;
use super::shared::Slot;

/// How many finished tasks may be writing their completion at once, per slot, before new
/// claims wait for them: completions overlap the next tasks' work, within a bound. Under load
/// a completion waits up to 3 ms for its group commit (`fsutil::group_sync`), so a bound of 2
/// stalled the claims (767 vs 1,042 tasks/s on journaled ext4 at 2 slots).
const COMPLETIONS_PER_SLOT: usize = 8;

impl Agent {
    /// Claims candidates while a slot is free and nothing holds claims back.
    pub(super) fn claim_ready(&mut self) {
        let slots = self.shared.role.concurrency as usize;
        let max_bytes = queue::DEFAULT_MAX_TASK_BYTES;
        // A role this machine lacks the labels for: nothing to claim (a database queue still
        // takes in dropped files, claiming nothing).
        if !self.shared.runs_here && !self.shared.queue.pulls() {
            return;
        }
        while self.stopping.is_none()
            && self.budget.blocked.is_none()
            && self.shared.active.load(std::sync::atomic::Ordering::SeqCst) < slots
            && self.running.len() < slots * (1 + COMPLETIONS_PER_SLOT)
            && !self.pending.queue.is_empty()
        {
            let Some(trials) = self.steer.admit(&self.log) else {
                break;
            };
            let Some((name, complete)) = self.pending.pop() else {
                self.steer.gate.release(&trials);
                break;
            };
            let claimed = trials;
            let settle = if complete {
                Duration::ZERO
            } else {
                self.shared.role.settle
            };
            let result = self
                .shared
                .queue
                .claim(&name, &self.owner, settle, max_bytes);
            if !claimed.is_empty() && !matches!(result, Ok(ClaimResult::Claimed(_))) {
                self.steer.gate.release(&claimed);
            }
            if !matches!(result, Ok(ClaimResult::Writing)) {
                self.writing_said.remove(&name);
            }
            self.on_claim(name, complete, claimed, result);
        }
    }

    /// Acts on the result of claiming `name`; `claimed` are the breaker trials it carries.
    fn on_claim(
        &mut self,
        name: String,
        complete: bool,
        claimed: Vec<String>,
        result: Result<ClaimResult, queue::QueueError>,
    ) {
        let log = &self.log;
        match result {
            Ok(ClaimResult::Claimed(claim)) => {
                self.start_task(*claim, claimed);
                // A queue that pulls may hold more: ask it again when a slot is free.
                if self.shared.queue.pulls() {
                    self.pending.push(String::new(), true);
                }
            }
            Ok(ClaimResult::Busy) => self.pending.later(name, complete, BUSY_RETRY),
            // Not a task yet: `--once` takes only what is queued, and a writer may never close.
            Ok(ClaimResult::Writing) if self.options.once => say!(
                log,
                INFO,
                "leaving `{name}`: a process still has it open for writing"
            ),
            Ok(ClaimResult::Writing) => {
                if self.writing_said.insert(name.clone()) {
                    say!(
                        log,
                        INFO,
                        "`{name}` is still open for writing; taking it once it is closed"
                    );
                }
                self.pending.later(name, false, WRITING_RECHECK);
            }
            Ok(ClaimResult::Settling(wait)) => self.pending.later(name, false, wait),
            Ok(ClaimResult::Gone) => {}
            Ok(ClaimResult::Quarantined { id, reason, dir }) => {
                self.report.quarantined += 1;
                if let Some(metrics) = &self.shared.metrics {
                    metrics.quarantined();
                }
                say!(
                    log,
                    WARN,
                    task = %id,
                    "quarantined `{id}` to {}: {reason}",
                    orchestrate_base::fsutil::relative(&self.workspace, &dir)
                );
            }
            // The database is away (said once when it went): ask again in a second.
            Err(queue::QueueError::Unavailable { .. }) => {
                self.pending.later(name, complete, Duration::from_secs(1));
            }
            Err(err) if name.is_empty() => {
                say!(log, ERROR, "{err}; will claim again in a second");
                self.pending.later(name, complete, Duration::from_secs(1));
            }
            Err(err) => {
                say!(log, ERROR, "{err}; will look at `{name}` again");
                self.pending.later(name, complete, Duration::from_secs(1));
            }
        }
    }

    /// Runs a claimed task in a slot of its own; `claimed` are the breaker trials it is.
    fn start_task(&mut self, claim: queue::Claim, claimed: Vec<String>) {
        let log = &self.log;
        say!(
            log,
            INFO,
            task = %claim.id,
            attempt = claim.attempt,
            "claimed `{}` (attempt {})",
            claim.id,
            claim.attempt,
        );
        if !claimed.is_empty() {
            say!(
                log,
                INFO,
                task = %claim.id,
                "`{}` is the half-open trial for {}",
                claim.id,
                claimed.join(", ")
            );
            self.steer.trials.insert(claim.id.clone(), claimed);
        }
        let token = CancellationToken::new();
        self.tokens.insert(claim.id.clone(), token.clone());
        let slot = Slot::take(&self.shared);
        if let Some(metrics) = &self.shared.metrics {
            metrics.claimed();
        }
        self.running
            .spawn(run_task(Arc::clone(&self.shared), claim, token, slot));
    }

    /// A task's handler ended: its cancel request and breaker trials are done with, and it
    /// counts in the report.
    pub(super) fn on_task_ended(&mut self, done: Result<Finished, JoinError>) {
        match done {
            Ok(Finished { id, outcome }) => {
                crate::control::clear_task_cancel(
                    &self.shared.workspace,
                    &self.shared.role.name,
                    &id,
                );
                if let Some(trials) = self.steer.trials.remove(&id) {
                    self.steer.gate.release(&trials);
                }
                match outcome {
                    "processed" => self.report.processed += 1,
                    "released" | "given up" => self.report.released += 1,
                    _ => self.report.failed += 1,
                }
                self.tokens.remove(&id);
            }
            Err(err) => say!(&self.log, ERROR, "a task's handler panicked: {err}"),
        }
    }
}
