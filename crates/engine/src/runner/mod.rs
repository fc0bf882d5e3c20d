//! The interpreter: walks a validated workflow and runs its steps in order.
//!
//! Owns: control flow (sequence, `when`, `on` gotos, `_end`, `for_each`, bounded visits),
//! retries, output capture into step results, `wait_for`, provider argv composition, and
//! recording every step in the event log and the state snapshot. Resume is replay: completed
//! results recorded in `events.jsonl` are fed back in order instead of running their steps again,
//! so the path taken is the same and no completed step runs twice.
//!
//! This file holds the [`Runner`] and what its files share (its configuration, its report, how
//! a step ended); each file beside it adds one `impl Runner` block of one responsibility.
//!
//! Does not spawn processes itself (`exec`), parse YAML (`load`) or parse arguments (`cli`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::budget::{BudgetState, InheritedLimits};
use crate::events::EventLog;
use crate::state::{RunDir, RunState, RunStatus};
use crate::step_result::StepResult;
use orchestrate_lang::model::Workflow;

mod agent;
mod approval;
mod budget;
mod capture;
mod child;
mod enqueue;
mod execute;
pub mod exit;
mod fanout;
mod flow;
mod lifecycle;
mod loops;
mod phase;
mod prepare;
mod record;
mod replay;
mod result;
mod scope;
mod step;
mod wait_for;
mod watch;

/// At most this much of a text step's stdout is kept in state (the spec's 8 KB).
pub(crate) const TEXT_KEEP_BYTES: usize = 8 * 1024;
/// JSON capture parses at most this much stdout; more is a parse failure (the spec's 1 MB).
pub(crate) const JSON_LIMIT_BYTES: usize = 1024 * 1024;
/// Lines capture keeps at most this many lines (the spec's 10,000).
pub(crate) const LINES_LIMIT: usize = 10_000;
/// Lines capture reads at most this much stdout into memory.
pub(crate) const LINES_BYTES_LIMIT: usize = 16 * 1024 * 1024;
/// Grace between SIGTERM and SIGKILL when a step is stopped.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(5);

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run's id.
    pub run_id: String,
    /// How the run ended.
    pub status: RunStatus,
    /// The command's exit code ([`exit`]).
    pub exit_code: u8,
    /// Why the run failed or was interrupted; `None` when it succeeded.
    pub error: Option<String>,
    /// RUN_ROOT: the directory of the run's records.
    pub run_root: PathBuf,
    /// The step that ended the run (the last one run).
    pub last_step: Option<String>,
    /// What the step recorded last produced (its text output, its lines, or its JSON), shown
    /// after a successful run of a workflow without `outputs:`.
    pub last_output: Option<String>,
    /// Tasks the run handed to other roles, in order.
    pub enqueued: Vec<orchestrate_queue::queue::Enqueued>,
    /// Files the run's steps wrote through `output_file`, relative to the workspace.
    pub outputs: Vec<String>,
    /// What the run's agent steps spent (every attempt), for the swarm's ledger.
    pub spent: crate::budget::Spend,
    /// The tokens behind `spent`, by kind.
    pub(crate) usage: orchestrate_runtime::parse::Usage,
    /// The workflow's `outputs:` as rendered at its successful end (empty otherwise).
    pub values: Map<String, Value>,
    /// The exit code of the step whose failure ended the run.
    pub step_exit_code: Option<i32>,
}

