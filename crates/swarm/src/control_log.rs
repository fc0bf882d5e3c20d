//! The control log, `.orchestrate/control/events.jsonl`: an account of who steered what (pauses,
//! cancels, breakers opening and closing), appended by every process that does.
//!
//! Owns: the file, its records as types (`ControlEvent`; docs/events.md's table, and
//! `docs/schema/control-events.schema.json`) and its line format: `v`, `ts` and the event's
//! fields, keys sorted as serde_json writes a map, no `seq`.
//! Does not act on anything it records (`control`, `breaker` and the role processes do).

use std::io::Write;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One record of the control log, tagged by its kind (`"event": "role_paused"`). `by` names
/// who did it: a user and host (`orchestrate` commands) or a role process (`role#replica`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
#[schemars(title = "orchestrate control event")]
pub(crate) enum ControlEvent {
    /// `orchestrate pause`.
    RolePaused {
        role: String,
        by: String,
    },
    /// `orchestrate resume ROLE`.
    RoleResumed {
        role: String,
        by: String,
        paused_since: String,
    },
    /// `orchestrate cancel` of a task.
    TaskCancelRequested {
        role: String,
        task: String,
        by: String,
    },
    /// `orchestrate cancel` of a run: `pid` is the run's process, signalled.
    RunCancelRequested {
        run_id: String,
        pid: u32,
        by: String,
    },
    BreakerOpened(BreakerOpened),
    /// The first role process to ask after the cool-down runs the one trial.
    BreakerHalfOpen {
        runtime: String,
        /// Why it had opened.
        after: Option<String>,
        cooldown_sec: f64,
    },
    /// The trial succeeded.
    BreakerClosed {
        runtime: String,
        after: Option<String>,
        by: String,
    },
    /// A kind this version does not know: readers skip it. Never written.
    #[serde(other, skip_serializing)]
    #[schemars(skip)]
    Unknown,
}

/// A breaker opened: on failures of one class, on a reset time, or after a failed trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct BreakerOpened {
    pub(crate) runtime: String,
    pub(crate) class: String,
    pub(crate) reason: String,
    /// When it half-opens (RFC 3339).
    pub(crate) until: Option<String>,
    pub(crate) cooldown_sec: f64,
    /// On a first opening by consecutive failures: how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) failures: Option<u32>,
    /// After a failed trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reopened: Option<bool>,
    /// The role process whose step result opened it.
    pub(crate) by: String,
}

impl ControlEvent {
    /// The kind, as the `event` field names it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ControlEvent::RolePaused { .. } => "role_paused",
            ControlEvent::RoleResumed { .. } => "role_resumed",
            ControlEvent::TaskCancelRequested { .. } => "task_cancel_requested",
            ControlEvent::RunCancelRequested { .. } => "run_cancel_requested",
            ControlEvent::BreakerOpened(_) => "breaker_opened",
            ControlEvent::BreakerHalfOpen { .. } => "breaker_half_open",
            ControlEvent::BreakerClosed { .. } => "breaker_closed",
            ControlEvent::Unknown => "unknown",
        }
    }

    /// Its fields, without `event`: what a log line about it shows.
    pub(crate) fn fields(&self) -> Value {
        let mut fields = to_object(self);
        fields.remove("event");
        Value::Object(fields)
    }

    /// A record read back ([`ControlEvent::Unknown`] when it is of no kind this version knows,
    /// or its fields do not fit it).
    #[cfg(test)]
    pub(crate) fn from_record(record: &Value) -> ControlEvent {
        ControlEvent::deserialize(record).unwrap_or(ControlEvent::Unknown)
    }
}

