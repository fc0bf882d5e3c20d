use std::path::Path;

use serde_json::{Map, Value, json};

use orchestrate_engine::events::{EventLog, read};

use super::*;

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// The lines of a log with their timestamps blanked (they are the only bytes that differ).
fn lines(path: &Path) -> Vec<String> {
    read(path)
        .unwrap()
        .into_iter()
        .map(|mut record| {
            record["ts"] = json!("T");
            record.to_string()
        })
        .collect()
}

fn qa(state: ChildState) -> ChildStatus {
    let mut status = ChildStatus::new(&super::super::spec::ChildSpec {
        name: "qa#1".into(),
        role: "qa".into(),
        replica: 1,
        argv: vec!["true".into()],
        env: Vec::new(),
    });
    status.state = state;
    status
}

/// Every kind, as the typed record and as the `json!` fields the supervisor wrote before the
/// types (`records.rs` merged a replica's `child`, `role`, `replica`, `state` into them).
fn every_kind() -> Vec<(Record, Value)> {
    own_kinds().into_iter().chain(replica_kinds()).collect()
}

/// The supervisor's own kinds.
fn own_kinds() -> Vec<(Record, Value)> {
    let own = |event: SupervisorEvent, old: Value| (Record::own(event), old);
    vec![
        own(
            SupervisorEvent::SupervisorStarted(SupervisorStarted {
                pid: 41,
                children: 2,
            }),
            json!({"event": "supervisor_started", "pid": 41, "children": 2usize}),
        ),
        own(
            SupervisorEvent::SupervisorStopping(SupervisorStopping { grace_ms: 30_000 }),
            json!({"event": "supervisor_stopping", "grace_ms": 30_000u64}),
        ),
        own(
            SupervisorEvent::SupervisorKilling,
            json!({"event": "supervisor_killing"}),
        ),
        own(
            SupervisorEvent::SupervisorStopped(SupervisorStopped { killed: false }),
            json!({"event": "supervisor_stopped", "killed": false}),
        ),
        own(
            SupervisorEvent::LeftoverStopping(LeftoverStopping {
                child: "qa#1".into(),
                pid: 7,
                previous_supervisor: 6,
            }),
            json!({"event": "leftover_stopping", "child": "qa#1", "pid": 7, "previous_supervisor": 6}),
        ),
        own(
            SupervisorEvent::Reloaded(Reloaded {
                added: vec!["qa#2".into()],
                removed: Vec::new(),
                problems: vec![RoleProblem {
                    role: "dev".into(),
                    message: "agents/dev.yaml:1:1: bad".into(),
                }],
            }),
            json!({"event": "reloaded", "added": ["qa#2"], "removed": [], "problems": [
                RoleProblem { role: "dev".into(), message: "agents/dev.yaml:1:1: bad".into() }
            ]}),
        ),
    ]
}

/// The kinds about a replica.
fn replica_kinds() -> Vec<(Record, Value)> {
    let replica = |state: ChildState, event: SupervisorEvent, old: Value| {
        let status = qa(state);
        let mut fields = json!({
            "child": status.name,
            "role": status.role,
            "replica": status.replica,
            "state": status.state,
        });
        fields.as_object_mut().unwrap().extend(object(old));
        (
            Record {
                replica: Some(Replica::of(&status)),
                event,
            },
            fields,
        )
    };
    let exit = ExitReason::Exited { code: 3 };
    vec![
        replica(
            ChildState::Starting,
            SupervisorEvent::Spawned(Pid { pid: 9 }),
            json!({"event": "spawned", "pid": 9}),
        ),
        replica(
            ChildState::Running,
            SupervisorEvent::Ready(Pid { pid: 9 }),
            json!({"event": "ready", "pid": 9}),
        ),
        replica(
            ChildState::Running,
            SupervisorEvent::Exited(Exited {
                pid: Some(9),
                exit: exit.clone(),
                asked: false,
            }),
            json!({"event": "exited", "pid": Some(9u32), "exit": exit, "asked": false}),
        ),
        replica(
            ChildState::Starting,
            SupervisorEvent::Exited(Exited {
                pid: None,
                exit: ExitReason::SpawnFailed {
                    message: "failed to start `x`: No such file or directory (os error 2)".into(),
                },
                asked: false,
            }),
            json!({"event": "exited", "pid": None::<u32>, "exit": ExitReason::SpawnFailed {
                message: "failed to start `x`: No such file or directory (os error 2)".into(),
            }, "asked": false}),
        ),
        replica(
            ChildState::Stopping,
            SupervisorEvent::Stopping(Stopping {
                pid: 9,
                signal: StopSignal::Term,
                grace_ms: Some(30_000),
            }),
            json!({"event": "stopping", "pid": 9, "signal": "SIGTERM", "grace_ms": 30_000u64}),
        ),
        replica(
            ChildState::Stopping,
            SupervisorEvent::Stopping(Stopping {
                pid: 9,
                signal: StopSignal::Kill,
                grace_ms: None,
            }),
            json!({"event": "stopping", "pid": 9, "signal": "SIGKILL"}),
        ),
        replica(
            ChildState::Stopped,
            SupervisorEvent::Stopped,
            json!({"event": "stopped"}),
        ),
        replica(
            ChildState::Backoff,
            SupervisorEvent::Restarting(Restarting {
                delay_ms: 250,
                charged_to_task: true,
                restarts: 1,
            }),
            json!({"event": "restarting", "delay_ms": 250u64, "charged_to_task": true, "restarts": 1u32}),
        ),
        replica(
            ChildState::Failed,
            SupervisorEvent::Failed(Failed {
                exit: exit.clone(),
                restarts_within: 5,
                within_ms: 60_000,
            }),
            json!({"event": "failed", "exit": exit, "restarts_within": 5usize, "within_ms": 60_000u64}),
        ),
    ]
}

