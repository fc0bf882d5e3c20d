//! A step as users write it: the fields every step may have and each action's body
//! (`command`, `provider`, agent `prompt`, `for_each`, `parallel`, `wait_for`, `enqueue`,
//! `approval`, `workflow`). Does not express which fields go with which action, nor that a
//! step has exactly one (the loader says so, with the line).

use std::collections::BTreeMap;

use schemars::JsonSchema;

use super::scalar::{Flag, Number, Text};
use serde_json::{Map, Value};

/// One step: a unique `name` and exactly one action (`command`, `prompt`/`prompt_file`,
/// `provider`/`command_override`/`input_file`, `for_each`, `parallel`, `wait_for`, `enqueue`,
/// `approval` or `workflow`).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct StepFile {
    /// The step's name: letters, digits, `_` and `-`, unique in the file; `_end` is reserved.
    pub(crate) name: Text,
    /// A label, recorded only.
    pub(crate) agent: Option<Text>,
    /// What the step does, for people.
    pub(crate) description: Option<Text>,
    /// Action: run a program (argv, each entry a template); never through a shell unless the
    /// argv starts one.
    pub(crate) command: Option<Vec<Text>>,
    /// Action: run a model CLI from its provider template.
    pub(crate) provider: Option<Text>,
    /// A provider step's template parameters.
    pub(crate) provider_params: Option<BTreeMap<String, Text>>,
    /// A provider step's prompt file; `${PROMPT}` is its literal contents.
    pub(crate) input_file: Option<Text>,
    /// Stdout is also written to this file (resolved against the workspace).
    pub(crate) output_file: Option<Text>,
    /// Action: the argv that replaces the provider template entirely.
    pub(crate) command_override: Option<Vec<Text>>,
    /// Extra environment variables of this step (templates allowed).
    pub(crate) env: Option<BTreeMap<String, Text>>,
    /// Names of environment variables passed to this step only, masked as `***` on disk.
    pub(crate) secrets: Option<Vec<Text>>,
    /// How stdout is read: `text` (default), `lines` or `json`.
    pub(crate) output_capture: Option<CaptureFile>,
    /// With `json`: invalid or oversized JSON does not fail the step.
    pub(crate) allow_parse_error: Option<Flag>,
    /// Run the step only when this holds; otherwise it is skipped.
    pub(crate) when: Option<ConditionFile>,
    /// Where to go after the step.
    pub(crate) on: Option<TransitionsFile>,
    /// Action: run nested steps once per item.
    pub(crate) for_each: Option<ForEachFile>,
    /// Action: run named branches of steps at once and join them.
    pub(crate) parallel: Option<ParallelFile>,
    /// Action: block until files match a glob.
    pub(crate) wait_for: Option<WaitForFile>,
    /// Action: hand a task to a role's inbox.
    pub(crate) enqueue: Option<EnqueueFile>,
    /// Action: wait for a person's decision (`orchestrate approve` / `reject`).
    pub(crate) approval: Option<ApprovalFile>,
    /// Action: run another workflow file (relative to the workspace) as a child run.
    pub(crate) workflow: Option<Text>,
    /// A `workflow` step's `${context.*}` inputs for the child (templates allowed).
    pub(crate) with: Option<Map<String, Value>>,
    /// An agent step's runtime (a name from `runtimes.yaml`; default: the role's).
    pub(crate) runtime: Option<Text>,
    /// Action: run an agent with this prompt (a template).
    pub(crate) prompt: Option<Text>,
    /// Action: run an agent with the prompt in this file.
    pub(crate) prompt_file: Option<Text>,
    /// An agent step's model (a template; default: the role's or the runtime's).
    pub(crate) model: Option<Text>,
    /// What an agent step may do: `readonly` (default), `plan`, `write` or `full`.
    pub(crate) phase: Option<PhaseFile>,
    /// An agent step's most turns.
    #[schemars(range(min = 1, max = 10_000))]
    pub(crate) max_turns: Option<u32>,
    /// An agent step continues this session (a template, e.g. an earlier step's session id).
    pub(crate) resume: Option<Text>,
    /// Shell commands a `write` or `full` agent step may run.
    pub(crate) allow_shell: Option<Vec<Text>>,
    /// Files an agent step is expected to write.
    pub(crate) artifacts: Option<Vec<Text>>,
    /// A jq condition over the step's result: when it holds, the step counts as rejected
    /// (`on.rejected`).
    pub(crate) rejected_when: Option<Text>,
    /// A JSON Schema the step's JSON output must meet: inline, or a `.json` or `.yaml` file.
    pub(crate) output_schema: Option<OutputSchemaFile>,
    /// Stop a loop through this step when its findings stop shrinking.
    pub(crate) converge: Option<ConvergeFile>,
    /// Wall-clock limit in seconds; exit code 124.
    #[schemars(range(min = 0, max = 31_536_000))]
    pub(crate) timeout_sec: Option<Number>,
    /// Seconds without output on stdout or stderr before the step is stopped; exit code 124.
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 31_536_000))]
    pub(crate) idle_timeout_sec: Option<f64>,
    /// Run the step again when it fails: a number of attempts or the options.
    pub(crate) retry: Option<RetryFile>,
    /// This step's loop bound (default: the workflow's `max_visits`).
    #[schemars(range(min = 1, max = 1_000_000))]
    pub(crate) max_visits: Option<u32>,
}