/// `docs/schema/control-events.schema.json`: the schema of `ControlEvent` as written (`v`
/// and `ts` are not in it).
pub fn json_schema() -> String {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    let schema = generator.into_root_schema_for::<ControlEvent>();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// `.orchestrate/control/events.jsonl`.
pub(crate) fn path(workspace: &Path) -> PathBuf {
    workspace
        .join(".orchestrate")
        .join("control")
        .join("events.jsonl")
}

/// The line of `event` written now (with its newline).
fn line(event: &ControlEvent) -> String {
    let mut record = Map::new();
    record.insert("v".into(), json!(1));
    record.insert("ts".into(), json!(orchestrate_base::clock::now_rfc3339()));
    record.extend(to_object(event));
    let mut line = Value::Object(record).to_string();
    line.push('\n');
    line
}

/// Appends one record to `.orchestrate/control/events.jsonl` (one `write` per line; several
/// processes append, so records carry no `seq`: order by `ts`). Failures are ignored: the log
/// is an account, not a protocol.
pub(crate) fn log_event(workspace: &Path, event: &ControlEvent) {
    let line = line(event);
    let path = path(workspace);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

/// A tagged variant or a struct as the JSON object it serializes to (plain data: it cannot fail).
fn to_object(value: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Reads the control log back (tests only); unreadable lines are skipped.
#[cfg(test)]
pub(crate) fn read_log(workspace: &Path) -> Vec<ControlEvent> {
    std::fs::read_to_string(path(workspace))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|record| ControlEvent::from_record(&record))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line `log_event` wrote before the types, from its `json!` fields.
    fn old_line(event: &str, fields: Value) -> String {
        let mut record = json!({"v": 1, "ts": "T", "event": event});
        if let (Some(out), Value::Object(fields)) = (record.as_object_mut(), fields) {
            out.extend(fields);
        }
        record.to_string()
    }

    fn new_line(event: &ControlEvent) -> String {
        let mut record: Value = serde_json::from_str(&line(event)).unwrap();
        record["ts"] = json!("T");
        record.to_string()
    }

    #[test]
    fn every_kind_is_the_line_the_json_macro_wrote() {
        let opened = |failures: Option<u32>, reopened: Option<bool>| {
            ControlEvent::BreakerOpened(BreakerOpened {
                runtime: "claude".into(),
                class: "rate_limit".into(),
                reason: "3 consecutive rate_limit failures".into(),
                until: Some("2026-12-07T19:00:00Z".into()),
                cooldown_sec: 0.25,
                failures,
                reopened,
                by: "qa#1".into(),
            })
        };
        let base = json!({"runtime": "claude", "class": "rate_limit", "by": "qa#1",
            "reason": "3 consecutive rate_limit failures", "until": "2026-12-07T19:00:00Z",
            "cooldown_sec": 0.25});
        let with = |extra: Value| {
            let mut fields = base.clone();
            fields
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            fields
        };
        let kinds = [
            (
                ControlEvent::RolePaused {
                    role: "qa".into(),
                    by: "uid 0".into(),
                },
                old_line("role_paused", json!({"role": "qa", "by": "uid 0"})),
            ),
            (
                ControlEvent::RoleResumed {
                    role: "qa".into(),
                    by: "uid 0".into(),
                    paused_since: "2026-12-07T19:04:14.602568Z".into(),
                },
                old_line(
                    "role_resumed",
                    json!({"role": "qa", "by": "uid 0", "paused_since": "2026-12-07T19:04:14.602568Z"}),
                ),
            ),
            (
                ControlEvent::TaskCancelRequested {
                    role: "qa".into(),
                    task: "t1".into(),
                    by: "uid 0".into(),
                },
                old_line(
                    "task_cancel_requested",
                    json!({"role": "qa", "task": "t1", "by": "uid 0"}),
                ),
            ),
            (
                ControlEvent::RunCancelRequested {
                    run_id: "r1".into(),
                    pid: 42,
                    by: "uid 0".into(),
                },
                old_line(
                    "run_cancel_requested",
                    json!({"run_id": "r1", "pid": 42u32, "by": "uid 0"}),
                ),
            ),
            (opened(None, None), old_line("breaker_opened", base.clone())),
            (
                opened(Some(3), None),
                old_line("breaker_opened", with(json!({"failures": 3u32}))),
            ),
            (
                opened(None, Some(true)),
                old_line("breaker_opened", with(json!({"reopened": true}))),
            ),
            (
                ControlEvent::BreakerHalfOpen {
                    runtime: "claude".into(),
                    after: None,
                    cooldown_sec: 30.0,
                },
                old_line(
                    "breaker_half_open",
                    json!({"runtime": "claude", "after": None::<String>, "cooldown_sec": 30.0}),
                ),
            ),
            (
                ControlEvent::BreakerClosed {
                    runtime: "claude".into(),
                    after: Some("the half-open trial failed (rate_limit)".into()),
                    by: "qa#1".into(),
                },
                old_line(
                    "breaker_closed",
                    json!({"after": "the half-open trial failed (rate_limit)", "runtime": "claude", "by": "qa#1"}),
                ),
            ),
        ];
        for (event, old) in &kinds {
            assert_eq!(new_line(event), *old);
            let read = ControlEvent::from_record(&serde_json::from_str(old).unwrap());
            assert_eq!(read, *event);
        }
    }

    /// Lines `orchestrate pause`, `resume` and `cancel` (a run) wrote before the types, read
    /// back and written again byte for byte.
    #[test]
    fn lines_of_the_binary_round_trip() {
        for line in include_str!("control_log_captured.jsonl").lines() {
            let value: Value = serde_json::from_str(line).unwrap();
            let event = ControlEvent::from_record(&value);
            assert_ne!(event, ControlEvent::Unknown, "{line}");
            let mut again = to_object(&event);
            again.insert("v".into(), value["v"].clone());
            again.insert("ts".into(), value["ts"].clone());
            assert_eq!(Value::Object(again).to_string(), line);
        }
    }

    #[test]
    fn a_kind_this_version_does_not_know_is_unknown() {
        let newer = json!({"v": 1, "ts": "T", "event": "role_drained", "role": "qa"});
        assert_eq!(ControlEvent::from_record(&newer), ControlEvent::Unknown);
    }
}
