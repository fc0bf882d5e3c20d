//! Finding runs: where a run's records live (`.orchestrate/runs/`, a task's `running/`,
//! `processed/` or `failed/` directory), naming one by id or task, the newest run, and refusing a
//! run whose directory or record files lead outside the workspace.
//!
//! Does not read the records themselves (`load`) or interpret them (`fold`).

use super::error::ObserveError;
use orchestrate_engine::state::RunDir;
use serde::Serialize;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// Where a run's records live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RunSource {
    /// `.orchestrate/runs/<run_id>/`: a run started by `orchestrate run`.
    Runs,
    /// `processed/<ts>_<role>_<id>/`: a task's attempt that succeeded.
    Processed,
    /// `failed/<ts>_<role>_<id>/`: a task's attempt that failed.
    Failed,
    /// `running/<role>/<id>/`: a task's attempt in flight.
    Running,
}

#[derive(Debug, Clone)]
pub(super) struct RunLoc {
    pub(super) root: PathBuf,
    pub(super) source: RunSource,
    /// The directory's name: the run id for `Runs`, the task directory's name otherwise.
    pub(super) name: String,
}

impl RunLoc {
    pub(super) fn label(&self, workspace: &Path) -> String {
        orchestrate_base::fsutil::relative(workspace, &self.root)
    }
}

pub(super) fn dir_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A task directory holds a run when the runner wrote into it; quarantined inputs and the
/// spec's plain `processed/` task files have no records and are not runs.
fn has_records(dir: &Path) -> bool {
    dir.join("events.jsonl").is_file() || dir.join("state.json").is_file()
}

/// Every run of the workspace: `.orchestrate/runs/*` and the task runs under `processed/` and
/// `failed/` (finished attempts), oldest first by directory name within each place.
pub(super) fn all_runs(workspace: &Path) -> Vec<RunLoc> {
    let mut out: Vec<RunLoc> = orchestrate_engine::runs::subdirs(&RunDir::runs_dir(workspace))
        .into_iter()
        .map(|root| RunLoc {
            name: dir_name(&root),
            root,
            source: RunSource::Runs,
        })
        .collect();
    for (dir, source) in [
        ("processed", RunSource::Processed),
        ("failed", RunSource::Failed),
    ] {
        for root in orchestrate_engine::runs::subdirs(&workspace.join(dir)) {
            if has_records(&root) {
                out.push(RunLoc {
                    name: dir_name(&root),
                    root,
                    source,
                });
            }
        }
    }
    out
}

/// The files a run's readers open: each must stay inside the workspace.
const RECORD_FILES: &[&str] = &[
    "events.jsonl",
    "state.json",
    "status.json",
    "workflow.yaml",
    "logs",
];

/// Why a run's directory, or a record file in it, leads outside the workspace (a symbolic link
/// or `..`): its records are then not read at all.
pub(super) fn outside(workspace: &Path, root: &Path) -> Option<String> {
    std::iter::once(root.to_path_buf())
        .chain(RECORD_FILES.iter().map(|name| root.join(name)))
        .find_map(|path| orchestrate_base::fsutil::check_inside(workspace, &path).err())
        .map(|err| err.to_string())
}

/// [`find_run`], refusing a run whose records lead outside the workspace.
pub(super) fn locate(workspace: &Path, id: &str) -> Result<RunLoc, ObserveError> {
    let loc = find_run(workspace, id)?;
    match outside(workspace, &loc.root) {
        Some(reason) => Err(ObserveError::Outside {
            id: id.to_string(),
            reason,
        }),
        None => Ok(loc),
    }
}

/// Finds run `id`: a run id under `.orchestrate/runs/`, else a task run whose directory is named
/// `id` (or `processed/NAME`, `failed/NAME`), ends in `_<id>` (a task id), or whose run id is
/// `id`. Of several attempts of one task, the newest wins.
fn find_run(workspace: &Path, id: &str) -> Result<RunLoc, ObserveError> {
    let runs_dir = RunDir::runs_dir(workspace);
    let (prefix, bare) = match id.split_once('/') {
        Some((p @ ("processed" | "failed" | "running"), rest)) => (Some(p), rest),
        _ => (None, id),
    };
    orchestrate_base::ids::check_id(bare).map_err(|reason| ObserveError::BadId {
        id: id.to_string(),
        reason,
    })?;
    if prefix.is_none() {
        let root = runs_dir.join(bare);
        if root.is_dir() {
            return Ok(RunLoc {
                root,
                source: RunSource::Runs,
                name: bare.to_string(),
            });
        }
        // A child run (a `workflow:` step's) lives inside its parent's RUN_ROOT.
        if let Some(root) = orchestrate_engine::runs::find_child(
            &orchestrate_engine::runs::subdirs(&runs_dir),
            bare,
        ) {
            return Ok(RunLoc {
                root,
                source: RunSource::Runs,
                name: bare.to_string(),
            });
        }
    }
    let mut candidates: Vec<RunLoc> = Vec::new();
    for (dir, source) in [
        ("processed", RunSource::Processed),
        ("failed", RunSource::Failed),
    ] {
        if prefix.is_some_and(|p| p != dir) {
            continue;
        }
        for root in orchestrate_engine::runs::subdirs(&workspace.join(dir)) {
            candidates.push(RunLoc {
                name: dir_name(&root),
                root,
                source,
            });
        }
    }
    if prefix.is_none_or(|p| p == "running") {
        for role_dir in orchestrate_engine::runs::subdirs(&workspace.join("running")) {
            for root in orchestrate_engine::runs::subdirs(&role_dir) {
                candidates.push(RunLoc {
                    name: dir_name(&root),
                    root,
                    source: RunSource::Running,
                });
            }
        }
    }
    let suffix = format!("_{bare}");
    let mut matches: Vec<RunLoc> = candidates
        .iter()
        .filter(|c| has_records(&c.root))
        .filter(|c| c.name == bare || c.name.ends_with(&suffix))
        .cloned()
        .collect();
    if matches.is_empty() {
        // The run id recorded inside a task directory (what `status.json` calls `run_id`).
        matches = candidates
            .into_iter()
            .filter(|c| orchestrate_engine::runs::recorded_run_id(&c.root).as_deref() == Some(bare))
            .collect();
    }
    // Running attempts are the newest; finished ones sort by their completion timestamp.
    matches.sort_by(|a, b| {
        (a.source == RunSource::Running, &a.name).cmp(&(b.source == RunSource::Running, &b.name))
    });
    matches.pop().ok_or_else(|| ObserveError::NoSuchRun {
        id: id.to_string(),
        runs_dir,
    })
}

