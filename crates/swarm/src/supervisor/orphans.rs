//! Reaping the swarm's orphans: the supervisor is a child subreaper, so whatever a replica leaves
//! behind is reparented to it; exited ones are reaped on SIGCHLD and on a timer.
//!
//! Does not touch managed replicas (their actors reap them) nor children in our own session
//! (other code waits for those).

use std::time::Duration;

use tokio::signal::unix::Signal;

use orchestrate_base::process;

use super::proc::managed;

/// Backstop for the orphan reaper when a SIGCHLD is coalesced or missed.
pub(super) const REAP_INTERVAL: Duration = Duration::from_secs(1);

pub(super) async fn next_sigchld(sigchld: &mut Option<Signal>) -> Option<()> {
    match sigchld {
        Some(sigchld) => sigchld.recv().await,
        // Without a SIGCHLD stream the interval alone drives the reaper.
        None => std::future::pending().await,
    }
}

/// Reaps every exited orphan that was reparented to this process (a subreaper).
///
/// An orphan of the swarm is in a replica's session; children that other code in this process
/// spawned are in our own session and are left to whoever waits for them, as are the managed
/// replicas (their actors reap them).
pub(super) fn reap_orphans() {
    let own_session = process::own_session();
    let managed = managed();
    for pid in process::children_of_self() {
        if managed.contains(&pid) {
            continue;
        }
        let Some(stat) = process::stat(pid) else {
            continue;
        };
        if stat.state != 'Z' || stat.session == own_session {
            continue;
        }
        // An exited child that no other code waits for (not managed, not in our session).
        let _ = process::try_reap(pid);
    }
}
