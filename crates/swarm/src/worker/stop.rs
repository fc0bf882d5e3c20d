//! Stopping: when the loop ends, a graceful stop, the grace period, kill, a supervisor gone.
//!
//! Owns: ending when stopped and nothing is in flight (or, `--once`, when what is queued is done
//! or held back), no new claims after a stop request, stopping the tasks in flight when the
//! grace period is over or on a second request (they go back to the inbox), and stopping as if
//! asked when the supervisor that started this process is gone. Does not claim (`dispatch`).

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::agent::Agent;
use super::log::say;

impl Agent {
    /// Whether the loop ends now.
    pub(super) fn is_done(&self) -> bool {
        if self.stopping.is_some() && self.running.is_empty() {
            return true;
        }
        if self.options.once
            && self.running.is_empty()
            && (self.pending.is_empty()
                || self.budget.blocked.is_some()
                || self.steer.holding()
                || (!self.shared.runs_here && !self.shared.queue.pulls()))
        {
            if !self.pending.is_empty() && self.steer.holding() {
                say!(
                    &self.log,
                    INFO,
                    "leaving the queued tasks: the role is paused or a breaker is open"
                );
            }
            return true;
        }
        false
    }

    /// Reparented: the supervisor that started us is gone (killed with -9, say).
    pub(super) fn on_orphan_check(&mut self) {
        let supervisor = self.supervisor;
        if supervisor.is_some_and(|pid| std::os::unix::process::parent_id() != pid) {
            say!(
                &self.log,
                WARN,
                "the supervisor (pid {}) is gone: stopping as if `swarm down` had asked (the next `swarm up` starts the role again)",
                supervisor.unwrap_or_default()
            );
            self.stop.cancel();
        }
    }

    /// A stop request: no new claims; the tasks in flight get the grace period.
    pub(super) fn on_stop(&mut self) {
        if self.running.is_empty() {
            say!(&self.log, INFO, "stopping: no new claims");
        } else {
            say!(
                &self.log,
                INFO,
                "stopping: no new claims; {} task(s) in flight get {:?} to finish; a second Ctrl-C (or SIGTERM) stops them at once, back to the inbox",
                self.running.len(),
                self.options.grace
            );
        }
        self.stopping = Some(Instant::now());
    }

    pub(super) fn on_grace_over(&mut self) {
        say!(
            &self.log,
            WARN,
            "grace period over: stopping the tasks in flight; they go back to the inbox"
        );
        self.tokens.values().for_each(CancellationToken::cancel);
    }

    /// A second request (or kill): the tasks in flight are stopped now.
    pub(super) fn on_kill(&mut self) {
        if !self.tokens.is_empty() {
            say!(
                &self.log,
                WARN,
                "stopping now: the tasks in flight are stopped and go back to the inbox"
            );
        }
        self.tokens.values().for_each(CancellationToken::cancel);
        self.stopping.get_or_insert_with(Instant::now);
    }
}
