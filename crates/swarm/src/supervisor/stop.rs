//! Ending one replica process once its watch is over: the kill of one not ready in time, the
//! graceful stop (SIGTERM, the grace, SIGKILL), the immediate one (SIGKILL), and the sweep of
//! what it leaves in its group, session and cgroups before it is reaped.
//!
//! Does not reap it (`proc` does) nor decide about a restart (`replica` does).

use orchestrate_base::process::{self, kill_group};

use super::event::{StopSignal, Stopping, SupervisorEvent};
use super::exit::ExitReason;
use super::policy::millis;
use super::proc::{Proc, exited, pgid, signal_child};
use super::replica::{Actor, End};
use super::status_file::ChildState;

impl Actor {
    /// Brings the process to its end as `end` says, waits until it has exited, then sweeps what
    /// it left ([`sweep`]); it is left unreaped. Returns the reason to record when it is not the
    /// exit status (a ready timeout).
    pub(super) async fn end(&mut self, proc: &mut Proc, end: End) -> Option<ExitReason> {
        let asked = matches!(end, End::Stop | End::Kill);
        let reason = self.bring_down(proc, end).await;
        sweep(proc.pid, asked);
        reason
    }

    async fn bring_down(&mut self, proc: &mut Proc, end: End) -> Option<ExitReason> {
        let pid = proc.pid;
        match end {
            End::Exited => None,
            End::NotReady => {
                signal_child(pid, libc::SIGKILL);
                exited(proc.exit.as_ref(), pid).await;
                Some(ExitReason::NotReady {
                    timeout_ms: millis(self.policy.ready_timeout),
                })
            }
            End::Stop => {
                self.change(
                    ChildState::Stopping,
                    SupervisorEvent::Stopping(Stopping {
                        pid,
                        signal: StopSignal::Term,
                        grace_ms: Some(millis(self.policy.grace)),
                    }),
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
                None
            }
            End::Kill => {
                self.change(
                    ChildState::Stopping,
                    SupervisorEvent::Stopping(Stopping {
                        pid,
                        signal: StopSignal::Kill,
                        grace_ms: None,
                    }),
                );
                signal_child(pid, libc::SIGKILL);
                exited(proc.exit.as_ref(), pid).await;
                None
            }
        }
    }
}

/// Sweeps what an exited, unreaped replica process left in its group (and, when `asked` to stop,
/// anywhere in its session) before it is reaped: until then its pid, hence both ids, cannot be
/// reused. Unasked deaths keep the session: a step still running holds its task's lock, and the
/// queue's recovery decides about that task.
fn sweep(pid: u32, asked: bool) {
    kill_group(pgid(pid), libc::SIGKILL);
    if asked {
        process::kill_session(pid, libc::SIGKILL);
        // Steps that left the session too (`setsid`, daemons): their cgroups.
        if let Some(steps) = orchestrate_base::cgroup::StepsOf::find(pid) {
            steps.kill();
        }
    }
}
