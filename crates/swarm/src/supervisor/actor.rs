//! The supervisor loop ([`supervise_with`]): takes the lock, stops a dead supervisor's
//! leftovers, starts one actor per replica, then `select!`s over their updates and ends, SIGHUP,
//! SIGCHLD, a timer and the stop and kill tokens, as the only writer of the records, until every
//! replica is gone.
//!
//! Does not run a replica (`replica` does) nor re-read the roster (the `impl Supervisor` block
//! in `reload` does).

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::Path;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use orchestrate_base::clock;
use orchestrate_base::io_err::FromIo;
use orchestrate_base::process;
use orchestrate_engine::events::EventLog;
use orchestrate_queue::queue;

use super::error::SupervisorError;
use super::event::{
    Record, SupervisorEvent, SupervisorStarted, SupervisorStopped, SupervisorStopping,
};
use super::leftovers::stop_leftovers;
use super::lock::take_lock;
use super::orphans::{REAP_INTERVAL, next_sigchld, reap_orphans};
use super::policy::{Policy, Restarts, millis};
use super::records::{Records, Update};
use super::replica::Actor;
use super::spec::{ChargeToTask, ChildSpec, Roster};
use super::status_file::{
    ChildStatus, STATUS_FORMAT, StatusFile, SupervisorInfo, SupervisorState, events_path,
    status_path, swarm_dir, write_status,
};

/// What [`supervise_with`] returns once everything is stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every replica's final status (`stopped` or `failed`).
    pub(crate) children: Vec<ChildStatus>,
    /// Whether the `kill` token ended it (SIGKILL without grace).
    pub killed: bool,
}

/// [`supervise_with`] without a roster: the replicas are only those given (tests).
#[cfg(test)]
pub(crate) async fn supervise(
    workspace: &Path,
    children: Vec<ChildSpec>,
    policy: Policy,
    charge_to_task: ChargeToTask,
    stop: CancellationToken,
    kill: CancellationToken,
) -> Result<Report, SupervisorError> {
    supervise_with(
        workspace,
        children,
        policy,
        charge_to_task,
        (stop, kill),
        None,
    )
    .await
}

/// Runs the supervisor in the foreground until `stop` is cancelled (graceful: SIGTERM to every
/// replica's group, `policy.grace`, then SIGKILL) or `kill` is cancelled (SIGKILL at once), then
/// returns once every replica is gone.
///
/// Refuses to start when another supervisor holds `WORKSPACE/.orchestrate/swarm/supervisor.lock`
/// (the error names its pid). Replicas left alive by a supervisor that died are stopped first.
/// Makes this process a child subreaper for good (a process attribute that cannot be scoped).
///
/// With a `roster`, it is asked again on SIGHUP and when `agents/` changes: replicas it adds are
/// started, replicas it drops are stopped gracefully, and every running replica is sent SIGHUP
/// (a role process then looks at its files again).
pub async fn supervise_with(
    workspace: &Path,
    children: Vec<ChildSpec>,
    policy: Policy,
    charge_to_task: ChargeToTask,
    (stop, kill): (CancellationToken, CancellationToken),
    roster: Option<Roster>,
) -> Result<Report, SupervisorError> {
    let lock = take_lock_as_subreaper(workspace)?;
    let events_file = events_path(workspace);
    let mut events = EventLog::open(&events_file, Vec::new())
        .map_err(SupervisorError::io_err("open", &events_file))?;
    stop_leftovers(workspace, policy.grace, &mut events).await;
    let file = first_status(&children);
    // A supervisor that nobody can see or stop is worse than none: the first write must work.
    let status_file = status_path(workspace);
    write_status(&status_file, &file).map_err(SupervisorError::io_err("write", &status_file))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut supervisor = Supervisor {
        workspace,
        policy,
        charge: charge_to_task,
        stop,
        kill,
        roster,
        file,
        records: Records {
            status_path: status_file,
            events,
        },
        tx,
        rx,
        actors: JoinSet::new(),
        tokens: HashMap::new(),
        removing: Vec::new(),
        agents: Vec::new(),
        stopping: false,
        killed: false,
        _lock: lock,
    };
    supervisor
        .records
        .record(&Record::own(SupervisorEvent::SupervisorStarted(
            SupervisorStarted {
                pid: supervisor.file.supervisor.pid,
                children: supervisor.file.children.len(),
            },
        )));
    for spec in children {
        supervisor.start(spec);
    }
    supervisor.run().await;
    Ok(supervisor.finish().await)
}

/// Creates the records' directory, takes the one-supervisor lock (held while the file is open)
/// and makes this process a child subreaper.
fn take_lock_as_subreaper(workspace: &Path) -> Result<File, SupervisorError> {
    let dir = swarm_dir(workspace);
    fs::create_dir_all(&dir).map_err(SupervisorError::io_err("create", &dir))?;
    let lock = take_lock(workspace)?;
    process::become_subreaper().map_err(SupervisorError::io_err(
        "become a child subreaper in",
        workspace,
    ))?;
    Ok(lock)
}