/// The newest run under `.orchestrate/runs/`. Run ids start with their UTC start second, so the
/// greatest name is the newest; runs started in the same second are told apart by `started_at`.
fn newest_run(workspace: &Path) -> Option<RunLoc> {
    let dirs = orchestrate_engine::runs::subdirs(&RunDir::runs_dir(workspace));
    let last = dirs.last().map(|d| dir_name(d))?;
    let second = last.split('-').next().unwrap_or(&last).to_string();
    dirs.into_iter()
        .filter(|d| dir_name(d).starts_with(&second))
        .map(|root| {
            let started = RunDir { root: root.clone() }
                .read_state()
                .map(|s| s.started_at)
                .unwrap_or_default();
            (started, dir_name(&root), root)
        })
        .max()
        .map(|(_, name, root)| RunLoc {
            root,
            source: RunSource::Runs,
            name,
        })
}

/// How many swarm task runs the workspace holds, by where they are.
#[derive(Default)]
pub(super) struct TaskRuns {
    pub(super) running: usize,
    processed: usize,
    pub(super) failed: usize,
}

impl TaskRuns {
    pub(super) fn count(workspace: &Path) -> TaskRuns {
        let with_records = |dirs: Vec<PathBuf>| dirs.iter().filter(|d| has_records(d)).count();
        TaskRuns {
            running: orchestrate_engine::runs::subdirs(&workspace.join("running"))
                .iter()
                .map(|role| with_records(orchestrate_engine::runs::subdirs(role)))
                .sum(),
            processed: with_records(orchestrate_engine::runs::subdirs(
                &workspace.join("processed"),
            )),
            failed: with_records(orchestrate_engine::runs::subdirs(&workspace.join("failed"))),
        }
    }

    /// "task runs: 2 running, 50 processed, 3 failed; ..." when there are any.
    pub(super) fn note(&self) -> Option<String> {
        if self.running + self.processed + self.failed == 0 {
            return None;
        }
        Some(format!(
            "task runs: {} running, {} processed, {} failed; `orchestrate tasks` lists them, `orchestrate status TASK` shows one",
            self.running, self.processed, self.failed
        ))
    }
}

/// When a run started: its first event's time (`run_started`), else its state's.
fn started_at_of(root: &Path) -> String {
    use std::io::BufRead;
    let first = fs::File::open(root.join("events.jsonl"))
        .ok()
        .and_then(|file| {
            let mut line = String::new();
            std::io::BufReader::new(file).read_line(&mut line).ok()?;
            let value: Value = serde_json::from_str(&line).ok()?;
            value["ts"].as_str().map(str::to_string)
        });
    first
        .or_else(|| {
            RunDir {
                root: root.to_path_buf(),
            }
            .read_state()
            .ok()
            .map(|s| s.started_at)
        })
        .unwrap_or_default()
}

/// The newest run of the workspace, a swarm task's included: the newest under
/// `.orchestrate/runs/`, every task attempt in flight under `running/`, and the newest finished
/// task run of `processed/` and of `failed/` (named after when they finished), whichever
/// started last.
pub(super) fn newest_any_run(workspace: &Path) -> Option<RunLoc> {
    let mut candidates: Vec<RunLoc> = newest_run(workspace).into_iter().collect();
    for role_dir in orchestrate_engine::runs::subdirs(&workspace.join("running")) {
        candidates.extend(
            orchestrate_engine::runs::subdirs(&role_dir)
                .into_iter()
                .filter(|d| has_records(d))
                .map(|root| RunLoc {
                    name: dir_name(&root),
                    root,
                    source: RunSource::Running,
                }),
        );
    }
    for (dir, source) in [
        ("processed", RunSource::Processed),
        ("failed", RunSource::Failed),
    ] {
        if let Some(root) = orchestrate_engine::runs::subdirs(&workspace.join(dir))
            .into_iter()
            .rev()
            .find(|d| has_records(d))
        {
            candidates.push(RunLoc {
                name: dir_name(&root),
                root,
                source,
            });
        }
    }
    candidates
        .into_iter()
        .map(|loc| (started_at_of(&loc.root), loc))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, loc)| loc)
}
