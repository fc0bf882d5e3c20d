//! The swarm supervisor: one process per role replica, kept running, stopped on request.
//!
//! Owns `orchestrate swarm up / down / status`: spawning each replica's process (the argv it is
//! given, normally `orchestrate agent ROLE --replica N`), the ready handshake
//! ([`READY_FD_ENV`]), restarts with exponential backoff and an Erlang/OTP-style intensity limit,
//! graceful and immediate stop, reaping orphans as a child subreaper, the one-supervisor-per-
//! workspace lock, and the records under `WORKSPACE/.orchestrate/swarm/`: `status.json` (atomically
//! replaced on every state change) and `events.jsonl` (append-only).
//!
//! It does not claim tasks, run workflows or recover leases: the agent processes and `queue` do.
//! Whether a death is the fault of a task is asked of the caller (`charge_to_task`), which knows
//! how to read the role's leases.
//!
//! Process model. Each replica is the leader of a new *session* (so also of a new process group):
//! signalling the group reaches the replica and whatever it runs in that group, and the session
//! id marks everything the replica started, even in other groups (the steps `exec` runs each get
//! their own group). The session id is what lets the orphan reaper tell the swarm's orphans from
//! children that other code in this process spawned (with tokio, in our own session), whose exit
//! statuses it must never steal. Managed children are watched through pidfds and reaped only by
//! their own actor; the group is swept before the leader is reaped, while its pid (and so the
//! group and session ids) cannot be reused.
//!
//! Each replica is an actor (one tokio task, a `select!` over exit, readiness, timers and the
//! stop/kill tokens) that reports every state change to the supervisor loop, the only writer of
//! the records.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, unix::AsyncFd};
use tokio::net::unix::pipe;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use orchestrate_base::io_err::FromIo;
use orchestrate_base::process::{self, kill_group};
use orchestrate_base::{clock, human, json_file};
use orchestrate_engine::events::EventLog;
use orchestrate_engine::role;
use orchestrate_queue::queue;

/// Version of `status.json`; a reader refuses a newer one.
pub const STATUS_FORMAT: u32 = 1;

/// Environment variable naming the descriptor a child writes `ready\n` to once it is ready.
pub const READY_FD_ENV: &str = "ORCHESTRATE_READY_FD";

/// The line a child writes to the ready descriptor.
const READY_LINE: &[u8] = b"ready";

/// Bytes kept while looking for the ready line; a child writing more without a newline is
/// talking nonsense and its buffer is dropped.
const MAX_READY_LINE: usize = 4096;

/// Backstop for the orphan reaper when a SIGCHLD is coalesced or missed.
const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// Poll interval where no descriptor can be waited on (exit without pidfd, `down`, `wait_up`).
const POLL: Duration = Duration::from_millis(20);

/// What the supervisor starts for one role replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// Unique among the children, e.g. `engineer#1`.
    pub name: String,
    pub role: String,
    pub replica: u32,
    /// Program and arguments, run directly (no shell), in WORKSPACE.
    pub argv: Vec<String>,
    /// Added to the inherited environment.
    pub env: Vec<(String, String)>,
}

/// Restart and stop timing. The defaults are the protocol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Delay before the first restart; doubles on each further one.
    pub initial_backoff: Duration,
    /// Cap of the doubling.
    pub max_backoff: Duration,
    /// A replica that ran (ready) this long before dying restarts after `initial_backoff` again.
    pub reset_after: Duration,
    /// More than this many restarts within `within` and the replica is failed.
    pub max_restarts: u32,
    pub within: Duration,
    /// Time between SIGTERM and SIGKILL on a graceful stop.
    pub grace: Duration,
    /// A replica that has not reported ready by then is killed and restarted.
    pub ready_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
            max_restarts: 5,
            within: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// Asked with (role, pid) after a replica died on its own: true when it died running a task that
/// killed it, so the death is charged to the task's attempts instead of the replica's budget.
pub type ChargeToTask = Arc<dyn Fn(&str, u32) -> bool + Send + Sync>;

/// Asked on a reload (SIGHUP, `orchestrate swarm reload`, an edit in `agents/`): the replicas
/// there should be now, and the roles that cannot start, with why. A role with a problem keeps
/// the replicas it has (they run the version they loaded); a replica no longer listed is stopped
/// gracefully (it finishes its task).
pub type Roster = Arc<dyn Fn() -> (Vec<ChildSpec>, Vec<RoleProblem>) + Send + Sync>;

/// A role the supervisor cannot start (its file does not load).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleProblem {
    pub role: String,
    /// `file:line:column: message`.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "failed to start the supervisor: another one ({}) is running in {}; see `orchestrate swarm status`, or stop it with `orchestrate swarm down`",
        pid_text(*pid),
        workspace.display()
    )]
    AlreadyRunning {
        workspace: PathBuf,
        pid: Option<u32>,
    },
    #[error("no supervisor is running in {}", workspace.display())]
    NotRunning { workspace: PathBuf },
    #[error("failed to read {}: not a valid swarm status file: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "failed to read {}: format_version {version} is newer than this orchestrate understands; upgrade orchestrate",
        path.display()
    )]
    TooNew { path: PathBuf, version: u64 },
    #[error("failed to signal the supervisor (pid {pid}): {source}")]
    Signal {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error(
        "failed to bring the swarm up: the supervisor (pid {pid}) exited ({how}) before its children were up"
    )]
    ExitedEarly { pid: u32, how: String },
    #[error(
        "failed to bring the swarm up within {}: still waiting for {}",
        human::duration(*waited),
        pending.join(", ")
    )]
    NotUp {
        pid: u32,
        waited: Duration,
        pending: Vec<String>,
    },
}

impl FromIo for SupervisorError {
    fn from_io(action: &'static str, path: PathBuf, source: io::Error) -> Self {
        SupervisorError::Io {
            action,
            path,
            source,
        }
    }
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
}

/// `WORKSPACE/.orchestrate/swarm`: the supervisor's lock and records.
pub fn swarm_dir(workspace: &Path) -> PathBuf {
    workspace.join(".orchestrate").join("swarm")
}

pub fn status_path(workspace: &Path) -> PathBuf {
    swarm_dir(workspace).join("status.json")
}

pub fn events_path(workspace: &Path) -> PathBuf {
    swarm_dir(workspace).join("events.jsonl")
}

pub fn lock_path(workspace: &Path) -> PathBuf {
    swarm_dir(workspace).join("supervisor.lock")
}

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Spawned, not ready yet.
    Starting,
    /// Reported ready.
    Running,
    /// Died; waiting out the backoff before the next start.
    Backoff,
    /// Restarted too often; left down until the next `swarm up`.
    Failed,
    /// Asked to stop, not gone yet.
    Stopping,
    Stopped,
    /// Only in [`status`] when no supervisor runs: the process of a replica whose supervisor died
    /// is still alive.
    Orphaned,
    /// Only in [`status`]: a role process started by hand (`orchestrate agent`), which no
    /// supervisor manages.
    Unsupervised,
}

impl ChildState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChildState::Starting => "starting",
            ChildState::Running => "running",
            ChildState::Backoff => "backoff",
            ChildState::Failed => "failed",
            ChildState::Stopping => "stopping",
            ChildState::Stopped => "stopped",
            ChildState::Orphaned => "orphaned",
            ChildState::Unsupervised => "unsupervised",
        }
    }
}

/// Why a replica's process ended, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitReason {
    /// Exited with this status code.
    Exited { code: i32 },
    /// Killed by this signal (by us only when stopping; see the event log).
    Signaled { signal: i32 },
    /// Killed because it did not report ready within the timeout.
    NotReady { timeout_ms: u64 },
    /// Could not be started at all.
    SpawnFailed { message: String },
    /// Its status could not be read (someone else reaped it).
    Lost { message: String },
}

impl ExitReason {
    fn of(status: ExitStatus) -> ExitReason {
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitReason::Exited { code },
            (None, Some(signal)) => ExitReason::Signaled { signal },
            (None, None) => ExitReason::Exited {
                code: status.into_raw(),
            },
        }
    }

    /// A death of the process's own making (as opposed to one we caused or a failed start).
    fn is_own_death(&self) -> bool {
        matches!(
            self,
            ExitReason::Exited { .. } | ExitReason::Signaled { .. }
        )
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Exited { code } => write!(f, "exit {code}"),
            ExitReason::Signaled { signal } => match signal_name(*signal) {
                Some(name) => write!(f, "{name}"),
                None => write!(f, "signal {signal}"),
            },
            ExitReason::NotReady { timeout_ms } => write!(
                f,
                "not ready within {}",
                human::duration(Duration::from_millis(*timeout_ms))
            ),
            ExitReason::SpawnFailed { message } => write!(f, "{message}"),
            ExitReason::Lost { message } => write!(f, "lost: {message}"),
        }
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => return None,
    })
}

/// One replica in `status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildStatus {
    pub name: String,
    pub role: String,
    pub replica: u32,
    /// The live process, if any.
    pub pid: Option<u32>,
    /// Its start time (`/proc/<pid>/stat` field 22): with the pid, names the process for good.
    pub pid_start: Option<u64>,
    pub state: ChildState,
    /// Restarts so far, charged to a task or not.
    pub restarts: u32,
    pub last_exit: Option<ExitReason>,
    /// When the current state began (RFC 3339).
    pub since: String,
    /// In `backoff`: when the next start is due.
    pub next_restart_at: Option<String>,
}

impl ChildStatus {
    fn new(spec: &ChildSpec) -> ChildStatus {
        ChildStatus {
            name: spec.name.clone(),
            role: spec.role.clone(),
            replica: spec.replica,
            pid: None,
            pid_start: None,
            state: ChildState::Starting,
            restarts: 0,
            last_exit: None,
            since: clock::now_rfc3339(),
            next_restart_at: None,
        }
    }

    /// The live process this status names, if it still runs.
    fn live_process(&self) -> Option<(u32, u64)> {
        let (pid, start) = (self.pid?, self.pid_start?);
        process::running(pid, start).then_some((pid, start))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorState {
    Running,
    Stopping,
    Stopped,
}

/// The supervisor process, as recorded in `status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorInfo {
    pub pid: u32,
    pub pid_start: u64,
    pub boot_id: String,
    pub state: SupervisorState,
    pub started_at: String,
    pub updated_at: String,
}

impl SupervisorInfo {
    /// Whether the process this names still runs as a supervisor (same pid, start time, boot).
    fn alive(&self) -> bool {
        self.state != SupervisorState::Stopped
            && process::alive(self.pid, self.pid_start, &self.boot_id)
    }
}

/// `WORKSPACE/.orchestrate/swarm/status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusFile {
    pub format_version: u32,
    pub supervisor: SupervisorInfo,
    pub children: Vec<ChildStatus>,
    /// When the supervisor last looked at `agents/` again (a reload).
    #[serde(default)]
    pub reloaded_at: Option<String>,
    /// Roles the last reload could not start.
    #[serde(default)]
    pub problems: Vec<RoleProblem>,
}

