//! The supervisor loop's writer: applies each replica's [`Update`] to the status file, appends its
//! event to `events.jsonl` and logs it; a failed write is a warning, never fatal.
//!
//! Does not decide state changes (the actors do) nor read the records back (`status`).

use std::path::PathBuf;

use orchestrate_base::clock;
use orchestrate_engine::events::EventLog;

use super::event::{Record, Replica, SupervisorEvent};
use super::status_file::{ChildStatus, StatusFile, write_status};

/// The target of the supervisor's log events: the module's path before it became a folder, which
/// `RUST_LOG` filters and the docs name.
const TARGET: &str = "orchestrate_swarm::supervisor";

/// A state change (with its event, if it is one) sent from an actor to the supervisor loop.
pub(super) struct Update {
    pub(super) status: ChildStatus,
    pub(super) event: Option<SupervisorEvent>,
}

/// The records the supervisor loop writes: the status file and the event log.
pub(super) struct Records {
    pub(super) status_path: PathBuf,
    pub(super) events: EventLog,
}

impl Records {
    pub(super) fn apply(&mut self, file: &mut StatusFile, update: Update) {
        let Update { status, event } = update;
        if let Some(event) = event {
            log_change(&event, &status);
            self.record(&Record {
                replica: Some(Replica::of(&status)),
                event,
            });
        }
        if let Some(slot) = file.children.iter_mut().find(|c| c.name == status.name) {
            *slot = status;
        }
    }

    /// Appends a line. A failure is reported, not fatal: the swarm keeps its workers
    /// running even when the disk is full, and the status file says where things stand.
    pub(super) fn record(&mut self, record: &Record) {
        if let Err(err) = self.events.append_record(record.to_fields(), false) {
            tracing::warn!(
                target: TARGET,
                path = %self.events.path().display(),
                event = %record.event.name(),
                "failed to append to {}: {err}",
                self.events.path().display()
            );
        }
    }

    pub(super) fn write(&mut self, file: &mut StatusFile) {
        file.supervisor.updated_at = clock::now_rfc3339();
        if let Err(err) = write_status(&self.status_path, file) {
            tracing::warn!(
                target: TARGET,
                path = %self.status_path.display(),
                "failed to write {}: {err}",
                self.status_path.display()
            );
        }
    }
}

/// A replica's change as a log event of the supervisor: a restart is a warning, giving up on a
/// replica an error, the rest debug (the event log is the record; this is for whoever follows
/// the supervisor's stderr).
fn log_change(event: &SupervisorEvent, status: &ChildStatus) {
    let name = event.name();
    let fields = event.fields();
    macro_rules! at {
        ($level:expr) => {
            tracing::event!(
                target: TARGET,
                $level,
                child = %status.name,
                role = %status.role,
                replica = status.replica,
                pid = status.pid,
                state = %status.state.as_str(),
                restarts = status.restarts,
                fields = %fields,
                "{}: {name}",
                status.name
            )
        };
    }
    match name {
        "restarting" => at!(tracing::Level::WARN),
        "failed" => at!(tracing::Level::ERROR),
        _ => at!(tracing::Level::DEBUG),
    }
}
