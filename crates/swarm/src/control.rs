//! Steering from outside the running processes: pausing and resuming roles, cancelling a run or
//! a swarm task.
//!
//! Owns: the durable control files under `.orchestrate/control/` (`<role>/paused.json`,
//! `<role>/cancel/<task>.json`), a run's cancel request (`RUN_ROOT/cancel.json`), the control
//! log (`.orchestrate/control/events.jsonl`), the watcher role processes use to notice them, and
//! what the `cancel`, `pause` and `resume ROLE` commands do (they print it; nothing here does).
//! Does not stop anything itself beyond one signal to a verified run process: role processes act
//! on their own requests (`worker`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::control_log::{self, ControlEvent};
use orchestrate_base::fsutil::relative;
use orchestrate_engine::event::{Event, RunFinished};
use orchestrate_engine::state::{RunDir, RunStatus};
use orchestrate_queue::cancel::{self, CancelRequest};
use orchestrate_queue::queue::{self, TaskState};

/// `.orchestrate/control/`.
pub(crate) fn dir(workspace: &Path) -> PathBuf {
    workspace.join(".orchestrate").join("control")
}

/// `.orchestrate/control/<role>/`: what a role's processes watch.
pub(crate) fn role_dir(workspace: &Path, role: &str) -> PathBuf {
    dir(workspace).join(role)
}

fn pause_path(workspace: &Path, role: &str) -> PathBuf {
    role_dir(workspace, role).join("paused.json")
}

fn cancel_dir(workspace: &Path, role: &str) -> PathBuf {
    role_dir(workspace, role).join("cancel")
}

/// A role's pause: it claims nothing new while this file exists.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pause {
    pub(crate) role: String,
    /// When the pause began (RFC 3339, UTC); empty when the file could not be read.
    pub since: String,
    /// Who paused the role (`$USER`, else the uid); `?` when the file could not be read.
    pub by: String,
}

// ---------------------------------------------------------------------------------------------
// Pause

/// The role's pause, if it is paused.
pub(crate) fn paused(workspace: &Path, role: &str) -> Option<Pause> {
    let bytes = std::fs::read(pause_path(workspace, role)).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| Pause {
        role: role.to_string(),
        since: String::new(),
        by: "?".into(),
    }))
}

/// Pauses a role (durably). Returns the pause in force and whether it was already paused.
pub fn pause(workspace: &Path, role: &str) -> Result<(Pause, bool), ControlError> {
    if let Some(existing) = paused(workspace, role) {
        return Ok((existing, true));
    }
    let pause = Pause {
        role: role.to_string(),
        since: orchestrate_base::clock::now_rfc3339(),
        by: cancel::who(),
    };
    let dir = role_dir(workspace, role);
    std::fs::create_dir_all(&dir).map_err(ControlError::io("create", &dir))?;
    let path = pause_path(workspace, role);
    let bytes = serde_json::to_vec_pretty(&pause).unwrap_or_default();
    orchestrate_base::fsutil::atomic_write(&path, &bytes)
        .map_err(ControlError::io("write", &path))?;
    control_log::log_event(
        workspace,
        &ControlEvent::RolePaused {
            role: role.to_string(),
            by: pause.by.clone(),
        },
    );
    Ok((pause, false))
}

/// Lifts a role's pause; returns the pause that was in force.
pub fn unpause(workspace: &Path, role: &str) -> Result<Option<Pause>, ControlError> {
    let Some(existing) = paused(workspace, role) else {
        return Ok(None);
    };
    let path = pause_path(workspace, role);
    std::fs::remove_file(&path).map_err(ControlError::io("remove", &path))?;
    let _ = orchestrate_base::fsutil::fsync_dir(&role_dir(workspace, role));
    control_log::log_event(
        workspace,
        &ControlEvent::RoleResumed {
            role: role.to_string(),
            by: cancel::who(),
            paused_since: existing.since.clone(),
        },
    );
    Ok(Some(existing))
}

