//! A run's directory and its `state.json` snapshot.
//!
//! Owns: the RUN_ROOT layout (`WORKSPACE/.orchestrate/runs/<run_id>/`, child runs under its
//! `children/`, a fan-out lane's log prefix), the snapshot format, and
//! the run lock that keeps two processes from driving one run. Does not decide when to snapshot
//! (the runner does) and is not the source of truth for resume (`events.jsonl` is).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::step_result::StepResult;
use orchestrate_base::json_file;

/// Version of `state.json`; a reader refuses a newer one.
pub(crate) const STATE_FORMAT: u32 = 1;

/// How a run stands, in `state.json` and `run_finished`; written in snake case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started or resumed and not yet finished (or its process died without finishing).
    Running,
    /// Reached its end without a failing step.
    Succeeded,
    /// It failed: a step failed, a limit stopped it, or its input was invalid.
    Failed,
    /// Stopped by a signal or `orchestrate cancel`; can be resumed.
    Interrupted,
}

impl RunStatus {
    /// As records write it (`succeeded`).
    pub fn label(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// A run's `state.json`: the snapshot a resume starts from and `status` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub(crate) format_version: u32,
    /// The run's id; also the name of its directory under `.orchestrate/runs/`.
    pub run_id: String,
    /// The workflow file as the user named it.
    pub workflow: String,
    /// The workflow's `name:`.
    pub workflow_name: String,
    /// Of the workflow's text as run; `analyze` compares it with the file's current text.
    pub fingerprint: String,
    pub(crate) workspace: String,
    /// How the run stands as of this snapshot.
    pub status: RunStatus,
    /// RFC 3339, of the first start.
    pub started_at: String,
    pub(crate) updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) finished_at: Option<String>,
    /// `${run.timestamp_utc}`: fixed at the first start, kept across resumes.
    pub(crate) timestamp_utc: String,
    pub(crate) context: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) current_step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exit_code: Option<i32>,
    /// Why the run failed or was interrupted; `None` while it runs and when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Step executions so far (visits, iterations and skips included).
    pub(crate) executions: u64,
    /// Sequence number of the last event this snapshot includes.
    pub(crate) events_seq: u64,
    pub(crate) resumes: u32,
    /// The latest result of each step, by name.
    pub steps: BTreeMap<String, StepResult>,
    /// The workflow's `outputs:` as rendered at its successful end (a child run's result).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub(crate) outputs: Map<String, Value>,
    /// The child runs its `workflow:` steps started, by directory name under
    /// `RUN_ROOT/children/`: the link from the parent's state to each child's own RUN_ROOT.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) children: BTreeMap<String, ChildLink>,
}

/// A child run as its parent's `state.json` names it. The fields are in the order they have
/// always been written (alphabetical).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChildLink {
    /// The `workflow:` step's execution number in its lane.
    pub(crate) exec: u64,
    /// The fan-out lane the step ran in (`[]` outside one).
    pub(crate) lane: Vec<u64>,
    /// The child's RUN_ROOT, relative to the workspace.
    pub(crate) run_root: String,
    /// The `workflow:` step's name.
    pub(crate) step: String,
    /// The child workflow's file, as the step names it.
    pub(crate) workflow: String,
}

/// Paths inside one run's directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// RUN_ROOT: the run's directory.
    pub root: PathBuf,
}

impl RunDir {
    /// Where `orchestrate run` keeps its runs: `WORKSPACE/.orchestrate/runs`.
    pub fn runs_dir(workspace: &Path) -> PathBuf {
        workspace.join(".orchestrate").join("runs")
    }

    /// The directory of run `run_id` of `workspace`; nothing is created.
    pub fn new(workspace: &Path, run_id: &str) -> RunDir {
        RunDir {
            root: Self::runs_dir(workspace).join(run_id),
        }
    }

    pub(crate) fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// The run's event log, `events.jsonl`.
    pub fn events(&self) -> PathBuf {
        self.root.join("events.jsonl")
    }
    /// Where the steps' stdout and stderr logs go.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// The workflow text as it was when the run started: resume runs exactly this.
    pub(crate) fn workflow_copy(&self) -> PathBuf {
        self.root.join("workflow.yaml")
    }
    /// Writes the run's copy of its workflow text ([`RunDir::workflow_copy`]). The copy is a hard
    /// link to one kept under `.orchestrate/workflows/<sha-256>.yaml` of `workspace`: a role that
    /// runs the same workflow for every task creates no file (no inode) per task for it. The
    /// kept copy is never written again once linked (a new text, or an old one past the
    /// filesystem's link limit, gets a new file), so every run's copy keeps the text it ran.
    /// Where links cannot be made (another filesystem, no hard links) the copy is written.
    pub(crate) fn write_workflow_copy(&self, workspace: &Path, text: &str) -> io::Result<()> {
        let dest = self.workflow_copy();
        let kept = workspace
            .join(".orchestrate")
            .join("workflows")
            .join(format!(
                "{}.yaml",
                crate::role::workflow_hash(&[text.to_owned()])
            ));
        for _ in 0..2 {
            match fs::hard_link(&kept, &dest) {
                Ok(()) => return Ok(()),
                // Not kept yet, or at the link limit (ext4: 65,000): keep a new copy. Written
                // whole and renamed into place, so a link never sees a partial file.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::EMLINK) =>
                {
                    if let Some(parent) = kept.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    orchestrate_base::fsutil::replace(&kept, text.as_bytes())?;
                }
                Err(_) => break,
            }
        }
        fs::write(&dest, text)
    }

