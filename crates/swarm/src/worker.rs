//! One role process: watches the role's inbox, claims tasks and runs the role's workflow for each.
//!
//! Owns: discovery (notify events as hints, directory listings as the truth: at start, on a
//! rescan flag or watcher error, and on a timer), the dispatch loop with its concurrency limit,
//! each task's attempt (variables, timeout, heartbeat, status.json, the final move), periodic
//! recovery, readiness reporting to a supervisor, and graceful stop. Does not implement the
//! queue protocol (`queue`) or the workflow language (`runner`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use orchestrate_engine::runner::{RunConfig, RunReport, Runner};
use orchestrate_engine::state::RunStatus;
use orchestrate_lang::model::{Role, Workflow};
use orchestrate_queue::queue::{self, Claim, ClaimResult, Layout, Owner};
use orchestrate_queue::record::{Metrics, NextAction, TaskStatus, Timings, Worker};

/// Listing the inbox again when idle, in case an event was lost.
const IDLE_RESCAN: Duration = Duration::from_secs(2);
/// Recovery of dead claims runs this often.
const RECOVER_EVERY: Duration = Duration::from_secs(2);
/// A busy entry (another replica is claiming it) is looked at again after this.
const BUSY_RETRY: Duration = Duration::from_millis(100);
/// An entry some process has open for writing is looked at again when a writer closes it (the
/// watcher's close-write hint), and after this in case that hint was lost.
const WRITING_RECHECK: Duration = Duration::from_secs(1);
/// While the swarm's daily budget is spent, the ledger is looked at again this often.
const BUDGET_RECHECK: Duration = Duration::from_secs(2);
/// How often a role process started by a supervisor checks that it still has one.
const ORPHAN_CHECK: Duration = Duration::from_secs(1);
/// Set by `swarm up` for the role processes it starts: the supervisor's pid. A role process
/// whose parent is no longer that pid has been orphaned and stops.
pub const SUPERVISOR_PID_ENV: &str = "ORCHESTRATE_SUPERVISOR_PID";
/// `${task.text}` holds at most this much of the task.
const TASK_TEXT_LIMIT: u64 = 1024 * 1024;

/// Whom a role process's log events are about: each carries the `role` and `replica` fields
/// (the `role#replica` label of the lines before `tracing`). `--quiet` drops them, except the
/// few logged with `always`.
#[derive(Debug, Clone)]
struct Log {
    role: String,
    replica: u32,
    quiet: bool,
}

/// A `tracing` event of this role process at `$level` (`INFO`, `WARN`, `ERROR`), with its role
/// and replica; then fields and the message as `tracing::event!` takes them. Nothing under
/// `--quiet` unless `always`.
macro_rules! say {
    (always $log:expr, $level:ident, $($rest:tt)+) => {{
        let log: &Log = $log;
        tracing::event!(tracing::Level::$level, role = %log.role, replica = log.replica, $($rest)+);
    }};
    ($log:expr, $level:ident, $($rest:tt)+) => {{
        let log: &Log = $log;
        if !log.quiet {
            say!(always log, $level, $($rest)+);
        }
    }};
}

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub replica: u32,
    /// Process what is queued, then exit (for cron and scripts).
    pub once: bool,
    /// How long in-flight tasks may run on after a stop request before they are stopped and
    /// given back to the inbox.
    pub grace: Duration,
    pub quiet: bool,
    /// Where to write the Prometheus textfile (`--metrics-dir`, `ORCHESTRATE_METRICS_DIR`).
    pub metrics_dir: Option<PathBuf>,
}

/// What the role process did, for its exit code and summary.
#[derive(Debug, Default, Clone)]
pub struct AgentReport {
    pub processed: u64,
    pub failed: u64,
    pub quarantined: u64,
    pub released: u64,
}

/// Hints from the watcher thread.
enum Hint {
    /// File names that appeared; `true` when the file is complete (renamed in, or closed after
    /// writing), `false` when it may still be being written. Only where open writers cannot be
    /// seen does this decide anything (a `false` one waits for `settle_ms`); otherwise a name is
    /// a hint to look, and the claim checks for writers itself.
    Names(Vec<(String, bool)>),
    Rescan,
}

/// What every task of one version of the role shares. A reload makes a new one (the role's
/// files changed): tasks claimed from then on take it, tasks in flight keep theirs.
#[derive(Clone)]
struct Shared {
    workspace: PathBuf,
    /// The swarm's queue directories and the metrics directory (`dir/`, workspace-relative):
    /// what other tasks change while one runs.
    queue_dirs: Vec<String>,
    layout: Layout,
    /// The queue operations, through the interface a database backend will also implement.
    queue: Arc<dyn queue::TaskQueue>,
    role: Role,
    workflow: Arc<Workflow>,
    workflow_text: Arc<String>,
    /// `workflow_hash` in status.json: which version of the workflow ran.
    workflow_hash: String,
    label: String,
    log: Log,
    profiles: Arc<orchestrate_runtime::profile::Profiles>,
    /// `swarm.yaml`'s limits, when it sets a daily budget.
    swarm_budget: Option<orchestrate_lang::model::SwarmConfig>,
    /// Tasks whose workflow is running: what `concurrency` limits. A task whose workflow has
    /// ended but whose completion (status.json, the move, their fsyncs) is still being written
    /// no longer holds a slot.
    active: Arc<std::sync::atomic::AtomicUsize>,
    /// Woken each time a slot frees.
    slot_freed: Arc<tokio::sync::Notify>,
    metrics: Option<Arc<crate::metrics::Recorder>>,
    /// Feeds the breakers from every task's events (one for all tasks).
    observer: orchestrate_engine::runner::Observer,
    /// `isolation: worktree` (the role's over the workflow's): each task gets a git worktree.
    isolation: Option<orchestrate_lang::model::WorktreeSpec>,
}

/// One `concurrency` slot, held from the claim until the task's workflow ends.
struct Slot(Arc<Shared>);

