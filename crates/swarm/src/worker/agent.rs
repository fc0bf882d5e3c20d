//! The role process's loop: its state, what it waits for, and what each wake-up does.
//!
//! Owns: starting the process (recovery, the inbox and control watches, the first listing, the
//! SIGHUP handler, the process record, the readiness report), the loop between claims (reload,
//! budget, claims, whether to end) and the one `select!` over its wake-ups: inbox hints, control
//! hints, a task's end, the timer (due entries, recovery, a listing), a freed slot, SIGHUP, the
//! supervisor check, stop, the grace period and kill. The handlers of claims live in `dispatch`
//! and those of stopping in `stop`, as further `impl Agent` blocks.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use orchestrate_queue::queue::Owner;

use super::discover::{Hint, IDLE_RESCAN, InboxWatch, Pending, watch};
use super::finish::Finished;
use super::log::{Log, say};
use super::options::{AgentOptions, AgentReport};
use super::parent::{ORPHAN_CHECK, report_ready, supervisor_pid};
use super::recover::{RECOVER_EVERY, recover};
use super::reload::Reload;
use super::shared::{Shared, gate_of};
use super::steer::{Budget, Steering};

/// A role process: the version of the role it runs, what holds claims back, the candidates,
/// the tasks in flight, and what it waits on.
pub(super) struct Agent {
    pub(super) workspace: PathBuf,
    pub(super) options: AgentOptions,
    pub(super) shared: Arc<Shared>,
    pub(super) log: Log,
    pub(super) owner: Owner,
    pub(super) steer: Steering,
    pub(super) budget: Budget,
    pub(super) pending: Pending,
    pub(super) reload: Reload,
    pub(super) report: AgentReport,
    pub(super) running: JoinSet<Finished>,
    /// One per task in flight, removed when it finishes (a Vec kept every token ever made).
    pub(super) tokens: HashMap<String, CancellationToken>,
    pub(super) stopping: Option<Instant>,
    last_recover: Instant,
    last_list: Instant,
    /// Inbox files found open for writing, said once each until they are claimed or gone.
    pub(super) writing_said: HashSet<String>,
    pub(super) supervisor: Option<u32>,
    pub(super) stop: CancellationToken,
    pub(super) kill: CancellationToken,
    hints: mpsc::UnboundedReceiver<Hint>,
    control: mpsc::UnboundedReceiver<()>,
    hangup: Option<tokio::signal::unix::Signal>,
    orphan_check: tokio::time::Interval,
    _watcher: InboxWatch,
    _control_watcher: Option<notify::RecommendedWatcher>,
}

/// What ended a wait of the loop.
enum Wake {
    Hint(Option<Hint>),
    Control,
    TaskEnded(Result<Finished, JoinError>),
    Timer,
    SlotFreed,
    Hangup,
    OrphanCheck,
    Stop,
    GraceOver,
    Kill,
}

impl Agent {
    /// Starts the role process on `version`: ready to claim once this returns.
    pub(super) fn start(
        workspace: &Path,
        version: orchestrate_engine::role::Version,
        options: AgentOptions,
        stop: CancellationToken,
        kill: CancellationToken,
    ) -> Result<Agent, String> {
        // The hints' channel first: a database queue's news of queued tasks arrive on it too.
        let (tx, hints) = mpsc::unbounded_channel();
        let queued: Arc<dyn Fn() + Send + Sync> = {
            let tx = tx.clone();
            Arc::new(move || {
                let _ = tx.send(Hint::Queued);
            })
        };
        let (shared, stamp) = Shared::start(workspace, version, &options, queued)?;
        let owner = Owner::current();
        let shared = Arc::new(shared);
        let log = shared.log.clone();
        let layout = &shared.layout;

        recover(&shared, &log);
        // Watch first, then list: a file created in between is seen by one or the other.
        let watcher = watch(&layout.inbox, tx)
            .map_err(|e| format!("failed to watch {}: {e}", layout.inbox.display()))?;
        // Pause, cancel requests and breaker changes: hints from the control watcher, with the
        // files as the truth (also read on every idle wake, in case the watch failed).
        let (control_tx, control) = mpsc::unbounded_channel();
        let control_watcher = crate::control::watch(workspace, &shared.role.name, control_tx)
            .map_err(|e| {
                say!(
                    &log,
                    WARN,
                    "cannot watch the control files ({e}); reading them every {IDLE_RESCAN:?}"
                )
            })
            .ok();
        let steer = Steering {
            paused: None,
            gate: gate_of(&shared),
            gate_wait: None,
            gate_reason: None,
            trials: HashMap::new(),
        };
        let mut pending = Pending::default();
        pending.list(layout);
        if shared.queue.pulls() {
            pending.push(String::new(), true);
        }
        // SIGHUP: look at the role's files now (`orchestrate swarm reload`). Installed before
        // this process records itself and reports ready, after which it may be sent.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let supervisor = supervisor_pid();
        let reload = Reload::new(&shared, stamp, &options, supervisor, &log);
        let orphan_check = tokio::time::interval(ORPHAN_CHECK);
        report_ready();
        say!(
            &log,
            INFO,
            "watching {} ({} queued, concurrency {})",
            orchestrate_base::fsutil::relative(workspace, &layout.inbox),
            pending.queue.len(),
            shared.role.concurrency
        );
        Ok(Agent {
            workspace: workspace.to_path_buf(),
            options,
            shared,
            log,
            owner,
            steer,
            budget: Budget::default(),
            pending,
            reload,
            report: AgentReport::default(),
            running: JoinSet::new(),
            tokens: HashMap::new(),
            stopping: None,
            last_recover: Instant::now(),
            last_list: Instant::now(),
            writing_said: HashSet::new(),
            supervisor,
            stop,
            kill,
            hints,
            control,
            hangup,
            orphan_check,
            _watcher: watcher,
            _control_watcher: control_watcher,
        })
    }