/// Everything a run needs besides the workflow.
#[derive(Clone)]
pub struct RunConfig {
    /// Where the swarm and the run's records live: queues, `.orchestrate/`, approvals, ledger.
    pub(crate) workspace: PathBuf,
    /// Where the code is, when it is not the workspace (`isolation: worktree`): the steps' cwd
    /// and what every path a step names (`input_file`, `output_file`, `prompt_file`,
    /// `enqueue.file`, `wait_for`), `${run.workspace}` and the readonly check resolve against.
    pub checkout: Option<PathBuf>,
    pub(crate) context: Map<String, Value>,
    pub(crate) cancel: CancellationToken,
    /// Print a line per step on stderr.
    pub progress: bool,
    /// Results of steps from an earlier run (for `run-step --run`), visible as `${steps.*}`.
    pub preset_results: BTreeMap<String, StepResult>,
    /// RUN_ROOT when it is not `.orchestrate/runs/<run_id>` (a task's run lives in its task
    /// directory, so that the task's records move with it).
    pub run_root: Option<PathBuf>,
    /// `${task.*}` when the run is a task's.
    pub task: Option<Value>,
    /// The correlation id carried into enqueued tasks (default: the run id).
    pub correlation_id: Option<String>,
    /// Descriptors every step process inherits (a task's lock).
    pub inherit_fds: Vec<i32>,
    /// The role's runtime and model, for provider steps that do not name them.
    pub default_provider: Option<String>,
    /// The model for those provider steps; `None`: the runtime's default.
    pub default_model: Option<String>,
    /// Whether `resume` may continue this run. A task's attempt is not resumable (a retry is a
    /// new attempt), so it skips what only resume needs: the run lock, the workflow copy and
    /// fsync of events and snapshots; its durable record is the task's status.json and move.
    pub resumable: bool,
    /// `--runtime`: the runtime or profile every agent step runs on.
    pub runtime_override: Option<String>,
    /// `runtimes.yaml` of the workspace.
    pub profiles: std::sync::Arc<orchestrate_runtime::profile::Profiles>,
    /// `--allow-full`: agent steps may use `phase: full`.
    pub allow_full: bool,
    /// The role's `budget:` (the stricter of it and the workflow's applies, limit by limit).
    pub budget: Option<orchestrate_lang::model::Budget>,
    /// The swarm's daily limits (`swarm.yaml`), counted against the workspace's ledger.
    pub swarm_budget: Option<orchestrate_lang::model::SwarmConfig>,
    /// The role's `idle_timeout_sec`, for its agent steps that set none.
    pub default_idle_timeout: Option<Duration>,
    /// Where progress goes (the cli's renderer); `None`: lines on stderr when `progress`.
    pub reporter: Option<Arc<dyn crate::progress::Reporter>>,
    /// Sees every event as it is recorded (a role process feeds its breakers from it).
    pub observer: Option<Observer>,
    /// Workspace paths (`dir/`) whose changes a readonly step's check ignores: a swarm's queue
    /// directories, which other tasks and roles change while this one runs.
    pub ignore_changes: Vec<String>,
    /// The git branch the steps work on, under `isolation: worktree` (`${run.branch}`).
    pub branch: Option<String>,
    /// Where `enqueue` steps hand tasks to (a swarm's database queue); `None`: the target
    /// role's inbox.
    pub enqueuer: Option<Enqueuer>,
    /// The role's `capabilities:` (its name and the list): a step needing another is refused
    /// when it is reached, whatever the loader said (defence in depth).
    pub capabilities: Option<(String, Vec<String>)>,
    /// A child run's ancestors' limits, with what each had spent when this run started: the
    /// child's spending counts against them too.
    pub(crate) inherited: Vec<InheritedLimits>,
    /// A child run's parent, recorded in its `run_started` event.
    pub(crate) parent: Option<crate::event::ParentRun>,
    /// Secret names its ancestors declare: a child's steps do not see them either (unless they
    /// list them), and their values are masked in its records.
    pub(crate) inherited_secrets: Vec<String>,
}

impl RunConfig {
    /// Where the steps work: the checkout, or the workspace itself.
    pub(crate) fn code_dir(&self) -> &Path {
        self.checkout.as_deref().unwrap_or(&self.workspace)
    }
}

/// A callback on each recorded event.
pub type Observer = std::sync::Arc<dyn Fn(&crate::event::Event) + Send + Sync>;

/// Hands a task to a role's queue: (the role's queue directories, its name if given, its
/// bytes, its correlation id, who sent it).
pub type Enqueuer = std::sync::Arc<
    dyn Fn(
            &orchestrate_queue::queue::Layout,
            Option<&str>,
            &[u8],
            Option<&str>,
            &str,
        )
            -> Result<orchestrate_queue::queue::Enqueued, orchestrate_queue::queue::QueueError>
        + Send
        + Sync,
>;

impl RunConfig {
    /// A configuration with every option at its default: a resumable run of `workspace` whose
    /// `${context}` is `context`, stopped when `cancel` is.
    pub fn new(
        workspace: PathBuf,
        context: Map<String, Value>,
        cancel: CancellationToken,
    ) -> RunConfig {
        RunConfig {
            workspace,
            checkout: None,
            context,
            cancel,
            progress: false,
            preset_results: BTreeMap::new(),
            run_root: None,
            task: None,
            correlation_id: None,
            inherit_fds: Vec::new(),
            default_provider: None,
            default_model: None,
            resumable: true,
            runtime_override: None,
            profiles: std::sync::Arc::new(orchestrate_runtime::profile::Profiles::default()),
            allow_full: false,
            budget: None,
            swarm_budget: None,
            default_idle_timeout: None,
            reporter: None,
            observer: None,
            enqueuer: None,
            branch: None,
            ignore_changes: Vec::new(),
            capabilities: None,
            inherited: Vec::new(),
            parent: None,
            inherited_secrets: Vec::new(),
        }
    }
}