/// Makes this machine's pause file of `role` say what the cluster's database says (a role
/// process on a shared database does, every few seconds): written when the role is paused
/// there and the file says otherwise, removed when it is not. True when the file changed.
pub(crate) fn mirror_pause(workspace: &Path, role: &str, pause: Option<Pause>) -> bool {
    let path = pause_path(workspace, role);
    match pause {
        Some(pause) => {
            if paused(workspace, role).is_some_and(|p| p.since == pause.since && p.by == pause.by) {
                return false;
            }
            let _ = std::fs::create_dir_all(role_dir(workspace, role));
            let bytes = serde_json::to_vec_pretty(&pause).unwrap_or_default();
            orchestrate_base::fsutil::atomic_write(&path, &bytes).is_ok()
        }
        None => std::fs::remove_file(&path).is_ok(),
    }
}

/// Writes the cluster's cancel request of task `id` (asked by `by` at `at` on any machine) as
/// this machine's, unless it is there already. True when written.
pub(crate) fn mirror_task_cancel(
    workspace: &Path,
    role: &str,
    id: &str,
    by: &str,
    at: &str,
) -> bool {
    if cancel_dir(workspace, role)
        .join(format!("{id}.json"))
        .exists()
    {
        return false;
    }
    let mut request = CancelRequest::new(id);
    request.by = by.to_string();
    request.at = at.to_string();
    request.pid = 0;
    request_task_cancel(workspace, role, id, &request).is_ok()
}

/// Whether `name` is a role of the workspace (`agents/<name>.yaml` exists).
pub fn is_role(workspace: &Path, name: &str) -> bool {
    orchestrate_base::ids::check_id(name).is_ok()
        && ["yaml", "yml"].iter().any(|ext| {
            orchestrate_engine::role::agents_dir(workspace)
                .join(format!("{name}.{ext}"))
                .is_file()
        })
}

/// A role defined in `agents/`, or an error that names the file and suggests one.
pub fn check_role(workspace: &Path, role: &str) -> Result<(), String> {
    orchestrate_engine::role::layout_for(workspace, role)?;
    if is_role(workspace, role) {
        Ok(())
    } else {
        Err(orchestrate_engine::role::unknown_role(workspace, role))
    }
}

// ---------------------------------------------------------------------------------------------
// Cancel requests

/// Writes the durable request a role process acts on.
pub(crate) fn request_task_cancel(
    workspace: &Path,
    role: &str,
    id: &str,
    request: &CancelRequest,
) -> Result<PathBuf, ControlError> {
    let dir = cancel_dir(workspace, role);
    std::fs::create_dir_all(&dir).map_err(ControlError::io("create", &dir))?;
    let path = dir.join(format!("{id}.json"));
    orchestrate_base::fsutil::atomic_write(&path, &serde_json::to_vec(request).unwrap_or_default())
        .map_err(ControlError::io("write", &path))?;
    Ok(path)
}

/// The pending cancel requests of a role's tasks, by task id.
pub(crate) fn task_cancel_requests(workspace: &Path, role: &str) -> Vec<(String, CancelRequest)> {
    let Ok(entries) = std::fs::read_dir(cancel_dir(workspace, role)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        if name.starts_with('.') || orchestrate_base::ids::check_id(id).is_err() {
            continue;
        }
        if let Ok(request) = std::fs::read(entry.path())
            .map_err(|_| ())
            .and_then(|b| serde_json::from_slice::<CancelRequest>(&b).map_err(|_| ()))
        {
            out.push((id.to_string(), request));
        }
    }
    out
}

/// Removes a task's cancel request (it has been acted on, or the task is gone).
pub(crate) fn clear_task_cancel(workspace: &Path, role: &str, id: &str) {
    let _ = std::fs::remove_file(cancel_dir(workspace, role).join(format!("{id}.json")));
}

// ---------------------------------------------------------------------------------------------
// What role processes watch

