//! What every task of one version of the role shares, and the `concurrency` slots.
//!
//! Owns: building the role process's shared state from a loaded version of the role (its queue
//! layout and directories, runtime profiles, the swarm's daily budget, metrics, the breakers'
//! observer, isolation), the same state for a reloaded version, and the slot a running task
//! holds. Does not claim (`dispatch`) or run tasks (`attempt`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use orchestrate_lang::model::{Role, Workflow};
use orchestrate_queue::queue::{self, Layout};

use super::log::Log;
use super::options::AgentOptions;

/// What every task of one version of the role shares. A reload makes a new one (the role's
/// files changed): tasks claimed from then on take it, tasks in flight keep theirs.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) workspace: PathBuf,
    /// The swarm's queue directories and the metrics directory (`dir/`, workspace-relative):
    /// what other tasks change while one runs.
    pub(super) queue_dirs: Vec<String>,
    /// This machine's labels (`machine_labels`).
    pub(super) labels: Vec<String>,
    /// Whether this process runs the role's tasks: this machine has every label of the role's
    /// `machines:` (else it only takes in dropped files, on a queue that takes them in).
    pub(super) runs_here: bool,
    /// Where the role's `enqueue` steps hand tasks to (the database, on one).
    pub(super) enqueuer: Option<orchestrate_engine::runner::Enqueuer>,
    /// The database queue, on one (for what the role notes there besides tasks).
    pub(super) pg: Option<Arc<orchestrate_pg::PgQueue>>,
    pub(super) layout: Layout,
    /// The queue operations: the filesystem queue, or the database shared by several machines.
    pub(super) queue: Arc<dyn queue::TaskQueue>,
    pub(super) role: Role,
    pub(super) workflow: Arc<Workflow>,
    pub(super) workflow_text: Arc<String>,
    /// `workflow_hash` in status.json: which version of the workflow ran.
    pub(super) workflow_hash: String,
    pub(super) label: String,
    pub(super) log: Log,
    pub(super) profiles: Arc<orchestrate_runtime::profile::Profiles>,
    /// `swarm.yaml`'s limits, when it sets a daily budget.
    pub(super) swarm_budget: Option<orchestrate_lang::model::SwarmConfig>,
    /// Tasks whose workflow is running: what `concurrency` limits. A task whose workflow has
    /// ended but whose completion (status.json, the move, their fsyncs) is still being written
    /// no longer holds a slot.
    pub(super) active: Arc<std::sync::atomic::AtomicUsize>,
    /// Woken each time a slot frees.
    pub(super) slot_freed: Arc<tokio::sync::Notify>,
    pub(super) metrics: Option<Arc<crate::metrics::Recorder>>,
    /// Feeds the breakers from every task's events (one for all tasks).
    pub(super) observer: orchestrate_engine::runner::Observer,
    /// `isolation: worktree` (the role's over the workflow's): each task gets a git worktree.
    pub(super) isolation: Option<orchestrate_lang::model::WorktreeSpec>,
}

/// One `concurrency` slot, held from the claim until the task's workflow ends.
pub(super) struct Slot(Arc<Shared>);

impl Slot {
    pub(super) fn take(shared: &Arc<Shared>) -> Slot {
        shared
            .active
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Slot(Arc::clone(shared))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.slot_freed.notify_one();
    }
}