impl Slot {
    fn take(shared: &Arc<Shared>) -> Slot {
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

/// How many finished tasks may be writing their completion at once, per slot, before new
/// claims wait for them: completions overlap the next tasks' work, within a bound. Under load
/// a completion waits up to 3 ms for its group commit (`fsutil::group_sync`), so a bound of 2
/// stalled the claims (767 vs 1,042 tasks/s on journaled ext4 at 2 slots).
const COMPLETIONS_PER_SLOT: usize = 8;

struct Finished {
    id: String,
    outcome: &'static str,
}

pub async fn run_agent(
    workspace: &Path,
    version: orchestrate_engine::role::Version,
    options: AgentOptions,
    stop: CancellationToken,
    kill: CancellationToken,
) -> Result<AgentReport, String> {
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
    let owner = Owner::current();
    let profiles =
        orchestrate_runtime::profile::Profiles::load(workspace).map_err(|e| e.render())?;
    let swarm = orchestrate_lang::load::load_swarm(workspace).map_err(|e| e.render())?;
    let swarm_budget = (swarm.max_cost_usd_per_day.is_some() || swarm.max_tokens_per_day.is_some())
        .then_some(swarm);
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
    let gate = crate::breaker::Gate::new(
        workspace,
        crate::breaker::role_runtimes(&role, &workflow, &profiles),
        &label,
    );
    let isolation = orchestrate_engine::worktree::effective(
        role.isolation.as_ref(),
        workflow.isolation.as_ref(),
    );
    let profiles = Arc::new(profiles);
    let observer: orchestrate_engine::runner::Observer = {
        let (workspace, profiles, label) = (
            workspace.to_path_buf(),
            Arc::clone(&profiles),
            label.clone(),
        );
        Arc::new(move |event: &str, fields: &Value| {
            crate::breaker::observe(&workspace, &profiles, &label, event, fields);
        })
    };
    let mut shared = Arc::new(Shared {
        workflow_hash,
        isolation,
        swarm_budget,
        observer,
        profiles,
        workspace: workspace.to_path_buf(),
        layout: layout.clone(),
        queue: Arc::new(layout.clone()),
        role: role.clone(),
        workflow: Arc::new(workflow),
        workflow_text: Arc::new(workflow_text),
        label: label.clone(),
        log: Log {
            role: role.name.clone(),
            replica: options.replica,
            quiet: options.quiet,
        },
        active: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        slot_freed: Arc::new(tokio::sync::Notify::new()),
        metrics,
        queue_dirs,
    });
    let log = shared.log.clone();

    recover(&shared, &log);
    // Watch first, then list: a file created in between is seen by one or the other.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _watcher = watch(&layout.inbox, tx)
        .map_err(|e| format!("failed to watch {}: {e}", layout.inbox.display()))?;
    // Pause, cancel requests and breaker changes: hints from the control watcher, with the
    // files as the truth (also read on every idle wake, in case the watch failed).
    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let _control_watcher = crate::control::watch(workspace, &role.name, control_tx)
        .map_err(|e| {
            say!(
                &log,
                WARN,
                "cannot watch the control files ({e}); reading them every {IDLE_RESCAN:?}"
            )
        })
        .ok();
    let mut steer = Steering {
        paused: None,
        gate,
        gate_wait: None,
        gate_reason: None,
        trials: HashMap::new(),
    };
    let mut pending = Pending::default();
    pending.list(&layout);
    // SIGHUP: look at the role's files now (`orchestrate swarm reload`). Installed before this
    // process records itself and reports ready, after which it may be sent.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let supervisor = supervisor_pid();
    let mut reload = Reload::new(&shared, stamp, &options, supervisor, &log);
    let mut orphan_check = tokio::time::interval(ORPHAN_CHECK);
    report_ready();
    say!(
        &log,
        INFO,
        "watching {} ({} queued, concurrency {})",
        orchestrate_base::fsutil::relative(workspace, &layout.inbox),
        pending.queue.len(),
        role.concurrency
    );

    let mut report = AgentReport::default();
    let mut running: JoinSet<Finished> = JoinSet::new();
    // One per task in flight, removed when it finishes (a Vec kept every token ever made).
    let mut tokens: HashMap<String, CancellationToken> = HashMap::new();
    let mut stopping: Option<Instant> = None;
    let mut last_recover = Instant::now();
    let mut last_list = Instant::now();
    let max_bytes = queue::DEFAULT_MAX_TASK_BYTES;
    // Claims wait until this time while the swarm's daily budget is spent.
    let mut budget_blocked: Option<Instant> = None;
    // The reason last logged, so that it is said once (again only when it changes).
    let mut budget_said: Option<String> = None;
    // Inbox files found open for writing, said once each until they are claimed or gone.
    let mut writing_said: HashSet<String> = HashSet::new();
    steer.refresh(&shared, &tokens, &log);
    loop {
        // Between tasks: run new tasks on the role's files as they are now.
        if stopping.is_none()
            && !pending.queue.is_empty()
            && let Some(next) = reload.check(&shared, false, &log)
        {
            steer.gate = gate_of(&next);
            shared = next;
        }
        let slots = shared.role.concurrency as usize;
        if budget_blocked.is_some_and(|until| Instant::now() < until) {
            // Still waiting; looked at again below when the time comes.
        } else if let Some(swarm) = &shared.swarm_budget
            && !pending.is_empty()
        {
            budget_blocked = None;
            if let Some(why) = orchestrate_engine::budget::day_exhausted(workspace, swarm) {
                if budget_said.as_deref() != Some(why.as_str()) {
                    say!(&log, WARN, "not claiming new tasks: {why}");
                    budget_said = Some(why);
                }
                budget_blocked = Some(Instant::now() + BUDGET_RECHECK);
            } else if budget_said.take().is_some() {
                say!(&log, INFO, "the swarm's daily budget allows claims again");
            }
        }
        while stopping.is_none()
            && budget_blocked.is_none()
            && shared.active.load(std::sync::atomic::Ordering::SeqCst) < slots
            && running.len() < slots * (1 + COMPLETIONS_PER_SLOT)
            && !pending.queue.is_empty()
        {
            let Some(trials) = steer.admit(&log) else {
                break;
            };
            let Some((name, complete)) = pending.pop() else {
                steer.gate.release(&trials);
                break;
            };
            let claimed = trials;
            let settle = if complete {
                Duration::ZERO
            } else {
                shared.role.settle
            };
            let result = shared.queue.claim(&name, &owner, settle, max_bytes);
            if !claimed.is_empty() && !matches!(result, Ok(ClaimResult::Claimed(_))) {
                steer.gate.release(&claimed);
            }
            if !matches!(result, Ok(ClaimResult::Writing)) {
                writing_said.remove(&name);
            }
            match result {
                Ok(ClaimResult::Claimed(claim)) => {
                    say!(
                        &log,
                        INFO,
                        task = %claim.id,
                        attempt = claim.attempt,
                        "claimed `{}` (attempt {})",
                        claim.id,
                        claim.attempt,
                    );
                    if !claimed.is_empty() {
                        say!(
                            &log,
                            INFO,
                            task = %claim.id,
                            "`{}` is the half-open trial for {}",
                            claim.id,
                            claimed.join(", ")
                        );
                        steer.trials.insert(claim.id.clone(), claimed);
                    }
                    let token = CancellationToken::new();
                    tokens.insert(claim.id.clone(), token.clone());
                    let slot = Slot::take(&shared);
                    if let Some(metrics) = &shared.metrics {
                        metrics.claimed();
                    }
                    running.spawn(run_task(Arc::clone(&shared), *claim, token, slot));
                }
                Ok(ClaimResult::Busy) => pending.later(name, complete, BUSY_RETRY),
                // Not a task yet: `--once` takes only what is queued, and a writer may never close.
                Ok(ClaimResult::Writing) if options.once => say!(
                    &log,
                    INFO,
                    "leaving `{name}`: a process still has it open for writing"
                ),
                Ok(ClaimResult::Writing) => {
                    if writing_said.insert(name.clone()) {
                        say!(
                            &log,
                            INFO,
                            "`{name}` is still open for writing; taking it once it is closed"
                        );
                    }
                    pending.later(name, false, WRITING_RECHECK);
                }
                Ok(ClaimResult::Settling(wait)) => pending.later(name, false, wait),
                Ok(ClaimResult::Gone) => {}
                Ok(ClaimResult::Quarantined { id, reason, dir }) => {
                    report.quarantined += 1;
                    if let Some(metrics) = &shared.metrics {
                        metrics.quarantined();
                    }
                    say!(
                        &log,
                        WARN,
                        task = %id,
                        "quarantined `{id}` to {}: {reason}",
                        orchestrate_base::fsutil::relative(workspace, &dir)
                    );
                }
                Err(err) => {
                    say!(&log, ERROR, "{err}; will look at `{name}` again");
                    pending.later(name, complete, Duration::from_secs(1));
                }
            }
        }
        if stopping.is_some() && running.is_empty() {
            break;
        }
        if options.once
            && running.is_empty()
            && (pending.is_empty() || budget_blocked.is_some() || steer.holding())
        {
            if !pending.is_empty() && steer.holding() {
                say!(
                    &log,
                    INFO,
                    "leaving the queued tasks: the role is paused or a breaker is open"
                );
            }
            break;
        }
        let mut next_wake = pending
            .next_due()
            .unwrap_or_else(|| Instant::now() + IDLE_RESCAN)
            .min(last_recover + RECOVER_EVERY);
        if let Some(until) = budget_blocked {
            next_wake = next_wake.min(until);
        }
        if let Some(at) = steer.gate_wait {
            next_wake = next_wake.min(at);
        }
        let grace_deadline = stopping.map(|at| at + options.grace);
        tokio::select! {
            hint = rx.recv() => match hint {
                Some(Hint::Names(names)) => {
                    for (name, complete) in names {
                        pending.push(name, complete);
                    }
                    while let Ok(hint) = rx.try_recv() {
                        match hint {
                            Hint::Names(names) => names.into_iter().for_each(|(n, c)| pending.push(n, c)),
                            Hint::Rescan => {
                                say!(&log, WARN, "watcher asked for a rescan (events were lost); listing the inbox");
                                pending.list(&layout);
                            }
                        }
                    }
                }
                Some(Hint::Rescan) => {
                    say!(&log, WARN, "watcher asked for a rescan (events were lost); listing the inbox");
                    pending.list(&layout);
                }
                None => return Err("the inbox watcher stopped".into()),
            },
            Some(()) = control_rx.recv() => {
                while control_rx.try_recv().is_ok() {}
                steer.gate_wait = None;
                steer.refresh(&shared, &tokens, &log);
            }
            Some(done) = running.join_next() => {
                match done {
                    Ok(Finished { id, outcome }) => {
                        crate::control::clear_task_cancel(&shared.workspace, &shared.role.name, &id);
                        if let Some(trials) = steer.trials.remove(&id) {
                            steer.gate.release(&trials);
                        }
                        match outcome {
                            "processed" => report.processed += 1,
                            "released" => report.released += 1,
                            _ => report.failed += 1,
                        }
                        tokens.remove(&id);
                    }
                    Err(err) => say!(&log, ERROR, "a task's handler panicked: {err}"),
                }
            }
            _ = tokio::time::sleep_until(next_wake.into()) => {
                if stopping.is_none()
                    && let Some(next) = reload.check(&shared, false, &log)
                {
                    steer.gate = gate_of(&next);
                    shared = next;
                }
                pending.promote_due();
                steer.refresh(&shared, &tokens, &log);
                if last_recover.elapsed() >= RECOVER_EVERY {
                    last_recover = Instant::now();
                    recover(&shared, &log);
                }
                if pending.is_empty() && last_list.elapsed() >= IDLE_RESCAN {
                    last_list = Instant::now();
                    pending.list(&layout);
                }
            }
            () = shared.slot_freed.notified() => {}
            Some(()) = next_signal(&mut hangup) => {
                say!(&log, INFO, "SIGHUP: looking at the role's files again");
                if let Some(next) = reload.check(&shared, true, &log) {
                    steer.gate = gate_of(&next);
                    shared = next;
                }
            }
            _ = orphan_check.tick(), if stopping.is_none() && supervisor.is_some() => {
                // Reparented: the supervisor that started us is gone (killed with -9, say).
                if supervisor.is_some_and(|pid| std::os::unix::process::parent_id() != pid) {
                    say!(
                        &log,
                        WARN,
                        "the supervisor (pid {}) is gone: stopping as if `swarm down` had asked (the next `swarm up` starts the role again)",
                        supervisor.unwrap_or_default()
                    );
                    stop.cancel();
                }
            }
            _ = stop.cancelled(), if stopping.is_none() => {
                if running.is_empty() {
                    say!(&log, INFO, "stopping: no new claims");
                } else {
                    say!(&log, INFO, "stopping: no new claims; {} task(s) in flight get {:?} to finish; a second Ctrl-C (or SIGTERM) stops them at once, back to the inbox", running.len(), options.grace);
                }
                stopping = Some(Instant::now());
            }
            _ = async { tokio::time::sleep_until(grace_deadline.unwrap_or_else(Instant::now).into()).await }, if grace_deadline.is_some() && !tokens.values().all(CancellationToken::is_cancelled) => {
                say!(&log, WARN, "grace period over: stopping the tasks in flight; they go back to the inbox");
                tokens.values().for_each(CancellationToken::cancel);
            }
            _ = kill.cancelled(), if !tokens.values().all(CancellationToken::is_cancelled) || stopping.is_none() => {
                if !tokens.is_empty() {
                    say!(&log, WARN, "stopping now: the tasks in flight are stopped and go back to the inbox");
                }
                tokens.values().for_each(CancellationToken::cancel);
                stopping.get_or_insert_with(Instant::now);
            }
        }
    }
    orchestrate_observe::otlp::flush();
    Ok(report)
}

/// The supervisor that started this process, when it is our parent now. The variable is also
/// inherited by whatever the tasks' steps run (an `orchestrate agent` a step starts, say): a
/// process whose parent is not that pid at start was not started by it.
fn supervisor_pid() -> Option<u32> {
    let pid: u32 = std::env::var(SUPERVISOR_PID_ENV).ok()?.parse().ok()?;
    (std::os::unix::process::parent_id() == pid).then_some(pid)
}

async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// The breakers a version of the role's workflow answers to.
fn gate_of(shared: &Shared) -> crate::breaker::Gate {
    crate::breaker::Gate::new(
        &shared.workspace,
        crate::breaker::role_runtimes(&shared.role, &shared.workflow, &shared.profiles),
        &shared.label,
    )
}

/// Notices edits of the role's files (its role file, workflow and sub-workflows) between tasks
/// and loads them; a version that does not load is reported and the previous one kept. Keeps
/// the process's record (`role::ProcRecord`) current, and removes it when dropped.
struct Reload {
    record: orchestrate_engine::role::ProcRecord,
    /// The files as the running version saw them.
    stamp: orchestrate_engine::role::Stamp,
    /// The files as they were when an edit failed to load: reported once, looked at again when
    /// they change.
    broken: Option<orchestrate_engine::role::Stamp>,
    workspace: PathBuf,
    said_write_error: bool,
}

impl Reload {
    fn new(
        shared: &Shared,
        stamp: orchestrate_engine::role::Stamp,
        options: &AgentOptions,
        supervisor: Option<u32>,
        log: &Log,
    ) -> Reload {
        let replica = options.replica;
        let me = Owner::current();
        let now = orchestrate_base::clock::now_rfc3339();
        let mut reload = Reload {
            record: orchestrate_engine::role::ProcRecord {
                format_version: 1,
                role: shared.role.name.clone(),
                replica,
                pid: me.pid,
                pid_start: me.pid_start,
                boot_id: me.boot_id,
                supervisor_pid: supervisor,
                started_at: now.clone(),
                grace_ms: u64::try_from(options.grace.as_millis()).ok(),
                workflow_hash: shared.workflow_hash.clone(),
                loaded_at: now.clone(),
                checked_at: now,
                reload: orchestrate_engine::role::ReloadOutcome::Started,
            },
            stamp,
            broken: None,
            workspace: shared.workspace.clone(),
            said_write_error: false,
        };
        reload.save(log);
        reload
    }

    fn save(&mut self, log: &Log) {
        if let Err(err) = self.record.write(&self.workspace) {
            if !self.said_write_error {
                say!(
                    log,
                    ERROR,
                    "cannot write {}: {err}; `swarm status` will not see this process's version",
                    orchestrate_engine::role::ProcRecord::path(
                        &self.workspace,
                        &self.record.role,
                        self.record.replica
                    )
                    .display()
                );
            }
            self.said_write_error = true;
        }
    }

    /// The new version when the files changed and load (or, `force`d, whenever they load and
    /// differ); `None` to keep running the current one.
    fn check(&mut self, shared: &Shared, force: bool, log: &Log) -> Option<Arc<Shared>> {
        use orchestrate_engine::role::ReloadOutcome;
        let now = self.stamp.now();
        let changed = now != self.stamp;
        if !force && (!changed || self.broken.as_ref() == Some(&now)) {
            return None;
        }
        self.record.checked_at = orchestrate_base::clock::now_rfc3339();
        if !changed && self.broken.is_none() {
            self.record.reload = ReloadOutcome::Unchanged;
            say!(
                log,
                INFO,
                "role files unchanged; running workflow {}",
                short(&shared.workflow_hash)
            );
            self.save(log);
            return None;
        }
        let name = &shared.role.name;
        let loaded = orchestrate_engine::role::Version::load(&shared.workspace, name)
            .map_err(|errors| orchestrate_engine::role::describe_errors(&shared.workspace, &errors))
            .and_then(|version| {
                if version.role.inbox == shared.role.inbox {
                    Ok(version)
                } else {
                    let error = format!(
                        "agents/{name}.yaml: `inbox` changed from `{}` to `{}`: a running role process keeps its inbox; restart the role (`orchestrate swarm down`, then `orchestrate swarm up`)",
                        shared.role.inbox, version.role.inbox
                    );
                    Err((error.clone(), error))
                }
            });
        let next = match loaded {
            Err((error, errors)) => {
                say!(
                    log,
                    ERROR,
                    "the edited role does not load; new tasks keep running the previous version (workflow {}) until it is fixed:\n{errors}",
                    short(&shared.workflow_hash)
                );
                self.broken = Some(now);
                self.record.reload = ReloadOutcome::Kept { error, errors };
                None
            }
            Ok(version) => {
                self.broken = None;
                let previous = shared.workflow_hash.clone();
                say!(
                    log,
                    INFO,
                    "reloaded agents/{name}.yaml: workflow {} -> {}; new tasks run on it (tasks in flight finish on the version they started with)",
                    short(&previous),
                    version.short_hash()
                );
                self.stamp = version.stamp.clone();
                self.record.workflow_hash = version.hash.clone();
                self.record.loaded_at = self.record.checked_at.clone();
                self.record.reload = ReloadOutcome::Reloaded {
                    previous_hash: previous,
                };
                Some(Arc::new(shared.with_version(version)))
            }
        };
        self.save(log);
        next
    }
}

impl Drop for Reload {
    fn drop(&mut self) {
        let path = orchestrate_engine::role::ProcRecord::path(
            &self.workspace,
            &self.record.role,
            self.record.replica,
        );
        // Only our own: a later process of the same replica may have written its own meanwhile.
        let ours = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<orchestrate_engine::role::ProcRecord>(&b).ok())
            .is_some_and(|r| r.pid == self.record.pid && r.pid_start == self.record.pid_start);
        if ours {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

impl Shared {
    /// The same role process running another version of the role.
    fn with_version(&self, version: orchestrate_engine::role::Version) -> Shared {
        let mut next = self.clone();
        next.isolation = orchestrate_engine::worktree::effective(
            version.role.isolation.as_ref(),
            version.workflow.isolation.as_ref(),
        );
        next.role = version.role;
        next.workflow = Arc::new(version.workflow);
        next.workflow_text = Arc::new(version.workflow_text);
        next.workflow_hash = version.hash;
        next
    }
}

/// What holds claims back: a pause (`orchestrate pause`), or an open breaker of a runtime the
/// role's workflow uses; and the user's cancel requests for tasks in flight.
struct Steering {
    paused: Option<crate::control::Pause>,
    gate: crate::breaker::Gate,
    /// A breaker said no: ask again at this time (or on a control hint).
    gate_wait: Option<Instant>,
    gate_reason: Option<String>,
    /// Half-open trials this process holds, by task.
    trials: HashMap<String, Vec<String>>,
}

impl Steering {
    fn holding(&self) -> bool {
        self.paused.is_some() || self.gate_wait.is_some()
    }

    /// Whether one more task may be claimed now; `Some(trials taken)` when it may.
    fn admit(&mut self, log: &Log) -> Option<Vec<String>> {
        if self.paused.is_some() || self.gate_wait.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        match self.gate.admit() {
            Ok(trials) => {
                if self.gate_reason.take().is_some() {
                    say!(log, INFO, "claiming again: breakers let tasks through");
                }
                self.gate_wait = None;
                Some(trials)
            }
            Err((reason, until)) => {
                let wait = until
                    .and_then(|u| (u - chrono::Utc::now()).to_std().ok())
                    .unwrap_or(IDLE_RESCAN)
                    .min(IDLE_RESCAN);
                self.gate_wait = Some(Instant::now() + wait);
                if self.gate_reason.as_deref() != Some(reason.as_str()) {
                    say!(log, WARN, "not claiming: {reason}");
                    self.gate_reason = Some(reason);
                }
                None
            }
        }
    }

    /// Reads the pause file and the cancel requests again; cancels the tasks asked for.
    fn refresh(&mut self, shared: &Shared, tokens: &HashMap<String, CancellationToken>, log: &Log) {
        let paused = crate::control::paused(&shared.workspace, &shared.role.name);
        match (&self.paused, &paused) {
            (None, Some(p)) => say!(
                log,
                INFO,
                "paused by {} at {}: no new claims ({} task(s) in flight finish)",
                p.by,
                p.since,
                tokens.len()
            ),
            (Some(_), None) => say!(log, INFO, "resumed: claiming again"),
            _ => {}
        }
        self.paused = paused;
        for (id, request) in
            crate::control::task_cancel_requests(&shared.workspace, &shared.role.name)
        {
            match tokens.get(&id) {
                Some(token) if !token.is_cancelled() => {
                    let dir = shared.layout.running.join(&id);
                    if let Err(err) = orchestrate_queue::cancel::write_run_cancel(&dir, &request) {
                        say!(log, ERROR, task = %id, "cancelling `{id}`: {err}");
                        continue;
                    }
                    say!(log, INFO, task = %id, "`{id}`: {}; stopping it", request.describe());
                    token.cancel();
                }
                Some(_) => {}
                None if !shared.layout.running.join(&id).exists() => {
                    crate::control::clear_task_cancel(&shared.workspace, &shared.role.name, &id);
                }
                None => {}
            }
        }
    }
}

/// Candidate inbox entries, deduplicated, in discovery order; some wait for a later time.
#[derive(Default)]
struct Pending {
    queue: VecDeque<(String, bool)>,
    seen: HashSet<String>,
    later: BTreeMap<Instant, Vec<(String, bool)>>,
    /// The names in `later`: one wait per name, however many times it is looked at meanwhile.
    waiting: HashSet<String>,
}

impl Pending {
    fn push(&mut self, name: String, complete: bool) {
        if self.seen.insert(name.clone()) {
            self.queue.push_back((name, complete));
        } else if complete {
            // A close-write or rename for a file we already hold as "maybe incomplete".
            if let Some(entry) = self.queue.iter_mut().find(|(n, _)| *n == name) {
                entry.1 = true;
            }
        }
    }

    fn pop(&mut self) -> Option<(String, bool)> {
        let (name, complete) = self.queue.pop_front()?;
        self.seen.remove(&name);
        Some((name, complete))
    }

    fn later(&mut self, name: String, complete: bool, after: Duration) {
        if !self.waiting.insert(name.clone()) {
            return;
        }
        self.later
            .entry(Instant::now() + after)
            .or_default()
            .push((name, complete));
    }

    fn next_due(&self) -> Option<Instant> {
        self.later.keys().next().copied()
    }

    fn promote_due(&mut self) {
        let now = Instant::now();
        let due: Vec<Instant> = self.later.range(..=now).map(|(at, _)| *at).collect();
        for at in due {
            for (name, complete) in self.later.remove(&at).unwrap_or_default() {
                self.waiting.remove(&name);
                self.push(name, complete);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.later.is_empty()
    }

    /// Adds every task file of the inbox (sorted: time-ordered ids come out oldest first).
    fn list(&mut self, layout: &Layout) {
        let Ok(entries) = std::fs::read_dir(&layout.inbox) else {
            return;
        };
        let mut names: Vec<String> = Vec::new();
        for entry in entries.flatten() {
            match entry.file_name().into_string() {
                Ok(name) if layout.task_id(&name).is_some() => names.push(name),
                Ok(_) => {}
                // A task file whose name is not UTF-8 can never be claimed by name: quarantine it.
                Err(raw)
                    if raw
                        .as_encoded_bytes()
                        .ends_with(layout.extension.as_bytes())
                        && !raw.as_encoded_bytes().starts_with(b".") =>
                {
                    let _ = queue::quarantine_invalid_name(layout, &raw);
                }
                Err(_) => {}
            }
        }
        names.sort();
        for name in names {
            self.push(name, false);
        }
    }
}

/// Starts the inotify watch; events become hints on `tx`.
fn watch(
    dir: &Path,
    tx: mpsc::UnboundedSender<Hint>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let event = match event {
            Ok(event) => event,
            Err(_) => {
                let _ = tx.send(Hint::Rescan);
                return;
            }
        };
        // Check the flag before the paths: an overflow event has none.
        if event.need_rescan() {
            let _ = tx.send(Hint::Rescan);
            return;
        }
        let complete = match event.kind {
            EventKind::Create(_) => false,
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any)) => true,
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                let names = event
                    .paths
                    .get(1)
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned());
                if let Some(name) = names {
                    let _ = tx.send(Hint::Names(vec![(name, true)]));
                }
                return;
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            _ => return,
        };
        let names: Vec<(String, bool)> = event
            .paths
            .iter()
            .filter_map(|p| {
                p.file_name()
                    .map(|n| (n.to_string_lossy().into_owned(), complete))
            })
            .collect();
        if !names.is_empty() {
            let _ = tx.send(Hint::Names(names));
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// The directories the swarm's queues live in, as the readonly check's ignore patterns: other
/// tasks are claimed, finished and handed over in them while a task's readonly step runs.
fn queue_dirs(workspace: &Path) -> Vec<String> {
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

/// Tells a supervisor (if any) that this process is ready: the watch is registered and the
/// first listing done.
fn report_ready() {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let Some(fd) = std::env::var("ORCHESTRATE_READY_FD")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: the supervisor passed this descriptor for us to own; it is used once here and
    // closed when the File drops.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let _ = file.write_all(b"ready\n");
}

fn recover(shared: &Shared, log: &Log) {
    match shared
        .queue
        .recover(shared.role.max_attempts, Some(shared.role.hung_after))
    {
        Ok(recovered) => {
            for r in recovered {
                say!(
                    log,
                    INFO,
                    task = %r.id,
                    attempt = r.attempt,
                    "recovered `{}` (attempt {}): {} ({})",
                    r.id, r.attempt, r.action, r.reason
                );
            }
        }
        Err(err) => say!(log, ERROR, "recovery failed: {err}"),
    }
}

/// `${task.json}` of a task's text: the text parsed as JSON, or none when it is not JSON (or
/// nests deeper than serde_json's limit of 128 levels, so no later walk can overflow the stack).
pub fn task_json(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok()
}

/// The `${task.*}` variables of a claimed task.
fn task_vars(shared: &Shared, claim: &Claim) -> (Value, String) {
    // The bytes read at claim time, not the file again: what ran is what the record keeps.
    let text = if claim.content.len() as u64 > TASK_TEXT_LIMIT {
        String::new()
    } else {
        String::from_utf8_lossy(&claim.content).into_owned()
    };
    task_variables(TaskFacts {
        path: orchestrate_base::fsutil::relative(&shared.workspace, &claim.task_path),
        dir: orchestrate_base::fsutil::relative(&shared.workspace, &claim.dir),
        name: format!("{}{}", claim.id, shared.layout.extension),
        id: &claim.id,
        attempt: claim.attempt,
        text,
        correlation_id: claim.meta.correlation_id.clone(),
        role: &shared.role.name,
    })
}

/// What `${task.*}` is made of: where the task is, its name, attempt, content and role.
pub struct TaskFacts<'a> {
    pub path: String,
    pub dir: String,
    pub name: String,
    pub id: &'a str,
    pub attempt: u32,
    pub text: String,
    /// From the task's sidecar (set by whoever enqueued it), if any.
    pub correlation_id: Option<String>,
    pub role: &'a str,
}

/// The `${task.*}` variables and the correlation id (the sidecar's, else a JSON task's own
/// `correlation_id`, else the task id). `orchestrate test` builds a task case's with it too.
pub fn task_variables(facts: TaskFacts<'_>) -> (Value, String) {
    let parsed = task_json(&facts.text);
    let correlation_id = facts
        .correlation_id
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|j| j["correlation_id"].as_str().map(str::to_string))
        })
        .unwrap_or_else(|| facts.id.to_string());
    let mut vars = json!({
        "path": facts.path,
        "dir": facts.dir,
        "name": facts.name,
        "id": facts.id,
        "attempt": facts.attempt,
        "text": facts.text,
        "correlation_id": correlation_id,
        "role": facts.role,
    });
    if let Some(json) = parsed {
        vars["json"] = json;
    }
    (vars, correlation_id)
}

/// One attempt of one task: run the workflow, write status.json, move the task directory.
async fn run_task(
    shared: Arc<Shared>,
    mut claim: Claim,
    cancel: CancellationToken,
    slot: Slot,
) -> Finished {
    let started = Instant::now();
    let started_at = orchestrate_base::clock::now_rfc3339();
    let id = claim.id.clone();
    let (vars, correlation_id) = task_vars(&shared, &claim);
    let mut config = RunConfig::new(
        shared.workspace.clone(),
        shared.workflow.context.clone(),
        cancel.clone(),
    );
    config.run_root = Some(claim.run_root());
    config.task = Some(vars);
    config.correlation_id = Some(correlation_id.clone());
    config.inherit_fds = vec![claim.lock.as_raw_fd()];
    config.default_provider = shared.role.runtime.clone();
    config.default_model = shared.role.model.clone();
    config.resumable = false;
    config.profiles = Arc::clone(&shared.profiles);
    config.budget = shared.role.budget.clone();
    config.swarm_budget = shared.swarm_budget.clone();
    config.default_idle_timeout = shared.role.idle_timeout;
    config.ignore_changes = shared.queue_dirs.clone();
    config.capabilities = shared
        .role
        .capabilities
        .clone()
        .map(|c| (shared.role.name.clone(), c));
    config.observer = Some(Arc::clone(&shared.observer));
    // A worktree that cannot be made, or a run that cannot start, fails the attempt like a
    // failed run (exit code 1, no report).
    let (worktree, started_run) = match worktree(&shared, &claim).await {
        Err(message) => (None, Err(message)),
        Ok(worktree) => {
            config.checkout = worktree.as_ref().map(|w| w.checkout.clone());
            let runner = Runner::create((*shared.workflow).clone(), &shared.workflow_text, config)
                .map_err(|err| format!("failed to start the run: {err}"));
            (worktree, runner)
        }
    };
    let (outcome, timed_out) = match started_run {
        Ok(runner) => drive(&shared, &mut claim, runner, &cancel).await,
        Err(message) => (Err(message), false),
    };
    drop(slot);
    // Stopped by `orchestrate cancel`: failed/, not back to the inbox, never retried.
    let cancelled = match &outcome {
        Ok(report) if report.status == RunStatus::Interrupted && !timed_out => {
            orchestrate_queue::cancel::run_cancel(&claim.run_root())
        }
        _ => None,
    };
    let (report, success, exit_code, message) = match (outcome, &cancelled) {
        (Ok(report), Some(request)) => {
            let message = format!(
                "{}; not retried (`orchestrate retry {id}` queues it again)",
                request.describe()
            );
            let code = i32::from(orchestrate_engine::runner::exit::INTERRUPTED);
            (Some(report), false, code, message)
        }
        (Ok(report), None) if report.status == RunStatus::Interrupted && !timed_out => {
            ledger(&shared, &claim, &report);
            // Stopped by our own shutdown: not the task's fault, so it goes back uncharged.
            say!(
                &shared.log,
                INFO,
                task = %id,
                attempt = claim.attempt,
                run_id = %report.run_id,
                "`{id}` stopped by shutdown; back in the inbox",
            );
            let _ = shared
                .queue
                .release(claim, "stopped by the worker's shutdown");
            if let Some(metrics) = &shared.metrics {
                metrics.finished("released", None);
            }
            return Finished {
                id,
                outcome: "released",
            };
        }
        (Ok(report), None) => {
            ledger(&shared, &claim, &report);
            let success = report.status == RunStatus::Succeeded;
            let message = if timed_out {
                format!(
                    "timed out after {:?} (task_timeout_sec); its processes were stopped",
                    shared.role.task_timeout.unwrap_or_default()
                )
            } else {
                report
                    .error
                    .clone()
                    .unwrap_or_else(|| "workflow succeeded".into())
            };
            let exit_code = if timed_out {
                124
            } else {
                i32::from(report.exit_code)
            };
            (Some(report), success, exit_code, message)
        }
        (Err(message), _) => (None, false, 1, message),
    };
    let mut status = status_json(
        &shared,
        &claim,
        &correlation_id,
        report.as_ref(),
        &started_at,
        started,
        success,
        exit_code,
        &message,
    );
    status.cancelled = cancelled;
    finish(shared, claim, success, status, worktree).await
}

/// Runs the task's workflow to its end, renewing the claim's lease meanwhile and stopping it
/// at `task_timeout`; whether it timed out.
async fn drive(
    shared: &Shared,
    claim: &mut Claim,
    runner: Runner,
    cancel: &CancellationToken,
) -> (Result<RunReport, String>, bool) {
    let run = runner.run();
    tokio::pin!(run);
    let heartbeat_every = (shared.role.hung_after / 4).max(Duration::from_millis(500));
    // Not `interval`: its first tick is due at once, and tokio fires timers on its 1 ms wheel, so
    // awaiting it would delay every task's start by up to a millisecond.
    let mut heartbeat =
        tokio::time::interval_at((Instant::now() + heartbeat_every).into(), heartbeat_every);
    let deadline = shared.role.task_timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    let outcome = loop {
        tokio::select! {
            result = &mut run => break result.map_err(|e| e.to_string()),
            _ = heartbeat.tick() => shared.queue.heartbeat(claim),
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()).await }, if deadline.is_some() && !timed_out => {
                timed_out = true;
                cancel.cancel();
            }
        }
    };
    (outcome, timed_out)
}