/// Watches a role's control directory and the workspace's breaker states; every change sends
/// one `()` (a hint to read them again).
pub(crate) fn watch(
    workspace: &Path,
    role: &str,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let control = role_dir(workspace, role);
    let breakers = crate::breaker::dir(workspace);
    for dir in [&cancel_dir(workspace, role), &breakers] {
        std::fs::create_dir_all(dir).map_err(|e| notify::Error::io(e).add_path(dir.clone()))?;
    }
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            Ok(event) => !matches!(
                event.kind,
                notify::EventKind::Access(_)
                    | notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
            ),
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&control, RecursiveMode::Recursive)?;
    watcher.watch(&breakers, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

// ---------------------------------------------------------------------------------------------
// `orchestrate cancel`

/// What `cancel` found its target to be.
enum Target {
    Run(PathBuf),
    Task {
        role: String,
        id: String,
        dir: PathBuf,
    },
}

/// Why steering failed: a cancel request refused ([`ControlError::is_refused`]) or not acted on
/// in time, or a control file that could not be written. Each message is whole, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The target cannot be an id (characters outside `[A-Za-z0-9._-]`, a leading dot, too long);
    /// refused.
    #[error("`{target}` is not a run or task id: {reason}")]
    NotAnId {
        /// The id as given.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The target is a child run, which stops only with its parent; refused.
    #[error(
        "run `{target}` is the child run of a `workflow:` step of run {parent}: cancel the parent (`orchestrate cancel {parent}`), which stops the child with it"
    )]
    ChildRun {
        /// The child run's id.
        target: String,
        /// The id of the run whose `workflow:` step started it.
        parent: String,
    },
    /// The task is still in its role's inbox, so nothing runs; refused.
    #[error(
        "task `{id}` of role `{role}` is queued ({path}), not running: nothing to cancel; to drop it, move that file out of the inbox, or `orchestrate pause {role}` to hold the role"
    )]
    Queued {
        /// The task id.
        id: String,
        /// The role whose inbox holds it.
        role: String,
        /// The task file, relative to the workspace.
        path: String,
    },
    /// The task is in `processed/` or `failed/`; refused.
    #[error(
        "task `{id}` of role `{role}` already finished ({path}): nothing to cancel; `orchestrate show {id}` shows how it ended"
    )]
    TaskFinished {
        /// The task id.
        id: String,
        /// The role that ran it.
        role: String,
        /// Where its record is, relative to the workspace.
        path: String,
    },
    /// Nothing in the workspace has that id; refused.
    #[error(
        "no run or task `{target}`: nothing in .orchestrate/runs/, running/, the inboxes, processed/ or failed/ has that id; `orchestrate status` lists runs and `orchestrate tasks` lists tasks"
    )]
    NotFound {
        /// The id as given.
        target: String,
    },
    /// The run has a final status; refused.
    #[error(
        "run {target} already finished ({}, exit {exit_code}): nothing to cancel{}",
        status.label(),
        resume_hint(target, *status)
    )]
    RunFinished {
        /// The run id.
        target: String,
        /// How it ended.
        status: RunStatus,
        /// The exit code it ended with.
        exit_code: u8,
    },
    /// The run has no final status but no process holds its lock (it died); refused.
    #[error(
        "run {target} is not running (no process holds {lock}; it stopped without finishing): nothing to cancel; `orchestrate resume {target}` continues it"
    )]
    NotRunning {
        /// The run id.
        target: String,
        /// The run's lock file, as shown in the message.
        lock: String,
    },
    /// SIGTERM could not be sent to the process running the run.
    #[error("cannot signal process {pid} running run {target}: {source}")]
    Signal {
        /// The run id.
        target: String,
        /// The process that holds the run's lock.
        pid: u32,
        /// What `kill(2)` returned.
        #[source]
        source: io::Error,
    },
    /// The run was signalled but still holds its lock after the wait.
    #[error(
        "run {target} (process {pid}) was asked to stop but is still running after {wait:?}; its step may be ignoring SIGTERM (it is killed after a grace period); check with `orchestrate status {target}`, or `kill -KILL {pid}`"
    )]
    RunStillRunning {
        /// The run id.
        target: String,
        /// The process that holds the run's lock.
        pid: u32,
        /// How long `cancel` waited.
        wait: Duration,
    },
    /// The task's cancel request was written but the task was still running after the wait.
    #[error(
        "task `{id}` of role `{role}` is still in {dir} after {wait:?}: is `orchestrate agent {role}` (or `swarm up`) running? The request ({request}) stays and is acted on while the task runs"
    )]
    TaskStillRunning {
        /// The task id.
        id: String,
        /// The role running it.
        role: String,
        /// Where it runs and where its request is, relative to the workspace.
        dir: String,
        /// The cancel request file, relative to the workspace.
        request: String,
        /// How long `cancel` waited.
        wait: Duration,
    },
    /// A run's cancel request could not be written (`orchestrate_queue::cancel` says why).
    #[error("{0}")]
    RunRequest(String),
    /// A control file (a pause, a cancel request) or its directory could not be written or removed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `write`, `remove`).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl ControlError {
    /// Whether nothing was asked: the target is no run or task, or is in no state to be
    /// cancelled. Otherwise the request could not be made, or was made and not acted on in time.
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            ControlError::NotAnId { .. }
                | ControlError::ChildRun { .. }
                | ControlError::Queued { .. }
                | ControlError::TaskFinished { .. }
                | ControlError::NotFound { .. }
                | ControlError::RunFinished { .. }
                | ControlError::NotRunning { .. }
        )
    }

    /// Whether the target may be a task queued or running on another machine (asked of a swarm
    /// whose queue is a database): nothing on this machine runs it.
    pub fn elsewhere_possible(&self) -> bool {
        matches!(
            self,
            ControlError::Queued { .. }
                | ControlError::TaskFinished { .. }
                | ControlError::NotFound { .. }
        )
    }

    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ControlError {
        let path = path.to_path_buf();
        move |source| ControlError::Io {
            action,
            path,
            source,
        }
    }
}