impl Shared {
    /// The shared state of a role process starting on `version`: makes the queue directories
    /// and starts the metrics recorder.
    pub(super) fn start(
        workspace: &Path,
        version: orchestrate_engine::role::Version,
        options: &AgentOptions,
        on_queued: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<(Shared, orchestrate_engine::role::Stamp), String> {
        let orchestrate_engine::role::Version {
            role,
            workflow,
            workflow_text,
            hash: workflow_hash,
            stamp,
        } = version;
        let layout = orchestrate_engine::role::layout(workspace, &role);
        layout.create_dirs().map_err(|e| e.to_string())?;
        let label = format!("{}#{}", role.name, options.replica);
        let profiles =
            orchestrate_runtime::profile::Profiles::load(workspace).map_err(|e| e.render())?;
        let swarm = orchestrate_lang::load::load_swarm(workspace).map_err(|e| e.render())?;
        let swarm_budget = (swarm.max_cost_usd_per_day.is_some()
            || swarm.max_tokens_per_day.is_some())
        .then(|| swarm.clone());
        let mut queue_dirs = queue_dirs(workspace);
        // The metrics file changes while tasks run, too.
        if let Some(rel) = options
            .metrics_dir
            .as_deref()
            .map(|dir| orchestrate_base::fsutil::normalize(&workspace.join(dir)))
            .and_then(|dir| dir.strip_prefix(workspace).ok().map(Path::to_path_buf))
            .filter(|rel| !rel.as_os_str().is_empty())
        {
            queue_dirs.push(format!("{}/", rel.display()));
        }
        let metrics = match &options.metrics_dir {
            Some(dir) => Some(crate::metrics::Recorder::start(
                dir,
                &layout,
                options.replica,
            )?),
            None => None,
        };
        let isolation = orchestrate_engine::worktree::effective(
            role.isolation.as_ref(),
            workflow.isolation.as_ref(),
        );
        let log = Log {
            role: role.name.clone(),
            replica: options.replica,
            quiet: options.quiet,
        };
        let labels = super::cluster::machine_labels(&swarm);
        let runs_here = super::cluster::missing_labels(&role.machines, &labels).is_empty();
        let database = match super::cluster::queue_url(&swarm) {
            // The lease is the role's `hung_after_sec`: a holder silent that long is dead.
            Some(url) => Some(Arc::new(super::cluster::open(
                &url,
                &layout,
                role.hung_after,
                &log,
                on_queued,
                Some(super::cluster::Member {
                    workspace: workspace.to_path_buf(),
                    replica: options.replica,
                    labels: labels.clone(),
                    runs: runs_here,
                }),
            )?)),
            None => None,
        };
        let queue: Arc<dyn queue::TaskQueue> = match &database {
            Some(db) => db.clone(),
            None => Arc::new(layout.clone()),
        };
        // Hand-offs (`enqueue` steps) go straight into the database, whichever machine runs
        // the role they are for.
        let pg = database.clone();
        let enqueuer: Option<orchestrate_engine::runner::Enqueuer> = database.map(|db| {
            Arc::new(
                move |layout: &queue::Layout,
                      id: Option<&str>,
                      content: &[u8],
                      correlation: Option<&str>,
                      source: &str| {
                    db.enqueue_to(layout, id, content, correlation, source)
                },
            ) as orchestrate_engine::runner::Enqueuer
        });
        queue.run_here(runs_here);
        super::cluster::say_placement(&log, &role, &labels, queue.pulls());
        let profiles = Arc::new(profiles);
        let observer: orchestrate_engine::runner::Observer = {
            let (workspace, profiles, label) = (
                workspace.to_path_buf(),
                Arc::clone(&profiles),
                label.clone(),
            );
            Arc::new(move |event: &orchestrate_engine::event::Event| {
                crate::breaker::observe(&workspace, &profiles, &label, event);
            })
        };
        let shared = Shared {
            workflow_hash,
            isolation,
            swarm_budget,
            observer,
            profiles,
            workspace: workspace.to_path_buf(),
            layout: layout.clone(),
            queue,
            role: role.clone(),
            workflow: Arc::new(workflow),
            workflow_text: Arc::new(workflow_text),
            label: label.clone(),
            log,
            active: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            slot_freed: Arc::new(tokio::sync::Notify::new()),
            metrics,
            queue_dirs,
            labels,
            runs_here,
            enqueuer,
            pg,
        };
        Ok((shared, stamp))
    }

    /// The same role process running another version of the role.
    pub(super) fn with_version(&self, version: orchestrate_engine::role::Version) -> Shared {
        let mut next = self.clone();
        next.isolation = orchestrate_engine::worktree::effective(
            version.role.isolation.as_ref(),
            version.workflow.isolation.as_ref(),
        );
        next.runs_here =
            super::cluster::missing_labels(&version.role.machines, &self.labels).is_empty();
        if version.role.machines != self.role.machines {
            next.queue.run_here(next.runs_here);
            super::cluster::say_placement(
                &next.log,
                &version.role,
                &self.labels,
                next.queue.pulls(),
            );
        }
        next.role = version.role;
        next.workflow = Arc::new(version.workflow);
        next.workflow_text = Arc::new(version.workflow_text);
        next.workflow_hash = version.hash;
        next
    }
}

/// The breakers a version of the role's workflow answers to.
pub(super) fn gate_of(shared: &Shared) -> crate::breaker::Gate {
    crate::breaker::Gate::new(
        &shared.workspace,
        crate::breaker::role_runtimes(&shared.role, &shared.workflow, &shared.profiles),
        &shared.label,
    )
}

/// The directories the swarm's queues live in, as the readonly check's ignore patterns: other
/// tasks are claimed, finished and handed over in them while a task's readonly step runs.
pub(super) fn queue_dirs(workspace: &Path) -> Vec<String> {
    let mut dirs: Vec<String> = ["inbox/", "running/", "processed/", "failed/"]
        .map(String::from)
        .to_vec();
    // Roles may keep their inbox elsewhere in the workspace.
    if let Ok(roles) = orchestrate_engine::role::load_all(workspace) {
        for (role, _) in roles {
            let inbox = orchestrate_engine::role::layout(workspace, &role).inbox;
            if let Ok(rel) = inbox.strip_prefix(workspace)
                && !rel.as_os_str().is_empty()
            {
                let rel = format!("{}/", rel.display());
                if !dirs.contains(&rel) {
                    dirs.push(rel);
                }
            }
        }
    }
    dirs
}
