//! The interpreter: walks a validated workflow and runs its steps in order.
//!
//! Owns: control flow (sequence, `when`, `on` gotos, `_end`, `for_each`, bounded visits),
//! retries, output capture into step results, `wait_for`, provider argv composition, and
//! recording every step in the event log and the state snapshot. Resume is replay: completed
//! results recorded in `events.jsonl` are fed back in order instead of running their steps again,
//! so the path taken is the same and no completed step runs twice.
//!
//! Does not spawn processes itself (`exec`), parse YAML (`load`) or parse arguments (`cli`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::events::{self, EventLog};
use crate::state::{RunDir, RunState, RunStatus};
use orchestrate_base::exec::{self, Outcome};
use orchestrate_base::fsutil;
use orchestrate_lang::model::{
    Capture, Condition, Items, Pointer, Step, StepKind, Target, Workflow,
};
use orchestrate_lang::template::{self, Lookup, Template, Undefined, VarRef};

#[path = "fanout.rs"]
pub mod fanout;

/// At most this much of a text step's stdout is kept in state (the spec's 8 KB).
pub const TEXT_KEEP_BYTES: usize = 8 * 1024;
/// JSON capture parses at most this much stdout; more is a parse failure (the spec's 1 MB).
pub const JSON_LIMIT_BYTES: usize = 1024 * 1024;
/// Lines capture keeps at most this many lines (the spec's 10,000).
pub const LINES_LIMIT: usize = 10_000;
/// Lines capture reads at most this much stdout into memory.
pub const LINES_BYTES_LIMIT: usize = 16 * 1024 * 1024;
/// Grace between SIGTERM and SIGKILL when a step is stopped.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// Exit codes of `orchestrate run` and `resume` (one table, used everywhere).
pub mod exit {
    pub const SUCCESS: u8 = 0;
    pub const STEP_FAILED: u8 = 1;
    pub const INVALID: u8 = 2;
    pub const TIMEOUT: u8 = 124;
    pub const INTERRUPTED: u8 = 130;
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub status: RunStatus,
    pub exit_code: u8,
    pub error: Option<String>,
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
    pub usage: orchestrate_runtime::parse::Usage,
    /// The workflow's `outputs:` as rendered at its successful end (empty otherwise).
    pub values: Map<String, Value>,
    /// The exit code of the step whose failure ended the run.
    pub step_exit_code: Option<i32>,
}

/// Everything a run needs besides the workflow.
#[derive(Clone)]
pub struct RunConfig {
    /// Where the swarm and the run's records live: queues, `.orchestrate/`, approvals, ledger.
    pub workspace: PathBuf,
    /// Where the code is, when it is not the workspace (`isolation: worktree`): the steps' cwd
    /// and what every path a step names (`input_file`, `output_file`, `prompt_file`,
    /// `enqueue.file`, `wait_for`), `${run.workspace}` and the readonly check resolve against.
    pub checkout: Option<PathBuf>,
    pub context: Map<String, Value>,
    pub cancel: CancellationToken,
    /// Print a line per step on stderr.
    pub progress: bool,
    /// Results of steps from an earlier run (for `run-step --run`), visible as `${steps.*}`.
    pub preset_results: Map<String, Value>,
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
    /// The role's `capabilities:` (its name and the list): a step needing another is refused
    /// when it is reached, whatever the loader said (defence in depth).
    pub capabilities: Option<(String, Vec<String>)>,
    /// A child run's ancestors' limits, with what each had spent when this run started: the
    /// child's spending counts against them too.
    pub inherited: Vec<InheritedLimits>,
    /// A child run's parent (`{run_id, step, exec}`), recorded in its `run_started` event.
    pub parent: Option<Value>,
    /// Secret names its ancestors declare: a child's steps do not see them either (unless they
    /// list them), and their values are masked in its records.
    pub inherited_secrets: Vec<String>,
}

/// The limits of a run above a child run, and what had been spent against them before it.
#[derive(Debug, Clone)]
pub struct InheritedLimits {
    pub limits: crate::budget::Limits,
    pub base: crate::budget::Spend,
    /// When that run started (its `max_wall_sec` counts from here).
    pub started: Instant,
}

impl RunConfig {
    /// Where the steps work: the checkout, or the workspace itself.
    pub fn code_dir(&self) -> &Path {
        self.checkout.as_deref().unwrap_or(&self.workspace)
    }
}

/// A callback on each recorded event: its name and fields.
pub type Observer = std::sync::Arc<dyn Fn(&str, &Value) + Send + Sync>;