#[test]
fn every_kind_is_the_line_the_json_macro_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let (typed, untyped) = (dir.path().join("typed"), dir.path().join("untyped"));
    let mut new = EventLog::open(&typed, Vec::new()).unwrap();
    let mut old = EventLog::open(&untyped, Vec::new()).unwrap();
    let kinds = every_kind();
    for (record, fields) in &kinds {
        new.append_record(record.to_fields(), false).unwrap();
        old.append_record(object(fields.clone()), false).unwrap();
    }
    let (new, old) = (lines(&typed), lines(&untyped));
    assert_eq!(new.len(), kinds.len());
    for (new, old) in new.iter().zip(&old) {
        assert_eq!(new, old);
    }
    // One pinned in full, keys sorted as serde_json writes a map.
    assert_eq!(
        new[8],
        r#"{"asked":false,"child":"qa#1","event":"exited","exit":{"code":3,"kind":"exited"},"pid":9,"replica":1,"role":"qa","seq":9,"state":"running","ts":"T","v":1}"#
    );
}

#[test]
fn the_replica_kinds_are_those_written_with_a_replica() {
    for (record, _) in every_kind() {
        assert_eq!(
            REPLICA_KINDS.contains(&record.event.name()),
            record.replica.is_some(),
            "{}",
            record.event.name()
        );
    }
}

#[test]
fn every_kind_reads_back_as_written() {
    for (record, _) in every_kind() {
        let mut line = record.to_fields();
        line.insert("v".into(), json!(1));
        line.insert("seq".into(), json!(3));
        line.insert("ts".into(), json!("2026-12-07T18:00:00.000000Z"));
        assert_eq!(Record::from_record(&Value::Object(line)), record);
    }
}

/// Lines written by the supervisor before its records were typed (a `swarm up -d` whose role
/// crashed until it failed, then `swarm reload` and `swarm down`), read back through the types
/// and written again byte for byte.
#[test]
fn lines_of_the_binary_round_trip() {
    for line in CAPTURED.lines() {
        let value: Value = serde_json::from_str(line).unwrap();
        let record = Record::from_record(&value);
        assert_ne!(record.event, SupervisorEvent::Unknown, "{line}");
        let mut again = record.to_fields();
        for key in ["v", "seq", "ts"] {
            again.insert(key.into(), value[key].clone());
        }
        assert_eq!(Value::Object(again).to_string(), line);
    }
}

const CAPTURED: &str = include_str!("event_captured.jsonl");

#[test]
fn an_unknown_kind_is_skipped_and_a_replica_only_read_where_there_is_one() {
    let newer = json!({"v": 1, "seq": 1, "ts": "T", "event": "hibernating", "child": "qa#1"});
    assert_eq!(Record::from_record(&newer).event, SupervisorEvent::Unknown);
    let leftover =
        json!({"event": "leftover_stopping", "child": "qa#1", "pid": 7, "previous_supervisor": 6});
    assert_eq!(Record::from_record(&leftover).replica, None);
}

#[test]
fn the_log_shows_the_kinds_own_fields() {
    let (record, _) = &every_kind()[6];
    assert_eq!(record.event.name(), "spawned");
    assert_eq!(record.event.fields().to_string(), r#"{"pid":9}"#);
    assert_eq!(SupervisorEvent::Stopped.fields().to_string(), "{}");
}
