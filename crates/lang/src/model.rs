//! The validated workflow: what the runner executes.
//!
//! Owns: types that can only hold a workflow the loader has accepted (every goto resolves, every
//! step kind has what it needs, every template parsed). Does not parse YAML or run anything.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::template::Template;

/// Visits of one step before the engine calls it a loop, unless the workflow or step says
/// otherwise.
pub(crate) const DEFAULT_MAX_VISITS: u32 = 50;

/// A validated workflow: every reference, `goto` and template checked; what the engine runs.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// `name:`, else the file name without its extension.
    pub name: String,
    /// The file it was loaded from, as given.
    pub path: PathBuf,
    /// Hex SHA-256-free fingerprint of the source text (FNV-1a 64), used to notice edits between
    /// a run and its resume.
    pub fingerprint: String,
    /// `inbox_dir`, `processed_dir`, `failed_dir`, `task_extension`: the spec's queue layout.
    pub queue: QueueDirs,
    /// `providers:` over the built-in templates, by name.
    pub providers: BTreeMap<String, ProviderTemplate>,
    /// `context:` defaults; `--context` and `--context-file` override them.
    pub context: serde_json::Map<String, Value>,
    /// `env:` for every step; values may hold `${...}`.
    pub env: Vec<(String, Template)>,
    /// `max_visits:`: how often a step may be entered per activation of its step list before the
    /// run fails as a loop (default 50).
    pub max_visits: u32,
    /// When true (the default), a failed step with no `on: failure`/`always` handler ends the run.
    /// When false, the run goes on to the next step and still ends as failed.
    pub strict_flow: bool,
    /// `budget:`: limits on each run of this workflow as a whole.
    pub budget: Option<Budget>,
    /// `outputs:`: what a run of this workflow hands back when it is a sub-workflow, rendered in
    /// its scope when it succeeds (`${steps.<Step>.outputs.<name>}` in the parent).
    pub outputs: Vec<(String, Template)>,
    /// `isolation:`: where the steps run (a git worktree of their own); a role's overrides it.
    pub isolation: Option<Isolation>,
    /// The top-level steps, in order.
    pub steps: Vec<Step>,
}

/// `isolation:` of a role or a workflow: where a task's (or run's) steps work.
#[derive(Debug, Clone, PartialEq)]
pub enum Isolation {
    /// `isolation: none`: in the workspace itself (a role's way to turn off its workflow's).
    None,
    /// `isolation: worktree`: in a git worktree of their own, on a branch of their own.
    Worktree(WorktreeSpec),
}

/// `isolation: {worktree: {...}}`; a field left unset takes the workflow's, then the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorktreeSpec {
    /// The commit-ish new branches start from (default: the workspace's `HEAD`).
    pub base: Option<String>,
    /// Keep the worktree after a success too (failures always keep theirs).
    pub keep: Option<bool>,
    /// Branch name template: `{role}`, `{task}`, `{workflow}` (default
    /// `orchestrate/{role}/{task}`).
    pub branch: Option<String>,
    /// Directory the worktrees go under, relative to the workspace (default
    /// `.orchestrate/worktrees`).
    pub dir: Option<String>,
    /// A git remote the task's branch is pushed to after a success, and hand-off branches
    /// (a JSON task's `branch`) are fetched from.
    pub remote: Option<String>,
    /// Where it was written (`file:line`), for messages.
    pub at: String,
}

/// Spending limits (`budget:` of a workflow or a role); any subset may be set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Budget {
    /// Most USD a run may spend, priced from the CLIs' usage.
    pub max_cost_usd: Option<f64>,
    /// Most tokens a run may use, as the CLIs count them.
    pub max_tokens: Option<u64>,
    /// Longest a run may take, wall clock.
    pub max_wall: Option<Duration>,
    /// Where each limit was written (`file:line`), for messages.
    pub cost_at: String,
    /// Where `max_tokens` was written.
    pub tokens_at: String,
    /// Where `max_wall_sec` was written.
    pub wall_at: String,
}

