//! One replica's actor: spawns its process, watches it (exit, readiness, the ready timeout, the
//! stop and kill tokens), then restarts it after the backoff or marks it failed; every change is
//! sent to the loop.
//!
//! Does not write the records (the loop does), compute delays (`policy` does) nor bring a process
//! down (the `impl Actor` block in `stop` does).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use orchestrate_base::clock;
use orchestrate_base::process;

use super::event::{Exited, Failed, Pid, Restarting, SupervisorEvent};
use super::exit::ExitReason;
use super::policy::{Policy, Restarts, clock_in, millis};
use super::proc::{Proc, exited};
use super::records::Update;
use super::spec::{ChargeToTask, ChildSpec};
use super::status_file::{ChildState, ChildStatus};

/// Why the watch over one process ended.
pub(super) enum End {
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

/// One replica: its spec, its status as last sent, and what it needs to run and restart.
pub(super) struct Actor {
    pub(super) spec: ChildSpec,
    pub(super) status: ChildStatus,
    pub(super) policy: Policy,
    pub(super) cwd: PathBuf,
    pub(super) charge: ChargeToTask,
    /// This replica's own stop token (a reload stops one replica alone).
    pub(super) stop: CancellationToken,
    pub(super) kill: CancellationToken,
    pub(super) tx: mpsc::UnboundedSender<Update>,
    pub(super) restarts: Restarts,
}

impl Actor {
    pub(super) async fn run(mut self) {
        loop {
            // No new spawns once a stop was asked for.
            if self.stop.is_cancelled() || self.kill.is_cancelled() {
                self.status.next_restart_at = None;
                self.change(ChildState::Stopped, SupervisorEvent::Stopped);
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
            self.send(Some(SupervisorEvent::Exited(Exited {
                pid: ended.pid,
                exit: ended.reason.clone(),
                asked: ended.asked,
            })));
            if ended.asked {
                self.change(ChildState::Stopped, SupervisorEvent::Stopped);
                return;
            }
            if !self.back_off(ended).await {
                return;
            }
        }
    }

    /// Sets the state and reports it with its event.
    pub(super) fn change(&mut self, state: ChildState, event: SupervisorEvent) {
        self.status.state = state;
        self.status.since = clock::now_rfc3339();
        self.send(Some(event));
    }

    fn send(&self, event: Option<SupervisorEvent>) {
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
        self.change(ChildState::Starting, SupervisorEvent::Spawned(Pid { pid }));
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
                        self.change(ChildState::Running, SupervisorEvent::Ready(Pid { pid }));
                    }
                }
                () = tokio::time::sleep_until(ready_by), if running_since.is_none() => {
                    break End::NotReady;
                }
            }
        };
        let asked = matches!(end, End::Stop | End::Kill);
        let reason = self.end(&mut proc, end).await;
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
        self.restarts.ran(ended.healthy);
        let charged = match ended.pid {
            Some(pid) if ended.reason.is_own_death() => (self.charge)(&self.spec.role, pid),
            _ => false,
        };
        let now = Instant::now();
        let delay = if charged {
            // The task's attempts pay for this death; the replica is not at fault.
            Duration::ZERO
        } else {
            match self.restarts.next(now) {
                Ok(delay) => delay,
                Err(restarts_within) => {
                    self.change(
                        ChildState::Failed,
                        SupervisorEvent::Failed(Failed {
                            exit: ended.reason,
                            restarts_within,
                            within_ms: millis(self.policy.within),
                        }),
                    );
                    return false;
                }
            }
        };
        self.status.restarts = self.status.restarts.saturating_add(1);
        self.status.next_restart_at = Some(clock_in(delay));
        self.change(
            ChildState::Backoff,
            SupervisorEvent::Restarting(Restarting {
                delay_ms: millis(delay),
                charged_to_task: charged,
                restarts: self.status.restarts,
            }),
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
