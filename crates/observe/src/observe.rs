//! Reading runs back: reports, graphs, status and logs, for people and for tools.
//!
//! Owns: turning a run's records (`events.jsonl`, `state.json`, `logs/`, the saved
//! `workflow.yaml`) into answers to "what happened, in which order, at what cost", for one run
//! or many (task runs under `processed/` and `failed/` included); drawing a workflow's graph
//! (Mermaid or Graphviz DOT) with the path a run took laid over it; the status of a run in
//! flight; and printing (or following) a run's step logs in execution order.
//!
//! Reads nothing through a run directory or record file that leads outside the workspace (a
//! symbolic link or `..`): such a run is refused by name and left out of listings.
//!
//! Does not write anything: every function here only reads, so it is safe to call while a run is
//! going (records are append-only or atomically replaced). Does not know the swarm's processes
//! (`supervisor`) or parse arguments (`cli`). The record formats are the runner's; this module
//! follows `docs/events.md` and skips what it does not know instead of failing.
//!
//! Each view is plain data with `Serialize` (for `--json`) and a `render()` for humans.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use orchestrate_engine::runner::fanout::lane_of;
use orchestrate_engine::state::{RunDir, RunState, StateError};
use orchestrate_lang::model::{Step, StepKind, Target, Workflow};