impl Budget {
    /// The stricter of two budgets, limit by limit (a limit only one of them sets is kept).
    pub fn stricter(a: Option<&Budget>, b: Option<&Budget>) -> Option<Budget> {
        let (a, b) = match (a, b) {
            (None, None) => return None,
            (Some(x), None) | (None, Some(x)) => return Some(x.clone()),
            (Some(a), Some(b)) => (a, b),
        };
        let mut out = a.clone();
        if b.max_cost_usd
            .is_some_and(|v| a.max_cost_usd.is_none_or(|w| v < w))
        {
            out.max_cost_usd = b.max_cost_usd;
            out.cost_at = b.cost_at.clone();
        }
        if b.max_tokens
            .is_some_and(|v| a.max_tokens.is_none_or(|w| v < w))
        {
            out.max_tokens = b.max_tokens;
            out.tokens_at = b.tokens_at.clone();
        }
        if b.max_wall.is_some_and(|v| a.max_wall.is_none_or(|w| v < w)) {
            out.max_wall = b.max_wall;
            out.wall_at = b.wall_at.clone();
        }
        Some(out)
    }
}

/// `swarm.yaml` of a workspace: limits shared by every role process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SwarmConfig {
    /// Spending of all the swarm's tasks per UTC day.
    pub max_cost_usd_per_day: Option<f64>,
    /// Tokens of all the swarm's tasks per UTC day.
    pub max_tokens_per_day: Option<u64>,
    /// Where each limit was written (`file:line`), for messages.
    pub cost_at: String,
    /// Where `max_tokens_per_day` was written.
    pub tokens_at: String,
    /// `queue:`: the PostgreSQL database the swarm's queue lives in (the filesystem queue
    /// without one). May hold a password: never shown or written to a record.
    pub queue_url: Option<String>,
    /// `machine_labels:`: this machine's labels (`ORCHESTRATE_MACHINE_LABELS` overrides them),
    /// which roles' `machines:` ask for.
    pub machine_labels: Vec<String>,
}

/// Where a workflow's queue directories are (relative to the workspace) and how task files end.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDirs {
    pub(crate) inbox_dir: String,
    /// Where finished tasks' records go (`--clean-processed` empties it).
    pub processed_dir: String,
    pub(crate) failed_dir: String,
    pub(crate) task_extension: String,
}

impl Default for QueueDirs {
    fn default() -> Self {
        QueueDirs {
            inbox_dir: "inbox".into(),
            processed_dir: "processed".into(),
            failed_dir: "failed".into(),
            task_extension: ".task".into(),
        }
    }
}

/// A `providers:` entry: the command that runs a model CLI around a prompt.
#[derive(Debug, Clone)]
pub struct ProviderTemplate {
    /// `command:` argv; `${PROMPT}` and the params (`${model}`) are substituted.
    pub command: Vec<Template>,
    /// `defaults:` for params a step's `provider_params` does not set.
    pub defaults: BTreeMap<String, String>,
    /// The flag that names a model (built-in templates only): `FLAG MODEL` is appended when a
    /// model is named (`provider_params.model`, the role's or run's model), and the CLI's own
    /// default model is used otherwise.
    pub model_flag: Option<&'static str>,
}

impl ProviderTemplate {
    /// The arguments that name `model`, for a template with a model flag.
    pub fn model_args(&self, model: Option<&String>) -> Vec<String> {
        match (self.model_flag, model) {
            (Some(flag), Some(model)) => vec![flag.to_string(), model.clone()],
            _ => Vec::new(),
        }
    }
}

