//! What the caller gives the supervisor: the replicas to run ([`ChildSpec`]), the [`Roster`]
//! asked again on a reload (with the roles that cannot start, [`RoleProblem`]), and the question
//! whether a death is a task's fault ([`ChargeToTask`]).
//!
//! Does not build them from the role files: the binary crate does, knowing the roles.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What the supervisor starts for one role replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// Unique among the children, e.g. `engineer#1`.
    pub name: String,
    /// The role it runs (`orchestrate agent ROLE`).
    pub role: String,
    /// Which replica of the role, from 1 (`--replica`).
    pub replica: u32,
    /// Program and arguments, run directly (no shell), in WORKSPACE.
    pub argv: Vec<String>,
    /// Added to the inherited environment.
    pub env: Vec<(String, String)>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RoleProblem {
    /// The role's name (its file under `agents/`).
    pub role: String,
    /// `file:line:column: message`.
    pub message: String,
}