/// How often `logs --follow` looks for new output.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// How often `logs --follow` checks that the engine of an unfinished run is still alive.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);
/// The path is printed in full in JSON; a human sees at most this many steps of it.
const PATH_SHOWN: usize = 80;
/// Entries in the "slowest" and "costliest" lists of a many-run report.
const TOP_N: usize = 5;

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(
        "`{id}` is not a run id: {reason} (run ids look like 20261124T005538Z-a1b2c3; task runs \
         can be named by their directory under processed/ or failed/)"
    )]
    BadId { id: String, reason: String },
    #[error(
        "there is no run `{id}`: neither {} nor a task run of that name under processed/, failed/ \
         or running/; list runs with `ls {}`",
        runs_dir.join(id).display(),
        runs_dir.display()
    )]
    NoSuchRun { id: String, runs_dir: PathBuf },
    #[error(
        "refusing to read run `{id}`: {reason}; records are read only inside the workspace \
         (move or remove the entry)"
    )]
    Outside { id: String, reason: String },
    #[error("run {id} cannot be read ({}): {reason}", path.display())]
    Unreadable {
        id: String,
        path: PathBuf,
        reason: String,
    },
    #[error("run {id} has no logs{which}; {hint}")]
    NoLogs {
        id: String,
        which: String,
        hint: String,
    },
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("failed to write the output: {0}")]
    Output(#[source] io::Error),
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ObserveError + 'a {
    move |source| ObserveError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Finding runs

/// Where a run's records live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunSource {
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
struct RunLoc {
    root: PathBuf,
    source: RunSource,
    /// The directory's name: the run id for `Runs`, the task directory's name otherwise.
    name: String,
}

impl RunLoc {
    fn label(&self, workspace: &Path) -> String {
        orchestrate_base::fsutil::relative(workspace, &self.root)
    }
}

fn dir_name(path: &Path) -> String {
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
fn all_runs(workspace: &Path) -> Vec<RunLoc> {
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
fn outside(workspace: &Path, root: &Path) -> Option<String> {
    std::iter::once(root.to_path_buf())
        .chain(RECORD_FILES.iter().map(|name| root.join(name)))
        .find_map(|path| orchestrate_base::fsutil::check_inside(workspace, &path).err())
        .map(|err| err.to_string())
}

/// [`find_run`], refusing a run whose records lead outside the workspace.
fn locate(workspace: &Path, id: &str) -> Result<RunLoc, ObserveError> {
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

// ---------------------------------------------------------------------------------------------
// Reading records

/// The events of one log: every complete record, and whether a torn final line was dropped.
use orchestrate_engine::events::read_checked as read_events;

/// One run's records, read and checked.
struct Loaded {
    loc: RunLoc,
    run_id: String,
    events: Vec<Value>,
    state: Option<RunState>,
    status_json: Option<Value>,
    notes: Vec<String>,
}

/// Reads a run's records; `Err` is the reason it cannot be reported on.
fn load(workspace: &Path, loc: &RunLoc) -> Result<Loaded, String> {
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
    let run_id = events
        .iter()
        .find(|e| e["event"] == "run_started")
        .and_then(|e| e["run_id"].as_str().map(str::to_string))
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

// ---------------------------------------------------------------------------------------------
// What the events say

/// Token counts of a step, as the runner normalizes them (`docs/runtimes.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl Tokens {
    fn from_usage(usage: &Value) -> Tokens {
        let get = |k: &str| usage[k].as_u64().unwrap_or(0);
        Tokens {
            input: get("input"),
            output: get("output"),
            cache_read: get("cache_read"),
            cache_write: get("cache_write"),
            reasoning: get("reasoning"),
        }
    }

    fn add(&mut self, other: &Tokens) {
        self.input = self.input.saturating_add(other.input);
        self.output = self.output.saturating_add(other.output);
        self.cache_read = self.cache_read.saturating_add(other.cache_read);
        self.cache_write = self.cache_write.saturating_add(other.cache_write);
        self.reasoning = self.reasoning.saturating_add(other.reasoning);
    }

    pub fn is_zero(&self) -> bool {
        *self == Tokens::default()
    }

    /// Cache reads and writes together, for a compact column.
    pub fn cache(&self) -> u64 {
        self.cache_read.saturating_add(self.cache_write)
    }
}

/// One `step_finished` record.
#[derive(Debug, Clone, Serialize)]
pub struct Execution {
    /// The execution number (`NNNN` of the step's log names); repeats across a resume, where
    /// the re-run of an interrupted or failed step takes its number again.
    pub exec: u64,
    /// The fan-out lane it ran in (`[fan-out exec, item index, ...]`; empty for the run's own
    /// steps): execution numbers count from 1 in each lane.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lane: Vec<u64>,
    pub step: String,
    /// Indexes of the enclosing `for_each` iterations, outermost first.
    pub iteration: Vec<u64>,
    /// `succeeded`, `failed`, `rejected`, `skipped` or `interrupted`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    pub duration_sec: f64,
    pub attempts: u32,
    pub tokens: Tokens,
    pub cost_usd: f64,
    /// An agent step reported tokens but no price was known for its model.
    pub unpriced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A `for_each`: its duration is its body's, so totals leave it out.
    pub container: bool,
    /// Run again after a resume: its time and cost were spent, but it is not on the path taken.
    pub superseded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// For a `for_each`: how many items it had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
    /// A `parallel` step (a container whose body is its branches).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub parallel: bool,
}

/// What a rejection said (the runner's `${feedback.reason}`), on one short line.
fn rejection(result: &Value) -> Option<String> {
    if result["status"] != "rejected" {
        return None;
    }
    let said = ["reason", "result", "output"]
        .iter()
        .find_map(|k| result[*k].as_str().filter(|t| !t.trim().is_empty()))
        .map(str::to_string)
        .or_else(|| (!result["json"].is_null()).then(|| result["json"].to_string()))
        .unwrap_or_default();
    let line = said.lines().next().unwrap_or("").trim();
    let mut short: String = line.chars().take(160).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    Some(if short.is_empty() {
        "rejected".into()
    } else {
        short
    })
}

fn str_field(value: &Value, key: &str) -> Option<String> {
    value[key].as_str().map(str::to_string)
}

/// Where an execution sits in the run's order: its lane, then its number. A fan-out's lanes sort
/// after the fan-out step's own number and before the next step of its list.
fn exec_key(lane: &[u64], exec: u64) -> Vec<u64> {
    let mut key = lane.to_vec();
    key.push(exec);
    key
}

/// An execution as people read it: `7`, or `3.2.1` (execution 1 of item 2 of the fan-out run
/// as execution 3), the numbers of its log names.
pub fn exec_label(lane: &[u64], exec: u64) -> String {
    exec_key(lane, exec)
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

impl Execution {
    pub fn key(&self) -> Vec<u64> {
        exec_key(&self.lane, self.exec)
    }
}

fn execution(event: &Value, container: bool) -> Execution {
    let result = &event["result"];
    let usage = &result["usage"];
    let cost = result["cost_usd"].as_f64();
    let container =
        container || result.get("iterations").is_some() || result.get("branches").is_some();
    let tokens = Tokens::from_usage(usage);
    Execution {
        exec: event["exec"].as_u64().unwrap_or(0),
        lane: lane_of(event),
        step: str_field(event, "step").unwrap_or_default(),
        iteration: event["iteration"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default(),
        status: str_field(result, "status").unwrap_or_else(|| "unknown".into()),
        exit_code: result["exit_code"].as_i64(),
        duration_sec: result["duration"].as_f64().unwrap_or(0.0).max(0.0),
        // A for_each runs no process of its own.
        attempts: if container {
            0
        } else {
            result["attempts"]
                .as_u64()
                .map(|a| u32::try_from(a).unwrap_or(u32::MAX))
                // A skipped step never started a process; everything else ran once at least.
                .unwrap_or(u32::from(result["status"] != "skipped"))
        },
        tokens,
        cost_usd: cost.unwrap_or(0.0).max(0.0),
        // Tokens spent with no price known for the model: the cost is understated.
        unpriced: !tokens.is_zero() && cost.is_none(),
        runtime: str_field(result, "runtime"),
        model: str_field(result, "model"),
        phase: str_field(result, "phase"),
        error: orchestrate_engine::runner::error_text(result).or_else(|| rejection(result)),
        container,
        superseded: false,
        finished_at: str_field(result, "finished_at").or_else(|| str_field(event, "ts")),
        items: result["total"].as_u64(),
        parallel: result.get("branches").is_some(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenStep {
    pub step: String,
    pub exec: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lane: Vec<u64>,
    /// `command`, `provider`, `agent`, `for_each`, `wait_for`, `approval` or `enqueue`.
    pub kind: String,
    pub iteration: Vec<u64>,
    pub started_at: String,
    /// The attempt in progress (0 before its process started).
    pub attempt: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApprovalWait {
    pub step: String,
    pub message: String,
    /// The request file, relative to the workspace.
    pub request: String,
    pub since: String,
    /// The commands that answer it.
    pub approve: String,
    pub reject: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetryWait {
    pub step: String,
    pub failed_attempt: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    pub delay_sec: f64,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PauseWait {
    pub step: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunEnd {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: String,
}

/// Everything the event log says about a run, folded in one pass.
#[derive(Default)]
struct Facts {
    workflow_name: Option<String>,
    started_at: Option<String>,
    last_ts: Option<String>,
    resumes: u32,
    /// `run_finished` of the latest start or resume (a resume reopens a finished run).
    end: Option<RunEnd>,
    executions: Vec<Execution>,
    /// Indexes into `executions`: the path taken, in execution order.
    path: Vec<usize>,
    /// Steps started and not finished in the latest start or resume, outermost first.
    open: Vec<OpenStep>,
    /// The agent phase in force (the last `phase_entered` since the latest start or resume).
    phase: Option<String>,
    approval: Option<ApprovalWait>,
    retry: Option<RetryWait>,
    paused: Option<PauseWait>,
    loop_detected: Option<String>,
}

fn fold(events: &[Value], run_id: &str) -> Facts {
    let mut facts = Facts::default();
    // The path, by execution number. A resume replays completed steps without recording them
    // again and runs live from the first step with no completed record, reusing execution
    // numbers from there: so the first record of a resumed session replaces that number and
    // every later one of the earlier session (a path that diverged leaves no stale tail).
    // Fan-out lanes number their executions from 1 each, so the key is the lane and the
    // number, and a resumed session's first record in each lane replaces that lane's tail.
    let mut by_exec: BTreeMap<Vec<u64>, usize> = BTreeMap::new();
    let mut fresh_session = false;
    let mut fresh_lanes: HashSet<Vec<u64>> = HashSet::new();
    let mut containers: HashSet<Vec<u64>> = HashSet::new();
    for event in events {
        let Some(name) = event["event"].as_str() else {
            continue;
        };
        let ts = str_field(event, "ts").unwrap_or_default();
        if !ts.is_empty() {
            facts.last_ts = Some(ts.clone());
        }
        let step = str_field(event, "step").unwrap_or_default();
        let exec = event["exec"].as_u64();
        let lane = lane_of(event);
        match name {
            "run_started" | "run_resumed" => {
                if name == "run_started" {
                    facts.started_at.get_or_insert(ts.clone());
                    if let Some(n) = str_field(event, "name") {
                        facts.workflow_name = Some(n);
                    }
                } else {
                    facts.resumes += 1;
                    fresh_session = true;
                    fresh_lanes.clear();
                }
                facts.end = None;
                facts.open.clear();
                facts.phase = None;
                facts.approval = None;
                facts.retry = None;
                facts.paused = None;
                containers.clear();
            }
            "step_started" => {
                let kind = str_field(event, "kind").unwrap_or_default();
                if (kind == "for_each" || kind == "parallel")
                    && let Some(exec) = exec
                {
                    containers.insert(exec_key(&lane, exec));
                }
                facts.open.push(OpenStep {
                    step,
                    exec: exec.unwrap_or(0),
                    lane: lane.clone(),
                    kind,
                    iteration: event["iteration"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_u64).collect())
                        .unwrap_or_default(),
                    started_at: ts,
                    attempt: 0,
                });
            }
            "process_started" => {
                if let Some(open) = facts
                    .open
                    .iter_mut()
                    .rev()
                    .find(|o| Some(o.exec) == exec && o.lane == lane)
                {
                    open.attempt = event["attempt"].as_u64().unwrap_or(1);
                }
                facts.retry = None;
                facts.paused = None;
            }
            "retry_scheduled" => {
                facts.retry = Some(RetryWait {
                    step,
                    failed_attempt: event["attempt"].as_u64().unwrap_or(1),
                    exit_code: event["exit_code"].as_i64(),
                    delay_sec: event["delay"].as_f64().unwrap_or(0.0),
                    at: ts,
                });
            }
            "paused" => {
                facts.paused = Some(PauseWait {
                    step,
                    reason: str_field(event, "reason").unwrap_or_default(),
                    until: str_field(event, "until"),
                });
            }
            "phase_entered" => facts.phase = str_field(event, "phase"),
            "approval_requested" => {
                facts.approval = Some(ApprovalWait {
                    approve: format!("orchestrate approve {run_id} {step}"),
                    reject: format!("orchestrate reject {run_id} {step} --reason TEXT"),
                    step,
                    message: str_field(event, "message").unwrap_or_default(),
                    request: str_field(event, "request").unwrap_or_default(),
                    since: ts,
                });
            }
            "approval_decided" if facts.approval.as_ref().is_some_and(|a| a.step == step) => {
                facts.approval = None;
            }
            "loop_detected" => {
                facts.loop_detected = Some(format!(
                    "step `{step}` entered {} times (max_visits {}); cycle: {}",
                    event["visits"],
                    event["max_visits"],
                    event["cycle"].as_str().unwrap_or("?")
                ));
            }
            "step_finished" => {
                let exec = exec.unwrap_or(0);
                facts.open.retain(|o| o.exec != exec || o.lane != lane);
                let key = exec_key(&lane, exec);
                if facts.approval.as_ref().is_some_and(|a| a.step == step) {
                    facts.approval = None;
                }
                facts.retry = None;
                facts.paused = None;
                let index = facts.executions.len();
                facts
                    .executions
                    .push(execution(event, containers.contains(&key)));
                if fresh_session && fresh_lanes.insert(lane.clone()) {
                    // This lane's steps from `exec` on (and the lanes of fan-outs among them)
                    // belong to the earlier session's path; the lanes of steps before it, and
                    // of this step itself, are not its tail.
                    let stale: Vec<Vec<u64>> = by_exec
                        .range(key.clone()..)
                        .map(|(k, _)| k.clone())
                        .take_while(|k| k.starts_with(&lane))
                        .filter(|k| k.len() == key.len() || k[lane.len()] > exec)
                        .collect();
                    for k in stale {
                        if let Some(old) = by_exec.remove(&k) {
                            facts.executions[old].superseded = true;
                        }
                    }
                }
                if let Some(old) = by_exec.insert(key, index) {
                    facts.executions[old].superseded = true;
                }
            }
            "run_finished" => {
                facts.open.clear();
                facts.approval = None;
                facts.retry = None;
                facts.paused = None;
                facts.end = Some(RunEnd {
                    status: str_field(event, "status").unwrap_or_else(|| "unknown".into()),
                    exit_code: event["exit_code"].as_i64(),
                    error: str_field(event, "error"),
                    at: ts,
                });
            }
            // Unknown events are skipped: a newer runner may add some (docs/events.md).
            _ => {}
        }
    }
    facts.path = by_exec.into_values().collect();
    facts
}

/// Whether the engine that holds an unfinished run is alive, from the pid in its lock file.
/// `None` when that cannot be told (a task run has no lock file; an unreadable pid).
fn engine_alive(root: &Path) -> Option<bool> {
    let text = fs::read_to_string(root.join("lock")).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    if pid <= 0 {
        return None;
    }
    // SAFETY: kill(2) with signal 0 sends nothing; it only asks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc == 0 {
        return Some(true);
    }
    // EPERM: it exists but belongs to someone else.
    Some(io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

fn lock_pid(root: &Path) -> Option<String> {
    fs::read_to_string(root.join("lock"))
        .ok()
        .map(|t| t.trim().to_string())
}

fn parse_ts(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn seconds_between(from: &str, to: &str) -> Option<f64> {
    let (from, to) = (parse_ts(from)?, parse_ts(to)?);
    Some(((to - from).num_microseconds()? as f64 / 1e6).max(0.0))
}

// ---------------------------------------------------------------------------------------------
// The workflow graph

/// An edge of the drawn graph. Node keys are step names, `_start` and `_end`.
#[derive(Debug, Clone)]
struct Edge {
    from: String,
    to: String,
    /// `success`, `failure`, `always`, `rejected`, `stalled` (`converge.on_stall`), `each` (into
    /// a for_each body), `next item` (the body's end, back to its for_each), `branch` (into a
    /// parallel branch), `join` (a branch's end, back to its parallel step), or none for the
    /// sequential edge.
    label: Option<&'static str>,
}

/// One place on a path, with what is known of it: from a run's records, its status and
/// iteration; from a list of names, nothing more.
struct Hop<'a> {
    step: &'a str,
    status: Option<&'a str>,
    iteration: Option<&'a [u64]>,
}

impl<'a> Hop<'a> {
    fn name(step: &'a str) -> Hop<'a> {
        Hop {
            step,
            status: None,
            iteration: None,
        }
    }

    fn of(e: &'a Execution) -> Hop<'a> {
        Hop {
            step: &e.step,
            status: Some(&e.status),
            iteration: Some(&e.iteration),
        }
    }
}

/// Whether a step that ended with `status` can leave by an edge labelled `label`. Into a body
/// (`each`) is always possible: a for_each's own status comes after its body.
fn label_fits(label: Option<&str>, status: Option<&str>) -> bool {
    match (status, label) {
        (None, _) | (_, Some("each" | "branch")) => true,
        (Some("succeeded"), l) => {
            matches!(
                l,
                None | Some("success" | "always" | "next item" | "join" | "stalled")
            )
        }
        (Some("failed"), l) => {
            matches!(l, None | Some("failure" | "always" | "next item" | "join"))
        }
        (Some("rejected"), l) => matches!(l, Some("rejected" | "failure" | "always" | "stalled")),
        (Some("skipped"), l) => matches!(l, None | Some("next item" | "join")),
        // Interrupted, or a status this version does not know: do not judge.
        _ => true,
    }
}

const START: &str = "_start";
const END: &str = "_end";

/// Whether control can fall through to the next step of the list: a skipped step always does;
/// a succeeded one without `on.success`/`always`; a failed one in a non-strict workflow without
/// `on.failure`/`always`.
fn falls_through(step: &Step, strict: bool) -> bool {
    let on = &step.on;
    step.when.is_some()
        || (on.success.is_none() && on.always.is_none())
        || (!strict && on.failure.is_none() && on.always.is_none())
}

struct Graph {
    edges: Vec<Edge>,
    /// Body step -> its for_each.
    parent: HashMap<String, String>,
}

impl Graph {
    fn of(workflow: &Workflow) -> Graph {
        let mut graph = Graph {
            edges: Vec::new(),
            parent: HashMap::new(),
        };
        if let Some(first) = workflow.steps.first() {
            graph.edges.push(Edge {
                from: START.into(),
                to: first.name.clone(),
                label: None,
            });
        }
        graph.walk(&workflow.steps, None, workflow.strict_flow);
        graph
    }

    /// `parent`: the step whose body `steps` is, and the label of the edge back to it (`next
    /// item` from a for_each body, `join` from a parallel branch).
    fn walk(&mut self, steps: &[Step], parent: Option<(&str, &'static str)>, strict: bool) {
        for (i, step) in steps.iter().enumerate() {
            if let Some((parent, _)) = parent {
                self.parent.insert(step.name.clone(), parent.to_string());
            }
            let (into, back) = match step.kind {
                StepKind::Parallel { .. } => ("branch", "join"),
                _ => ("each", "next item"),
            };
            for body in step.kind.bodies() {
                if let Some(first) = body.first() {
                    self.edges.push(Edge {
                        from: step.name.clone(),
                        to: first.name.clone(),
                        label: Some(into),
                    });
                    self.walk(body, Some((&step.name, back)), strict);
                }
            }
            let on = &step.on;
            for (label, target) in [
                ("success", &on.success),
                ("failure", &on.failure),
                ("always", &on.always),
                ("rejected", &on.rejected),
                ("invalid", &on.invalid),
            ] {
                if let Some(target) = target {
                    self.edges.push(Edge {
                        from: step.name.clone(),
                        to: match target {
                            Target::Step(name) => name.clone(),
                            Target::End => END.into(),
                        },
                        label: Some(label),
                    });
                }
            }
            if let Some(target) = step.converge.as_ref().and_then(|c| c.on_stall.as_ref()) {
                self.edges.push(Edge {
                    from: step.name.clone(),
                    to: target.clone(),
                    label: Some("stalled"),
                });
            }
            if falls_through(step, strict) {
                let (to, label) = match (steps.get(i + 1), parent) {
                    (Some(next), _) => (next.name.clone(), None),
                    (None, Some((parent, back))) => (parent.to_string(), Some(back)),
                    (None, None) => (END.to_string(), None),
                };
                self.edges.push(Edge {
                    from: step.name.clone(),
                    to,
                    label,
                });
            }
        }
    }

    /// How many for_each bodies enclose `step`.
    fn depth(&self, step: &str) -> usize {
        let mut depth = 0;
        let mut current = step;
        while let Some(parent) = self.parent.get(current) {
            depth += 1;
            current = parent;
        }
        depth
    }

    /// The drawn edges that take control from `from` to `to`: a direct edge, or out of
    /// enclosing for_each bodies (through their `next item` edges) and on from the for_each.
    /// What is known of `from` narrows the choice: its status picks the edges it can take (a
    /// failed step its failure edge, and it may leave its loop without a drawn edge, since a
    /// failed iteration ends the loop), and the iterations of both say whether control stayed in
    /// the same pass of a body or went round to the next item.
    fn route(&self, from: &Hop, to: &Hop) -> Option<Vec<usize>> {
        let status = from.status;
        let free_exit = status.is_none_or(|s| !matches!(s, "succeeded" | "skipped"));
        let mut hops = Vec::new();
        let mut current = from.step.to_string();
        let mut level = self.depth(from.step);
        let mut first = true;
        loop {
            let same_pass = match (from.iteration, to.iteration) {
                (Some(a), Some(b)) => {
                    a.len() >= level && b.len() >= level && a[..level] == b[..level]
                }
                _ => true,
            };
            if same_pass {
                let fits: Vec<usize> = self
                    .edges
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.from == current && e.to == to.step)
                    .filter(|(_, e)| !first || label_fits(e.label, status))
                    .map(|(i, _)| i)
                    .collect();
                // Of a sequential edge and an `on` edge to the same step, the `on` edge is the
                // one taken (the sequential one is there for a skip or a tolerated failure).
                let labelled: Vec<usize> = fits
                    .iter()
                    .copied()
                    .filter(|&i| self.edges[i].label.is_some())
                    .collect();
                let chosen = if labelled.is_empty() { fits } else { labelled };
                if !chosen.is_empty() {
                    hops.extend(chosen);
                    return Some(hops);
                }
            }
            let parent = self.parent.get(&current)?;
            match self
                .edges
                .iter()
                .position(|e| e.from == current && &e.to == parent)
            {
                Some(i) => hops.push(i),
                None if free_exit => {}
                None => return None,
            }
            current = parent.clone();
            level = level.saturating_sub(1);
            first = false;
        }
    }

    /// Where control may go from `from`, for messages.
    fn successors(&self, from: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut current = from.to_string();
        loop {
            for edge in self.edges.iter().filter(|e| e.from == current) {
                if self.parent.get(&current) != Some(&edge.to) && !out.contains(&edge.to) {
                    out.push(edge.to.clone());
                }
            }
            match self.parent.get(&current) {
                Some(parent)
                    if self
                        .edges
                        .iter()
                        .any(|e| e.from == current && &e.to == parent) =>
                {
                    current = parent.clone();
                }
                _ => return out,
            }
        }
    }
}

/// The steps a run visits when every step succeeds: from the first step along `on.success`
/// (else `always`, else the next step), into every for_each body, until `_end`, the end of the
/// workflow, or a step already on the path.
fn default_path(workflow: &Workflow) -> Vec<String> {
    fn walk(steps: &[Step], path: &mut Vec<String>) -> bool {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut i = 0;
        while let Some(step) = steps.get(i) {
            if !seen.insert(step.name.as_str()) {
                return true;
            }
            path.push(step.name.clone());
            for body in step.kind.bodies() {
                if walk(body, path) {
                    return true;
                }
            }
            match step.on.success.as_ref().or(step.on.always.as_ref()) {
                Some(Target::End) => return true,
                Some(Target::Step(name)) => {
                    i = steps
                        .iter()
                        .position(|s| &s.name == name)
                        .unwrap_or(steps.len());
                }
                None => i += 1,
            }
        }
        false
    }
    let mut path = Vec::new();
    walk(&workflow.steps, &mut path);
    path
}

// ---------------------------------------------------------------------------------------------
// Mermaid and DOT

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum GraphFormat {
    /// A Mermaid `flowchart` (renders in GitHub Markdown).
    Mermaid,
    /// Graphviz DOT (`dot -Tsvg`).
    Dot,
}

/// Draws `workflow`: a node per step (a for_each's body inside a subgraph/cluster), sequential
/// edges unlabelled, `on` edges labelled success/failure/always/rejected, `each` into a body and
/// `next item` back out of it, and `_end`. With `overlay` (the path a run took, as step names in
/// execution order, e.g. `RunReport::path_taken`), visited nodes and taken edges are highlighted
/// and labelled with their counts; names not in the workflow are ignored. Names alone cannot
/// tell a step's failure edge from the next item of its loop; `graph_of_run` can.
pub fn graph(workflow: &Workflow, overlay: Option<&[String]>, format: GraphFormat) -> String {
    let hops: Option<Vec<Hop>> =
        overlay.map(|path| path.iter().map(|name| Hop::name(name)).collect());
    draw(workflow, hops.as_deref(), format)
}

/// `graph` with the path of `run` laid over it, each transition matched to the edge the run
/// took using the recorded status and loop iteration of every step.
pub fn graph_of_run(workflow: &Workflow, run: &RunReport, format: GraphFormat) -> String {
    let mut path: Vec<&Execution> = run.executions.iter().filter(|e| !e.superseded).collect();
    path.sort_by_key(|e| e.key());
    let hops: Vec<Hop> = path.into_iter().map(Hop::of).collect();
    draw(workflow, Some(&hops), format)
}

fn draw(workflow: &Workflow, overlay: Option<&[Hop]>, format: GraphFormat) -> String {
    let graph = Graph::of(workflow);
    let mut visits: HashMap<&str, usize> = HashMap::new();
    let mut taken = vec![0usize; graph.edges.len()];
    if let Some(path) = overlay {
        for hop in path {
            *visits.entry(hop.step).or_default() += 1;
        }
        let mut previous = Hop::name(START);
        for hop in path {
            // What the records say picks the edge; when they fit no edge, still show a way.
            let route = graph
                .route(&previous, hop)
                .or_else(|| graph.route(&Hop::name(previous.step), &Hop::name(hop.step)));
            for edge in route.unwrap_or_default() {
                taken[edge] += 1;
            }
            previous = Hop {
                step: hop.step,
                status: hop.status,
                iteration: hop.iteration,
            };
        }
    }
    let ids: HashMap<&str, String> = workflow
        .all_steps()
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), format!("s{i}")))
        .collect();
    let id = |name: &str| -> String {
        match name {
            START => "start_".to_string(),
            END => "end_".to_string(),
            other => ids.get(other).cloned().unwrap_or_else(|| other.to_string()),
        }
    };
    let node_label = |step: &Step| -> String {
        let kind = match &step.kind {
            StepKind::Agent(agent) => format!("agent, {}", agent.phase.label()),
            StepKind::Workflow(sub) => format!("workflow {}", sub.path),
            other => other.label().to_string(),
        };
        match (overlay, visits.get(step.name.as_str())) {
            (Some(_), Some(&n)) => format!(
                "{} ({kind}) · {n} visit{}",
                step.name,
                if n == 1 { "" } else { "s" }
            ),
            _ => format!("{} ({kind})", step.name),
        }
    };
    let edge_label = |i: usize| -> Option<String> {
        let base = graph.edges[i].label.map(str::to_string);
        match (overlay.is_some() && taken[i] > 0, base) {
            (true, Some(label)) => Some(format!("{label} ×{}", taken[i])),
            (true, None) => Some(format!("×{}", taken[i])),
            (false, label) => label,
        }
    };
    let mut out = String::new();
    match format {
        GraphFormat::Mermaid => {
            let _ = writeln!(out, "flowchart TD");
            let _ = writeln!(out, "  {}((start))", id(START));
            fn nodes(
                steps: &[Step],
                depth: usize,
                out: &mut String,
                id: &dyn Fn(&str) -> String,
                label: &dyn Fn(&Step) -> String,
            ) {
                let pad = "  ".repeat(depth + 1);
                for step in steps {
                    let text = label(step).replace('"', "'");
                    match &step.kind {
                        StepKind::ForEach {
                            steps: body, var, ..
                        } => {
                            let _ = writeln!(out, "{pad}{}{{{{\"{text}\"}}}}", id(&step.name));
                            let _ = writeln!(
                                out,
                                "{pad}subgraph {}_body [\"for_each {} (as {var})\"]",
                                id(&step.name),
                                step.name
                            );
                            nodes(body, depth + 1, out, id, label);
                            let _ = writeln!(out, "{pad}end");
                        }
                        StepKind::Parallel { branches, .. } => {
                            let _ = writeln!(out, "{pad}{}{{{{\"{text}\"}}}}", id(&step.name));
                            for (i, branch) in branches.iter().enumerate() {
                                let _ = writeln!(
                                    out,
                                    "{pad}subgraph {}_b{i} [\"branch {} of {}\"]",
                                    id(&step.name),
                                    branch.name,
                                    step.name
                                );
                                nodes(&branch.steps, depth + 1, out, id, label);
                                let _ = writeln!(out, "{pad}end");
                            }
                        }
                        StepKind::Approval { .. } => {
                            let _ = writeln!(out, "{pad}{}{{\"{text}\"}}", id(&step.name));
                        }
                        // A sub-workflow: Mermaid's subroutine shape.
                        StepKind::Workflow(_) => {
                            let _ = writeln!(out, "{pad}{}[[\"{text}\"]]", id(&step.name));
                        }
                        _ => {
                            let _ = writeln!(out, "{pad}{}[\"{text}\"]", id(&step.name));
                        }
                    }
                }
            }
            nodes(&workflow.steps, 0, &mut out, &id, &node_label);
            let _ = writeln!(out, "  {}((_end))", id(END));
            for (i, edge) in graph.edges.iter().enumerate() {
                let arrow = if matches!(edge.label, Some("next item" | "join")) {
                    "-.->"
                } else {
                    "-->"
                };
                match edge_label(i) {
                    Some(label) => {
                        let _ = writeln!(
                            out,
                            "  {} {arrow}|\"{label}\"| {}",
                            id(&edge.from),
                            id(&edge.to)
                        );
                    }
                    None => {
                        let _ = writeln!(out, "  {} {arrow} {}", id(&edge.from), id(&edge.to));
                    }
                }
            }
            if overlay.is_some() {
                let _ = writeln!(
                    out,
                    "  classDef visited fill:#d8f3dc,stroke:#2d6a4f,stroke-width:2px"
                );
                let _ = writeln!(
                    out,
                    "  classDef unvisited fill:#f8f9fa,stroke:#adb5bd,color:#6c757d,stroke-dasharray:4 3"
                );
                let (seen, unseen): (Vec<&Step>, Vec<&Step>) = workflow
                    .all_steps()
                    .into_iter()
                    .partition(|s| visits.contains_key(s.name.as_str()));
                for (class, steps) in [("visited", seen), ("unvisited", unseen)] {
                    if !steps.is_empty() {
                        let list: Vec<String> = steps.iter().map(|s| id(&s.name)).collect();
                        let _ = writeln!(out, "  class {} {class}", list.join(","));
                    }
                }
                let hot: Vec<String> = (0..graph.edges.len())
                    .filter(|&i| taken[i] > 0)
                    .map(|i| i.to_string())
                    .collect();
                if !hot.is_empty() {
                    let _ = writeln!(
                        out,
                        "  linkStyle {} stroke:#2d6a4f,stroke-width:3px",
                        hot.join(",")
                    );
                }
            }
        }
        GraphFormat::Dot => {
            let _ = writeln!(out, "digraph {} {{", dot_quote(&workflow.name));
            let _ = writeln!(out, "  rankdir=TB;");
            let _ = writeln!(
                out,
                "  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"Helvetica\"];"
            );
            let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=10];");
            let _ = writeln!(
                out,
                "  {} [label=\"start\", shape=circle, fillcolor=\"#e9ecef\"];",
                dot_quote(START)
            );
            let _ = writeln!(
                out,
                "  {} [label=\"_end\", shape=doublecircle, fillcolor=\"#e9ecef\"];",
                dot_quote(END)
            );
            fn nodes(
                steps: &[Step],
                depth: usize,
                out: &mut String,
                label: &dyn Fn(&Step) -> String,
                style: &dyn Fn(&Step) -> &'static str,
            ) {
                let pad = "  ".repeat(depth + 1);
                for step in steps {
                    let shape = match &step.kind {
                        StepKind::ForEach { .. } | StepKind::Parallel { .. } => "hexagon",
                        StepKind::Approval { .. } => "diamond",
                        StepKind::Workflow(_) => "component",
                        _ => "box",
                    };
                    let _ = writeln!(
                        out,
                        "{pad}{} [label={}, shape={shape}{}];",
                        dot_quote(&step.name),
                        dot_quote(&label(step)),
                        style(step)
                    );
                    if let StepKind::ForEach {
                        steps: body, var, ..
                    } = &step.kind
                    {
                        let _ = writeln!(
                            out,
                            "{pad}subgraph {} {{",
                            dot_quote(&format!("cluster_{}", step.name))
                        );
                        let _ = writeln!(
                            out,
                            "{pad}  label={}; style=dashed;",
                            dot_quote(&format!("for_each {} (as {var})", step.name))
                        );
                        nodes(body, depth + 1, out, label, style);
                        let _ = writeln!(out, "{pad}}}");
                    }
                    if let StepKind::Parallel { branches, .. } = &step.kind {
                        for branch in branches {
                            let _ = writeln!(
                                out,
                                "{pad}subgraph {} {{",
                                dot_quote(&format!("cluster_{}_{}", step.name, branch.name))
                            );
                            let _ = writeln!(
                                out,
                                "{pad}  label={}; style=dashed;",
                                dot_quote(&format!("branch {} of {}", branch.name, step.name))
                            );
                            nodes(&branch.steps, depth + 1, out, label, style);
                            let _ = writeln!(out, "{pad}}}");
                        }
                    }
                }
            }
            let style = |step: &Step| -> &'static str {
                match overlay {
                    None => "",
                    Some(_) if visits.contains_key(step.name.as_str()) => {
                        ", fillcolor=\"#d8f3dc\", color=\"#2d6a4f\", penwidth=2"
                    }
                    Some(_) => {
                        ", color=\"#adb5bd\", fontcolor=\"#6c757d\", style=\"rounded,dashed\""
                    }
                }
            };
            nodes(&workflow.steps, 0, &mut out, &node_label, &style);
            for (i, edge) in graph.edges.iter().enumerate() {
                let mut attrs: Vec<String> = Vec::new();
                if let Some(label) = edge_label(i) {
                    attrs.push(format!("label={}", dot_quote(&label)));
                }
                if matches!(edge.label, Some("next item" | "join")) {
                    attrs.push("style=dashed".into());
                }
                if overlay.is_some() && taken[i] > 0 {
                    attrs.push("color=\"#2d6a4f\", penwidth=3".into());
                } else if matches!(edge.label, Some("failure" | "rejected" | "stalled")) {
                    attrs.push("color=\"#c0392b\"".into());
                }
                let attrs = if attrs.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", attrs.join(", "))
                };
                let _ = writeln!(
                    out,
                    "  {} -> {}{attrs};",
                    dot_quote(&edge.from),
                    dot_quote(&edge.to)
                );
            }
            let _ = writeln!(out, "}}");
        }
    }
    out
}

fn dot_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

// ---------------------------------------------------------------------------------------------
// report

/// Which runs a report covers.
#[derive(Debug, Clone)]
pub enum RunSelector {
    /// One run: a run id, or a task run's directory name (or task id).
    One(String),
    /// Runs (task runs included) started at or after this time.
    Since(DateTime<Utc>),
    /// Every run of the workspace, task runs included.
    All,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    Run(Box<RunReport>),
    Runs(Box<RunsReport>),
}

impl Report {
    pub fn render(&self) -> String {
        match self {
            Report::Run(run) => run.render(),
            Report::Runs(runs) => runs.render(),
        }
    }
}

/// A task run's identity, from its directory and `status.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskInfo {
    pub role: Option<String>,
    pub task: Option<String>,
    pub attempt: Option<u64>,
    pub message: Option<String>,
}

/// One step of one run: its executions summed.
#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    pub step: String,
    /// Times on the path taken (skips by `when` included).
    pub visits: u32,
    /// Process attempts over every execution (retries, and re-runs after a resume).
    pub attempts: u32,
    pub skipped: u32,
    pub failed: u32,
    pub rejected: u32,
    pub duration_sec: f64,
    pub tokens: Tokens,
    pub cost_usd: f64,
    /// Executions whose tokens had no price.
    pub unpriced: u32,
    /// Of the run's total step time (a for_each's share is its body's).
    pub duration_share: f64,
    pub cost_share: f64,
    pub container: bool,
    /// A `parallel` step (shown as such rather than as a for_each).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub parallel: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Places on the path taken (for_each steps not counted: their bodies are).
    pub visits: u32,
    /// Step executions (for_each steps not counted: their bodies are).
    pub executions: u32,
    pub attempts: u32,
    /// Summed step time, for_each steps left out (their time is their body's).
    pub duration_sec: f64,
    pub tokens: Tokens,
    pub cost_usd: f64,
    pub unpriced: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Repeat {
    pub step: String,
    pub visits: u32,
    /// The most visits within one activation (one iteration of its enclosing loops).
    pub most_in_one_pass: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutOfOrder {
    /// Position of `to` in the path (0-based).
    pub position: usize,
    pub from: String,
    pub to: String,
    /// Where the graph lets control go from `from`.
    pub allowed: Vec<String>,
}

/// The path taken, checked against the workflow's graph.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PathCheck {
    /// Which workflow the check used.
    pub workflow: String,
    /// On the default (all-success) path, never entered, and the run went on past them (or
    /// ended successfully without them).
    pub skipped: Vec<String>,
    /// On the default path after the point where an unfinished or failed run stopped.
    pub not_reached: Vec<String>,
    pub repeated: Vec<Repeat>,
    pub out_of_order: Vec<OutOfOrder>,
    /// Steps on the path that the workflow does not have.
    pub unknown: Vec<String>,
}

impl PathCheck {
    pub fn is_clean(&self) -> bool {
        self.skipped.is_empty() && self.out_of_order.is_empty() && self.unknown.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub step: String,
    pub exec: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lane: Vec<u64>,
    pub status: String,
    pub error: String,
    /// A later attempt (after a resume) replaced it.
    pub superseded: bool,
}

/// The report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub source: RunSource,
    /// RUN_ROOT relative to the workspace.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// `running`, `succeeded`, `failed`, `interrupted`, or `stopped` (unfinished, its engine
    /// gone: resume it).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// From the first record to the last (or to the end), downtime between resumes included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_sec: Option<f64>,
    pub resumes: u32,
    /// One row per step, in order of first execution.
    pub steps: Vec<StepRow>,
    pub totals: Totals,
    /// The steps in execution order, a resume's replay merged (each completed step once).
    pub path_taken: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<PathCheck>,
    /// Why the path was not checked, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_skipped: Option<String>,
    pub failures: Vec<Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loop_detected: Option<String>,
    /// Every step execution, superseded ones included.
    pub executions: Vec<Execution>,
    pub notes: Vec<String>,
    /// Child runs of its `workflow:` steps (each reported on by its own run id).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildView>,
}

/// A run left out of a many-run report, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedRun {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunLine {
    pub run_id: String,
    pub source: RunSource,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    pub duration_sec: f64,
    pub cost_usd: f64,
}

/// One step name over many runs.
#[derive(Debug, Clone, Serialize)]
pub struct StepStats {
    pub step: String,
    /// Executions that ran (skips by `when` not counted).
    pub count: u32,
    /// Runs in which it ran.
    pub runs: u32,
    pub p50_duration_sec: f64,
    pub p95_duration_sec: f64,
    pub p50_cost_usd: f64,
    pub p95_cost_usd: f64,
    pub failed: u32,
    pub rejected: u32,
    /// `failed / count`.
    pub failure_rate: f64,
    pub total_duration_sec: f64,
    pub total_cost_usd: f64,
    pub tokens: Tokens,
    pub unpriced: u32,
}

/// One step execution singled out (slowest, costliest).
#[derive(Debug, Clone, Serialize)]
pub struct Notable {
    pub run_id: String,
    pub path: String,
    pub step: String,
    pub exec: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lane: Vec<u64>,
    pub duration_sec: f64,
    pub cost_usd: f64,
}

/// The report over many runs.
#[derive(Debug, Clone, Serialize)]
pub struct RunsReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    pub runs: Vec<RunLine>,
    pub skipped: Vec<SkippedRun>,
    /// Sorted by total time, longest first.
    pub steps: Vec<StepStats>,
    pub slowest: Vec<Notable>,
    pub costliest: Vec<Notable>,
    pub total_duration_sec: f64,
    pub total_cost_usd: f64,
}

/// Reports on one run, the runs since a time, or all runs (task runs under `processed/` and
/// `failed/` included). A run whose records cannot be read is an error for `One` and a
/// `skipped` entry with its reason otherwise.
pub fn report(workspace: &Path, selector: RunSelector) -> Result<Report, ObserveError> {
    match selector {
        RunSelector::One(id) => {
            let loc = locate(workspace, &id)?;
            let loaded = load(workspace, &loc).map_err(|reason| ObserveError::Unreadable {
                id: id.clone(),
                path: loc.root.clone(),
                reason,
            })?;
            Ok(Report::Run(Box::new(analyze(workspace, &loaded))))
        }
        RunSelector::Since(since) => Ok(Report::Runs(Box::new(many(workspace, Some(since))))),
        RunSelector::All => Ok(Report::Runs(Box::new(many(workspace, None)))),
    }
}

fn task_info(loaded: &Loaded) -> Option<TaskInfo> {
    if loaded.loc.source == RunSource::Runs {
        return None;
    }
    let status = loaded.status_json.as_ref();
    let field = |k: &str| status.and_then(|s| s[k].as_str().map(str::to_string));
    Some(TaskInfo {
        role: field("agent"),
        task: field("task"),
        attempt: status.and_then(|s| s["attempt"].as_u64()),
        message: field("message"),
    })
}

/// How a run's workflow loads: a swarm task's as its role loads it (provider steps without
/// `provider:` use the role's runtime), any other on its own.
fn load_options(workspace: &Path, loaded: &Loaded) -> orchestrate_lang::load::LoadOptions {
    let role = match loaded.loc.source {
        RunSource::Runs => None,
        RunSource::Running => loaded
            .loc
            .root
            .parent()
            .map(dir_name)
            .filter(|r| !r.is_empty()),
        RunSource::Processed | RunSource::Failed => task_info(loaded).and_then(|t| t.role),
    };
    orchestrate_lang::load::LoadOptions {
        default_provider: role
            .and_then(|role| orchestrate_engine::role::load_one(workspace, &role).ok())
            .and_then(|(role, _)| role.runtime),
        ..Default::default()
    }
}

/// The workflow a run ran: the copy saved in RUN_ROOT, else (older task runs kept no copy)
/// the file the run names, when its fingerprint is still the run's.
fn run_workflow(workspace: &Path, loaded: &Loaded) -> Result<(Workflow, String), String> {
    let options = load_options(workspace, loaded);
    let copy = loaded.loc.root.join("workflow.yaml");
    if copy.is_file() {
        return orchestrate_lang::load::load_file_with(&copy, &options)
            .map(|w| (w, "workflow.yaml saved with the run".to_string()))
            .map_err(|e| {
                format!(
                    "its saved workflow.yaml no longer loads: {}",
                    e.render().lines().next().unwrap_or("")
                )
            });
    }
    // Which file ran and its fingerprint: state.json's, else the run_started event's (a swarm
    // task's run recorded before task runs kept their workflow.yaml).
    let named = match &loaded.state {
        Some(state) => Some((state.workflow.clone(), state.fingerprint.clone())),
        None => loaded
            .events
            .iter()
            .find(|e| e["event"] == "run_started")
            .and_then(|e| {
                Some((
                    e["workflow"].as_str()?.to_string(),
                    e["fingerprint"].as_str()?.to_string(),
                ))
            }),
    };
    let Some((workflow_path, fingerprint)) = named else {
        return Err(
            "no saved workflow.yaml, and neither state.json nor a run_started event names the workflow"
                .into(),
        );
    };
    let path = Path::new(&workflow_path);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        workspace.join(path)
    };
    let workflow = orchestrate_lang::load::load_file_with(&path, &options)
        .map_err(|_| format!("no saved workflow.yaml, and {workflow_path} does not load"))?;
    if workflow.fingerprint != fingerprint {
        return Err(format!(
            "no saved workflow.yaml, and {workflow_path} changed since the run (fingerprint {} != {fingerprint})",
            workflow.fingerprint
        ));
    }
    Ok((
        workflow,
        format!("{workflow_path} (unchanged since the run)"),
    ))
}

/// The run's status as recorded, with an unfinished run whose engine is gone called `stopped`.
fn run_status(loaded: &Loaded, facts: &Facts) -> (String, Option<String>) {
    if let Some(end) = &facts.end {
        return (end.status.clone(), end.error.clone());
    }
    if loaded.loc.source == RunSource::Runs && engine_alive(&loaded.loc.root) == Some(false) {
        return (
            "stopped".into(),
            Some(format!(
                "its engine (pid {}) is gone without recording an end; continue it with \
                 `orchestrate resume {}`",
                lock_pid(&loaded.loc.root).unwrap_or_default(),
                loaded.run_id
            )),
        );
    }
    if let Some(status) = &loaded.status_json {
        // A task attempt that ended before its runner recorded an end.
        let outcome = if status["success"] == true {
            "succeeded"
        } else {
            "failed"
        };
        return (outcome.into(), str_field(status, "message"));
    }
    match &loaded.state {
        Some(state) if state.status != orchestrate_engine::state::RunStatus::Running => (
            serde_json::to_value(state.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "unknown".into()),
            state.error.clone(),
        ),
        _ => ("running".into(), None),
    }
}

fn analyze(workspace: &Path, loaded: &Loaded) -> RunReport {
    let facts = fold(&loaded.events, &loaded.run_id);
    let mut notes = loaded.notes.clone();
    let (status, error) = run_status(loaded, &facts);

    // Rows, in order of first execution.
    let mut order: Vec<String> = Vec::new();
    let mut rows: HashMap<String, StepRow> = HashMap::new();
    let mut totals = Totals::default();
    for e in &facts.executions {
        let row = rows.entry(e.step.clone()).or_insert_with(|| {
            order.push(e.step.clone());
            StepRow {
                step: e.step.clone(),
                visits: 0,
                attempts: 0,
                skipped: 0,
                failed: 0,
                rejected: 0,
                duration_sec: 0.0,
                tokens: Tokens::default(),
                cost_usd: 0.0,
                unpriced: 0,
                duration_share: 0.0,
                cost_share: 0.0,
                container: false,
                parallel: false,
            }
        });
        row.container |= e.container;
        row.parallel |= e.parallel;
        row.attempts += e.attempts;
        row.duration_sec += e.duration_sec;
        row.tokens.add(&e.tokens);
        row.cost_usd += e.cost_usd;
        row.unpriced += u32::from(e.unpriced);
        match e.status.as_str() {
            "skipped" => row.skipped += 1,
            "failed" => row.failed += 1,
            "rejected" => row.rejected += 1,
            _ => {}
        }
        if !e.container {
            totals.executions += u32::from(e.status != "skipped");
            totals.attempts += e.attempts;
            totals.duration_sec += e.duration_sec;
            totals.tokens.add(&e.tokens);
            totals.cost_usd += e.cost_usd;
            totals.unpriced += u32::from(e.unpriced);
        }
    }
    let path: Vec<&Execution> = facts.path.iter().map(|&i| &facts.executions[i]).collect();
    for e in &path {
        if let Some(row) = rows.get_mut(&e.step) {
            row.visits += 1;
        }
        totals.visits += u32::from(!e.container);
    }
    let mut steps: Vec<StepRow> = order.iter().filter_map(|name| rows.remove(name)).collect();
    for row in &mut steps {
        row.duration_share = share(row.duration_sec, totals.duration_sec);
        row.cost_share = share(row.cost_usd, totals.cost_usd);
    }

    let (check, check_skipped) = match run_workflow(workspace, loaded) {
        Ok((workflow, source)) => (Some(check_path(&workflow, &path, &status, source)), None),
        Err(reason) => (None, Some(reason)),
    };

    let failures = facts
        .executions
        .iter()
        .filter(|e| matches!(e.status.as_str(), "failed" | "rejected" | "interrupted"))
        .map(|e| Failure {
            step: e.step.clone(),
            exec: e.exec,
            lane: e.lane.clone(),
            status: e.status.clone(),
            error: e.error.clone().unwrap_or_else(|| match e.exit_code {
                Some(code) => format!("exit code {code}"),
                None => e.status.clone(),
            }),
            superseded: e.superseded,
        })
        .collect();

    let started_at = facts
        .started_at
        .clone()
        .or_else(|| loaded.state.as_ref().map(|s| s.started_at.clone()));
    let finished_at = facts.end.as_ref().map(|e| e.at.clone());
    let wall_sec = match (&started_at, finished_at.as_ref().or(facts.last_ts.as_ref())) {
        (Some(from), Some(to)) => seconds_between(from, to),
        _ => None,
    };
    if loaded.events.is_empty() {
        notes.push("the event log is empty: nothing ran yet".into());
    }
    let children = children_of(workspace, &loaded.events, status == "running");
    RunReport {
        run_id: loaded.run_id.clone(),
        source: loaded.loc.source,
        path: loaded.loc.label(workspace),
        task: task_info(loaded),
        workflow: facts
            .workflow_name
            .clone()
            .or_else(|| loaded.state.as_ref().map(|s| s.workflow_name.clone())),
        status,
        error,
        started_at,
        finished_at,
        wall_sec,
        resumes: facts.resumes,
        steps,
        totals,
        path_taken: path.iter().map(|e| e.step.clone()).collect(),
        check,
        check_skipped,
        failures,
        loop_detected: facts.loop_detected.clone(),
        executions: facts.executions.clone(),
        children,
        notes,
    }
}

fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

fn check_path(workflow: &Workflow, path: &[&Execution], status: &str, source: String) -> PathCheck {
    let graph = Graph::of(workflow);
    let known: HashSet<&str> = workflow
        .all_steps()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let mut check = PathCheck {
        workflow: source,
        ..PathCheck::default()
    };

    // Out of order: each step must be reachable from the one before by the graph's edges.
    let start = Hop::name(START);
    let mut previous: Option<Hop> = Some(start);
    for (position, e) in path.iter().enumerate() {
        if !known.contains(e.step.as_str()) {
            if !check.unknown.contains(&e.step) {
                check.unknown.push(e.step.clone());
            }
            // After an unknown step nothing can be said about the next transition.
            previous = None;
            continue;
        }
        let hop = Hop::of(e);
        if let Some(from) = &previous
            && graph.route(from, &hop).is_none()
        {
            check.out_of_order.push(OutOfOrder {
                position,
                from: from.step.to_string(),
                to: e.step.clone(),
                allowed: graph.successors(from.step),
            });
        }
        previous = Some(hop);
    }

    // Repeated: more than one visit within one activation of its step list.
    let mut per_pass: HashMap<(&str, &[u64]), u32> = HashMap::new();
    let mut visits: HashMap<&str, u32> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for e in path {
        *per_pass
            .entry((e.step.as_str(), e.iteration.as_slice()))
            .or_default() += 1;
        let v = visits.entry(e.step.as_str()).or_default();
        if *v == 0 {
            order.push(e.step.as_str());
        }
        *v += 1;
    }
    for name in order {
        let most = per_pass
            .iter()
            .filter(|((n, _), _)| *n == name)
            .map(|(_, &c)| c)
            .max()
            .unwrap_or(0);
        if most > 1 {
            check.repeated.push(Repeat {
                step: name.to_string(),
                visits: visits.get(name).copied().unwrap_or(0),
                most_in_one_pass: most,
            });
        }
    }

    // Skipped / not reached: default-path steps never entered.
    let entered: HashSet<&str> = path.iter().map(|e| e.step.as_str()).collect();
    let default = default_path(workflow);
    // A loop that was skipped or had no items explains why its body never ran.
    let empty_loops: HashSet<&str> = path
        .iter()
        .filter(|e| {
            e.container
                || graph
                    .edges
                    .iter()
                    .any(|g| g.from == e.step && g.label == Some("each"))
        })
        .map(|e| e.step.as_str())
        .filter(|name| {
            path.iter()
                .filter(|e| e.step == *name)
                .all(|e| e.status == "skipped" || e.items == Some(0))
        })
        .collect();
    let last_reached = default
        .iter()
        .rposition(|name| entered.contains(name.as_str()));
    for (index, name) in default.iter().enumerate() {
        if entered.contains(name.as_str()) {
            continue;
        }
        let mut ancestor = graph.parent.get(name);
        let mut explained = false;
        while let Some(parent) = ancestor {
            if !entered.contains(parent.as_str()) || empty_loops.contains(parent.as_str()) {
                explained = true;
                break;
            }
            ancestor = graph.parent.get(parent);
        }
        if explained {
            continue;
        }
        let passed = status == "succeeded" || last_reached.is_some_and(|last| index < last);
        if passed {
            check.skipped.push(name.clone());
        } else {
            check.not_reached.push(name.clone());
        }
    }
    check
}

fn run_start(loaded: &Loaded) -> Option<DateTime<Utc>> {
    loaded
        .events
        .iter()
        .find(|e| e["event"] == "run_started")
        .and_then(|e| e["ts"].as_str())
        .or_else(|| loaded.events.first().and_then(|e| e["ts"].as_str()))
        .and_then(parse_ts)
        .or_else(|| loaded.state.as_ref().and_then(|s| parse_ts(&s.started_at)))
}

fn many(workspace: &Path, since: Option<DateTime<Utc>>) -> RunsReport {
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    let mut reports: Vec<(DateTime<Utc>, RunReport)> = Vec::new();
    for loc in all_runs(workspace) {
        let loaded = match load(workspace, &loc) {
            Ok(loaded) => loaded,
            Err(reason) => {
                skipped.push(SkippedRun {
                    path: loc.label(workspace),
                    reason,
                });
                continue;
            }
        };
        let start = run_start(&loaded);
        if let Some(since) = since {
            match start {
                Some(start) if start >= since => {}
                Some(_) => continue,
                None => {
                    skipped.push(SkippedRun {
                        path: loc.label(workspace),
                        reason: "its start time is not recorded, so --since cannot place it".into(),
                    });
                    continue;
                }
            }
        }
        reports.push((start.unwrap_or_default(), analyze(workspace, &loaded)));
    }
    reports.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.path.cmp(&b.1.path)));

    let mut samples: BTreeMap<String, Vec<&Execution>> = BTreeMap::new();
    let mut runs_of: HashMap<String, HashSet<usize>> = HashMap::new();
    let mut notable: Vec<Notable> = Vec::new();
    let mut total_duration = 0.0;
    let mut total_cost = 0.0;
    for (index, (_, report)) in reports.iter().enumerate() {
        runs.push(RunLine {
            run_id: report.run_id.clone(),
            source: report.source,
            path: report.path.clone(),
            workflow: report.workflow.clone(),
            status: report.status.clone(),
            started_at: report.started_at.clone(),
            duration_sec: report.totals.duration_sec,
            cost_usd: report.totals.cost_usd,
        });
        total_duration += report.totals.duration_sec;
        total_cost += report.totals.cost_usd;
        for e in &report.executions {
            if e.status == "skipped" || e.container {
                continue;
            }
            samples.entry(e.step.clone()).or_default().push(e);
            runs_of.entry(e.step.clone()).or_default().insert(index);
            notable.push(Notable {
                run_id: report.run_id.clone(),
                path: report.path.clone(),
                step: e.step.clone(),
                exec: e.exec,
                lane: e.lane.clone(),
                duration_sec: e.duration_sec,
                cost_usd: e.cost_usd,
            });
        }
    }
    let mut steps: Vec<StepStats> = samples
        .into_iter()
        .map(|(step, executions)| {
            let durations: Vec<f64> = executions.iter().map(|e| e.duration_sec).collect();
            let costs: Vec<f64> = executions.iter().map(|e| e.cost_usd).collect();
            let count = u32::try_from(executions.len()).unwrap_or(u32::MAX);
            let failed = executions.iter().filter(|e| e.status == "failed").count() as u32;
            let mut tokens = Tokens::default();
            executions.iter().for_each(|e| tokens.add(&e.tokens));
            StepStats {
                runs: runs_of.get(&step).map_or(0, |r| r.len() as u32),
                p50_duration_sec: percentile(&durations, 0.50),
                p95_duration_sec: percentile(&durations, 0.95),
                p50_cost_usd: percentile(&costs, 0.50),
                p95_cost_usd: percentile(&costs, 0.95),
                failed,
                rejected: executions.iter().filter(|e| e.status == "rejected").count() as u32,
                failure_rate: share(f64::from(failed), f64::from(count)),
                total_duration_sec: durations.iter().sum(),
                total_cost_usd: costs.iter().sum(),
                unpriced: executions.iter().filter(|e| e.unpriced).count() as u32,
                tokens,
                count,
                step,
            }
        })
        .collect();
    steps.sort_by(|a, b| {
        b.total_duration_sec
            .total_cmp(&a.total_duration_sec)
            .then_with(|| a.step.cmp(&b.step))
    });
    let mut slowest = notable.clone();
    slowest.sort_by(|a, b| b.duration_sec.total_cmp(&a.duration_sec));
    slowest.truncate(TOP_N);
    let mut costliest: Vec<Notable> = notable.into_iter().filter(|n| n.cost_usd > 0.0).collect();
    costliest.sort_by(|a, b| b.cost_usd.total_cmp(&a.cost_usd));
    costliest.truncate(TOP_N);
    RunsReport {
        since: since.map(|s| s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        runs,
        skipped,
        steps,
        slowest,
        costliest,
        total_duration_sec: total_duration,
        total_cost_usd: total_cost,
    }
}

/// Nearest-rank percentile: the smallest sample with at least `p` of the samples at or below.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------------
// Rendering helpers

pub fn fmt_duration(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{seconds:.2}s")
    } else if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else if seconds < 3600.0 {
        let s = seconds.round() as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = (seconds / 60.0).round() as u64;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

pub fn fmt_cost(usd: f64) -> String {
    if usd == 0.0 {
        "-".into()
    } else if usd < 1.0 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    }
}

pub fn fmt_tokens(n: u64) -> String {
    if n == 0 {
        "-".into()
    } else if n < 1000 {
        n.to_string()
    } else if n < 1_000_000 {
        format!("{:.1}k", n as f64 / 1e3)
    } else {
        format!("{:.2}M", n as f64 / 1e6)
    }
}

/// An RFC 3339 record time as `2026-11-24 02:07:35Z` (the records keep microseconds).
pub fn fmt_time(ts: &str) -> String {
    match parse_ts(ts) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        None => ts.to_string(),
    }
}

fn fmt_share(share: f64) -> String {
    if share == 0.0 {
        "-".into()
    } else {
        format!("{:.1}%", share * 100.0)
    }
}

/// A plain text table; `align` has one letter per column, `l` (left) or `r` (right).
fn table(headers: &[&str], align: &str, rows: &[Vec<String>]) -> String {
    let right: Vec<bool> = align.chars().map(|c| c == 'r').collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count());
            if i > 0 {
                text.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn render_path(path: &[String]) -> String {
    if path.is_empty() {
        return "(no step finished)".into();
    }
    let shown: Vec<&str> = path.iter().take(PATH_SHOWN).map(String::as_str).collect();
    let mut text = shown.join(" → ");
    if path.len() > PATH_SHOWN {
        let _ = write!(text, " … ({} more)", path.len() - PATH_SHOWN);
    }
    text
}

impl RunReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "run {}", self.run_id);
        if let Some(workflow) = &self.workflow {
            let _ = write!(out, "  workflow {workflow}");
        }
        let _ = write!(out, "  {}", self.status);
        if self.resumes > 0 {
            let _ = write!(
                out,
                "  (resumed {} time{})",
                self.resumes,
                if self.resumes == 1 { "" } else { "s" }
            );
        }
        out.push('\n');
        if let Some(task) = &self.task {
            match (&task.task, &task.role) {
                (Some(id), Some(role)) => {
                    let _ = write!(out, "task {id} of role {role}");
                    if let Some(attempt) = task.attempt {
                        let _ = write!(out, " (attempt {attempt})");
                    }
                    let _ = writeln!(out, " in {}", self.path);
                }
                // No status.json (the attempt did not get to write one).
                _ => {
                    let _ = writeln!(out, "task run in {}", self.path);
                }
            }
        }
        if let Some(started) = &self.started_at {
            let _ = write!(out, "started {}", fmt_time(started));
            if let Some(finished) = &self.finished_at {
                let _ = write!(out, "  finished {}", fmt_time(finished));
            }
            if let Some(wall) = self.wall_sec {
                let _ = write!(out, "  wall {}", fmt_duration(wall));
            }
            out.push('\n');
        }
        if let Some(error) = &self.error {
            let _ = writeln!(out, "error: {error}");
        }
        out.push('\n');
        let mut rows: Vec<Vec<String>> = self
            .steps
            .iter()
            .map(|r| {
                let name = if r.parallel {
                    format!("{} (parallel)", r.step)
                } else if r.container {
                    format!("{} (for_each)", r.step)
                } else {
                    r.step.clone()
                };
                let mut outcome = Vec::new();
                if r.failed > 0 {
                    outcome.push(format!("{} failed", r.failed));
                }
                if r.rejected > 0 {
                    outcome.push(format!("{} rejected", r.rejected));
                }
                if r.skipped > 0 {
                    outcome.push(format!("{} skipped", r.skipped));
                }
                let cost = if r.unpriced > 0 {
                    format!("{} (+{} unpriced)", fmt_cost(r.cost_usd), r.unpriced)
                } else {
                    fmt_cost(r.cost_usd)
                };
                vec![
                    name,
                    r.visits.to_string(),
                    r.attempts.to_string(),
                    fmt_duration(r.duration_sec),
                    if r.container {
                        "(body)".into()
                    } else {
                        fmt_share(r.duration_share)
                    },
                    fmt_tokens(r.tokens.input),
                    fmt_tokens(r.tokens.output),
                    fmt_tokens(r.tokens.cache()),
                    cost,
                    fmt_share(r.cost_share),
                    outcome.join(", "),
                ]
            })
            .collect();
        let t = &self.totals;
        rows.push(vec![
            "total".into(),
            t.visits.to_string(),
            t.attempts.to_string(),
            fmt_duration(t.duration_sec),
            String::new(),
            fmt_tokens(t.tokens.input),
            fmt_tokens(t.tokens.output),
            fmt_tokens(t.tokens.cache()),
            if t.unpriced > 0 {
                format!("{} (+{} unpriced)", fmt_cost(t.cost_usd), t.unpriced)
            } else {
                fmt_cost(t.cost_usd)
            },
            String::new(),
            String::new(),
        ]);
        out.push_str(&table(
            &[
                "step", "visits", "attempts", "time", "time%", "in", "out", "cache", "cost",
                "cost%", "",
            ],
            "lrrrrrrrrrl",
            &rows,
        ));
        out.push('\n');
        // What the cost column cannot show: tokens spent on models with no price.
        for e in self.executions.iter().filter(|e| e.unpriced) {
            let t = &e.tokens;
            let tokens = t.input + t.output + t.cache_read + t.cache_write;
            let at = if e.iteration.is_empty() {
                String::new()
            } else {
                format!(
                    " [{}]",
                    e.iteration
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(".")
                )
            };
            let _ = writeln!(
                out,
                "! {}{at}: {} tokens, {}",
                e.step,
                orchestrate_base::human::group_digits(tokens),
                orchestrate_engine::progress::cost_unknown(e.model.as_deref())
            );
        }
        let _ = writeln!(out, "path: {}", render_path(&self.path_taken));
        match (&self.check, &self.check_skipped) {
            (Some(check), _) => {
                let _ = writeln!(out, "checked against {}:", check.workflow);
                if check.out_of_order.is_empty() && check.unknown.is_empty() {
                    let _ = writeln!(out, "  ✓ every transition follows an edge of the graph");
                }
                for o in &check.out_of_order {
                    let _ = writeln!(
                        out,
                        "  ! out of order at #{}: {} → {} (no edge allows it; from {} the graph goes to {})",
                        o.position + 1,
                        o.from,
                        o.to,
                        o.from,
                        if o.allowed.is_empty() {
                            "nowhere".to_string()
                        } else {
                            o.allowed.join(", ")
                        }
                    );
                }
                if !check.unknown.is_empty() {
                    let _ = writeln!(out, "  ! not in the workflow: {}", check.unknown.join(", "));
                }
                for r in &check.repeated {
                    let _ = writeln!(
                        out,
                        "  ↻ repeated: {} ×{} (at most {} in one pass)",
                        r.step, r.visits, r.most_in_one_pass
                    );
                }
                if !check.skipped.is_empty() {
                    let _ = writeln!(
                        out,
                        "  ! skipped (on the default path, never entered): {}",
                        check.skipped.join(", ")
                    );
                }
                if !check.not_reached.is_empty() {
                    let _ = writeln!(
                        out,
                        "  - not reached (the run stopped before them): {}",
                        check.not_reached.join(", ")
                    );
                }
            }
            (None, Some(reason)) => {
                let _ = writeln!(out, "path not checked: {reason}");
            }
            (None, None) => {}
        }
        if let Some(cycle) = &self.loop_detected {
            let _ = writeln!(out, "loop detected: {cycle}");
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "failures:");
            for f in &self.failures {
                let _ = writeln!(
                    out,
                    "  {} (exec {}) {}: {}{}",
                    f.step,
                    exec_label(&f.lane, f.exec),
                    f.status,
                    f.error,
                    if f.superseded {
                        " [run again after resume]"
                    } else {
                        ""
                    }
                );
            }
        }
        if !self.children.is_empty() {
            let _ = writeln!(
                out,
                "\nchild runs (their spending is in their steps' rows above):"
            );
            for child in &self.children {
                let id = child.run_id.as_deref().unwrap_or("?");
                let _ = writeln!(
                    out,
                    "  {} (exec {}): workflow {}, run {id} {}  (orchestrate report {id})",
                    child.step, child.exec, child.workflow, child.status
                );
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

impl RunsReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let tasks = self
            .runs
            .iter()
            .filter(|r| r.source != RunSource::Runs)
            .count();
        let _ = write!(
            out,
            "{} run{}",
            self.runs.len(),
            if self.runs.len() == 1 { "" } else { "s" }
        );
        if tasks > 0 {
            let _ = write!(
                out,
                " ({tasks} task run{})",
                if tasks == 1 { "" } else { "s" }
            );
        }
        if let Some(since) = &self.since {
            let _ = write!(out, " since {since}");
        }
        let _ = writeln!(
            out,
            ": {} of step time, {}",
            fmt_duration(self.total_duration_sec),
            fmt_cost(self.total_cost_usd)
        );
        if self.runs.is_empty() {
            let _ = writeln!(
                out,
                "no runs to report on; start one with `orchestrate run WORKFLOW`"
            );
        } else {
            out.push('\n');
            let rows: Vec<Vec<String>> = self
                .runs
                .iter()
                .map(|r| {
                    vec![
                        if r.source == RunSource::Runs {
                            r.run_id.clone()
                        } else {
                            r.path.clone()
                        },
                        r.workflow.clone().unwrap_or_default(),
                        r.status.clone(),
                        r.started_at.as_deref().map(fmt_time).unwrap_or_default(),
                        fmt_duration(r.duration_sec),
                        fmt_cost(r.cost_usd),
                    ]
                })
                .collect();
            out.push_str(&table(
                &["run", "workflow", "status", "started", "time", "cost"],
                "llllrr",
                &rows,
            ));
        }
        if !self.steps.is_empty() {
            out.push('\n');
            let rows: Vec<Vec<String>> = self
                .steps
                .iter()
                .map(|s| {
                    vec![
                        s.step.clone(),
                        s.count.to_string(),
                        s.runs.to_string(),
                        fmt_duration(s.p50_duration_sec),
                        fmt_duration(s.p95_duration_sec),
                        fmt_cost(s.p50_cost_usd),
                        fmt_cost(s.p95_cost_usd),
                        format!("{:.0}%", s.failure_rate * 100.0),
                        fmt_duration(s.total_duration_sec),
                        if s.unpriced > 0 {
                            format!("{} (+{} unpriced)", fmt_cost(s.total_cost_usd), s.unpriced)
                        } else {
                            fmt_cost(s.total_cost_usd)
                        },
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "step",
                    "count",
                    "runs",
                    "p50 time",
                    "p95 time",
                    "p50 cost",
                    "p95 cost",
                    "fail%",
                    "total time",
                    "total cost",
                ],
                "lrrrrrrrrr",
                &rows,
            ));
        }
        for (title, list) in [("slowest", &self.slowest), ("costliest", &self.costliest)] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{title} steps:");
            for n in list {
                let _ = writeln!(
                    out,
                    "  {:>8}  {:>9}  {} (exec {}) in {}",
                    fmt_duration(n.duration_sec),
                    fmt_cost(n.cost_usd),
                    n.step,
                    exec_label(&n.lane, n.exec),
                    n.path
                );
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(out, "\nskipped (records not readable):");
            for s in &self.skipped {
                let _ = writeln!(out, "  {}: {}", s.path, s.reason);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// status

/// Where a run is now.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// Set when there is no run to show (and then nothing else is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// `running`, `succeeded`, `failed`, `interrupted`, or `stopped` (unfinished, engine gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The innermost step in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<OpenStep>,
    /// Its agent phase, when it is an agent step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Enclosing steps in progress (for_each loops), outermost first.
    pub within: Vec<OpenStep>,
    /// Other steps in progress at the same time: fan-out items besides the current one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub running_too: Vec<OpenStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_sec: Option<f64>,
    /// Sums over finished steps.
    pub steps_finished: u32,
    pub cost_usd: f64,
    pub tokens: Tokens,
    pub unpriced: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for_approval: Option<ApprovalWait>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrying: Option<RetryWait>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseWait>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    pub resumes: u32,
    pub notes: Vec<String>,
    /// Child runs of the run's `workflow:` steps, in the order they started.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildView>,
}

/// A child run (a `workflow:` step's), as its parent's status lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ChildView {
    pub step: String,
    pub exec: u64,
    pub workflow: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Its RUN_ROOT, relative to the workspace.
    pub path: String,
    /// `running`, `succeeded`, `failed`, `interrupted`, or `stopped` (unfinished, engine gone).
    pub status: String,
    /// While it runs (in `status`): the step it is at, its own running child's included
    /// (`Build › Test`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
}

/// The child runs a run's events name (`child_started`, `child_finished`), with each child's
/// own record for its run id and, while unfinished, its status. A child is known by its
/// directory: fan-out items number their executions each from 1, so `exec` alone repeats.
fn children_of(workspace: &Path, events: &[Value], running: bool) -> Vec<ChildView> {
    let mut out: Vec<ChildView> = Vec::new();
    for e in events {
        let (Some(step), Some(exec), Some(path)) = (
            e["step"].as_str(),
            e["exec"].as_u64(),
            e["run_root"].as_str(),
        ) else {
            continue;
        };
        match e["event"].as_str() {
            Some("child_started") => {
                out.retain(|c| c.path != path);
                out.push(ChildView {
                    step: step.to_string(),
                    exec,
                    workflow: e["workflow"].as_str().unwrap_or_default().to_string(),
                    run_id: None,
                    path: path.to_string(),
                    status: if running { "running" } else { "stopped" }.to_string(),
                    now: None,
                });
            }
            Some("child_finished") => {
                if let Some(child) = out.iter_mut().find(|c| c.path == path) {
                    child.run_id = e["run_id"].as_str().map(str::to_string);
                    child.status = e["status"].as_str().unwrap_or("unknown").to_string();
                }
            }
            _ => {}
        }
    }
    for child in &mut out {
        if child.run_id.is_none() {
            child.run_id = orchestrate_engine::runs::recorded_run_id(&workspace.join(&child.path));
        }
    }
    out
}

impl StatusView {
    fn empty(message: String) -> StatusView {
        StatusView {
            message: Some(message),
            run_id: None,
            path: None,
            workflow: None,
            status: None,
            error: None,
            current: None,
            phase: None,
            within: Vec::new(),
            running_too: Vec::new(),
            started_at: None,
            elapsed_sec: None,
            steps_finished: 0,
            cost_usd: 0.0,
            tokens: Tokens::default(),
            unpriced: 0,
            waiting_for_approval: None,
            retrying: None,
            paused: None,
            last_failure: None,
            resumes: 0,
            notes: Vec::new(),
            children: Vec::new(),
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(message) = &self.message {
            let _ = writeln!(out, "{message}");
            return out;
        }
        let _ = write!(out, "run {}", self.run_id.as_deref().unwrap_or("?"));
        if let Some(workflow) = &self.workflow {
            let _ = write!(out, "  workflow {workflow}");
        }
        let _ = write!(out, "  {}", self.status.as_deref().unwrap_or("unknown"));
        if let Some(elapsed) = self.elapsed_sec {
            let _ = write!(out, "  {}", fmt_duration(elapsed));
        }
        if self.resumes > 0 {
            let _ = write!(out, "  (resumed {}×)", self.resumes);
        }
        out.push('\n');
        if let Some(current) = &self.current {
            let mut line = format!("now: {} ({}", current.step, current.kind);
            if let Some(phase) = &self.phase {
                let _ = write!(line, ", {phase} phase");
            }
            if current.attempt > 1 {
                let _ = write!(line, ", attempt {}", current.attempt);
            }
            line.push(')');
            for open in &self.within {
                let index = open_index(current, open);
                let _ = write!(line, " in {}{index}", open.step);
            }
            if let Some(since) = parse_ts(&current.started_at) {
                let secs = (Utc::now() - since).num_milliseconds() as f64 / 1e3;
                let _ = write!(line, ", for {}", fmt_duration(secs.max(0.0)));
            }
            let _ = writeln!(out, "{line}");
            if !self.running_too.is_empty() {
                let others: Vec<String> = self
                    .running_too
                    .iter()
                    .map(|o| format!("{} (exec {})", o.step, exec_label(&o.lane, o.exec)))
                    .collect();
                let _ = writeln!(out, "running too: {}", others.join(", "));
            }
        }
        if let Some(wait) = &self.waiting_for_approval {
            let _ = writeln!(
                out,
                "waiting for approval of {} since {}: {}\n  {}\n  {}",
                wait.step,
                fmt_time(&wait.since),
                wait.message,
                wait.approve,
                wait.reject
            );
        }
        if let Some(retry) = &self.retrying {
            let _ = writeln!(
                out,
                "retrying {}: attempt {} failed{}, next in {}",
                retry.step,
                retry.failed_attempt,
                retry
                    .exit_code
                    .map(|c| format!(" (exit code {c})"))
                    .unwrap_or_default(),
                fmt_duration(retry.delay_sec)
            );
        }
        if let Some(pause) = &self.paused {
            let _ = writeln!(
                out,
                "paused {} ({}){}",
                pause.step,
                pause.reason,
                pause
                    .until
                    .as_ref()
                    .map(|u| format!(" until {u}"))
                    .unwrap_or_default()
            );
        }
        let spent = if self.cost_usd > 0.0 {
            format!(", cost {}", fmt_cost(self.cost_usd))
        } else if self.tokens.is_zero() && self.unpriced == 0 {
            "; no agent usage recorded".to_string()
        } else {
            ", cost unknown".to_string()
        };
        let _ = write!(
            out,
            "so far: {} step{} finished{spent}",
            self.steps_finished,
            if self.steps_finished == 1 { "" } else { "s" },
        );
        if self.unpriced > 0 {
            let _ = write!(out, " (+{} unpriced)", self.unpriced);
        }
        if !self.tokens.is_zero() {
            let _ = write!(
                out,
                ", tokens in {} / out {} / cache {}",
                fmt_tokens(self.tokens.input),
                fmt_tokens(self.tokens.output),
                fmt_tokens(self.tokens.cache())
            );
        }
        out.push('\n');
        if let Some(failure) = &self.last_failure {
            let _ = writeln!(
                out,
                "last failure: {} (exec {}): {}",
                failure.step,
                exec_label(&failure.lane, failure.exec),
                failure.error
            );
        }
        if let Some(error) = &self.error {
            let _ = writeln!(out, "error: {error}");
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        for child in &self.children {
            let id = child.run_id.as_deref().unwrap_or("?");
            let now = match &child.now {
                Some(step) => format!(" at {step}"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "child: {} (workflow {}): run {id} {}{now}  (orchestrate status {id} | orchestrate logs {id})",
                child.step, child.workflow, child.status
            );
        }
        out
    }
}

/// " (item 2)" for a loop whose body holds `current`.
fn open_index(current: &OpenStep, open: &OpenStep) -> String {
    let depth = open.iteration.len();
    current
        .iteration
        .get(depth)
        .map(|i| format!(" (item {})", i + 1))
        .unwrap_or_default()
}

/// The status of run `run_id`, or of the newest run under `.orchestrate/runs/`. With no runs at
/// all, a view with only `message` set.
pub fn status(workspace: &Path, run_id: Option<&str>) -> Result<StatusView, ObserveError> {
    let view = match run_id {
        Some(id) => status_of(workspace, locate(workspace, id)?, Some(id))?,
        None => {
            let tasks = TaskRuns::count(workspace);
            let Some(loc) = newest_any_run(workspace) else {
                return Ok(StatusView::empty(format!(
                    "no runs yet in {} and no task runs in running/, processed/ or failed/; start one with `orchestrate run WORKFLOW` (or `orchestrate enqueue ROLE` in a swarm)",
                    RunDir::runs_dir(workspace).display()
                )));
            };
            let mut view = status_of(workspace, loc, None)?;
            if let Some(note) = tasks.note() {
                view.notes.push(note);
            }
            view
        }
    };
    Ok(view)
}

/// How many swarm task runs the workspace holds, by where they are.
#[derive(Default)]
struct TaskRuns {
    running: usize,
    processed: usize,
    failed: usize,
}

impl TaskRuns {
    fn count(workspace: &Path) -> TaskRuns {
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
    fn note(&self) -> Option<String> {
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
fn newest_any_run(workspace: &Path) -> Option<RunLoc> {
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

/// The status of the run at `loc` (`run_id`: how the user named it).
fn status_of(
    workspace: &Path,
    loc: RunLoc,
    run_id: Option<&str>,
) -> Result<StatusView, ObserveError> {
    let id = run_id.unwrap_or(&loc.name).to_string();
    let loaded = load(workspace, &loc).map_err(|reason| ObserveError::Unreadable {
        id,
        path: loc.root.clone(),
        reason,
    })?;
    let facts = fold(&loaded.events, &loaded.run_id);
    let (status, error) = run_status(&loaded, &facts);
    let running = status == "running";
    let mut open = if running {
        facts.open.clone()
    } else {
        Vec::new()
    };
    let current = open.pop();
    // Fan-out items run at once: of the other open steps, those of the current step's lane or
    // of a lane it descends from enclose it; the rest are its siblings, running too.
    let (open, running_too): (Vec<OpenStep>, Vec<OpenStep>) = open
        .into_iter()
        .partition(|o| current.as_ref().is_none_or(|c| c.lane.starts_with(&o.lane)));
    let phase = current.as_ref().and_then(|c| {
        if c.kind != "agent" {
            return None;
        }
        facts.phase.clone().or_else(|| {
            // No phase_entered since the start: the phase the workflow gives the step.
            run_workflow(workspace, &loaded).ok().and_then(|(w, _)| {
                match &w.find_step(&c.step)?.kind {
                    StepKind::Agent(agent) => Some(agent.phase.label().to_string()),
                    _ => None,
                }
            })
        })
    });
    let mut tokens = Tokens::default();
    let mut cost = 0.0;
    let mut unpriced = 0;
    let mut finished = 0;
    for e in facts.executions.iter().filter(|e| !e.container) {
        tokens.add(&e.tokens);
        cost += e.cost_usd;
        unpriced += u32::from(e.unpriced);
        finished += u32::from(e.status != "skipped");
    }
    let started_at = facts
        .started_at
        .clone()
        .or_else(|| loaded.state.as_ref().map(|s| s.started_at.clone()));
    let elapsed_sec = started_at.as_deref().and_then(|from| {
        let to = match &facts.end {
            Some(end) => end.at.clone(),
            None if running => orchestrate_base::clock::now_rfc3339(),
            None => facts.last_ts.clone()?,
        };
        seconds_between(from, &to)
    });
    let last_failure = facts
        .executions
        .iter()
        .rev()
        .find(|e| matches!(e.status.as_str(), "failed" | "rejected"))
        .map(|e| Failure {
            step: e.step.clone(),
            exec: e.exec,
            lane: e.lane.clone(),
            status: e.status.clone(),
            error: e
                .error
                .clone()
                .unwrap_or_else(|| format!("exit code {}", e.exit_code.unwrap_or(1))),
            superseded: e.superseded,
        });
    Ok(StatusView {
        message: None,
        run_id: Some(loaded.run_id.clone()),
        path: Some(loaded.loc.label(workspace)),
        workflow: facts
            .workflow_name
            .clone()
            .or_else(|| loaded.state.as_ref().map(|s| s.workflow_name.clone())),
        status: Some(status),
        error,
        current,
        phase,
        within: open,
        running_too,
        started_at,
        elapsed_sec,
        steps_finished: finished,
        cost_usd: cost,
        tokens,
        unpriced,
        waiting_for_approval: if running {
            facts.approval.clone()
        } else {
            None
        },
        retrying: if running { facts.retry.clone() } else { None },
        paused: if running { facts.paused.clone() } else { None },
        last_failure,
        resumes: facts.resumes,
        notes: {
            let mut notes = loaded.notes.clone();
            notes.extend(orchestrate_engine::worktree::describe_run(
                workspace,
                &loaded.run_id,
            ));
            notes
        },
        children: children_of(workspace, &loaded.events, running)
            .into_iter()
            .map(|mut child| {
                if child.status == "running"
                    && let Some(id) = &child.run_id
                    && let Ok(view) = self::status(workspace, Some(id))
                {
                    child.now = view.current.map(|c| match view.children.last() {
                        Some(inner) if inner.status == "running" => match &inner.now {
                            Some(now) => format!("{} › {now}", c.step),
                            None => c.step.clone(),
                        },
                        _ => c.step.clone(),
                    });
                }
                child
            })
            .collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// logs

/// A step log's name, `[LANE.]NNNN-STEP[.ATTEMPT][.pN][.rN].stdout|stderr`, taken apart for
/// ordering: by execution (a fan-out item's logs carry its lane, `0003.0002.0001-Work`, and sort
/// as a block after the fan-out step, in item order), then resume session (a resumed run's logs carry `.rN`), attempt (`.2`, `.3`),
/// the run after a usage-limit pause (`.pN`), and stdout before stderr.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct LogName {
    exec: Vec<u64>,
    resume: u32,
    attempt: u32,
    pause: u32,
    /// 0 for stdout, 1 for stderr.
    stream: u8,
    step: String,
    file: String,
}

fn parse_log_name(file: &str) -> Option<LogName> {
    let (base, stream) = if let Some(base) = file.strip_suffix(".stdout") {
        (base, 0)
    } else if let Some(base) = file.strip_suffix(".stderr") {
        (base, 1)
    } else {
        return None;
    };
    let (exec, rest) = base.split_once('-')?;
    let exec: Vec<u64> = exec
        .split('.')
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    // Step names have no dots, so what follows the first dot is suffixes.
    let mut parts = rest.split('.');
    let step = parts.next()?.to_string();
    let (mut attempt, mut pause, mut resume) = (1, 0, 0);
    for part in parts {
        if let Some(n) = part.strip_prefix('r') {
            resume = n.parse().ok()?;
        } else if let Some(n) = part.strip_prefix('p') {
            pause = n.parse().ok()?;
        } else {
            attempt = part.parse().ok()?;
        }
    }
    Some(LogName {
        exec,
        resume,
        attempt,
        pause,
        stream,
        step,
        file: file.to_string(),
    })
}

fn list_logs(dir: &Path, step: Option<&str>) -> Vec<LogName> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut logs: Vec<LogName> = entries
        .flatten()
        .filter_map(|e| parse_log_name(&e.file_name().to_string_lossy()))
        .filter(|l| step.is_none_or(|s| l.step == s))
        .collect();
    logs.sort();
    logs
}

/// Reads new lines of `events.jsonl` from `offset`, returning whether `run_finished` is among
/// them. Only whole lines are consumed, so a line being written is read on the next poll.
fn saw_run_finished(path: &Path, offset: &mut u64) -> io::Result<bool> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    file.seek(SeekFrom::Start(*offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
        return Ok(false);
    };
    *offset += end as u64 + 1;
    // A resume can append after a run_finished; only the last word counts.
    let mut finished = None;
    for line in bytes[..end].split(|&b| b == b'\n') {
        if let Ok(value) = serde_json::from_slice::<Value>(line) {
            match value["event"].as_str() {
                Some("run_finished") => finished = Some(true),
                Some("run_started" | "run_resumed") => finished = Some(false),
                _ => {}
            }
        }
    }
    Ok(finished.unwrap_or(false))
}

/// Prints the step logs of run `run_id` in execution order, each under a header
/// (`== 0003-Build.stdout ==`); with `step`, only that step's logs (all its executions and
/// attempts). With `follow`, keeps printing output as the files grow and new ones appear, polling
/// every 100 ms, until the run's `events.jsonl` records `run_finished` (or its engine is gone);
/// it blocks the calling thread and needs no async runtime.
pub fn logs(
    workspace: &Path,
    run_id: &str,
    step: Option<&str>,
    follow: bool,
    out: &mut dyn Write,
) -> Result<(), ObserveError> {
    let loc = locate(workspace, run_id)?;
    let dir = RunDir {
        root: loc.root.clone(),
    };
    if let Some(step) = step {
        // A `workflow:` step has no logs of its own: its child run's are shown (its latest).
        let events = orchestrate_engine::events::read(&dir.events()).unwrap_or_default();
        if let Some(child) = children_of(workspace, &events, true)
            .into_iter()
            .rfind(|c| c.step == step)
            && let Some(child_id) = child.run_id
        {
            writeln!(
                out,
                "== step `{step}` runs workflow {}: child run {child_id} ==",
                child.workflow
            )
            .map_err(ObserveError::Output)?;
            return logs(workspace, &child_id, None, follow, out);
        }
    }
    let logs_dir = dir.logs();
    let events_path = dir.events();
    let mut events_offset = 0u64;
    // Finished runs (and task runs already moved to processed/ or failed/) are printed once.
    let mut done = !follow
        || matches!(loc.source, RunSource::Processed | RunSource::Failed)
        || saw_run_finished(&events_path, &mut events_offset)
            .map_err(io_err("read", &events_path))?;
    let mut printer = Printer::default();
    let mut checked_alive = Instant::now();
    loop {
        printer.drain(&logs_dir, step, out)?;
        if done {
            break;
        }
        std::thread::sleep(FOLLOW_POLL);
        // Logs are written before the events that end their step, so a drain after
        // run_finished is seen has all the output.
        done = saw_run_finished(&events_path, &mut events_offset)
            .map_err(io_err("read", &events_path))?;
        if !done && !loc.root.exists() {
            // A task attempt's directory is moved to processed/ or failed/ as it ends.
            printer.finish(out)?;
            writeln!(
                out,
                "== the run's records moved (the task finished); see `orchestrate logs {run_id}` =="
            )
            .map_err(ObserveError::Output)?;
            return Ok(());
        }
        if !done && checked_alive.elapsed() >= LIVENESS_EVERY {
            checked_alive = Instant::now();
            if engine_alive(&loc.root) == Some(false) {
                printer.drain(&logs_dir, step, out)?;
                printer.finish(out)?;
                writeln!(
                    out,
                    "== the run's engine (pid {}) is gone without finishing; `orchestrate resume {run_id}` continues it ==",
                    lock_pid(&loc.root).unwrap_or_default()
                )
                .map_err(ObserveError::Output)?;
                return Ok(());
            }
        }
    }
    printer.finish(out)?;
    if printer.seen == 0 && !follow {
        let mut steps: Vec<String> = Vec::new();
        for log in list_logs(&logs_dir, None) {
            if !steps.contains(&log.step) {
                steps.push(log.step);
            }
        }
        let which = step.map(|s| format!(" for step `{s}`")).unwrap_or_default();
        let hint = match step {
            Some(s) if !steps.is_empty() => {
                match orchestrate_lang::diag::did_you_mean(s, steps.iter().map(String::as_str)) {
                    Some(near) => format!(
                        "did you mean `{near}`? (steps with logs: {})",
                        steps.join(", ")
                    ),
                    None => format!("steps with logs: {}", steps.join(", ")),
                }
            }
            _ => format!(
                "a log exists only when a step wrote to that stream ({})",
                logs_dir.display()
            ),
        };
        return Err(ObserveError::NoLogs {
            id: run_id.to_string(),
            which,
            hint,
        });
    }
    Ok(())
}

/// What `logs` has printed so far.
#[derive(Default)]
struct Printer {
    /// Bytes printed of each log file.
    offsets: HashMap<String, u64>,
    /// The file whose header was printed last.
    current: Option<String>,
    /// Whether the output ends a line (so that a header can start one).
    at_line_start: bool,
    /// Log files seen, empty ones included.
    seen: usize,
}

impl Printer {
    /// Prints what is new in each log file, in execution order, with a header whenever the
    /// output switches to another file.
    fn drain(
        &mut self,
        dir: &Path,
        step: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<(), ObserveError> {
        let logs = list_logs(dir, step);
        self.seen = self.seen.max(logs.len());
        for log in logs {
            let path = dir.join(&log.file);
            let offset = self.offsets.get(&log.file).copied().unwrap_or(0);
            // A log is never a link: one that is could lead outside the workspace.
            let opened = {
                use std::os::unix::fs::OpenOptionsExt;
                fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
            };
            let mut file = match opened {
                Ok(file) => file,
                // Gone between the listing and now: nothing to print.
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) if err.raw_os_error() == Some(libc::ELOOP) => continue,
                Err(err) => return Err(io_err("read", &path)(err)),
            };
            let len = file.metadata().map_err(io_err("read", &path))?.len();
            if len <= offset {
                continue;
            }
            file.seek(SeekFrom::Start(offset))
                .map_err(io_err("read", &path))?;
            let mut bytes = Vec::new();
            file.take(len - offset)
                .read_to_end(&mut bytes)
                .map_err(io_err("read", &path))?;
            if bytes.is_empty() {
                continue;
            }
            if self.current.as_deref() != Some(log.file.as_str()) {
                // A header starts its own line even when the previous file's last line did not
                // end (a process still writing it, or one that never wrote a newline).
                let lead = if self.at_line_start || self.current.is_none() {
                    ""
                } else {
                    "\n"
                };
                writeln!(out, "{lead}== {} ==", log.file).map_err(ObserveError::Output)?;
                self.current = Some(log.file.clone());
            }
            out.write_all(&bytes).map_err(ObserveError::Output)?;
            self.at_line_start = bytes.last() == Some(&b'\n');
            self.offsets
                .insert(log.file.clone(), offset + bytes.len() as u64);
        }
        out.flush().map_err(ObserveError::Output)
    }

    /// Ends the output on a whole line.
    fn finish(&mut self, out: &mut dyn Write) -> Result<(), ObserveError> {
        if self.current.is_some() && !self.at_line_start {
            out.write_all(b"\n").map_err(ObserveError::Output)?;
            self.at_line_start = true;
        }
        out.flush().map_err(ObserveError::Output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Writes an `events.jsonl` the way the runner does: `v`, `seq`, `ts`, `event`, fields.
    struct Log {
        seq: u64,
        t0: DateTime<Utc>,
        lines: String,
    }

    impl Log {
        fn new(start: &str) -> Log {
            Log {
                seq: 0,
                t0: parse_ts(start).unwrap(),
                lines: String::new(),
            }
        }

        /// Appends `event` at `at` seconds after the start.
        fn at(&mut self, at: f64, event: &str, fields: Value) -> &mut Log {
            self.seq += 1;
            let ts = self.t0 + chrono::Duration::microseconds((at * 1e6) as i64);
            let mut record = json!({
                "v": 1,
                "seq": self.seq,
                "ts": ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "event": event,
            });
            if let (Value::Object(r), Value::Object(f)) = (&mut record, fields) {
                r.extend(f);
            }
            self.lines.push_str(&record.to_string());
            self.lines.push('\n');
            self
        }

        fn ts(&self, at: f64) -> String {
            (self.t0 + chrono::Duration::microseconds((at * 1e6) as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        }

        /// `step_started` (+ `process_started` for process kinds) and `step_finished`.
        fn step(
            &mut self,
            at: f64,
            name: &str,
            exec: u64,
            iteration: &[u64],
            kind: &str,
            result: Value,
        ) -> &mut Log {
            let duration = result["duration"].as_f64().unwrap_or(0.0);
            self.at(
                at,
                "step_started",
                json!({"step": name, "exec": exec, "kind": kind, "iteration": iteration}),
            );
            if kind != "for_each" && kind != "approval" {
                let attempts = result["attempts"].as_u64().unwrap_or(1);
                for attempt in 1..=attempts {
                    self.at(
                        at,
                        "process_started",
                        json!({"step": name, "exec": exec, "attempt": attempt, "argv": ["make"]}),
                    );
                }
            }
            self.finished(at + duration, name, exec, iteration, result)
        }

        fn finished(
            &mut self,
            at: f64,
            name: &str,
            exec: u64,
            iteration: &[u64],
            mut result: Value,
        ) -> &mut Log {
            let duration = result["duration"].as_f64().unwrap_or(0.0);
            result["started_at"] = json!(self.ts(at - duration));
            result["finished_at"] = json!(self.ts(at));
            self.at(
                at,
                "step_finished",
                json!({"step": name, "exec": exec, "iteration": iteration, "result": result}),
            )
        }

        fn write(&self, root: &Path) {
            fs::create_dir_all(root).unwrap();
            fs::write(root.join("events.jsonl"), &self.lines).unwrap();
        }
    }

    fn ok(duration: f64) -> Value {
        json!({"status": "succeeded", "exit_code": 0, "attempts": 1, "duration": duration,
               "outcome": {"kind": "exited", "code": 0}, "output": "", "truncated": false})
    }

    fn failed(duration: f64, code: i64) -> Value {
        json!({"status": "failed", "exit_code": code, "attempts": 1, "duration": duration,
               "error": format!("exited with code {code}"),
               "outcome": {"kind": "exited", "code": code}, "output": "", "truncated": false})
    }

    fn agent(duration: f64, phase: &str, input: u64, output: u64, cost: Option<f64>) -> Value {
        json!({"status": "succeeded", "exit_code": 0, "attempts": 1, "duration": duration,
               "runtime": "claude", "profile": "claude", "model": "claude-sonnet-4-5",
               "phase": phase, "result": "done", "session_id": "s-1",
               "usage": {"input": input, "output": output, "cache_read": 4000,
                         "cache_write": 200, "reasoning": 0},
               "cost_usd": cost, "turns": 3, "denials": [], "api_retries": 0,
               "truncated": false})
    }

    fn state(run_id: &str, workflow: &str, text: &str, status: &str) -> Value {
        json!({
            "format_version": 1, "run_id": run_id, "workflow": workflow,
            "workflow_name": "ship", "fingerprint": orchestrate_lang::load::fingerprint(text),
            "workspace": "/ws", "status": status,
            "started_at": "2026-11-20T10:00:00.000000Z",
            "updated_at": "2026-11-20T10:05:00.000000Z",
            "timestamp_utc": "20261120T100000Z", "context": {}, "executions": 0,
            "events_seq": 0, "resumes": 0, "steps": {}
        })
    }

    fn write_state(root: &Path, value: &Value) {
        fs::create_dir_all(root).unwrap();
        fs::write(
            root.join("state.json"),
            serde_json::to_vec_pretty(value).unwrap(),
        )
        .unwrap();
    }

    const SHIP: &str = "name: ship
steps:
  - name: Plan
    prompt: \"Plan the change\"
    phase: plan
  - name: Build
    command: [\"make\"]
  - name: Test
    command: [\"make\", \"test\"]
    on:
      failure: {goto: Build}
  - name: Deploy
    command: [\"deploy\"]
  - name: Notify
    command: [\"notify\"]
";

    const LOOPED: &str = "name: resumable
steps:
  - name: Prep
    command: [\"bash\", \"-c\", \"echo prep\"]
  - name: Loop
    for_each:
      items: [a, b]
      steps:
        - name: Work
          command: [\"bash\", \"-c\", \"echo work $1\", \"w\", \"${item}\"]
        - name: Check
          command: [\"bash\", \"-c\", \"test -f ok\"]
  - name: Done
    command: [\"echo\", \"done\"]
";

    fn run_root(ws: &Path, id: &str) -> PathBuf {
        RunDir::new(ws, id).root
    }

    /// The run of LOOPED that failed in Check of item 0, then was resumed and succeeded: the
    /// records the runner writes (replayed steps are not recorded again; execution numbers
    /// restart with the resume).
    fn resumed_run(ws: &Path) -> String {
        let id = "20261120T100000Z-aaaaaa";
        let root = run_root(ws, id);
        let mut log = Log::new("2026-11-20T10:00:00Z");
        log.at(
            0.0,
            "run_started",
            json!({"run_id": id, "workflow": "workflows/r.yaml",
            "name": "resumable", "fingerprint": orchestrate_lang::load::fingerprint(LOOPED),
            "context": {}, "timestamp_utc": "20261120T100000Z", "pid": 4242}),
        )
        .step(0.0, "Prep", 1, &[], "command", ok(1.0))
        .at(
            1.0,
            "step_started",
            json!({"step": "Loop", "exec": 2, "kind": "for_each", "iteration": []}),
        )
        .at(1.0, "loop_started", json!({"step": "Loop", "total": 2}))
        .at(
            1.0,
            "iteration_started",
            json!({"step": "Loop", "index": 0, "total": 2}),
        )
        .step(1.0, "Work", 3, &[0], "command", ok(2.0))
        .step(3.0, "Check", 4, &[0], "command", failed(0.5, 3))
        .finished(
            3.5,
            "Loop",
            2,
            &[],
            json!({"status": "failed", "exit_code": 3, "duration": 2.5,
                "iterations": 0, "total": 2,
                "error": "iteration 0 failed: step `Check` (line 11) failed: exited with code 3"}),
        )
        .at(
            3.5,
            "run_finished",
            json!({"status": "failed", "exit_code": 1,
                "error": "step `Loop` (line 5) failed: iteration 0 failed"}),
        )
        .at(60.0, "run_resumed", json!({"resumes": 1, "journal": 4}))
        .at(
            60.0,
            "step_started",
            json!({"step": "Loop", "exec": 2, "kind": "for_each", "iteration": []}),
        )
        .at(60.0, "loop_started", json!({"step": "Loop", "total": 2}))
        .at(
            60.0,
            "iteration_started",
            json!({"step": "Loop", "index": 0, "total": 2}),
        )
        .step(60.0, "Check", 4, &[0], "command", ok(0.5))
        .at(
            60.5,
            "iteration_started",
            json!({"step": "Loop", "index": 1, "total": 2}),
        )
        .step(60.5, "Work", 5, &[1], "command", ok(2.0))
        .step(62.5, "Check", 6, &[1], "command", ok(0.5))
        .finished(
            63.0,
            "Loop",
            2,
            &[],
            json!({"status": "succeeded", "exit_code": 0,
                "duration": 3.0, "iterations": 2, "total": 2}),
        )
        .step(63.0, "Done", 7, &[], "command", ok(1.0))
        .at(
            64.0,
            "run_finished",
            json!({"status": "succeeded", "exit_code": 0, "error": null}),
        );
        log.write(&root);
        fs::write(root.join("workflow.yaml"), LOOPED).unwrap();
        write_state(&root, &state(id, "workflows/r.yaml", LOOPED, "succeeded"));
        id.to_string()
    }

    /// A run of SHIP whose Test failed once and went back to Build (a loop with repeats), then
    /// jumped from Test straight to Notify (out of order), never entering Deploy.
    fn looping_run(ws: &Path) -> String {
        let id = "20261121T090000Z-bbbbbb";
        let root = run_root(ws, id);
        let mut log = Log::new("2026-11-21T09:00:00Z");
        log.at(
            0.0,
            "run_started",
            json!({"run_id": id, "workflow": "ship.yaml", "name": "ship",
            "fingerprint": "x", "context": {}, "timestamp_utc": "20261121T090000Z", "pid": 1}),
        )
        .at(
            0.0,
            "phase_entered",
            json!({"step": "Plan", "phase": "plan", "from": null, "runtime": "claude"}),
        )
        .step(
            0.0,
            "Plan",
            1,
            &[],
            "agent",
            agent(30.0, "plan", 2000, 500, Some(0.30)),
        )
        .step(30.0, "Build", 2, &[], "command", ok(10.0))
        .step(40.0, "Test", 3, &[], "command", failed(5.0, 1))
        .at(45.0, "goto", json!({"from": "Test", "to": "Build"}))
        .step(45.0, "Build", 4, &[], "command", ok(10.0))
        .step(55.0, "Test", 5, &[], "command", ok(5.0))
        .step(60.0, "Notify", 6, &[], "command", ok(0.0))
        .at(
            60.0,
            "run_finished",
            json!({"status": "succeeded", "exit_code": 0, "error": null}),
        );
        log.write(&root);
        fs::write(root.join("workflow.yaml"), SHIP).unwrap();
        write_state(&root, &state(id, "ship.yaml", SHIP, "succeeded"));
        id.to_string()
    }

    fn one(ws: &Path, id: &str) -> RunReport {
        match report(ws, RunSelector::One(id.into())).unwrap() {
            Report::Run(run) => *run,
            Report::Runs(_) => panic!("asked for one run"),
        }
    }

    #[test]
    fn report_merges_a_resumed_runs_replay_into_one_path() {
        let ws = tempfile::tempdir().unwrap();
        let id = resumed_run(ws.path());
        let run = one(ws.path(), &id);
        assert_eq!(run.status, "succeeded");
        assert_eq!(run.resumes, 1);
        assert_eq!(
            run.path_taken,
            ["Prep", "Loop", "Work", "Check", "Work", "Check", "Done"]
        );
        let check = run.check.as_ref().unwrap();
        assert!(check.out_of_order.is_empty(), "{check:?}");
        assert!(
            check.repeated.is_empty(),
            "iterations are not repeats: {check:?}"
        );
        assert!(check.skipped.is_empty() && check.not_reached.is_empty());
        // The failed Check and the failed Loop were run again: spent, not on the path.
        let row = |name: &str| run.steps.iter().find(|r| r.step == name).unwrap().clone();
        assert_eq!(row("Check").visits, 2);
        assert_eq!(row("Check").attempts, 3);
        assert_eq!(row("Check").failed, 1);
        assert!((row("Check").duration_sec - 1.5).abs() < 1e-9);
        assert!(row("Loop").container);
        assert_eq!(run.failures.len(), 2);
        assert!(run.failures.iter().all(|f| f.superseded));
        // Totals leave the for_each out (its time is its body's): 1 + 2 + .5 + .5 + 2 + .5 + 1.
        assert!((run.totals.duration_sec - 7.5).abs() < 1e-9);
        assert_eq!(run.totals.visits, 6);
        assert!((row("Work").duration_share - 4.0 / 7.5).abs() < 1e-9);
        assert!((run.wall_sec.unwrap() - 64.0).abs() < 1e-6);
        let text = run.render();
        assert!(text.contains("(resumed 1 time)"), "{text}");
        assert!(
            text.contains("Prep → Loop → Work → Check → Work → Check → Done"),
            "{text}"
        );
        assert!(text.contains("[run again after resume]"), "{text}");
        let json = serde_json::to_value(Report::Run(Box::new(run))).unwrap();
        assert_eq!(json["kind"], "run");
        assert_eq!(json["steps"][0]["step"], "Prep");
    }

    #[test]
    fn report_flags_repeats_skips_and_out_of_order_transitions() {
        let ws = tempfile::tempdir().unwrap();
        let id = looping_run(ws.path());
        let run = one(ws.path(), &id);
        let check = run.check.clone().unwrap();
        let repeated: Vec<(&str, u32)> = check
            .repeated
            .iter()
            .map(|r| (r.step.as_str(), r.visits))
            .collect();
        assert_eq!(repeated, [("Build", 2), ("Test", 2)]);
        assert_eq!(check.skipped, ["Deploy"]);
        assert_eq!(check.out_of_order.len(), 1, "{check:?}");
        let o = &check.out_of_order[0];
        assert_eq!(
            (o.from.as_str(), o.to.as_str(), o.position),
            ("Test", "Notify", 5)
        );
        assert_eq!(o.allowed, ["Build", "Deploy"]);
        // Costs and tokens: only the agent step spent any.
        let plan = &run.steps[0];
        assert_eq!(plan.step, "Plan");
        assert_eq!(plan.tokens.input, 2000);
        assert_eq!(plan.tokens.cache(), 4200);
        assert!((plan.cost_share - 1.0).abs() < 1e-9);
        assert!((plan.duration_share - 0.5).abs() < 1e-9);
        assert!((run.totals.cost_usd - 0.30).abs() < 1e-9);
        let text = run.render();
        assert!(text.contains("out of order at #6: Test → Notify"), "{text}");
        assert!(
            text.contains("skipped (on the default path, never entered): Deploy"),
            "{text}"
        );
        assert!(text.contains("repeated: Build ×2"), "{text}");
        assert!(text.contains("$0.3000"), "{text}");
    }

    #[test]
    fn report_over_many_runs_includes_task_runs_and_skips_bad_records() {
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path();
        resumed_run(ws);
        looping_run(ws);
        // A task run of the swarm: no saved workflow (the check loads the role's workflow file
        // when its fingerprint matches), a status.json beside the records.
        fs::write(ws.join("ship.yaml"), SHIP).unwrap();
        let task = ws.join("processed/20261122T080000.000001Z_engineer_t-1");
        let mut log = Log::new("2026-11-22T08:00:00Z");
        log.at(
            0.0,
            "run_started",
            json!({"run_id": "20261122T080000Z-cccccc", "workflow": "ship.yaml",
            "name": "ship", "fingerprint": orchestrate_lang::load::fingerprint(SHIP), "context": {},
            "timestamp_utc": "20261122T080000Z", "pid": 7}),
        )
        .step(
            0.0,
            "Plan",
            1,
            &[],
            "agent",
            agent(10.0, "plan", 1000, 100, Some(0.10)),
        )
        .step(10.0, "Build", 2, &[], "command", ok(20.0))
        .step(30.0, "Test", 3, &[], "command", ok(4.0))
        .step(34.0, "Deploy", 4, &[], "command", ok(1.0))
        .step(35.0, "Notify", 5, &[], "command", ok(0.0))
        .at(
            35.0,
            "run_finished",
            json!({"status": "succeeded", "exit_code": 0, "error": null}),
        );
        log.write(&task);
        write_state(
            &task,
            &state("20261122T080000Z-cccccc", "ship.yaml", SHIP, "succeeded"),
        );
        fs::write(task.join("t-1.task"), "build it\n").unwrap();
        fs::write(
            task.join("status.json"),
            json!({"schema": "status/v1", "agent": "engineer",
            "task": "t-1", "attempt": 1, "success": true, "exit_code": 0,
            "run_id": "20261122T080000Z-cccccc", "message": "workflow succeeded"})
            .to_string(),
        )
        .unwrap();
        // A failed task attempt whose Plan had no price.
        let failed_task = ws.join("failed/20261122T090000.000001Z_engineer_t-2");
        let mut log = Log::new("2026-11-22T09:00:00Z");
        log.at(
            0.0,
            "run_started",
            json!({"run_id": "20261122T090000Z-dddddd", "name": "ship"}),
        )
        .step(
            0.0,
            "Plan",
            1,
            &[],
            "agent",
            agent(50.0, "plan", 10, 10, None),
        )
        .step(50.0, "Build", 2, &[], "command", failed(3.0, 2))
        .at(
            53.0,
            "run_finished",
            json!({"status": "failed", "exit_code": 2, "error": "step `Build` failed"}),
        );
        log.write(&failed_task);
        // A spec-format processed/ entry (a task file only) is not a run and not reported.
        fs::create_dir_all(ws.join("processed/20261124T010835Z_0")).unwrap();
        fs::write(ws.join("processed/20261124T010835Z_0/part_1.task"), "x").unwrap();
        // Damaged in the middle: skipped with the line.
        let torn = run_root(ws, "20261123T000000Z-eeeeee");
        fs::create_dir_all(&torn).unwrap();
        fs::write(
            torn.join("events.jsonl"),
            "{\"v\":1,\"seq\":1,\"event\":\"run_started\"}\n{\"v\":1,\"se\n{\"v\":1,\"seq\":3}\n",
        )
        .unwrap();
        // From a newer orchestrate: skipped, never guessed at.
        let newer = run_root(ws, "20261123T000001Z-ffffff");
        fs::create_dir_all(&newer).unwrap();
        fs::write(
            newer.join("events.jsonl"),
            "{\"v\":2,\"seq\":1,\"ts\":\"2026-11-23T00:00:01Z\",\"event\":\"run_started\"}\n",
        )
        .unwrap();
        // A torn final line only (a crash mid-append): read, with a note.
        let crashed = run_root(ws, "20261123T000002Z-a0a0a0");
        let mut log = Log::new("2026-11-23T00:00:02Z");
        log.at(
            0.0,
            "run_started",
            json!({"run_id": "20261123T000002Z-a0a0a0", "name": "ship"}),
        )
        .step(
            0.0,
            "Plan",
            1,
            &[],
            "agent",
            agent(20.0, "plan", 10, 10, Some(0.02)),
        );
        log.lines
            .push_str("{\"v\":1,\"seq\":9,\"event\":\"step_fin");
        log.write(&crashed);

        let Report::Runs(all) = report(ws, RunSelector::All).unwrap() else {
            panic!("many runs")
        };
        let paths: Vec<&str> = all.runs.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(all.runs.len(), 5, "{paths:?}");
        assert!(paths.contains(&"processed/20261122T080000.000001Z_engineer_t-1"));
        assert!(paths.contains(&"failed/20261122T090000.000001Z_engineer_t-2"));
        assert_eq!(all.skipped.len(), 2, "{:?}", all.skipped);
        assert!(
            all.skipped
                .iter()
                .any(|s| s.reason.contains("line 2") && s.reason.contains("damaged"))
        );
        assert!(
            all.skipped
                .iter()
                .any(|s| s.reason.contains("newer") && s.reason.contains("upgrade"))
        );

        let plan = all.steps.iter().find(|s| s.step == "Plan").unwrap();
        assert_eq!(plan.count, 4);
        assert_eq!(plan.runs, 4);
        assert_eq!(plan.unpriced, 1);
        // Durations 30, 10, 50, 20 -> p50 20, p95 50; costs .30 .10 0 .02 -> p50 .02, p95 .30.
        assert_eq!(plan.p50_duration_sec, 20.0);
        assert_eq!(plan.p95_duration_sec, 50.0);
        assert!((plan.p50_cost_usd - 0.02).abs() < 1e-9);
        assert!((plan.p95_cost_usd - 0.30).abs() < 1e-9);
        let build = all.steps.iter().find(|s| s.step == "Build").unwrap();
        assert_eq!((build.count, build.failed), (4, 1));
        assert!((build.failure_rate - 0.25).abs() < 1e-9);
        assert_eq!(all.slowest[0].step, "Plan");
        assert_eq!(all.slowest[0].duration_sec, 50.0);
        assert_eq!(all.costliest[0].cost_usd, 0.30);
        assert!((all.total_cost_usd - 0.42).abs() < 1e-9);

        // The task run was checked against the role's workflow file (same fingerprint).
        let task_run = one(ws, "t-1");
        assert_eq!(task_run.source, RunSource::Processed);
        assert_eq!(
            task_run.task.as_ref().unwrap().role.as_deref(),
            Some("engineer")
        );
        let check = task_run.check.unwrap();
        assert!(
            check.workflow.contains("unchanged since the run"),
            "{check:?}"
        );
        assert!(check.is_clean() && check.repeated.is_empty(), "{check:?}");
        // The failed one has neither a workflow copy nor a state: not checked, with the reason.
        let failed_run = one(ws, "t-2");
        assert!(failed_run.check.is_none());
        assert!(
            failed_run
                .check_skipped
                .unwrap()
                .contains("no saved workflow.yaml")
        );
        // One damaged run asked for by name is an error that names it.
        let err = report(ws, RunSelector::One("20261123T000000Z-eeeeee".into())).unwrap_err();
        assert!(err.to_string().contains("line 2 of events.jsonl"), "{err}");

        let Report::Runs(since) = report(
            ws,
            RunSelector::Since(parse_ts("2026-11-22T00:00:00Z").unwrap()),
        )
        .unwrap() else {
            panic!("many runs")
        };
        assert_eq!(since.runs.len(), 3);
        let text = since.render();
        assert!(
            text.contains("3 runs (2 task runs) since 2026-11-22T00:00:00Z"),
            "{text}"
        );
        assert!(text.contains("skipped (records not readable)"), "{text}");
        assert!(text.contains("costliest steps:"), "{text}");
        assert!(text.contains("(+1 unpriced)"), "{text}");
    }

    #[test]
    fn graph_draws_loops_edges_and_the_path_taken() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.yaml");
        fs::write(
            &file,
            "name: w
steps:
  - name: Prep
    command: [\"true\"]
  - name: Loop
    for_each:
      items: [a, b]
      steps:
        - name: Work
          command: [\"true\"]
        - name: Check
          command: [\"true\"]
          on:
            failure: {goto: Work}
  - name: Review
    approval:
      message: ok?
    on:
      rejected: {goto: Prep}
      success: {goto: _end}
  - name: Fix
    command: [\"true\"]
",
        )
        .unwrap();
        let workflow = orchestrate_lang::load::load_file(&file).unwrap();
        let plain = graph(&workflow, None, GraphFormat::Mermaid);
        assert!(plain.starts_with("flowchart TD\n"), "{plain}");
        assert!(
            plain.contains("subgraph s1_body [\"for_each Loop (as item)\"]"),
            "{plain}"
        );
        assert!(plain.contains("s1 -->|\"each\"| s2"), "{plain}");
        assert!(plain.contains("s3 -->|\"failure\"| s2"), "{plain}");
        assert!(plain.contains("s3 -.->|\"next item\"| s1"), "{plain}");
        assert!(plain.contains("s1 --> s4"), "{plain}");
        assert!(plain.contains("s4 -->|\"rejected\"| s0"), "{plain}");
        assert!(plain.contains("s4 -->|\"success\"| end_"), "{plain}");
        // Review always leaves by an edge of its own: no fall-through to Fix.
        assert!(!plain.contains("s4 --> s5"), "{plain}");
        assert!(plain.contains("s5 --> end_"), "{plain}");
        assert!(!plain.contains("classDef"), "{plain}");

        let path: Vec<String> = ["Prep", "Loop", "Work", "Check", "Work", "Check", "Review"]
            .map(String::from)
            .to_vec();
        let overlay = graph(&workflow, Some(&path), GraphFormat::Mermaid);
        assert!(overlay.contains("Work (command) · 2 visits"), "{overlay}");
        // Names alone: Check -> Work is taken to be Check's failure edge (a direct edge).
        assert!(overlay.contains("s3 -->|\"failure ×1\"| s2"), "{overlay}");
        assert!(
            overlay.contains("s3 -.->|\"next item ×1\"| s1"),
            "{overlay}"
        );
        assert!(overlay.contains("s1 -->|\"×1\"| s4"), "{overlay}");
        assert!(
            overlay.contains("class s0,s1,s2,s3,s4 visited"),
            "{overlay}"
        );
        assert!(overlay.contains("class s5 unvisited"), "{overlay}");
        assert!(overlay.contains("linkStyle "), "{overlay}");

        // From the records: item 0's Check failed and went back to Work, then item 1 ran.
        let ws = tempfile::tempdir().unwrap();
        let id = "20261124T140000Z-0f0f0f";
        let root = run_root(ws.path(), id);
        let mut log = Log::new("2026-11-24T14:00:00Z");
        log.at(0.0, "run_started", json!({"run_id": id, "name": "w"}))
            .step(0.0, "Prep", 1, &[], "command", ok(1.0))
            .at(1.0, "step_started", json!({"step": "Loop", "exec": 2, "kind": "for_each", "iteration": []}))
            .step(1.0, "Work", 3, &[0], "command", ok(1.0))
            .step(2.0, "Check", 4, &[0], "command", failed(1.0, 1))
            .at(3.0, "goto", json!({"from": "Check", "to": "Work"}))
            .step(3.0, "Work", 5, &[0], "command", ok(1.0))
            .step(4.0, "Check", 6, &[0], "command", ok(1.0))
            .step(5.0, "Work", 7, &[1], "command", ok(1.0))
            .step(6.0, "Check", 8, &[1], "command", ok(1.0))
            .finished(7.0, "Loop", 2, &[], json!({"status": "succeeded", "exit_code": 0, "duration": 6.0, "iterations": 2, "total": 2}))
            .at(7.0, "step_started", json!({"step": "Review", "exec": 9, "kind": "approval", "iteration": []}))
            .finished(8.0, "Review", 9, &[], json!({"status": "succeeded", "exit_code": 0, "decision": "approve", "duration": 1.0}))
            .at(8.0, "goto", json!({"from": "Review", "to": "_end"}))
            .at(8.0, "run_finished", json!({"status": "succeeded", "exit_code": 0, "error": null}));
        log.write(&root);
        fs::copy(&file, root.join("workflow.yaml")).unwrap();
        let run = one(ws.path(), id);
        let check = run.check.clone().unwrap();
        assert!(check.out_of_order.is_empty(), "{check:?}");
        assert_eq!(check.repeated.len(), 2, "{check:?}");
        assert_eq!(check.repeated[0].most_in_one_pass, 2);
        assert!(check.skipped.is_empty(), "{check:?}");
        let precise = graph_of_run(&workflow, &run, GraphFormat::Mermaid);
        assert!(precise.contains("s1 -->|\"each ×2\"| s2"), "{precise}");
        assert!(precise.contains("s3 -->|\"failure ×1\"| s2"), "{precise}");
        assert!(
            precise.contains("s3 -.->|\"next item ×2\"| s1"),
            "{precise}"
        );
        assert!(precise.contains("Work (command) · 3 visits"), "{precise}");

        let dot = graph(&workflow, Some(&path), GraphFormat::Dot);
        assert!(dot.starts_with("digraph \"w\" {"), "{dot}");
        assert!(dot.contains("subgraph \"cluster_Loop\" {"), "{dot}");
        assert!(
            dot.contains(
                "\"Loop\" -> \"Work\" [label=\"each ×1\", color=\"#2d6a4f\", penwidth=3];"
            ),
            "{dot}"
        );
        assert!(
            dot.contains(
                "\"Check\" -> \"Work\" [label=\"failure ×1\", color=\"#2d6a4f\", penwidth=3];"
            ),
            "{dot}"
        );
        assert!(
            dot.contains("\"Review\" -> \"_end\" [label=\"success\"];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"Review\" -> \"Prep\" [label=\"rejected\", color=\"#c0392b\"];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"Fix\" [label=\"Fix (command)\", shape=box, color=\"#adb5bd\""),
            "{dot}"
        );
        assert!(dot.trim_end().ends_with('}'));
    }

    #[test]
    fn status_shows_the_step_in_flight_its_phase_and_a_pending_approval() {
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path();
        let empty = status(ws, None).unwrap();
        assert!(
            empty.message.as_deref().unwrap().contains("no runs yet"),
            "{empty:?}"
        );
        assert!(empty.render().contains("orchestrate run WORKFLOW"));

        // An older finished run, and the newest one waiting for an approval.
        resumed_run(ws);
        let id = "20261124T120000Z-123456";
        let root = run_root(ws, id);
        let mut log = Log::new("2026-11-24T12:00:00Z");
        log.at(
            0.0,
            "run_started",
            json!({"run_id": id, "name": "ship", "pid": 1}),
        )
        .at(
            0.0,
            "phase_entered",
            json!({"step": "Plan", "phase": "plan", "from": null, "runtime": "claude"}),
        )
        .step(
            0.0,
            "Plan",
            1,
            &[],
            "agent",
            agent(30.0, "plan", 2000, 500, Some(0.25)),
        )
        .step(30.0, "Build", 2, &[], "command", failed(1.0, 2))
        .at(
            31.0,
            "step_started",
            json!({"step": "Approve", "exec": 3, "kind": "approval", "iteration": []}),
        )
        .at(
            31.0,
            "approval_requested",
            json!({"step": "Approve", "message": "Ship it?",
                "request": format!("approvals/{id}/Approve.request.json"), "artifacts": []}),
        );
        log.write(&root);
        fs::write(root.join("lock"), format!("{}\n", std::process::id())).unwrap();
        let view = status(ws, None).unwrap();
        assert_eq!(view.run_id.as_deref(), Some(id));
        assert_eq!(view.status.as_deref(), Some("running"));
        assert_eq!(view.current.as_ref().unwrap().step, "Approve");
        assert!(view.phase.is_none(), "an approval has no phase");
        let wait = view.waiting_for_approval.as_ref().unwrap();
        assert_eq!(wait.step, "Approve");
        assert_eq!(wait.approve, format!("orchestrate approve {id} Approve"));
        assert_eq!(view.steps_finished, 2);
        assert!((view.cost_usd - 0.25).abs() < 1e-9);
        assert_eq!(view.tokens.output, 500);
        assert_eq!(view.last_failure.as_ref().unwrap().step, "Build");
        let text = view.render();
        assert!(text.contains("waiting for approval of Approve"), "{text}");
        assert!(text.contains("orchestrate reject"), "{text}");

        // Decided and now in an agent step whose phase was entered earlier (same phase: no new
        // phase_entered event), inside a loop.
        log.at(
            40.0,
            "approval_decided",
            json!({"step": "Approve", "decision": {"decision": "approve"}}),
        )
        .finished(
            40.0,
            "Approve",
            3,
            &[],
            json!({"status": "succeeded", "exit_code": 0, "decision": "approve", "duration": 9.0}),
        )
        .at(
            40.0,
            "step_started",
            json!({"step": "Each", "exec": 4, "kind": "for_each", "iteration": []}),
        )
        .at(
            40.0,
            "iteration_started",
            json!({"step": "Each", "index": 1, "total": 3}),
        )
        .at(
            40.0,
            "step_started",
            json!({"step": "Review", "exec": 5, "kind": "agent", "iteration": [1]}),
        )
        .at(
            40.0,
            "process_started",
            json!({"step": "Review", "exec": 5, "attempt": 1, "argv": []}),
        )
        .at(
            41.0,
            "retry_scheduled",
            json!({"step": "Review", "exec": 5, "attempt": 1, "exit_code": 1, "delay": 2.0}),
        );
        log.write(&root);
        let view = status(ws, Some(id)).unwrap();
        assert!(view.waiting_for_approval.is_none());
        assert_eq!(view.current.as_ref().unwrap().step, "Review");
        assert_eq!(view.phase.as_deref(), Some("plan"));
        assert_eq!(view.within.len(), 1);
        assert_eq!(view.retrying.as_ref().unwrap().failed_attempt, 1);
        let text = view.render();
        assert!(
            text.contains("now: Review (agent, plan phase) in Each (item 2)"),
            "{text}"
        );
        assert!(
            text.contains("retrying Review: attempt 1 failed (exit code 1)"),
            "{text}"
        );

        // The engine died without an end: not "running".
        fs::write(root.join("lock"), "999999999\n").unwrap();
        let view = status(ws, Some(id)).unwrap();
        assert_eq!(view.status.as_deref(), Some("stopped"));
        assert!(
            view.error
                .as_deref()
                .unwrap()
                .contains("orchestrate resume"),
            "{view:?}"
        );
        assert!(view.current.is_none());

        // A finished run: no current step, its elapsed time from start to end.
        let view = status(ws, Some("20261120T100000Z-aaaaaa")).unwrap();
        assert_eq!(view.status.as_deref(), Some("succeeded"));
        assert!((view.elapsed_sec.unwrap() - 64.0).abs() < 1e-6);
        assert_eq!(view.resumes, 1);
        let err = status(ws, Some("nope")).unwrap_err();
        assert!(err.to_string().contains("there is no run `nope`"), "{err}");
    }

    fn write_logs(root: &Path, files: &[(&str, &str)]) {
        fs::create_dir_all(root.join("logs")).unwrap();
        for (name, text) in files {
            fs::write(root.join("logs").join(name), text).unwrap();
        }
    }

    #[test]
    fn logs_print_in_execution_order_and_filter_by_step() {
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path();
        let id = looping_run(ws);
        let root = run_root(ws, &id);
        write_logs(
            &root,
            &[
                ("0010-Notify.stdout", "sent\n"),
                ("0002-Build.stdout", "cc main.c\n"),
                ("0002-Build.stderr", "warning: unused\n"),
                ("0003-Test.stdout", "1 failed\n"),
                ("0003-Test.2.stdout", "still failing"),
                ("0003-Test.r1.stdout", "passed after resume\n"),
                ("0004-Build.stdout", "cc main.c\n"),
                ("notes.txt", "not a log\n"),
            ],
        );
        let mut out = Vec::new();
        logs(ws, &id, None, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "== 0002-Build.stdout ==\ncc main.c\n== 0002-Build.stderr ==\nwarning: unused\n\
             == 0003-Test.stdout ==\n1 failed\n== 0003-Test.2.stdout ==\nstill failing\n\
             == 0003-Test.r1.stdout ==\npassed after resume\n== 0004-Build.stdout ==\ncc main.c\n== 0010-Notify.stdout ==\nsent\n"
        );
        let mut out = Vec::new();
        logs(ws, &id, Some("Build"), false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "== 0002-Build.stdout ==\ncc main.c\n== 0002-Build.stderr ==\nwarning: unused\n\
             == 0004-Build.stdout ==\ncc main.c\n"
        );
        let err = logs(ws, &id, Some("Buidl"), false, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("did you mean `Build`?"), "{err}");

        // A task run is found by its task id; its logs live in its directory.
        let task = ws.join("failed/20261122T090000.000001Z_qa_t-9");
        Log::new("2026-11-22T09:00:00Z")
            .at(
                0.0,
                "run_started",
                json!({"run_id": "20261122T090000Z-999999", "name": "qa"}),
            )
            .write(&task);
        write_logs(&task, &[("0001-Review.stdout", "{\"passed\": false}\n")]);
        let mut out = Vec::new();
        logs(ws, "t-9", None, true, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "== 0001-Review.stdout ==\n{\"passed\": false}\n"
        );
    }

    #[test]
    fn logs_follow_prints_growing_files_until_run_finished() {
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path().to_path_buf();
        let id = "20261124T130000Z-abcdef";
        let root = run_root(&ws, id);
        let mut log = Log::new("2026-11-24T13:00:00Z");
        log.at(
            0.0,
            "run_started",
            json!({"run_id": id, "name": "ship", "pid": 1}),
        )
        .at(
            0.0,
            "step_started",
            json!({"step": "Build", "exec": 1, "kind": "command", "iteration": []}),
        );
        log.write(&root);
        fs::write(root.join("lock"), format!("{}\n", std::process::id())).unwrap();
        write_logs(&root, &[("0001-Build.stdout", "step 1\n")]);

        let writer_root = root.clone();
        let mut writer_log = Log {
            seq: log.seq,
            t0: log.t0,
            lines: String::new(),
        };
        let writer = std::thread::spawn(move || {
            let append = |name: &str, text: &str| {
                let mut file = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(writer_root.join("logs").join(name))
                    .unwrap();
                file.write_all(text.as_bytes()).unwrap();
            };
            std::thread::sleep(Duration::from_millis(250));
            append("0001-Build.stdout", "step 2 (no newl");
            std::thread::sleep(Duration::from_millis(250));
            append("0001-Build.stdout", "ine yet)\n");
            std::thread::sleep(Duration::from_millis(250));
            append("0002-Test.stdout", "ok\n");
            writer_log.finished(1.0, "Build", 1, &[], ok(1.0)).step(
                1.0,
                "Test",
                2,
                &[],
                "command",
                ok(0.5),
            );
            std::thread::sleep(Duration::from_millis(250));
            writer_log.at(
                2.0,
                "run_finished",
                json!({"status": "succeeded", "exit_code": 0, "error": null}),
            );
            let mut events = fs::OpenOptions::new()
                .append(true)
                .open(writer_root.join("events.jsonl"))
                .unwrap();
            // The output of a step is on disk before the event that ends the run.
            append("0002-Test.stderr", "done\n");
            events.write_all(writer_log.lines.as_bytes()).unwrap();
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let follow_ws = ws.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let result = logs(&follow_ws, id, None, true, &mut out).map_err(|e| e.to_string());
            let _ = tx.send((result, out));
        });
        let (result, out) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("follow returns once run_finished is recorded");
        writer.join().unwrap();
        result.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "== 0001-Build.stdout ==\nstep 1\nstep 2 (no newline yet)\n== 0002-Test.stdout ==\nok\n\
             == 0002-Test.stderr ==\ndone\n"
        );
    }

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

    #[test]
    fn log_names_sort_by_execution_resume_attempt_and_stream() {
        let mut names: Vec<LogName> = [
            "0012-B.stdout",
            "0003-A.2.stderr",
            "0003-A.stdout",
            "0003-A.r1.stdout",
            "0003-A.2.stdout",
            "0003-A.p1.stdout",
            "0003-A.2.p1.stdout",
            "0003-A.3.r1.stdout",
            "10000-Z.stdout",
        ]
        .iter()
        .filter_map(|n| parse_log_name(n))
        .collect();
        names.sort();
        let files: Vec<&str> = names.iter().map(|n| n.file.as_str()).collect();
        assert_eq!(
            files,
            [
                "0003-A.stdout",
                "0003-A.p1.stdout",
                "0003-A.2.stdout",
                "0003-A.2.stderr",
                "0003-A.2.p1.stdout",
                "0003-A.r1.stdout",
                "0003-A.3.r1.stdout",
                "0012-B.stdout",
                "10000-Z.stdout"
            ]
        );
        assert!(parse_log_name("notes.txt").is_none());
        assert!(parse_log_name("x-A.stdout").is_none());
        assert!(parse_log_name("0001-A.q.stdout").is_none());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[3.0], 0.95), 3.0);
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 10.0);
        assert_eq!(percentile(&v, 0.95), 19.0);
    }
}

#[cfg(test)]
mod fan_out_tests {
    use super::*;
    use serde_json::json;

    fn finished(step: &str, exec: u64, lane: &[u64], status: &str) -> Value {
        json!({"event": "step_finished", "ts": "2026-01-01T00:00:01Z", "step": step, "exec": exec,
            "lane": lane, "iteration": [], "result": {"status": status, "duration": 1.0}})
    }

    #[test]
    fn children_of_fan_out_items_with_the_same_exec_are_both_listed() {
        let child = |event: &str, lane: u64| {
            json!({"event": event, "step": "Sub", "exec": 1, "lane": [1, lane], "workflow": "c.yaml",
                "run_root": format!(".orchestrate/runs/R/children/0001.{lane:04}.0001-Sub"),
                "run_id": format!("C{lane}"), "status": "succeeded"})
        };
        let events = [
            child("child_started", 0),
            child("child_started", 1),
            child("child_finished", 1),
            child("child_finished", 0),
        ];
        let children = children_of(Path::new("/nowhere"), &events, false);
        let ids: Vec<Option<&str>> = children.iter().map(|c| c.run_id.as_deref()).collect();
        assert_eq!(ids, [Some("C0"), Some("C1")]);
    }

    #[test]
    fn a_resume_replaces_only_the_lanes_it_runs_again() {
        let events = [
            json!({"event": "run_started", "ts": "2026-01-01T00:00:00Z", "name": "wf"}),
            json!({"event": "step_started", "ts": "2026-01-01T00:00:00Z", "step": "Each", "exec": 1, "kind": "for_each", "iteration": []}),
            finished("Work", 1, &[1, 0], "succeeded"),
            finished("Work", 1, &[1, 1], "failed"),
            json!({"event": "step_finished", "ts": "2026-01-01T00:00:02Z", "step": "Each", "exec": 1,
                "iteration": [], "result": {"status": "failed", "iterations": 1, "total": 2}}),
            json!({"event": "run_resumed", "ts": "2026-01-01T00:00:03Z", "resumes": 1}),
            json!({"event": "step_started", "ts": "2026-01-01T00:00:03Z", "step": "Each", "exec": 1, "kind": "for_each", "iteration": []}),
            finished("Work", 1, &[1, 1], "succeeded"),
            json!({"event": "step_finished", "ts": "2026-01-01T00:00:04Z", "step": "Each", "exec": 1,
                "iteration": [], "result": {"status": "succeeded", "iterations": 2, "total": 2}}),
            finished("After", 2, &[], "succeeded"),
        ];
        let facts = fold(&events, "R");
        let path: Vec<(String, String, Vec<u64>)> = facts
            .path
            .iter()
            .map(|&i| {
                let e = &facts.executions[i];
                (e.step.clone(), e.status.clone(), e.key())
            })
            .collect();
        assert_eq!(
            path,
            [
                ("Each".to_string(), "succeeded".to_string(), vec![1]),
                ("Work".to_string(), "succeeded".to_string(), vec![1, 0, 1]),
                ("Work".to_string(), "succeeded".to_string(), vec![1, 1, 1]),
                ("After".to_string(), "succeeded".to_string(), vec![2]),
            ]
        );
        let superseded: Vec<&str> = facts
            .executions
            .iter()
            .filter(|e| e.superseded)
            .map(|e| e.status.as_str())
            .collect();
        assert_eq!(superseded, ["failed", "failed"], "the failed item and loop");
        assert_eq!(exec_label(&[1, 1], 1), "1.1.1");
    }
}
