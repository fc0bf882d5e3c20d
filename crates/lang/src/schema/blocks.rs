//! The blocks a workflow file and a role file share: `budget:` and `isolation:`. Does not say
//! which wins when both set them (the engine decides, when it runs).

use schemars::JsonSchema;
use serde_json::Value;

use super::scalar::{Flag, Text};

/// Limits on what a run (or each task of a role) may spend; at least one must be set.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, extend("minProperties" = 1))]
pub(crate) struct BudgetFile {
    /// Most US dollars the agent steps may cost, as the runtimes report it.
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 1e9))]
    pub(crate) max_cost_usd: Option<f64>,
    /// Most tokens (input and output) the agent steps may use.
    #[schemars(range(min = 1))]
    pub(crate) max_tokens: Option<u32>,
    /// Most seconds of wall time.
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 31_536_000))]
    pub(crate) max_wall_sec: Option<f64>,
}

/// Where the steps run: `worktree` (a git worktree per task), `none`, or
/// `{worktree: {base, keep, branch, dir}}`.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub(crate) enum IsolationFile {
    /// `worktree` with the defaults, or `none`.
    Kind(IsolationKind),
    /// `{worktree: {...}}` or `{none: null}`: exactly one key.
    Block(IsolationBlock),
}

/// An isolation by name.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub(crate) enum IsolationKind {
    /// A git worktree per task, with the defaults.
    Worktree,
    /// Run in the workspace itself.
    None,
}

/// An isolation as a mapping of one kind to its settings.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub(crate) struct IsolationBlock {
    /// A git worktree per task; empty for the defaults.
    pub(crate) worktree: Option<WorktreeFile>,
    /// Run in the workspace itself (the value is not read).
    pub(crate) none: Option<Value>,
}

/// The settings of `isolation: {worktree: ...}`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct WorktreeFile {
    /// What new branches start from (default: the workspace's HEAD).
    pub(crate) base: Option<Text>,
    /// `true`: keep the worktree after a success too.
    pub(crate) keep: Option<Flag>,
    /// The branch name, with `{role}`, `{task}` and `{workflow}`
    /// (default `orchestrate/{role}/{task}`).
    pub(crate) branch: Option<Text>,
    /// Where worktrees go, relative to the workspace (default `.orchestrate/worktrees`).
    pub(crate) dir: Option<Text>,
    /// A git remote: a task's branch is pushed there after a success, and a task that names a
    /// `branch` (a JSON task's field) starts from that branch fetched from there.
    pub(crate) remote: Option<Text>,
}
