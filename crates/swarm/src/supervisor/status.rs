//! `swarm status`: the supervisor's status file (or, when none runs, the replicas a dead one
//! left), every live role process, and each role's queue numbers, pause, open breakers and
//! refused edits.
//!
//! Does not render it (`render` does) nor change anything.

use std::fs;
use std::path::Path;

use serde::Serialize;

use orchestrate_base::process;
use orchestrate_engine::role;
use orchestrate_queue::queue;

use super::error::SupervisorError;
use super::status_file::{
    ChildState, ChildStatus, SupervisorInfo, SupervisorState, read_status_file,
};

/// The swarm as a whole, for `swarm status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwarmState {
    /// A supervisor runs and has not been asked to stop.
    Running,
    /// A supervisor runs and is stopping its replicas.
    Stopping,
    /// No supervisor runs (none started, or it died).
    Down,
}

/// Queue load of one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleLoad {
    /// The role's name.
    pub role: String,
    /// Task files waiting in the inbox.
    pub(crate) queued: usize,
    /// Tasks claimed and in flight.
    pub(crate) running: usize,
    /// Set while the role is paused (`orchestrate pause`): it claims nothing new.
    pub(crate) paused: Option<crate::control::Pause>,
    /// Breakers of runtimes its workflow uses that are open or half-open: it claims nothing new
    /// while one is open.
    pub(crate) breakers: Vec<BreakerView>,
    /// Inbox entries no role process takes (another extension, a `.tmp` file, a directory).
    pub(crate) ignored: Vec<queue::InboxEntry>,
    /// Task files in the inbox that a process still has open for writing (counted in `queued`).
    pub(crate) being_written: Vec<queue::InboxEntry>,
    /// The workflow versions (`workflow_hash`) its live role processes run new tasks on.
    pub(crate) workflow_hashes: Vec<String>,
    /// Set when its processes refused an edit of the role's files: the first problem
    /// (`file:line:column: message`); they keep running the previous version.
    pub(crate) reload_error: Option<String>,
    /// Set when a running supervisor has no process for the role, and why.
    pub not_started: Option<String>,
}

/// A breaker that is not closed, as `swarm status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct BreakerView {
    pub(crate) runtime: String,
    /// `open` or `half_open`.
    pub(crate) state: crate::breaker::Phase,
    pub(crate) class: Option<String>,
    pub(crate) consecutive: u32,
    /// When an open breaker half-opens.
    pub(crate) until: Option<String>,
    /// "breaker open for claude: 5 consecutive rate_limit failures; half-opens at ...".
    pub(crate) message: String,
}

/// `swarm status`: the supervisor's view plus live queue numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwarmStatus {
    pub(crate) workspace: String,
    /// Whether a supervisor runs, and whether it is stopping.
    pub state: SwarmState,
    /// The running supervisor; `None` when the state is `down`.
    pub supervisor: Option<SupervisorInfo>,
    /// The replicas; when down, only the orphaned ones still alive.
    pub children: Vec<ChildStatus>,
    /// Each role's queue load, pause and breakers.
    pub roles: Vec<RoleLoad>,
}

impl SwarmStatus {
    /// Whether a running supervisor has every replica either running or failed: what `swarm up
    /// -d` waits for.
    pub(crate) fn settled(&self) -> bool {
        self.state == SwarmState::Running
            && self.children.iter().all(|c| {
                matches!(
                    c.state,
                    ChildState::Running
                        | ChildState::Failed
                        | ChildState::Orphaned
                        | ChildState::Unsupervised
                )
            })
    }
}

/// `swarm status`: the running supervisor's status file plus live queue depths and tasks in
/// flight per role. Works when no supervisor runs: the state is then `down` and the children are
/// only those a dead supervisor left running (`orphaned`).
pub fn status(workspace: &Path) -> Result<SwarmStatus, SupervisorError> {
    let file = read_status_file(workspace)?;
    let (state, supervisor, children) = match file {
        Some(file) if file.supervisor.alive() => {
            let state = match file.supervisor.state {
                SupervisorState::Stopping => SwarmState::Stopping,
                _ => SwarmState::Running,
            };
            (state, Some(file.supervisor), file.children)
        }
        Some(file) => {
            let boot = file.supervisor.boot_id == process::boot_id();
            let orphaned = file
                .children
                .into_iter()
                .filter(|c| boot && c.live_process().is_some())
                .map(|mut c| {
                    c.state = ChildState::Orphaned;
                    c.next_restart_at = None;
                    c
                })
                .collect();
            (SwarmState::Down, None, orphaned)
        }
        None => (SwarmState::Down, None, Vec::new()),
    };
    let mut children = children;
    let procs: Vec<role::ProcRecord> = role::ProcRecord::read_all(workspace)
        .into_iter()
        .filter(|r| process::alive(r.pid, r.pid_start, &r.boot_id))
        .collect();
    // A live role process is never hidden: one no supervisor lists (its supervisor died, or it
    // was started by hand) gets a row of its own.
    for record in &procs {
        if children.iter().any(|c| c.pid == Some(record.pid)) {
            continue;
        }
        let orphaned = record
            .supervisor_pid
            .is_some_and(|pid| supervisor.as_ref().is_none_or(|s| s.pid != pid));
        children.push(ChildStatus {
            name: format!("{}#{}", record.role, record.replica),
            role: record.role.clone(),
            replica: record.replica,
            pid: Some(record.pid),
            pid_start: Some(record.pid_start),
            state: if orphaned {
                ChildState::Orphaned
            } else {
                ChildState::Unsupervised
            },
            restarts: 0,
            last_exit: None,
            since: record.started_at.clone(),
            next_restart_at: None,
        });
    }
    let mut roles = role_loads(workspace, &children);
    for load in &mut roles {
        for record in procs.iter().filter(|r| r.role == load.role) {
            if !load.workflow_hashes.contains(&record.workflow_hash) {
                load.workflow_hashes.push(record.workflow_hash.clone());
            }
            if let role::ReloadOutcome::Kept { error, .. } = &record.reload {
                load.reload_error.get_or_insert_with(|| error.clone());
            }
        }
        if supervisor.is_some() && !children.iter().any(|c| c.role == load.role) {
            load.not_started = Some(match role::Version::load(workspace, &load.role) {
                Err(errors) => format!(
                    "it does not load ({}); fix it, then `orchestrate swarm reload`",
                    role::describe_errors(workspace, &errors).0
                ),
                Ok(_) => "added after `swarm up`: `orchestrate swarm reload` starts it".into(),
            });
        }
    }
    Ok(SwarmStatus {
        workspace: workspace.display().to_string(),
        state,
        supervisor,
        roles,
        children,
    })
}