/// The status file as a new supervisor starts: itself running, every replica starting.
fn first_status(children: &[ChildSpec]) -> StatusFile {
    let me = queue::Owner::current();
    let now = clock::now_rfc3339();
    StatusFile {
        format_version: STATUS_FORMAT,
        supervisor: SupervisorInfo {
            pid: me.pid,
            pid_start: me.pid_start,
            boot_id: me.boot_id,
            state: SupervisorState::Running,
            started_at: now.clone(),
            updated_at: now,
        },
        children: children.iter().map(ChildStatus::new).collect(),
        reloaded_at: None,
        problems: Vec::new(),
    }
}

/// Names, sizes and modification times of `agents/*.yaml`.
pub(super) type AgentsStamp = Vec<(std::ffi::OsString, u64, i64, i64)>;

/// The supervisor loop's state: the status file it keeps, the replicas' actors and their stop
/// tokens, and where a stop stands.
pub(super) struct Supervisor<'a> {
    pub(super) workspace: &'a Path,
    policy: Policy,
    charge: ChargeToTask,
    stop: CancellationToken,
    kill: CancellationToken,
    pub(super) roster: Option<Roster>,
    pub(super) file: StatusFile,
    pub(super) records: Records,
    tx: mpsc::UnboundedSender<Update>,
    rx: mpsc::UnboundedReceiver<Update>,
    actors: JoinSet<String>,
    /// Each replica's own stop token (under `stop`), by name: a reload stops one alone.
    pub(super) tokens: HashMap<String, CancellationToken>,
    /// Replicas being stopped because their role (or replica) is gone: dropped from the status
    /// once stopped.
    pub(super) removing: Vec<String>,
    /// `agents/` as last looked at ([`Supervisor::agents_changed`]).
    pub(super) agents: AgentsStamp,
    pub(super) stopping: bool,
    killed: bool,
    /// The one-supervisor lock, held while this lives.
    _lock: File,
}

impl Supervisor<'_> {
    /// Starts one replica's actor under its own stop token.
    pub(super) fn start(&mut self, spec: ChildSpec) {
        let token = self.stop.child_token();
        self.tokens.insert(spec.name.clone(), token.clone());
        let name = spec.name.clone();
        let actor = Actor {
            status: ChildStatus::new(&spec),
            spec,
            policy: self.policy,
            cwd: self.workspace.to_path_buf(),
            charge: self.charge.clone(),
            stop: token,
            kill: self.kill.clone(),
            tx: self.tx.clone(),
            restarts: Restarts::new(self.policy),
        };
        self.actors.spawn(async move {
            actor.run().await;
            name
        });
    }

    /// The loop: until stopping and every actor has ended.
    async fn run(&mut self) {
        self.agents = self.agents_stamp();
        let mut hangup = signal(SignalKind::hangup()).ok();
        let mut sigchld = signal(SignalKind::child()).ok();
        let mut tick = tokio::time::interval(REAP_INTERVAL);
        while !(self.stopping && self.actors.is_empty()) {
            let mut reload = false;
            tokio::select! {
                Some(update) = self.rx.recv() => self.updated(update),
                Some(joined) = self.actors.join_next() => self.ended(joined),
                Some(()) = next_sigchld(&mut hangup), if !self.stopping => reload = true,
                () = self.stop.cancelled(), if !self.stopping => {
                    self.stopping = true;
                    self.file.supervisor.state = SupervisorState::Stopping;
                    self.records.record(&Record::own(SupervisorEvent::SupervisorStopping(
                        SupervisorStopping { grace_ms: millis(self.policy.grace) },
                    )));
                    self.records.write(&mut self.file);
                }
                () = self.kill.cancelled(), if !self.killed => {
                    self.stopping = true;
                    self.killed = true;
                    self.file.supervisor.state = SupervisorState::Stopping;
                    self.records.record(&Record::own(SupervisorEvent::SupervisorKilling));
                    self.records.write(&mut self.file);
                }
                Some(()) = next_sigchld(&mut sigchld) => reap_orphans(),
                _ = tick.tick() => {
                    reap_orphans();
                    reload = self.agents_changed();
                }
            }
            if reload {
                self.reload();
            }
        }
    }

    /// An actor's update, and any that follow at once: a burst (many replicas starting) is one
    /// status write.
    fn updated(&mut self, update: Update) {
        self.records.apply(&mut self.file, update);
        while let Ok(update) = self.rx.try_recv() {
            self.records.apply(&mut self.file, update);
        }
        self.records.write(&mut self.file);
    }

    /// An actor ended: a replica being removed leaves the status file.
    fn ended(&mut self, joined: Result<String, tokio::task::JoinError>) {
        // Its last update was sent before it ended.
        while let Ok(update) = self.rx.try_recv() {
            self.records.apply(&mut self.file, update);
        }
        if let Ok(name) = joined {
            self.tokens.remove(&name);
            if self.removing.contains(&name) {
                self.removing.retain(|n| *n != name);
                self.file.children.retain(|c| c.name != name);
            }
        }
        self.records.write(&mut self.file);
    }

    /// After the loop: collects the actors, reaps what is left, records the stop.
    async fn finish(mut self) -> Report {
        // Every actor has sent its last update; joining only collects the finished tasks.
        while self.actors.join_next().await.is_some() {}
        reap_orphans();
        self.file.supervisor.state = SupervisorState::Stopped;
        self.records
            .record(&Record::own(SupervisorEvent::SupervisorStopped(
                SupervisorStopped {
                    killed: self.killed,
                },
            )));
        self.records.write(&mut self.file);
        Report {
            children: self.file.children,
            killed: self.killed,
        }
    }
}