/// How a step's stdout is read.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub(crate) enum CaptureFile {
    /// The whole output as one string.
    Text,
    /// One string per line.
    Lines,
    /// Parsed as JSON (`${steps.X.json...}`).
    Json,
}

/// What an agent step may do.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub(crate) enum PhaseFile {
    /// Read files only.
    Readonly,
    /// Read, and write a plan.
    Plan,
    /// Write files and run the commands of `allow_shell`.
    Write,
    /// Everything the runtime allows.
    Full,
}

/// A condition: exactly one of `equals`, `not_equals` or `jq`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub(crate) struct ConditionFile {
    /// Holds when both sides are the same string after substitution.
    pub(crate) equals: Option<CompareFile>,
    /// Holds when the sides differ after substitution.
    pub(crate) not_equals: Option<CompareFile>,
    /// A jq expression over the variables document; holds when truthy.
    pub(crate) jq: Option<Text>,
}

/// The two sides of a comparison (templates).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct CompareFile {
    pub(crate) left: Text,
    pub(crate) right: Text,
}

/// Where to go after a step, by its outcome.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct TransitionsFile {
    /// After a success.
    pub(crate) success: Option<GotoFile>,
    /// After a failure.
    pub(crate) failure: Option<GotoFile>,
    /// After either, when the matching one is absent.
    pub(crate) always: Option<GotoFile>,
    /// When `rejected_when` holds.
    pub(crate) rejected: Option<GotoFile>,
    /// When the output does not meet `output_schema`.
    pub(crate) invalid: Option<GotoFile>,
}

/// A jump.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct GotoFile {
    /// A step of the same step list, or `_end` to end the run successfully.
    pub(crate) goto: Text,
}

/// `for_each`: exactly one of `items` and `items_from`, and the steps to run per item.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct ForEachFile {
    /// The items, literally.
    pub(crate) items: Option<Vec<Value>>,
    /// A pointer to the items: `steps.<Step>.lines` or `steps.<Step>.json[.<dot.path>]`.
    pub(crate) items_from: Option<Text>,
    /// The item's variable name (default `item`).
    #[schemars(rename = "as")]
    pub(crate) as_: Option<Text>,
    /// The steps run once per item.
    pub(crate) steps: Vec<StepFile>,
    /// How many items run at once (default 1).
    #[schemars(range(min = 1, max = 1024))]
    pub(crate) max_parallel: Option<u32>,
    /// When the step succeeds (default `all_success`).
    pub(crate) join: Option<JoinFile>,
}

