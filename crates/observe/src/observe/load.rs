//! Reading a run's records (`state.json`, `events.jsonl`, `status.json`) strictly, with notes
//! for what was left out (a torn final line, an unreadable snapshot).
//!
//! Does not find runs (`locate`) or interpret the events (`fold`).

use super::locate::{RunLoc, outside};
use orchestrate_engine::event::{Envelope, Event, RunStarted};
use orchestrate_engine::state::{RunDir, RunState, StateError};
use serde_json::Value;
use std::fs;
use std::io;
use std::path::Path;

/// The events of one log: every complete record, and whether a torn final line was dropped.
use orchestrate_engine::events::read_checked as read_events;

/// One run's records, read and checked.
pub(super) struct Loaded {
    pub(super) loc: RunLoc,
    pub(super) run_id: String,
    pub(super) events: Vec<Value>,
    pub(super) state: Option<RunState>,
    pub(super) status_json: Option<Value>,
    pub(super) notes: Vec<String>,
}

/// The first `run_started` event among `events`, with its envelope.
pub(super) fn run_started(events: &[Value]) -> Option<(Envelope, RunStarted)> {
    events
        .iter()
        .find_map(|record| match Event::from_record(record) {
            Event::RunStarted(started) => Some((Envelope::from_record(record), started)),
            _ => None,
        })
}

/// Reads a run's records; `Err` is the reason it cannot be reported on.
pub(super) fn load(workspace: &Path, loc: &RunLoc) -> Result<Loaded, String> {
    if let Some(reason) = outside(workspace, &loc.root) {
        return Err(format!("not read: {reason}"));
    }
    let dir = RunDir {
        root: loc.root.clone(),
    };
    let mut notes = Vec::new();
    let state = match dir.read_state() {
        Ok(state) => Some(state),
        Err(StateError::TooNew { version, .. }) => {
            return Err(format!(
                "state.json has format_version {version}, newer than this orchestrate reads; \
                 upgrade orchestrate to read it"
            ));
        }
        Err(StateError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
        Err(err) => {
            // The event log is the source of truth; a bad snapshot only costs its extras.
            notes.push(format!("state.json ignored: {err}"));
            None
        }
    };
    let events_path = dir.events();
    let events = if events_path.is_file() {
        let file = read_events(&events_path)?;
        if file.torn_tail {
            notes.push(
                "events.jsonl ends in a torn line (a crash mid-write); it was left out".into(),
            );
        }
        file.records
    } else if state.is_some() {
        notes.push("no events.jsonl: only the state snapshot was read".into());
        Vec::new()
    } else {
        return Err("neither events.jsonl nor state.json is there".into());
    };
    let status_json = fs::read(loc.root.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let run_id = run_started(&events)
        .map(|(_, started)| started.run_id)
        .filter(|id| !id.is_empty())
        .or_else(|| state.as_ref().map(|s| s.run_id.clone()))
        .unwrap_or_else(|| loc.name.clone());
    Ok(Loaded {
        loc: loc.clone(),
        run_id,
        events,
        state,
        status_json,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fold::fold;
    use super::*;
    use serde_json::json;

    #[test]
    fn records_are_read_strictly_but_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        fs::write(
            &path,
            "{\"v\":1,\"seq\":1,\"event\":\"a\"}\n{\"v\":1,\"seq\":2,\"ev",
        )
        .unwrap();
        let file = read_events(&path).unwrap();
        assert_eq!(file.records.len(), 1);
        assert!(file.torn_tail);
        fs::write(&path, "{\"v\":1}\nnot json\n{\"v\":1}\n").unwrap();
        assert!(read_events(&path).unwrap_err().contains("line 2"));
        fs::write(&path, "{\"v\":1}\n{\"v\":3,\"event\":\"x\"}\n").unwrap();
        assert!(read_events(&path).unwrap_err().contains("v3"));
        // Unknown events and fields are skipped by the fold.
        let facts = fold(
            &[json!({"v": 1, "event": "something_new", "step": "X", "whatever": 1})],
            "r",
        );
        assert!(facts.executions.is_empty());
    }
}
