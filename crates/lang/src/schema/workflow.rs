//! The top level of a workflow file as users write it. Does not describe a step (`step`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde_json::{Map, Value};

use super::blocks::{BudgetFile, IsolationFile};
use super::scalar::{Flag, Text};
use super::step::StepFile;

/// A workflow: steps run one after another, with the queue directories, providers, context
/// and limits they share.
#[derive(JsonSchema)]
#[schemars(title = "orchestrate workflow", deny_unknown_fields)]
pub(crate) struct WorkflowFile {
    /// The workflow's name (default: the file's name without its extension).
    pub(crate) name: Option<Text>,
    /// A version, for people; the engine does not read it.
    pub(crate) version: Option<Value>,
    /// What the workflow does, for people.
    pub(crate) description: Option<Text>,
    /// `false`: a step failure no `on:` edge handles does not end the run; the run goes on and
    /// ends as failed (default `true`: it ends the run).
    pub(crate) strict_flow: Option<Flag>,
    /// Where tasks are read from (`${task.*}`).
    pub(crate) inbox_dir: Option<Text>,
    /// Where finished tasks go.
    pub(crate) processed_dir: Option<Text>,
    /// Where failed tasks go.
    pub(crate) failed_dir: Option<Text>,
    /// The extension of task files.
    pub(crate) task_extension: Option<Text>,
    /// Provider templates by name: the argv a `provider` step runs.
    pub(crate) providers: Option<BTreeMap<String, ProviderFile>>,
    /// Default values of `${context.*}`; a parent's `with:` or `--set` overrides them.
    pub(crate) context: Option<Map<String, Value>>,
    /// Environment variables of every step (templates allowed).
    pub(crate) env: Option<BTreeMap<String, Text>>,
    /// How often a step may be entered in one activation of its step list before it counts as a
    /// loop (default 50).
    #[schemars(range(min = 1, max = 1_000_000))]
    pub(crate) max_visits: Option<u32>,
    /// Limits on what one run may spend.
    pub(crate) budget: Option<BudgetFile>,
    /// The run's outputs by name (templates), shown by `run` and given to a parent workflow.
    pub(crate) outputs: Option<BTreeMap<String, Text>>,
    /// Where the steps run: in the workspace or a git worktree per task.
    pub(crate) isolation: Option<IsolationFile>,
    /// The steps, run in order unless `on:` says otherwise.
    #[schemars(length(min = 1))]
    pub(crate) steps: Vec<StepFile>,
}

/// A provider template: the argv a `provider` step runs and the defaults of its parameters.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct ProviderFile {
    /// The argv, each entry a template (`${prompt_file}`, `${model}`, ...).
    pub(crate) command: Vec<Text>,
    /// Default values of the template's parameters.
    pub(crate) defaults: Option<BTreeMap<String, Text>>,
}