/// `parallel`: named branches of steps run at once.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct ParallelFile {
    /// The branches: a name (letters, digits, `_`, `-`) to its steps.
    pub(crate) branches: BTreeMap<String, Vec<StepFile>>,
    /// How many branches run at once (default: all).
    #[schemars(range(min = 1, max = 1024))]
    pub(crate) max_parallel: Option<u32>,
    /// When the step succeeds (default `all_success`).
    pub(crate) join: Option<JoinFile>,
}

/// A fan-out's join policy.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub(crate) enum JoinFile {
    /// Every item or branch succeeded.
    AllSuccess,
    /// At least one succeeded.
    AnySuccess,
    /// All finished, whatever their outcome.
    AllDone,
}

/// `wait_for`: block until files match.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct WaitForFile {
    /// The glob (a template), relative to the workspace.
    pub(crate) glob: Text,
    /// Seconds to wait before exit code 124 (default 300).
    #[schemars(range(min = 0, max = 31_536_000))]
    pub(crate) timeout_sec: Option<Number>,
    /// Milliseconds between looks (default 500).
    #[schemars(range(min = 1, max = 3_600_000))]
    pub(crate) poll_ms: Option<u32>,
    /// How many files must match (default 1).
    #[schemars(range(min = 1, max = 1_000_000))]
    pub(crate) min_count: Option<u32>,
}

/// `enqueue`: a task for a role's inbox; exactly one of `text`, `file` and `json`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct EnqueueFile {
    /// The role whose inbox gets the task (a template).
    pub(crate) role: Text,
    /// The task's text (a template).
    pub(crate) text: Option<Text>,
    /// A file whose contents are the task (a template).
    pub(crate) file: Option<Text>,
    /// The task as JSON (strings may be templates).
    pub(crate) json: Option<Value>,
    /// The task file's name (a template).
    pub(crate) name: Option<Text>,
}

/// `approval`: wait for a person's decision.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct ApprovalFile {
    /// What the person is asked (a template).
    pub(crate) message: Text,
    /// Files to read before deciding (templates).
    pub(crate) artifacts: Option<Vec<Text>>,
    /// Seconds to wait for the decision.
    #[schemars(range(min = 0, max = 31_536_000))]
    pub(crate) timeout_sec: Option<Number>,
}

/// A JSON Schema inline, or the path of a `.json` or `.yaml` file holding one.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub(crate) enum OutputSchemaFile {
    /// A file next to the workflow or relative to the workspace.
    File(String),
    /// The schema itself.
    Inline(Map<String, Value>),
}

/// `converge`: stop a loop through the step when its findings stop shrinking.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct ConvergeFile {
    /// The findings: one `${...}` reference or a jq expression over the step's result.
    pub(crate) findings: Option<Text>,
    /// Rounds without progress before the loop stops (default 3).
    #[schemars(range(min = 1, max = 1000))]
    pub(crate) rounds: Option<u32>,
    /// The step to go to when the loop stalls.
    pub(crate) on_stall: Option<Text>,
}

/// `retry`: a number of attempts, or the options.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub(crate) enum RetryFile {
    /// The most attempts.
    #[schemars(extend("minimum" = 1, "maximum" = 100))]
    Attempts(u32),
    /// The options.
    Options(RetryOptionsFile),
}

/// The options of `retry`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct RetryOptionsFile {
    /// The most attempts.
    #[schemars(range(min = 1, max = 100))]
    pub(crate) max_attempts: Option<u32>,
    /// Seconds before the first retry (default 1).
    #[schemars(range(min = 0, max = 31_536_000))]
    pub(crate) delay_sec: Option<Number>,
    /// The factor the delay grows by (default 2).
    #[schemars(range(min = 1, max = 10))]
    pub(crate) backoff: Option<Number>,
    /// Retry only these exit codes.
    pub(crate) on_exit_codes: Option<Vec<u8>>,
}