/// One step of a workflow: its kind and the fields every kind shares.
#[derive(Debug, Clone)]
pub struct Step {
    /// `name:`, unique in the workflow; `goto` and `${steps.<name>...}` use it.
    pub name: String,
    /// Line and column of the step in its file (for messages).
    pub line: u32,
    pub(crate) column: u32,
    #[expect(
        dead_code,
        reason = "loaded from the step's `agent:`; nothing reads it yet"
    )]
    pub(crate) agent: Option<String>,
    /// What the step does, with the fields of that kind.
    pub kind: StepKind,
    /// `when:`: the step is skipped when this is false.
    pub when: Option<Condition>,
    /// `on:`: where to go after the step.
    pub on: Transitions,
    /// `output_capture:`: how stdout becomes the step's result.
    pub capture: Capture,
    /// `allow_parse_error:`: with JSON capture, output that does not parse does not fail the step.
    pub allow_parse_error: bool,
    /// `output_file:`: stdout is also written to this file (against WORKSPACE).
    pub output_file: Option<Template>,
    /// `timeout_sec`: wall-clock limit; the step's processes are stopped and it fails with 124.
    pub timeout: Option<Duration>,
    /// `idle_timeout_sec`: the process is stopped after this long without output.
    pub idle_timeout: Option<Duration>,
    /// `retry:`: attempts, delay and backoff.
    pub retry: Retry,
    /// `max_visits:` of this step, over the workflow's.
    pub max_visits: Option<u32>,
    /// `env:` of this step, over the workflow's; values may hold `${...}`.
    pub env: Vec<(String, Template)>,
    /// `secrets:`: environment variables passed to this step only and masked as `***` on disk.
    pub secrets: Vec<String>,
    /// A jq condition over the step's result: when it holds after the step succeeded, the step
    /// counts as rejected (`on.rejected`), e.g. a review whose JSON says it failed.
    pub rejected_when: Option<String>,
    /// Stop a loop through this step when its findings stop shrinking.
    pub converge: Option<Converge>,
    /// `output_schema:`: the JSON Schema the step's JSON output must match.
    pub output_schema: Option<OutputSchema>,
    /// Line and column of some field values (`provider`, `when.jq`, `for_each.items_from`,
    /// `input_file`), so that later checks can point at them.
    pub(crate) at: BTreeMap<&'static str, (u32, u32)>,
}

/// `converge:`: a loop through a step (a review, a test run) must make its findings shrink.
#[derive(Debug, Clone)]
pub struct Converge {
    /// How to count the findings on each visit.
    pub findings: Findings,
    /// K: the loop is not converging when K visits in a row found no fewer findings than the
    /// fewest before them.
    pub rounds: u32,
    /// Where to go instead (a step of the same list); `None`: the run fails.
    pub on_stall: Option<String>,
}

/// What a step found, read from its result on each visit: an array (its length counts) or a
/// number.
#[derive(Debug, Clone)]
pub enum Findings {
    /// A jq expression over the step's result (`.json.findings`).
    Jq(String),
    /// A `${...}` reference (`${steps.Review.json.findings}`).
    Pointer(Template),
}

/// What a step does: one variant per step kind, with its own fields.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// `command:` runs a program (no shell).
    Command {
        /// The program and its arguments, each a template.
        argv: Vec<Template>,
    },
    /// A model CLI: a provider template (or `command_override`) fed the prompt in `input_file`.
    Provider {
        /// `provider:`: the template's name; `None` takes the role's or run's.
        provider: Option<String>,
        /// `provider_params:` over the template's `defaults:`.
        params: BTreeMap<String, Template>,
        /// `input_file:`: the prompt file, passed literally as `${PROMPT}`.
        input_file: Option<Template>,
        /// `command_override:`: an argv that replaces the template's command.
        command_override: Option<Vec<Template>>,
    },
    /// `for_each:` runs its steps once per item.
    ForEach {
        /// `items:` or `items_from:`.
        items: Items,
        /// `as:`: the name each item is bound to (`${<var>}`).
        var: String,
        /// The steps run for each item.
        steps: Vec<Step>,
        /// `max_parallel` and `join` (the default: one item at a time, all must succeed).
        fan: FanOut,
    },
    /// `parallel:`: named branches (step lists) run at once and joined like a `for_each`'s
    /// items.
    Parallel {
        /// The branches, in order.
        branches: Vec<Branch>,
        /// `max_parallel` and `join`.
        fan: FanOut,
    },
    /// `wait_for:` blocks until enough files match a glob; exit 124 on timeout.
    WaitFor {
        /// The pattern, relative to WORKSPACE.
        glob: Template,
        /// `timeout_sec` (default 300 s).
        timeout: Duration,
        /// `poll_ms`: how often to look (default 500 ms).
        poll: Duration,
        /// `min_count`: matches needed (default 1).
        min_count: usize,
    },
    /// A coding agent (claude, codex, gemini) run through its adapter: the prompt on stdin, the
    /// CLI's structured stream parsed into `result`, `usage`, `cost_usd`, `session_id`.
    Agent(AgentStep),
    /// Blocks until a person (or any tool) approves or rejects, through decision files.
    Approval {
        /// What the person is asked.
        message: Template,
        /// Files shown with the request.
        artifacts: Vec<Template>,
        /// How long to wait for a decision; `None`: until one comes (or the run is cancelled).
        timeout: Option<Duration>,
    },
    /// Runs another workflow file as a child run (`workflow:` with `with:` inputs).
    Workflow(SubWorkflow),
    /// Hands a task to a role: written durably into its inbox (`*.tmp`, then renamed).
    Enqueue {
        /// The role whose inbox takes the task.
        role: Template,
        /// The task's content.
        content: EnqueueContent,
        /// The task id; a new time-ordered id when absent.
        name: Option<Template>,
    },
}

