//! Runs of a workspace found by id: the run directories under `.orchestrate/runs/` and the child
//! runs of `workflow:` steps nested below them.
//!
//! Owns: reading a run directory's own run id (its record, its first event, else its snapshot),
//! the `run_started` event a log begins with, and finding a child run and its parent's id. Does
//! not read what a run did (`observe` folds the events) nor decide where a new run goes
//! (`state`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::event::{Event, RunStarted};
use crate::state::RunDir;
use orchestrate_queue::record::TaskStatus;

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
    let from_status = || -> Option<String> {
        TaskStatus::from_bytes(&fs::read(root.join("status.json")).ok()?)?.run_id
    };
    let dir = RunDir {
        root: root.to_path_buf(),
    };
    from_status()
        .or_else(|| {
            first_run_started(&dir.events())
                .map(|started| started.run_id)
                .filter(|id| !id.is_empty())
        })
        .or_else(|| dir.read_state().ok().map(|state| state.run_id))
}

/// The `run_started` event a run's log begins with, if the run got that far. Reads the first
/// line alone, bounded: a `run_started` event is small.
pub fn first_run_started(events: &Path) -> Option<RunStarted> {
    let first = orchestrate_base::fsutil::first_line(events, FIRST_LINE_LIMIT)?;
    match serde_json::from_str::<Event>(&first).ok()? {
        Event::RunStarted(started) => Some(started),
        _ => None,
    }
}

/// The most of a log's first line [`first_run_started`] reads.
const FIRST_LINE_LIMIT: u64 = 1024 * 1024;

/// When `id` is a child run among the workspace's runs: its parent's run id (as its
/// `run_started` names it; `PARENT` if it cannot be read).
pub fn parent_of_child(workspace: &Path, id: &str) -> Option<String> {
    let dir = find_child(&subdirs(&RunDir::runs_dir(workspace)), id)?;
    let parent = first_run_started(&RunDir { root: dir }.events())
        .and_then(|started| started.parent.map(|parent| parent.run_id));
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