    /// The lock file a running run holds; it contains the holder's process id.
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Creates RUN_ROOT (`logs/` is created by the first step that writes output).
    pub(crate) fn create(&self) -> io::Result<()> {
        // One `mkdir` when the parent exists; a task's RUN_ROOT exists already (its claim made
        // it). Something else by that name fails the first file made in it, naming the path.
        match fs::create_dir(&self.root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(&self.root),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    /// Writes the snapshot; `durable` makes it survive a power loss (fsync file and directory).
    pub(crate) fn write_state(&self, state: &RunState, durable: bool) -> io::Result<()> {
        json_file::write(&self.state(), state, durable)
    }

    /// Reads `state.json`; fails if it is missing, not a run state or of a newer format.
    pub fn read_state(&self) -> Result<RunState, StateError> {
        let path = self.state();
        json_file::read(&path, STATE_FORMAT).map_err(|err| match err {
            json_file::ReadError::Io(source) => StateError::Read { path, source },
            json_file::ReadError::Corrupt(err) => StateError::Corrupt {
                path,
                message: err.to_string(),
            },
            json_file::ReadError::TooNew(version) => StateError::TooNew { path, version },
        })
    }

    /// Takes the run lock, or says who holds it. The lock lives as long as the returned file.
    pub(crate) fn lock_run(&self) -> Result<File, StateError> {
        let path = self.lock();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| StateError::Read {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).ok();
                let _ = writeln!(file, "{}", std::process::id());
                Ok(file)
            }
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path)
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                Err(StateError::Locked { path, holder })
            }
            Err(fs::TryLockError::Error(source)) => Err(StateError::Read { path, source }),
        }
    }
}

/// Why a run's state could not be read or its lock taken.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read or opened.
    #[error("failed to read {}: {source}", path.display())]
    Read {
        /// `state.json`, or the lock file when it could not be opened.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not JSON of a run state.
    #[error("{} is not a valid run state: {message}", path.display())]
    Corrupt {
        /// The run's `state.json`.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The file was written by a newer orchestrate.
    #[error("{} has format_version {version}, newer than this orchestrate understands; upgrade orchestrate", path.display())]
    TooNew {
        /// The run's `state.json`.
        path: PathBuf,
        /// Its `format_version`.
        version: u64,
    },
    /// Another process holds the run's lock: the run is still running.
    #[error("the run is still running (process {holder} holds {}); wait for it or stop it first", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// What the lock file holds: the running process's id.
        holder: String,
    },
}

/// Where the child runs of a run live, inside its RUN_ROOT.
pub(crate) const CHILDREN_DIR: &str = "children";

/// The directory of a child run: `<parent RUN_ROOT>/children/<lane><exec>-<step>`. The lane
/// and execution ordinal replay identically on resume, so a resumed parent finds the same
/// directory.
pub fn child_root(parent_root: &Path, lane: &[u64], exec: u64, step: &str) -> PathBuf {
    let lane = log_prefix(lane);
    parent_root
        .join(CHILDREN_DIR)
        .join(format!("{lane}{exec:04}-{step}"))
}

/// What a lane's step logs start with: `0003.0002.` for item 2 of the fan-out run as
/// execution 3; nothing for the run's own steps (see `runner::fanout`).
pub(crate) fn log_prefix(lane: &[u64]) -> String {
    lane.iter().map(|n| format!("{n:04}.")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_name_logs_in_item_order() {
        assert_eq!(log_prefix(&[]), "");
        assert_eq!(log_prefix(&[3, 2]), "0003.0002.");
    }

    /// A child link is written as the `json!` object it replaced was, and reads back.
    #[test]
    fn a_child_link_keeps_its_bytes() {
        let link = ChildLink {
            exec: 3,
            lane: vec![2, 0],
            run_root: ".orchestrate/runs/R/children/0002.0000.3-Sub".into(),
            step: "Sub".into(),
            workflow: "child.yaml".into(),
        };
        let old = serde_json::json!({"step": "Sub", "exec": 3, "lane": [2, 0],
            "workflow": "child.yaml", "run_root": ".orchestrate/runs/R/children/0002.0000.3-Sub"});
        let text = serde_json::to_string(&link).unwrap();
        assert_eq!(text, serde_json::to_string(&old).unwrap());
        assert_eq!(serde_json::from_str::<ChildLink>(&text).unwrap(), link);
    }
}
