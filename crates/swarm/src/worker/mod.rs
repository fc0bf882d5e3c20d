//! One role process: watches the role's inbox, claims tasks and runs the role's workflow for each.
//!
//! Owns: discovery (notify events as hints, directory listings as the truth: at start, on a
//! rescan flag or watcher error, and on a timer), the dispatch loop with its concurrency limit,
//! each task's attempt (variables, timeout, heartbeat, status.json, the final move), periodic
//! recovery, readiness reporting to a supervisor, and graceful stop. Does not implement the
//! queue protocol (`queue`) or the workflow language (`runner`).
//!
//! This file only declares the submodules, re-exports the public surface and composes
//! [`run_agent`]; lowest first: `log` (the `say!` macro), `options`, `cluster` (the queue on
//! PostgreSQL), `shared` (what a version of the role shares, the slots), `task_vars`, `discover`
//! (watch, listings, candidates), `steer` (pause, breakers, budget, cancel requests), `reload`,
//! `parent` (the supervisor), `recover`, `finish` (status.json, the move) under `attempt` (one
//! task's run), then `agent` (the loop's state and its wake-ups) with the `impl Agent` blocks of
//! `dispatch` (claims) and `stop` (graceful stop, supervisor gone). No submodule imports one above it.

mod agent;
mod attempt;
mod cluster;
mod discover;
mod dispatch;
mod finish;
mod log;
mod options;
mod parent;
mod recover;
mod reload;
mod shared;
mod steer;
mod stop;
mod task_vars;

use std::path::Path;

use tokio_util::sync::CancellationToken;

pub use cluster::open_queue;

/// This machine's name in leases, records and the cluster's lists: `ORCHESTRATE_MACHINE`, else
/// the host name.
pub fn machine() -> String {
    cluster::machine_name()
}
pub use options::{AgentOptions, AgentReport};
pub use parent::SUPERVISOR_PID_ENV;
pub use task_vars::{TaskFacts, task_json, task_variables};

/// Runs the role process until it is stopped (or, `--once`, until what is queued is done):
/// starts watching, then claims and runs tasks as they come; at the end waits for the queued
/// trace exports.
pub async fn run_agent(
    workspace: &Path,
    version: orchestrate_engine::role::Version,
    options: AgentOptions,
    stop: CancellationToken,
    kill: CancellationToken,
) -> Result<AgentReport, String> {
    let mut agent = agent::Agent::start(workspace, version, options, stop, kill)?;
    let report = agent.run().await?;
    orchestrate_observe::otlp::flush();
    Ok(report)
}