/// A `workflow:` step: the child workflow and the inputs it is given.
#[derive(Debug, Clone)]
pub struct SubWorkflow {
    /// The child's file as written, relative to WORKSPACE.
    pub path: String,
    /// `with:`: rendered in the parent's scope, they become the child's `${context.*}` over its
    /// own `context:` defaults.
    pub with: Vec<WithInput>,
    /// Line and column of the `workflow:` value, for messages about the child file.
    pub(crate) at: (u32, u32),
    /// The child as loaded with the parent (when the loader knew the workspace): validated,
    /// its own children loaded too. `None` when loaded without a workspace (the runner then
    /// loads it when the step runs).
    pub child: Option<std::sync::Arc<LoadedChild>>,
}

/// One `with:` entry of a `workflow:` step.
#[derive(Debug, Clone)]
pub struct WithInput {
    /// The name the child sees (`${context.<key>}`).
    pub key: String,
    /// JSON whose strings may hold `${...}` (a string that is one `${...}` keeps the value's
    /// JSON type).
    pub value: Value,
    /// Line and column of the key.
    pub(crate) at: (u32, u32),
}

/// A child workflow loaded with its parent: the model and the text it came from (the child
/// run keeps a copy of the text, as every resumable run does).
#[derive(Debug)]
pub struct LoadedChild {
    /// The child, validated.
    pub workflow: Workflow,
    /// Its source text.
    pub text: String,
}

/// An `agent:` step: the CLI, the prompt and what the agent may do.
#[derive(Debug, Clone)]
pub struct AgentStep {
    /// `claude`, `codex`, `gemini`, or a provider template's name; `None`: the run's, role's or
    /// profile's default.
    pub runtime: Option<String>,
    /// `prompt:` or `prompt_file:`.
    pub prompt: Prompt,
    /// `model:`, which may hold `${...}`; `None`: the profile's, role's or CLI's default.
    pub model: Option<Template>,
    /// `phase:`: what the agent may change.
    pub phase: Phase,
    /// `max_turns:`, for CLIs that can bound their turns.
    pub max_turns: Option<u32>,
    /// The step whose session this one continues.
    pub resume: Option<String>,
    /// Command prefixes a `write` step may run through the agent's shell tool.
    pub allow_shell: Vec<String>,
    /// Paths (globs) a `readonly`/`plan` step may write, e.g. the plan it produces.
    pub artifacts: Vec<String>,
}

/// Where an agent's prompt comes from.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Inline text; `${...}` is substituted.
    Text(Template),
    /// A workspace file passed literally (the spec's rule: file contents are not substituted).
    File(Template),
}

/// What an agent step may do. Phases are permission boundaries enforced by each CLI's own
/// controls and verified by the engine (`readonly` and `plan` may not change the workspace).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Reads only; the workspace must be unchanged afterwards.
    Readonly,
    /// Plans: reads, and writes only its `artifacts`.
    Plan,
    /// Edits files; runs only the `allow_shell` commands.
    Write,
    /// Anything, with no permission prompts.
    Full,
}

impl Phase {
    /// The phase as written in YAML and records.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Readonly => "readonly",
            Phase::Plan => "plan",
            Phase::Write => "write",
            Phase::Full => "full",
        }
    }

    /// Whether the engine checks that the workspace is unchanged after the step.
    pub fn verified_readonly(self) -> bool {
        matches!(self, Phase::Readonly | Phase::Plan)
    }
}

/// What an `enqueue` step writes as the task.
#[derive(Debug, Clone)]
pub enum EnqueueContent {
    /// Inline text; `${...}` is substituted.
    Text(Template),
    /// A workspace file whose contents (passed literally) become the task.
    File(Template),
    /// JSON whose strings may hold `${...}`.
    Json(Value),
}