/// The task's worktree under `isolation: worktree` (made, or the one an earlier attempt left),
/// or why there is none: the attempt fails with that message.
async fn worktree(
    shared: &Arc<Shared>,
    claim: &Claim,
) -> Result<Option<orchestrate_engine::worktree::Record>, String> {
    let Some(spec) = shared.isolation.clone() else {
        return Ok(None);
    };
    let owner = orchestrate_engine::worktree::Owner::Task {
        role: shared.role.name.clone(),
        task: claim.id.clone(),
    };
    let (workspace, workflow) = (shared.workspace.clone(), shared.workflow.name.clone());
    let made = tokio::task::spawn_blocking(move || {
        orchestrate_engine::worktree::prepare(&workspace, &spec, &owner, &workflow)
    })
    .await
    .map_err(|err| format!("it panicked: {err}"))
    .and_then(|made| made.map_err(|err| err.to_string()));
    let record = made.map_err(|why| {
        format!(
            "failed to prepare the worktree of task `{}` (role `{}`): {why}",
            claim.id, shared.role.name
        )
    })?;
    say!(
        &shared.log,
        INFO,
        task = %claim.id,
        branch = %record.branch,
        "`{}` works in {} (branch `{}`)",
        claim.id,
        orchestrate_base::fsutil::relative(&shared.workspace, &record.checkout),
        record.branch
    );
    Ok(Some(record))
}