    /// Claims and runs tasks until the process is to end; what it did.
    pub(super) async fn run(&mut self) -> Result<AgentReport, String> {
        self.steer.refresh(&self.shared, &self.tokens, &self.log);
        loop {
            // Between tasks: run new tasks on the role's files as they are now.
            if self.stopping.is_none() && !self.pending.queue.is_empty() {
                self.reload_role(false);
            }
            self.budget.check(
                &self.workspace,
                &self.shared,
                !self.pending.is_empty(),
                &self.log,
            );
            self.claim_ready();
            if self.is_done() {
                break;
            }
            let wake = self.wait().await;
            self.handle(wake)?;
        }
        Ok(std::mem::take(&mut self.report))
    }

    /// When the loop looks again at its own accord: the next waiting entry, the idle listing,
    /// recovery, the budget and the breakers, whichever comes first.
    fn wake_at(&self) -> Instant {
        let mut next_wake = self
            .pending
            .next_due()
            .unwrap_or_else(|| Instant::now() + IDLE_RESCAN)
            .min(self.last_recover + RECOVER_EVERY);
        if let Some(until) = self.budget.blocked {
            next_wake = next_wake.min(until);
        }
        if let Some(at) = self.steer.gate_wait {
            next_wake = next_wake.min(at);
        }
        next_wake
    }

    /// Waits for the next thing to act on.
    async fn wait(&mut self) -> Wake {
        let next_wake = self.wake_at();
        let grace_deadline = self.stopping.map(|at| at + self.options.grace);
        let all_cancelled = self.tokens.values().all(CancellationToken::is_cancelled);
        let (stopping, supervised) = (self.stopping.is_some(), self.supervisor.is_some());
        tokio::select! {
            hint = self.hints.recv() => Wake::Hint(hint),
            Some(()) = self.control.recv() => Wake::Control,
            Some(done) = self.running.join_next() => Wake::TaskEnded(done),
            _ = tokio::time::sleep_until(next_wake.into()) => Wake::Timer,
            () = self.shared.slot_freed.notified() => Wake::SlotFreed,
            Some(()) = next_signal(&mut self.hangup) => Wake::Hangup,
            _ = self.orphan_check.tick(), if !stopping && supervised => Wake::OrphanCheck,
            _ = self.stop.cancelled(), if !stopping => Wake::Stop,
            _ = async { tokio::time::sleep_until(grace_deadline.unwrap_or_else(Instant::now).into()).await }, if grace_deadline.is_some() && !all_cancelled => Wake::GraceOver,
            _ = self.kill.cancelled(), if !all_cancelled || !stopping => Wake::Kill,
        }
    }

    fn handle(&mut self, wake: Wake) -> Result<(), String> {
        match wake {
            Wake::Hint(hint) => return self.on_hint(hint),
            Wake::Control => {
                while self.control.try_recv().is_ok() {}
                self.steer.gate_wait = None;
                self.steer.refresh(&self.shared, &self.tokens, &self.log);
            }
            Wake::TaskEnded(done) => self.on_task_ended(done),
            Wake::Timer => self.on_timer(),
            Wake::SlotFreed => {}
            Wake::Hangup => {
                say!(&self.log, INFO, "SIGHUP: looking at the role's files again");
                self.reload_role(true);
            }
            Wake::OrphanCheck => self.on_orphan_check(),
            Wake::Stop => self.on_stop(),
            Wake::GraceOver => self.on_grace_over(),
            Wake::Kill => self.on_kill(),
        }
        Ok(())
    }

    /// Inbox entries to look at, or a rescan after lost events.
    fn on_hint(&mut self, hint: Option<Hint>) -> Result<(), String> {
        match hint {
            Some(Hint::Names(names)) => {
                for (name, complete) in names {
                    self.pending.push(name, complete);
                }
                while let Ok(hint) = self.hints.try_recv() {
                    match hint {
                        Hint::Names(names) => {
                            names.into_iter().for_each(|(n, c)| self.pending.push(n, c))
                        }
                        Hint::Rescan => self.rescan(),
                        Hint::Queued => self.pending.push(String::new(), true),
                    }
                }
            }
            Some(Hint::Rescan) => self.rescan(),
            Some(Hint::Queued) => self.pending.push(String::new(), true),
            None => return Err("the inbox watcher stopped".into()),
        }
        Ok(())
    }

    fn rescan(&mut self) {
        say!(
            &self.log,
            WARN,
            "watcher asked for a rescan (events were lost); listing the inbox"
        );
        self.pending.list(&self.shared.layout);
    }

    /// The loop's own wake-up: a reload, due entries, control files, recovery, a listing.
    fn on_timer(&mut self) {
        if self.stopping.is_none() {
            self.reload_role(false);
        }
        self.pending.promote_due();
        self.steer.refresh(&self.shared, &self.tokens, &self.log);
        if self.last_recover.elapsed() >= RECOVER_EVERY {
            self.last_recover = Instant::now();
            recover(&self.shared, &self.log);
        }
        if self.pending.is_empty() && self.last_list.elapsed() >= IDLE_RESCAN {
            self.last_list = Instant::now();
            self.pending.list(&self.shared.layout);
            // A queue that pulls is asked again: the hint of a task queued may have been lost.
            if self.shared.queue.pulls() {
                self.pending.push(String::new(), true);
            }
        }
    }

    /// Looks at the role's files (`force`d on SIGHUP); new tasks take a version that loads.
    fn reload_role(&mut self, force: bool) {
        if let Some(next) = self.reload.check(&self.shared, force, &self.log) {
            self.steer.gate = gate_of(&next);
            self.shared = next;
        }
    }
}

async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
