//! A role file (`agents/<role>.yaml`) and the swarm settings file (`swarm.yaml`) as users
//! write them. Does not describe the role's workflow (`workflow`).

use schemars::JsonSchema;

use super::blocks::{BudgetFile, IsolationFile};
use super::scalar::{Number, Text};

/// A role of the swarm: its inbox, the workflow each task runs, and how many at once.
#[derive(JsonSchema)]
#[schemars(title = "orchestrate role", deny_unknown_fields)]
pub(crate) struct RoleFile {
    /// The role's name (default: the file's name without its extension).
    pub(crate) name: Option<Text>,
    /// What the role does, for people.
    pub(crate) description: Option<Text>,
    /// The role's inbox, relative to the workspace (default `inbox/<name>`).
    pub(crate) inbox: Option<Text>,
    /// The workflow each task runs, relative to the workspace.
    pub(crate) workflow: Text,
    /// Task workflows one role process runs at once (default 1).
    #[schemars(range(min = 1, max = 1024))]
    pub(crate) concurrency: Option<u32>,
    /// Role processes `swarm up` starts (default 1).
    #[schemars(range(min = 1, max = 256))]
    pub(crate) replicas: Option<u32>,
    /// Attempts before `failed/` (a dead worker costs one).
    #[schemars(range(min = 1, max = 100))]
    pub(crate) max_attempts: Option<u32>,
    /// Seconds an attempt may run before it is stopped and fails.
    #[schemars(range(min = 0, max = 31_536_000))]
    pub(crate) task_timeout_sec: Option<Number>,
    /// The default runtime of the workflow's agent steps.
    pub(crate) runtime: Option<Text>,
    /// The default model of the workflow's agent steps.
    pub(crate) model: Option<Text>,
    /// Where open writers cannot be seen: milliseconds a task file must be still before it is
    /// taken (default 500).
    #[schemars(range(max = 600_000))]
    pub(crate) settle_ms: Option<u32>,
    /// Seconds a holder may be silent before it is stopped and its task requeued (default 60).
    #[schemars(range(min = 0, max = 31_536_000))]
    pub(crate) hung_after_sec: Option<Number>,
    /// Limits on what each task may spend.
    pub(crate) budget: Option<BudgetFile>,
    /// The default `idle_timeout_sec` of the workflow's agent steps.
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 31_536_000))]
    pub(crate) idle_timeout_sec: Option<f64>,
    /// What the role's steps may do; absent: anything.
    pub(crate) capabilities: Option<Vec<Capability>>,
    /// Where each task runs: in the workspace or a git worktree of its own.
    pub(crate) isolation: Option<IsolationFile>,
    /// Labels a machine must all have to run this role's tasks (on a PostgreSQL queue shared
    /// by several machines; elsewhere its role processes only take in dropped files).
    pub(crate) machines: Option<Vec<Text>>,
}

/// What a role's steps may do.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub(crate) enum Capability {
    /// `command` steps.
    Command,
    /// `provider` steps.
    Provider,
    /// `enqueue` steps.
    Enqueue,
    /// `approval` steps.
    Approval,
    /// `wait_for` steps.
    WaitFor,
    /// Agent steps with `phase: readonly`.
    Readonly,
    /// Agent steps with `phase: plan`.
    Plan,
    /// Agent steps with `phase: write`.
    Write,
    /// Agent steps with `phase: full`.
    Full,
}

/// The swarm settings (`WORKSPACE/swarm.yaml`): swarm-wide daily limits and the queue's
/// database.
#[derive(JsonSchema)]
#[schemars(title = "orchestrate swarm settings", deny_unknown_fields)]
pub(crate) struct SwarmFile {
    /// Limits on what all roles together may spend per day.
    pub(crate) budget: Option<SwarmBudgetFile>,
    /// The PostgreSQL database of the swarm's queue, shared by every machine:
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DATABASE` or `host=… user=… dbname=…`
    /// (`ORCHESTRATE_QUEUE_URL` overrides it; a password may instead come from
    /// `ORCHESTRATE_QUEUE_PASSWORD_FILE` or `ORCHESTRATE_QUEUE_PASSWORD`).
    pub(crate) queue: Option<String>,
    /// This machine's labels, which roles' `machines:` ask for (`ORCHESTRATE_MACHINE_LABELS` or
    /// `swarm up --labels` override them).
    pub(crate) machine_labels: Option<Vec<Text>>,
}

/// Swarm-wide daily limits.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct SwarmBudgetFile {
    /// Most US dollars per day.
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 1e9))]
    pub(crate) max_cost_usd_per_day: Option<f64>,
    /// Most tokens per day.
    #[schemars(range(min = 1))]
    pub(crate) max_tokens_per_day: Option<u32>,
}