impl RunConfig {
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
            preset_results: Map::new(),
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
            ignore_changes: Vec::new(),
            capabilities: None,
            inherited: Vec::new(),
            parent: None,
            inherited_secrets: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("failed to write the run's records under {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("failed to resume run {run_id}: {message}")]
    Resume { run_id: String, message: String },
    #[error("failed to join the items of fan-out step `{step}`: {message}")]
    Lane { step: String, message: String },
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

/// What `converge:` says after a visit.
enum Converged {
    Going,
    /// The loop stopped: go to `on_stall`, or (`None`) fail the run.
    Stalled(Option<String>),
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
    entries: Arc<HashMap<ExecKey, (String, Value)>>,
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

pub struct Runner {
    workflow: Arc<Workflow>,
    config: RunConfig,
    dir: RunDir,
    state: RunState,
    /// One log for the run, shared by the lanes of a fan-out.
    events: Arc<std::sync::Mutex<EventLog>>,
    /// What the engine writes for steps, for the readonly checks (shared by a fan-out's lanes).
    engine_writes: EngineWrites,
    /// The child runs started so far (`RunState::children`), shared by a fan-out's lanes so
    /// that the owner's snapshots name the children its items started.
    children: Arc<std::sync::Mutex<Map<String, Value>>>,
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
    results: Map<String, Value>,
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

/// What the run has spent against which limits.
struct BudgetState {
    limits: crate::budget::Limits,
    /// A child run's ancestors' limits (see [`RunConfig::inherited`]).
    inherited: Vec<InheritedLimits>,
    /// Every agent attempt so far and its tokens by kind (replayed results included; a child
    /// run's spending counts in its `workflow:` step's result), shared by a fan-out's lanes.
    spent: SharedSpend,
    /// When this process started the run (`max_wall_sec` counts from here).
    started: Instant,
    /// The failure message of a crossing, which replaces the step's generic one.
    failure: Option<String>,
    /// A cost limit was set but some tokens had no price: said once.
    warned_unpriced: bool,
    /// A limit was crossed: the run stops where it is, taking no `on` edge (shared by a
    /// fan-out's lanes, so that the step that forked them stops too).
    crossed: Arc<std::sync::OnceLock<String>>,
}

/// Files the engine itself writes for a run's steps (an `output_file`, an enqueued task), each
/// with when it was last registered and how many writers hold it: a readonly step's check
/// leaves out what the engine wrote during the step's window (its own output file, a fan-out
/// sibling's), but still catches a change to any of them outside it. Shared by a fan-out's lanes.
#[derive(Clone, Default)]
struct EngineWrites(Arc<std::sync::Mutex<WriteLog>>);

#[derive(Default)]
struct WriteLog {
    next: u64,
    /// Workspace-relative path (as the fingerprint names it) -> (sequence, writers).
    paths: HashMap<String, (u64, u32)>,
}

/// A readonly step's window: the sequence it opened at and what was being written then (by the
/// engine's own writers, and through descriptors the engine or its ancestors held open).
struct WriteWindow {
    from: u64,
    open: HashSet<String>,
    held: HashSet<String>,
}

/// Held while the engine writes `path`; the writer count drops with it.
struct WriteGuard {
    log: EngineWrites,
    path: String,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if let Some(entry) = self.log.lock().paths.get_mut(&self.path) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}

impl EngineWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, WriteLog> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a write of `path` (under `root`, the directory fingerprints are taken of);
    /// `None` for a path outside it, which no check sees anyway.
    fn begin(&self, root: &Path, path: &Path) -> Option<WriteGuard> {
        let rel = path.strip_prefix(root).ok()?;
        let rel = rel.to_string_lossy().into_owned();
        let mut log = self.lock();
        let seq = log.next;
        log.next += 1;
        let entry = log.paths.entry(rel.clone()).or_insert((seq, 0));
        entry.0 = seq;
        entry.1 += 1;
        Some(WriteGuard {
            log: self.clone(),
            path: rel,
        })
    }

    /// Opens a window for a step working in `root`.
    fn window(&self, root: &Path) -> WriteWindow {
        let held = orchestrate_base::held_files::held_for_writing(root);
        let log = self.lock();
        WriteWindow {
            held,
            from: log.next,
            open: log
                .paths
                .iter()
                .filter(|(_, (_, writers))| *writers > 0)
                .map(|(path, _)| path.clone())
                .collect(),
        }
    }

    /// Whether the engine wrote `path` during `window`.
    fn wrote_during(&self, window: &WriteWindow, path: &str) -> bool {
        window.open.contains(path)
            || self
                .lock()
                .paths
                .get(path)
                .is_some_and(|(seq, _)| *seq >= window.from)
    }
}

/// What a run has spent (and the tokens behind it, by kind), shared by every lane of the run
/// so that concurrent items count against one budget.
#[derive(Clone, Default)]
struct SharedSpend(
    Arc<std::sync::Mutex<(crate::budget::Spend, orchestrate_runtime::parse::Usage)>>,
);

impl SharedSpend {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, (crate::budget::Spend, orchestrate_runtime::parse::Usage)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self) -> crate::budget::Spend {
        self.lock().0
    }

    fn usage(&self) -> orchestrate_runtime::parse::Usage {
        self.lock().1
    }

    /// Counts what a step result spent (an agent's usage, a child run's total).
    fn count(&self, result: &Value) {
        let mut spent = self.lock();
        spent.0 = spent.0.plus(crate::budget::Spend::of_result(result));
        if let Ok(usage) =
            serde_json::from_value::<orchestrate_runtime::parse::Usage>(result["usage"].clone())
        {
            spent.1.add(&usage);
        }
    }
}

/// The state a run's first snapshot holds, rebuilt from its `run_started` event.
fn state_from_run_started(dir: &RunDir, workspace: &Path) -> Option<RunState> {
    let records = events::read(&dir.events()).ok()?;
    let started = records.iter().find(|r| r["event"] == "run_started")?;
    let text = |key: &str| started[key].as_str().map(str::to_string);
    let ts = text("ts")?;
    Some(RunState {
        format_version: crate::state::STATE_FORMAT,
        run_id: text("run_id")?,
        workflow: text("workflow")?,
        workflow_name: text("name").unwrap_or_default(),
        fingerprint: text("fingerprint").unwrap_or_default(),
        workspace: workspace.display().to_string(),
        status: RunStatus::Running,
        started_at: ts.clone(),
        updated_at: ts,
        finished_at: None,
        timestamp_utc: text("timestamp_utc")?,
        context: started["context"].as_object().cloned().unwrap_or_default(),
        current_step: None,
        exit_code: None,
        error: None,
        executions: 0,
        events_seq: 0,
        resumes: 0,
        steps: Map::new(),
        outputs: Map::new(),
        children: Map::new(),
    })
}

impl Runner {
    /// Creates a new run directory for `workflow` and returns a runner ready to start it.
    pub fn create(
        workflow: Workflow,
        source_text: &str,
        config: RunConfig,
    ) -> Result<Runner, RunError> {
        let run_id = orchestrate_base::ids::new_run_id();
        let dir = match &config.run_root {
            Some(root) => RunDir { root: root.clone() },
            None => RunDir::new(&config.workspace, &run_id),
        };
        dir.create().map_err(|source| RunError::Io {
            path: dir.root.clone(),
            source,
        })?;
        let lock = if config.resumable {
            Some(dir.lock_run()?)
        } else {
            None
        };
        if config.resumable || !source_text.is_empty() {
            // The copy resume uses, and the one `report` checks the path against (a swarm
            // task's run keeps it too: the role's workflow file may change after it).
            std::fs::write(dir.workflow_copy(), source_text).map_err(|source| RunError::Io {
                path: dir.workflow_copy(),
                source,
            })?;
        }
        let now = orchestrate_base::clock::now_rfc3339();
        let state = RunState {
            format_version: crate::state::STATE_FORMAT,
            run_id: run_id.clone(),
            workflow: workflow.path.display().to_string(),
            workflow_name: workflow.name.clone(),
            fingerprint: workflow.fingerprint.clone(),
            workspace: config.workspace.display().to_string(),
            status: RunStatus::Running,
            started_at: now.clone(),
            updated_at: now,
            finished_at: None,
            timestamp_utc: orchestrate_base::clock::compact(chrono::Utc::now()),
            context: config.context.clone(),
            current_step: None,
            exit_code: None,
            error: None,
            executions: 0,
            events_seq: 0,
            resumes: 0,
            steps: Map::new(),
            outputs: Map::new(),
            children: Map::new(),
        };
        Self::with_state(workflow, config, dir, state, Journal::default(), lock)
    }

    /// Reopens run `run_id` to continue it from the first step that did not complete.
    /// `config` gives the workspace, cancellation and runtime choices; the context comes from
    /// the run's own state.
    pub fn resume(run_id: &str, config: RunConfig) -> Result<Runner, RunError> {
        let workspace = config.workspace.clone();
        let workspace = workspace.as_path();
        if orchestrate_base::ids::check_id(run_id).is_err() {
            return Err(RunError::Resume {
                run_id: run_id.to_string(),
                message: format!(
                    "`{run_id}` is not a run id (run ids look like 20261124T005538Z-a1b2c3; see `ls {}`)",
                    RunDir::runs_dir(workspace).display()
                ),
            });
        }
        let dir = RunDir::new(workspace, run_id);
        if !dir.root.is_dir()
            && let Some(parent) = crate::runs::parent_of_child(workspace, run_id)
        {
            // A child run continues only with its parent, which replays up to its step.
            return Err(RunError::Resume {
                run_id: run_id.to_string(),
                message: format!(
                    "it is the child run of a `workflow:` step; resume its parent instead: `orchestrate resume {parent}`"
                ),
            });
        }
        if !dir.root.is_dir() {
            return Err(RunError::Resume {
                run_id: run_id.to_string(),
                message: format!(
                    "no run directory {}; list runs with `ls {}`",
                    dir.root.display(),
                    RunDir::runs_dir(workspace).display()
                ),
            });
        }
        Self::resume_in(dir, config)
    }

    /// Reopens the run in `dir` (a run of the workspace, or a child run inside its parent's
    /// RUN_ROOT) to continue it from the first step that did not complete.
    pub fn resume_in(dir: RunDir, config: RunConfig) -> Result<Runner, RunError> {
        let workspace = config.workspace.clone();
        let workspace = workspace.as_path();
        let run_id = dir
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let run_id = run_id.as_str();
        let resume_err = |message: String| RunError::Resume {
            run_id: run_id.to_string(),
            message,
        };
        let lock = dir.lock_run()?;
        let mut state = if dir.state().exists() {
            dir.read_state()?
        } else {
            // Killed between recording `run_started` and its first snapshot: that event holds
            // everything the first snapshot would have.
            state_from_run_started(&dir, &config.workspace).ok_or_else(|| {
                resume_err(format!(
                    "it was stopped before it started (no state.json and no run_started event in {}); start it again with `orchestrate run`",
                    dir.events().display()
                ))
            })?
        };
        if state.status == RunStatus::Succeeded {
            return Err(resume_err(
                "it already succeeded; start a new run with `orchestrate run`".into(),
            ));
        }
        // Child workflows (`workflow:` steps) load from the workspace: a child run already
        // started resumes from its own copy, one not started yet runs the file as it is now.
        // A child file that no longer loads does not stop the resume (the children that had
        // started do not need it); its step fails with the problems if it has to start it.
        let workflow = orchestrate_lang::load::load_in(workspace, &dir.workflow_copy())
            .or_else(|err| orchestrate_lang::load::load_file(&dir.workflow_copy()).map_err(|_| err))
            .map_err(|err| resume_err(err.render()))?;
        let mut workflow = workflow;
        workflow.path = PathBuf::from(&state.workflow);
        // The limits come from the workflow file as it is now, where a crossing's message says
        // to raise them; everything else from the saved copy. A file that no longer loads
        // leaves the copy's limits.
        if let Ok(current) =
            orchestrate_lang::load::load_in(workspace, &workspace.join(&state.workflow))
        {
            workflow.budget = current.budget;
        }
        // Strict: a damaged line in the middle would cut the journal short and run completed
        // steps again, so it stops the resume instead.
        let records = events::read_checked(&dir.events())
            .map_err(|message| {
                resume_err(format!(
                    "{message}; look at {} before resuming",
                    dir.events().display()
                ))
            })?
            .records;
        let mut entries = HashMap::new();
        for record in &records {
            if record["event"] == "step_finished"
                && let (Some(exec), Some(step)) = (record["exec"].as_u64(), record["step"].as_str())
            {
                entries.insert(
                    (fanout::lane_of(record), exec),
                    (step.to_string(), record["result"].clone()),
                );
            }
        }
        let journal = Journal {
            entries: Arc::new(entries),
            cutoff: u64::MAX,
        };
        state.resumes += 1;
        state.status = RunStatus::Running;
        state.finished_at = None;
        state.exit_code = None;
        state.error = None;
        let mut config = config;
        config.context = state.context.clone();
        Self::with_state(workflow, config, dir, state, journal, Some(lock))
    }

    fn with_state(
        workflow: Workflow,
        config: RunConfig,
        dir: RunDir,
        state: RunState,
        journal: Journal,
        lock: Option<std::fs::File>,
    ) -> Result<Runner, RunError> {
        let secret_names: HashSet<String> = workflow
            .all_steps()
            .iter()
            .flat_map(|s| s.secrets.iter().cloned())
            .chain(config.inherited_secrets.iter().cloned())
            .collect();
        let secret_values = events::mask_list(
            secret_names
                .iter()
                .filter_map(|name| std::env::var(name).ok()),
        );
        let mut events =
            EventLog::open(&dir.events(), secret_values.clone()).map_err(|source| {
                RunError::Io {
                    path: dir.events(),
                    source,
                }
            })?;
        if let Some(reporter) = config.reporter.clone() {
            events.set_tee(Arc::new(move |line: &str| {
                reporter.report(&crate::progress::Progress::Event(line.to_string()))
            }));
        }
        let results = config.preset_results.clone();
        let inherited = config.inherited.clone();
        let limits = crate::budget::Limits {
            run: orchestrate_lang::model::Budget::stricter(
                workflow.budget.as_ref(),
                config.budget.as_ref(),
            ),
            day: config
                .swarm_budget
                .clone()
                .map(|swarm| (swarm, config.workspace.clone())),
        };
        Ok(Runner {
            workflow: Arc::new(workflow),
            config,
            dir,
            children: Arc::new(std::sync::Mutex::new(state.children.clone())),
            engine_writes: EngineWrites::default(),
            state,
            events: Arc::new(std::sync::Mutex::new(events)),
            journal,
            lane: Vec::new(),
            lane_label: String::new(),
            failure_is_outcome: false,
            last_recorded: None,
            replaying_loop: false,
            results,
            executions: 0,
            events_at_snapshot: 0,
            secret_values,
            secret_names,
            failure: None,
            feedback: json!({"reason": "", "from": "", "to": ""}),
            active_feedback: json!({"reason": "", "from": ""}),
            last_phase: None,
            last_step: None,
            budget: BudgetState {
                limits,
                inherited,
                spent: SharedSpend::default(),
                started: Instant::now(),
                failure: None,
                warned_unpriced: false,
                crossed: Arc::default(),
            },
            enqueued: Vec::new(),
            _lock: lock,
        })
    }

    pub fn run_id(&self) -> &str {
        &self.state.run_id
    }

    pub fn workflow_name(&self) -> &str {
        &self.workflow.name
    }

    pub fn run_root(&self) -> &Path {
        &self.dir.root
    }

    /// Runs the workflow to its end and records the outcome.
    pub async fn run(mut self) -> Result<RunReport, RunError> {
        self.budget.started = Instant::now();
        let resumed = self.state.resumes > 0;
        if resumed {
            // A cancel request belongs to the session it stopped.
            orchestrate_queue::cancel::clear_run_cancel(&self.dir.root);
            self.event(
                "run_resumed",
                json!({"resumes": self.state.resumes, "journal": self.journal.entries.len()}),
                true,
            )?;
        } else {
            let mut started = json!({
                "run_id": self.state.run_id,
                "workflow": self.state.workflow,
                "name": self.workflow.name,
                "fingerprint": self.workflow.fingerprint,
                "context": self.state.context,
                "timestamp_utc": self.state.timestamp_utc,
                "pid": std::process::id(),
            });
            if let Some(parent) = &self.config.parent {
                started["parent"] = parent.clone();
            }
            self.event("run_started", started, true)?;
        }
        if self.config.resumable {
            // Resume needs a snapshot from the start; a task's attempt writes its one at the end.
            self.snapshot()?;
        }
        let workflow = Arc::clone(&self.workflow);
        self.warn_unpriceable(&workflow.steps)?;
        let flow = self.run_list(&workflow.steps, &[]).await;
        let (status, exit_code, error) = match flow {
            Err(err) => return Err(err),
            Ok(_) if self.config.cancel.is_cancelled() => {
                // Stopped by `orchestrate cancel` rather than a signal or shutdown: say who.
                let error = match orchestrate_queue::cancel::run_cancel(&self.dir.root) {
                    Some(request) => {
                        self.event(
                            "run_cancelled",
                            json!({"by": request.by, "at": request.at, "requested_by_pid": request.pid, "step": self.last_step}),
                            true,
                        )?;
                        request.describe()
                    }
                    None => "interrupted".to_string(),
                };
                (RunStatus::Interrupted, exit::INTERRUPTED, Some(error))
            }
            Ok(Flow::Failed) => {
                let failure = self.failure.clone().unwrap_or(Failure {
                    exit_code: 1,
                    message: "a step failed".into(),
                    step_exit_code: None,
                });
                let code = match failure.exit_code {
                    124 => exit::TIMEOUT,
                    2 => exit::INVALID,
                    _ => exit::STEP_FAILED,
                };
                (RunStatus::Failed, code, Some(failure.message))
            }
            Ok(_) => match self.render_outputs() {
                Ok(()) => (RunStatus::Succeeded, exit::SUCCESS, None),
                Err(message) => (RunStatus::Failed, exit::INVALID, Some(message)),
            },
        };
        self.finish(status, exit_code, error)
    }

    fn finish(
        mut self,
        status: RunStatus,
        exit_code: u8,
        error: Option<String>,
    ) -> Result<RunReport, RunError> {
        self.state.status = status;
        self.state.exit_code = Some(i32::from(exit_code));
        self.state.error = error.clone();
        self.state.finished_at = Some(orchestrate_base::clock::now_rfc3339());
        self.state.current_step = None;
        let mut finished = json!({"status": status, "exit_code": exit_code, "error": error});
        if !self.state.outputs.is_empty() {
            finished["outputs"] = json!(self.state.outputs);
        }
        self.event("run_finished", finished, true)?;
        if self.config.resumable {
            self.snapshot()?;
        }
        Ok(RunReport {
            run_id: self.state.run_id.clone(),
            status,
            exit_code,
            error: error.map(|e| events::mask(&e, &self.secret_values)),
            run_root: self.dir.root.clone(),
            last_step: self.last_step.clone(),
            last_output: self
                .last_recorded
                .as_ref()
                .and_then(|name| self.results.get(name))
                .and_then(shown_output)
                .map(|text| events::mask(&text, &self.secret_values)),
            enqueued: self.enqueued.clone(),
            outputs: self
                .results
                .values()
                .filter_map(|r| r["output_file"].as_str().map(str::to_string))
                .collect(),
            spent: self.budget.spent.get(),
            usage: self.budget.spent.usage(),
            values: self.state.outputs.clone(),
            step_exit_code: (status == RunStatus::Failed)
                .then(|| self.failure.as_ref().and_then(|f| f.step_exit_code))
                .flatten(),
        })
    }

    /// Renders the workflow's `outputs:` at its successful end, into the state (and so the
    /// report and `run_finished`). A value that cannot be rendered fails the run.
    fn render_outputs(&mut self) -> Result<(), String> {
        let workflow = Arc::clone(&self.workflow);
        let mut values = Map::new();
        for (name, template) in &workflow.outputs {
            let value = template.render_value(&self.scope(&[])).map_err(|e| {
                let file = self.workflow.path.display();
                format!(
                    "output `{name}` ({file} line {}) could not be rendered: {e}",
                    template.at.0
                )
            })?;
            values.insert(name.clone(), value);
        }
        if !self.secret_values.is_empty() {
            let text = serde_json::to_string(&values).unwrap_or_default();
            if let Ok(Value::Object(masked)) =
                serde_json::from_str(&events::mask(&text, &self.secret_values))
            {
                values = masked;
            }
        }
        self.state.outputs = values;
        Ok(())
    }

    /// Why the role may not run `step`, if it may not (see [`RunConfig::capabilities`]).
    fn refused(&self, step: &Step) -> Option<String> {
        let (role, allowed) = self.config.capabilities.as_ref()?;
        let needed = step.kind.capability()?;
        (!allowed.iter().any(|c| c == needed)).then(|| {
            format!(
                "role `{role}` may not run this step: it needs capability `{needed}` and the role has [{}]; add it to the role's `capabilities` or give the step to another role",
                allowed.join(", ")
            )
        })
    }

    fn event(&mut self, name: &str, fields: Value, durable: bool) -> Result<(), RunError> {
        if self.replaying()
            && matches!(
                name,
                "step_started"
                    | "loop_started"
                    | "iteration_started"
                    | "iteration_finished"
                    | "branch_started"
                    | "branch_finished"
            )
        {
            return Ok(());
        }
        if let Some(observer) = &self.config.observer {
            observer(name, &fields);
        }
        let durable = durable && self.config.resumable;
        if let Some(reporter) = &self.config.reporter
            && let Some(progress) = crate::progress::Progress::from_event(name, &fields)
        {
            reporter.report(&progress);
        }
        let mut fields = fields;
        if !self.lane.is_empty() {
            fields["lane"] = json!(self.lane);
        }
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .append(name, fields, durable)
            .map_err(|source| RunError::Io {
                path: self.dir.events(),
                source,
            })
    }

    /// Rewrites `state.json`. Called at start and end, and during the run only when the events
    /// since the last snapshot reach half the run's length so far: the snapshot grows with the
    /// run, so this keeps the amortized cost per step constant.
    fn snapshot(&mut self) -> Result<(), RunError> {
        self.state.executions = self.executions;
        self.state.events_seq = self.events_seq();
        self.state.updated_at = orchestrate_base::clock::now_rfc3339();
        self.state.steps = self.results.clone();
        self.state.children = self
            .children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut state = self.state.clone();
        if !self.secret_values.is_empty() {
            let text = serde_json::to_string(&state).unwrap_or_default();
            if let Ok(masked) = serde_json::from_str(&events::mask(&text, &self.secret_values)) {
                state = masked;
            }
        }
        // The first snapshot of a resumable run and every final one are durable (resume reads
        // them); the ones between are caches of the event log.
        let durable =
            self.config.resumable && (self.events_at_snapshot == 0 || state.finished_at.is_some());
        self.dir
            .write_state(&state, durable)
            .map_err(|source| RunError::Io {
                path: self.dir.state(),
                source,
            })?;
        self.events_at_snapshot = self.events_seq();
        Ok(())
    }

    fn events_seq(&self) -> u64 {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .seq()
    }

    fn maybe_snapshot(&mut self) -> Result<(), RunError> {
        if !self.config.resumable || !self.lane.is_empty() {
            // A fan-out item's lane: the runner that owns the run snapshots it at the join.
            // A swarm task's attempt: its records are events.jsonl and the status.json the
            // role writes; a snapshot would cost a file per task and be read by nobody.
            return Ok(());
        }
        let seq = self.events_seq();
        let since = seq - self.events_at_snapshot;
        if since >= 64.max(seq / 2) {
            self.snapshot()?;
        }
        Ok(())
    }

    fn progress(&self, text: &str) {
        // Lines of fan-out items say whose they are: `[Each #2] ✓ Work (0.31s)`.
        let labelled;
        let text = if self.lane_label.is_empty() {
            text
        } else {
            labelled = format!("[{}] {text}", self.lane_label);
            labelled.as_str()
        };
        match &self.config.reporter {
            Some(reporter) => reporter.report(&crate::progress::Progress::Message(events::mask(
                text,
                &self.secret_values,
            ))),
            None if self.config.progress => {
                eprintln!("{}", events::mask(text, &self.secret_values))
            }
            None => {}
        }
    }

    /// A progress notification for the renderer, if there is one.
    fn notify(&self, progress: crate::progress::Progress) {
        if let Some(reporter) = &self.config.reporter {
            reporter.report(&progress);
        }
    }

    /// Runs one list of steps (the workflow's, or a `for_each` body) from its first step.
    fn run_list<'a>(
        &'a mut self,
        steps: &'a [Step],
        loops: &'a [LoopFrame],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Flow, RunError>> + Send + 'a>>
    {
        Box::pin(async move {
            let index_of: HashMap<&str, usize> = steps
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.as_str(), i))
                .collect();
            let mut visits: HashMap<&str, u32> = HashMap::new();
            let mut converging: HashMap<&str, crate::converge::Track> = HashMap::new();
            let mut trail: Vec<&str> = Vec::new();
            let mut failed = false;
            let mut i = 0;
            while i < steps.len() {
                if self.config.cancel.is_cancelled() {
                    return Ok(Flow::Failed);
                }
                let step = &steps[i];
                let count = visits.entry(step.name.as_str()).or_default();
                *count += 1;
                let limit = step.max_visits.unwrap_or(self.workflow.max_visits);
                trail.push(step.name.as_str());
                if *count > limit {
                    let cycle = loop_cycle(&trail, &step.name);
                    let message = format!(
                        "loop detected: step `{}` (line {}) was entered {} times, more than max_visits {limit}; cycle: {cycle}",
                        step.name, step.line, count
                    );
                    self.progress(&format!("✗ {message}"));
                    self.event("loop_detected", json!({"step": step.name, "visits": count, "max_visits": limit, "cycle": cycle}), true)?;
                    self.failure = Some(Failure {
                        exit_code: 1,
                        message,
                        step_exit_code: None,
                    });
                    return Ok(Flow::Failed);
                }
                if self.over_budget_before(step)? {
                    return Ok(Flow::Failed);
                }
                let flow = self.run_step(step, loops).await?;
                if self.config.cancel.is_cancelled() || self.budget.is_crossed() {
                    // A crossing is not the step's failure to route: no `on` edge is taken.
                    return Ok(Flow::Failed);
                }
                if let Some(converge) = &step.converge
                    && matches!(flow, Flow::Succeeded | Flow::Rejected)
                {
                    let track = converging.entry(step.name.as_str()).or_default();
                    match self.converge_check(step, converge, track, loops)? {
                        Converged::Going => {}
                        Converged::Stalled(Some(target)) => {
                            // A new start: the step it leads back to is judged afresh.
                            converging.remove(step.name.as_str());
                            self.event("goto", json!({"from": step.name, "to": target}), false)?;
                            i = index_of
                                .get(target.as_str())
                                .copied()
                                .unwrap_or(steps.len());
                            continue;
                        }
                        Converged::Stalled(None) => return Ok(Flow::Failed),
                    }
                }
                let target = match flow {
                    Flow::End => return Ok(Flow::End),
                    Flow::Skipped => {
                        i += 1;
                        continue;
                    }
                    flow => edge(step, flow, self.results.get(&step.name)),
                };
                if flow == Flow::Failed
                    && step.on.invalid.is_some()
                    && let Some(result) = self.results.get(&step.name)
                    && result.get("violations").is_some()
                {
                    // The violations travel to the repair step: `${feedback}`.
                    let reason = error_text(result).unwrap_or_default();
                    let to = match target {
                        Some(Target::Step(name)) => name.clone(),
                        _ => String::new(),
                    };
                    self.feedback = json!({"reason": reason, "from": step.name, "to": to, "violations": result["violations"]});
                }
                if flow == Flow::Rejected {
                    // What the rejection said travels to the step it leads to: `${feedback}`.
                    let reason = self
                        .results
                        .get(&step.name)
                        .map(rejection_reason)
                        .unwrap_or_default();
                    let to = match target {
                        Some(Target::Step(name)) => name.clone(),
                        _ => String::new(),
                    };
                    self.feedback = json!({"reason": reason, "from": step.name, "to": to});
                }
                match target {
                    Some(Target::End) => {
                        self.event("goto", json!({"from": step.name, "to": "_end"}), false)?;
                        return Ok(Flow::End);
                    }
                    Some(Target::Step(name)) => {
                        self.event("goto", json!({"from": step.name, "to": name}), false)?;
                        // The loader checked that every target is in this list.
                        i = index_of.get(name.as_str()).copied().unwrap_or(steps.len());
                    }
                    None if flow == Flow::Succeeded => i += 1,
                    None if flow == Flow::Rejected => {
                        self.failure = Some(Failure {
                            exit_code: 1,
                            message: format!(
                                "step `{}` (line {}) was rejected and has no `on.rejected` edge: {}",
                                step.name,
                                step.line,
                                self.feedback["reason"].as_str().unwrap_or("")
                            ),
                            step_exit_code: None,
                        });
                        return Ok(Flow::Failed);
                    }
                    None => {
                        if self.workflow.strict_flow {
                            return Ok(Flow::Failed);
                        }
                        failed = true;
                        i += 1;
                    }
                }
            }
            Ok(if failed {
                Flow::Failed
            } else {
                Flow::Succeeded
            })
        })
    }

