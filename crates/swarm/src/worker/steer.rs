//! What holds claims back: a pause, an open breaker, the swarm's spent daily budget; and the
//! user's cancel requests for tasks in flight.
//!
//! Owns reading the pause file, the cancel requests and the breakers, and the daily ledger
//! check, each said once when it changes. Does not claim (`dispatch`).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::discover::IDLE_RESCAN;
use super::log::{Log, say};
use super::shared::Shared;

/// While the swarm's daily budget is spent, the ledger is looked at again this often.
pub(super) const BUDGET_RECHECK: Duration = Duration::from_secs(2);

/// What holds claims back: a pause (`orchestrate pause`), or an open breaker of a runtime the
/// role's workflow uses; and the user's cancel requests for tasks in flight.
pub(super) struct Steering {
    pub(super) paused: Option<crate::control::Pause>,
    pub(super) gate: crate::breaker::Gate,
    /// A breaker said no: ask again at this time (or on a control hint).
    pub(super) gate_wait: Option<Instant>,
    pub(super) gate_reason: Option<String>,
    /// Half-open trials this process holds, by task.
    pub(super) trials: HashMap<String, Vec<String>>,
}

impl Steering {
    pub(super) fn holding(&self) -> bool {
        self.paused.is_some() || self.gate_wait.is_some()
    }

    /// Whether one more task may be claimed now; `Some(trials taken)` when it may.
    pub(super) fn admit(&mut self, log: &Log) -> Option<Vec<String>> {
        if self.paused.is_some() || self.gate_wait.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        match self.gate.admit() {
            Ok(trials) => {
                if self.gate_reason.take().is_some() {
                    say!(log, INFO, "claiming again: breakers let tasks through");
                }
                self.gate_wait = None;
                Some(trials)
            }
            Err((reason, until)) => {
                let wait = until
                    .and_then(|u| (u - chrono::Utc::now()).to_std().ok())
                    .unwrap_or(IDLE_RESCAN)
                    .min(IDLE_RESCAN);
                self.gate_wait = Some(Instant::now() + wait);
                if self.gate_reason.as_deref() != Some(reason.as_str()) {
                    say!(log, WARN, "not claiming: {reason}");
                    self.gate_reason = Some(reason);
                }
                None
            }
        }
    }

    /// Reads the pause file and the cancel requests again; cancels the tasks asked for.
    pub(super) fn refresh(
        &mut self,
        shared: &Shared,
        tokens: &HashMap<String, CancellationToken>,
        log: &Log,
    ) {
        let paused = crate::control::paused(&shared.workspace, &shared.role.name);
        match (&self.paused, &paused) {
            (None, Some(p)) => say!(
                log,
                INFO,
                "paused by {} at {}: no new claims ({} task(s) in flight finish)",
                p.by,
                p.since,
                tokens.len()
            ),
            (Some(_), None) => say!(log, INFO, "resumed: claiming again"),
            _ => {}
        }
        self.paused = paused;
        for (id, request) in
            crate::control::task_cancel_requests(&shared.workspace, &shared.role.name)
        {
            match tokens.get(&id) {
                Some(token) if !token.is_cancelled() => {
                    let dir = shared.layout.running.join(&id);
                    if let Err(err) = orchestrate_queue::cancel::write_run_cancel(&dir, &request) {
                        say!(log, ERROR, task = %id, "cancelling `{id}`: {err}");
                        continue;
                    }
                    say!(log, INFO, task = %id, "`{id}`: {}; stopping it", request.describe());
                    token.cancel();
                }
                Some(_) => {}
                None if !shared.layout.running.join(&id).exists() => {
                    crate::control::clear_task_cancel(&shared.workspace, &shared.role.name, &id);
                }
                None => {}
            }
        }
    }
}

/// The swarm's daily budget as a gate on claims: while it is spent, claims wait and the ledger
/// is looked at again every `BUDGET_RECHECK`.
#[derive(Default)]
pub(super) struct Budget {
    /// Claims wait until this time while the swarm's daily budget is spent.
    pub(super) blocked: Option<Instant>,
    /// The reason last logged, so that it is said once (again only when it changes).
    pub(super) said: Option<String>,
}

impl Budget {
    /// Looks at the ledger again when it is time and there is something to claim.
    pub(super) fn check(&mut self, workspace: &Path, shared: &Shared, pending: bool, log: &Log) {
        if self.blocked.is_some_and(|until| Instant::now() < until) {
            // Still waiting; looked at again when the time comes.
        } else if let Some(swarm) = &shared.swarm_budget
            && pending
        {
            self.blocked = None;
            if let Some(why) = orchestrate_engine::budget::day_exhausted(workspace, swarm) {
                if self.said.as_deref() != Some(why.as_str()) {
                    say!(log, WARN, "not claiming new tasks: {why}");
                    self.said = Some(why);
                }
                self.blocked = Some(Instant::now() + BUDGET_RECHECK);
            } else if self.said.take().is_some() {
                say!(log, INFO, "the swarm's daily budget allows claims again");
            }
        }
    }
}