/// A compiled `output_schema` (inline, or from a file in the workspace).
#[derive(Clone)]
pub struct OutputSchema {
    /// The schema document, as given (passed to CLIs that take one).
    pub schema: Value,
    /// Where it came from: `inline` or the file's workspace path.
    pub origin: String,
    pub(crate) validator: std::sync::Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for OutputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputSchema")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl OutputSchema {
    /// The first `limit` places where `instance` does not match, as `{path, message}`.
    pub fn violations(&self, instance: &Value, limit: usize) -> Vec<Value> {
        self.validator
            .iter_errors(instance)
            .take(limit)
            .map(|e| {
                let path = e.instance_path().to_string();
                serde_json::json!({
                    "path": if path.is_empty() { "/".to_string() } else { path },
                    "message": e.to_string(),
                })
            })
            .collect()
    }
}

/// What a role's steps may do (`capabilities:` in its file): a coordinator that only hands work
/// on and asks people, a reviewer that only reads.
pub(crate) const CAPABILITIES: &[&str] = &[
    "command", "provider", "enqueue", "approval", "wait_for", "readonly", "plan", "write", "full",
];

impl StepKind {
    /// The step lists nested in this step: a `for_each` body, each `parallel` branch.
    pub fn bodies(&self) -> Vec<&[Step]> {
        match self {
            StepKind::ForEach { steps, .. } => vec![steps.as_slice()],
            StepKind::Parallel { branches, .. } => {
                branches.iter().map(|b| b.steps.as_slice()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The capability a step of this kind needs (an agent step: its phase); `None` for
    /// `for_each`, `parallel` and `workflow`, whose bodies' (child's) steps are checked instead.
    pub fn capability(&self) -> Option<&'static str> {
        match self {
            StepKind::ForEach { .. } | StepKind::Parallel { .. } | StepKind::Workflow(_) => None,
            StepKind::Agent(agent) => Some(agent.phase.label()),
            other => Some(other.label()),
        }
    }

    /// The step kind as written in YAML and records (`command`, `for_each`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            StepKind::Command { .. } => "command",
            StepKind::Provider { .. } => "provider",
            StepKind::ForEach { .. } => "for_each",
            StepKind::Parallel { .. } => "parallel",
            StepKind::WaitFor { .. } => "wait_for",
            StepKind::Enqueue { .. } => "enqueue",
            StepKind::Agent(_) => "agent",
            StepKind::Approval { .. } => "approval",
            StepKind::Workflow(_) => "workflow",
        }
    }
}

/// How a `for_each` runs its items, or a `parallel` step its branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanOut {
    /// At most this many items (branches) run at once; 1 is the spec's sequential loop.
    pub max_parallel: u32,
    /// When the whole fan-out counts as succeeded.
    pub join: Join,
}

impl FanOut {
    /// The spec's `for_each`: one item after another, the first failure ends the loop.
    pub(crate) const SEQUENTIAL: FanOut = FanOut {
        max_parallel: 1,
        join: Join::AllSuccess,
    };

    /// Whether items run on their own lanes (concurrently, or under a join that outlives a
    /// failure) rather than inline as the spec's sequential loop.
    pub fn fans_out(&self) -> bool {
        *self != FanOut::SEQUENTIAL
    }
}

/// When a fan-out (a `for_each` or `parallel` step) succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Every item succeeds; the first failure cancels the items still running and starts no
    /// more.
    AllSuccess,
    /// At least one item succeeds; every item runs to its end.
    AnySuccess,
    /// Every item runs to its end; the step succeeds whatever their outcomes.
    AllDone,
}

impl Join {
    pub(crate) const NAMES: [&'static str; 3] = ["all_success", "any_success", "all_done"];

    pub(crate) fn parse(text: &str) -> Option<Join> {
        match text {
            "all_success" => Some(Join::AllSuccess),
            "any_success" => Some(Join::AnySuccess),
            "all_done" => Some(Join::AllDone),
            _ => None,
        }
    }

    /// The join as written in YAML (`all_success`, ...).
    pub fn label(self) -> &'static str {
        match self {
            Join::AllSuccess => "all_success",
            Join::AnySuccess => "any_success",
            Join::AllDone => "all_done",
        }
    }
}

/// One named branch of a `parallel` step.
#[derive(Debug, Clone)]
pub struct Branch {
    /// The branch's name, unique in its step.
    pub name: String,
    /// Line of the branch's name in its file.
    pub(crate) line: u32,
    /// The branch's steps, run in order.
    pub steps: Vec<Step>,
}