    /// Evaluates `converge.findings` on this visit of `step` and stops the loop when the findings
    /// stopped shrinking or came back unchanged: to `on_stall`, or failing the run.
    fn converge_check(
        &mut self,
        step: &Step,
        converge: &orchestrate_lang::model::Converge,
        track: &mut crate::converge::Track,
        loops: &[LoopFrame],
    ) -> Result<Converged, RunError> {
        use crate::converge::Stall;
        let result = self.results.get(&step.name).cloned().unwrap_or(Value::Null);
        let findings = match &converge.findings {
            orchestrate_lang::model::Findings::Jq(expr) => {
                orchestrate_lang::jq::eval(expr, &result)
                    .map(|mut values| match values.len() {
                        0 => Value::Null,
                        1 => values.remove(0),
                        _ => Value::Array(values),
                    })
                    .map_err(|e| e.to_string())
            }
            orchestrate_lang::model::Findings::Pointer(t) => t
                .render_value(&self.scope(loops))
                .map_err(|e| e.to_string()),
        };
        let file = self.workflow.path.display().to_string();
        let at = format!("step `{}` ({file} line {})", step.name, step.line);
        let stall = match findings.and_then(|f| track.visit(&f, converge.rounds)) {
            Ok(None) => return Ok(Converged::Going),
            Ok(Some(stall)) => stall,
            Err(err) => {
                let message = format!(
                    "{at}: `converge.findings` could not be counted: {err}; make it yield an array or a number"
                );
                self.progress(&format!("✗ {message}"));
                self.failure = Some(Failure {
                    exit_code: 2,
                    message,
                    step_exit_code: None,
                });
                return Ok(Converged::Stalled(None));
            }
        };
        let rounds = converge.rounds;
        let (reason, what) = match &stall {
            Stall::NotShrinking { counts } => (
                "not_shrinking",
                format!(
                    "{at} found {} findings in its last {} rounds: no fewer than {} for {rounds} round{} in a row (`converge.rounds: {rounds}`)",
                    counts
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    counts.len(),
                    counts[0],
                    if rounds == 1 { "" } else { "s" }
                ),
            ),
            Stall::Repeated {
                first,
                round,
                count,
            } => (
                "repeated",
                format!(
                    "{at} returned the same {count} finding{} in round {round} as in round {first}",
                    if *count == 1 { "" } else { "s" }
                ),
            ),
        };
        self.event(
            "loop_not_converging",
            json!({
                "step": step.name,
                "reason": reason,
                "rounds": rounds,
                "counts": track.counts,
                "fingerprints": track.fingerprints,
                "on_stall": converge.on_stall,
            }),
            true,
        )?;
        match &converge.on_stall {
            Some(target) => {
                self.progress(&format!(
                    "↪ not converging: {what}; going to `{target}` (converge.on_stall)"
                ));
                Ok(Converged::Stalled(Some(target.clone())))
            }
            None => {
                let message = format!(
                    "not converging: {what}; fix what keeps the findings coming, raise `converge.rounds`, or set `converge.on_stall` to a step that asks a person"
                );
                self.progress(&format!("✗ {message}"));
                self.failure = Some(Failure {
                    exit_code: 1,
                    message,
                    step_exit_code: None,
                });
                Ok(Converged::Stalled(None))
            }
        }
    }

    /// Runs (or replays) one step and records its result.
    async fn run_step(&mut self, step: &Step, loops: &[LoopFrame]) -> Result<Flow, RunError> {
        self.executions += 1;
        let exec = self.executions;
        // Feedback is for the step the rejection led to, on that visit only.
        self.active_feedback = if self.feedback["to"] == step.name.as_str() {
            let mut active =
                json!({"reason": self.feedback["reason"], "from": self.feedback["from"]});
            if let Some(violations) = self.feedback.get("violations") {
                active["violations"] = violations.clone();
            }
            self.feedback = json!({"reason": "", "from": "", "to": ""});
            active
        } else {
            json!({"reason": "", "from": ""})
        };
        if !matches!(
            step.kind,
            StepKind::ForEach { .. } | StepKind::Parallel { .. }
        ) {
            if let Some(flow) = self.replay(step, exec) {
                return Ok(flow);
            }
        } else if let Some((recorded_flow, recorded)) = self.recorded(step, exec) {
            if recorded_flow == Flow::Skipped {
                return Ok(self.replay(step, exec).unwrap_or(Flow::Skipped));
            }
            // A loop that completed: its body is walked again to replay its steps' results
            // (later steps read them), but the loop's own events are not written again.
            let cutoff = self.journal.cutoff;
            let outer = std::mem::replace(&mut self.replaying_loop, true);
            let flow = self.execute(step, exec, loops).await;
            self.replaying_loop = outer;
            let flow = flow?;
            if self.journal.cutoff != cutoff {
                // The body left the recorded path and ran live: what it did now is the record.
                return Ok(flow);
            }
            // Its body's replayed steps counted what it spent.
            self.replayed(step, recorded_flow, recorded);
            return Ok(flow);
        }
        self.execute(step, exec, loops).await
    }

    /// Runs one step (execution `exec`) and records its result.
    async fn execute(
        &mut self,
        step: &Step,
        exec: u64,
        loops: &[LoopFrame],
    ) -> Result<Flow, RunError> {
        self.state.current_step = Some(step.name.clone());
        self.last_step = Some(step.name.clone());
        let iteration: Vec<usize> = loops.iter().map(|l| l.index).collect();
        let started = Instant::now();
        let started_at = orchestrate_base::clock::now_rfc3339();

        let when = match &step.when {
            None => Ok(true),
            Some(condition) => self.condition(condition, loops),
        };
        let when = match (when, self.refused(step)) {
            (Ok(true), Some(refusal)) => Err(refusal),
            (when, _) => when,
        };
        let mut result = match when {
            Ok(false) => {
                let result =
                    json!({"status": "skipped", "started_at": started_at, "duration": 0.0});
                self.progress(&format!("- {} skipped (condition false)", step.name));
                self.record(step, exec, &iteration, result)?;
                return Ok(Flow::Skipped);
            }
            Err(message) => failed_result(2, message),
            Ok(true) => {
                self.event(
                    "step_started",
                    json!({"step": step.name, "exec": exec, "kind": step.kind.label(), "iteration": iteration}),
                    false,
                )?;
                match &step.kind {
                    StepKind::ForEach {
                        items,
                        var,
                        steps,
                        fan,
                    } if fan.fans_out() => {
                        self.fan_out_items(step, exec, items, var, steps, fan, loops)
                            .await?
                    }
                    StepKind::Parallel { branches, fan } => {
                        self.fan_out_branches(step, exec, branches, fan, loops)
                            .await?
                    }
                    StepKind::ForEach {
                        items, var, steps, ..
                    } => match self.for_each(step, items, var, steps, loops).await? {
                        (Flow::End, _) => {
                            let result =
                                json!({"status": "succeeded", "exit_code": 0, "ended_run": true});
                            self.record(
                                step,
                                exec,
                                &iteration,
                                with_timing(result, &started_at, started),
                            )?;
                            return Ok(Flow::End);
                        }
                        (flow, result) => {
                            let _ = flow;
                            result
                        }
                    },
                    StepKind::WaitFor {
                        glob,
                        timeout,
                        poll,
                        min_count,
                    } => {
                        self.wait_for(step, glob, *timeout, *poll, *min_count, loops)
                            .await
                    }
                    StepKind::Command { .. } | StepKind::Provider { .. } | StepKind::Agent(_) => {
                        self.process_step(step, exec, loops).await
                    }
                    StepKind::Approval {
                        message,
                        artifacts,
                        timeout,
                    } => {
                        self.approval(step, exec, message, artifacts, *timeout, loops)
                            .await
                    }
                    StepKind::Enqueue {
                        role,
                        content,
                        name,
                    } => self.enqueue(step, role, content, name.as_ref(), loops),
                    StepKind::Workflow(sub) => self.sub_workflow(step, exec, sub, loops).await?,
                }
            }
        };
        result = with_timing(result, &started_at, started);
        if result["status"] == "failed"
            && result.get("budget_exceeded").is_none()
            && let Some(limit) = self.budget.crossed()
        {
            // A crossing in its body (a loop's item): stopped, not finished; resume reruns it.
            result["budget_exceeded"] = json!(limit);
        }
        if result["status"] == "succeeded"
            && let Some(schema) = &step.output_schema
        {
            check_schema(step, schema, &mut result);
        }
        if result["status"] == "succeeded"
            && let Some(expr) = &step.rejected_when
        {
            match orchestrate_lang::jq::eval_bool(expr, &result) {
                Ok(true) => {
                    result["status"] = json!("rejected");
                    result["rejected_by"] = json!("rejected_when");
                }
                Ok(false) => {}
                Err(err) => {
                    result["status"] = json!("failed");
                    result["exit_code"] = json!(2);
                    result["error"] = json!(format!("in `rejected_when`: {err}"));
                }
            }
        }
        if result["status"] == "rejected" {
            self.progress(&format!(
                "↩ {} rejected: {}",
                step.name,
                rejection_reason(&result)
            ));
            self.record(step, exec, &iteration, result)?;
            return Ok(Flow::Rejected);
        }
        let ok = result["status"] == "succeeded";
        let mark = if ok { "✓" } else { "✗" };
        let mut line = format!(
            "{mark} {} ({:.2}s{})",
            step.name,
            result["duration"].as_f64().unwrap_or(0.0),
            crate::progress::spend_suffix(&result)
        );
        if !ok && let Some(err) = error_text(&result) {
            line.push_str(&format!(": {err}"));
        }
        if !self.replaying() {
            self.progress(&line);
        }
        if !ok && !self.config.cancel.is_cancelled() {
            let exit_code = result["exit_code"].as_i64().unwrap_or(1) as i32;
            let detail = error_text(&result).unwrap_or_else(|| format!("exit code {exit_code}"));
            let message = match self.budget.failure.take() {
                Some(budget) => Some(budget),
                // A crossing inside this step's body already said what stopped the run.
                None if self.budget.is_crossed() && self.failure.is_some() => None,
                None => Some(self.step_failed(step, &detail, &result)),
            };
            if let Some(message) = message {
                self.failure = Some(Failure {
                    exit_code,
                    message,
                    step_exit_code: Some(exit_code),
                });
            }
        }
        self.record(step, exec, &iteration, result)?;
        Ok(if ok { Flow::Succeeded } else { Flow::Failed })
    }

