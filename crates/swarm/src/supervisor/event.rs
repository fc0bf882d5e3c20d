//! The records of the supervisor's own log, `.orchestrate/swarm/events.jsonl`, as types:
//! [`SupervisorEvent`], one variant per kind, each with its own fields, and the [`Replica`] a
//! replica's event is about; a line is a [`Record`] of both. The supervisor loop writes these
//! and every reader reads them, so a field cannot be renamed on one side only.
//!
//! The bytes on disk are those the supervisor wrote before these types: a JSON object whose keys
//! serde_json sorts (the run's envelope `v`, `seq`, `ts`; `event`; the replica's `child`, `role`,
//! `replica`, `state`; the kind's own fields). The replica's fields sit beside the event's, as a
//! run's envelope does, without `flatten`: written by merging, read back (only the tests read the
//! log) by `Replica::from_record`.
//! Its schema is `docs/schema/supervisor-events.schema.json` ([`json_schema`]), the replica's
//! fields included.
//!
//! Does not open or append to the file (`records` does, through the engine's `EventLog`), nor
//! decide what happens (the actors and the loop do).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::exit::ExitReason;
use super::spec::RoleProblem;
use super::status_file::{ChildState, ChildStatus};

/// One event of the supervisor's log, tagged by its kind (`"event": "spawned"`). The kinds from
/// `spawned` on are about one replica, whose [`Replica`] fields the line carries too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
#[schemars(title = "orchestrate supervisor event")]
pub(crate) enum SupervisorEvent {
    /// The supervisor took the workspace's lock and starts its replicas.
    SupervisorStarted(SupervisorStarted),
    /// Asked to stop (SIGTERM, `swarm down`): its replicas get SIGTERM and the grace.
    SupervisorStopping(SupervisorStopping),
    /// Asked to stop at once (`swarm down --force`, a second signal): SIGKILL.
    SupervisorKilling,
    /// The last record of a supervisor: every replica is down.
    SupervisorStopped(SupervisorStopped),
    /// A replica a dead supervisor left running got SIGTERM before the new one started its own.
    LeftoverStopping(LeftoverStopping),
    /// The roles were read again (SIGHUP, `swarm reload`, an edit in `agents/`).
    Reloaded(Reloaded),
    /// A replica's process was started.
    Spawned(Pid),
    /// It reported ready.
    Ready(Pid),
    /// It ended (with the state it was in then).
    Exited(Exited),
    /// It is being stopped.
    Stopping(Stopping),
    /// It was stopped and is not started again.
    Stopped,
    /// It died on its own and starts again after the delay.
    Restarting(Restarting),
    /// It died too often and is left down until the next `swarm up`.
    Failed(Failed),
    /// A kind this version does not know: readers skip it. Never written.
    #[serde(other, skip_serializing)]
    #[schemars(skip)]
    Unknown,
}

/// The fields of `supervisor_started`: who started and how many replicas it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct SupervisorStarted {
    /// The supervisor's pid.
    pub(crate) pid: u32,
    /// The replicas it starts.
    pub(crate) children: usize,
}

/// The fields of `supervisor_stopping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct SupervisorStopping {
    /// How long a replica has between SIGTERM and SIGKILL.
    pub(crate) grace_ms: u64,
}

/// The fields of `supervisor_stopped`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct SupervisorStopped {
    /// Whether it was asked to stop at once.
    pub(crate) killed: bool,
}

/// The fields of `leftover_stopping`: which process of the dead supervisor was stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct LeftoverStopping {
    /// The replica's name in the dead supervisor's `status.json`.
    pub(crate) child: String,
    /// The leftover replica's pid.
    pub(crate) pid: u32,
    /// The dead supervisor's pid.
    pub(crate) previous_supervisor: u32,
}

/// The fields of `reloaded`: what changed when the roles were read again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Reloaded {
    /// Replicas started.
    pub(crate) added: Vec<String>,
    /// Replicas stopped gracefully.
    pub(crate) removed: Vec<String>,
    /// Roles whose files do not load: their replicas keep the version they run.
    pub(crate) problems: Vec<RoleProblem>,
}

/// The fields of `spawned` and `ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Pid {
    /// The replica's pid.
    pub(crate) pid: u32,
}

/// The fields of `exited`: how the replica ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Exited {
    /// `null` when the process could not be started.
    pub(crate) pid: Option<u32>,
    /// How it ended: an exit code, a signal, or why it never ran or was lost.
    pub(crate) exit: ExitReason,
    /// Whether the supervisor asked it to stop (then it is not restarted).
    pub(crate) asked: bool,
}

/// The fields of `stopping`: the signal sent and the grace it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Stopping {
    /// The replica's pid.
    pub(crate) pid: u32,
    pub(crate) signal: StopSignal,
    /// With SIGTERM: how long before SIGKILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) grace_ms: Option<u64>,
}

/// The signal a replica is stopped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) enum StopSignal {
    /// Graceful: it finishes or hands back its task within the grace.
    #[serde(rename = "SIGTERM")]
    Term,
    /// Forced: killed at once (`swarm down --force`, or when the grace ran out).
    #[serde(rename = "SIGKILL")]
    Kill,
}

