//! Restart and stop timing ([`Policy`]), and one replica's restart history ([`Restarts`]): the
//! exponential backoff with jitter and the Erlang/OTP-style intensity limit (more than
//! `max_restarts` within `within` and the replica is failed).
//!
//! Does not decide whether a death is charged to a task (the caller's `ChargeToTask`), nor sleep
//! or spawn: the replica's actor does.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Restart and stop timing. The defaults are the protocol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Delay before the first restart; doubles on each further one.
    pub initial_backoff: Duration,
    /// Cap of the doubling.
    pub max_backoff: Duration,
    /// A replica that ran (ready) this long before dying restarts after `initial_backoff` again.
    pub reset_after: Duration,
    /// More than this many restarts within `within` and the replica is failed.
    pub max_restarts: u32,
    /// The window `max_restarts` is counted in (a sliding window, not reset by a ready replica).
    pub within: Duration,
    /// Time between SIGTERM and SIGKILL on a graceful stop.
    pub grace: Duration,
    /// A replica that has not reported ready by then is killed and restarted.
    pub ready_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
            max_restarts: 5,
            within: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// One replica's restart history: the next delay and the restarts counted against the intensity
/// limit.
pub(super) struct Restarts {
    policy: Policy,
    /// The next restart delay, before jitter.
    backoff: Duration,
    /// Restarts counted against the intensity limit, oldest first.
    recent: VecDeque<Instant>,
}

impl Restarts {
    pub(super) fn new(policy: Policy) -> Restarts {
        Restarts {
            policy,
            backoff: policy.initial_backoff,
            recent: VecDeque::new(),
        }
    }

    /// A process that ran (ready) this long before dying: long enough, and the backoff starts
    /// over at `initial_backoff`.
    pub(super) fn ran(&mut self, healthy: Duration) {
        if healthy >= self.policy.reset_after {
            self.backoff = self.policy.initial_backoff;
        }
    }

    /// The (jittered) delay before a restart at `now`, which it counts; or, when the limit is
    /// reached, `Err` with the number of restarts within the window (the replica has failed).
    pub(super) fn next(&mut self, now: Instant) -> Result<Duration, usize> {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.policy.within)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= usize::try_from(self.policy.max_restarts).unwrap_or(usize::MAX) {
            return Err(self.recent.len());
        }
        self.recent.push_back(now);
        let delay = jittered(self.backoff, random_u32());
        self.backoff = self.backoff.saturating_mul(2).min(self.policy.max_backoff);
        Ok(delay)
    }
}

/// `d` scaled by a factor in [0.8, 1.2] drawn from `random`, so replicas that died together do
/// not restart in lockstep.
fn jittered(d: Duration, random: u32) -> Duration {
    let factor = 0.8 + 0.4 * (f64::from(random) / f64::from(u32::MAX));
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(d)
}

fn random_u32() -> u32 {
    // Jitter needs spread, not secrecy.
    u32::from_le_bytes(orchestrate_base::ids::random_bytes())
}

/// RFC 3339 time `delay` from now: when a restart is due.
pub(super) fn clock_in(delay: Duration) -> String {
    let at =
        chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Milliseconds, as the records write durations (`grace_ms`, `delay_ms`, `waited_ms`).
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let base = Duration::from_millis(1000);
        assert_eq!(jittered(base, 0), Duration::from_millis(800));
        assert_eq!(jittered(base, u32::MAX), Duration::from_millis(1200));
        assert_eq!(jittered(base, u32::MAX / 2).as_millis(), 1000);
        assert_eq!(jittered(Duration::MAX, u32::MAX), Duration::MAX);
    }
}
