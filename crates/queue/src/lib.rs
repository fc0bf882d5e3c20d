//! The task queue: the `TaskQueue` trait and its filesystem backend (enqueue, claim, lease, complete, recover, quarantine), terminal task records (`status.json`), cancel requests, and cleaning `processed/`. Knows nothing of workflows: a second backend implements the same trait from its own crate.

#[macro_use]
pub mod fault;

pub mod cancel;
pub mod processed;
pub mod queue;
pub mod record;
