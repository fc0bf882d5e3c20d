//! Runs of a workspace found by id: the run directories under `.orchestrate/runs/` and the child
//! runs of `workflow:` steps nested below them.
//!
//! Owns: reading a run directory's own run id (its snapshot, else its first event), and finding
//! a child run and its parent's id. Does not read what a run did (`observe` folds the events)
//! nor decide where a new run goes (`state`).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::event::Event;
use crate::state::RunDir;

/// The directories directly in `dir`, sorted (none when it cannot be read).
pub fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// The run id a task directory records: in its status.json (finished), else the first event of
/// its events.jsonl (`run_started`), else a state.json (records written before task runs
/// stopped writing one).
pub fn recorded_run_id(root: &Path) -> Option<String> {
    let from_json = |name: &str| -> Option<String> {
        let bytes = fs::read(root.join(name)).ok()?;
        let value: Value = serde_json::from_slice(&bytes).ok()?;
        value["run_id"].as_str().map(str::to_string)
    };
    let from_events = || -> Option<String> {
        use std::io::BufRead;
        let file = fs::File::open(root.join("events.jsonl")).ok()?;
        let mut first = String::new();
        std::io::BufReader::new(file).read_line(&mut first).ok()?;
        let value: Value = serde_json::from_str(&first).ok()?;
        (value["event"] == "run_started")
            .then(|| value["run_id"].as_str().map(str::to_string))
            .flatten()
    };
    from_json("status.json")
        .or_else(from_events)
        .or_else(|| from_json("state.json"))
}

/// When `id` is a child run among the workspace's runs: its parent's run id (as its
/// `run_started` names it; `PARENT` if it cannot be read).
pub fn parent_of_child(workspace: &Path, id: &str) -> Option<String> {
    let dir = find_child(&subdirs(&RunDir::runs_dir(workspace)), id)?;
    let parent = crate::events::read(&RunDir { root: dir }.events())
        .ok()
        .and_then(|records| records.into_iter().next())
        .and_then(|first| match Event::from_record(&first) {
            Event::RunStarted(started) => started.parent.map(|parent| parent.run_id),
            _ => None,
        });
    Some(parent.unwrap_or_else(|| "PARENT".into()))
}

/// A child run by its run id: under `runs/<id>/children/` (at any depth) of the workspace's
/// runs.
pub fn find_child(roots: &[PathBuf], id: &str) -> Option<PathBuf> {
    let mut stack: Vec<PathBuf> = roots
        .iter()
        .map(|r| r.join(crate::state::CHILDREN_DIR))
        .collect();
    while let Some(dir) = stack.pop() {
        for child in subdirs(&dir) {
            if recorded_run_id(&child).as_deref() == Some(id) {
                return Some(child);
            }
            stack.push(child.join(crate::state::CHILDREN_DIR));
        }
    }
    None
}