/// What a `for_each` iterates over.
#[derive(Debug, Clone)]
pub enum Items {
    /// `items:` as written (strings may hold `${...}`).
    Literal(Vec<Value>),
    /// `items_from:`: an earlier step's lines or a JSON array of its output.
    From(Pointer),
}

/// `steps.<Step>.lines` or `steps.<Step>.json[.<dot.path>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pointer {
    /// The pointer as written.
    pub text: String,
    /// The step it reads.
    pub step: String,
    /// `["lines"]` or `["json", ...path]`.
    pub path: Vec<String>,
}

/// A step's `when:`: it runs only when this holds.
#[derive(Debug, Clone)]
pub enum Condition {
    /// `equals: {left, right}`: the two strings are equal after substitution.
    Equals {
        /// One side, substituted.
        left: Template,
        /// The other side, substituted.
        right: Template,
    },
    /// `not_equals: {left, right}`: the two strings differ after substitution.
    NotEquals {
        /// One side, substituted.
        left: Template,
        /// The other side, substituted.
        right: Template,
    },
    /// A jq expression over the run's variables (`.steps.X.json.ok`, `.context.mode`).
    Jq(String),
}

/// A step's `on:`: where to go after it, by how it ended.
#[derive(Debug, Clone, Default)]
pub struct Transitions {
    /// Taken when the step succeeded.
    pub success: Option<Target>,
    /// Taken when the step failed.
    pub failure: Option<Target>,
    /// Taken after either outcome when the matching `success` or `failure` is not set.
    pub always: Option<Target>,
    /// Taken when an approval is rejected, or when the step's `rejected_when` holds.
    pub rejected: Option<Target>,
    /// Taken when the step's JSON output does not match its `output_schema`.
    pub invalid: Option<Target>,
    /// Line and column of each `goto` value (success, failure, always, rejected, invalid).
    pub(crate) at: [(u32, u32); 5],
}

/// Where a `goto` leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A step of the same step list, by name.
    Step(String),
    /// `_end`: the run ends successfully.
    End,
}

/// `output_capture:`: how a step's stdout becomes its result.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Capture {
    /// The whole output as one string (`${steps.X.output}`).
    Text,
    /// One string per line (`${steps.X.lines}`).
    Lines,
    /// Parsed as JSON (`${steps.X.json...}`).
    Json,
}

/// `retry:` of a step: how often and how soon a failed step runs again.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Total attempts, the first included (1 = no retry).
    pub max_attempts: u32,
    /// `delay_sec`: the wait before the second attempt.
    pub delay: Duration,
    /// Each later wait is the one before times this.
    pub backoff: f64,
    /// Exit codes that are worth another attempt; `None` means the step kind's default
    /// (providers: 1 and 124, as the spec maps them; commands: any failure).
    pub on_exit_codes: Option<Vec<i32>>,
    /// Whether the step has a `retry:` of its own (agent steps otherwise get 3 attempts).
    pub explicit: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 1,
            delay: Duration::from_secs(1),
            backoff: 2.0,
            on_exit_codes: None,
            explicit: false,
        }
    }
}

impl Workflow {
    /// Every step, nested ones included, depth first.
    pub fn all_steps(&self) -> Vec<&Step> {
        fn collect<'a>(steps: &'a [Step], out: &mut Vec<&'a Step>) {
            for step in steps {
                out.push(step);
                for body in step.kind.bodies() {
                    collect(body, out);
                }
            }
        }
        let mut out = Vec::new();
        collect(&self.steps, &mut out);
        out
    }

    /// The step of that name, searched in nested step lists too.
    pub fn find_step(&self, name: &str) -> Option<&Step> {
        self.all_steps().into_iter().find(|step| step.name == name)
    }
}

