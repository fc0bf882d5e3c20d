//! The filesystem task queue: `inbox/<role>/*.task` in, `processed/` or `failed/` out.
//!
//! Owns: the protocol of `../PROTOCOL.md` on one machine: durable enqueue (tmp, fsync, rename
//! without replace, fsync dir), claiming with a lock and one rename, leases, completion by one
//! rename of the task's directory, recovery of tasks whose owners died, quarantine of bad input,
//! and listing. Does not run workflows (`worker` does) and does not watch directories.
//!
//! Layout, all inside WORKSPACE so every move is a rename on one filesystem:
//!
//! ```text
//! inbox/<role>/<id>.task                   queued (the inbox directory is configurable per role)
//! running/<role>/<id>/task                 claimed: the task file, locked for the whole attempt
//! running/<role>/<id>/lease.json           who holds it (pid, start time, boot id), attempt
//! running/<role>/<id>/events.jsonl etc.    the attempt's run records: events.jsonl, logs/
//! processed/<UTC ts>_<role>_<id>/          finished: task, status.json, lease.json, run records
//! failed/<UTC ts>_<role>_<id>/             failed or quarantined, with status.json saying why
//! .orchestrate/queue/<role>/<id>.json      sidecar: correlation id, attempts so far, history
//! ```
//!
//! The lock is the truth about ownership: the claimer takes `flock` on the task file and the
//! descriptor is inherited by every process of the attempt, so the lock is free exactly when
//! every process of the attempt is gone, however it died. Nothing is decided by age alone.
//!
//! This folder holds one step of the protocol per file; this module declares and re-exports
//! them, so `orchestrate_queue::queue::claim` and the rest keep their paths.

mod claim;
mod complete;
mod enqueue;
mod error;
mod layout;
mod lease;
mod list;
mod quarantine;
mod recover;
mod task_queue;

pub use claim::{InboxFile, take_inbox_file, write_lease};
pub use complete::{Completion, final_name, move_finished, publish, write_records};
pub use enqueue::{Enqueued, enqueue, retry, task_id};
pub use error::QueueError;
pub use layout::{DEFAULT_MAX_TASK_BYTES, Layout, Meta};
pub use lease::{Claim, ClaimResult, GUARD_STOPPED, Lease, LeaseCheck, Owner, holders};
pub use list::{InboxEntry, TaskInfo, TaskState, depth, inbox_extras, list};
pub use quarantine::{quarantine_invalid_name, refuse};
pub use recover::{Recovered, set_aside};
pub use task_queue::TaskQueue;