/// Appends the attempt's spending to today's ledger (what the swarm's daily budget counts).
fn ledger(shared: &Shared, claim: &Claim, report: &RunReport) {
    let spent = report.spent;
    if spent.tokens == 0 && spent.unpriced_tokens == 0 && spent.cost_usd == 0.0 {
        // Nothing to count (a task of command steps): no write on the swarm's hot path.
        return;
    }
    let entry = json!({
        "at": orchestrate_base::clock::now_rfc3339(),
        "role": shared.role.name,
        "task": claim.id,
        "attempt": claim.attempt,
        "run_id": report.run_id,
        "tokens": spent.tokens,
        "cost_usd": spent.cost_usd,
        "unpriced_tokens": spent.unpriced_tokens,
    });
    if let Err(err) = orchestrate_engine::budget::append(&shared.workspace, &entry) {
        say!(
            always &shared.log,
            ERROR,
            task = %claim.id,
            attempt = claim.attempt,
            "cannot append `{}`'s spending to the ledger: {err}",
            claim.id
        );
    }
}

/// Completes the claim off the async threads: the completion's fsyncs wait on the disk, and
/// on a 2-core machine two tasks finishing at once would otherwise stall every other task (and
/// new claims) for that long.
async fn finish(
    shared: Arc<Shared>,
    claim: Claim,
    success: bool,
    status: TaskStatus,
    worktree: Option<orchestrate_engine::worktree::Record>,
) -> Finished {
    let id = claim.id.clone();
    tokio::task::spawn_blocking(move || {
        finish_blocking(&shared, claim, success, status, worktree.as_ref())
    })
    .await
    .unwrap_or_else(|err| {
        tracing::error!(task = %id, "finishing `{id}` panicked: {err}");
        Finished {
            id,
            outcome: "failed",
        }
    })
}

