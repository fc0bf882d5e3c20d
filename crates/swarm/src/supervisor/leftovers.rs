//! Replicas a previous supervisor left alive when it died (SIGKILLed, machine-level OOM): stopped
//! when the next supervisor starts, before it starts its own.
//!
//! Does not handle them while no supervisor runs (`down::stop_orphans` does, on request).

use std::path::Path;
use std::time::{Duration, Instant};

use orchestrate_base::process::{self, kill_group};
use orchestrate_engine::events::EventLog;

use super::event::{LeftoverStopping, Record, SupervisorEvent};
use super::proc::{POLL, pgid};
use super::status_file::read_status_file;

/// Stops the replicas of a previous supervisor that died without stopping them (SIGKILLed,
/// machine-level OOM): they would otherwise run next to the new ones, unsupervised.
pub(super) async fn stop_leftovers(workspace: &Path, grace: Duration, events: &mut EventLog) {
    let Ok(Some(old)) = read_status_file(workspace) else {
        return;
    };
    if old.supervisor.boot_id != process::boot_id() {
        return;
    }
    let live: Vec<(String, u32, u64)> = old
        .children
        .iter()
        .filter_map(|c| {
            let (pid, start) = c.live_process()?;
            Some((c.name.clone(), pid, start))
        })
        .collect();
    if live.is_empty() {
        return;
    }
    // Found while the replicas are verified alive; killed once they are gone.
    let steps: Vec<_> = live
        .iter()
        .filter_map(|(_, pid, _)| orchestrate_base::cgroup::StepsOf::find(*pid))
        .collect();
    for (name, pid, _) in &live {
        kill_group(pgid(*pid), libc::SIGTERM);
        let record = Record::own(SupervisorEvent::LeftoverStopping(LeftoverStopping {
            child: name.clone(),
            pid: *pid,
            previous_supervisor: old.supervisor.pid,
        }));
        let _ = events.append_record(record.to_fields(), false);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && live
            .iter()
            .any(|(_, pid, start)| process::running(*pid, *start))
    {
        tokio::time::sleep(POLL).await;
    }
    for (_, pid, start) in &live {
        // Verified just before: the leader lives, so its group and session ids are its own.
        if process::running(*pid, *start) {
            kill_group(pgid(*pid), libc::SIGKILL);
            process::kill_session(*pid, libc::SIGKILL);
        }
    }
    for steps in steps {
        steps.kill();
    }
}