/// What to run after a run that did not succeed.
fn resume_hint(target: &str, status: RunStatus) -> String {
    if status == RunStatus::Succeeded {
        String::new()
    } else {
        format!("; `orchestrate resume {target}` continues it")
    }
}

/// Asks a run or a swarm task to stop (`target`: a run id, a swarm task id, or a task's run
/// id) and, given `wait`, waits that long for it to have stopped. Returns what happened, as a
/// sentence for the person who asked.
pub fn request_cancel(
    workspace: &Path,
    target: &str,
    wait: Option<Duration>,
) -> Result<String, ControlError> {
    orchestrate_base::ids::check_id(target).map_err(|reason| ControlError::NotAnId {
        target: target.to_string(),
        reason,
    })?;
    match locate(workspace, target)? {
        Target::Run(root) => cancel_run(workspace, target, &root, wait),
        Target::Task { role, id, dir } => cancel_task(workspace, target, &role, &id, &dir, wait),
    }
}

fn running_roles(workspace: &Path) -> Vec<String> {
    let mut roles: Vec<String> = std::fs::read_dir(workspace.join("running"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| orchestrate_base::ids::check_id(n).is_ok())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles
}

/// The run id of a task's attempt (the first record of its event log).
fn task_run_id(dir: &Path) -> Option<String> {
    orchestrate_engine::runs::first_run_started(&dir.join("events.jsonl")).map(|s| s.run_id)
}

fn locate(workspace: &Path, target: &str) -> Result<Target, ControlError> {
    let run = RunDir::new(workspace, target);
    if run.root.is_dir() {
        return Ok(Target::Run(run.root));
    }
    if let Some(parent) = orchestrate_engine::runs::parent_of_child(workspace, target) {
        return Err(ControlError::ChildRun {
            target: target.to_string(),
            parent,
        });
    }
    let roles = running_roles(workspace);
    for role in &roles {
        let dir = workspace.join("running").join(role).join(target);
        if dir.is_dir() {
            return Ok(Target::Task {
                role: role.clone(),
                id: target.to_string(),
                dir,
            });
        }
    }
    for role in &roles {
        let Ok(entries) = std::fs::read_dir(workspace.join("running").join(role)) else {
            continue;
        };
        for entry in entries.flatten() {
            if task_run_id(&entry.path()).as_deref() == Some(target) {
                return Ok(Target::Task {
                    role: role.clone(),
                    id: entry.file_name().to_string_lossy().into_owned(),
                    dir: entry.path(),
                });
            }
        }
    }
    // Not running: say what it is.
    let found = orchestrate_engine::role::find_tasks(workspace, target);
    if let Some(task) = found.iter().find(|t| t.state == TaskState::Queued) {
        return Err(ControlError::Queued {
            id: task.id.clone(),
            role: task.role.clone(),
            path: task.path.clone(),
        });
    }
    if let Some(task) = found.last() {
        return Err(ControlError::TaskFinished {
            id: task.id.clone(),
            role: task.role.clone(),
            path: task.path.clone(),
        });
    }
    Err(ControlError::NotFound {
        target: target.to_string(),
    })
}

fn cancel_run(
    workspace: &Path,
    target: &str,
    root: &Path,
    wait: Option<Duration>,
) -> Result<String, ControlError> {
    let dir = RunDir {
        root: root.to_path_buf(),
    };
    if let Some(finished) = ended(&dir) {
        return Err(ControlError::RunFinished {
            target: target.to_string(),
            status: finished.status,
            exit_code: finished.exit_code,
        });
    }
    let pid = holder(&dir.lock()).ok_or_else(|| ControlError::NotRunning {
        target: target.to_string(),
        lock: relative(workspace, &dir.lock()),
    })?;
    let request = CancelRequest::new(target);
    cancel::write_run_cancel(root, &request).map_err(ControlError::RunRequest)?;
    control_log::log_event(
        workspace,
        &ControlEvent::RunCancelRequested {
            run_id: target.to_string(),
            pid,
            by: request.by.clone(),
        },
    );
    // The pid was verified just above to hold the run's lock.
    orchestrate_base::process::kill(pid, libc::SIGTERM).map_err(|source| ControlError::Signal {
        target: target.to_string(),
        pid,
        source,
    })?;
    let Some(wait) = wait else {
        return Ok(format!(
            "asked run {target} (process {pid}) to stop; `orchestrate status {target}` shows when it has"
        ));
    };
    let deadline = Instant::now() + wait;
    loop {
        if let Some(finished) = ended(&dir) {
            return Ok(format!(
                "cancelled run {target}: process {pid} stopped its step and ended the run ({}, exit {}); `orchestrate resume {target}` continues it",
                finished.status.label(),
                finished.exit_code
            ));
        }
        if holder(&dir.lock()).is_none() {
            return Ok(format!(
                "cancelled run {target}: process {pid} is gone; `orchestrate resume {target}` continues it"
            ));
        }
        if Instant::now() >= deadline {
            return Err(ControlError::RunStillRunning {
                target: target.to_string(),
                pid,
                wait,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `run_finished` of the run's last start or resume, if it has one.
fn ended(dir: &RunDir) -> Option<RunFinished> {
    let records = orchestrate_engine::events::read(&dir.events()).unwrap_or_default();
    let events: Vec<Event> = records.iter().map(Event::from_record).collect();
    let start = events
        .iter()
        .rposition(|e| matches!(e, Event::RunStarted(_) | Event::RunResumed(_)))?;
    events[start..].iter().find_map(|e| match e {
        Event::RunFinished(finished) => Some(finished.clone()),
        _ => None,
    })
}

/// The process holding a run's lock: the pid written in it, checked to be a live holder of the
/// lock (so a recycled pid is never signalled).
fn holder(lock: &Path) -> Option<u32> {
    let file = std::fs::OpenOptions::new().read(true).open(lock).ok()?;
    match file.try_lock_shared() {
        Ok(()) => return None,
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(_)) => return None,
    }
    let pid: u32 = std::fs::read_to_string(lock).ok()?.trim().parse().ok()?;
    queue::holders(lock).contains(&pid).then_some(pid)
}

fn cancel_task(
    workspace: &Path,
    target: &str,
    role: &str,
    id: &str,
    dir: &Path,
    wait: Option<Duration>,
) -> Result<String, ControlError> {
    let request = CancelRequest::new(target);
    let path = request_task_cancel(workspace, role, id, &request)?;
    control_log::log_event(
        workspace,
        &ControlEvent::TaskCancelRequested {
            role: role.to_string(),
            task: id.to_string(),
            by: request.by.clone(),
        },
    );
    let Some(wait) = wait else {
        return Ok(format!(
            "asked role `{role}` to cancel task `{id}` ({}); `orchestrate show {id}` shows where it went",
            relative(workspace, &path)
        ));
    };
    let deadline = Instant::now() + wait;
    while dir.exists() {
        if Instant::now() >= deadline {
            return Err(ControlError::TaskStillRunning {
                id: id.to_string(),
                role: role.to_string(),
                dir: relative(workspace, dir),
                request: relative(workspace, &path),
                wait,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = orchestrate_engine::role::find_tasks(workspace, id);
    let Some(task) = after
        .iter()
        .filter(|t| t.role == role && matches!(t.state, TaskState::Failed | TaskState::Processed))
        .max_by(|a, b| a.path.cmp(&b.path))
    else {
        return Ok(format!(
            "task `{id}` of role `{role}` left running/; `orchestrate show {id}` shows where it went"
        ));
    };
    if task.state == TaskState::Processed {
        return Ok(format!(
            "task `{id}` of role `{role}` finished before the cancel took effect: {}",
            task.path
        ));
    }
    Ok(format!(
        "cancelled task `{id}` of role `{role}`: {}",
        task.path
    ))
}