/// The fields of `restarting`: when it starts again and how many restarts it has spent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Restarting {
    /// How long until it is started again, in milliseconds.
    pub(crate) delay_ms: u64,
    /// The death is charged to the task it was running (no delay, no restart budget spent).
    pub(crate) charged_to_task: bool,
    /// Restarts so far, this one included.
    pub(crate) restarts: u32,
}

/// The fields of `failed`: the death that exceeded the restart limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Failed {
    /// How its last run ended.
    pub(crate) exit: ExitReason,
    /// Restarts within the window that reached the limit.
    pub(crate) restarts_within: usize,
    /// The window the restarts were counted in, in milliseconds.
    pub(crate) within_ms: u64,
}

impl SupervisorEvent {
    /// The kind, as the `event` field names it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            SupervisorEvent::SupervisorStarted(_) => "supervisor_started",
            SupervisorEvent::SupervisorStopping(_) => "supervisor_stopping",
            SupervisorEvent::SupervisorKilling => "supervisor_killing",
            SupervisorEvent::SupervisorStopped(_) => "supervisor_stopped",
            SupervisorEvent::LeftoverStopping(_) => "leftover_stopping",
            SupervisorEvent::Reloaded(_) => "reloaded",
            SupervisorEvent::Spawned(_) => "spawned",
            SupervisorEvent::Ready(_) => "ready",
            SupervisorEvent::Exited(_) => "exited",
            SupervisorEvent::Stopping(_) => "stopping",
            SupervisorEvent::Stopped => "stopped",
            SupervisorEvent::Restarting(_) => "restarting",
            SupervisorEvent::Failed(_) => "failed",
            SupervisorEvent::Unknown => "unknown",
        }
    }

    /// The kind's own fields, without `event`: what a log line about it shows.
    pub(crate) fn fields(&self) -> Value {
        let mut fields = to_object(self);
        fields.remove("event");
        Value::Object(fields)
    }
}

/// The replica an event is about, in the state the change left it: the fields every replica
/// event carries beside its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Replica {
    /// `role#replica`.
    pub(crate) child: String,
    pub(crate) role: String,
    pub(crate) replica: u32,
    pub(crate) state: ChildState,
}

impl Replica {
    pub(crate) fn of(status: &ChildStatus) -> Replica {
        Replica {
            child: status.name.clone(),
            role: status.role.clone(),
            replica: status.replica,
            state: status.state,
        }
    }

    /// The replica a record read back is about; `None` for the supervisor's own events.
    #[cfg(test)]
    pub(crate) fn from_record(record: &Value) -> Option<Replica> {
        Replica::deserialize(record).ok()
    }
}

/// One line of the log: an event, and the replica it is about (for a replica's event).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub(crate) replica: Option<Replica>,
    pub(crate) event: SupervisorEvent,
}

impl Record {
    /// The supervisor's own event.
    pub(crate) fn own(event: SupervisorEvent) -> Record {
        Record {
            replica: None,
            event,
        }
    }

    /// The fields of its line, before the log adds `v`, `seq` and `ts`.
    pub(crate) fn to_fields(&self) -> Map<String, Value> {
        let mut fields = self.replica.as_ref().map(to_object).unwrap_or_default();
        fields.extend(to_object(&self.event));
        fields
    }

    /// A record read back. A kind this version does not know, or fields that do not fit it,
    /// is [`SupervisorEvent::Unknown`].
    #[cfg(test)]
    pub(crate) fn from_record(record: &Value) -> Record {
        Record {
            replica: Replica::from_record(record),
            event: SupervisorEvent::deserialize(record).unwrap_or(SupervisorEvent::Unknown),
        }
    }
}

/// The supervisor's log of `workspace`, read back (a torn last line left out).
#[cfg(test)]
pub(crate) fn read_events(workspace: &std::path::Path) -> std::io::Result<Vec<Record>> {
    let records = orchestrate_engine::events::read(&super::status_file::events_path(workspace))?;
    Ok(records.iter().map(Record::from_record).collect())
}

/// The kinds about one replica: their lines carry its [`Replica`] fields.
pub(crate) const REPLICA_KINDS: [&str; 7] = [
    "spawned",
    "ready",
    "exited",
    "stopping",
    "stopped",
    "restarting",
    "failed",
];

/// `docs/schema/supervisor-events.schema.json`: the schema of `SupervisorEvent` as written,
/// each of the `REPLICA_KINDS` with the `Replica` fields too (`allOf`); the envelope (`v`,
/// `seq`, `ts`) is not in it.
pub fn json_schema() -> String {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    let replica = generator.subschema_for::<Replica>().to_value();
    let mut schema = generator
        .into_root_schema_for::<SupervisorEvent>()
        .to_value();
    let kinds = schema.get_mut("oneOf").and_then(Value::as_array_mut);
    for kind in kinds.into_iter().flatten() {
        let name = kind
            .pointer("/properties/event/const")
            .and_then(Value::as_str);
        if name.is_some_and(|name| REPLICA_KINDS.contains(&name))
            && let Some(kind) = kind.as_object_mut()
        {
            kind.insert("allOf".into(), Value::Array(vec![replica.clone()]));
        }
    }
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// A struct or a tagged variant as the JSON object it serializes to (they all are objects, of
/// plain data that cannot fail to serialize).
fn to_object(value: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