    /// An `approval` step: writes the request, then waits for a decision file.
    async fn approval(
        &mut self,
        step: &Step,
        exec: u64,
        message: &Template,
        artifacts: &[Template],
        timeout: Option<Duration>,
        loops: &[LoopFrame],
    ) -> Value {
        use crate::approval::{self, Verdict};
        let scope = self.scope(loops);
        let message = match message.render(&scope) {
            Ok(m) => m,
            Err(e) => return failed_result(2, format!("in `approval.message`: {e}")),
        };
        let mut files = Vec::new();
        for t in artifacts {
            match t.render(&scope) {
                // Named where the approver looks from: the workspace (a worktree's files by
                // their path in it).
                Ok(f) => files.push(match &self.config.checkout {
                    Some(dir) => {
                        orchestrate_base::fsutil::relative(&self.config.workspace, &dir.join(&f))
                    }
                    None => f,
                }),
                Err(e) => return failed_result(2, format!("in `approval.artifacts`: {e}")),
            }
        }
        let ws = self.config.workspace.clone();
        let run_id = self.state.run_id.clone();
        let request_path = approval::request_path(&ws, &run_id, &step.name);
        let decision_path = approval::decision_path(&ws, &run_id, &step.name);
        let request = approval::Request {
            format_version: 1,
            // Execution numbers repeat on resume, so a decision given while the engine was down
            // still answers the same request.
            request_id: format!("{run_id}-{}{exec}", fanout::log_prefix(&self.lane)),
            run_id: run_id.clone(),
            step: step.name.clone(),
            message: message.clone(),
            artifacts: files.clone(),
            requested_at: orchestrate_base::clock::now_rfc3339(),
            how: vec![
                format!("orchestrate approve {run_id} {} [--note TEXT]", step.name),
                format!("orchestrate reject {run_id} {} --reason TEXT", step.name),
                format!(
                    "or write {} atomically: {{\"decision\": \"approve\"}}",
                    self.relative(&decision_path)
                ),
            ],
        };
        // The same request already written (a resumed run waiting again): keep it, so that a
        // decision given while the engine was down, with or without a request id, still counts.
        let same_request = std::fs::read(&request_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<approval::Request>(&b).ok())
            .is_some_and(|r| r.request_id == request.request_id);
        if !same_request {
            // A decision left from an earlier visit of this step answers another request: keep
            // it, under another name, and wait for a new one.
            if std::fs::metadata(&decision_path).is_ok() {
                let _ = std::fs::rename(
                    &decision_path,
                    approval::dir(&ws, &run_id)
                        .join(format!("{}.decision.{}.json", step.name, exec)),
                );
            }
            let bytes = serde_json::to_vec_pretty(&request).unwrap_or_default();
            if let Err(e) = std::fs::create_dir_all(approval::dir(&ws, &run_id))
                .and_then(|()| orchestrate_base::fsutil::atomic_write(&request_path, &bytes))
            {
                return failed_result(
                    1,
                    format!(
                        "failed to write the approval request {}: {e}",
                        request_path.display()
                    ),
                );
            }
        }
        let written = std::fs::metadata(&request_path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| std::time::SystemTime::now());
        let _ = self.event("approval_requested", json!({"step": step.name, "request": self.relative(&request_path), "message": message, "artifacts": files}), true);
        self.progress(&format!(
            "⏸ {} waits for approval: {message}\n   orchestrate approve {run_id} {}   |   orchestrate reject {run_id} {} --reason ...",
            step.name, step.name, step.name
        ));
        let started = Instant::now();
        let mut complained = false;
        loop {
            match approval::read_decision(&decision_path, &request, written) {
                Ok(Some(decision)) => {
                    let verdict = match decision.decision {
                        Verdict::Approve => "approve",
                        Verdict::Reject => "reject",
                    };
                    let _ = self.event(
                        "approval_decided",
                        json!({"step": step.name, "decision": decision}),
                        true,
                    );
                    let status = if decision.decision == Verdict::Approve {
                        "succeeded"
                    } else {
                        "rejected"
                    };
                    return json!({
                        "status": status,
                        "exit_code": 0,
                        "decision": verdict,
                        "reason": decision.reason.unwrap_or_default(),
                        "note": decision.note.unwrap_or_default(),
                        "by": decision.by,
                        "at": decision.at,
                        "waited": started.elapsed().as_secs_f64(),
                    });
                }
                Ok(None) => {}
                Err(message) => {
                    if !complained {
                        complained = true;
                        let _ = self.event(
                            "approval_unreadable",
                            json!({"step": step.name, "error": message}),
                            false,
                        );
                        self.progress(&format!("! {}: {message}", step.name));
                    }
                }
            }
            if let Some(limit) = timeout
                && started.elapsed() >= limit
            {
                return failed_result(
                    124,
                    format!(
                        "no decision within {:.0}s (approval.timeout_sec)",
                        limit.as_secs_f64()
                    ),
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = self.config.cancel.cancelled() => {
                    let mut result = failed_result(130, "interrupted while waiting for approval".into());
                    result["status"] = json!("interrupted");
                    return result;
                }
            }
        }
    }

    /// A `workflow:` step: renders `with:` in this run's scope and runs the child (`subflow`),
    /// between a `child_started` and a `child_finished` event; the child's spending counts as
    /// this run's.
    async fn sub_workflow(
        &mut self,
        step: &Step,
        exec: u64,
        sub: &orchestrate_lang::model::SubWorkflow,
        loops: &[LoopFrame],
    ) -> Result<Value, RunError> {
        let mut with = Map::new();
        for input in &sub.with {
            match render_json(&input.value, &self.scope(loops)) {
                Ok(value) => {
                    with.insert(input.key.clone(), value);
                }
                Err(e) => {
                    return Ok(failed_result(2, format!("in `with.{}`: {e}", input.key)));
                }
            }
        }
        let root = crate::subflow::child_root(&self.dir.root, &self.lane, exec, &step.name);
        self.event(
            "child_started",
            json!({"step": step.name, "exec": exec, "workflow": sub.path, "run_root": self.relative(&root)}),
            true,
        )?;
        if let Some(name) = root.file_name() {
            self.children
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(
                    name.to_string_lossy().into_owned(),
                    json!({"step": step.name, "exec": exec, "lane": self.lane, "workflow": sub.path, "run_root": self.relative(&root)}),
                );
            if self.config.resumable && self.lane.is_empty() {
                // The parent's state names its running child at once (a lane's owner does at
                // its next snapshot).
                self.snapshot()?;
            }
        }
        self.progress(&format!("▶ {} runs workflow {}", step.name, sub.path));
        let child = crate::subflow::ChildRun {
            step,
            sub,
            exec,
            lane: self.lane.clone(),
            with,
            parent_root: &self.dir.root,
            parent_run_id: &self.state.run_id,
            inherited: self.budget.handed_down(),
            secrets: self.secret_names.iter().cloned().collect(),
        };
        let outcome = crate::subflow::run(&self.config, child, step.timeout).await;
        let mut result = outcome.result;
        self.budget.count(&result);
        if result["status"] == "failed"
            && let Some(crossing) = self.budget.check(self.budget.spent.get())
        {
            // A limit of this run (or an ancestor's) stopped the child: this run stops too,
            // taking no `on` edge, and resume runs the step (continuing its child) again.
            result["budget_exceeded"] = json!(crossing.limit);
            self.budget.cross(crossing.limit);
        }
        self.event(
            "child_finished",
            json!({
                "step": step.name,
                "exec": exec,
                "workflow": sub.path,
                "run_id": outcome.run_id,
                "run_root": self.relative(&outcome.run_root),
                "resumed": outcome.resumed,
                "reused": outcome.reused,
                "status": result["status"],
                "exit_code": result["exit_code"],
            }),
            true,
        )?;
        Ok(result)
    }

    /// An `enqueue` step: writes a task into a role's inbox durably, carrying the correlation id.
    fn enqueue(
        &mut self,
        step: &Step,
        role: &Template,
        content: &orchestrate_lang::model::EnqueueContent,
        name: Option<&Template>,
        loops: &[LoopFrame],
    ) -> Value {
        use orchestrate_lang::model::EnqueueContent;
        let scope = self.scope(loops);
        let rendered = (|| -> Result<(String, Vec<u8>, Option<String>), String> {
            let role = role
                .render(&scope)
                .map_err(|e| format!("in `enqueue.role`: {e}"))?;
            let bytes = match content {
                EnqueueContent::Text(t) => t
                    .render(&scope)
                    .map_err(|e| format!("in `enqueue.text`: {e}"))?
                    .into_bytes(),
                EnqueueContent::File(t) => {
                    let rel = t
                        .render(&scope)
                        .map_err(|e| format!("in `enqueue.file`: {e}"))?;
                    let path = fsutil::resolve_in_workspace(self.config.code_dir(), &rel)
                        .map_err(|e| format!("`enqueue.file`: {e}"))?;
                    std::fs::read(&path)
                        .map_err(|e| format!("cannot read `enqueue.file` {rel}: {e}"))?
                }
                EnqueueContent::Json(value) => {
                    let rendered = render_json(value, &scope)
                        .map_err(|e| format!("in `enqueue.json`: {e}"))?;
                    serde_json::to_vec_pretty(&rendered).unwrap_or_default()
                }
            };
            let name = match name {
                Some(t) => Some(
                    t.render(&scope)
                        .map_err(|e| format!("in `enqueue.name`: {e}"))?,
                ),
                None => None,
            };
            Ok((role, bytes, name))
        })();
        let (role, bytes, name) = match rendered {
            Ok(parts) => parts,
            Err(message) => return failed_result(2, message),
        };
        // A task outlives the run in inbox/ and processed/: no secret value goes into one, even
        // through a file a step wrote.
        let bytes = events::mask_bytes(&bytes, &self.secret_values);
        let layout = match crate::role::layout_for(&self.config.workspace, &role) {
            Ok(layout) => layout,
            Err(message) => return failed_result(2, message),
        };
        let correlation = self
            .config
            .correlation_id
            .clone()
            .unwrap_or_else(|| self.state.run_id.clone());
        let source = format!("run {} step {}", self.state.run_id, step.name);
        match orchestrate_queue::queue::enqueue(
            &layout,
            name.as_deref(),
            &bytes,
            Some(&correlation),
            &source,
        ) {
            Ok(task) => {
                // Written: a readonly sibling running now must not count it as its change.
                drop(self.engine_writes.begin(
                    self.config.code_dir(),
                    &self.config.workspace.join(&task.file),
                ));
                self.progress(&format!(
                    "→ {} handed task {} to {}",
                    step.name, task.id, task.role
                ));
                let result = json!({"status": "succeeded", "exit_code": 0, "task": task});
                self.enqueued.push(task);
                let _ = self.event(
                    "enqueued",
                    json!({"step": step.name, "task": result["task"]}),
                    false,
                );
                result
            }
            Err(err) => failed_result(1, format!("failed to enqueue for role `{role}`: {err}")),
        }
    }

    /// The recorded result of execution `exec` and its outcome, when the earlier attempt
    /// completed it on the path this one is retracing.
    fn recorded(&self, step: &Step, exec: u64) -> Option<(Flow, Value)> {
        if exec >= self.journal.cutoff {
            return None;
        }
        let (name, result) = self.journal.entries.get(&(self.lane.clone(), exec))?;
        if *name != step.name {
            // The path differs from the recorded one.
            return None;
        }
        if result.get("budget_exceeded").is_some() {
            // Stopped by a crossing, not finished: it runs again (under the raised limit).
            return None;
        }
        let flow = match result["status"].as_str() {
            Some("succeeded") => Flow::Succeeded,
            Some("skipped") => Flow::Skipped,
            Some("failed") => Flow::Failed,
            Some("rejected") => Flow::Rejected,
            // Interrupted (or unknown): the step did not complete.
            _ => return None,
        };
        let handled = edge(step, flow, Some(result)).is_some()
            || (flow == Flow::Failed && (!self.workflow.strict_flow || self.failure_is_outcome));
        if matches!(flow, Flow::Failed | Flow::Rejected) && !handled {
            // This failure ended the earlier attempt: the step runs again.
            return None;
        }
        Some((flow, result.clone()))
    }

    /// Feeds back the recorded result of execution `exec` when the earlier attempt completed
    /// it; otherwise stops replaying here.
    fn replay(&mut self, step: &Step, exec: u64) -> Option<Flow> {
        let Some((flow, result)) = self.recorded(step, exec) else {
            self.journal.cutoff = self.journal.cutoff.min(exec);
            return None;
        };
        self.budget.count(&result);
        self.replayed(step, flow, result);
        Some(flow)
    }

    /// A completed step's recorded result becomes its result, as when it ran.
    fn replayed(&mut self, step: &Step, flow: Flow, result: Value) {
        if let Ok(task) =
            serde_json::from_value::<orchestrate_queue::queue::Enqueued>(result["task"].clone())
        {
            self.enqueued.push(task);
        }
        if flow == Flow::Failed {
            // As when it ran: the failure is the run's (or the item's) to report.
            let exit_code = result["exit_code"].as_i64().unwrap_or(1) as i32;
            let detail = error_text(&result).unwrap_or_else(|| format!("exit code {exit_code}"));
            self.failure = Some(Failure {
                exit_code,
                message: self.step_failed(step, &detail, &result),
                step_exit_code: Some(exit_code),
            });
        }
        self.results.insert(step.name.clone(), result);
        self.last_recorded = Some(step.name.clone());
        self.progress(&format!(
            "↺ {} (completed earlier; not run again)",
            step.name
        ));
    }

    /// Walking a completed loop's body again on resume, still on the recorded path: the
    /// loop's own events (its start, items, branches and `step_finished`) were written when it
    /// ran and are not written again.
    fn replaying(&self) -> bool {
        self.replaying_loop && self.journal.cutoff == u64::MAX
    }

    fn record(
        &mut self,
        step: &Step,
        exec: u64,
        iteration: &[usize],
        result: Value,
    ) -> Result<(), RunError> {
        if self.replaying() {
            self.results.insert(step.name.clone(), result);
            return Ok(());
        }
        self.event(
            "step_finished",
            json!({"step": step.name, "exec": exec, "iteration": iteration, "result": result}),
            true,
        )?;
        self.results.insert(step.name.clone(), result);
        self.last_recorded = Some(step.name.clone());
        self.maybe_snapshot()
    }

    fn scope<'a>(&'a self, loops: &'a [LoopFrame]) -> Scope<'a> {
        Scope {
            runner: self,
            loops,
        }
    }

    fn condition(&self, condition: &Condition, loops: &[LoopFrame]) -> Result<bool, String> {
        let scope = self.scope(loops);
        let render = |t: &Template| t.render(&scope).map_err(|e| format!("in `when`: {e}"));
        match condition {
            Condition::Equals { left, right } => Ok(render(left)? == render(right)?),
            Condition::NotEquals { left, right } => Ok(render(left)? != render(right)?),
            Condition::Jq(expr) => orchestrate_lang::jq::eval_bool(expr, &scope.document())
                .map_err(|e| format!("in `when.jq`: {e}")),
        }
    }

    async fn for_each(
        &mut self,
        step: &Step,
        items: &Items,
        var: &str,
        body: &[Step],
        loops: &[LoopFrame],
    ) -> Result<(Flow, Value), RunError> {
        let values = match items {
            Items::Literal(values) => Ok(values.clone()),
            Items::From(pointer) => self.resolve_pointer(pointer),
        };
        let values = match values {
            Ok(values) => values,
            Err(message) => return Ok((Flow::Failed, failed_result(2, message))),
        };
        let total = values.len();
        self.event(
            "loop_started",
            json!({"step": step.name, "total": total}),
            false,
        )?;
        let mut completed = 0;
        let mut outcomes = Vec::with_capacity(total);
        for (index, item) in values.iter().enumerate() {
            let mut frames = loops.to_vec();
            frames.push(LoopFrame {
                var: var.to_string(),
                item: item.clone(),
                index,
                total,
            });
            self.event(
                "iteration_started",
                json!({"step": step.name, "index": index, "total": total}),
                false,
            )?;
            self.last_recorded = None;
            let flow = self.run_list(body, &frames).await?;
            let status = match flow {
                Flow::End => return Ok((Flow::End, Value::Null)),
                Flow::Succeeded | Flow::Skipped => fanout::Status::Succeeded,
                Flow::Failed | Flow::Rejected if self.config.cancel.is_cancelled() => {
                    fanout::Status::Cancelled
                }
                Flow::Failed | Flow::Rejected => fanout::Status::Failed,
            };
            outcomes.push(self.outcome(status, Some((index, item.clone()))));
            if status != fanout::Status::Succeeded {
                outcomes.extend(
                    values
                        .iter()
                        .enumerate()
                        .skip(index + 1)
                        .map(|(later, item)| fanout::not_started(later, item)),
                );
                let message = match &self.failure {
                    Some(f) => format!("iteration {index} failed: {}", f.message),
                    None => format!("iteration {index} failed"),
                };
                let code = self.failure.as_ref().map(|f| f.exit_code).unwrap_or(1);
                let mut result = failed_result(code, message);
                result["iterations"] = json!(completed);
                result["total"] = json!(total);
                fanout::tally(&mut result, outcomes);
                return Ok((Flow::Failed, result));
            }
            completed += 1;
        }
        let mut result =
            json!({"status": "succeeded", "exit_code": 0, "iterations": completed, "total": total});
        fanout::tally(&mut result, outcomes);
        Ok((Flow::Succeeded, result))
    }

    fn resolve_pointer(&self, pointer: &Pointer) -> Result<Vec<Value>, String> {
        let Some(result) = self.results.get(&pointer.step) else {
            return Err(format!(
                "`items_from: {}`: step `{}` has not run yet",
                pointer.text, pointer.step
            ));
        };
        match template::walk(result, &pointer.path) {
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(other) => Err(format!(
                "`items_from: {}` must resolve to an array, found {}",
                pointer.text,
                json_kind(other)
            )),
            None => Err(format!(
                "`items_from: {}` does not exist in the step's result",
                pointer.text
            )),
        }
    }

    async fn wait_for(
        &mut self,
        step: &Step,
        glob: &Template,
        timeout: Duration,
        poll: Duration,
        min_count: usize,
        loops: &[LoopFrame],
    ) -> Value {
        let pattern = match glob.render(&self.scope(loops)) {
            Ok(p) => p,
            Err(err) => return failed_result(2, err.to_string()),
        };
        if let Err(err) = fsutil::resolve_in_workspace(self.config.code_dir(), &pattern) {
            return failed_result(2, format!("`wait_for.glob`: {err}"));
        }
        let full = self.config.code_dir().join(&pattern);
        let full = full.to_string_lossy().into_owned();
        let started = Instant::now();
        let mut polls: u64 = 0;
        self.progress(&format!(
            "… {} waiting for {min_count} file(s) matching {pattern}",
            step.name
        ));
        loop {
            polls += 1;
            let files = match glob::glob(&full) {
                Ok(paths) => paths
                    .filter_map(Result::ok)
                    .filter_map(|p| {
                        p.strip_prefix(self.config.code_dir())
                            .ok()
                            .map(|r| r.display().to_string())
                    })
                    .collect::<Vec<_>>(),
                Err(err) => return failed_result(2, format!("invalid glob `{pattern}`: {err}")),
            };
            let waited = started.elapsed();
            self.notify(crate::progress::Progress::WaitPoll {
                step: step.name.clone(),
                polls,
                found: files.len(),
                wanted: min_count,
            });
            if files.len() >= min_count {
                return json!({
                    "status": "succeeded", "exit_code": 0, "files": files,
                    "wait_duration": waited.as_secs_f64(), "poll_count": polls,
                });
            }
            if waited >= timeout {
                let mut result = failed_result(
                    124,
                    format!(
                        "timed out after {:.1}s waiting for {min_count} file(s) matching `{pattern}` (found {})",
                        timeout.as_secs_f64(),
                        files.len()
                    ),
                );
                result["files"] = json!(files);
                result["wait_duration"] = json!(waited.as_secs_f64());
                result["poll_count"] = json!(polls);
                return result;
            }
            let nap = poll.min(timeout.saturating_sub(waited));
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = self.config.cancel.cancelled() => {
                    let mut result = failed_result(130, "interrupted while waiting".into());
                    result["status"] = json!("interrupted");
                    result["poll_count"] = json!(polls);
                    return result;
                }
            }
        }
    }