/// What [`supervise`] returns once everything is stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every replica's final status (`stopped` or `failed`).
    pub children: Vec<ChildStatus>,
    /// Whether the `kill` token ended it (SIGKILL without grace).
    pub killed: bool,
}

/// The swarm as a whole, for `swarm status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwarmState {
    Running,
    Stopping,
    Down,
}

/// Queue load of one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleLoad {
    pub role: String,
    /// Task files waiting in the inbox.
    pub queued: usize,
    /// Tasks claimed and in flight.
    pub running: usize,
    /// Set while the role is paused (`orchestrate pause`): it claims nothing new.
    pub paused: Option<crate::control::Pause>,
    /// Breakers of runtimes its workflow uses that are open or half-open: it claims nothing new
    /// while one is open.
    pub breakers: Vec<BreakerView>,
    /// Inbox entries no role process takes (another extension, a `.tmp` file, a directory).
    pub ignored: Vec<queue::InboxEntry>,
    /// Task files in the inbox that a process still has open for writing (counted in `queued`).
    pub being_written: Vec<queue::InboxEntry>,
    /// The workflow versions (`workflow_hash`) its live role processes run new tasks on.
    pub workflow_hashes: Vec<String>,
    /// Set when its processes refused an edit of the role's files: the first problem
    /// (`file:line:column: message`); they keep running the previous version.
    pub reload_error: Option<String>,
    /// Set when a running supervisor has no process for the role, and why.
    pub not_started: Option<String>,
}

/// A breaker that is not closed, as `swarm status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerView {
    pub runtime: String,
    /// `open` or `half_open`.
    pub state: crate::breaker::Phase,
    pub class: Option<String>,
    pub consecutive: u32,
    /// When an open breaker half-opens.
    pub until: Option<String>,
    /// "breaker open for claude: 5 consecutive rate_limit failures; half-opens at ...".
    pub message: String,
}

/// `swarm status`: the supervisor's view plus live queue numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwarmStatus {
    pub workspace: String,
    pub state: SwarmState,
    /// The running supervisor; `None` when the state is `down`.
    pub supervisor: Option<SupervisorInfo>,
    /// The replicas; when down, only the orphaned ones still alive.
    pub children: Vec<ChildStatus>,
    pub roles: Vec<RoleLoad>,
}

impl SwarmStatus {
    /// Whether a running supervisor has every replica either running or failed: what `swarm up
    /// -d` waits for.
    pub fn settled(&self) -> bool {
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

/// What [`down`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DownReport {
    /// The supervisor's pid.
    pub pid: u32,
    /// `SIGTERM` (graceful) or `SIGKILL` (forced, or a second `down`).
    pub signal: &'static str,
    /// Whether the supervisor was gone before the timeout.
    pub exited: bool,
    pub waited_ms: u64,
    /// Replica processes killed directly (forced stop only).
    pub killed_children: Vec<u32>,
}

// ---------------------------------------------------------------------------------------------
// supervise

/// Runs the supervisor in the foreground until `stop` is cancelled (graceful: SIGTERM to every
/// replica's group, `policy.grace`, then SIGKILL) or `kill` is cancelled (SIGKILL at once), then
/// returns once every replica is gone.
///
/// Refuses to start when another supervisor holds `WORKSPACE/.orchestrate/swarm/supervisor.lock`
/// (the error names its pid). Replicas left alive by a supervisor that died are stopped first.
/// Makes this process a child subreaper for good (a process attribute that cannot be scoped).
pub async fn supervise(
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

/// [`supervise`], with a roster asked again on SIGHUP and when `agents/` changes: replicas it
/// adds are started, replicas it drops are stopped gracefully, and every running replica is
/// sent SIGHUP (a role process then looks at its files again).
pub async fn supervise_with(
    workspace: &Path,
    children: Vec<ChildSpec>,
    policy: Policy,
    charge_to_task: ChargeToTask,
    (stop, kill): (CancellationToken, CancellationToken),
    roster: Option<Roster>,
) -> Result<Report, SupervisorError> {
    let dir = swarm_dir(workspace);
    fs::create_dir_all(&dir).map_err(SupervisorError::io_err("create", &dir))?;
    let _lock = take_lock(workspace)?;
    process::become_subreaper().map_err(SupervisorError::io_err(
        "become a child subreaper in",
        workspace,
    ))?;
    let events_file = events_path(workspace);
    let mut events = EventLog::open(&events_file, Vec::new())
        .map_err(SupervisorError::io_err("open", &events_file))?;
    stop_leftovers(workspace, policy.grace, &mut events).await;

    let me = queue::Owner::current();
    let now = clock::now_rfc3339();
    let mut file = StatusFile {
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
    };
    // A supervisor that nobody can see or stop is worse than none: the first write must work.
    let status_file = status_path(workspace);
    write_status(&status_file, &file).map_err(SupervisorError::io_err("write", &status_file))?;
    let mut records = Records {
        status_path: status_file,
        events,
    };
    records.event(
        "supervisor_started",
        json!({"pid": file.supervisor.pid, "children": file.children.len()}),
    );

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut actors = JoinSet::new();
    // Each replica's own stop token (under `stop`), by name: a reload stops one alone.
    let mut tokens: std::collections::HashMap<String, CancellationToken> = Default::default();
    let start =
        |spec: ChildSpec,
         actors: &mut JoinSet<String>,
         tokens: &mut std::collections::HashMap<String, CancellationToken>| {
            let token = stop.child_token();
            tokens.insert(spec.name.clone(), token.clone());
            let name = spec.name.clone();
            let actor = Actor {
                status: ChildStatus::new(&spec),
                spec,
                policy,
                cwd: workspace.to_path_buf(),
                charge: charge_to_task.clone(),
                stop: token,
                kill: kill.clone(),
                tx: tx.clone(),
                backoff: policy.initial_backoff,
                recent: VecDeque::new(),
            };
            actors.spawn(async move {
                actor.run().await;
                name
            });
        };
    for spec in children {
        start(spec, &mut actors, &mut tokens);
    }
    // Replicas being stopped because their role (or replica) is gone: dropped from the status
    // once stopped.
    let mut removing: Vec<String> = Vec::new();
    let mut agents = agents_stamp(workspace);
    let mut hangup = signal(SignalKind::hangup()).ok();

    let mut sigchld = signal(SignalKind::child()).ok();
    let mut tick = tokio::time::interval(REAP_INTERVAL);
    let (mut stopping, mut killed) = (false, false);
    while !(stopping && actors.is_empty()) {
        let mut reload = false;
        tokio::select! {
            Some(update) = rx.recv() => {
                records.apply(&mut file, update);
                // Coalesce a burst (many replicas starting) into one status write.
                while let Ok(update) = rx.try_recv() {
                    records.apply(&mut file, update);
                }
                records.write(&mut file);
            },
            Some(joined) = actors.join_next() => {
                // Its last update was sent before it ended.
                while let Ok(update) = rx.try_recv() {
                    records.apply(&mut file, update);
                }
                if let Ok(name) = joined {
                    tokens.remove(&name);
                    if removing.contains(&name) {
                        removing.retain(|n| *n != name);
                        file.children.retain(|c| c.name != name);
                    }
                }
                records.write(&mut file);
            },
            Some(()) = next_sigchld(&mut hangup), if !stopping => reload = true,
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                file.supervisor.state = SupervisorState::Stopping;
                records.event("supervisor_stopping", json!({"grace_ms": millis(policy.grace)}));
                records.write(&mut file);
            }
            () = kill.cancelled(), if !killed => {
                stopping = true;
                killed = true;
                file.supervisor.state = SupervisorState::Stopping;
                records.event("supervisor_killing", json!({}));
                records.write(&mut file);
            }
            Some(()) = next_sigchld(&mut sigchld) => reap_orphans(),
            _ = tick.tick() => {
                reap_orphans();
                let now = agents_stamp(workspace);
                if now != agents && !stopping && roster.is_some() {
                    agents = now;
                    reload = true;
                }
            }
        }
        if reload {
            agents = agents_stamp(workspace);
            let Some(roster) = &roster else {
                // Without a roster, the replicas are told alone.
                hang_up(&file.children);
                continue;
            };
            let (specs, problems) = roster();
            let mut added = Vec::new();
            let mut removed = Vec::new();
            for spec in specs.iter() {
                if !tokens.contains_key(&spec.name) {
                    added.push(spec.name.clone());
                    file.children.push(ChildStatus::new(spec));
                    start(spec.clone(), &mut actors, &mut tokens);
                }
            }
            for (name, token) in &tokens {
                let role = name.rsplit_once('#').map_or(name.as_str(), |(r, _)| r);
                let kept = specs.iter().any(|s| s.name == *name)
                    || problems.iter().any(|p| p.role == role);
                if !kept && !removing.contains(name) {
                    removed.push(name.clone());
                    removing.push(name.clone());
                    token.cancel();
                }
            }
            hang_up(
                &file
                    .children
                    .iter()
                    .filter(|c| !added.contains(&c.name) && !removing.contains(&c.name))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            records.event(
                "reloaded",
                json!({"added": added, "removed": removed, "problems": problems}),
            );
            file.problems = problems;
            file.reloaded_at = Some(clock::now_rfc3339());
            records.write(&mut file);
        }
    }
    // Every actor has sent its last update; joining only collects the finished tasks.
    while actors.join_next().await.is_some() {}
    reap_orphans();
    file.supervisor.state = SupervisorState::Stopped;
    records.event("supervisor_stopped", json!({"killed": killed}));
    records.write(&mut file);
    Ok(Report {
        children: file.children,
        killed,
    })
}

/// SIGHUP to every replica that reported ready (before that it may not handle it yet): each
/// looks at its role's files again.
fn hang_up(children: &[ChildStatus]) {
    for child in children {
        if child.state == ChildState::Running
            && let Some((pid, _)) = child.live_process()
        {
            signal_child(pid, libc::SIGHUP);
        }
    }
}

/// Names, sizes and modification times of `agents/*.yaml`: a role file added, removed or
/// edited changes it.
fn agents_stamp(workspace: &Path) -> Vec<(std::ffi::OsString, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut stamp: Vec<_> = fs::read_dir(role::agents_dir(workspace))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.file_name(), meta.len(), meta.mtime(), meta.mtime_nsec()))
        })
        .collect();
    stamp.sort();
    stamp
}