/// The built-in provider templates. They work in any directory, a git repository or not:
/// codex gets `--skip-git-repo-check` and gemini `--skip-trust` (without them `codex exec`
/// exits 1 outside a git repository and `gemini -p` exits 55 in a folder never trusted). No
/// model is named unless the step, role or run names one: each CLI then uses its own default.
/// A workflow's `providers:` block replaces an entry of the same name.
pub(crate) fn builtin_providers() -> BTreeMap<String, ProviderTemplate> {
    let make = |argv: &[&str], model_flag: &'static str| ProviderTemplate {
        command: argv
            .iter()
            .map(|arg| Template::parse(arg).expect("built-in provider templates parse"))
            .collect(),
        defaults: BTreeMap::new(),
        model_flag: Some(model_flag),
    };
    BTreeMap::from([
        (
            "claude".to_string(),
            make(&["claude", "-p", "${PROMPT}"], "--model"),
        ),
        (
            "gemini".to_string(),
            make(&["gemini", "--skip-trust", "-p", "${PROMPT}"], "-m"),
        ),
        (
            "codex".to_string(),
            make(
                &["codex", "exec", "--skip-git-repo-check", "${PROMPT}"],
                "-m",
            ),
        ),
    ])
}

/// A role of the swarm (`agents/<role>.yaml`): one inbox, one workflow per task.
#[derive(Debug, Clone)]
pub struct Role {
    /// The role's name, which its file's must match (`agents/<name>.yaml`).
    pub name: String,
    /// The file it was loaded from.
    pub path: PathBuf,
    #[expect(
        dead_code,
        reason = "loaded from the role's `description:`; nothing reads it yet"
    )]
    pub(crate) description: Option<String>,
    /// Inbox directory relative to WORKSPACE (default `inbox/<name>`).
    pub inbox: String,
    /// The workflow each task runs, relative to WORKSPACE.
    pub workflow: String,
    /// Tasks one role process runs at once.
    pub concurrency: u32,
    /// Role processes `swarm up` starts.
    pub replicas: u32,
    /// Attempts a task gets before it goes to `failed/` (a worker dying counts as one).
    pub max_attempts: u32,
    /// Wall-clock limit of one attempt; its processes are stopped and the task fails.
    pub task_timeout: Option<Duration>,
    /// Provider (runtime) for provider steps that name none, and its model.
    pub runtime: Option<String>,
    /// Its model, for those steps.
    pub model: Option<String>,
    /// How long a task file written in place must be still before it is taken, where whether a
    /// process still has it open for writing cannot be known (`fsutil::Writers::Unknown`).
    pub settle: Duration,
    /// A holder silent for longer than this is considered hung and is stopped.
    pub hung_after: Duration,
    /// `budget:`: limits on each task's run (the stricter of this and the workflow's applies).
    pub budget: Option<Budget>,
    /// `idle_timeout_sec`: the default for the role's agent steps that set none.
    pub idle_timeout: Option<Duration>,
    /// `capabilities:`: what the role's steps may do ([`CAPABILITIES`]); `None`: anything.
    pub capabilities: Option<Vec<String>>,
    /// `isolation:`: overrides the workflow's, field by field (`none` turns it off).
    pub isolation: Option<Isolation>,
    /// `machines:`: labels a machine must all have for its role processes to run this role's
    /// tasks (elsewhere they only take in the files dropped there); empty: any machine.
    pub machines: Vec<String>,
}

impl Role {
    /// Every step (depth first, `for_each` bodies and loaded child workflows included) this role
    /// may not run, with the capability it lacks and the file it is in (`None`: the workflow's
    /// own file; else the child workflow it is in).
    pub(crate) fn forbidden<'a>(&self, steps: &'a [Step]) -> Vec<Forbidden<'a>> {
        self.forbidden_in(steps, None)
    }

    fn forbidden_in<'a>(
        &self,
        steps: &'a [Step],
        file: Option<&'a LoadedChild>,
    ) -> Vec<Forbidden<'a>> {
        let Some(allowed) = &self.capabilities else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for step in steps {
            match &step.kind {
                StepKind::ForEach { .. } | StepKind::Parallel { .. } => {
                    for body in step.kind.bodies() {
                        out.extend(self.forbidden_in(body, file));
                    }
                }
                StepKind::Workflow(sub) => {
                    if let Some(child) = &sub.child {
                        out.extend(self.forbidden_in(&child.workflow.steps, Some(child)));
                    }
                }
                kind => {
                    if let Some(needed) = kind.capability()
                        && !allowed.iter().any(|c| c == needed)
                    {
                        out.push((step, needed, file));
                    }
                }
            }
        }
        out
    }
}

/// A step a role may not run: the step, the capability it needs, and the child workflow it is
/// in (`None`: the role's workflow itself).
pub(crate) type Forbidden<'a> = (&'a Step, &'static str, Option<&'a LoadedChild>);

impl Role {
    pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 3;
}
