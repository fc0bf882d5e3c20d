//! The swarm supervisor: one process per role replica, kept running, stopped on request.
//!
//! Owns `orchestrate swarm up / down / status`: spawning each replica's process (the argv it is
//! given, normally `orchestrate agent ROLE --replica N`), the ready handshake
//! (`READY_FD_ENV`), restarts with exponential backoff and an Erlang/OTP-style intensity limit,
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
//!
//! This file only declares the submodules and re-exports the public surface; lowest first:
//! `error`, `spec` (what the caller gives: replicas, the roster, the charge question), `policy`
//! (timing, backoff, the intensity limit), `exit` (why a process ended), `status_file` (the
//! records' paths and `status.json`), `event` (the lines of `events.jsonl` as types), `ready`
//! (the ready pipe), `proc` (one replica process: spawn, signal, reap), `orphans` (the
//! subreaper's reaping), `lock`, `leftovers` (replicas of a dead supervisor), `records` (the
//! loop's writer), `replica` (one replica's actor: spawn, watch, restart) with the `impl Actor`
//! block of `stop` (bringing its process down, the sweep), `actor` ([`supervise_with`]: the
//! loop) with the `impl Supervisor` block of `reload`; then the commands' side: `status`,
//! `render`, `down`, `detach`. No submodule imports one above it.

mod actor;
mod detach;
mod down;
mod error;
mod event;
mod exit;
mod leftovers;
mod lock;
mod orphans;
mod policy;
mod proc;
mod ready;
mod records;
mod reload;
mod render;
mod replica;
mod spec;
mod status;
mod status_file;
mod stop;

#[cfg(test)]
mod tests;

pub use actor::{Report, supervise_with};
pub use detach::{detach, wait_up};
pub use down::{DownReport, down, stop_orphans};
pub use error::SupervisorError;
pub use event::json_schema as events_json_schema;
pub use policy::Policy;
pub use render::render_status;
pub use spec::{ChargeToTask, ChildSpec, RoleProblem, Roster};
pub use status::{RoleLoad, SwarmState, SwarmStatus, status};
pub use status_file::{ChildState, ChildStatus, SupervisorInfo, status_path, swarm_dir};
