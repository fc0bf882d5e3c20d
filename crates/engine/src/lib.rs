//! The workflow engine: the runner (control flow, steps, retries, approvals, budgets, fan-out, sub-workflows, convergence), run records (state snapshots and events), roles and their queues, worktrees.

pub mod approval;
pub mod budget;
pub(crate) mod converge;
pub mod event;
pub mod events;
pub mod progress;
pub mod role;
pub mod runner;
pub mod runs;
pub mod state;
pub mod step_result;
pub(crate) mod subflow;
pub mod worktree;