/// Queue numbers for every role defined in `agents/` and every role with a replica.
fn role_loads(workspace: &Path, children: &[ChildStatus]) -> Vec<RoleLoad> {
    let profiles = orchestrate_runtime::profile::Profiles::load(workspace).unwrap_or_default();
    let tripped = crate::breaker::tripped(workspace);
    let mut uses: std::collections::HashMap<String, Vec<String>> = Default::default();
    // Role by role: a broken role file must not hide the others (nor itself: its queue is
    // still counted, and `validate` reports the problem).
    let mut layouts: Vec<queue::Layout> = role::names(workspace)
        .iter()
        .filter_map(|name| match role::load_one(workspace, name) {
            Ok((r, w)) => {
                uses.insert(
                    r.name.clone(),
                    crate::breaker::role_runtimes(&r, &w, &profiles),
                );
                Some(role::layout(workspace, &r))
            }
            Err(_) => role::layout_for(workspace, name).ok(),
        })
        .collect();
    for child in children {
        if !layouts.iter().any(|l| l.role == child.role)
            && let Ok(layout) = role::layout_for(workspace, &child.role)
        {
            layouts.push(layout);
        }
    }
    layouts
        .iter()
        .map(|layout| (layout, queue::inbox_extras(layout)))
        .map(|(layout, extras)| RoleLoad {
            ignored: extras.ignored,
            being_written: extras.being_written,
            role: layout.role.clone(),
            queued: queue::depth(layout),
            running: in_flight(layout),
            paused: crate::control::paused(workspace, &layout.role),
            breakers: tripped
                .iter()
                .filter(|b| {
                    uses.get(&layout.role)
                        .is_some_and(|names| names.contains(&b.runtime))
                })
                .map(|b| BreakerView {
                    runtime: b.runtime.clone(),
                    state: b.effective(),
                    class: b.class.clone(),
                    consecutive: b.consecutive,
                    until: b.until.clone(),
                    message: b.describe(),
                })
                .collect(),
            workflow_hashes: Vec::new(),
            reload_error: None,
            not_started: None,
        })
        .collect()
}

/// Claimed tasks of a role: the entries of `running/<role>/` (as `queue::list` counts them),
/// without reading every finished task the way a full listing does.
fn in_flight(layout: &queue::Layout) -> usize {
    fs::read_dir(&layout.running)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::render::render_status;
    use super::super::tests::child;
    use super::*;

    #[tokio::test]
    async fn status_without_a_supervisor_is_down_and_counts_the_queues() {
        let ws = tempfile::tempdir().unwrap();
        let inbox = ws.path().join("inbox/engineer");
        fs::create_dir_all(&inbox).unwrap();
        fs::write(inbox.join("a.task"), "a").unwrap();
        fs::write(inbox.join("b.task"), "b").unwrap();
        fs::write(inbox.join(".c.task.tmp"), "c").unwrap();
        fs::create_dir_all(ws.path().join("running/engineer/x")).unwrap();
        // Roles come from agents/ when it exists; without one, only replicas name roles.
        let status = super::status(ws.path()).unwrap();
        assert_eq!(status.state, SwarmState::Down);
        assert!(status.supervisor.is_none());
        assert!(render_status(&status).starts_with(&format!(
            "no supervisor is running in {}",
            ws.path().display()
        )));
        let loads = role_loads(ws.path(), &[ChildStatus::new(&child("engineer", 1, ""))]);
        assert_eq!(
            loads,
            [RoleLoad {
                role: "engineer".into(),
                queued: 2,
                running: 1,
                paused: None,
                breakers: Vec::new(),
                workflow_hashes: Vec::new(),
                reload_error: None,
                not_started: None,
                ignored: Vec::new(),
                being_written: Vec::new(),
            }]
        );
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["state"], "down");
    }

    #[test]
    fn settled_means_every_replica_running_or_failed() {
        let mut status = SwarmStatus {
            workspace: "/ws".into(),
            state: SwarmState::Running,
            supervisor: None,
            children: vec![ChildStatus::new(&child("qa", 1, ""))],
            roles: Vec::new(),
        };
        assert!(!status.settled());
        status.children[0].state = ChildState::Running;
        assert!(status.settled());
        status.children[0].state = ChildState::Failed;
        assert!(status.settled());
        status.state = SwarmState::Down;
        assert!(!status.settled());
    }
}
