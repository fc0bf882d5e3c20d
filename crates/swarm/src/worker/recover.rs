//! Recovery of dead and hung claims, each run of it logged.
//!
//! Owns calling the queue's recovery with the role's limits and saying what it did. Does not
//! implement recovery (`queue` does) or decide when it runs (the loop in `agent`).

use std::time::Duration;

use super::log::{Log, say};
use super::shared::Shared;

/// Recovery of dead claims runs this often.
pub(super) const RECOVER_EVERY: Duration = Duration::from_secs(2);

pub(super) fn recover(shared: &Shared, log: &Log) {
    match shared
        .queue
        .recover(shared.role.max_attempts, Some(shared.role.hung_after))
    {
        Ok(recovered) => {
            for r in recovered {
                say!(
                    log,
                    INFO,
                    task = %r.id,
                    attempt = r.attempt,
                    "recovered `{}` (attempt {}): {} ({})",
                    r.id, r.attempt, r.action, r.reason
                );
            }
        }
        // The database is away: its link said so; the next pass tries again.
        Err(orchestrate_queue::queue::QueueError::Unavailable { .. }) => {}
        Err(err) => say!(log, ERROR, "recovery failed: {err}"),
    }
}