    /// A `command` or `provider` step: compose argv, run with retries, capture output.
    async fn process_step(&mut self, step: &Step, exec: u64, loops: &[LoopFrame]) -> Value {
        let prepared = match self.prepare(step, loops) {
            Ok(p) => p,
            Err(message) => return failed_result(2, message),
        };
        let is_provider = matches!(step.kind, StepKind::Provider { .. });
        let retryable = |code: i32| match &step.retry.on_exit_codes {
            Some(codes) => codes.contains(&code),
            None if is_provider => code == 1 || code == 124,
            None => code != 0 && code != 130,
        };
        if let Some(run) = &prepared.agent {
            if self.last_phase != Some(run.phase) {
                let _ = self.event(
                    "phase_entered",
                    json!({"step": step.name, "phase": run.phase, "from": self.last_phase, "runtime": run.name}),
                    false,
                );
                self.last_phase = Some(run.phase);
            }
            for note in &run.notes {
                let _ = self.event(
                    "runtime_note",
                    json!({"step": step.name, "runtime": run.name, "note": note}),
                    false,
                );
            }
        }
        // Agent steps retry on their error class (rate limits, 5xx, timeouts) up to 3 attempts
        // unless the step says otherwise.
        let max_attempts = if prepared.agent.is_some() && !step.retry.explicit {
            3
        } else {
            step.retry.max_attempts
        };
        let mut attempt = 1;
        let mut pauses = 0;
        loop {
            let mut suffix = if attempt > 1 {
                format!(".{attempt}")
            } else {
                String::new()
            };
            if pauses > 0 {
                // The answer that caused a pause keeps its log.
                suffix.push_str(&format!(".p{pauses}"));
            }
            if self.state.resumes > 0 {
                // Execution numbers repeat on resume: keep the earlier attempt's logs.
                suffix.push_str(&format!(".r{}", self.state.resumes));
            }
            // A fan-out item's logs carry its lane, so each item's output is its own file.
            let base = format!(
                "{}{exec:04}-{}{suffix}",
                fanout::log_prefix(&self.lane),
                step.name
            );
            let stdout_log = self.dir.logs().join(format!("{base}.stdout"));
            let stderr_log = self.dir.logs().join(format!("{base}.stderr"));
            let limit = match step.capture {
                Capture::Text => TEXT_KEEP_BYTES,
                Capture::Json => JSON_LIMIT_BYTES + 1,
                Capture::Lines => LINES_BYTES_LIMIT,
            };
            let spec = exec::Spec {
                argv: prepared.argv.clone(),
                env: prepared.env.clone(),
                env_remove: prepared.env_remove.clone(),
                cwd: self.config.code_dir().to_path_buf(),
                stdin: match &prepared.stdin {
                    Some(bytes) => exec::Stdin::Bytes(bytes.clone()),
                    None => exec::Stdin::Null,
                },
                stdout_log: stdout_log.clone(),
                stderr_log: stderr_log.clone(),
                stdout_file: prepared.output_file.clone(),
                capture_limit: limit,
                timeout: step.timeout,
                idle_timeout: step.idle_timeout.or(match &prepared.agent {
                    Some(_) => self.config.default_idle_timeout,
                    None => None,
                }),
                stdout_lines: None,
                stop: None,
                kill_grace: KILL_GRACE,
                secrets: self.secret_values.clone(),
                inherit_fds: self.config.inherit_fds.clone(),
            };
            if attempt > 1 {
                self.progress(&format!("↻ {} attempt {attempt}/{max_attempts}", step.name));
            }
            // The engine's own write of the output file is not the step's change (nor a
            // fan-out sibling's change to this step's workspace).
            let _writing = prepared
                .output_file
                .as_ref()
                .and_then(|path| self.engine_writes.begin(self.config.code_dir(), path));
            let before = match &prepared.agent {
                Some(run) if run.phase.verified_readonly() => {
                    let window = self.engine_writes.window(self.config.code_dir());
                    Some(self.fingerprint(run).map(|snapshot| (snapshot, window)))
                }
                _ => None,
            };
            let _ = self.event(
                "process_started",
                json!({"step": step.name, "exec": exec, "attempt": attempt, "argv": prepared.argv}),
                false,
            );
            let (finished, crossing) = self.run_watched(spec, prepared.agent.as_ref()).await;
            let mut result = match &prepared.agent {
                Some(run) => self.agent_capture(step, &finished, run, &stdout_log, &stderr_log),
                None => {
                    let mut result = capture(step, &finished);
                    if matches!(step.kind, StepKind::Provider { .. }) {
                        classify_provider_failure(
                            &prepared.argv,
                            &finished,
                            &stderr_log,
                            &mut result,
                        );
                    }
                    result
                }
            };
            self.budget.count(&result);
            if let (Some(Ok((before, window))), Some(run)) = (&before, &prepared.agent) {
                self.verify_unchanged(step, run, before, window, &mut result);
            }
            result["attempts"] = json!(attempt);
            // Logs exist only for streams the process wrote to.
            for (key, path) in [("stdout_log", &stdout_log), ("stderr_log", &stderr_log)] {
                if path.exists() {
                    result[key] = json!(self.relative(path));
                }
            }
            if let Some(file) = &prepared.output_file {
                result["output_file"] = json!(self.relative(file));
            }
            if let Some(pid) = finished.pid {
                result["pid"] = json!(pid);
            }
            if let Some(crossing) = crossing {
                self.budget_stopped(step, &crossing, &mut result);
                return result;
            }
            let code = result["exit_code"].as_i64().unwrap_or(1) as i32;
            let succeeded = result["status"] == "succeeded";
            if succeeded || self.config.cancel.is_cancelled() {
                return result;
            }
            let kind = result["error"]["kind"].as_str().map(str::to_string);
            // A usage limit with a reset time pauses the step until then (not an attempt).
            if kind.as_deref() == Some("usage_limit") && pauses < 3 {
                let until = result["error"]["resets_at"]
                    .as_str()
                    .and_then(orchestrate_runtime::parse::parse_reset_time);
                let wait = until
                    .map(|t| (t - chrono::Utc::now()).to_std().unwrap_or_default())
                    .unwrap_or(Duration::from_secs(300))
                    .min(Duration::from_secs(6 * 3600));
                pauses += 1;
                let _ = self.event("paused", json!({"step": step.name, "exec": exec, "runtime": result["profile"].as_str().or(result["runtime"].as_str()), "reason": "usage_limit", "until": (chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default()).to_rfc3339(), "resets_at": result["error"]["resets_at"]}), true);
                self.progress(&format!(
                    "⏸ {} hit a usage limit; paused {:.0}s until it resets",
                    step.name,
                    wait.as_secs_f64()
                ));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.config.cancel.cancelled() => return result,
                }
                continue;
            }
            let worth_retrying = match kind.as_deref() {
                // Transient: the API or the clock, not the request.
                Some("rate_limit" | "server" | "timeout") => step
                    .retry
                    .on_exit_codes
                    .as_ref()
                    .is_none_or(|c| c.contains(&code)),
                // The request itself is wrong: another attempt gives the same answer.
                Some(_) => false,
                None => retryable(code),
            };
            if attempt >= max_attempts || !worth_retrying {
                if let Some(hint) = kind.as_deref().and_then(|k| {
                    // A provider step's error names the CLI (`classify_provider_failure`).
                    let runtime = result["runtime"]
                        .as_str()
                        .or(result["error"]["runtime"].as_str());
                    error_hint(k, runtime.unwrap_or(""))
                }) {
                    let message = format!(
                        "{}; {hint}",
                        result["error"]["message"]
                            .as_str()
                            .unwrap_or("the agent failed")
                    );
                    result["error"]["message"] = json!(message);
                }
                return result;
            }
            let base = if kind.as_deref() == Some("rate_limit") {
                step.retry.delay.max(Duration::from_secs(5))
            } else {
                step.retry.delay
            };
            let delay = base.mul_f64(step.retry.backoff.powi(attempt as i32 - 1));
            let _ = self.event(
                "retry_scheduled",
                json!({"step": step.name, "exec": exec, "attempt": attempt, "exit_code": code, "delay": delay.as_secs_f64()}),
                false,
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.config.cancel.cancelled() => return result,
            }
            attempt += 1;
        }
    }

    /// `${run.workspace}`: where the steps work (the checkout of an isolated run).
    fn run_workspace(&self) -> String {
        match &self.config.checkout {
            Some(dir) => dir.display().to_string(),
            None => self.state.workspace.clone(),
        }
    }

    /// Steps of this run work in `dir` (a worktree made once the run id is known).
    pub fn set_checkout(&mut self, dir: PathBuf) {
        self.config.checkout = Some(dir);
    }

    /// A path as the run's records show it: relative to the workspace, where they live (a
    /// file in a worktree by its path there).
    /// A failed step's message: what failed, and the last lines of its stderr (where the reason
    /// usually is), already masked as the log is.
    fn step_failed(&self, step: &Step, detail: &str, result: &Value) -> String {
        let mut message = format!("step `{}` (line {}) failed: {detail}", step.name, step.line);
        let tail = result["stderr_log"].as_str().and_then(|log| {
            orchestrate_queue::record::stderr_tail(&self.config.workspace.join(log))
        });
        if let Some(tail) = tail {
            message.push_str("; its stderr ends:\n");
            message.push_str(&indent(&tail));
        }
        message
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.config.workspace)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Fingerprints the workspace before a readonly/plan agent step (`.orchestrate/`, the step's
    /// declared artifacts and git-ignored files excepted).
    fn fingerprint(
        &self,
        run: &AgentRun,
    ) -> Result<orchestrate_base::fingerprint::Snapshot, String> {
        let mut ignore = run.artifacts.clone();
        ignore.push(".orchestrate/".into());
        if let Ok(rel) = self.dir.root.strip_prefix(self.config.code_dir())
            && !rel.as_os_str().is_empty()
        {
            ignore.push(format!("{}/", rel.display()));
        }
        ignore.push("approvals/".into());
        ignore.extend(self.config.ignore_changes.iter().cloned());
        let options = orchestrate_base::fingerprint::Options {
            ignore,
            ..orchestrate_base::fingerprint::Options::default()
        };
        orchestrate_base::fingerprint::snapshot(self.config.code_dir(), &options)
            .map_err(|e| e.to_string())
    }

    /// After a readonly/plan step: anything it changed outside its artifacts fails the step,
    /// whatever the CLI claims (plan modes leak through shell tools).
    fn verify_unchanged(
        &mut self,
        step: &Step,
        run: &AgentRun,
        before: &orchestrate_base::fingerprint::Snapshot,
        window: &WriteWindow,
        result: &mut Value,
    ) {
        // Rescanning the same snapshot (not a fresh one) re-hashes files that were recent at the
        // first scan, so a same-size rewrite within one timestamp tick is still caught.
        let after = match before.rescan() {
            Ok(after) => after,
            Err(err) => {
                result["status"] = json!("failed");
                result["error"] = json!({"kind": "phase_violation", "message": format!("could not verify the {} phase: {err}", run.phase.label())});
                return;
            }
        };
        let mut changes = orchestrate_base::fingerprint::diff(before, &after);
        // Files the engine or a process that started it holds open for writing, when the step
        // started or now (its own stdout redirected into the workspace, a harness's log), are
        // not the step's writes: a step's processes are the engine's descendants.
        let held = orchestrate_base::held_files::held_for_writing(self.config.code_dir());
        changes.retain(|change| {
            !self.engine_writes.wrote_during(window, &change.path)
                && !window.held.contains(&change.path)
                && !held.contains(&change.path)
        });
        if changes.is_empty() {
            return;
        }
        let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
        let shown = list.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
        let more = if list.len() > 20 {
            format!(" and {} more", list.len() - 20)
        } else {
            String::new()
        };
        let message = format!(
            "the {} phase forbids changes, but the workspace changed: {shown}{more}",
            run.phase.label()
        );
        let _ = self.event(
            "phase_violation",
            json!({"step": step.name, "phase": run.phase, "changes": changes}),
            true,
        );
        result["status"] = json!("failed");
        result["exit_code"] = json!(1);
        result["changed_files"] = json!(changes);
        result["error"] = json!({"kind": "phase_violation", "message": message});
    }

    /// Parses an agent's structured output into the step's result.
    fn agent_capture(
        &self,
        step: &Step,
        finished: &exec::Finished,
        run: &AgentRun,
        stdout_log: &Path,
        stderr_log: &Path,
    ) -> Value {
        use orchestrate_runtime::parse;
        let Some(runtime) = run.runtime else {
            // A stand-in provider: its stdout is the answer.
            let mut result = capture(step, finished);
            let text = String::from_utf8_lossy(&finished.stdout).into_owned();
            result["result"] = json!(text);
            result["runtime"] = json!(run.name);
            result["phase"] = json!(run.phase);
            return result;
        };
        let stdout = std::fs::read_to_string(stdout_log).unwrap_or_default();
        let stderr = std::fs::read_to_string(stderr_log).unwrap_or_default();
        let code = finished.outcome.exit_code();
        let outcome = parse::parse(runtime, &stdout, &stderr, code);
        let mut usage = outcome.usage;
        if usage == parse::Usage::default() {
            // No final statistics (the CLI was stopped or died): what the stream reported so
            // far was still spent, and budgets and the ledger count it.
            let mut live = parse::StreamParser::new(runtime);
            live.line(&stdout);
            usage = live.usage_so_far();
        }
        let mut result = json!({});
        let mut priced = outcome.clone();
        if let Some(now) = parse::SessionTotals::of(runtime, &outcome) {
            // claude and codex report a resumed session's running totals: this step's share
            // is the difference from what the session's latest earlier step recorded.
            result["usage_cumulative"] = json!(now.usage);
            result["cost_usd_cumulative"] = json!(now.cost_usd);
            let own = parse::step_share(&now, run.previous_session.as_ref());
            if own != now {
                // The per-model breakdown is the session's too: price the share as one model.
                priced.model_usage.clear();
            }
            usage = own.usage;
            priced.cost_usd = own.cost_usd;
        }
        let model = outcome
            .model
            .clone()
            .or_else(|| run.model.clone())
            .or_else(|| run.cli_default.as_ref().map(|guess| guess.model.clone()));
        priced.usage = usage;
        let cost = self
            .config
            .profiles
            .prices
            .outcome_cost(&priced, model.as_deref());
        let mut error = outcome
            .error
            .clone()
            .map(|e| serde_json::to_value(e).unwrap_or(Value::Null));
        let status = match &finished.outcome {
            Outcome::Cancelled => "interrupted",
            Outcome::TimedOut => {
                error = Some(
                    json!({"kind": "timeout", "message": "timed out (timeout_sec); its process group was stopped"}),
                );
                "failed"
            }
            Outcome::IdleTimedOut { after_ms } => {
                error = Some(json!({"kind": "idle_timeout", "message": idle_message(*after_ms)}));
                "failed"
            }
            // Stopped at claude's first authentication failure (`run_watched`): the parse
            // says so. A budget stop overwrites the error later (`budget_stopped`).
            Outcome::Stopped
                if outcome
                    .error
                    .as_ref()
                    .is_some_and(|e| e.kind == parse::ErrorKind::Auth) =>
            {
                "failed"
            }
            Outcome::Stopped => {
                error = Some(
                    json!({"kind": "budget", "message": "stopped: the run's budget was exceeded"}),
                );
                "failed"
            }
            Outcome::SpawnFailed { message } => {
                error = Some(json!({"kind": "other", "message": message}));
                "failed"
            }
            _ if outcome.ok => "succeeded",
            _ => "failed",
        };
        if status == "failed" && error.is_none() {
            error = Some(
                json!({"kind": "other", "message": format!("{} exited with code {code}", run.name)}),
            );
        }
        let text = outcome.result.clone().unwrap_or_default();
        result["status"] = json!(status);
        result["exit_code"] = json!(code);
        result["outcome"] = json!(finished.outcome);
        result["runtime"] = json!(runtime.name());
        result["profile"] = json!(run.name);
        result["model"] = json!(model);
        result["requested_model"] = json!(run.model);
        result["phase"] = json!(run.phase);
        result["result"] = json!(text);
        result["session_id"] = json!(outcome.session_id);
        result["usage"] = json!(usage);
        result["cost_usd"] = json!(cost);
        result["turns"] = json!(outcome.turns);
        result["denials"] = json!(outcome.denials);
        result["api_retries"] = json!(outcome.retries.len());
        result["truncated"] = json!(false);
        if let Some(error) = error {
            result["error"] = error;
        }
        match step.capture {
            Capture::Text => {
                let (output, cut) = text_output(&text, true);
                result["output"] = json!(output);
                result["truncated"] = json!(cut);
            }
            Capture::Lines => {
                result["output_capture"] = json!("lines");
                let lines: Vec<&str> = text.lines().take(LINES_LIMIT).collect();
                result["truncated"] = json!(text.lines().count() > LINES_LIMIT);
                result["lines"] = json!(lines);
            }
            Capture::Json => {
                result["output_capture"] = json!("json");
                let parsed = match &outcome.structured_output {
                    // Answered through the schema the CLI was given: already JSON.
                    Some(answer) => Ok(answer.clone()),
                    None => parse_json_limited(strip_fences(&text).as_bytes()),
                };
                match parsed {
                    Ok(value) => result["json"] = value,
                    Err(_) if step.allow_parse_error => result["json"] = Value::Null,
                    Err(message) if status == "succeeded" => {
                        result["status"] = json!("failed");
                        result["exit_code"] = json!(2);
                        result["error"] = json!({"kind": "other", "message": format!("the agent's answer is not valid JSON: {message}")});
                    }
                    Err(_) => {}
                }
            }
        }
        result
    }

    /// Renders argv, env and paths for a process step. Errors name the step and what is wrong.
    fn prepare(&self, step: &Step, loops: &[LoopFrame]) -> Result<Prepared, String> {
        let mut agent_parts = None;
        let scope = self.scope(loops);
        let render =
            |t: &Template, what: &str| t.render(&scope).map_err(|e| format!("in {what}: {e}"));
        let argv = match &step.kind {
            StepKind::Command { argv } => argv
                .iter()
                .map(|t| render(t, "`command`"))
                .collect::<Result<Vec<_>, _>>()?,
            StepKind::Provider {
                provider,
                params,
                input_file,
                command_override,
            } => {
                let mut values: HashMap<String, String> = HashMap::new();
                let provider = provider
                    .clone()
                    .or_else(|| self.config.default_provider.clone());
                let template = provider
                    .as_ref()
                    .and_then(|name| self.workflow.providers.get(name));
                if let Some(template) = template {
                    values.extend(template.defaults.clone());
                }
                if let Some(model) = &self.config.default_model {
                    values.insert("model".into(), model.clone());
                }
                for (key, t) in params {
                    values.insert(key.clone(), render(t, &format!("`provider_params.{key}`"))?);
                }
                if let Some(input) = input_file {
                    let rel = render(input, "`input_file`")?;
                    let path = fsutil::resolve_in_workspace(self.config.code_dir(), &rel)
                        .map_err(|e| format!("`input_file`: {e}"))?;
                    let prompt = std::fs::read_to_string(&path)
                        .map_err(|e| format!("cannot read `input_file` {rel}: {e}"))?;
                    values.insert("PROMPT".into(), prompt);
                }
                let layered = ProviderScope {
                    values: &values,
                    base: &scope,
                };
                let (argv, model_args) = match (command_override, template) {
                    (Some(argv), _) => (argv, Vec::new()),
                    (None, Some(template)) => {
                        (&template.command, template.model_args(values.get("model")))
                    }
                    (None, None) => {
                        return Err(format!(
                            "provider `{}` is not defined",
                            provider.clone().unwrap_or_default()
                        ));
                    }
                };
                let mut argv = argv
                    .iter()
                    .map(|t| {
                        t.render(&layered)
                            .map_err(|e| format!("in the provider command: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                argv.extend(model_args);
                argv
            }
            StepKind::Agent(agent) => {
                let (argv, env, stdin, run) = self.prepare_agent(step, agent, loops)?;
                agent_parts = Some((env, stdin, run));
                argv
            }
            StepKind::ForEach { .. }
            | StepKind::Parallel { .. }
            | StepKind::WaitFor { .. }
            | StepKind::Enqueue { .. }
            | StepKind::Approval { .. }
            | StepKind::Workflow(_) => Vec::new(),
        };
        // An `orchestrate` the step runs works on this run's workspace (a task's worktree is a
        // checkout that may have an agents/ of its own); the workflow's `env:` may override it.
        let mut env = vec![(
            orchestrate_base::fsutil::WORKSPACE_ENV.to_string(),
            self.config.workspace.display().to_string(),
        )];
        env.extend(self.step_env(step, loops)?);
        for name in &step.secrets {
            match std::env::var(name) {
                Ok(value) => env.push((name.clone(), value)),
                Err(_) => {
                    return Err(format!(
                        "secret `{name}` is not set in orchestrate's environment; export it before running"
                    ));
                }
            }
        }
        // Secrets the step did not ask for are removed from its environment.
        let env_remove: Vec<String> = self
            .secret_names
            .iter()
            .filter(|name| !step.secrets.contains(name))
            .cloned()
            .collect();
        let output_file = match &step.output_file {
            Some(t) => {
                let rel = render(t, "`output_file`")?;
                Some(
                    fsutil::resolve_in_workspace(self.config.code_dir(), &rel)
                        .map_err(|e| format!("`output_file`: {e}"))?,
                )
            }
            None => None,
        };
        if matches!(step.kind, StepKind::Provider { .. }) {
            // A provider's CLI is an agent too: it learns its step and run as agent steps do.
            env.push(("ORCHESTRATE_STEP".into(), step.name.clone()));
            env.push(("ORCHESTRATE_RUN_ID".into(), self.state.run_id.clone()));
        }
        let (stdin, agent) = match agent_parts {
            Some((agent_env, stdin, run)) => {
                env.extend(agent_env);
                (Some(stdin), Some(run))
            }
            None => (None, None),
        };
        Ok(Prepared {
            argv,
            env,
            env_remove,
            output_file,
            stdin,
            agent,
        })
    }

    /// The workflow's and the step's `env:`, rendered (the step's entries after, so they win).
    fn step_env(&self, step: &Step, loops: &[LoopFrame]) -> Result<Vec<(String, String)>, String> {
        let scope = self.scope(loops);
        self.workflow
            .env
            .iter()
            .chain(step.env.iter())
            .map(|(key, t)| {
                let value = t
                    .render(&scope)
                    .map_err(|e| format!("in `env.{key}`: {e}"))?;
                Ok((key.clone(), value))
            })
            .collect()
    }

    /// Resolves who runs an agent step and builds its command: `--runtime`, then the step's
    /// `runtime:`, then the role's, then `runtimes.yaml`'s default; a name may be a profile.
    #[expect(
        clippy::type_complexity,
        reason = "one private caller destructures it at once"
    )]
    fn prepare_agent(
        &self,
        step: &Step,
        agent: &orchestrate_lang::model::AgentStep,
        loops: &[LoopFrame],
    ) -> Result<(Vec<String>, Vec<(String, String)>, Vec<u8>, AgentRun), String> {
        use orchestrate_lang::model::Prompt;
        use orchestrate_runtime::adapter;
        use orchestrate_runtime::parse::Runtime;
        let scope = self.scope(loops);
        let profiles = &self.config.profiles;
        let name = self.runtime_name(agent).ok_or_else(|| {
                "no runtime for this agent step: set `runtime:` on it, pass `--runtime claude|codex|gemini`, or set `default:` in runtimes.yaml".to_string()
            })?;
        let profile = profiles.resolve(&name);
        if agent.phase == orchestrate_lang::model::Phase::Full && !self.config.allow_full {
            return Err("phase `full` lets the agent do anything: it runs only with `--allow-full` on the run (inside a sandbox you trust)".into());
        }
        let prompt = match &agent.prompt {
            Prompt::Text(t) => t.render(&scope).map_err(|e| format!("in `prompt`: {e}"))?,
            Prompt::File(t) => {
                let rel = t
                    .render(&scope)
                    .map_err(|e| format!("in `prompt_file`: {e}"))?;
                let path = fsutil::resolve_in_workspace(self.config.code_dir(), &rel)
                    .map_err(|e| format!("`prompt_file`: {e}"))?;
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read `prompt_file` {rel}: {e}"))?
            }
        };
        let model = match &agent.model {
            Some(t) => Some(t.render(&scope).map_err(|e| format!("in `model`: {e}"))?),
            None => self
                .config
                .default_model
                .clone()
                .or_else(|| profile.model.clone()),
        };
        let runtime = Runtime::from_name(&profile.runtime);
        let step_env = self.step_env(step, loops)?;
        // What the CLI will run when told no model (codex never says): priced and recorded.
        let cli_default = match (runtime, &model) {
            (Some(runtime), None) => cli_default_model(runtime, &profile, &step_env),
            _ => None,
        };
        let mut run = AgentRun {
            runtime,
            name: name.clone(),
            model: model.clone(),
            cli_default,
            phase: agent.phase,
            notes: Vec::new(),
            previous_session: None,
            artifacts: agent.artifacts.clone(),
        };
        let resume_session = match &agent.resume {
            Some(target) => {
                let previous = self
                    .results
                    .get(target)
                    .ok_or_else(|| format!("`resume: {target}`: step `{target}` has not run"))?;
                let session = previous["session_id"].as_str().ok_or_else(|| {
                    format!("`resume: {target}`: step `{target}` recorded no session id")
                })?;
                run.previous_session = session_totals_before(&self.results, session);
                Some(session.to_string())
            }
            None => None,
        };
        let Some(runtime) = run.runtime else {
            // A provider template (the offline stand-in, or a workflow's own): the prompt is its
            // `${PROMPT}`, the model its `${model}`.
            let template = self.workflow.providers.get(&profile.runtime).ok_or_else(|| {
                format!("runtime `{}` is neither claude, codex, gemini nor a provider of this workflow", profile.runtime)
            })?;
            let mut values: HashMap<String, String> =
                template.defaults.clone().into_iter().collect();
            values.insert("PROMPT".into(), prompt);
            if let Some(model) = &model {
                values.insert("model".into(), model.clone());
            }
            let layered = ProviderScope {
                values: &values,
                base: &scope,
            };
            let mut argv = template
                .command
                .iter()
                .map(|t| {
                    t.render(&layered)
                        .map_err(|e| format!("in provider `{}`: {e}", profile.runtime))
                })
                .collect::<Result<Vec<_>, _>>()?;
            argv.extend(template.model_args(values.get("model")));
            return Ok((argv, profile.env.clone(), Vec::new(), run));
        };
        // One private directory per invocation: the items of a fan-out run at once, and each
        // lays down files (gemini's home, policy, output schema) the others must not race on.
        let mut scratch = self.dir.root.join("scratch").join(&step.name);
        if !loops.is_empty() {
            let indices: Vec<String> = loops.iter().map(|frame| frame.index.to_string()).collect();
            scratch.push(format!("item-{}", indices.join("-")));
        }
        let is_root = orchestrate_base::process::is_root();
        let invocation = adapter::build(&adapter::Request {
            runtime,
            bin: profile.bin.as_deref(),
            extra_args: &profile.args,
            model: model.as_deref(),
            phase: agent.phase,
            max_turns: agent.max_turns,
            resume_session: resume_session.as_deref(),
            allow_shell: &agent.allow_shell,
            workspace: self.config.code_dir(),
            scratch: &scratch,
            is_root,
            output_schema: step.output_schema.as_ref().map(|s| &s.schema),
        });
        for (path, text) in &invocation.files {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            std::fs::write(path, text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        if let Some(home) = &invocation.gemini_home {
            // The home gemini would otherwise use: the profile's, the step's `env:`,
            // orchestrate's, else HOME.
            let var =
                |name: &str| effective_var(name, &profile, &step_env).filter(|v| !v.is_empty());
            let user_home = var("GEMINI_CLI_HOME").or_else(|| var("HOME")).ok_or_else(|| {
                "gemini's max_turns needs the user's home: neither GEMINI_CLI_HOME nor HOME is set"
                    .to_string()
            })?;
            home.lay_down(Path::new(&user_home))?;
        }
        run.notes = invocation.notes;
        let mut env = invocation.env;
        // Which step and run an agent process serves (scripts, wrappers and `orchestrate test`'s
        // fixture answers use them).
        env.push(("ORCHESTRATE_STEP".into(), step.name.clone()));
        env.push(("ORCHESTRATE_RUN_ID".into(), self.state.run_id.clone()));
        // A profile's own GEMINI_CLI_HOME is the user's home the private one links to.
        env.extend(
            profile
                .env
                .iter()
                .filter(|(key, _)| invocation.gemini_home.is_none() || key != "GEMINI_CLI_HOME")
                .cloned(),
        );
        Ok((invocation.argv, env, prompt.into_bytes(), run))
    }
}

struct Prepared {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    output_file: Option<PathBuf>,
    /// Written to the process's stdin (agent prompts), else /dev/null.
    stdin: Option<Vec<u8>>,
    agent: Option<AgentRun>,
}

/// The value of `name` an agent process sees: its environment is the engine's, then the
/// workflow's and step's `env:` (`step_env`), then the profile's entries, the last one winning.
fn effective_var(
    name: &str,
    profile: &orchestrate_runtime::profile::Profile,
    step_env: &[(String, String)],
) -> Option<String> {
    let last = |env: &[(String, String)]| {
        env.iter()
            .rfind(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    last(&profile.env)
        .or_else(|| last(step_env))
        .or_else(|| std::env::var(name).ok())
}

/// The model `runtime` uses by itself (its configuration, else the pinned version's default),
/// with the environment it will see (`effective_var`).
fn cli_default_model(
    runtime: orchestrate_runtime::parse::Runtime,
    profile: &orchestrate_runtime::profile::Profile,
    step_env: &[(String, String)],
) -> Option<orchestrate_runtime::defaults::Guess> {
    let env = |name: &str| effective_var(name, profile, step_env);
    orchestrate_runtime::defaults::default_model(runtime, &profile.args, &env)
}

/// Every agent step of a step list, `for_each` bodies and `parallel` branches included.
fn agent_steps<'a>(
    steps: &'a [Step],
    out: &mut Vec<(&'a Step, &'a orchestrate_lang::model::AgentStep)>,
) {
    for step in steps {
        match &step.kind {
            StepKind::Agent(agent) => out.push((step, agent)),
            StepKind::ForEach { steps, .. } => agent_steps(steps, out),
            StepKind::Parallel { branches, .. } => {
                for branch in branches {
                    agent_steps(&branch.steps, out);
                }
            }
            _ => {}
        }
    }
}

/// Who runs an agent step and how, decided before it starts.
#[derive(Debug, Clone)]
struct AgentRun {
    /// `None`: a provider template stands in for the agent (plain text output).
    runtime: Option<orchestrate_runtime::parse::Runtime>,
    /// The name it was chosen by (profile or runtime).
    name: String,
    model: Option<String>,
    /// The model the CLI uses by itself when `model` is `None` (its config, its default).
    cli_default: Option<orchestrate_runtime::defaults::Guess>,
    phase: orchestrate_lang::model::Phase,
    notes: Vec<String>,
    /// The totals of the session being resumed after its latest step (claude and codex report
    /// per-session totals; see `parse::step_share`).
    previous_session: Option<orchestrate_runtime::parse::SessionTotals>,
    /// Paths a readonly/plan step may write.
    artifacts: Vec<String>,
}

/// The running totals `session` stood at after its latest step: of the results that recorded
/// them for it, the largest (a session's totals only grow). Not necessarily the resumed step's
/// own: another step may have resumed the same session since.
fn session_totals_before(
    results: &Map<String, Value>,
    session: &str,
) -> Option<orchestrate_runtime::parse::SessionTotals> {
    results
        .values()
        .filter(|result| result["session_id"].as_str() == Some(session))
        .filter_map(|result| {
            Some(orchestrate_runtime::parse::SessionTotals {
                usage: serde_json::from_value(result.get("usage_cumulative")?.clone()).ok()?,
                cost_usd: result["cost_usd_cumulative"].as_f64(),
            })
        })
        .max_by_key(|totals| totals.usage.total())
}

/// Turns a finished process into a step result, applying the capture mode and its limits.
fn capture(step: &Step, finished: &exec::Finished) -> Value {
    let code = finished.outcome.exit_code();
    let status = match finished.outcome {
        _ if finished.outcome.success() => "succeeded",
        // Not the step's doing: resume runs it again.
        Outcome::Cancelled => "interrupted",
        _ => "failed",
    };
    let mut result = json!({
        "status": status,
        "exit_code": code,
        "outcome": finished.outcome,
        "truncated": false,
    });
    let text = String::from_utf8_lossy(&finished.stdout);
    match step.capture {
        Capture::Text => {
            let (output, cut) = text_output(&text, finished.stdout_complete);
            result["output"] = json!(output);
            result["truncated"] = json!(cut);
        }
        Capture::Lines => {
            result["output_capture"] = json!("lines");
            let mut lines: Vec<&str> = text.split('\n').collect();
            if lines.last() == Some(&"") {
                lines.pop();
            }
            let over_bytes = !finished.stdout_complete;
            if over_bytes {
                // The last line may be cut in the middle: drop it.
                lines.pop();
            }
            let truncated = over_bytes || lines.len() > LINES_LIMIT;
            lines.truncate(LINES_LIMIT);
            result["lines"] = json!(
                lines
                    .iter()
                    .map(|l| l.strip_suffix('\r').unwrap_or(l))
                    .collect::<Vec<_>>()
            );
            result["truncated"] = json!(truncated);
        }
        Capture::Json => {
            result["output_capture"] = json!("json");
            let parsed = if finished.stdout_bytes > JSON_LIMIT_BYTES as u64 {
                Err(format!(
                    "stdout is {} bytes, over the 1 MB limit for JSON capture",
                    finished.stdout_bytes
                ))
            } else {
                parse_json_limited(&finished.stdout)
            };
            match parsed {
                Ok(value) => result["json"] = value,
                Err(message) if step.allow_parse_error => {
                    result["json"] = Value::Null;
                    result["parse_error"] = json!(message);
                    let (output, cut) = text_output(&text, finished.stdout_complete);
                    result["output"] = json!(output);
                    result["truncated"] = json!(cut);
                }
                Err(message) if finished.outcome.success() => {
                    result["status"] = json!("failed");
                    result["exit_code"] = json!(2);
                    result["error"] = json!(format!("output is not valid JSON: {message}"));
                    result["truncated"] = json!(finished.stdout_bytes > JSON_LIMIT_BYTES as u64);
                }
                Err(_) => {}
            }
        }
    }
    if !finished.outcome.success() && result.get("error").is_none() {
        result["error"] = json!(match &finished.outcome {
            Outcome::Exited { code } => format!("exited with code {code}"),
            Outcome::Signaled { signal } => format!("killed by signal {signal}"),
            Outcome::TimedOut =>
                "timed out (timeout_sec); its process group was stopped".to_string(),
            Outcome::IdleTimedOut { after_ms } => idle_message(*after_ms),
            Outcome::Stopped => "stopped: the run's budget was exceeded".to_string(),
            Outcome::Cancelled => "interrupted".to_string(),
            Outcome::SpawnFailed { message } => message.clone(),
        });
    }
    result
}

/// A provider step whose program is an agent CLI (`codex exec PROMPT`, `gemini -p PROMPT`)
/// and whose failure the CLI's words or exit code classify (an untrusted directory, missing
/// credentials, a rate limit): its error gets the class and the CLI's message, and so the
/// hint of what to do, where `exited with code N` said nothing. An unexplained exit keeps the
/// plain message and the provider retry rules.
fn classify_provider_failure(
    argv: &[String],
    finished: &exec::Finished,
    stderr_log: &Path,
    result: &mut Value,
) {
    let Outcome::Exited { code } = finished.outcome else {
        return;
    };
    let Some(runtime) = argv
        .first()
        .and_then(|program| Path::new(program).file_name())
        .and_then(|name| name.to_str())
        .and_then(orchestrate_runtime::parse::Runtime::from_name)
    else {
        return;
    };
    let stderr = orchestrate_queue::record::stderr_tail(stderr_log).unwrap_or_default();
    let stdout = String::from_utf8_lossy(&finished.stdout);
    let Some(error) =
        orchestrate_runtime::parse::classify_text_failure(runtime, &stdout, &stderr, code)
    else {
        return;
    };
    result["error"] = json!({
        "kind": error.kind,
        "message": format!("{} exited with code {code}: {}", runtime.name(), error.message),
        "runtime": runtime.name(),
        "http_status": error.http_status,
        "resets_at": error.resets_at,
    });
}

/// Lines quoted under a message, indented so they read as part of it.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The error of a step stopped for silence.
fn idle_message(after_ms: u64) -> String {
    format!(
        "no output for {} s (idle_timeout_sec); its processes were stopped",
        after_ms as f64 / 1000.0
    )
}

/// Parses JSON without letting deep nesting overflow the stack (serde_json stops at 128).
fn parse_json_limited(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice::<Value>(bytes).map_err(|err| err.to_string())
}

fn floor_char_boundary(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let mut i = max;
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A step result's output as a person reads it: its text, its lines, or its JSON; `None` when
/// it has none (or only whitespace).
fn shown_output(result: &Value) -> Option<String> {
    let text = if let Some(text) = result["output"].as_str() {
        text.to_string()
    } else if let Some(lines) = result["lines"].as_array() {
        lines
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    } else if result.get("json").is_some_and(|j| !j.is_null()) {
        serde_json::to_string_pretty(&result["json"]).ok()?
    } else if let Some(text) = result["result"].as_str() {
        text.to_string()
    } else {
        return None;
    };
    (!text.trim().is_empty()).then_some(text)
}

/// A step's text output as `${steps.X.output}` holds it, and whether it was cut: at most
/// `TEXT_KEEP_BYTES`, and, when nothing was cut, without one trailing newline (`\n` or
/// `\r\n`), as shell command substitution drops it, so that `echo yes` gives `yes`. Only one:
/// a deliberate blank line stays. The step's stdout log keeps the bytes as written.
fn text_output(text: &str, complete: bool) -> (&str, bool) {
    let keep = floor_char_boundary(text, TEXT_KEEP_BYTES);
    if !complete || keep < text.len() {
        return (&text[..keep], true);
    }
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    (text, false)
}

/// A failed result's error as one line: command steps record a string, agent steps an object
/// with a class (`{"kind": "auth", "message": ...}`).
pub fn error_text(result: &Value) -> Option<String> {
    match &result["error"] {
        Value::String(text) => Some(text.clone()),
        Value::Object(error) => {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("failed");
            Some(match error.get("kind").and_then(Value::as_str) {
                Some(kind) => format!("{kind}: {message}"),
                None => message.to_string(),
            })
        }
        _ => None,
    }
}

/// Models often wrap JSON answers in a Markdown code fence.
fn strip_fences(text: &str) -> &str {
    let trimmed = text.trim();
    let Some(rest) = trimmed.strip_prefix("```") else {
        return trimmed;
    };
    let rest = rest.split_once('\n').map(|(_, body)| body).unwrap_or("");
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

/// What to tell the user for an error class that retrying cannot fix.
fn error_hint(kind: &str, runtime: &str) -> Option<String> {
    let login = match runtime {
        "claude" => "run `claude` once to log in, or set ANTHROPIC_API_KEY",
        "codex" => "run `codex login`, or set OPENAI_API_KEY",
        "gemini" => "set GEMINI_API_KEY (or log in with `gemini`)",
        _ => "log the CLI in",
    };
    Some(match kind {
        "auth" => format!("{runtime} is not authenticated: {login}"),
        "bad_argv" => format!(
            "{runtime} rejected the arguments orchestrate built; check that the installed version is supported (`{runtime} --version`)"
        ),
        "untrusted" => match runtime {
            "codex" => "codex runs only inside a git repository unless told otherwise: pass `--skip-git-repo-check` after `exec` (the built-in `codex` template does), or make the workspace a git repository (`git init`)".into(),
            "gemini" => "gemini does not trust this folder: pass `--skip-trust` (the built-in `gemini` template does), set GEMINI_CLI_TRUST_WORKSPACE=true in the step's `env:`, or trust the folder once in an interactive `gemini`".into(),
            _ => format!(
                "{runtime} does not trust this directory; run it once here interactively, or pass its trust flag"
            ),
        },
        "context_too_long" => {
            "the prompt is too long for the model: shorten it or split the step".into()
        }
        "max_turns" => "the agent ran out of turns: raise `max_turns` or narrow the task".into(),
        "budget" => "the agent hit its spending limit".into(),
        _ => return None,
    })
}

/// Renders every string of a JSON value as a template (`enqueue.json`).
fn render_json(value: &Value, scope: &dyn Lookup) -> Result<Value, String> {
    Ok(match value {
        Value::String(text) => {
            let template = Template::parse(text).map_err(|e| e.message)?;
            template.render_value(scope).map_err(|e| e.to_string())?
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_json(v, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_json(v, scope)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// What a rejection says: an approval's reason, else the step's answer (an agent's final text,
/// JSON findings, or a command's output).
fn rejection_reason(result: &Value) -> String {
    for key in ["reason", "result", "output"] {
        if let Some(text) = result[key].as_str().filter(|t| !t.is_empty()) {
            return text.to_string();
        }
    }
    match &result["json"] {
        Value::Null => String::new(),
        json => json.to_string(),
    }
}

fn failed_result(exit_code: i32, message: String) -> Value {
    json!({"status": "failed", "exit_code": exit_code, "error": message})
}

fn with_timing(mut result: Value, started_at: &str, started: Instant) -> Value {
    result["started_at"] = json!(started_at);
    result["finished_at"] = json!(orchestrate_base::clock::now_rfc3339());
    result["duration"] = json!((started.elapsed().as_secs_f64() * 1e6).round() / 1e6);
    result
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The steps between the previous visit of `name` and now: the cycle a loop went round.
fn loop_cycle(trail: &[&str], name: &str) -> String {
    let last = trail.len().saturating_sub(1);
    let start = trail[..last].iter().rposition(|s| *s == name).unwrap_or(0);
    trail[start..].join(" -> ")
}

/// Variable lookup at one point of the run.
struct Scope<'a> {
    runner: &'a Runner,
    loops: &'a [LoopFrame],
}

impl Scope<'_> {
    /// The variables as one JSON document, the input of `when.jq`.
    fn document(&self) -> Value {
        let state = &self.runner.state;
        let mut doc = json!({
            "run": {
                "timestamp_utc": state.timestamp_utc,
                "id": state.run_id,
                "workspace": self.runner.run_workspace(),
                "workflow": state.workflow,
            },
            "context": state.context,
            "steps": self.runner.results,
        });
        if let Some(frame) = self.loops.last() {
            doc["loop"] = json!({"index": frame.index, "total": frame.total});
        }
        for frame in self.loops {
            doc[frame.var.as_str()] = frame.item.clone();
        }
        doc
    }
}

impl Lookup for Scope<'_> {
    fn lookup(&self, var: &VarRef) -> Result<Value, Undefined> {
        let segments = &var.segments;
        let state = &self.runner.state;
        let rest = &segments[1..];
        let found = match var.root() {
            "run" => match rest.first().map(String::as_str) {
                Some("timestamp_utc") => Some(json!(state.timestamp_utc)),
                Some("id") => Some(json!(state.run_id)),
                Some("workspace") => Some(json!(self.runner.run_workspace())),
                Some("workflow") => Some(json!(state.workflow)),
                _ => None,
            },
            "feedback" => match rest.first().map(String::as_str) {
                None => Some(self.runner.active_feedback["reason"].clone()),
                Some("reason") => Some(self.runner.active_feedback["reason"].clone()),
                Some("from" | "step") => Some(self.runner.active_feedback["from"].clone()),
                // What an `invalid` edge carried: the schema violations (`[]` otherwise).
                Some("violations") => Some(
                    self.runner
                        .active_feedback
                        .get("violations")
                        .cloned()
                        .unwrap_or_else(|| json!([])),
                ),
                _ => None,
            },
            "task" => {
                let task = self.runner.config.task.as_ref().ok_or_else(|| {
                    Undefined::new(var, "`task.*` exists only when the workflow runs for a task (under `orchestrate agent` or `swarm up`)")
                })?;
                if rest.first().map(String::as_str) == Some("json") && task.get("json").is_none() {
                    return Err(Undefined::new(
                        var,
                        "the task's text is not JSON (or nests deeper than 128 levels); enqueue JSON, or use `${task.text}`",
                    ));
                }
                template::walk(task, rest).cloned()
            }
            "context" => {
                let value = state.context.get(&rest[0]).ok_or_else(|| {
                    Undefined::new(var, format!("no context key `{}`; pass it with `--context {}=...` or set it under `context:` in the workflow", rest[0], rest[0]))
                })?;
                template::walk(value, &rest[1..]).cloned()
            }
            "loop" => self
                .loops
                .last()
                .and_then(|frame| match rest.first().map(String::as_str) {
                    Some("index") => Some(json!(frame.index)),
                    Some("total") => Some(json!(frame.total)),
                    _ => None,
                }),
            "steps" => {
                let name = &rest[0];
                let result = self.runner.results.get(name).ok_or_else(|| {
                    Undefined::new(
                        var,
                        format!("step `{name}` has not run (yet) in this run, or was skipped"),
                    )
                })?;
                let found = template::walk(result, &rest[1..]).cloned();
                if found.is_none() && rest.len() >= 2 && result.get(&rest[1]).is_none() {
                    return Err(Undefined::new(
                        var,
                        format!("step `{name}` has no `{}` in its result", rest[1]),
                    ));
                }
                found
            }
            root => self
                .loops
                .iter()
                .rev()
                .find(|frame| frame.var == root)
                .and_then(|frame| template::walk(&frame.item, rest).cloned()),
        };
        found.ok_or_else(|| Undefined::new(var, "no such value at this point of the run"))
    }
}

/// Provider placeholders (`${PROMPT}`, `${model}`) over the run's variables.
struct ProviderScope<'a> {
    values: &'a HashMap<String, String>,
    base: &'a dyn Lookup,
}

impl Lookup for ProviderScope<'_> {
    fn lookup(&self, var: &VarRef) -> Result<Value, Undefined> {
        if var.segments.len() == 1 {
            if let Some(value) = self.values.get(var.root()) {
                return Ok(Value::String(value.clone()));
            }
            if var.root() == "PROMPT" {
                return Err(Undefined::new(
                    var,
                    "the step has no `input_file` to read the prompt from",
                ));
            }
            return Err(Undefined::new(
                var,
                format!(
                    "give `{}` in `provider_params` or the provider's `defaults`",
                    var.root()
                ),
            ));
        }
        self.base.lookup(var)
    }
}

/// Budgets: the checks between steps and the live watch of a running step.
impl Runner {
    /// Before a step: a run already over a limit fails here, without starting `step`.
    fn over_budget_before(&mut self, step: &Step) -> Result<bool, RunError> {
        if self.budget.unlimited() {
            return Ok(false);
        }
        self.warn_unpriced()?;
        let Some(crossing) = self.budget.check(self.budget.spent.get()) else {
            return Ok(false);
        };
        let workspace = self.config.workspace.clone();
        let message = crossing.message(&workspace, Some(&step.name), false);
        self.event(
            "budget_exceeded",
            crossing.event(&workspace, Some(&step.name), false),
            true,
        )?;
        self.progress(&format!("✗ {message}"));
        self.failure = Some(Failure {
            exit_code: 1,
            message,
            step_exit_code: None,
        });
        self.budget.cross(crossing.limit);
        Ok(true)
    }

    /// Whether a cost limit (the run's or the swarm's per day) applies.
    fn cost_limited(&self) -> bool {
        let limits = &self.budget.limits;
        limits
            .run
            .as_ref()
            .is_some_and(|b| b.max_cost_usd.is_some())
            || limits
                .day
                .as_ref()
                .is_some_and(|(swarm, _)| swarm.max_cost_usd_per_day.is_some())
    }

    /// At start, under a cost limit: names each agent step whose model has no price (so the
    /// limit could not count its spending) and what to add to runtimes.yaml.
    fn warn_unpriceable(&mut self, steps: &[Step]) -> Result<(), RunError> {
        if !self.cost_limited() {
            return Ok(());
        }
        let mut agents = Vec::new();
        agent_steps(steps, &mut agents);
        let mut unpriceable = Vec::new();
        for (step, agent) in agents {
            if let Some((runtime, model)) = self.unpriceable_model(agent) {
                unpriceable.push((step.name.clone(), runtime, model));
            }
        }
        for (step, runtime, model) in unpriceable {
            let message = format!(
                "budget: max_cost_usd cannot count step {step} ({runtime}, model {model}): no price for {model}; add one to runtimes.yaml: `prices: {{{model}: {{input: ..., output: ...}}}}` (USD per million tokens; also cache_read, cache_write)"
            );
            self.progress(&format!("! {message}"));
            self.event(
                "budget_unpriced",
                json!({"step": step, "runtime": runtime, "model": model, "message": message}),
                false,
            )?;
        }
        Ok(())
    }

    /// Who runs an agent step, first match wins: `--runtime`, the step's `runtime:`, the role's
    /// (the run's default provider), then `default:` of runtimes.yaml.
    fn runtime_name(&self, agent: &orchestrate_lang::model::AgentStep) -> Option<String> {
        self.config
            .runtime_override
            .clone()
            .or_else(|| agent.runtime.clone())
            .or_else(|| self.config.default_provider.clone())
            .or_else(|| self.config.profiles.default.clone())
    }

    /// The runtime and model of an agent step whose spending will have no price, as far as can
    /// be told before it runs (claude prices its own runs; gemini left on `auto` routes to
    /// models of the built-in table; a model the engine cannot render yet is not judged).
    fn unpriceable_model(
        &self,
        agent: &orchestrate_lang::model::AgentStep,
    ) -> Option<(String, String)> {
        use orchestrate_runtime::parse::Runtime;
        let profiles = &self.config.profiles;
        let name = self.runtime_name(agent)?;
        let profile = profiles.resolve(&name);
        let runtime = Runtime::from_name(&profile.runtime)?;
        if runtime == Runtime::Claude {
            return None;
        }
        let model = match &agent.model {
            Some(t) => t.render(&self.scope(&[])).ok()?,
            None => match self
                .config
                .default_model
                .clone()
                .or_else(|| profile.model.clone())
            {
                Some(model) => model,
                None => cli_default_model(runtime, &profile, &[])?.model,
            },
        };
        profiles
            .prices
            .lookup(&model)
            .is_none()
            .then(|| (runtime.name().to_string(), model))
    }

    /// Says once that a cost limit cannot count some tokens (their model has no price).
    fn warn_unpriced(&mut self) -> Result<(), RunError> {
        if !self.cost_limited()
            || self.budget.spent.get().unpriced_tokens == 0
            || self.budget.warned_unpriced
        {
            return Ok(());
        }
        self.budget.warned_unpriced = true;
        let message = format!(
            "budget: {} tokens have no known price, so the cost limit cannot count them (token limits still apply); add a price for their model under `prices:` in runtimes.yaml",
            self.budget.spent.get().unpriced_tokens
        );
        self.progress(&format!("! {message}"));
        self.event(
            "budget_unpriced",
            json!({"unpriced_tokens": self.budget.spent.get().unpriced_tokens, "message": message}),
            false,
        )
    }

    /// Runs a step's process while watching the run's limits: an agent's stdout is parsed as it
    /// streams, and the run's spending plus the step's live spending is checked after each usage
    /// update (and `max_wall_sec` on its deadline). A crossing stops the process group at once,
    /// and so does claude's first authentication failure (it would retry a rejected key for
    /// minutes; the result then says `auth`, see `parse::StreamParser::auth_failure`).
    async fn run_watched(
        &self,
        mut spec: exec::Spec,
        agent: Option<&AgentRun>,
    ) -> (exec::Finished, Option<crate::budget::Crossing>) {
        use crate::budget::Spend;
        use orchestrate_runtime::parse::{self, StreamParser, Usage};
        let cancel = self.config.cancel.clone();
        let budget = &self.budget;
        let runtime = agent.and_then(|a| a.runtime);
        let watch_auth = runtime == Some(parse::Runtime::Claude);
        if budget.unlimited() && !watch_auth {
            return (exec::run(spec, cancel).await, None);
        }
        let stop = CancellationToken::new();
        spec.stop = Some(stop.clone());
        let mut lines = None;
        if (budget.counts_spending() || watch_auth)
            && let Some(runtime) = runtime
        {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
            spec.stdout_lines = Some(tx);
            lines = Some((StreamParser::new(runtime), rx));
        }
        let spent = self.budget.spent.get();
        let prices = &self.config.profiles.prices;
        let model = agent.and_then(|a| {
            a.model
                .clone()
                .or_else(|| a.cli_default.as_ref().map(|guess| guess.model.clone()))
        });
        let previous = agent.and_then(|a| a.previous_session);
        let wall_deadline = budget.wall_deadline();
        let monitor = async move {
            let mut last = Usage::default();
            loop {
                let line = async {
                    match &mut lines {
                        Some((_, rx)) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let wall = async {
                    match wall_deadline {
                        // Just past the limit, so that the check (strictly over) sees it crossed.
                        Some(at) => {
                            tokio::time::sleep_until((at + Duration::from_millis(1)).into()).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    line = line => {
                        let Some(line) = line else {
                            // The process closed stdout: only the wall clock is left to watch.
                            lines = None;
                            continue;
                        };
                        let Some((parser, _)) = &mut lines else { continue };
                        parser.line(&String::from_utf8_lossy(&line));
                        if parser.auth_failure().is_some() {
                            return None;
                        }
                        let own = parser.step_share_so_far(previous.as_ref());
                        let usage = own.usage;
                        if usage == last {
                            continue;
                        }
                        last = usage;
                        let cost = own.cost_usd.or_else(|| {
                            let model = parser.model_so_far().map(str::to_string).or_else(|| model.clone())?;
                            prices.cost(&model, &usage)
                        });
                        let live = spent.plus(Spend::of(usage.total(), cost));
                        if let Some(crossing) = budget.check(live) {
                            return Some(crossing);
                        }
                    }
                    () = wall => {
                        if let Some(crossing) = budget.check(spent) {
                            return Some(crossing);
                        }
                        // Only a wall limit can fire here; without a crossing it cannot repeat.
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let run = exec::run(spec, cancel);
        tokio::pin!(run);
        tokio::pin!(monitor);
        // `Some(None)`: stopped at an authentication failure, no limit crossed.
        let mut stopped: Option<Option<crate::budget::Crossing>> = None;
        let finished = loop {
            tokio::select! {
                finished = &mut run => break finished,
                found = &mut monitor, if stopped.is_none() => {
                    stopped = Some(found);
                    stop.cancel();
                }
            }
        };
        (finished, stopped.flatten())
    }

    /// A step stopped by a crossing: its result says why, the event records the figures, and
    /// the run's failure message is the crossing's.
    fn budget_stopped(
        &mut self,
        step: &Step,
        crossing: &crate::budget::Crossing,
        result: &mut Value,
    ) {
        let workspace = self.config.workspace.clone();
        let message = crossing.message(&workspace, Some(&step.name), true);
        let _ = self.event(
            "budget_exceeded",
            crossing.event(&workspace, Some(&step.name), true),
            true,
        );
        result["status"] = json!("failed");
        result["exit_code"] = json!(1);
        result["budget_exceeded"] = json!(crossing.limit);
        result["error"] = if result["error"].is_object() {
            json!({"kind": "budget", "message": message})
        } else {
            json!(message)
        };
        self.budget.failure = Some(message);
        self.budget.cross(crossing.limit);
    }
}

impl BudgetState {
    /// Counts what a step result spent (an agent's usage, a child run's total).
    fn count(&self, result: &Value) {
        self.spent.count(result);
    }

    /// Marks the run as stopped by a crossing of `limit`.
    fn cross(&self, limit: &str) {
        let _ = self.crossed.set(limit.to_string());
    }

    /// The limit whose crossing stopped the run (in this runner or one of its lanes).
    fn crossed(&self) -> Option<&str> {
        self.crossed.get().map(String::as_str)
    }

    fn is_crossed(&self) -> bool {
        self.crossed.get().is_some()
    }

    /// No limit applies to this run, its own or an ancestor's.
    fn unlimited(&self) -> bool {
        self.limits.is_empty() && self.inherited.iter().all(|i| i.limits.is_empty())
    }

    fn counts_spending(&self) -> bool {
        self.limits.counts_spending() || self.inherited.iter().any(|i| i.limits.counts_spending())
    }

    /// When the earliest `max_wall_sec` (this run's or an ancestor's) runs out.
    fn wall_deadline(&self) -> Option<Instant> {
        let own = self.limits.max_wall().map(|max| self.started + max);
        self.inherited
            .iter()
            .filter_map(|i| i.limits.max_wall().map(|max| i.started + max))
            .chain(own)
            .min()
    }

    /// The first limit crossed by `live` (this run's spending so far, a running step's
    /// included): this run's own, then each ancestor's with what it spent before this run.
    fn check(&self, live: crate::budget::Spend) -> Option<crate::budget::Crossing> {
        self.limits.check(live, self.started.elapsed()).or_else(|| {
            self.inherited
                .iter()
                .find_map(|i| i.limits.check(i.base.plus(live), i.started.elapsed()))
        })
    }

    /// The limits a child run started now inherits: every ancestor's and this run's, each with
    /// what had been spent against it so far.
    fn handed_down(&self) -> Vec<InheritedLimits> {
        let mut out: Vec<InheritedLimits> = self
            .inherited
            .iter()
            .map(|i| InheritedLimits {
                limits: i.limits.clone(),
                base: i.base.plus(self.spent.get()),
                started: i.started,
            })
            .collect();
        if !self.limits.is_empty() {
            out.push(InheritedLimits {
                limits: self.limits.clone(),
                base: self.spent.get(),
                started: self.started,
            });
        }
        out
    }
}

/// The `on` edge a step's outcome takes, if it has one: `success`, `failure` (`invalid` first for
/// an output that failed its schema), `rejected` (then `failure`), each falling back to `always`.
/// The live run and the replay of a resume both route through it.
fn edge<'a>(step: &'a Step, flow: Flow, result: Option<&Value>) -> Option<&'a Target> {
    let on = &step.on;
    let invalid = result.is_some_and(|r| r.get("violations").is_some());
    match flow {
        Flow::Succeeded => on.success.as_ref(),
        Flow::Failed if invalid && on.invalid.is_some() => on.invalid.as_ref(),
        Flow::Failed => on.failure.as_ref(),
        Flow::Rejected => on.rejected.as_ref().or(on.failure.as_ref()),
        Flow::End | Flow::Skipped => return None,
    }
    .or(on.always.as_ref())
}

/// Fails a succeeded result whose JSON does not match the step's `output_schema`, listing the
/// first violations (`violations`: `{path, message}`; routed by `on.invalid`).
fn check_schema(step: &Step, schema: &orchestrate_lang::model::OutputSchema, result: &mut Value) {
    let violations = schema.violations(&result["json"], 20);
    if violations.is_empty() {
        return;
    }
    let first: Vec<String> = violations
        .iter()
        .take(3)
        .map(|v| {
            format!(
                "{}: {}",
                v["path"].as_str().unwrap_or("/"),
                v["message"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let more = violations.len().saturating_sub(first.len());
    let message = format!(
        "the output does not match its output_schema ({}): {}{}",
        schema.origin,
        first.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    );
    result["status"] = json!("failed");
    result["exit_code"] = json!(2);
    result["error"] = if matches!(step.kind, StepKind::Agent(_)) {
        json!({"kind": "schema_violation", "message": message})
    } else {
        json!(message)
    };
    result["violations"] = json!(violations);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_output_drops_one_trailing_newline_as_command_substitution_does() {
        assert_eq!(text_output("yes\n", true), ("yes", false));
        assert_eq!(text_output("yes\r\n", true), ("yes", false));
        assert_eq!(text_output("a\n\n", true), ("a\n", false));
        assert_eq!(text_output("no newline", true), ("no newline", false));
        assert_eq!(text_output("", true), ("", false));
        // Cut output keeps what it has: its end is not the command's.
        assert_eq!(text_output("partial\n", false), ("partial\n", true));
        let long = "x".repeat(TEXT_KEEP_BYTES) + "\n";
        assert_eq!(text_output(&long, true), (&long[..TEXT_KEEP_BYTES], true));
    }

    /// The loader refuses a role's workflow with a step the role may not run; the runner
    /// refuses it again when the step is reached (a workflow changed after loading, a caller
    /// that skipped the loader).
    #[tokio::test]
    async fn a_step_the_role_may_not_run_is_refused_when_reached() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().canonicalize().unwrap();
        let file = ws.join("wf.yaml");
        std::fs::write(
            &file,
            "name: coord\nsteps:\n  - name: Hand\n    enqueue: {role: dev, text: go}\n  - name: Build\n    command: [touch, built]\n",
        )
        .unwrap();
        let workflow = orchestrate_lang::load::load_file(&file).unwrap();
        let mut config = RunConfig::new(ws.clone(), Map::new(), CancellationToken::new());
        config.capabilities = Some(("coord".into(), vec!["enqueue".into()]));
        let runner = Runner::create(workflow, "", config).unwrap();
        let report = runner.run().await.unwrap();
        assert_eq!(report.status, RunStatus::Failed);
        let error = report.error.unwrap();
        assert!(
            error.contains("role `coord` may not run this step: it needs capability `command`"),
            "{error}"
        );
        // The allowed step ran; the refused one never started a process.
        let queued: Vec<_> = std::fs::read_dir(ws.join("inbox/dev")).unwrap().collect();
        assert_eq!(queued.len(), 1);
        assert!(!ws.join("built").exists());
    }
}
