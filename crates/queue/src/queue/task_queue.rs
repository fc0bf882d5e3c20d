//! The `TaskQueue` trait: the queue operations a role process needs, and the filesystem
//! queue's implementation of it.
//!
//! Owns the interface a second backend (PostgreSQL) implements from its own crate. Does not
//! hold any protocol logic: each method calls the function of this folder that does it.

use std::path::PathBuf;
use std::time::Duration;

use super::claim::claim;
use super::complete::{Completion, complete, complete_all};
use super::enqueue::{Enqueued, enqueue};
use super::error::QueueError;
use super::layout::Layout;
use super::lease::{Claim, ClaimResult, LeaseCheck, Owner};
use super::recover::{Recovered, recover, release};
use crate::record::TaskStatus;

/// The queue operations a role process needs, behind one interface: the filesystem queue
/// ([`Layout`]) implements it today; a PostgreSQL queue for many machines (`FOR UPDATE SKIP
/// LOCKED`, an attempt column as the fence on completion, a rescuer for dead workers) will
/// implement the same operations. `candidate` is a discovery hint (an inbox file name); a
/// backend that has no such notion claims the next available task instead.
pub trait TaskQueue: Send + Sync {
    /// The role whose tasks this queue holds.
    fn role(&self) -> &str;
    /// Adds a task, with `id` or a new one; `source` says who enqueued it (for the record).
    fn enqueue(
        &self,
        id: Option<&str>,
        content: &[u8],
        correlation_id: Option<&str>,
        source: &str,
    ) -> Result<Enqueued, QueueError>;
    /// Tries to claim the task `candidate` as `owner`: `settle` is how long a file written in
    /// place must be still when its writers cannot be known, `max_bytes` the largest task taken.
    fn claim(
        &self,
        candidate: &str,
        owner: &Owner,
        settle: Duration,
        max_bytes: u64,
    ) -> Result<ClaimResult, QueueError>;
    /// Tells the queue the claim's holder is alive; whether it may go on. A queue whose
    /// leases can run out (a database's) answers [`LeaseCheck::Lost`] before they do, so
    /// that the holder stops the attempt's processes in time.
    fn heartbeat(&self, claim: &mut Claim) -> LeaseCheck;
    /// Whether the queue hands out its next task whatever the candidate (a database queue):
    /// the loop then asks again after each claim and once a second while idle, with an empty
    /// candidate, and inbox entries are only tasks to take in.
    fn pulls(&self) -> bool {
        false
    }
    /// Whether this process runs the role's tasks (this machine has the labels the role's
    /// `machines:` asks for) or only takes in the files dropped into its inbox. A queue that
    /// does not take files in has nothing to do then: the loop claims nothing.
    fn run_here(&self, _runs: bool) {}
    /// Success or failure: the task's terminal record.
    fn complete(
        &self,
        claim: &Claim,
        success: bool,
        status: &TaskStatus,
    ) -> Result<PathBuf, QueueError>;
    /// [`TaskQueue::complete`] for several attempts that ended at about the same time, one
    /// result each, in order: a backend commits them together where it can (the filesystem
    /// queue syncs their records in one go; a database would use one transaction).
    fn complete_all(&self, done: &[Completion<'_>]) -> Vec<Result<PathBuf, QueueError>> {
        done.iter()
            .map(|c| self.complete(c.claim, c.success, c.status))
            .collect()
    }
    /// Gives a claim back uncharged (shutdown).
    fn release(&self, claim: Claim, reason: &str) -> Result<&'static str, QueueError>;
    /// Gives up an attempt whose lease was lost ([`LeaseCheck::Lost`]) after its processes were
    /// stopped: its files are set aside and the task is left to the queue, which requeues it
    /// charged (or fails it after `max_attempts`). A queue whose leases never run out releases it.
    fn give_up(&self, claim: Claim, reason: &str) -> Result<&'static str, QueueError> {
        self.release(claim, reason)
    }
    /// Puts back claims whose processes are all gone: into the inbox for another attempt, or
    /// into `failed/` once `max_attempts` have started; a holder dead or silent for longer than
    /// `hung_after` has its step's processes killed first.
    fn recover(
        &self,
        max_attempts: u32,
        hung_after: Option<Duration>,
    ) -> Result<Vec<Recovered>, QueueError>;
}

impl TaskQueue for Layout {
    fn role(&self) -> &str {
        &self.role
    }
    fn enqueue(
        &self,
        id: Option<&str>,
        content: &[u8],
        correlation_id: Option<&str>,
        source: &str,
    ) -> Result<Enqueued, QueueError> {
        enqueue(self, id, content, correlation_id, source)
    }
    fn claim(
        &self,
        candidate: &str,
        owner: &Owner,
        settle: Duration,
        max_bytes: u64,
    ) -> Result<ClaimResult, QueueError> {
        claim(self, candidate, owner, settle, max_bytes)
    }
    fn heartbeat(&self, claim: &mut Claim) -> LeaseCheck {
        claim.heartbeat();
        LeaseCheck::Held
    }
    fn complete(
        &self,
        claim: &Claim,
        success: bool,
        status: &TaskStatus,
    ) -> Result<PathBuf, QueueError> {
        complete(self, claim, success, status)
    }
    fn complete_all(&self, done: &[Completion<'_>]) -> Vec<Result<PathBuf, QueueError>> {
        complete_all(self, done)
    }
    fn release(&self, claim: Claim, reason: &str) -> Result<&'static str, QueueError> {
        release(self, claim, reason)
    }
    fn recover(
        &self,
        max_attempts: u32,
        hung_after: Option<Duration>,
    ) -> Result<Vec<Recovered>, QueueError> {
        recover(self, max_attempts, hung_after)
    }
}