fn finish_blocking(
    shared: &Shared,
    claim: Claim,
    success: bool,
    mut status: TaskStatus,
    worktree: Option<&orchestrate_engine::worktree::Record>,
) -> Finished {
    let id = claim.id.clone();
    // Before status.json, which says whether the worktree is still there.
    if let Some(record) = worktree {
        let ending = orchestrate_engine::worktree::finish(&shared.workspace, record, success);
        status.worktree = Some(record.status(&shared.workspace, ending.kept));
        say!(&shared.log, INFO, task = %id, "`{id}`: {}", ending.note);
    }
    let outcome = shared.queue.complete(&claim, success, &status);
    let verdict = if success { "processed" } else { "failed" };
    // The attempt's event log, looked for only when metrics or traces read it.
    let exporting = orchestrate_observe::otlp::Exporter::from_env().is_some();
    let events = outcome
        .as_ref()
        .ok()
        .filter(|_| shared.metrics.is_some() || exporting)
        .map(|dest| dest.join("events.jsonl"))
        .filter(|p| p.exists());
    if let Some(metrics) = &shared.metrics {
        metrics.finished(verdict, events.as_deref());
    }
    if let Some(events) = events.filter(|_| exporting) {
        orchestrate_observe::otlp::submit_task(
            events,
            orchestrate_observe::otlp::TaskInfo {
                id: claim.id.clone(),
                role: shared.role.name.clone(),
                attempt: u64::from(claim.attempt),
                correlation_id: status.correlation_id.clone().unwrap_or_default(),
            },
        );
    }
    match outcome {
        Ok(dest) => {
            let dest = orchestrate_base::fsutil::relative(&shared.workspace, &dest);
            let run_id = status.run_id.as_deref().unwrap_or_default();
            let attempt = claim.attempt;
            // A failed task is worth a look: a warning, so that `--log-level warn` keeps it.
            if success {
                say!(
                    &shared.log,
                    INFO,
                    task = %id,
                    attempt,
                    run_id = %run_id,
                    outcome = %verdict,
                    "`{id}` attempt {attempt} {verdict}: {dest}",
                );
            } else {
                say!(
                    &shared.log,
                    WARN,
                    task = %id,
                    attempt,
                    run_id = %run_id,
                    outcome = %verdict,
                    "`{id}` attempt {attempt} {verdict}: {dest}",
                );
            }
            Finished {
                id,
                outcome: verdict,
            }
        }
        Err(err) => {
            // The claim stays in running/ with its lock released when `claim` drops: the next
            // recovery pass completes the move (status.json is written) or requeues it.
            say!(
                always &shared.log,
                ERROR,
                task = %id,
                attempt = claim.attempt,
                "failed to finish `{id}`: {err}",
            );
            Finished {
                id,
                outcome: "failed",
            }
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
fn status_json(
    shared: &Shared,
    claim: &Claim,
    correlation_id: &str,
    report: Option<&RunReport>,
    started_at: &str,
    started: Instant,
    success: bool,
    exit_code: i32,
    message: &str,
) -> TaskStatus {
    let mut status = TaskStatus::new(&shared.role.name, &claim.id, success, exit_code, message);
    status.correlation_id = Some(correlation_id.to_string());
    status.attempt = Some(claim.attempt);
    status.workflow_hash = Some(shared.workflow_hash.clone());
    if let Some(report) = report {
        status.run_id = Some(report.run_id.clone());
        status.step = report.last_step.clone();
        status.step_exit_code = report.step_exit_code;
        status.outputs = report.outputs.clone();
        status.next_actions = report
            .enqueued
            .iter()
            .map(|t| NextAction {
                agent: t.role.clone(),
                file: t.file.clone(),
                task: t.id.clone(),
            })
            .collect();
    }
    status.metrics = Some(Metrics {
        duration_sec: started.elapsed().as_secs_f64(),
        task_bytes: claim.content.len() as u64,
    });
    status.timings = Some(Timings {
        claimed_at: claim.lease.claimed_at.clone(),
        started_at: started_at.to_string(),
        finished_at: orchestrate_base::clock::now_rfc3339(),
    });
    status.worker = Some(Worker {
        pid: claim.lease.pid,
        label: shared.label.clone(),
    });
    status.history = claim.meta.history.clone();
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `validate` checks `${task.*}` against the names a role process really sets.
    #[test]
    fn task_fields_are_what_a_role_process_sets() {
        let (vars, _) = task_variables(TaskFacts {
            path: "inbox/r/t.task".into(),
            dir: "running/r/t".into(),
            name: "t.task".into(),
            id: "t",
            attempt: 1,
            text: "{}".into(),
            correlation_id: None,
            role: "r",
        });
        let mut set: Vec<&str> = vars
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut documented = orchestrate_lang::load::TASK_FIELDS.to_vec();
        set.sort_unstable();
        documented.sort_unstable();
        assert_eq!(set, documented);
    }
}