/// Why a run could not start, resume or keep its records; a failing step is not one (it is in
/// the run's status).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A run record could not be written.
    #[error("failed to write the run's records under {}: {source}", path.display())]
    Io {
        /// The record being written (`events.jsonl`, `state.json`) or the run's directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The run's `state.json` could not be read, or its lock taken.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The run cannot be resumed.
    #[error("failed to resume run {run_id}: {message}")]
    Resume {
        /// The run.
        run_id: String,
        /// Why not, for a person.
        message: String,
    },
    /// A fan-out item's task ended without a result (tokio aborted it); the fan-out is cancelled.
    #[error("failed to join the items of fan-out step `{step}`: {message}")]
    Lane {
        /// The fan-out step.
        step: String,
        /// tokio's join error.
        message: String,
    },
}

/// How a step ended, for control flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Succeeded,
    Failed,
    Skipped,
    /// `goto: _end` was taken somewhere below: the run ends successfully.
    End,
    /// An approval was rejected, or the step's `rejected_when` held.
    Rejected,
}

/// A step failure the run could not route around.
#[derive(Debug, Clone)]
struct Failure {
    exit_code: i32,
    message: String,
    /// The failing step's own exit code, when a step's failure is what failed.
    step_exit_code: Option<i32>,
}

/// A recorded execution: its lane (empty for the run's own step list; see [`fanout`]) and its
/// ordinal in that lane.
type ExecKey = (Vec<u64>, u64);

/// Journal of completed results from an earlier attempt of this run, by lane and execution
/// ordinal: the step's name and result.
#[derive(Default)]
struct Journal {
    entries: Arc<HashMap<ExecKey, (String, StepResult)>>,
    /// Ordinals at or past this one are ignored: the earlier attempt diverged or failed there.
    cutoff: u64,
}

/// One `for_each` level: the loop variable and its position.
#[derive(Clone)]
struct LoopFrame {
    var: String,
    item: Value,
    index: usize,
    total: usize,
}

/// One run of a workflow, started or resumed: owns its state, its event log and its lock.
pub struct Runner {
    workflow: Arc<Workflow>,
    config: RunConfig,
    dir: RunDir,
    state: RunState,
    /// One log for the run, shared by the lanes of a fan-out.
    events: Arc<std::sync::Mutex<EventLog>>,
    /// What the engine writes for steps, for the readonly checks (shared by a fan-out's lanes).
    engine_writes: phase::EngineWrites,
    /// The child runs started so far (`RunState::children`), shared by a fan-out's lanes so
    /// that the owner's snapshots name the children its items started.
    children: Arc<std::sync::Mutex<std::collections::BTreeMap<String, crate::state::ChildLink>>>,
    journal: Journal,
    /// Where this runner's executions are numbered: empty for the run's own step list; a
    /// fan-out item's runner has `[..parent lane, fan-out exec, item index]` ([`fanout`]).
    lane: Vec<u64>,
    /// How progress lines name the lane (`Each #2 › Checks lint`); empty for the run's own.
    lane_label: String,
    /// A failed step does not end this lane's run on resume (a fan-out item whose join
    /// outlives failures): its recorded result is replayed like a success.
    failure_is_outcome: bool,
    /// The step whose result was recorded (or replayed) last.
    last_recorded: Option<String>,
    /// A `for_each` or `parallel` step that completed before a resume is being walked again
    /// to replay its body: its own events are not written again (see [`Runner::replaying`]).
    replaying_loop: bool,
    /// Latest result per step name.
    results: BTreeMap<String, StepResult>,
    executions: u64,
    events_at_snapshot: u64,
    secret_values: Vec<String>,
    /// Names of every secret the workflow declares: stripped from the environment of steps that
    /// do not list them.
    secret_names: HashSet<String>,
    failure: Option<Failure>,
    /// `${feedback}`: what the last rejection edge carried (empty strings before any).
    feedback: Value,
    /// What the step running now sees as `${feedback}`: the pending feedback when this step is
    /// the one the rejection led to, empty strings otherwise.
    active_feedback: Value,
    /// The phase of the last agent step, to record phase transitions.
    last_phase: Option<orchestrate_lang::model::Phase>,
    last_step: Option<String>,
    enqueued: Vec<orchestrate_queue::queue::Enqueued>,
    /// Spending and limits (`budget:`).
    budget: BudgetState,
    _lock: Option<std::fs::File>,
}