async fn next_sigchld(sigchld: &mut Option<Signal>) -> Option<()> {
    match sigchld {
        Some(sigchld) => sigchld.recv().await,
        // Without a SIGCHLD stream the interval alone drives the reaper.
        None => std::future::pending().await,
    }
}

/// Takes the workspace's supervisor lock, or says who holds it. Held while the file is open.
fn take_lock(workspace: &Path) -> Result<File, SupervisorError> {
    let path = lock_path(workspace);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(SupervisorError::io_err("open", &path))?;
    match file.try_lock() {
        Ok(()) => {
            // Who holds it, for the error of a second supervisor; the status file is the record.
            let me = queue::Owner::current();
            file.set_len(0)
                .map_err(SupervisorError::io_err("write", &path))?;
            writeln!(file, "{} {}", me.pid, me.pid_start)
                .map_err(SupervisorError::io_err("write", &path))?;
            Ok(file)
        }
        Err(fs::TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse().ok());
            Err(SupervisorError::AlreadyRunning {
                workspace: workspace.to_path_buf(),
                pid,
            })
        }
        Err(fs::TryLockError::Error(source)) => Err(SupervisorError::Io {
            action: "lock",
            path,
            source,
        }),
    }
}

/// Stops the replicas of a previous supervisor that died without stopping them (SIGKILLed,
/// machine-level OOM): they would otherwise run next to the new ones, unsupervised.
async fn stop_leftovers(workspace: &Path, grace: Duration, events: &mut EventLog) {
    let Ok(Some(old)) = read_status_file(workspace) else {
        return;
    };
    if old.supervisor.boot_id != process::boot_id() {
        return;
    }
    let live: Vec<(String, u32, u64)> = old
        .children
        .iter()
        .filter_map(|c| {
            let (pid, start) = c.live_process()?;
            Some((c.name.clone(), pid, start))
        })
        .collect();
    if live.is_empty() {
        return;
    }
    // Found while the replicas are verified alive; killed once they are gone.
    let steps: Vec<_> = live
        .iter()
        .filter_map(|(_, pid, _)| orchestrate_base::cgroup::StepsOf::find(*pid))
        .collect();
    for (name, pid, _) in &live {
        kill_group(pgid(*pid), libc::SIGTERM);
        let _ = events.append(
            "leftover_stopping",
            json!({"child": name, "pid": pid, "previous_supervisor": old.supervisor.pid}),
            false,
        );
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && live
            .iter()
            .any(|(_, pid, start)| process::running(*pid, *start))
    {
        tokio::time::sleep(POLL).await;
    }
    for (_, pid, start) in &live {
        // Verified just before: the leader lives, so its group and session ids are its own.
        if process::running(*pid, *start) {
            kill_group(pgid(*pid), libc::SIGKILL);
            process::kill_session(*pid, libc::SIGKILL);
        }
    }
    for steps in steps {
        steps.kill();
    }
}

/// The records the supervisor loop writes: the status file and the event log.
struct Records {
    status_path: PathBuf,
    events: EventLog,
}

impl Records {
    fn apply(&mut self, file: &mut StatusFile, update: Update) {
        let Update { status, event } = update;
        if let Some((name, fields)) = event {
            log_change(name, &status, &fields);
            let mut record = json!({
                "child": status.name,
                "role": status.role,
                "replica": status.replica,
                "state": status.state,
            });
            if let (Value::Object(record), Value::Object(extra)) = (&mut record, fields) {
                record.extend(extra);
            }
            self.event(name, record);
        }
        if let Some(slot) = file.children.iter_mut().find(|c| c.name == status.name) {
            *slot = status;
        }
    }

    /// Appends an event line. A failure is reported, not fatal: the swarm keeps its workers
    /// running even when the disk is full, and the status file says where things stand.
    fn event(&mut self, name: &str, fields: Value) {
        if let Err(err) = self.events.append(name, fields, false) {
            tracing::warn!(
                path = %self.events.path().display(),
                event = %name,
                "failed to append to {}: {err}",
                self.events.path().display()
            );
        }
    }

    fn write(&mut self, file: &mut StatusFile) {
        file.supervisor.updated_at = clock::now_rfc3339();
        if let Err(err) = write_status(&self.status_path, file) {
            tracing::warn!(
                path = %self.status_path.display(),
                "failed to write {}: {err}",
                self.status_path.display()
            );
        }
    }
}

/// A replica's change as a log event of the supervisor: a restart is a warning, giving up on a
/// replica an error, the rest debug (the event log is the record; this is for whoever follows
/// the supervisor's stderr).
fn log_change(name: &str, status: &ChildStatus, fields: &Value) {
    macro_rules! at {
        ($level:expr) => {
            tracing::event!(
                $level,
                child = %status.name,
                role = %status.role,
                replica = status.replica,
                pid = status.pid,
                state = %status.state.as_str(),
                restarts = status.restarts,
                fields = %fields,
                "{}: {name}",
                status.name
            )
        };
    }
    match name {
        "restarting" => at!(tracing::Level::WARN),
        "failed" => at!(tracing::Level::ERROR),
        _ => at!(tracing::Level::DEBUG),
    }
}

fn write_status(path: &Path, file: &StatusFile) -> io::Result<()> {
    json_file::write(path, file, true)
}

/// `Ok(None)` when no supervisor ever ran in the workspace.
fn read_status_file(workspace: &Path) -> Result<Option<StatusFile>, SupervisorError> {
    let path = status_path(workspace);
    match json_file::read(&path, STATUS_FORMAT) {
        Ok(file) => Ok(Some(file)),
        Err(json_file::ReadError::Io(err)) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(json_file::ReadError::Io(source)) => Err(SupervisorError::Io {
            action: "read",
            path,
            source,
        }),
        Err(json_file::ReadError::Corrupt(err)) => Err(SupervisorError::Corrupt {
            path,
            message: err.to_string(),
        }),
        Err(json_file::ReadError::TooNew(version)) => {
            Err(SupervisorError::TooNew { path, version })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One replica: the actor

/// A state change (with its event, if it is one) sent from an actor to the supervisor loop.
struct Update {
    status: ChildStatus,
    event: Option<(&'static str, Value)>,
}

/// Why the watch over one process ended.
enum End {
    Exited,
    NotReady,
    Stop,
    Kill,
}

/// How one process of a replica went.
struct Ended {
    reason: ExitReason,
    /// Whether we asked it to stop (then it is not restarted).
    asked: bool,
    /// How long it ran after reporting ready.
    healthy: Duration,
    pid: Option<u32>,
}

struct Actor {
    spec: ChildSpec,
    status: ChildStatus,
    policy: Policy,
    cwd: PathBuf,
    charge: ChargeToTask,
    stop: CancellationToken,
    kill: CancellationToken,
    tx: mpsc::UnboundedSender<Update>,
    /// The next restart delay, before jitter.
    backoff: Duration,
    /// Restarts counted against the intensity limit, oldest first.
    recent: VecDeque<Instant>,
}

impl Actor {
    async fn run(mut self) {
        loop {
            // No new spawns once a stop was asked for.
            if self.stop.is_cancelled() || self.kill.is_cancelled() {
                self.status.next_restart_at = None;
                self.change(ChildState::Stopped, "stopped", json!({}));
                return;
            }
            let ended = match Proc::spawn(&self.spec, &self.cwd) {
                Ok(proc) => self.watch(proc).await,
                Err(message) => Ended {
                    reason: ExitReason::SpawnFailed { message },
                    asked: false,
                    healthy: Duration::ZERO,
                    pid: None,
                },
            };
            self.status.last_exit = Some(ended.reason.clone());
            self.status.pid = None;
            self.status.pid_start = None;
            self.send(Some((
                "exited",
                json!({"pid": ended.pid, "exit": ended.reason, "asked": ended.asked}),
            )));
            if ended.asked {
                self.change(ChildState::Stopped, "stopped", json!({}));
                return;
            }
            if !self.back_off(ended).await {
                return;
            }
        }
    }

    /// Sets the state and reports it with its event.
    fn change(&mut self, state: ChildState, event: &'static str, fields: Value) {
        self.status.state = state;
        self.status.since = clock::now_rfc3339();
        self.send(Some((event, fields)));
    }

    fn send(&self, event: Option<(&'static str, Value)>) {
        // The supervisor loop receives until every actor has ended, so this cannot fail while
        // it matters; if the loop is gone (its future dropped), there is nobody left to tell.
        let _ = self.tx.send(Update {
            status: self.status.clone(),
            event,
        });
    }

    /// Watches one process from spawn until it is reaped.
    async fn watch(&mut self, mut proc: Proc) -> Ended {
        let pid = proc.pid;
        self.status.pid = Some(pid);
        self.status.pid_start = process::start_time(pid);
        self.status.next_restart_at = None;
        self.change(ChildState::Starting, "spawned", json!({"pid": pid}));
        let ready_by = tokio::time::Instant::now() + self.policy.ready_timeout;
        let mut running_since: Option<Instant> = None;
        let end = loop {
            tokio::select! {
                // An exit racing with a stop counts as asked for: nothing is restarted then.
                biased;
                () = self.kill.cancelled() => break End::Kill,
                () = self.stop.cancelled() => break End::Stop,
                () = exited(proc.exit.as_ref(), pid) => break End::Exited,
                ready = proc.ready.wait(), if running_since.is_none() => {
                    if ready {
                        running_since = Some(Instant::now());
                        self.change(ChildState::Running, "ready", json!({"pid": pid}));
                    }
                }
                () = tokio::time::sleep_until(ready_by), if running_since.is_none() => {
                    break End::NotReady;
                }
            }
        };
        let mut reason = None;
        let asked = matches!(end, End::Stop | End::Kill);
        match end {
            End::Exited => {}
            End::NotReady => {
                signal_child(pid, libc::SIGKILL);
                exited(proc.exit.as_ref(), pid).await;
                reason = Some(ExitReason::NotReady {
                    timeout_ms: millis(self.policy.ready_timeout),
                });
            }
            End::Stop => {
                self.change(
                    ChildState::Stopping,
                    "stopping",
                    json!({"pid": pid, "signal": "SIGTERM", "grace_ms": millis(self.policy.grace)}),
                );
                signal_child(pid, libc::SIGTERM);
                let done = tokio::select! {
                    biased;
                    () = exited(proc.exit.as_ref(), pid) => true,
                    () = self.kill.cancelled() => false,
                    () = tokio::time::sleep(self.policy.grace) => false,
                };
                if !done {
                    signal_child(pid, libc::SIGKILL);
                    exited(proc.exit.as_ref(), pid).await;
                }
            }
            End::Kill => {
                self.change(
                    ChildState::Stopping,
                    "stopping",
                    json!({"pid": pid, "signal": "SIGKILL"}),
                );
                signal_child(pid, libc::SIGKILL);
                exited(proc.exit.as_ref(), pid).await;
            }
        }
        // Sweep what the process left in its group (and, when stopping, anywhere in its
        // session) before reaping it: until then its pid, hence both ids, cannot be reused.
        // Unasked deaths keep the session: a step still running holds its task's lock, and the
        // queue's recovery decides about that task.
        kill_group(pgid(pid), libc::SIGKILL);
        if asked {
            process::kill_session(pid, libc::SIGKILL);
            // Steps that left the session too (`setsid`, daemons): their cgroups.
            if let Some(steps) = orchestrate_base::cgroup::StepsOf::find(pid) {
                steps.kill();
            }
        }
        let status = proc.reap();
        Ended {
            reason: reason.unwrap_or(status),
            asked,
            healthy: running_since.map(|t| t.elapsed()).unwrap_or_default(),
            pid: Some(pid),
        }
    }

    /// After a death nobody asked for: waits out the backoff (true: start again), or marks the
    /// replica failed (false).
    async fn back_off(&mut self, ended: Ended) -> bool {
        if ended.healthy >= self.policy.reset_after {
            self.backoff = self.policy.initial_backoff;
        }
        let charged = match ended.pid {
            Some(pid) if ended.reason.is_own_death() => (self.charge)(&self.spec.role, pid),
            _ => false,
        };
        let now = Instant::now();
        let delay = if charged {
            // The task's attempts pay for this death; the replica is not at fault.
            Duration::ZERO
        } else {
            while self
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.policy.within)
            {
                self.recent.pop_front();
            }
            if self.recent.len() >= usize::try_from(self.policy.max_restarts).unwrap_or(usize::MAX)
            {
                self.change(
                    ChildState::Failed,
                    "failed",
                    json!({
                        "exit": ended.reason,
                        "restarts_within": self.recent.len(),
                        "within_ms": millis(self.policy.within),
                    }),
                );
                return false;
            }
            self.recent.push_back(now);
            let delay = jittered(self.backoff, random_u32());
            self.backoff = self.backoff.saturating_mul(2).min(self.policy.max_backoff);
            delay
        };
        self.status.restarts = self.status.restarts.saturating_add(1);
        self.status.next_restart_at = Some(clock_in(delay));
        self.change(
            ChildState::Backoff,
            "restarting",
            json!({"delay_ms": millis(delay), "charged_to_task": charged, "restarts": self.status.restarts}),
        );
        tokio::select! {
            biased;
            () = self.kill.cancelled() => {}
            () = self.stop.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
        true
    }
}

/// `d` scaled by a factor in [0.8, 1.2] drawn from `random`, so replicas that died together do
/// not restart in lockstep.
fn jittered(d: Duration, random: u32) -> Duration {
    let factor = 0.8 + 0.4 * (f64::from(random) / f64::from(u32::MAX));
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(d)
}

fn random_u32() -> u32 {
    // Jitter needs spread, not secrecy.
    u32::from_le_bytes(orchestrate_base::ids::random_bytes())
}

fn clock_in(delay: Duration) -> String {
    let at =
        chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Pids of the children that supervisors in this process manage; the orphan reaper leaves them
/// alone. Spawning a managed child, reaping one and the reaper's scan all hold this lock, so a
/// status is never reaped by the wrong party, even when a pid is reused at once.
static MANAGED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn managed() -> MutexGuard<'static, Vec<u32>> {
    // Nothing panics while holding it; if something did, the list is still consistent.
    MANAGED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One running process of a replica.
struct Proc {
    child: std::process::Child,
    pid: u32,
    /// Readable once the process has exited (and before it is reaped).
    exit: Option<AsyncFd<OwnedFd>>,
    ready: ReadyPipe,
    reaped: bool,
}

impl Proc {
    fn spawn(spec: &ChildSpec, cwd: &Path) -> Result<Proc, String> {
        let Some((program, args)) = spec.argv.split_first() else {
            return Err("cannot run an empty command line".to_string());
        };
        let (read_end, write_end) =
            ready_pipe().map_err(|e| format!("failed to create the ready pipe: {e}"))?;
        let write_fd = write_end.as_raw_fd();
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env(READY_FD_ENV, write_fd.to_string())
            .current_dir(cwd)
            .stdin(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and calls only setsid(2) and
        // fcntl(2), which are async-signal-safe; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                // A new session, hence a new process group led by the child.
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                // The write end is the one descriptor of ours the child keeps across exec.
                if libc::fcntl(write_fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = {
            let mut managed = managed();
            let child = command
                .spawn()
                .map_err(|e| format!("failed to start `{program}`: {e}"))?;
            managed.push(child.id());
            child
        };
        // Only the child holds the write end now.
        drop(write_end);
        let pid = child.id();
        Ok(Proc {
            child,
            pid,
            exit: process::exit_watch(pid),
            ready: ReadyPipe::new(read_end),
            reaped: false,
        })
    }

    /// Reaps the exited process. Call only once [`exited`] has returned. Never blocks (the
    /// registry lock is held): a process that somehow still runs is left to `Drop`, which kills
    /// it and hands it to the orphan reaper.
    fn reap(&mut self) -> ExitReason {
        let mut managed = managed();
        let status = match self.child.try_wait() {
            Ok(Some(status)) => ExitReason::of(status),
            Ok(None) => {
                return ExitReason::Lost {
                    message: format!("pid {} was reported exited but still runs", self.pid),
                };
            }
            Err(err) => ExitReason::Lost {
                message: format!("failed to wait for pid {}: {err}", self.pid),
            },
        };
        self.reaped = true;
        managed.retain(|&pid| pid != self.pid);
        status
    }
}

impl Drop for Proc {
    /// If the actor is dropped mid-watch (the supervisor's future was dropped), the replica must
    /// not live on unsupervised; the zombie is left to the orphan reaper.
    fn drop(&mut self) {
        if !self.reaped {
            signal_child(self.pid, libc::SIGKILL);
            managed().retain(|&pid| pid != self.pid);
        }
    }
}

/// A close-on-exec pipe whose ends are above the standard descriptors (so that setting up the
/// child's stdio cannot clobber the write end).
fn ready_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((above_stdio(read_end)?, above_stdio(write_end)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
}

/// The read end of a replica's ready pipe.
struct ReadyPipe {
    rx: Option<pipe::Receiver>,
    buf: Vec<u8>,
}

impl ReadyPipe {
    fn new(fd: OwnedFd) -> ReadyPipe {
        ReadyPipe {
            // Without it the replica can never report ready and the ready timeout restarts it,
            // which is loud enough for a failure that needs a broken kernel.
            rx: pipe::Receiver::from_owned_fd(fd).ok(),
            buf: Vec::new(),
        }
    }

    /// True once a `ready` line arrived; false (once) when the pipe closed without one, after
    /// which it never resolves. Cancel-safe: partial lines are kept in `buf`.
    async fn wait(&mut self) -> bool {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if line.trim_ascii() == READY_LINE {
                    return true;
                }
                continue;
            }
            if self.buf.len() > MAX_READY_LINE {
                self.buf.clear();
            }
            let Some(rx) = self.rx.as_mut() else {
                return std::future::pending().await;
            };
            let mut chunk = [0u8; 256];
            match rx.read(&mut chunk).await {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => {
                    self.rx = None;
                    return false;
                }
            }
        }
    }
}

/// Returns once `pid` (our unreaped child) has exited, without reaping it.
async fn exited(pidfd: Option<&AsyncFd<OwnedFd>>, pid: u32) {
    // Readiness is not cleared: an exited child stays exited, so a second wait returns at once.
    if let Some(fd) = pidfd
        && fd.readable().await.is_ok()
    {
        return;
    }
    while !process::exited_unreaped(pid) {
        tokio::time::sleep(POLL).await;
    }
}

fn pgid(pid: u32) -> i32 {
    // 0 makes kill_group a no-op; a pid always fits.
    i32::try_from(pid).unwrap_or(0)
}

/// Signals an unreaped child's group, and the child itself in case it left the group.
///
/// One signal per process: a role process counts signals (the second SIGTERM means "stop now"),
/// so a leader still in its group must not get the group's signal and its own.
fn signal_child(pid: u32, signal: i32) {
    kill_group(pgid(pid), signal);
    if process::group_of(pid) != Some(pgid(pid)) {
        let _ = process::kill(pid, signal);
    }
}

/// Reaps every exited orphan that was reparented to this process (a subreaper).
///
/// An orphan of the swarm is in a replica's session; children that other code in this process
/// spawned are in our own session and are left to whoever waits for them, as are the managed
/// replicas (their actors reap them).
fn reap_orphans() {
    let own_session = process::own_session();
    let managed = managed();
    for pid in process::children_of_self() {
        if managed.contains(&pid) {
            continue;
        }
        let Some(stat) = process::stat(pid) else {
            continue;
        };
        if stat.state != 'Z' || stat.session == own_session {
            continue;
        }
        // An exited child that no other code waits for (not managed, not in our session).
        let _ = process::try_reap(pid);
    }
}

// ---------------------------------------------------------------------------------------------
// status, down, detach

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

/// A readable table of the swarm: one row per replica (and per role without one).
pub fn render_status(status: &SwarmStatus) -> String {
    let mut out = String::new();
    let now = chrono::Utc::now();
    let ago = |when: &str| -> String {
        chrono::DateTime::parse_from_rfc3339(when)
            .ok()
            .and_then(|t| now.signed_duration_since(t).to_std().ok())
            .map_or_else(|| "-".to_string(), human::duration)
    };
    match (&status.supervisor, status.state) {
        (Some(sup), state) => {
            let running = status
                .children
                .iter()
                .filter(|c| c.state == ChildState::Running)
                .count();
            let failed = status
                .children
                .iter()
                .filter(|c| c.state == ChildState::Failed)
                .count();
            let what = if state == SwarmState::Stopping {
                "stopping"
            } else {
                "running"
            };
            out.push_str(&format!(
                "supervisor pid {} {what}, up {} (since {}), in {}\n{} of {} replicas running, {} failed\n",
                sup.pid,
                ago(&sup.started_at),
                sup.started_at,
                status.workspace,
                running,
                status.children.len(),
                failed
            ));
        }
        (None, _) => {
            out.push_str(&format!(
                "no supervisor is running in {}\n",
                status.workspace
            ));
            if !status.children.is_empty() {
                out.push_str("role processes no supervisor runs (orphaned: their supervisor died, they stop once their tasks finish and the next `swarm up` stops any left; unsupervised: started with `orchestrate agent`):\n");
            }
        }
    }
    let load = |role: &str| status.roles.iter().find(|l| l.role == role);
    let counts = |role: &str| {
        load(role).map_or(("-".to_string(), "-".to_string()), |l| {
            (l.queued.to_string(), l.running.to_string())
        })
    };
    let mut rows: Vec<[String; 9]> = vec![
        [
            "ROLE",
            "REPLICA",
            "PID",
            "STATE",
            "RESTARTS",
            "SINCE",
            "QUEUED",
            "RUNNING",
            "LAST EXIT",
        ]
        .map(String::from),
    ];
    for child in &status.children {
        let (queued, running) = counts(&child.role);
        let mut state = child.state.as_str().to_string();
        if let Some(at) = child.next_restart_at.as_deref()
            && child.state == ChildState::Backoff
        {
            let left = chrono::DateTime::parse_from_rfc3339(at)
                .ok()
                .and_then(|t| t.signed_duration_since(now).to_std().ok())
                .unwrap_or_default();
            state = format!("backoff (restart in {})", human::duration(left));
        }
        rows.push([
            child.role.clone(),
            child.replica.to_string(),
            child.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            state,
            child.restarts.to_string(),
            ago(&child.since),
            queued,
            running,
            child
                .last_exit
                .as_ref()
                .map_or_else(|| "-".to_string(), ToString::to_string),
        ]);
    }
    for load in &status.roles {
        if status.children.iter().any(|c| c.role == load.role) {
            continue;
        }
        let dash = || "-".to_string();
        rows.push([
            load.role.clone(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            load.queued.to_string(),
            load.running.to_string(),
            dash(),
        ]);
    }
    if rows.len() == 1 {
        out.push_str("no roles (add agents/<role>.yaml)\n");
        return out;
    }
    // A held role says so in its STATE cell; the reason follows the table.
    for row in rows.iter_mut().skip(1) {
        if let Some(load) = load(&row[0]) {
            let held = if load.paused.is_some() {
                Some("paused")
            } else if load
                .breakers
                .iter()
                .any(|b| b.state == crate::breaker::Phase::Open)
            {
                Some("held")
            } else {
                None
            };
            if let Some(held) = held {
                row[3] = if row[3] == "-" {
                    held.to_string()
                } else {
                    format!("{}, {held}", row[3])
                };
            }
        }
    }
    let mut notes: Vec<String> = Vec::new();
    for load in &status.roles {
        if let Some(p) = &load.paused {
            notes.push(format!(
                "role {} paused since {} ({} ago) by {}: claims nothing new; `orchestrate resume {}` lifts it",
                load.role,
                p.since,
                ago(&p.since),
                p.by,
                load.role
            ));
        }
        if let Some(error) = &load.reload_error {
            let running = load
                .workflow_hashes
                .iter()
                .map(|h| &h[..h.len().min(12)])
                .collect::<Vec<_>>()
                .join(", ");
            notes.push(format!(
                "role {}: an edit was refused, its processes keep running the previous version (workflow {running}): {error}; fix the file (it is picked up before the next claim, or at `orchestrate swarm reload`)",
                load.role
            ));
        }
        if let Some(why) = &load.not_started {
            notes.push(format!("role {} has no role process: {why}", load.role));
        }
        for b in &load.breakers {
            let note = format!("{} (roles using it do not claim)", b.message);
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        notes.extend(inbox_notes(load));
    }
    let (head, body) = rows.split_first().expect("the header row");
    let headers: Vec<&str> = head.iter().map(String::as_str).collect();
    out.push_str(&human::table(&headers, "lllllllll", body));
    for note in notes {
        out.push_str(&note);
        out.push('\n');
    }
    out
}

/// At most this many inbox entries are named per role and kind under `swarm status`'s table.
const INBOX_NOTES: usize = 5;

/// Lines under the table for a role's inbox entries that wait or are ignored, and why.
fn inbox_notes(load: &RoleLoad) -> Vec<String> {
    let mut notes = Vec::new();
    for (what, entries) in [("", &load.being_written), ("ignored: ", &load.ignored)] {
        for entry in entries.iter().take(INBOX_NOTES) {
            notes.push(format!(
                "role {}: {}: {what}{}",
                load.role, entry.path, entry.reason
            ));
        }
        if entries.len() > INBOX_NOTES {
            let state = if what.is_empty() { "queued" } else { "ignored" };
            notes.push(format!(
                "role {}: {} more (`orchestrate tasks {} --state {state}` lists them)",
                load.role,
                entries.len() - INBOX_NOTES,
                load.role
            ));
        }
    }
    notes
}

/// `swarm down`: SIGTERM to the running supervisor (verified by its pid start time), then waits
/// up to `timeout` for it to exit. With `force`, or when the supervisor is already stopping (a
/// second `down`), SIGKILL to it, then SIGKILL to the groups and sessions of the replicas it
/// leaves behind.
pub fn down(
    workspace: &Path,
    timeout: Duration,
    force: bool,
) -> Result<DownReport, SupervisorError> {
    let not_running = || SupervisorError::NotRunning {
        workspace: workspace.to_path_buf(),
    };
    let Some(file) = read_status_file(workspace)? else {
        return Err(not_running());
    };
    let sup = file.supervisor;
    if !sup.alive() {
        return Err(not_running());
    }
    let escalate = force || sup.state == SupervisorState::Stopping;
    let (signal, name) = if escalate {
        (libc::SIGKILL, "SIGKILL")
    } else {
        (libc::SIGTERM, "SIGTERM")
    };
    let start = Instant::now();
    // Checked just above: `pid` is the supervisor, started at `pid_start`.
    if sup.pid > 1
        && let Err(err) = process::kill(sup.pid, signal)
        // ESRCH: it exited in between, which is what we want.
        && err.raw_os_error() != Some(libc::ESRCH)
    {
        return Err(SupervisorError::Signal {
            pid: sup.pid,
            source: err,
        });
    }
    let exited = wait_while(timeout, || process::running(sup.pid, sup.pid_start));
    let mut killed_children = Vec::new();
    if escalate {
        // Read after the supervisor is gone: the file names the replicas as it left them.
        let children = read_status_file(workspace)
            .ok()
            .flatten()
            .map(|f| f.children)
            .unwrap_or(file.children);
        for child in &children {
            if let Some((pid, _)) = child.live_process() {
                kill_replica(pid);
                killed_children.push(pid);
            }
        }
    }
    Ok(DownReport {
        pid: sup.pid,
        signal: name,
        exited,
        waited_ms: millis(start.elapsed()),
        killed_children,
    })
}

/// SIGKILL to a replica's process group and session, then to its steps' cgroups. Call only
/// while `pid` is verified to be the replica (`ChildStatus::live_process`).
fn kill_replica(pid: u32) {
    // Found while `pid` is the replica; its steps that left its session (`setsid`, daemons) are
    // killed through their cgroups once it is gone.
    let steps = orchestrate_base::cgroup::StepsOf::find(pid);
    kill_group(pgid(pid), libc::SIGKILL);
    process::kill_session(pid, libc::SIGKILL);
    if let Some(steps) = steps {
        steps.kill();
    }
}

/// `swarm down` with no supervisor: stops the role processes a dead supervisor left
/// (`orphaned` in [`status`]): SIGTERM (they finish or hand back their tasks), or with `force`
/// SIGKILL to them and everything they run. Returns their names and pids.
pub fn stop_orphans(status: &SwarmStatus, force: bool) -> Vec<(String, u32)> {
    let mut stopped = Vec::new();
    for child in &status.children {
        if child.state != ChildState::Orphaned {
            continue;
        }
        // Verified again just before signalling: the pid is still that process.
        let Some((pid, _)) = child.live_process() else {
            continue;
        };
        if force {
            kill_replica(pid);
        } else {
            signal_child(pid, libc::SIGTERM);
        }
        stopped.push((child.name.clone(), pid));
    }
    stopped
}

/// Polls `cond` until it is false (true) or `timeout` passes (false).
fn wait_while(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Starts `argv` in a new session (no terminal, its own process group), stdin `/dev/null`,
/// stdout and stderr appended to `log` (parent directories created), and returns its pid without
/// waiting. The caller should reap it ([`wait_up`] does when it exits early) or exit soon after.
pub fn detach(argv: &[String], log: &Path) -> io::Result<u32> {
    let (program, args) = argv.split_first().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot run an empty command line",
        )
    })?;
    if let Some(parent) = log.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2), which
    // is async-signal-safe; it allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Dropping the handle neither waits nor kills: the process runs on.
    Ok(command.spawn()?.id())
}

/// For `swarm up -d`: waits until the supervisor `pid` (started by [`detach`]) has written a
/// status where every replica is running or failed. Fails when it exits first (reaping it, so
/// its exit status is in the error) or after `timeout`. Blocks the calling thread.
pub fn wait_up(
    workspace: &Path,
    pid: u32,
    timeout: Duration,
) -> Result<SwarmStatus, SupervisorError> {
    let start = Instant::now();
    loop {
        if let Some(how) = exited_child(pid) {
            return Err(SupervisorError::ExitedEarly { pid, how });
        }
        let status = status(workspace)?;
        let ours = status.supervisor.as_ref().is_some_and(|s| s.pid == pid);
        if ours && status.settled() {
            return Ok(status);
        }
        if start.elapsed() >= timeout {
            let pending = if ours {
                status
                    .children
                    .iter()
                    .filter(|c| !matches!(c.state, ChildState::Running | ChildState::Failed))
                    .map(|c| format!("{} ({})", c.name, c.state.as_str()))
                    .collect()
            } else {
                vec![format!("the supervisor (pid {pid}) to start")]
            };
            return Err(SupervisorError::NotUp {
                pid,
                waited: start.elapsed(),
                pending,
            });
        }
        std::thread::sleep(POLL);
    }
}

/// How `pid` ended, if it has: reaped when it is our child, else judged from /proc.
fn exited_child(pid: u32) -> Option<String> {
    let reaped = process::try_reap(pid);
    if let Ok(Some(status)) = reaped {
        return Some(ExitReason::of(status).to_string());
    }
    match process::stat(pid) {
        Some(stat) if !stat.exited() => None,
        _ if matches!(reaped, Ok(None)) => None,
        _ => Some("status unknown".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const READY_THEN_SLEEP: &str = r#"echo ready >&"$ORCHESTRATE_READY_FD"; exec sleep 100"#;
    const IGNORE_TERM: &str =
        r#"trap '' TERM; echo ready >&"$ORCHESTRATE_READY_FD"; while :; do sleep 0.05; done"#;

    fn fast() -> Policy {
        Policy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            reset_after: Duration::from_secs(30),
            max_restarts: 3,
            within: Duration::from_secs(30),
            grace: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(5),
        }
    }

    fn child(role: &str, replica: u32, script: &str) -> ChildSpec {
        ChildSpec {
            name: format!("{role}#{replica}"),
            role: role.to_string(),
            replica,
            argv: vec!["bash".into(), "-c".into(), script.into()],
            env: vec![("SUPERVISOR_TEST".into(), "1".into())],
        }
    }

    fn never() -> ChargeToTask {
        Arc::new(|_: &str, _: u32| false)
    }

    /// A supervisor running in this process, on its own temp workspace.
    struct Swarm {
        ws: tempfile::TempDir,
        stop: CancellationToken,
        kill: CancellationToken,
        handle: tokio::task::JoinHandle<Result<Report, SupervisorError>>,
    }

    impl Swarm {
        fn start(children: Vec<ChildSpec>, policy: Policy, charge: ChargeToTask) -> Swarm {
            let ws = tempfile::tempdir().unwrap();
            let (stop, kill) = (CancellationToken::new(), CancellationToken::new());
            let path = ws.path().to_path_buf();
            let (s, k) = (stop.clone(), kill.clone());
            let handle =
                tokio::spawn(async move { supervise(&path, children, policy, charge, s, k).await });
            Swarm {
                ws,
                stop,
                kill,
                handle,
            }
        }

        fn path(&self) -> &Path {
            self.ws.path()
        }

        async fn until(&self, what: &str, cond: impl Fn(&SwarmStatus) -> bool) -> SwarmStatus {
            // Generous deadlines in these tests: they guard against hangs, not slowness.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(status) = super::status(self.path())
                    && status.supervisor.is_some()
                    && cond(&status)
                {
                    return status;
                }
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        async fn stopped(self) -> (Report, tempfile::TempDir) {
            self.stop.cancel();
            let report = tokio::time::timeout(Duration::from_secs(60), self.handle)
                .await
                .expect("supervisor stops")
                .unwrap()
                .unwrap();
            (report, self.ws)
        }

        fn events(&self) -> Vec<Value> {
            orchestrate_engine::events::read(&events_path(self.path())).unwrap()
        }
    }

    fn state_of(status: &SwarmStatus, name: &str) -> ChildState {
        status
            .children
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .state
    }

    fn child_of<'a>(status: &'a SwarmStatus, name: &str) -> &'a ChildStatus {
        status.children.iter().find(|c| c.name == name).unwrap()
    }

    fn events_of(events: &[Value], name: &str) -> Vec<String> {
        events
            .iter()
            .filter(|e| e["child"] == name)
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect()
    }

    /// Gone, or a zombie nobody has reaped yet (it runs no more).
    fn gone(pid: u32) -> bool {
        process::stat(pid).is_none_or(|s| s.exited())
    }

    async fn until_true(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn ready_replica_runs_in_its_own_session_and_stops_on_sigterm() {
        let swarm = Swarm::start(
            vec![child("engineer", 1, READY_THEN_SLEEP)],
            fast(),
            never(),
        );
        let status = swarm
            .until("running", |s| {
                state_of(s, "engineer#1") == ChildState::Running
            })
            .await;
        assert_eq!(status.state, SwarmState::Running);
        assert_eq!(status.supervisor.as_ref().unwrap().pid, std::process::id());
        let pid = child_of(&status, "engineer#1").pid.unwrap();
        let stat = process::stat(pid).unwrap();
        assert_eq!(stat.session, pgid(pid), "a session (and group) of its own");
        assert_eq!(child_of(&status, "engineer#1").pid_start, Some(stat.start));
        let raw: Value =
            serde_json::from_slice(&fs::read(status_path(swarm.path())).unwrap()).unwrap();
        assert_eq!(raw["format_version"], 1);
        assert_eq!(raw["children"][0]["state"], "running");
        assert!(raw["supervisor"]["pid_start"].as_u64().unwrap() > 0);

        let events = swarm.events();
        let ws = swarm.path().to_path_buf();
        let (report, _dir) = swarm.stopped().await;
        assert!(!report.killed);
        assert_eq!(report.children[0].state, ChildState::Stopped);
        assert_eq!(
            report.children[0].last_exit,
            Some(ExitReason::Signaled {
                signal: libc::SIGTERM
            })
        );
        assert!(gone(pid));
        assert_eq!(events_of(&events, "engineer#1"), ["spawned", "ready"]);
        let events = orchestrate_engine::events::read(&events_path(&ws)).unwrap();
        assert_eq!(
            events_of(&events, "engineer#1"),
            ["spawned", "ready", "stopping", "exited", "stopped"]
        );
        let after = super::status(&ws).unwrap();
        assert_eq!(after.state, SwarmState::Down);
        assert!(after.children.is_empty());
    }

    #[tokio::test]
    async fn replica_is_starting_until_it_reports_ready() {
        let script = r#"while [ ! -e go ]; do sleep 0.01; done; echo ready >&"$ORCHESTRATE_READY_FD"; exec sleep 100"#;
        let swarm = Swarm::start(vec![child("qa", 1, script)], fast(), never());
        let status = swarm
            .until("spawned", |s| child_of(s, "qa#1").pid.is_some())
            .await;
        assert_eq!(state_of(&status, "qa#1"), ChildState::Starting);
        fs::write(swarm.path().join("go"), "").unwrap();
        swarm
            .until("running", |s| state_of(s, "qa#1") == ChildState::Running)
            .await;
        swarm.stopped().await;
    }

    #[tokio::test]
    async fn crash_loop_fails_the_replica_after_the_intensity_limit_others_keep_running() {
        let swarm = Swarm::start(
            vec![
                child("qa", 1, "exit 3"),
                child("engineer", 1, READY_THEN_SLEEP),
            ],
            fast(),
            never(),
        );
        let status = swarm
            .until("failed", |s| {
                state_of(s, "qa#1") == ChildState::Failed
                    && state_of(s, "engineer#1") == ChildState::Running
            })
            .await;
        let qa = child_of(&status, "qa#1");
        assert_eq!(qa.restarts, 3);
        assert_eq!(qa.last_exit, Some(ExitReason::Exited { code: 3 }));
        assert_eq!(qa.pid, None);
        let engineer = child_of(&status, "engineer#1").clone();
        let events = swarm.events();
        let spawns = events_of(&events, "qa#1")
            .iter()
            .filter(|e| *e == "spawned")
            .count();
        assert_eq!(spawns, 4, "first start and three restarts");
        let delays: Vec<u64> = events
            .iter()
            .filter(|e| e["child"] == "qa#1" && e["event"] == "restarting")
            .map(|e| e["delay_ms"].as_u64().unwrap())
            .collect();
        assert_eq!(delays.len(), 3);
        // 10, 20, 40 ms with jitter of at most 20%.
        for (delay, base) in delays.iter().zip([10, 20, 40]) {
            assert!(
                (base * 8 / 10..=base * 12 / 10).contains(delay),
                "{delay} vs {base}"
            );
        }
        let rendered = render_status(&status);
        assert!(rendered.contains("failed"), "{rendered}");
        assert!(rendered.contains("exit 3"), "{rendered}");

        let (report, _ws) = swarm.stopped().await;
        let qa = report.children.iter().find(|c| c.name == "qa#1").unwrap();
        assert_eq!(
            qa.state,
            ChildState::Failed,
            "a failed replica stays failed"
        );
        let eng = report
            .children
            .iter()
            .find(|c| c.name == "engineer#1")
            .unwrap();
        assert_eq!(eng.state, ChildState::Stopped);
        assert_eq!(eng.restarts, 0);
        assert_eq!(engineer.restarts, 0);
    }

    #[tokio::test]
    async fn deaths_charged_to_a_task_restart_at_once_and_do_not_count() {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let charge: ChargeToTask = Arc::new(move |role: &str, pid: u32| {
            assert_eq!(role, "engineer");
            assert!(pid > 1);
            // The first five deaths were a task's doing.
            seen.fetch_add(1, Ordering::SeqCst) < 5
        });
        let swarm = Swarm::start(vec![child("engineer", 1, "exit 1")], fast(), charge);
        let status = swarm
            .until("failed", |s| {
                state_of(s, "engineer#1") == ChildState::Failed
            })
            .await;
        assert_eq!(child_of(&status, "engineer#1").restarts, 5 + 3);
        assert_eq!(calls.load(Ordering::SeqCst), 5 + 3 + 1);
        let restarts: Vec<(bool, u64)> = swarm
            .events()
            .iter()
            .filter(|e| e["event"] == "restarting")
            .map(|e| {
                (
                    e["charged_to_task"].as_bool().unwrap(),
                    e["delay_ms"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(restarts.len(), 8);
        assert!(
            restarts[..5].iter().all(|r| *r == (true, 0)),
            "{restarts:?}"
        );
        assert!(
            restarts[5..].iter().all(|r| !r.0 && r.1 > 0),
            "{restarts:?}"
        );
        swarm.stopped().await;
    }

    #[tokio::test]
    async fn backoff_resets_after_healthy_running() {
        let policy = Policy {
            reset_after: Duration::from_millis(100),
            ..fast()
        };
        // Healthy (ready) for 150 ms each time, then a crash.
        let script = r#"echo ready >&"$ORCHESTRATE_READY_FD"; sleep 0.15; exit 1"#;
        let swarm = Swarm::start(vec![child("qa", 1, script)], policy, never());
        swarm
            .until("failed", |s| state_of(s, "qa#1") == ChildState::Failed)
            .await;
        let delays: Vec<u64> = swarm
            .events()
            .iter()
            .filter(|e| e["event"] == "restarting")
            .map(|e| e["delay_ms"].as_u64().unwrap())
            .collect();
        assert_eq!(delays.len(), 3);
        assert!(delays.iter().all(|d| (8..=12).contains(d)), "{delays:?}");
        swarm.stopped().await;
    }

    #[tokio::test]
    async fn replica_that_cannot_start_fails_with_the_reason() {
        let mut spec = child("qa", 1, "");
        spec.argv = vec!["/nonexistent/orchestrate".into(), "agent".into()];
        let swarm = Swarm::start(vec![spec], fast(), never());
        let status = swarm
            .until("failed", |s| state_of(s, "qa#1") == ChildState::Failed)
            .await;
        let exit = child_of(&status, "qa#1").last_exit.clone().unwrap();
        assert!(
            matches!(&exit, ExitReason::SpawnFailed { message } if message.starts_with("failed to start `/nonexistent/orchestrate`")),
            "{exit:?}"
        );
        assert!(render_status(&status).contains("failed to start"));
        swarm.stopped().await;
    }

    #[tokio::test]
    async fn replica_that_never_reports_ready_is_killed_and_restarted() {
        let policy = Policy {
            ready_timeout: Duration::from_millis(150),
            max_restarts: 1,
            ..fast()
        };
        let swarm = Swarm::start(vec![child("qa", 1, "exec sleep 100")], policy, never());
        let status = swarm
            .until("failed", |s| state_of(s, "qa#1") == ChildState::Failed)
            .await;
        let qa = child_of(&status, "qa#1");
        assert_eq!(qa.restarts, 1);
        assert_eq!(qa.last_exit, Some(ExitReason::NotReady { timeout_ms: 150 }));
        assert_eq!(
            qa.last_exit.as_ref().unwrap().to_string(),
            "not ready within 150ms"
        );
        let pids: Vec<u32> = swarm
            .events()
            .iter()
            .filter(|e| e["child"] == "qa#1" && e["event"] == "spawned")
            .map(|e| e["pid"].as_u64().unwrap() as u32)
            .collect();
        assert_eq!(pids.len(), 2);
        assert!(pids.iter().all(|p| gone(*p)));
        swarm.stopped().await;
    }

    #[tokio::test]
    async fn graceful_stop_sigkills_what_ignores_sigterm_after_the_grace() {
        let policy = Policy {
            grace: Duration::from_millis(300),
            ..fast()
        };
        let swarm = Swarm::start(vec![child("qa", 1, IGNORE_TERM)], policy, never());
        let status = swarm
            .until("running", |s| state_of(s, "qa#1") == ChildState::Running)
            .await;
        let pid = child_of(&status, "qa#1").pid.unwrap();
        let start = Instant::now();
        let (report, _ws) = swarm.stopped().await;
        let took = start.elapsed();
        // Not before the grace; that the SIGKILL came is `last_exit` below (the child never
        // exits on its own).
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert_eq!(
            report.children[0].last_exit,
            Some(ExitReason::Signaled {
                signal: libc::SIGKILL
            })
        );
        assert!(gone(pid));
    }

    #[tokio::test]
    async fn kill_token_kills_at_once_during_a_graceful_stop() {
        let policy = Policy {
            grace: Duration::from_secs(600),
            ..fast()
        };
        let swarm = Swarm::start(vec![child("qa", 1, IGNORE_TERM)], policy, never());
        swarm
            .until("running", |s| state_of(s, "qa#1") == ChildState::Running)
            .await;
        swarm.stop.cancel();
        let status = swarm
            .until("stopping", |s| state_of(s, "qa#1") == ChildState::Stopping)
            .await;
        assert_eq!(status.state, SwarmState::Stopping);
        swarm.kill.cancel();
        // A wide margin: killed at once, not after the 600 s grace.
        let report = tokio::time::timeout(Duration::from_secs(120), swarm.handle)
            .await
            .expect("killed promptly")
            .unwrap()
            .unwrap();
        assert!(report.killed);
        assert_eq!(report.children[0].state, ChildState::Stopped);
        assert_eq!(
            report.children[0].last_exit,
            Some(ExitReason::Signaled {
                signal: libc::SIGKILL
            })
        );
    }

    #[tokio::test]
    async fn second_supervisor_is_refused_naming_the_first() {
        let swarm = Swarm::start(vec![child("qa", 1, READY_THEN_SLEEP)], fast(), never());
        swarm
            .until("running", |s| state_of(s, "qa#1") == ChildState::Running)
            .await;
        let err = supervise(
            swarm.path(),
            vec![child("qa", 1, READY_THEN_SLEEP)],
            fast(),
            never(),
            CancellationToken::new(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, SupervisorError::AlreadyRunning { pid: Some(pid), .. } if pid == std::process::id())
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert!(message.contains("orchestrate swarm status"), "{message}");
        assert!(message.contains("orchestrate swarm down"), "{message}");
        // The refused one touched nothing: the first is still the one recorded.
        let status = super::status(swarm.path()).unwrap();
        assert_eq!(state_of(&status, "qa#1"), ChildState::Running);
        let (_, ws) = swarm.stopped().await;

        // Once the first is gone, the lock is free again.
        let stop = CancellationToken::new();
        stop.cancel();
        let report = supervise(
            ws.path(),
            Vec::new(),
            fast(),
            never(),
            stop,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert!(report.children.is_empty());
    }

    #[tokio::test]
    async fn orphans_are_reaped_and_managed_exit_statuses_are_kept() {
        let orphan_maker = r#"( sleep 0.3 & echo $! > orphan.pid ); echo ready >&"$ORCHESTRATE_READY_FD"; exec sleep 100"#;
        let swarm = Swarm::start(
            vec![child("engineer", 1, orphan_maker), child("qa", 1, "exit 5")],
            fast(),
            never(),
        );
        let pid_file = swarm.path().join("orphan.pid");
        let mut orphan = 0u32;
        until_true("the orphan's pid", || {
            orphan = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            orphan > 0
        })
        .await;
        // Its parent (the subshell) exits at once: the orphan is reparented to us, the subreaper.
        let me = i32::try_from(std::process::id()).unwrap();
        let mut seen_adopted = false;
        until_true("the orphan to be adopted, then reaped", || {
            match process::stat(orphan) {
                Some(stat) => {
                    seen_adopted |= stat.ppid == me;
                    false
                }
                // Fully gone, not a zombie: someone reaped it.
                None => true,
            }
        })
        .await;
        assert!(seen_adopted, "the orphan was reparented to the supervisor");
        let status = swarm
            .until("qa failed", |s| state_of(s, "qa#1") == ChildState::Failed)
            .await;
        // The reaper, busy meanwhile, never took a managed child's status.
        assert_eq!(
            child_of(&status, "qa#1").last_exit,
            Some(ExitReason::Exited { code: 5 })
        );
        swarm.stopped().await;
    }

    #[tokio::test]
    async fn leftover_replicas_of_a_dead_supervisor_are_stopped_at_start() {
        let ws = tempfile::tempdir().unwrap();
        // A replica whose supervisor died: its own session, still running, noting the SIGTERM.
        let mut command = Command::new("bash");
        command
            .args([
                "-c",
                "trap 'echo term > got-term; exit 0' TERM; touch trapped; while :; do sleep 0.05; done",
            ])
            .current_dir(ws.path());
        // SAFETY: setsid is async-signal-safe and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut leftover = command.spawn().unwrap();
        let pid = leftover.id();
        until_true("the leftover's trap", || ws.path().join("trapped").exists()).await;
        let start = process::stat(pid).unwrap().start;
        let mut dead = ChildStatus::new(&child("qa", 1, ""));
        dead.state = ChildState::Running;
        dead.pid = Some(pid);
        dead.pid_start = Some(start);
        let old = StatusFile {
            format_version: STATUS_FORMAT,
            supervisor: SupervisorInfo {
                pid: u32::MAX - 1,
                pid_start: 1,
                boot_id: process::boot_id(),
                state: SupervisorState::Running,
                started_at: clock::now_rfc3339(),
                updated_at: clock::now_rfc3339(),
            },
            children: vec![dead],
            reloaded_at: None,
            problems: Vec::new(),
        };
        fs::create_dir_all(swarm_dir(ws.path())).unwrap();
        write_status(&status_path(ws.path()), &old).unwrap();

        let before = super::status(ws.path()).unwrap();
        assert_eq!(before.state, SwarmState::Down);
        assert_eq!(before.children.len(), 1);
        assert_eq!(before.children[0].state, ChildState::Orphaned);
        assert!(render_status(&before).contains("orphaned"));

        let stop = CancellationToken::new();
        stop.cancel();
        supervise(
            ws.path(),
            Vec::new(),
            fast(),
            never(),
            stop,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert!(gone(pid));
        assert_eq!(
            fs::read_to_string(ws.path().join("got-term")).unwrap(),
            "term\n"
        );
        // The supervisor's reaper may have reaped it already: it is in another session.
        let _ = leftover.try_wait();
        let events = orchestrate_engine::events::read(&events_path(ws.path())).unwrap();
        assert!(events.iter().any(|e| e["event"] == "leftover_stopping"));
    }

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
    fn inbox_notes_name_a_few_entries_per_kind_and_count_the_rest() {
        let entry = |n: usize| queue::InboxEntry {
            name: format!("n{n}.txt"),
            path: format!("inbox/r/n{n}.txt"),
            reason: "not a `.task` file (extension `.txt`)".into(),
        };
        let load = RoleLoad {
            role: "r".into(),
            queued: 1,
            running: 0,
            paused: None,
            breakers: Vec::new(),
            workflow_hashes: Vec::new(),
            reload_error: None,
            not_started: None,
            ignored: (0..INBOX_NOTES + 2).map(entry).collect(),
            being_written: vec![queue::InboxEntry {
                name: "y.task".into(),
                path: "inbox/r/y.task".into(),
                reason: "being written: pid 7 has it open for writing; it is taken once closed"
                    .into(),
            }],
        };
        let notes = inbox_notes(&load);
        assert_eq!(notes.len(), 1 + INBOX_NOTES + 1, "{notes:#?}");
        assert_eq!(
            notes[0],
            "role r: inbox/r/y.task: being written: pid 7 has it open for writing; it is taken once closed"
        );
        assert_eq!(
            notes[1],
            "role r: inbox/r/n0.txt: ignored: not a `.task` file (extension `.txt`)"
        );
        assert_eq!(
            notes[INBOX_NOTES + 1],
            "role r: 2 more (`orchestrate tasks r --state ignored` lists them)"
        );
    }

    #[test]
    fn render_shows_one_row_per_replica_and_idle_roles() {
        let now = clock::now_rfc3339();
        let mut running = ChildStatus::new(&child("engineer", 1, ""));
        running.state = ChildState::Running;
        running.pid = Some(4242);
        let mut failed = ChildStatus::new(&child("engineer", 2, ""));
        failed.state = ChildState::Failed;
        failed.restarts = 5;
        failed.last_exit = Some(ExitReason::Signaled {
            signal: libc::SIGSEGV,
        });
        let status = SwarmStatus {
            workspace: "/ws".into(),
            state: SwarmState::Running,
            supervisor: Some(SupervisorInfo {
                pid: 7,
                pid_start: 1,
                boot_id: "b".into(),
                state: SupervisorState::Running,
                started_at: now.clone(),
                updated_at: now,
            }),
            children: vec![running, failed],
            roles: vec![
                RoleLoad {
                    role: "engineer".into(),
                    queued: 3,
                    running: 1,
                    paused: None,
                    breakers: Vec::new(),
                    workflow_hashes: Vec::new(),
                    reload_error: None,
                    not_started: None,
                    ignored: Vec::new(),
                    being_written: Vec::new(),
                },
                RoleLoad {
                    role: "qa".into(),
                    queued: 0,
                    running: 0,
                    paused: None,
                    breakers: Vec::new(),
                    workflow_hashes: Vec::new(),
                    reload_error: None,
                    not_started: None,
                    ignored: Vec::new(),
                    being_written: Vec::new(),
                },
            ],
        };
        let text = render_status(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("supervisor pid 7 running, up "),
            "{text}"
        );
        assert_eq!(lines[1], "1 of 2 replicas running, 1 failed");
        let cells = |line: &str| {
            line.split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cells(lines[2]),
            [
                "ROLE", "REPLICA", "PID", "STATE", "RESTARTS", "SINCE", "QUEUED", "RUNNING",
                "LAST", "EXIT"
            ]
        );
        assert_eq!(
            cells(lines[3]),
            ["engineer", "1", "4242", "running", "0", "0s", "3", "1", "-"]
        );
        assert_eq!(
            cells(lines[4]),
            [
                "engineer", "2", "-", "failed", "5", "0s", "3", "1", "SIGSEGV"
            ]
        );
        assert_eq!(
            cells(lines[5]),
            ["qa", "-", "-", "-", "-", "-", "0", "0", "-"]
        );
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

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let base = Duration::from_millis(1000);
        assert_eq!(jittered(base, 0), Duration::from_millis(800));
        assert_eq!(jittered(base, u32::MAX), Duration::from_millis(1200));
        assert_eq!(jittered(base, u32::MAX / 2).as_millis(), 1000);
        assert_eq!(jittered(Duration::MAX, u32::MAX), Duration::MAX);
    }

    #[test]
    fn down_without_a_supervisor_is_a_clear_error() {
        let ws = tempfile::tempdir().unwrap();
        let err = down(ws.path(), Duration::from_secs(1), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no supervisor is running in {}", ws.path().display())
        );
    }

    #[test]
    fn detach_starts_a_new_session_logging_to_the_file() {
        let ws = tempfile::tempdir().unwrap();
        let log = ws.path().join("logs/swarm.log");
        fs::create_dir_all(log.parent().unwrap()).unwrap();
        fs::write(&log, "before\n").unwrap();
        let argv: Vec<String> = [
            "bash",
            "-c",
            "echo out; echo err >&2; read -t 5 x; echo stdin=$?; exec sleep 100",
        ]
        .map(String::from)
        .to_vec();
        let pid = detach(&argv, &log).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = fs::read_to_string(&log).unwrap();
            if text.contains("stdin=") {
                assert!(text.starts_with("before\n"), "appended: {text}");
                assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
                // `read` hit end of file at once: stdin is /dev/null.
                assert!(text.contains("stdin=1"), "{text}");
                break;
            }
            assert!(Instant::now() < deadline, "timed out: {text}");
            std::thread::sleep(Duration::from_millis(5));
        }
        let stat = process::stat(pid).unwrap();
        assert_eq!(stat.session, pgid(pid), "a session of its own");
        let _ = process::kill(pid, libc::SIGKILL);
        // Reap it if it is still ours (a supervisor test's reaper may have beaten us to it).
        let _ = exited_child(pid);
        assert!(detach(&[], &log).is_err());
    }

    // -----------------------------------------------------------------------------------------
    // `down` signals a supervisor process, so the supervisor runs in a separate process: this
    // test binary, running only the helper below.

    const HELPER_WS: &str = "ORCHESTRATE_SUPERVISOR_HELPER_WS";
    const HELPER_SCRIPT: &str = "ORCHESTRATE_SUPERVISOR_HELPER_SCRIPT";
    const HELPER_GRACE_MS: &str = "ORCHESTRATE_SUPERVISOR_HELPER_GRACE_MS";

    #[test]
    #[ignore = "run as a separate supervisor process by the `down` tests"]
    fn helper_supervisor_process() {
        let Some(ws) = std::env::var_os(HELPER_WS) else {
            return;
        };
        let script = std::env::var(HELPER_SCRIPT).unwrap();
        let grace: u64 = std::env::var(HELPER_GRACE_MS).unwrap().parse().unwrap();
        let policy = Policy {
            grace: Duration::from_millis(grace),
            ..fast()
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let (stop, kill) = (CancellationToken::new(), CancellationToken::new());
            // As the CLI does: the first SIGTERM stops, the second kills.
            let mut term = signal(SignalKind::terminate()).unwrap();
            let (s, k) = (stop.clone(), kill.clone());
            tokio::spawn(async move {
                term.recv().await;
                s.cancel();
                term.recv().await;
                k.cancel();
            });
            supervise(
                Path::new(&ws),
                vec![child("qa", 1, &script)],
                policy,
                never(),
                stop,
                kill,
            )
            .await
            .unwrap();
        });
    }

    /// The helper supervisor process; killed and reaped when dropped.
    struct Helper(std::process::Child);

    impl Helper {
        fn start(ws: &Path, script: &str, grace: Duration) -> Helper {
            let child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "supervisor::tests::helper_supervisor_process",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                    "--quiet",
                ])
                .env(HELPER_WS, ws)
                .env(HELPER_SCRIPT, script)
                .env(HELPER_GRACE_MS, grace.as_millis().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            Helper(child)
        }

        fn until_running(&self, ws: &Path) -> SwarmStatus {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(status) = super::status(ws)
                    && status
                        .supervisor
                        .as_ref()
                        .is_some_and(|s| s.pid == self.0.id())
                    && status.settled()
                {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "helper supervisor did not come up"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    impl Drop for Helper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn down_stops_a_running_supervisor_gracefully() {
        let ws = tempfile::tempdir().unwrap();
        let mut helper = Helper::start(ws.path(), READY_THEN_SLEEP, Duration::from_secs(5));
        let up = helper.until_running(ws.path());
        let replica = up.children[0].pid.unwrap();
        let report = down(ws.path(), Duration::from_secs(10), false).unwrap();
        assert_eq!(report.pid, helper.0.id());
        assert_eq!(report.signal, "SIGTERM");
        assert!(report.exited);
        assert!(report.killed_children.is_empty());
        assert!(helper.0.wait().unwrap().success());
        assert!(gone(replica));
        let after = super::status(ws.path()).unwrap();
        assert_eq!(after.state, SwarmState::Down);
        let err = down(ws.path(), Duration::from_secs(1), false).unwrap_err();
        assert!(matches!(err, SupervisorError::NotRunning { .. }));
    }

    #[test]
    fn second_down_kills_a_supervisor_stuck_in_its_grace_period() {
        let ws = tempfile::tempdir().unwrap();
        let mut helper = Helper::start(ws.path(), IGNORE_TERM, Duration::from_secs(60));
        let up = helper.until_running(ws.path());
        let replica = up.children[0].pid.unwrap();
        let first = down(ws.path(), Duration::from_millis(200), false).unwrap();
        assert_eq!(first.signal, "SIGTERM");
        assert!(
            !first.exited,
            "the replica ignores SIGTERM and the grace is long"
        );
        assert_eq!(
            super::status(ws.path()).unwrap().state,
            SwarmState::Stopping
        );
        let second = down(ws.path(), Duration::from_secs(10), false).unwrap();
        assert_eq!(second.signal, "SIGKILL");
        assert!(second.exited);
        assert_eq!(second.killed_children, [replica]);
        assert_eq!(helper.0.wait().unwrap().signal(), Some(libc::SIGKILL));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone(replica) {
            assert!(Instant::now() < deadline, "replica still runs");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(super::status(ws.path()).unwrap().state, SwarmState::Down);
    }

    #[test]
    fn forced_down_kills_the_supervisor_and_its_replicas() {
        let ws = tempfile::tempdir().unwrap();
        let mut helper = Helper::start(ws.path(), READY_THEN_SLEEP, Duration::from_secs(5));
        let up = helper.until_running(ws.path());
        let replica = up.children[0].pid.unwrap();
        let report = down(ws.path(), Duration::from_secs(10), true).unwrap();
        assert_eq!(report.signal, "SIGKILL");
        assert!(report.exited);
        assert_eq!(report.killed_children, [replica]);
        assert_eq!(helper.0.wait().unwrap().signal(), Some(libc::SIGKILL));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone(replica) {
            assert!(Instant::now() < deadline, "replica still runs");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn wait_up_reports_a_supervisor_that_exits_early() {
        let ws = tempfile::tempdir().unwrap();
        let log = ws.path().join("swarm.log");
        let argv: Vec<String> = ["bash", "-c", "echo boom; exit 4"]
            .map(String::from)
            .to_vec();
        let pid = detach(&argv, &log).unwrap();
        let err = wait_up(ws.path(), pid, Duration::from_secs(10)).unwrap_err();
        match &err {
            SupervisorError::ExitedEarly { pid: p, how } => {
                assert_eq!(*p, pid);
                // Reaped by wait_up (exit 4), or by a reaper of another test first.
                assert!(how == "exit 4" || how == "status unknown", "{how}");
            }
            other => panic!("unexpected {other}"),
        }
    }
}
