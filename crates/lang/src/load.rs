//! Loading and validating a workflow file.
//!
//! Owns: the workflow language's fields, walking the spanned YAML tree into [`model`] types, and
//! every check that can be made before running (unknown fields, goto targets, duplicate names,
//! pointer grammar, variable namespaces, jq syntax), and the child files of `workflow:` steps,
//! loaded with their parent (containment in the workspace, cycles between files, each child's
//! problems at the child's lines, `with:` keys against the inputs the child reads). All problems
//! are collected, not just the first. Does not run anything (`subflow` runs child runs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value as Json;

use crate::diag::{Diagnostic, did_you_mean};
use crate::model::{
    AgentStep, Branch, Budget, Capture, Condition, Converge, DEFAULT_MAX_VISITS, EnqueueContent,
    FanOut, Findings, Isolation, Items, Join, LoadedChild, Phase, Pointer, Prompt,
    ProviderTemplate, QueueDirs, Retry, Role, Step, StepKind, SubWorkflow, SwarmConfig, Target,
    Transitions, Workflow, WorktreeSpec, builtin_providers,
};
use crate::template::{Part, Template};
use crate::yaml::{self, Node, Pos, Value};

/// A workflow that failed to load, with every problem found.
#[derive(Debug, thiserror::Error)]
#[error("failed to load workflow {}: {} problem(s)", path.display(), diagnostics.len())]
pub struct LoadError {
    pub path: PathBuf,
    /// The file's text when it could be read, for rendering the offending lines.
    pub source_text: Option<String>,
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadError {
    pub fn render(&self) -> String {
        self.diagnostics
            .iter()
            .map(|d| d.render(d.source.as_deref().or(self.source_text.as_deref())))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Workflow files over this size are refused before parsing.
pub const MAX_WORKFLOW_BYTES: u64 = 8 << 20;

/// How a workflow is loaded: on its own (`run`, `validate`) or as a role's workflow.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The role's runtime: provider steps without `provider:` use it.
    pub default_provider: Option<String>,
    /// WORKSPACE, against which `workflow:` steps name their child files. When set, each child
    /// is loaded and checked with its parent (missing files, its own problems, cycles, declared
    /// outputs); without it those checks wait until the step runs.
    pub workspace: Option<PathBuf>,
    /// The `workflow:` steps that led to this file (a child's load), outermost first.
    pub ancestors: Vec<Link>,
}

/// Loads a workflow of `workspace`, its child workflows (`workflow:` steps) included.
pub fn load_in(workspace: &Path, path: &Path) -> Result<Workflow, LoadError> {
    load_file_with(
        path,
        &LoadOptions {
            workspace: Some(workspace.to_path_buf()),
            ..LoadOptions::default()
        },
    )
}

pub fn load_file(path: &Path) -> Result<Workflow, LoadError> {
    load_file_with(path, &LoadOptions::default())
}

pub fn load_file_with(path: &Path, options: &LoadOptions) -> Result<Workflow, LoadError> {
    let text = read_source(path)?;
    load_str_with(path, &text, options)
}

/// Reads a YAML file we are about to load, with the checks every such file gets.
pub(crate) fn read_source(path: &Path) -> Result<String, LoadError> {
    let fail = |message: String, hint: &str| LoadError {
        path: path.to_path_buf(),
        source_text: None,
        diagnostics: vec![Diagnostic::error(path, Pos::default(), message).with_hint(hint)],
    };
    let meta = std::fs::metadata(path).map_err(|err| {
        fail(
            format!("cannot read the workflow file: {err}"),
            "check the path",
        )
    })?;
    if !meta.is_file() {
        return Err(fail(
            "not a regular file".into(),
            "give the path of a workflow YAML file",
        ));
    }
    if meta.len() > MAX_WORKFLOW_BYTES {
        return Err(fail(
            format!(
                "the file is {} bytes; workflows are limited to {MAX_WORKFLOW_BYTES}",
                meta.len()
            ),
            "split the workflow",
        ));
    }
    let bytes = std::fs::read(path).map_err(|err| {
        fail(
            format!("cannot read the workflow file: {err}"),
            "check permissions",
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|err| {
        let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        let text = String::from_utf8_lossy(valid);
        let line = text.matches('\n').count() + 1;
        let column = text
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        let pos = Pos {
            line: line as u32,
            column: column as u32,
            offset: Some(valid.len()),
        };
        LoadError {
            path: path.to_path_buf(),
            source_text: None,
            diagnostics: vec![
                Diagnostic::error(
                    path,
                    pos,
                    "the file is not UTF-8: this byte starts no valid character",
                )
                .with_hint("save the workflow as UTF-8"),
            ],
        }
    })?;
    Ok(text)
}

pub fn load_str(path: &Path, text: &str) -> Result<Workflow, LoadError> {
    load_str_with(path, text, &LoadOptions::default())
}

/// A load of `path` (whose text is `text`) that failed with `diagnostics`.
fn failed(path: &Path, text: &str, diagnostics: Vec<Diagnostic>) -> LoadError {
    LoadError {
        path: path.to_path_buf(),
        source_text: Some(text.to_string()),
        diagnostics,
    }
}

/// Parses a file's YAML and starts a loader over it: what every kind of file (workflow, role,
/// swarm settings) begins with. A YAML error is the whole answer.
fn start(path: &Path, text: &str) -> Result<(Node, Loader), LoadError> {
    let root = yaml::parse(text).map_err(|err| {
        failed(
            path,
            text,
            vec![Diagnostic::error(
                path,
                err.pos,
                format!("invalid YAML: {}", err.message),
            )],
        )
    })?;
    let loader = Loader {
        file: path.to_path_buf(),
        diags: Vec::new(),
        lines: text.lines().map(str::to_string).collect(),
    };
    Ok((root, loader))
}

pub fn load_str_with(
    path: &Path,
    text: &str,
    options: &LoadOptions,
) -> Result<Workflow, LoadError> {
    let fail = |diagnostics| failed(path, text, diagnostics);
    let (root, mut loader) = start(path, text)?;
    let workflow = loader.workflow(&root, text);
    let Some(mut workflow) = workflow else {
        return Err(fail(loader.diags));
    };
    // Children load before the checks, which look up their declared outputs; their own
    // problems are listed after the parent's, each rendered from the child's text.
    let children = match &options.workspace {
        Some(workspace) => attach_children(&mut workflow, workspace, options, &mut loader.diags),
        None => Vec::new(),
    };
    Checker::new(&mut loader, &workflow, options).check();
    if loader.diags.is_empty() && children.is_empty() {
        Ok(workflow)
    } else {
        let mut diags = loader.diags;
        diags.sort_by_key(|d| (d.line, d.column));
        diags.extend(children);
        Err(fail(diags))
    }
}

/// The first key of `path` that `schema` says cannot be there: an object schema that lists its
/// `properties` (and does not allow others with `additionalProperties`) without it; with the
/// keys it does list. Array indexes go through `items`; anything the walk cannot follow
/// (`$ref`, `anyOf`, ...) is taken as allowed.
fn schema_lacks(schema: &serde_json::Value, path: &[String]) -> Option<(String, Vec<String>)> {
    let mut at = schema;
    for segment in path {
        if let Some(properties) = at.get("properties").and_then(serde_json::Value::as_object) {
            if let Some(next) = properties.get(segment) {
                at = next;
                continue;
            }
            let open = matches!(
                at.get("additionalProperties"),
                Some(serde_json::Value::Bool(true) | serde_json::Value::Object(_))
            );
            return (!open).then(|| (segment.clone(), properties.keys().cloned().collect()));
        }
        match at.get("items") {
            Some(items) if segment.parse::<usize>().is_ok() => at = items,
            _ => return None,
        }
    }
    None
}

const ROLE_FIELDS: &[&str] = &[
    "name",
    "description",
    "inbox",
    "workflow",
    "concurrency",
    "replicas",
    "max_attempts",
    "task_timeout_sec",
    "runtime",
    "model",
    "settle_ms",
    "hung_after_sec",
    "budget",
    "idle_timeout_sec",
    "capabilities",
    "isolation",
];

/// Loads `agents/<role>.yaml`. The role's workflow is checked too; its problems are reported
/// against the workflow's file.
pub fn load_role_file(workspace: &Path, path: &Path) -> Result<(Role, Workflow), Vec<LoadError>> {
    let text = read_source(path).map_err(|e| vec![e])?;
    let fail = |diagnostics| failed(path, &text, diagnostics);
    let (root, mut loader) = start(path, &text).map_err(|e| vec![e])?;
    let role = loader.role(&root);
    let Some(role) = role.filter(|_| loader.diags.is_empty()) else {
        let mut diags = loader.diags;
        diags.sort_by_key(|d| (d.line, d.column));
        return Err(vec![fail(diags)]);
    };
    if let Err(err) = orchestrate_base::fsutil::resolve_in_workspace(workspace, &role.inbox) {
        let pos = role_field_pos(&root, "inbox");
        return Err(vec![fail(vec![Diagnostic::error(
            path,
            pos,
            format!("`inbox`: {err}"),
        )])]);
    }
    let workflow_path =
        match orchestrate_base::fsutil::resolve_in_workspace(workspace, &role.workflow) {
            Ok(p) => p,
            Err(err) => {
                let pos = role_field_pos(&root, "workflow");
                return Err(vec![fail(vec![Diagnostic::error(
                    path,
                    pos,
                    format!("`workflow`: {err}"),
                )])]);
            }
        };
    if !workflow_path.is_file() {
        let pos = role_field_pos(&root, "workflow");
        return Err(vec![fail(vec![
            Diagnostic::error(
                path,
                pos,
                format!(
                    "role `{}` runs workflow `{}`, which does not exist",
                    role.name, role.workflow
                ),
            )
            .with_hint("create it, or fix the path (relative to the workspace)"),
        ])]);
    }
    let options = LoadOptions {
        default_provider: role.runtime.clone(),
        workspace: Some(workspace.to_path_buf()),
        ancestors: Vec::new(),
    };
    match load_file_with(&workflow_path, &options) {
        Ok(mut workflow) => {
            workflow.path = PathBuf::from(&role.workflow);
            let forbidden = role.forbidden(&workflow.steps);
            if forbidden.is_empty() {
                return Ok((role, workflow));
            }
            let allowed = role.capabilities.clone().unwrap_or_default().join(", ");
            let diagnostics = forbidden
                .iter()
                .map(|(step, needed, child)| {
                    let (file, inside) = match child {
                        Some(child) => (
                            child.workflow.path.clone(),
                            format!(" (in child workflow {}, run by {})", child.workflow.path.display(), role.workflow),
                        ),
                        None => (workflow_path.clone(), String::new()),
                    };
                    let mut d = Diagnostic::error(
                        &file,
                        Pos {
                            line: step.line,
                            column: 1,
                            offset: None,
                        },
                        format!(
                            "step `{}`{inside} needs capability `{needed}`, which role `{}` does not have (its capabilities: [{allowed}])",
                            step.name, role.name
                        ),
                    )
                    .with_hint(format!(
                        "add `{needed}` to `capabilities` in {}, or move the step to a role that may run it",
                        path.display()
                    ));
                    if let Some(child) = child {
                        d.source = Some(child.text.as_str().into());
                    }
                    d
                })
                .collect();
            Err(vec![LoadError {
                source_text: std::fs::read_to_string(&workflow_path).ok(),
                path: workflow_path,
                diagnostics,
            }])
        }
        Err(err) => Err(vec![err]),
    }
}

fn role_field_pos(root: &Node, key: &str) -> Pos {
    Fields {
        entries: map_entries(root),
    }
    .get(key)
    .map(|n| n.pos)
    .unwrap_or(root.pos)
}

const WORKFLOW_FIELDS: &[&str] = &[
    "name",
    "version",
    "description",
    "strict_flow",
    "inbox_dir",
    "processed_dir",
    "failed_dir",
    "task_extension",
    "providers",
    "context",
    "env",
    "max_visits",
    "budget",
    "outputs",
    "isolation",
    "steps",
];

const STEP_FIELDS: &[&str] = &[
    "name",
    "agent",
    "description",
    "command",
    "provider",
    "provider_params",
    "input_file",
    "output_file",
    "command_override",
    "env",
    "secrets",
    "output_capture",
    "allow_parse_error",
    "when",
    "on",
    "for_each",
    "parallel",
    "wait_for",
    "enqueue",
    "approval",
    "workflow",
    "with",
    "runtime",
    "prompt",
    "prompt_file",
    "model",
    "phase",
    "max_turns",
    "resume",
    "allow_shell",
    "artifacts",
    "rejected_when",
    "output_schema",
    "converge",
    "timeout_sec",
    "idle_timeout_sec",
    "retry",
    "max_visits",
];

const BUDGET_FIELDS: &[&str] = &["max_cost_usd", "max_tokens", "max_wall_sec"];
const ISOLATION_KINDS: &[&str] = &["worktree", "none"];
const WORKTREE_FIELDS: &[&str] = &["base", "keep", "branch", "dir"];
const SWARM_FIELDS: &[&str] = &["budget"];
const SWARM_BUDGET_FIELDS: &[&str] = &["max_cost_usd_per_day", "max_tokens_per_day"];

/// Where a workspace's swarm settings live, relative to WORKSPACE.
pub const SWARM_FILE: &str = "swarm.yaml";

/// Loads `WORKSPACE/swarm.yaml`; no file means no swarm-wide limits.
pub fn load_swarm(workspace: &Path) -> Result<SwarmConfig, LoadError> {
    let path = workspace.join(SWARM_FILE);
    if !path.exists() {
        return Ok(SwarmConfig::default());
    }
    load_swarm_file(&path)
}

/// Loads a swarm settings file (`budget: {max_cost_usd_per_day, max_tokens_per_day}`).
pub fn load_swarm_file(path: &Path) -> Result<SwarmConfig, LoadError> {
    let text = read_source(path)?;
    let fail = |diagnostics| failed(path, &text, diagnostics);
    let (root, mut loader) = start(path, &text)?;
    let mut config = SwarmConfig::default();
    if root.value != Value::Null
        && let Some(fields) = loader.fields(&root, SWARM_FIELDS, "swarm.yaml")
        && let Some(node) = fields.value("budget")
        && let Some(budget) = loader.fields(node, SWARM_BUDGET_FIELDS, "`budget` of swarm.yaml")
    {
        if let Some(n) = budget.value("max_cost_usd_per_day") {
            config.max_cost_usd_per_day = loader.positive(n, "`budget.max_cost_usd_per_day`", 1e9);
            config.cost_at = loader.at_line(n);
        }
        if let Some(n) = budget.value("max_tokens_per_day") {
            config.max_tokens_per_day = loader
                .count(n, "`budget.max_tokens_per_day`", 1, u32::MAX)
                .map(u64::from);
            config.tokens_at = loader.at_line(n);
        }
    }
    if loader.diags.is_empty() {
        Ok(config)
    } else {
        let mut diags = loader.diags;
        diags.sort_by_key(|d| (d.line, d.column));
        Err(fail(diags))
    }
}

/// Names a step may not take: they are goto keywords.
const RESERVED_STEP_NAMES: &[&str] = &["_end"];

struct Loader {
    file: PathBuf,
    diags: Vec<Diagnostic>,
    /// Source lines, to tell quoted scalars (whose position is the quote) from plain ones.
    lines: Vec<String>,
}

/// A mapping whose keys have been checked against the fields its type allows.
struct Fields<'a> {
    entries: &'a [(Node, Node)],
}

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
            .map(|(_, v)| v)
    }

    /// A present key whose value is YAML null counts as absent (`retry:` with nothing after it).
    fn value(&self, key: &str) -> Option<&'a Node> {
        self.get(key).filter(|node| node.value != Value::Null)
    }

    fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
            .map(|(k, _)| k.pos)
    }
}

impl Loader {
    fn error(&mut self, pos: Pos, message: impl Into<String>) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(&self.file, pos, message));
        self.diags.last_mut().expect("just pushed")
    }

    /// Checks that `node` is a mapping with only `allowed` keys; reports each unknown key.
    fn fields<'a>(&mut self, node: &'a Node, allowed: &[&str], what: &str) -> Option<Fields<'a>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                format!("{what} must be a mapping, found {}", node.value.kind()),
            );
            return None;
        };
        for (key, _) in entries {
            match &key.value {
                Value::Str(name) if allowed.contains(&name.as_str()) => {}
                Value::Str(name) => {
                    let suggestion = did_you_mean(name, allowed.iter().copied());
                    let hint = match suggestion {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("allowed fields: {}", allowed.join(", ")),
                    };
                    let width = name.chars().count();
                    self.error(key.pos, format!("unknown field `{name}` in {what}"))
                        .width = width;
                    self.diags.last_mut().expect("just pushed").hint = Some(hint);
                }
                other => {
                    self.error(
                        key.pos,
                        format!("{what} has a key that is {}, not a name", other.kind()),
                    );
                }
            }
        }
        Some(Fields { entries })
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(_) | Value::Int(_) | Value::Float(_) => node.scalar_text(),
            other => {
                self.error(
                    node.pos,
                    format!("{what} must be a string, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// Column of a scalar's first character: one past the quote for quoted scalars.
    fn content_column(&self, pos: Pos) -> u32 {
        let quoted = self
            .lines
            .get(pos.line as usize - 1)
            .and_then(|line| line.chars().nth(pos.column as usize - 1))
            .is_some_and(|c| c == '"' || c == '\'');
        if quoted { pos.column + 1 } else { pos.column }
    }

    fn template(&mut self, node: &Node, what: &str) -> Option<Template> {
        let raw = self.string(node, what)?;
        let column = self.content_column(node.pos);
        match Template::parse(&raw) {
            Ok(mut template) => {
                template.at = (node.pos.line, column);
                Some(template)
            }
            Err(err) => {
                let pos = Pos { column, ..node.pos };
                self.diags.push(
                    Diagnostic::error(&self.file, pos, format!("in {what}: {}", err.message))
                        .shifted(err.offset),
                );
                None
            }
        }
    }

    fn templates(&mut self, node: &Node, what: &str) -> Option<Vec<Template>> {
        let Value::Seq(items) = &node.value else {
            let hint = "write an argv list such as [\"echo\", \"hello\"]; use [\"bash\", \"-c\", \"...\"] for shell syntax";
            self.error(
                node.pos,
                format!(
                    "{what} must be a list of arguments, found {}",
                    node.value.kind()
                ),
            )
            .hint = Some(hint.into());
            return None;
        };
        if items.is_empty() {
            self.error(
                node.pos,
                format!("{what} is empty: give at least the program to run"),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.template(item, what) {
                Some(t) => out.push(t),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) if s == "true" || s == "false" => Some(s == "true"),
            other => {
                self.error(
                    node.pos,
                    format!("{what} must be true or false, found {}", other.kind()),
                );
                None
            }
        }
    }

    fn number(&mut self, node: &Node, what: &str, min: f64, max: f64) -> Option<f64> {
        let value = match &node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Str(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match value {
            Some(v) if v.is_finite() && v >= min && v <= max => Some(v),
            _ => {
                let text = node
                    .scalar_text()
                    .unwrap_or_else(|| node.value.kind().to_string());
                self.error(
                    node.pos,
                    format!("{what} must be a number from {min} to {max}, found `{text}`"),
                );
                None
            }
        }
    }

    fn count(&mut self, node: &Node, what: &str, min: u32, max: u32) -> Option<u32> {
        match &node.value {
            Value::Int(i) if *i >= i128::from(min) && *i <= i128::from(max) => {
                u32::try_from(*i).ok()
            }
            _ => {
                let text = node
                    .scalar_text()
                    .unwrap_or_else(|| node.value.kind().to_string());
                self.error(
                    node.pos,
                    format!("{what} must be a whole number from {min} to {max}, found `{text}`"),
                );
                None
            }
        }
    }

    fn seconds(&mut self, node: &Node, what: &str) -> Option<Duration> {
        self.number(node, what, 0.0, 31_536_000.0)
            .map(Duration::from_secs_f64)
    }

    /// Seconds above zero (a zero limit would stop everything at once).
    fn positive_seconds(&mut self, node: &Node, what: &str) -> Option<Duration> {
        self.positive(node, what, 31_536_000.0)
            .map(Duration::from_secs_f64)
    }

    /// A number above zero and at most `max`.
    fn positive(&mut self, node: &Node, what: &str, max: f64) -> Option<f64> {
        let value = match &node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        };
        match value {
            Some(v) if v.is_finite() && v > 0.0 && v <= max => Some(v),
            _ => {
                let text = node
                    .scalar_text()
                    .unwrap_or_else(|| node.value.kind().to_string());
                self.error(
                    node.pos,
                    format!("{what} must be a number above 0 and at most {max}, found `{text}`"),
                );
                None
            }
        }
    }

    /// `file:line` of a node, for messages of the run that name where a limit came from.
    fn at_line(&self, node: &Node) -> String {
        format!("{}:{}", self.file.display(), node.pos.line)
    }

    /// `budget: {max_cost_usd, max_tokens, max_wall_sec}` of a workflow or a role.
    fn budget(&mut self, node: &Node, owner: &str) -> Option<Budget> {
        let what = format!("`budget` of {owner}");
        let fields = self.fields(node, BUDGET_FIELDS, &what)?;
        let mut budget = Budget::default();
        if let Some(n) = fields.value("max_cost_usd") {
            budget.max_cost_usd = self.positive(n, "`budget.max_cost_usd`", 1e9);
            budget.cost_at = self.at_line(n);
        }
        if let Some(n) = fields.value("max_tokens") {
            budget.max_tokens = self
                .count(n, "`budget.max_tokens`", 1, u32::MAX)
                .map(u64::from);
            budget.tokens_at = self.at_line(n);
        }
        if let Some(n) = fields.value("max_wall_sec") {
            budget.max_wall = self.positive_seconds(n, "`budget.max_wall_sec`");
            budget.wall_at = self.at_line(n);
        }
        if fields.entries.is_empty() {
            self.error(node.pos, format!("{what} sets no limit")).hint = Some(format!(
                "set any of {}, or remove `budget`",
                BUDGET_FIELDS.join(", ")
            ));
        }
        Some(budget)
    }

    /// `isolation: worktree`, `isolation: none`, or `isolation: {worktree: {base, keep, branch,
    /// dir}}` of a workflow or a role.
    fn isolation(&mut self, node: &Node, owner: &str) -> Option<Isolation> {
        let what = format!("`isolation` of {owner}");
        let hint = "write `isolation: worktree`, `isolation: none`, or `isolation: {worktree: {base: main, keep: false, branch: \"orchestrate/{role}/{task}\", dir: .orchestrate/worktrees}}`";
        let unknown = |this: &mut Self, pos: Pos, kind: &str| {
            let guess = did_you_mean(kind, ISOLATION_KINDS.iter().copied())
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            this.error(pos, format!("unknown isolation `{kind}` in {what}"))
                .hint = Some(format!("{guess}{hint}"));
        };
        let spec = |this: &Self| WorktreeSpec {
            at: this.at_line(node),
            ..WorktreeSpec::default()
        };
        match &node.value {
            Value::Str(kind) => match kind.as_str() {
                "worktree" => Some(Isolation::Worktree(spec(self))),
                "none" => Some(Isolation::None),
                other => {
                    unknown(self, node.pos, other);
                    None
                }
            },
            Value::Map(entries) => {
                let fields = self.fields(node, ISOLATION_KINDS, &what)?;
                if entries.len() != 1 {
                    self.error(node.pos, format!("{what} must name one kind"))
                        .hint = Some(hint.into());
                    return None;
                }
                if fields.get("none").is_some() {
                    return Some(Isolation::None);
                }
                let mut out = spec(self);
                let Some(body) = fields.value("worktree") else {
                    return fields.get("worktree").map(|_| Isolation::Worktree(out));
                };
                let body = self.fields(
                    body,
                    WORKTREE_FIELDS,
                    &format!("`isolation.worktree` of {owner}"),
                )?;
                let text = |this: &mut Self, key: &str| -> Option<String> {
                    let node = body.value(key)?;
                    let value = this.string(node, &format!("`isolation.worktree.{key}`"))?;
                    if value.trim().is_empty() {
                        this.error(node.pos, format!("`isolation.worktree.{key}` is empty"))
                            .hint = Some(format!("remove `{key}` for the default"));
                        return None;
                    }
                    Some(value)
                };
                out.base = text(self, "base");
                out.dir = text(self, "dir");
                out.branch = text(self, "branch");
                if let (Some(branch), Some(n)) = (&out.branch, body.value("branch"))
                    && let Err(why) = crate::branch::check_template(branch)
                {
                    let message = format!("`isolation.worktree.branch` `{branch}` {why}");
                    self.error(n.pos, message).hint = Some(
                        "use `{role}`, `{task}` and `{workflow}` and what a git branch name may hold, e.g. `orchestrate/{role}/{task}`".into(),
                    );
                }
                out.keep = body
                    .value("keep")
                    .and_then(|n| self.boolean(n, "`isolation.worktree.keep`"));
                Some(Isolation::Worktree(out))
            }
            other => {
                self.error(
                    node.pos,
                    format!(
                        "{what} must be `worktree`, `none` or a mapping, found {}",
                        other.kind()
                    ),
                )
                .hint = Some(hint.into());
                None
            }
        }
    }

    fn string_map(&mut self, node: &Node, what: &str) -> Option<Vec<(String, Template)>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                format!("{what} must be a mapping, found {}", node.value.kind()),
            );
            return None;
        };
        let mut out = Vec::new();
        for (key, value) in entries {
            let key = self.string(key, what)?;
            if let Some(t) = self.template(value, &format!("{what}.{key}")) {
                out.push((key, t));
            }
        }
        Some(out)
    }

    fn role(&mut self, root: &Node) -> Option<Role> {
        if root.value == Value::Null {
            self.error(root.pos, "the role file is empty").hint =
                Some("a role needs at least `workflow: workflows/<file>.yaml`".into());
            return None;
        }
        let fields = self.fields(root, ROLE_FIELDS, "the role")?;
        let stem = self
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match fields.value("name") {
            Some(n) => {
                let name = self.string(n, "`name`")?;
                if name != stem {
                    self.error(
                        n.pos,
                        format!("the role is named `{name}` but its file is `{stem}.yaml`"),
                    )
                    .hint = Some(format!(
                        "rename the file to agents/{name}.yaml, or the role to `{stem}`"
                    ));
                }
                name
            }
            None => stem,
        };
        if let Err(reason) = orchestrate_base::ids::check_id(&name) {
            self.error(
                root.pos,
                format!("`{name}` is not a valid role name: {reason}"),
            );
            return None;
        }
        let text = |this: &mut Self, key: &str| {
            fields
                .value(key)
                .and_then(|n| this.string(n, &format!("`{key}`")))
        };
        let inbox = text(self, "inbox").unwrap_or_else(|| format!("inbox/{name}"));
        let Some(workflow) = text(self, "workflow") else {
            self.error(root.pos, format!("role `{name}` has no `workflow`"))
                .hint =
                Some("add `workflow: workflows/<file>.yaml`: the workflow each task runs".into());
            return None;
        };
        let count = |this: &mut Self, key: &str, default: u32, max: u32| match fields.value(key) {
            Some(n) => this
                .count(n, &format!("`{key}`"), 1, max)
                .unwrap_or(default),
            None => default,
        };
        let concurrency = count(self, "concurrency", 1, 1024);
        let replicas = count(self, "replicas", 1, 256);
        let max_attempts = count(self, "max_attempts", Role::DEFAULT_MAX_ATTEMPTS, 100);
        let task_timeout = fields
            .value("task_timeout_sec")
            .and_then(|n| self.seconds(n, "`task_timeout_sec`"));
        let settle = match fields.value("settle_ms") {
            Some(n) => Duration::from_millis(u64::from(
                self.count(n, "`settle_ms`", 0, 600_000).unwrap_or(500),
            )),
            None => Duration::from_millis(500),
        };
        let hung_after = match fields.value("hung_after_sec") {
            Some(n) => self
                .seconds(n, "`hung_after_sec`")
                .unwrap_or(Duration::from_secs(60)),
            None => Duration::from_secs(60),
        };
        let budget = fields
            .value("budget")
            .and_then(|n| self.budget(n, "the role"));
        let idle_timeout = fields
            .value("idle_timeout_sec")
            .and_then(|n| self.positive_seconds(n, "`idle_timeout_sec`"));
        let capabilities = fields
            .value("capabilities")
            .and_then(|n| self.capabilities(n));
        let isolation = fields
            .value("isolation")
            .and_then(|n| self.isolation(n, "the role"));
        Some(Role {
            isolation,
            capabilities,
            budget,
            idle_timeout,
            description: text(self, "description"),
            runtime: text(self, "runtime"),
            model: text(self, "model"),
            path: self.file.clone(),
            name,
            inbox,
            workflow,
            concurrency,
            replicas,
            max_attempts,
            task_timeout,
            settle,
            hung_after,
        })
    }

    /// `capabilities: [enqueue, approval]`: a list of known capability names.
    fn capabilities(&mut self, node: &Node) -> Option<Vec<String>> {
        let Value::Seq(items) = &node.value else {
            self.error(node.pos, "`capabilities` must be a list").hint = Some(format!(
                "for example `capabilities: [enqueue, approval]`; known: {}",
                crate::model::CAPABILITIES.join(", ")
            ));
            return None;
        };
        let mut out = Vec::new();
        for item in items {
            let name = self.string(item, "a capability")?;
            if crate::model::CAPABILITIES.contains(&name.as_str()) {
                out.push(name);
            } else {
                let hint = match did_you_mean(&name, crate::model::CAPABILITIES.iter().copied()) {
                    Some(guess) => format!("did you mean `{guess}`?"),
                    None => format!("known: {}", crate::model::CAPABILITIES.join(", ")),
                };
                self.error(item.pos, format!("unknown capability `{name}`"))
                    .hint = Some(hint);
            }
        }
        Some(out)
    }

    fn workflow(&mut self, root: &Node, text: &str) -> Option<Workflow> {
        if root.value == Value::Null {
            self.error(root.pos, "the workflow is empty").hint =
                Some("a workflow needs at least `steps:` with one step".into());
            return None;
        }
        let fields = self.fields(root, WORKFLOW_FIELDS, "the workflow")?;
        let name = match fields.value("name") {
            Some(node) => self.string(node, "`name`").unwrap_or_default(),
            None => self
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let mut queue = QueueDirs::default();
        for (key, slot) in [
            ("inbox_dir", &mut queue.inbox_dir),
            ("processed_dir", &mut queue.processed_dir),
            ("failed_dir", &mut queue.failed_dir),
            ("task_extension", &mut queue.task_extension),
        ] {
            if let Some(node) = fields.value(key)
                && let Some(value) = self.string(node, &format!("`{key}`"))
            {
                *slot = value;
            }
        }
        let strict_flow = match fields.value("strict_flow") {
            Some(node) => self.boolean(node, "`strict_flow`").unwrap_or(true),
            None => true,
        };
        let max_visits = match fields.value("max_visits") {
            Some(node) => self
                .count(node, "`max_visits`", 1, 1_000_000)
                .unwrap_or(DEFAULT_MAX_VISITS),
            None => DEFAULT_MAX_VISITS,
        };
        let budget = fields
            .value("budget")
            .and_then(|n| self.budget(n, "the workflow"));
        let isolation = fields
            .value("isolation")
            .and_then(|n| self.isolation(n, "the workflow"));
        let mut providers = builtin_providers();
        if let Some(node) = fields.value("providers") {
            self.providers(node, &mut providers);
        }
        let context = match fields.value("context") {
            Some(node) => match node.to_json() {
                Json::Object(map) => map,
                _ => {
                    self.error(
                        node.pos,
                        "`context` must be a mapping of names to default values",
                    );
                    serde_json::Map::new()
                }
            },
            None => serde_json::Map::new(),
        };
        let env = match fields.value("env") {
            Some(node) => self.string_map(node, "`env`").unwrap_or_default(),
            None => Vec::new(),
        };
        let outputs = match fields.value("outputs") {
            Some(node) => self.string_map(node, "`outputs`").unwrap_or_default(),
            None => Vec::new(),
        };
        let steps = match fields.get("steps") {
            Some(node) => self.steps(node),
            None => {
                self.error(root.pos, "the workflow has no `steps`").hint =
                    Some("add `steps:` with a list of steps".into());
                Vec::new()
            }
        };
        Some(Workflow {
            name,
            path: self.file.clone(),
            fingerprint: fingerprint(text),
            queue,
            providers,
            context,
            env,
            max_visits,
            strict_flow,
            budget,
            outputs,
            isolation,
            steps,
        })
    }

    fn providers(&mut self, node: &Node, providers: &mut BTreeMap<String, ProviderTemplate>) {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                "`providers` must be a mapping of provider names to templates",
            );
            return;
        };
        for (key, value) in entries {
            let Some(name) = self.string(key, "a provider name") else {
                continue;
            };
            let what = format!("provider `{name}`");
            let Some(fields) = self.fields(value, &["command", "defaults"], &what) else {
                continue;
            };
            let command = match fields.get("command") {
                Some(node) => self.templates(node, &format!("`command` of {what}")),
                None => {
                    self.error(value.pos, format!("{what} has no `command`"));
                    None
                }
            };
            let mut defaults = BTreeMap::new();
            if let Some(node) = fields.value("defaults") {
                if let Value::Map(entries) = &node.value {
                    for (k, v) in entries {
                        if let (Some(k), Some(v)) = (
                            self.string(k, "a default's name"),
                            self.string(v, &format!("`defaults` of {what}")),
                        ) {
                            defaults.insert(k, v);
                        }
                    }
                } else {
                    self.error(node.pos, format!("`defaults` of {what} must be a mapping"));
                }
            }
            if let Some(command) = command {
                providers.insert(
                    name,
                    ProviderTemplate {
                        command,
                        defaults,
                        model_flag: None,
                    },
                );
            }
        }
    }

    fn steps(&mut self, node: &Node) -> Vec<Step> {
        let Value::Seq(items) = &node.value else {
            self.error(
                node.pos,
                format!(
                    "`steps` must be a list of steps, found {}",
                    node.value.kind()
                ),
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.error(node.pos, "`steps` is empty").hint = Some("add at least one step".into());
        }
        items.iter().filter_map(|item| self.step(item)).collect()
    }

    fn step(&mut self, node: &Node) -> Option<Step> {
        let name_hint = match &node.value {
            Value::Map(_) => Fields {
                entries: map_entries(node),
            }
            .value("name")
            .and_then(Node::scalar_text),
            _ => None,
        };
        let what = match &name_hint {
            Some(name) => format!("step `{name}`"),
            None => "a step".to_string(),
        };
        let before = self.diags.len();
        let fields = self.fields(node, STEP_FIELDS, &what)?;
        // A misspelled action (`comand:`) already has its error; "nothing to do" would only
        // repeat it less helpfully.
        let misspelled = self.diags.len() > before;
        let name = match fields.value("name") {
            Some(n) => {
                let name = self.string(n, "the step `name`")?;
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
                {
                    self.error(
                        n.pos,
                        format!("step name `{name}` may only use letters, digits, `_` and `-`"),
                    )
                    .hint = Some("names are used in `${steps.<name>...}` and `goto`".into());
                    return None;
                }
                if RESERVED_STEP_NAMES.contains(&name.as_str()) {
                    self.error(
                        n.pos,
                        format!("`{name}` is reserved for `goto: {name}`; pick another step name"),
                    );
                    return None;
                }
                name
            }
            None => {
                self.error(node.pos, "a step has no `name`").hint =
                    Some("every step needs a unique `name`".into());
                return None;
            }
        };
        let what = format!("step `{name}`");
        let kind = self.step_kind(node, &fields, &what, misspelled)?;

        let capture = match fields.value("output_capture") {
            Some(n) => match self.string(n, "`output_capture`").as_deref() {
                Some("text") => Capture::Text,
                Some("lines") => Capture::Lines,
                Some("json") => Capture::Json,
                Some(other) => {
                    let hint = match did_you_mean(other, ["text", "lines", "json"]) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "use text, lines or json".into(),
                    };
                    self.error(
                        n.pos,
                        format!("`output_capture: {other}` in {what} is not a capture mode"),
                    )
                    .hint = Some(hint);
                    Capture::Text
                }
                None => Capture::Text,
            },
            None => Capture::Text,
        };
        let allow_parse_error = match fields.value("allow_parse_error") {
            Some(n) => self.boolean(n, "`allow_parse_error`").unwrap_or(false),
            None => false,
        };
        let output_file = fields
            .value("output_file")
            .and_then(|n| self.template(n, "`output_file`"));
        let when = fields.value("when").and_then(|n| self.condition(n, &what));
        let on = match fields.value("on") {
            Some(n) => self.transitions(n, &what),
            None => Transitions::default(),
        };
        let timeout = fields
            .value("timeout_sec")
            .and_then(|n| self.seconds(n, "`timeout_sec`"));
        let idle_timeout = fields
            .value("idle_timeout_sec")
            .and_then(|n| self.positive_seconds(n, "`idle_timeout_sec`"));
        if let (Some(pos), false) = (
            fields.key_pos("idle_timeout_sec"),
            matches!(
                kind,
                StepKind::Command { .. } | StepKind::Provider { .. } | StepKind::Agent(_)
            ),
        ) {
            self.error(
                pos,
                format!(
                    "`idle_timeout_sec` has no meaning on a {} step ({what}): it limits a process's silence",
                    kind.label()
                ),
            )
            .hint = Some("put it on the command, provider or agent steps it should limit".into());
        }
        let retry = match fields.value("retry") {
            Some(n) => self.retry(n, &what),
            None => Retry::default(),
        };
        let max_visits = fields
            .value("max_visits")
            .and_then(|n| self.count(n, "`max_visits`", 1, 1_000_000));
        let env = match fields.value("env") {
            Some(n) => self.string_map(n, "`env`").unwrap_or_default(),
            None => Vec::new(),
        };
        let secrets = match fields.value("secrets") {
            Some(n) => self.secrets(n),
            None => Vec::new(),
        };
        let mut at = BTreeMap::new();
        for path in [
            "provider",
            "input_file",
            "when.jq",
            "for_each.items_from",
            "command_override",
            "converge.findings",
            "converge.on_stall",
        ] {
            let mut node = Some(node);
            for key in path.split('.') {
                node = node.and_then(|n| {
                    Fields {
                        entries: map_entries(n),
                    }
                    .get(key)
                });
            }
            if let Some(n) = node {
                at.insert(path, (n.pos.line, self.content_column(n.pos)));
            }
        }
        let rejected_when = fields
            .value("rejected_when")
            .and_then(|n| self.string(n, "`rejected_when`"));
        let converge = fields
            .value("converge")
            .and_then(|n| self.converge(n, &what));
        let output_schema = fields
            .value("output_schema")
            .and_then(|n| self.output_schema(n, &what));
        if let Some(pos) = fields.key_pos("output_schema") {
            let json_out = capture == Capture::Json || matches!(kind, StepKind::Agent(_));
            if !json_out {
                self.error(
                    pos,
                    format!(
                        "`output_schema` on {what} checks JSON output, but the step captures none"
                    ),
                )
                .hint = Some("add `output_capture: json`, or use it on an agent step".into());
            }
        }
        // An agent step with a schema answers in JSON.
        let capture = if output_schema.is_some() && matches!(kind, StepKind::Agent(_)) {
            Capture::Json
        } else {
            capture
        };
        let on_invalid = fields.value("on").and_then(|on| {
            Fields {
                entries: map_entries(on),
            }
            .key_pos("invalid")
        });
        if let (Some(pos), None) = (on_invalid, fields.value("output_schema")) {
            self.error(
                pos,
                format!("`on.invalid` of {what} is never taken: the step has no `output_schema`"),
            );
        }
        let agent = fields
            .value("agent")
            .and_then(|n| self.string(n, "`agent`"));
        if let StepKind::Workflow(_) = &kind {
            for (key, hint) in [
                (
                    "retry",
                    "a child run is resumed, not retried: put `retry:` on the child's steps",
                ),
                (
                    "output_capture",
                    "the child's result is its `outputs:`: declare them in the child workflow",
                ),
                (
                    "allow_parse_error",
                    "the child's result is its `outputs:`: declare them in the child workflow",
                ),
                (
                    "env",
                    "pass values with `with:`; set `env:` in the child workflow or on its steps",
                ),
                (
                    "secrets",
                    "list `secrets:` on the child's steps that need them",
                ),
            ] {
                if let Some(pos) = fields.key_pos(key) {
                    self.error(
                        pos,
                        format!("`{key}` has no meaning on a workflow step ({what})"),
                    )
                    .hint = Some(hint.into());
                }
            }
        }
        if let (
            Some(pos),
            StepKind::ForEach { .. }
            | StepKind::Parallel { .. }
            | StepKind::WaitFor { .. }
            | StepKind::Workflow(_),
        ) = (fields.key_pos("output_file"), &kind)
        {
            self.error(
                pos,
                format!(
                    "`output_file` has no meaning on a {} step ({what})",
                    kind.label()
                ),
            );
        }
        Some(Step {
            name,
            line: node.pos.line,
            column: node.pos.column,
            agent,
            kind,
            when,
            on,
            capture,
            allow_parse_error,
            output_file,
            timeout,
            idle_timeout,
            retry,
            max_visits,
            env,
            secrets,
            rejected_when,
            converge,
            output_schema,
            at,
        })
    }

    fn step_kind(
        &mut self,
        node: &Node,
        fields: &Fields,
        what: &str,
        misspelled: bool,
    ) -> Option<StepKind> {
        let present: Vec<&str> = [
            "command",
            "provider",
            "command_override",
            "for_each",
            "parallel",
            "wait_for",
            "enqueue",
            "approval",
            "workflow",
            "prompt",
            "prompt_file",
        ]
        .into_iter()
        .filter(|key| fields.get(key).is_some())
        .collect();
        // Agent-only fields on a step that is not an agent step.
        if !present
            .iter()
            .any(|k| *k == "prompt" || *k == "prompt_file")
        {
            for key in [
                "runtime",
                "phase",
                "max_turns",
                "resume",
                "allow_shell",
                "artifacts",
                "model",
            ] {
                if let Some(pos) = fields.key_pos(key) {
                    self.error(pos, format!("`{key}` in {what} only applies to agent steps (with `prompt` or `prompt_file`)"));
                }
            }
        }
        // A step with only `input_file` is a provider step whose provider comes from the role.
        let provider_step = matches!(present.first(), Some(&"provider" | &"command_override"))
            || (present.is_empty() && fields.get("input_file").is_some());
        let conflict = match present.as_slice() {
            [] if misspelled => return None,
            [] if fields.get("input_file").is_some() => None,
            [] => {
                self.error(node.pos, format!("{what} has nothing to do")).hint = Some(
                    "give it one of `command`, `prompt` (an agent), `provider`, `command_override`, `for_each`, `parallel`, `wait_for`, `enqueue`, `approval` or `workflow`".into(),
                );
                return None;
            }
            [_] | ["provider", "command_override"] => None,
            many => Some(many.join("`, `")),
        };
        if let Some(conflict) = conflict {
            self.error(
                node.pos,
                format!("{what} has more than one action: `{conflict}`"),
            )
            .hint = Some("a step does one thing: split it into several steps".into());
            return None;
        }
        if let (Some(pos), false) = (fields.key_pos("with"), present.first() == Some(&"workflow")) {
            self.error(
                pos,
                format!("`with` in {what} only applies to `workflow` steps"),
            )
            .hint = Some("`with:` gives a child workflow its `${context.*}` inputs".into());
        }
        for key in ["provider_params", "input_file"] {
            if let Some(pos) = fields.key_pos(key)
                && !provider_step
            {
                self.error(
                    pos,
                    format!("`{key}` in {what} only applies to `provider` steps"),
                );
            }
        }
        match present.first().copied().unwrap_or("provider") {
            "command" => {
                let argv =
                    self.templates(fields.get("command")?, &format!("`command` of {what}"))?;
                Some(StepKind::Command { argv })
            }
            "provider" | "command_override" => {
                let provider = fields
                    .value("provider")
                    .and_then(|n| self.string(n, "`provider`"));
                let mut params = BTreeMap::new();
                if let Some(n) = fields.value("provider_params") {
                    for (k, v) in self.string_map(n, "`provider_params`").unwrap_or_default() {
                        params.insert(k, v);
                    }
                }
                let input_file = fields
                    .value("input_file")
                    .and_then(|n| self.template(n, "`input_file`"));
                let command_override = match fields.get("command_override") {
                    Some(n) => Some(self.templates(n, &format!("`command_override` of {what}"))?),
                    None => None,
                };
                Some(StepKind::Provider {
                    provider,
                    params,
                    input_file,
                    command_override,
                })
            }
            "for_each" => self.for_each(fields.get("for_each")?, what),
            "parallel" => self.parallel(fields.get("parallel")?, what),
            "enqueue" => self.enqueue(fields.get("enqueue")?, what),
            "approval" => self.approval(fields.get("approval")?, what),
            "workflow" => self.sub_workflow(fields, what),
            "prompt" | "prompt_file" => self.agent(fields, what),
            _ => self.wait_for(fields.get("wait_for")?, what),
        }
    }

    fn agent(&mut self, fields: &Fields, what: &str) -> Option<StepKind> {
        let prompt = match (fields.get("prompt"), fields.get("prompt_file")) {
            (Some(n), None) => Prompt::Text(self.template(n, "`prompt`")?),
            (None, Some(n)) => Prompt::File(self.template(n, "`prompt_file`")?),
            _ => return None,
        };
        let runtime = fields
            .value("runtime")
            .and_then(|n| self.string(n, "`runtime`"));
        let model = fields
            .value("model")
            .and_then(|n| self.template(n, "`model`"));
        let phase = match fields.value("phase") {
            Some(n) => match self.string(n, "`phase`").as_deref() {
                Some("readonly") => Phase::Readonly,
                Some("plan") => Phase::Plan,
                Some("write") => Phase::Write,
                Some("full") => Phase::Full,
                Some(other) => {
                    let hint = match did_you_mean(other, ["readonly", "plan", "write", "full"]) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "phases: readonly (default), plan, write, full".into(),
                    };
                    self.error(n.pos, format!("`phase: {other}` in {what} is not a phase"))
                        .hint = Some(hint);
                    return None;
                }
                None => return None,
            },
            None => Phase::Readonly,
        };
        let max_turns = fields
            .value("max_turns")
            .and_then(|n| self.count(n, "`max_turns`", 1, 10_000));
        let resume = fields
            .value("resume")
            .and_then(|n| self.string(n, "`resume`"));
        let list = |this: &mut Self, key: &str| -> Vec<String> {
            match fields.value(key) {
                Some(n) => match &n.value {
                    Value::Seq(items) => items
                        .iter()
                        .filter_map(|i| this.string(i, &format!("an entry of `{key}`")))
                        .collect(),
                    _ => {
                        this.error(n.pos, format!("`{key}` in {what} must be a list"));
                        Vec::new()
                    }
                },
                None => Vec::new(),
            }
        };
        let allow_shell = list(self, "allow_shell");
        let artifacts = list(self, "artifacts");
        if !allow_shell.is_empty()
            && !matches!(phase, Phase::Write | Phase::Full)
            && let Some(pos) = fields.key_pos("allow_shell")
        {
            self.error(pos, format!("`allow_shell` in {what} needs `phase: write`: a {} step runs no writing commands", phase.label()));
        }
        Some(StepKind::Agent(AgentStep {
            runtime,
            prompt,
            model,
            phase,
            max_turns,
            resume,
            allow_shell,
            artifacts,
        }))
    }

    /// A `workflow:` step: the child's path (checked with the parent when the workspace is
    /// known) and its `with:` inputs.
    fn sub_workflow(&mut self, fields: &Fields, what: &str) -> Option<StepKind> {
        let node = fields.get("workflow")?;
        let path = self.string(node, &format!("`workflow` of {what}"))?;
        if path.is_empty() || path.contains("${") {
            self.error(
                node.pos,
                format!("`workflow` of {what} must name a workflow file, found `{path}`"),
            )
            .hint = Some("write the child's path relative to the workspace, e.g. `workflows/build.yaml`; it cannot be a template".into());
            return None;
        }
        let mut with = Vec::new();
        if let Some(n) = fields.value("with") {
            let Value::Map(entries) = &n.value else {
                self.error(
                    n.pos,
                    format!(
                        "`with` of {what} must be a mapping of context keys to values, found {}",
                        n.value.kind()
                    ),
                );
                return None;
            };
            for (key_node, value) in entries {
                let key = self.string(key_node, &format!("a `with` key of {what}"))?;
                let json = value.to_json();
                let mut ok = true;
                visit_strings(&json, &mut |text| {
                    if let Err(err) = Template::parse(text) {
                        ok = false;
                        self.error(
                            value.pos,
                            format!("in `with.{key}` of {what}: {}", err.message),
                        );
                    }
                });
                if ok {
                    with.push(crate::model::WithInput {
                        key,
                        value: json,
                        at: (key_node.pos.line, key_node.pos.column),
                    });
                }
            }
        }
        Some(StepKind::Workflow(crate::model::SubWorkflow {
            path,
            with,
            at: (node.pos.line, self.content_column(node.pos)),
            child: None,
        }))
    }

    fn approval(&mut self, node: &Node, what: &str) -> Option<StepKind> {
        let ctx = format!("`approval` of {what}");
        let fields = self.fields(node, &["message", "artifacts", "timeout_sec"], &ctx)?;
        let message = match fields.value("message") {
            Some(n) => self.template(n, "`approval.message`")?,
            None => {
                self.error(
                    node.pos,
                    format!("{ctx} needs `message`: what the person is asked"),
                );
                return None;
            }
        };
        let artifacts = match fields.value("artifacts") {
            Some(n) => match &n.value {
                Value::Seq(items) => items
                    .iter()
                    .filter_map(|i| self.template(i, "an approval artifact"))
                    .collect(),
                _ => {
                    self.error(
                        n.pos,
                        format!("`artifacts` of {ctx} must be a list of files to read"),
                    );
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let timeout = fields
            .value("timeout_sec")
            .and_then(|n| self.seconds(n, "`timeout_sec`"));
        Some(StepKind::Approval {
            message,
            artifacts,
            timeout,
        })
    }

    fn enqueue(&mut self, node: &Node, what: &str) -> Option<StepKind> {
        let ctx = format!("`enqueue` of {what}");
        let fields = self.fields(node, &["role", "text", "file", "json", "name"], &ctx)?;
        let role = match fields.value("role") {
            Some(n) => self.template(n, "`enqueue.role`")?,
            None => {
                self.error(
                    node.pos,
                    format!("{ctx} needs `role`: the role whose inbox gets the task"),
                );
                return None;
            }
        };
        let sources: Vec<&str> = ["text", "file", "json"]
            .into_iter()
            .filter(|k| fields.get(k).is_some())
            .collect();
        let content = match sources.as_slice() {
            ["text"] => EnqueueContent::Text(self.template(fields.get("text")?, "`enqueue.text`")?),
            ["file"] => EnqueueContent::File(self.template(fields.get("file")?, "`enqueue.file`")?),
            ["json"] => {
                let n = fields.get("json")?;
                let value = n.to_json();
                let mut ok = true;
                visit_strings(&value, &mut |text| {
                    if let Err(err) = Template::parse(text) {
                        ok = false;
                        self.error(
                            n.pos,
                            format!("in `enqueue.json` of {what}: {}", err.message),
                        );
                    }
                });
                if !ok {
                    return None;
                }
                EnqueueContent::Json(value)
            }
            _ => {
                self.error(
                    node.pos,
                    format!("{ctx} needs exactly one of `text`, `file` or `json`"),
                );
                return None;
            }
        };
        let name = fields
            .value("name")
            .and_then(|n| self.template(n, "`enqueue.name`"));
        Some(StepKind::Enqueue {
            role,
            content,
            name,
        })
    }

    fn for_each(&mut self, node: &Node, what: &str) -> Option<StepKind> {
        let fields = self.fields(
            node,
            &["items", "items_from", "as", "steps", "max_parallel", "join"],
            &format!("`for_each` of {what}"),
        )?;
        let fan = self.fan(&fields, &format!("`for_each` of {what}"), 1);
        let items = match (fields.get("items"), fields.get("items_from")) {
            (Some(n), None) => {
                match n.to_json() {
                    Json::Array(items) => Items::Literal(items),
                    _ => {
                        self.error(n.pos, format!("`items` of {what} must be a list")).hint =
                        Some("to iterate over a prior step's output use `items_from: \"steps.X.lines\"`".into());
                        return None;
                    }
                }
            }
            (None, Some(n)) => {
                let text = self.string(n, "`items_from`")?;
                match parse_pointer(&text) {
                    Ok(pointer) => Items::From(pointer),
                    Err(message) => {
                        self.error(n.pos, format!("`items_from: {text}` in {what}: {message}"))
                            .hint = Some(
                            "write `steps.<Step>.lines` or `steps.<Step>.json[.<dot.path>]`".into(),
                        );
                        return None;
                    }
                }
            }
            (Some(_), Some(n)) => {
                self.error(
                    n.pos,
                    format!("`for_each` of {what} has both `items` and `items_from`"),
                );
                return None;
            }
            (None, None) => {
                self.error(
                    node.pos,
                    format!("`for_each` of {what} needs `items` or `items_from`"),
                );
                return None;
            }
        };
        let var = match fields.value("as") {
            Some(n) => {
                let var = self.string(n, "`as`")?;
                if var.is_empty()
                    || !var.chars().all(|c| c.is_alphanumeric() || c == '_')
                    || RESERVED_ROOTS.contains(&var.as_str())
                {
                    self.error(
                        n.pos,
                        format!(
                            "`as: {var}` must be a plain name that is not one of {}",
                            RESERVED_ROOTS.join(", ")
                        ),
                    );
                    return None;
                }
                var
            }
            None => "item".to_string(),
        };
        let steps = match fields.get("steps") {
            Some(n) => self.steps(n),
            None => {
                self.error(node.pos, format!("`for_each` of {what} has no `steps`"));
                return None;
            }
        };
        Some(StepKind::ForEach {
            items,
            var,
            steps,
            fan: fan?,
        })
    }

    /// `max_parallel` and `join` of a `for_each` or `parallel` step.
    fn fan(&mut self, fields: &Fields, what: &str, default_parallel: u32) -> Option<FanOut> {
        let max_parallel = match fields.value("max_parallel") {
            Some(n) => self.count(n, &format!("`max_parallel` of {what}"), 1, 1024),
            None => Some(default_parallel),
        };
        let join = match fields.value("join") {
            Some(n) => {
                let text = self.string(n, &format!("`join` of {what}"))?;
                match Join::parse(&text) {
                    Some(join) => Some(join),
                    None => {
                        let hint = match did_you_mean(&text, Join::NAMES) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!("use one of {}", Join::NAMES.join(", ")),
                        };
                        self.error(
                            n.pos,
                            format!("`join: {text}` of {what} is not a join policy"),
                        )
                        .hint = Some(hint);
                        None
                    }
                }
            }
            None => Some(Join::AllSuccess),
        };
        Some(FanOut {
            max_parallel: max_parallel?,
            join: join?,
        })
    }

    /// `parallel: {branches: {NAME: [steps]}, max_parallel, join}`.
    fn parallel(&mut self, node: &Node, what: &str) -> Option<StepKind> {
        let what_p = format!("`parallel` of {what}");
        let fields = self.fields(node, &["branches", "max_parallel", "join"], &what_p)?;
        // Without `max_parallel`, every branch runs at once.
        let fan = self.fan(&fields, &what_p, u32::MAX);
        let Some(list) = fields.value("branches") else {
            self.error(node.pos, format!("{what_p} has no `branches`")).hint = Some(
                "write `branches:` with a name per branch and its steps under it, e.g. `branches: {lint: [...], test: [...]}`".into(),
            );
            return None;
        };
        let Value::Map(entries) = &list.value else {
            self.error(
                list.pos,
                format!(
                    "`branches` of {what} must map branch names to step lists, found {}",
                    list.value.kind()
                ),
            );
            return None;
        };
        if entries.is_empty() {
            self.error(list.pos, format!("`branches` of {what} is empty"))
                .hint = Some("give it at least one named branch of steps".into());
        }
        let mut branches: Vec<Branch> = Vec::new();
        for (key, value) in entries {
            let Some(name) = self.string(key, "a branch name") else {
                continue;
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            {
                self.error(
                    key.pos,
                    format!(
                        "branch name `{name}` in {what} may only use letters, digits, `_` and `-`"
                    ),
                )
                .hint = Some("branch names are used in `${steps.<Step>.branches.<name>}`".into());
                continue;
            }
            if let Some(first) = branches.iter().find(|b| b.name == name) {
                self.error(key.pos, format!("duplicate branch name `{name}` in {what}"))
                    .hint = Some(format!(
                    "first defined on line {}; branch names must be unique within a `parallel` step",
                    first.line
                ));
                continue;
            }
            let steps = self.steps(value);
            branches.push(Branch {
                name,
                line: key.pos.line,
                steps,
            });
        }
        Some(StepKind::Parallel {
            branches,
            fan: fan?,
        })
    }

    fn converge(&mut self, node: &Node, what: &str) -> Option<Converge> {
        let fields = self.fields(
            node,
            &["findings", "rounds", "on_stall"],
            &format!("`converge` of {what}"),
        )?;
        let findings = match fields.value("findings") {
            Some(n) => {
                let text = self.string(n, "`converge.findings`")?;
                if text.trim_start().starts_with("${") {
                    let template = self.template(n, "`converge.findings`")?;
                    if !matches!(template.parts.as_slice(), [Part::Var(_)]) {
                        self.error(
                            n.pos,
                            format!("`converge.findings` of {what} must be one `${{...}}` reference or a jq expression"),
                        )
                        .hint = Some(
                            "write `${steps.<Step>.json.findings}`, or jq such as `.json.findings`"
                                .into(),
                        );
                        return None;
                    }
                    Findings::Pointer(template)
                } else {
                    Findings::Jq(text)
                }
            }
            None => {
                self.error(node.pos, format!("`converge` of {what} needs `findings`"))
                    .hint = Some(
                    "a jq expression over the step's result that yields an array or a number, e.g. `.json.findings`".into(),
                );
                return None;
            }
        };
        let rounds = match fields.value("rounds") {
            // Reported; the rest of the block is still checked.
            Some(n) => self.count(n, "`converge.rounds`", 1, 1_000).unwrap_or(3),
            None => 3,
        };
        let on_stall = match fields.value("on_stall") {
            Some(n) => Some(self.string(n, "`converge.on_stall`")?),
            None => None,
        };
        Some(Converge {
            findings,
            rounds,
            on_stall,
        })
    }

    fn wait_for(&mut self, node: &Node, what: &str) -> Option<StepKind> {
        let fields = self.fields(
            node,
            &["glob", "timeout_sec", "poll_ms", "min_count"],
            &format!("`wait_for` of {what}"),
        )?;
        let glob = match fields.value("glob") {
            Some(n) => self.template(n, "`glob`")?,
            None => {
                self.error(node.pos, format!("`wait_for` of {what} needs a `glob`"));
                return None;
            }
        };
        let timeout = match fields.value("timeout_sec") {
            Some(n) => self.seconds(n, "`timeout_sec`")?,
            None => Duration::from_secs(300),
        };
        let poll = match fields.value("poll_ms") {
            Some(n) => {
                Duration::from_millis(u64::from(self.count(n, "`poll_ms`", 1, 3_600_000)?))
            }
            None => Duration::from_millis(500),
        };
        let min_count = match fields.value("min_count") {
            Some(n) => self.count(n, "`min_count`", 1, 1_000_000)? as usize,
            None => 1,
        };
        Some(StepKind::WaitFor {
            glob,
            timeout,
            poll,
            min_count,
        })
    }

    fn condition(&mut self, node: &Node, what: &str) -> Option<Condition> {
        let fields = self.fields(
            node,
            &["equals", "not_equals", "jq"],
            &format!("`when` of {what}"),
        )?;
        let present: Vec<&str> = ["equals", "not_equals", "jq"]
            .into_iter()
            .filter(|k| fields.get(k).is_some())
            .collect();
        if present.len() != 1 {
            self.error(
                node.pos,
                format!("`when` of {what} needs exactly one of `equals`, `not_equals` or `jq`"),
            );
            return None;
        }
        if present[0] == "jq" {
            let expr = self.string(fields.get("jq")?, "`jq`")?;
            return Some(Condition::Jq(expr));
        }
        let inner = fields.get(present[0])?;
        let pair = self.fields(
            inner,
            &["left", "right"],
            &format!("`{}` of {what}", present[0]),
        )?;
        let (Some(l), Some(r)) = (pair.get("left"), pair.get("right")) else {
            self.error(
                inner.pos,
                format!("`{}` of {what} needs `left` and `right`", present[0]),
            );
            return None;
        };
        let left = self.template(l, "`left`")?;
        let right = self.template(r, "`right`")?;
        Some(if present[0] == "equals" {
            Condition::Equals { left, right }
        } else {
            Condition::NotEquals { left, right }
        })
    }

    /// `output_schema:` a JSON Schema inline (a mapping) or a workspace file (`.json`, `.yaml`).
    fn output_schema(&mut self, node: &Node, what: &str) -> Option<crate::model::OutputSchema> {
        let (schema, origin) = match &node.value {
            Value::Map(_) => (node.to_json(), "inline".to_string()),
            Value::Str(path) => {
                let base = self
                    .file
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                // Relative to the workflow's directory's workspace: the file next to the
                // workflow, or from the workspace root.
                let candidates = [base.join(path), PathBuf::from(path)];
                let Some(file) = candidates.iter().find(|p| p.is_file()) else {
                    self.error(
                        node.pos,
                        format!("`output_schema` of {what}: no file `{path}`"),
                    )
                    .hint =
                        Some("give the schema inline, or a path to a .json or .yaml file".into());
                    return None;
                };
                let text = match std::fs::read_to_string(file) {
                    Ok(text) => text,
                    Err(err) => {
                        self.error(
                            node.pos,
                            format!("`output_schema` of {what}: cannot read `{path}`: {err}"),
                        );
                        return None;
                    }
                };
                let parsed = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .or_else(|| yaml::parse(&text).ok().map(|n| n.to_json()));
                let Some(schema) = parsed else {
                    self.error(
                        node.pos,
                        format!("`output_schema` of {what}: `{path}` is neither JSON nor YAML"),
                    );
                    return None;
                };
                (schema, path.clone())
            }
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "`output_schema` of {what} must be a JSON Schema (a mapping) or a file path"
                    ),
                );
                return None;
            }
        };
        match jsonschema::validator_for(&schema) {
            Ok(validator) => Some(crate::model::OutputSchema {
                schema,
                origin,
                validator: std::sync::Arc::new(validator),
            }),
            Err(err) => {
                self.error(
                    node.pos,
                    format!("`output_schema` of {what} is not a valid JSON Schema: {err}"),
                );
                None
            }
        }
    }

    fn transitions(&mut self, node: &Node, what: &str) -> Transitions {
        let mut out = Transitions::default();
        let Some(fields) = self.fields(
            node,
            &["success", "failure", "always", "rejected", "invalid"],
            &format!("`on` of {what}"),
        ) else {
            return out;
        };
        let mut at = [(0, 0); 5];
        for (i, (key, slot)) in [
            ("success", &mut out.success),
            ("failure", &mut out.failure),
            ("always", &mut out.always),
            ("rejected", &mut out.rejected),
            ("invalid", &mut out.invalid),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(n) = fields.value(key) else { continue };
            let Some(f) = self.fields(n, &["goto"], &format!("`on.{key}` of {what}")) else {
                continue;
            };
            match f.value("goto") {
                Some(g) => {
                    if let Some(target) = self.string(g, "`goto`") {
                        at[i] = (g.pos.line, self.content_column(g.pos));
                        *slot = Some(if target == "_end" {
                            Target::End
                        } else {
                            Target::Step(target)
                        });
                    }
                }
                None => {
                    self.error(
                        n.pos,
                        format!("`on.{key}` of {what} needs `goto: <step>` (or `goto: _end`)"),
                    );
                }
            }
        }
        out.at = at;
        out
    }

    fn retry(&mut self, node: &Node, what: &str) -> Retry {
        let mut retry = Retry {
            explicit: true,
            ..Retry::default()
        };
        if let Value::Int(_) = node.value {
            retry.max_attempts = self.count(node, "`retry`", 1, 100).unwrap_or(1);
            return retry;
        }
        let Some(fields) = self.fields(
            node,
            &["max_attempts", "delay_sec", "backoff", "on_exit_codes"],
            &format!("`retry` of {what}"),
        ) else {
            return retry;
        };
        if let Some(n) = fields.value("max_attempts") {
            retry.max_attempts = self.count(n, "`max_attempts`", 1, 100).unwrap_or(1);
        }
        if let Some(n) = fields.value("delay_sec") {
            retry.delay = self.seconds(n, "`delay_sec`").unwrap_or(retry.delay);
        }
        if let Some(n) = fields.value("backoff") {
            retry.backoff = self
                .number(n, "`backoff`", 1.0, 10.0)
                .unwrap_or(retry.backoff);
        }
        if let Some(n) = fields.value("on_exit_codes") {
            match &n.value {
                Value::Seq(codes) => {
                    let codes: Vec<i32> = codes
                        .iter()
                        .filter_map(|c| self.count(c, "an exit code", 1, 255).map(|c| c as i32))
                        .collect();
                    retry.on_exit_codes = Some(codes);
                }
                _ => {
                    self.error(n.pos, "`on_exit_codes` must be a list of exit codes");
                }
            }
        }
        retry
    }

    fn secrets(&mut self, node: &Node) -> Vec<String> {
        let Value::Seq(items) = &node.value else {
            self.error(
                node.pos,
                "`secrets` must be a list of environment variable names",
            )
            .hint = Some("e.g. secrets: [GITHUB_TOKEN]".into());
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| {
                let name = self.string(item, "a secret name")?;
                let valid = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    self.error(
                        item.pos,
                        format!("`{name}` is not an environment variable name"),
                    );
                    return None;
                }
                Some(name)
            })
            .collect()
    }
}

/// Calls `f` on every string inside a JSON value.
pub fn visit_strings(value: &Json, f: &mut dyn FnMut(&str)) {
    match value {
        Json::String(s) => f(s),
        Json::Array(items) => items.iter().for_each(|v| visit_strings(v, f)),
        Json::Object(map) => map.values().for_each(|v| visit_strings(v, f)),
        _ => {}
    }
}

fn map_entries(node: &Node) -> &[(Node, Node)] {
    match &node.value {
        Value::Map(entries) => entries,
        _ => &[],
    }
}

/// The variable roots every workflow may use; `as:` names may not shadow them.
pub const RESERVED_ROOTS: &[&str] = &["run", "loop", "steps", "context", "env", "task", "feedback"];

/// The fields `${steps.<name>.<field>}` may name.
pub const STEP_RESULT_FIELDS: &[&str] = &[
    "exit_code",
    "output",
    "lines",
    "json",
    "duration",
    "status",
    "truncated",
    "attempts",
    "error",
    "output_file",
    "stdout_log",
    "stderr_log",
    "started_at",
    "finished_at",
    "files",
    "wait_duration",
    "poll_count",
    "iterations",
    // for_each and parallel steps
    "total",
    "results",
    "succeeded",
    "failed",
    "cancelled",
    "branches",
    // agent steps
    "result",
    "session_id",
    "usage",
    "cost_usd",
    "turns",
    "denials",
    "runtime",
    "profile",
    "model",
    "phase",
    "changed_files",
    // approval steps
    "decision",
    "reason",
    "note",
    "by",
    // enqueue steps
    "task",
    // workflow steps
    "outputs",
    "run_id",
    "run_root",
];

/// Result fields that hold objects or arrays, so a path may follow them.
const STRUCTURED_FIELDS: &[&str] = &[
    "json",
    "lines",
    "files",
    "iterations",
    "results",
    "branches",
    "usage",
    "error",
    "denials",
    "changed_files",
    "task",
    "outputs",
];

pub const RUN_FIELDS: &[&str] = &["timestamp_utc", "id", "workspace", "workflow"];

/// The `${task.*}` variables a role process sets for each task (`worker::task_variables`, as
/// docs/swarm.md lists them); `json` is followed by a path into the task's JSON.
pub const TASK_FIELDS: &[&str] = &[
    "id",
    "name",
    "path",
    "dir",
    "attempt",
    "text",
    "json",
    "correlation_id",
    "role",
];

/// Parses the `items_from` pointer grammar.
pub fn parse_pointer(text: &str) -> Result<Pointer, String> {
    let segments: Vec<&str> = text.split('.').collect();
    if segments.first() != Some(&"steps") || segments.len() < 3 {
        return Err("a pointer starts with `steps.<Step>.`".into());
    }
    if segments.iter().any(|s| s.is_empty()) {
        return Err("empty path segment".into());
    }
    if segments
        .iter()
        .any(|s| s.contains(['*', '[', ']', '|', '(', ')', ' ', '$']))
    {
        return Err("pointers take plain dot paths: no wildcards, brackets or expressions".into());
    }
    match segments[2] {
        "lines" if segments.len() == 3 => {}
        "lines" => return Err("`lines` is already the array; nothing may follow it".into()),
        "json" => {}
        other => return Err(format!("`{other}` is not iterable; use `lines` or `json`")),
    }
    Ok(Pointer {
        text: text.to_string(),
        step: segments[1].to_string(),
        path: segments[2..].iter().map(|s| s.to_string()).collect(),
    })
}

/// FNV-1a over the text: enough to notice that a workflow changed between a run and a resume.
pub fn fingerprint(text: &str) -> String {
    format!("{:016x}", orchestrate_base::hash::fnv1a(text.as_bytes()))
}

/// Semantic checks over the whole workflow: names, gotos, variables, pointers, jq.
struct Checker<'a> {
    loader: &'a mut Loader,
    workflow: &'a Workflow,
    options: &'a LoadOptions,
    /// Step name -> (capture mode, kind label, line).
    steps: HashMap<String, (Capture, &'static str)>,
    text_positions: HashMap<String, u32>,
}

impl<'a> Checker<'a> {
    fn new(loader: &'a mut Loader, workflow: &'a Workflow, options: &'a LoadOptions) -> Self {
        Checker {
            loader,
            workflow,
            options,
            steps: HashMap::new(),
            text_positions: HashMap::new(),
        }
    }

    /// A diagnostic at a step (`line` is the step's line; the column is that of its first key).
    /// A diagnostic at a field of a step when its position is known, else at the step.
    fn at_field(
        &mut self,
        step: &Step,
        field: &str,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        match step.at.get(field) {
            Some(&(line, column)) => self.loader.error(
                Pos {
                    line,
                    column,
                    offset: None,
                },
                message,
            ),
            None => self.at(step.line, message),
        }
    }

    fn at(&mut self, line: u32, message: impl Into<String>) -> &mut Diagnostic {
        let column = self
            .workflow
            .all_steps()
            .iter()
            .find(|s| s.line == line)
            .map(|s| s.column)
            .unwrap_or(1);
        self.loader.error(
            Pos {
                line,
                column,
                offset: None,
            },
            message,
        )
    }

    fn check(mut self) {
        let workflow = self.workflow;
        // Names are unique across the whole file, nested steps included: `${steps.X}` and
        // events name steps without a path.
        for step in workflow.all_steps() {
            if let Some(first) = self.text_positions.get(&step.name).copied() {
                self.at(step.line, format!("duplicate step name `{}`", step.name))
                    .hint = Some(format!(
                    "first defined on line {first}; step names must be unique"
                ));
            } else {
                self.text_positions.insert(step.name.clone(), step.line);
                self.steps
                    .insert(step.name.clone(), (step.capture, step.kind.label()));
            }
        }
        // Single names in provider templates (`${PROMPT}`, `${model}`) are parameters, checked
        // per step; dotted ones are run variables.
        for (name, provider) in &workflow.providers {
            for var in provider
                .command
                .iter()
                .flat_map(Template::vars)
                .filter(|v| v.segments.len() > 1)
            {
                self.check_var(var, &Scope::default(), 1, &format!("provider `{name}`"));
            }
        }
        for (key, value) in &workflow.env {
            self.check_template(value, &Scope::default(), 1, &format!("`env.{key}`"));
        }
        for (key, value) in &workflow.outputs {
            self.check_template(value, &Scope::default(), 1, &format!("`outputs.{key}`"));
        }
        self.check_steps(&workflow.steps, &Scope::default());
    }

    fn check_steps(&mut self, steps: &[Step], scope: &Scope) {
        let local: HashSet<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        for step in steps {
            let what = format!("step `{}`", step.name);
            for (target, at) in [
                &step.on.success,
                &step.on.failure,
                &step.on.always,
                &step.on.rejected,
                &step.on.invalid,
            ]
            .into_iter()
            .zip(step.on.at)
            {
                if let Some(Target::Step(name)) = target
                    && !local.contains(name.as_str())
                {
                    let hint = if self.steps.contains_key(name) {
                        format!(
                            "`{name}` is in another step list; goto can only jump within the same list of steps"
                        )
                    } else {
                        match did_you_mean(name, local.iter().copied()) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => "use the name of a step in the same list, or `_end`".into(),
                        }
                    };
                    let d = self.at(
                        step.line,
                        format!("{what} has `goto: {name}`, but there is no step `{name}`"),
                    );
                    (d.line, d.column, d.width) = (at.0, at.1, name.chars().count());
                    d.hint = Some(hint);
                }
            }
            if let Some(t) = &step.output_file {
                self.check_template(t, scope, step.line, &what);
            }
            for (_, t) in &step.env {
                self.check_template(t, scope, step.line, &what);
            }
            match &step.when {
                Some(Condition::Equals { left, right } | Condition::NotEquals { left, right }) => {
                    self.check_template(left, scope, step.line, &what);
                    self.check_template(right, scope, step.line, &what);
                }
                Some(Condition::Jq(expr)) => {
                    if let Err(err) = crate::jq::check(expr) {
                        let shift = match &err {
                            crate::jq::JqError::Compile {
                                offset: Some(o), ..
                            } => expr.get(..*o).map(|p| p.chars().count()).unwrap_or(0),
                            _ => 0,
                        };
                        let d =
                            self.at_field(step, "when.jq", format!("`when.jq` of {what}: {err}"));
                        d.column += shift as u32;
                        d.hint = Some(
                            "the expression sees the run's variables as `.run`, `.context`, `.steps`, `.loop`".into(),
                        );
                    }
                }
                None => {}
            }
            if let Some(expr) = &step.rejected_when
                && let Err(err) = crate::jq::check(expr)
            {
                self.at(step.line, format!("`rejected_when` of {what}: {err}")).hint = Some(
                    "the expression sees the step's result: `.json`, `.result`, `.output`, `.exit_code`".into(),
                );
            }
            if let Some(converge) = &step.converge {
                self.check_converge(step, converge, &local, scope, &what);
            }
            if step.on.rejected.is_some()
                && step.rejected_when.is_none()
                && !matches!(step.kind, StepKind::Approval { .. })
            {
                let (line, column) = step.on.at[3];
                self.loader
                    .error(
                        Pos {
                            line,
                            column,
                            offset: None,
                        },
                        format!("`on.rejected` of {what} is never taken"),
                    )
                    .hint = Some(
                    "only `approval` steps and steps with `rejected_when` can be rejected".into(),
                );
            }
            match &step.kind {
                StepKind::Agent(agent) => {
                    let (Prompt::Text(t) | Prompt::File(t)) = &agent.prompt;
                    self.check_template(t, scope, step.line, &what);
                    if let Some(t) = &agent.model {
                        self.check_template(t, scope, step.line, &what);
                    }
                    if let Some(target) = &agent.resume {
                        match self.workflow.find_step(target) {
                            Some(s) if matches!(s.kind, StepKind::Agent(_)) => {}
                            Some(_) => {
                                self.at(
                                    step.line,
                                    format!(
                                        "{what} resumes `{target}`, which is not an agent step"
                                    ),
                                )
                                .hint = Some(
                                    "`resume` continues the session of an earlier agent step"
                                        .into(),
                                );
                            }
                            None => {
                                self.at(
                                    step.line,
                                    format!(
                                        "{what} resumes `{target}`, but there is no step `{target}`"
                                    ),
                                );
                            }
                        }
                    }
                }
                StepKind::Approval {
                    message, artifacts, ..
                } => {
                    self.check_template(message, scope, step.line, &what);
                    for t in artifacts {
                        self.check_template(t, scope, step.line, &what);
                    }
                }
                StepKind::Command { argv } => {
                    for t in argv {
                        self.check_template(t, scope, step.line, &what);
                    }
                }
                StepKind::Provider {
                    provider,
                    params,
                    input_file,
                    command_override,
                } => {
                    for t in params.values() {
                        self.check_template(t, scope, step.line, &what);
                    }
                    if let Some(t) = input_file {
                        self.check_template(t, scope, step.line, &what);
                    }
                    let template_params = |t: &Template| {
                        t.vars()
                            .filter(|v| v.segments.len() == 1)
                            .map(|v| v.root().to_string())
                            .collect::<Vec<_>>()
                    };
                    match command_override {
                        Some(argv) => {
                            for t in argv {
                                let provider_scope = scope.with_provider_params(
                                    params.keys().cloned().chain(["PROMPT".to_string()]),
                                );
                                self.check_template(t, &provider_scope, step.line, &what);
                            }
                        }
                        None => {
                            let Some(name) = provider
                                .clone()
                                .or_else(|| self.options.default_provider.clone())
                            else {
                                self.at(step.line, format!("{what} has no `provider`"))
                                    .hint = Some("set `provider: claude` (or gemini, codex, or one under `providers:`); a role's `runtime:` supplies it when the workflow runs for a role".into());
                                continue;
                            };
                            let Some(template) = self.workflow.providers.get(&name) else {
                                let names: Vec<&str> =
                                    self.workflow.providers.keys().map(String::as_str).collect();
                                let hint = match did_you_mean(&name, names.iter().copied()) {
                                    Some(s) => format!("did you mean `{s}`?"),
                                    None => format!(
                                        "known providers: {} (add one under `providers:`)",
                                        names.join(", ")
                                    ),
                                };
                                self.at_field(
                                    step,
                                    "provider",
                                    format!("{what} uses provider `{name}`, which is not defined"),
                                )
                                .hint = Some(hint);
                                continue;
                            };
                            for arg in &template.command {
                                for param in template_params(arg) {
                                    if param == "PROMPT" {
                                        if input_file.is_none() {
                                            self.at_field(step, "provider", format!("{what}: provider `{name}` needs a prompt (`${{PROMPT}}`) but the step has no `input_file`"))
                                                .hint = Some("add `input_file: prompts/<file>.md`, or use `command_override`".into());
                                        }
                                    } else if !params.contains_key(&param)
                                        && !template.defaults.contains_key(&param)
                                    {
                                        self.at_field(step, "provider", format!("{what}: provider `{name}` uses `${{{param}}}`, but neither `provider_params` nor the provider's `defaults` give `{param}`"))
                                            .hint = Some(format!("add `provider_params: {{{param}: ...}}`"));
                                    }
                                }
                            }
                        }
                    }
                }
                StepKind::ForEach {
                    items,
                    var,
                    steps,
                    fan,
                } => {
                    if let Items::From(pointer) = items {
                        self.check_pointer(pointer, step, &what);
                    }
                    let inner = scope.enter_loop(var);
                    self.check_steps(steps, &inner);
                    if fan.fans_out() {
                        self.check_fan_body(step, steps, fan.max_parallel > 1);
                    }
                }
                StepKind::Parallel { branches, .. } => {
                    for branch in branches {
                        self.check_steps(&branch.steps, scope);
                        self.check_fan_body(step, &branch.steps, false);
                    }
                }
                StepKind::WaitFor { glob, .. } => {
                    self.check_template(glob, scope, step.line, &what);
                }
                StepKind::Workflow(sub) => {
                    for input in &sub.with {
                        let (key, line) = (&input.key, input.at.0);
                        let mut templates = Vec::new();
                        visit_strings(&input.value, &mut |text| {
                            if let Ok(t) = Template::parse(text) {
                                templates.push(t);
                            }
                        });
                        for t in &templates {
                            self.check_template(t, scope, line, &format!("`with.{key}` of {what}"));
                        }
                    }
                }
                StepKind::Enqueue {
                    role,
                    content,
                    name,
                } => {
                    self.check_template(role, scope, step.line, &what);
                    if let Some(name) = name {
                        self.check_template(name, scope, step.line, &what);
                    }
                    match content {
                        EnqueueContent::Text(t) | EnqueueContent::File(t) => {
                            self.check_template(t, scope, step.line, &what)
                        }
                        EnqueueContent::Json(value) => {
                            let mut templates = Vec::new();
                            visit_strings(value, &mut |text| {
                                if let Ok(t) = Template::parse(text) {
                                    templates.push(t);
                                }
                            });
                            for t in &templates {
                                self.check_template(t, scope, step.line, &what);
                            }
                        }
                    }
                }
            }
        }
    }

    /// What a body run on its own lane (a parallel `for_each` item, a `parallel` branch) may not
    /// do: end the whole run with `goto: _end` while its siblings run, or (`items` running at
    /// once) wait for an approval, whose request is one file per step name.
    fn check_fan_body(&mut self, owner: &Step, steps: &[Step], concurrent_items: bool) {
        let kind = owner.kind.label();
        for step in steps {
            let targets = [
                &step.on.success,
                &step.on.failure,
                &step.on.always,
                &step.on.rejected,
                &step.on.invalid,
            ];
            for (target, at) in targets.into_iter().zip(step.on.at) {
                if target == &Some(Target::End) {
                    let d = self.at(
                        step.line,
                        format!(
                            "step `{}` has `goto: _end` inside {kind} step `{}`, whose items run on their own and are joined",
                            step.name, owner.name
                        ),
                    );
                    (d.line, d.column, d.width) = (at.0, at.1, "_end".len());
                    d.hint = Some(format!(
                        "a fan-out item cannot end the whole run while its siblings run: let the item end (goto its last step or fail it), and put `goto: _end` on `{}` itself",
                        owner.name
                    ));
                }
            }
            if concurrent_items && matches!(step.kind, StepKind::Approval { .. }) {
                self.at(
                    step.line,
                    format!(
                        "approval step `{}` is inside `for_each` `{}` with `max_parallel` above 1: its items would ask at once under one request file",
                        step.name, owner.name
                    ),
                )
                .hint = Some(format!(
                    "drop `max_parallel` from `{}` (items then ask one after another), or ask once before the loop",
                    owner.name
                ));
            }
            for body in step.kind.bodies() {
                self.check_fan_body(owner, body, concurrent_items);
            }
        }
    }

    fn check_converge(
        &mut self,
        step: &Step,
        converge: &Converge,
        local: &HashSet<&str>,
        scope: &Scope,
        what: &str,
    ) {
        match &converge.findings {
            Findings::Jq(expr) => {
                if let Err(err) = crate::jq::check(expr) {
                    let shift = match &err {
                        crate::jq::JqError::Compile {
                            offset: Some(o), ..
                        } => expr.get(..*o).map(|p| p.chars().count()).unwrap_or(0),
                        _ => 0,
                    };
                    let d = self.at_field(
                        step,
                        "converge.findings",
                        format!("`converge.findings` of {what}: {err}"),
                    );
                    d.column += shift as u32;
                    d.hint = Some(
                        "the expression sees the step's result: `.json`, `.lines`, `.output`, `.exit_code`".into(),
                    );
                }
            }
            Findings::Pointer(template) => {
                self.check_template(template, scope, step.line, what);
            }
        }
        if let Some(target) = &converge.on_stall
            && !local.contains(target.as_str())
        {
            let hint = if self.steps.contains_key(target) {
                format!(
                    "`{target}` is in another step list; `on_stall` can only go to a step of the same list"
                )
            } else {
                match did_you_mean(target, local.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => {
                        "name a step of the same list, such as an approval step that asks a person"
                            .into()
                    }
                }
            };
            let d = self.at_field(
                step,
                "converge.on_stall",
                format!(
                    "{what} has `converge.on_stall: {target}`, but there is no step `{target}`"
                ),
            );
            d.width = target.chars().count();
            d.hint = Some(hint);
        }
    }

    fn check_pointer(&mut self, pointer: &Pointer, step: &Step, what: &str) {
        match self.steps.get(&pointer.step) {
            None => {
                let names: Vec<String> = self.steps.keys().cloned().collect();
                let hint = match did_you_mean(&pointer.step, names.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "name a step that runs before this one".into(),
                };
                self.at_field(
                    step,
                    "for_each.items_from",
                    format!(
                        "`items_from: {}` in {what} names no step `{}`",
                        pointer.text, pointer.step
                    ),
                )
                .hint = Some(hint);
            }
            Some((capture, _)) => {
                let wanted = if pointer.path[0] == "lines" {
                    Capture::Lines
                } else {
                    Capture::Json
                };
                if *capture != wanted {
                    let mode = if wanted == Capture::Lines {
                        "lines"
                    } else {
                        "json"
                    };
                    self.at_field(
                        step,
                        "for_each.items_from",
                        format!(
                            "`items_from: {}` in {what}: step `{}` does not capture {mode}",
                            pointer.text, pointer.step
                        ),
                    )
                    .hint = Some(format!(
                        "set `output_capture: {mode}` on step `{}`",
                        pointer.step
                    ));
                }
            }
        }
    }

    fn check_template(&mut self, template: &Template, scope: &Scope, line: u32, what: &str) {
        for part in &template.parts {
            if let Part::Var(var) = part {
                let before = self.loader.diags.len();
                self.check_var(var, scope, line, what);
                // Point at the `${` itself when the template knows where it is.
                if template.at.0 > 0 {
                    for diag in &mut self.loader.diags[before..] {
                        diag.line = template.at.0;
                        diag.column = template.at.1 + var.offset as u32;
                        diag.width = var.text.chars().count() + 3;
                    }
                }
            }
        }
    }

    fn check_var(&mut self, var: &crate::template::VarRef, scope: &Scope, line: u32, what: &str) {
        let root = var.root();
        let text = format!("${{{}}}", var.text);
        let field = var.segments.get(1).map(String::as_str);
        let problem: Option<(String, String)> = match root {
            "env" => Some((
                format!("{what} uses `{text}`: the `env` namespace is not available"),
                "environment variables are not substituted; pass values with `--context`, or read them in the command (`bash -c 'echo $HOME'`)".into(),
            )),
            "run" => match field {
                Some(f) if RUN_FIELDS.contains(&f) && var.segments.len() == 2 => None,
                _ => Some((format!("{what} uses `{text}`, which is not a run variable"), format!("run variables: {}", RUN_FIELDS.iter().map(|f| format!("run.{f}")).collect::<Vec<_>>().join(", ")))),
            },
            "loop" => {
                if scope.loops.is_empty() {
                    Some((format!("{what} uses `{text}` outside a `for_each`"), "`loop.index` and `loop.total` exist only inside `for_each` steps".into()))
                } else if matches!(field, Some("index" | "total")) && var.segments.len() == 2 {
                    None
                } else {
                    Some((format!("{what} uses `{text}`"), "loop variables: loop.index, loop.total".into()))
                }
            }
            "context" => match field {
                Some(_) => None,
                None => Some((format!("{what} uses `{text}` without a key"), "write `${context.<key>}`".into())),
            },
            "steps" => self.check_step_ref(var, &text, what),
            // Whether a task is there depends on who runs the workflow (a role does, `run` does
            // not), so only the names are checked.
            "task" => match field {
                None => None,
                Some("json") => None,
                Some(f) if TASK_FIELDS.contains(&f) && var.segments.len() == 2 => None,
                Some(f) if TASK_FIELDS.contains(&f) => Some((
                    format!("{what} uses `{text}`, but `task.{f}` has no fields"),
                    "only `task.json` is followed by a path: `${task.json.<key>}`".into(),
                )),
                Some(f) => {
                    let hint = match did_you_mean(f, TASK_FIELDS.iter().copied()) {
                        Some(s) => format!("did you mean `task.{s}`?"),
                        None => format!(
                            "task variables: {}",
                            TASK_FIELDS.iter().map(|f| format!("task.{f}")).collect::<Vec<_>>().join(", ")
                        ),
                    };
                    Some((format!("{what} uses `{text}`, which is not a task variable"), hint))
                }
            },
            // What a rejection edge carried here: empty strings when none did.
            "feedback" => match field {
                None | Some("reason" | "from" | "step" | "violations") if var.segments.len() <= 2 => None,
                _ => Some((format!("{what} uses `{text}`"), "feedback variables: feedback, feedback.reason, feedback.from, feedback.violations".into())),
            },
            _ if scope.loops.iter().any(|v| v == root) => None,
            _ if scope.provider_params.iter().any(|p| p == root) && var.segments.len() == 1 => None,
            _ => {
                let mut roots: Vec<&str> = vec!["run", "context", "steps"];
                if !scope.loops.is_empty() {
                    roots.push("loop");
                }
                roots.extend(scope.loops.iter().map(String::as_str));
                let hint = match did_you_mean(root, roots.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("variables here: {}", roots.join(", ")),
                };
                Some((format!("{what} uses `{text}`: unknown variable namespace `{root}`"), hint))
            }
        };
        if let Some((message, hint)) = problem {
            self.at(line, message).hint = Some(hint);
        }
    }

    fn check_step_ref(
        &mut self,
        var: &crate::template::VarRef,
        text: &str,
        what: &str,
    ) -> Option<(String, String)> {
        let Some(name) = var.segments.get(1) else {
            return Some((
                format!("{what} uses `{text}` without a step name"),
                "write `${steps.<Step>.output}`".into(),
            ));
        };
        let Some((capture, kind)) = self.steps.get(name).copied() else {
            let names: Vec<String> = self.steps.keys().cloned().collect();
            let hint = match did_you_mean(name, names.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "name a step of this workflow".into(),
            };
            return Some((
                format!("{what} uses `{text}`, but there is no step `{name}`"),
                hint,
            ));
        };
        let Some(field) = var.segments.get(2) else {
            return Some((
                format!("{what} uses `{text}` without a field"),
                format!("fields: {}", STEP_RESULT_FIELDS.join(", ")),
            ));
        };
        if !STEP_RESULT_FIELDS.contains(&field.as_str()) {
            let hint = match did_you_mean(field, STEP_RESULT_FIELDS.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("fields: {}", STEP_RESULT_FIELDS.join(", ")),
            };
            return Some((
                format!("{what} uses `{text}`: steps have no field `{field}`"),
                hint,
            ));
        }
        if let Some(problem) = self.check_fan_out_ref(var, text, what, name, field, kind) {
            return Some(problem);
        }
        match (field.as_str(), capture) {
            ("outputs", _) if kind != "workflow" => Some((
                format!("{what} uses `{text}`, but step `{name}` is a {kind} step: only `workflow` steps have outputs"),
                "declare `outputs:` in a child workflow and run it with a `workflow:` step".into(),
            )),
            ("outputs", _) if var.segments.len() > 3 => {
                let workflow = self.workflow;
                let step = workflow.all_steps().into_iter().find(|s| s.name == *name)?;
                let StepKind::Workflow(sub) = &step.kind else {
                    return None;
                };
                let child = sub.child.as_ref()?;
                let wanted = &var.segments[3];
                let declared: Vec<&str> =
                    child.workflow.outputs.iter().map(|(k, _)| k.as_str()).collect();
                if declared.contains(&wanted.as_str()) {
                    return None;
                }
                let hint = match did_you_mean(wanted, declared.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if declared.is_empty() => format!(
                        "{} declares no `outputs:`; add `outputs: {{{wanted}: ...}}` to it",
                        sub.path
                    ),
                    None => format!("its outputs: {}", declared.join(", ")),
                };
                Some((
                    format!(
                        "{what} uses `{text}`, but workflow {} (run by step `{name}`) declares no output `{wanted}`",
                        sub.path
                    ),
                    hint,
                ))
            }
            ("json", Capture::Json) if var.segments.len() > 3 => {
                let workflow = self.workflow;
                let step = workflow.all_steps().into_iter().find(|s| s.name == *name)?;
                let schema = step.output_schema.as_ref()?;
                let (missing, known) = schema_lacks(&schema.schema, &var.segments[3..])?;
                let hint = match did_you_mean(&missing, known.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if known.is_empty() => "the schema declares no properties there".into(),
                    None => format!("its properties there: {}", known.join(", ")),
                };
                Some((
                    format!(
                        "{what} uses `{text}`, but the output_schema of step `{name}` ({}) has no property `{missing}` there",
                        schema.origin
                    ),
                    hint,
                ))
            }
            ("lines", Capture::Lines) | ("json", Capture::Json) => None,
            ("lines", _) | ("json", _) if kind != "for_each" && kind != "wait_for" => Some((
                format!("{what} uses `{text}`, but step `{name}` does not capture {field}"),
                format!("set `output_capture: {field}` on step `{name}`"),
            )),
            ("output", Capture::Lines | Capture::Json) => Some((
                format!(
                    "{what} uses `{text}`, but step `{name}` captures {} (no `output` is kept)",
                    if capture == Capture::Lines {
                        "lines"
                    } else {
                        "json"
                    }
                ),
                format!(
                    "use `${{steps.{name}.{}}}`",
                    if capture == Capture::Lines {
                        "lines"
                    } else {
                        "json"
                    }
                ),
            )),
            _ if var.segments.len() > 3 && !STRUCTURED_FIELDS.contains(&field.as_str()) =>
            {
                Some((
                    format!("{what} uses `{text}`: `{field}` has no fields"),
                    "only json, lines, files, iterations, results, branches, usage, error, denials, changed_files, task and outputs take a path".into(),
                ))
            }
            _ => None,
        }
    }
}

impl Checker<'_> {
    /// `${steps.X.results}` and the counts exist on `for_each` and `parallel` steps only, and
    /// `${steps.X.branches.B}` names a branch of parallel step X.
    fn check_fan_out_ref(
        &self,
        var: &crate::template::VarRef,
        text: &str,
        what: &str,
        name: &str,
        field: &str,
        kind: &str,
    ) -> Option<(String, String)> {
        const FAN_OUT_FIELDS: [&str; 6] = [
            "results",
            "succeeded",
            "failed",
            "cancelled",
            "total",
            "branches",
        ];
        if !FAN_OUT_FIELDS.contains(&field) {
            return None;
        }
        if kind != "for_each" && kind != "parallel" {
            return Some((
                format!(
                    "{what} uses `{text}`, but step `{name}` is a {kind} step: only `for_each` and `parallel` steps have `{field}`"
                ),
                "use a field of its result such as `output`, `json`, `status` or `exit_code`"
                    .into(),
            ));
        }
        if field != "branches" {
            return None;
        }
        let branches: Vec<&str> = match self.workflow.find_step(name).map(|s| &s.kind) {
            Some(StepKind::Parallel { branches, .. }) => {
                branches.iter().map(|b| b.name.as_str()).collect()
            }
            _ => {
                return Some((
                    format!(
                        "{what} uses `{text}`, but step `{name}` is a for_each: only `parallel` steps have `branches`"
                    ),
                    format!("use `${{steps.{name}.results.<index>}}` for its items"),
                ));
            }
        };
        let branch = var.segments.get(3)?;
        if branches.contains(&branch.as_str()) {
            return None;
        }
        let hint = match did_you_mean(branch, branches.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("its branches: {}", branches.join(", ")),
        };
        Some((
            format!("{what} uses `{text}`, but parallel step `{name}` has no branch `{branch}`"),
            hint,
        ))
    }
}

/// What names are in scope at a point of the workflow.
#[derive(Debug, Clone, Default)]
struct Scope {
    /// `as:` names of the enclosing `for_each` steps, innermost last.
    loops: Vec<String>,
    provider_params: Vec<String>,
}

impl Scope {
    fn enter_loop(&self, var: &str) -> Scope {
        let mut scope = self.clone();
        scope.loops.push(var.to_string());
        scope
    }

    fn with_provider_params(&self, params: impl IntoIterator<Item = String>) -> Scope {
        let mut scope = self.clone();
        scope.provider_params.extend(params);
        scope
    }
}

// ---------------------------------------------------------------------------------------------
// Sub-workflows: loaded with their parent

/// Nesting deeper than this is refused at load time (a chain this long is a mistake, and
/// every level loads the files below it).
pub const MAX_WORKFLOW_DEPTH: usize = 16;

/// [`load_file_with`], keeping the text: a child run saves it in its RUN_ROOT,
/// and `with:` keys are checked against it.
pub fn load_with_text(path: &Path, options: &LoadOptions) -> Result<LoadedChild, LoadError> {
    let text = read_source(path)?;
    let workflow = load_str_with(path, &text, options)?;
    Ok(LoadedChild { workflow, text })
}

/// One `workflow:` step on the way to a file being loaded: the file it is in and its line.
#[derive(Debug, Clone)]
pub struct Link {
    /// The file, canonicalized (cycles are found by comparing these).
    pub canonical: PathBuf,
    /// The file as loaded, for messages.
    pub file: PathBuf,
    pub line: u32,
    pub step: String,
}

/// Loads the child workflow of every `workflow:` step of `workflow` (nested `for_each` bodies
/// included) and attaches it to the step. Problems of the parent's own lines go to `diags`;
/// the children's own problems are returned, each rendered from the child's text.
pub(crate) fn attach_children(
    workflow: &mut Workflow,
    workspace: &Path,
    options: &LoadOptions,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Diagnostic> {
    let file = workflow.path.clone();
    let canonical = file.canonicalize().unwrap_or_else(|_| file.clone());
    let mut children = Vec::new();
    let mut ctx = Attach {
        workspace,
        options,
        file: &file,
        canonical: &canonical,
        diags,
        children: &mut children,
    };
    ctx.steps(&mut workflow.steps);
    children
}

struct Attach<'a> {
    workspace: &'a Path,
    options: &'a LoadOptions,
    file: &'a Path,
    canonical: &'a Path,
    diags: &'a mut Vec<Diagnostic>,
    children: &'a mut Vec<Diagnostic>,
}

impl Attach<'_> {
    fn steps(&mut self, steps: &mut [Step]) {
        for step in steps {
            let name = step.name.clone();
            match &mut step.kind {
                StepKind::ForEach { steps, .. } => self.steps(steps),
                StepKind::Workflow(sub) => self.child(&name, sub),
                _ => {}
            }
        }
    }

    fn error(&mut self, sub: &SubWorkflow, message: String, hint: String) {
        let pos = Pos {
            line: sub.at.0,
            column: sub.at.1,
            offset: None,
        };
        self.diags.push(
            Diagnostic::error(self.file, pos, message)
                .with_hint(hint)
                .with_width(sub.path.chars().count()),
        );
    }

    fn child(&mut self, step: &str, sub: &mut SubWorkflow) {
        let what = format!("step `{step}`");
        let path = match orchestrate_base::fsutil::resolve_in_workspace(self.workspace, &sub.path) {
            Ok(path) => path,
            Err(err) => {
                self.error(
                    sub,
                    format!("`workflow` of {what}: {err}"),
                    "a child workflow is named relative to the workspace and must stay inside it"
                        .into(),
                );
                return;
            }
        };
        if !path.is_file() {
            self.error(
                sub,
                format!(
                    "{what} runs workflow `{}`, which is not a file in the workspace",
                    sub.path
                ),
                "create it, or fix the path (relative to the workspace, not to this file)".into(),
            );
            return;
        }
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        let mut chain = self.options.ancestors.clone();
        chain.push(Link {
            canonical: self.canonical.to_path_buf(),
            file: self.file.to_path_buf(),
            line: sub.at.0,
            step: step.to_string(),
        });
        if let Some(start) = chain.iter().position(|l| l.canonical == canonical) {
            let mut cycle: Vec<String> = chain[start..]
                .iter()
                .map(|l| {
                    format!(
                        "{}:{} (step `{}`)",
                        orchestrate_base::fsutil::relative(self.workspace, &l.file),
                        l.line,
                        l.step
                    )
                })
                .collect();
            cycle.push(orchestrate_base::fsutil::relative(self.workspace, &path));
            self.error(
                sub,
                format!("workflow cycle: {}", cycle.join(" -> ")),
                "a workflow may not run itself, directly or through its children: remove one `workflow:` step of the cycle".into(),
            );
            return;
        }
        if chain.len() > MAX_WORKFLOW_DEPTH {
            self.error(
                sub,
                format!(
                    "{what} nests workflows {} levels deep, more than the {MAX_WORKFLOW_DEPTH} allowed",
                    chain.len()
                ),
                "flatten the chain of `workflow:` steps".into(),
            );
            return;
        }
        let options = LoadOptions {
            default_provider: self.options.default_provider.clone(),
            workspace: Some(self.workspace.to_path_buf()),
            ancestors: chain,
        };
        match load_with_text(&path, &options) {
            Ok(child) => {
                self.check_with(sub, &what, &child.workflow, &child.text);
                sub.child = Some(std::sync::Arc::new(child));
            }
            Err(err) => self.failed_child(sub, &what, err),
        }
    }

    /// The parent's line says the child does not load; the child's problems follow it.
    fn failed_child(&mut self, sub: &SubWorkflow, what: &str, err: LoadError) {
        self.error(
            sub,
            format!(
                "{what} runs workflow `{}`, which has {} problem(s) (listed below)",
                sub.path,
                err.diagnostics.len()
            ),
            format!("fix {} first", sub.path),
        );
        let source: Option<std::sync::Arc<str>> =
            err.source_text.as_deref().map(std::sync::Arc::from);
        for mut d in err.diagnostics {
            if d.source.is_none() {
                d.source = source.clone();
            }
            self.children.push(d);
        }
    }

    /// The step's `with:` against the child's inputs. Every key the child's templates read
    /// needs a default there or a `with:` value (a child sees only those, so it would be
    /// undefined when it runs). Every `with:` key must be an input of the child: a key of its
    /// `context:` or one it reads as `${context.KEY}` (or `.context.KEY` in jq); one it never
    /// reads is a typo or a leftover, and would be dropped silently.
    fn check_with(&mut self, sub: &SubWorkflow, what: &str, child: &Workflow, text: &str) {
        for key in context_reads(child) {
            if child.context.contains_key(&key) || sub.with.iter().any(|input| input.key == key) {
                continue;
            }
            self.error(
                sub,
                format!(
                    "workflow `{}` reads `${{context.{key}}}`, which has no default under its `context:`, and {what} gives no `with.{key}`",
                    sub.path
                ),
                format!(
                    "add `with: {{{key}: ...}}` to {what}, or a default for `{key}` under `context:` in {} (a child does not see its parent's context)",
                    sub.path
                ),
            );
        }
        for input in &sub.with {
            let key = &input.key;
            if child.context.contains_key(key) || reads_context_key(text, key) {
                continue;
            }
            let declared: Vec<&str> = child.context.keys().map(String::as_str).collect();
            let hint = match did_you_mean(key, declared.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "declare it under `context:` in {} (with a default), or remove it",
                    sub.path
                ),
            };
            let pos = Pos {
                line: input.at.0,
                column: input.at.1,
                offset: None,
            };
            self.diags.push(
                Diagnostic::error(
                    self.file,
                    pos,
                    format!(
                        "`with.{key}` of {what}: workflow {} neither declares `{key}` under `context:` nor reads `${{context.{key}}}`",
                        sub.path
                    ),
                )
                .with_hint(hint)
                .with_width(key.chars().count()),
            );
        }
    }
}

/// The context keys a workflow's templates read (`${context.KEY...}`), sorted: the inputs it
/// cannot run without. jq conditions are not counted: a missing key is `null` there.
fn context_reads(workflow: &Workflow) -> Vec<String> {
    use crate::model::{Condition, EnqueueContent, Findings, Prompt};
    let mut templates: Vec<Template> = Vec::new();
    let json_strings = |value: &Json, out: &mut Vec<Template>| {
        crate::load::visit_strings(value, &mut |text| {
            if let Ok(t) = Template::parse(text) {
                out.push(t);
            }
        });
    };
    for provider in workflow.providers.values() {
        templates.extend(provider.command.iter().cloned());
    }
    templates.extend(workflow.env.iter().map(|(_, t)| t.clone()));
    templates.extend(workflow.outputs.iter().map(|(_, t)| t.clone()));
    for step in workflow.all_steps() {
        templates.extend(step.output_file.iter().cloned());
        templates.extend(step.env.iter().map(|(_, t)| t.clone()));
        if let Some(Condition::Equals { left, right } | Condition::NotEquals { left, right }) =
            &step.when
        {
            templates.extend([left.clone(), right.clone()]);
        }
        if let Some(converge) = &step.converge
            && let Findings::Pointer(t) = &converge.findings
        {
            templates.push(t.clone());
        }
        match &step.kind {
            StepKind::Command { argv } => templates.extend(argv.iter().cloned()),
            StepKind::Provider {
                params,
                input_file,
                command_override,
                ..
            } => {
                templates.extend(params.values().cloned());
                templates.extend(input_file.iter().cloned());
                templates.extend(command_override.iter().flatten().cloned());
            }
            StepKind::Agent(agent) => {
                let (Prompt::Text(t) | Prompt::File(t)) = &agent.prompt;
                templates.push(t.clone());
                templates.extend(agent.model.iter().cloned());
            }
            StepKind::Approval {
                message, artifacts, ..
            } => {
                templates.push(message.clone());
                templates.extend(artifacts.iter().cloned());
            }
            StepKind::Enqueue {
                role,
                content,
                name,
            } => {
                templates.push(role.clone());
                templates.extend(name.iter().cloned());
                match content {
                    EnqueueContent::Text(t) | EnqueueContent::File(t) => templates.push(t.clone()),
                    EnqueueContent::Json(value) => json_strings(value, &mut templates),
                }
            }
            StepKind::WaitFor { glob, .. } => templates.push(glob.clone()),
            StepKind::Workflow(sub) => {
                for input in &sub.with {
                    json_strings(&input.value, &mut templates);
                }
            }
            StepKind::ForEach { .. } | StepKind::Parallel { .. } => {}
        }
    }
    let mut keys: Vec<String> = templates
        .iter()
        .flat_map(Template::vars)
        .filter(|var| var.root() == "context")
        .filter_map(|var| var.segments.get(1).cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Whether the workflow text reads `context.KEY` anywhere (`${context.KEY...}`, jq's
/// `.context.KEY`).
fn reads_context_key(text: &str, key: &str) -> bool {
    let needle = format!("context.{key}");
    text.match_indices(&needle).any(|(at, _)| {
        let next = text[at + needle.len()..].chars().next();
        !next.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-')
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn context_keys_are_found_whole() {
        let text = "steps:\n  - name: A\n    command: [echo, \"${context.name}\"]\n    when: {jq: '.context.mode == 1'}\n";
        assert!(super::reads_context_key(text, "name"));
        assert!(super::reads_context_key(text, "mode"));
        assert!(!super::reads_context_key(text, "nam"));
        assert!(!super::reads_context_key(text, "names"));
    }

    #[test]
    fn context_reads_are_the_templates_not_comments_nor_jq() {
        let text = "# needs ${context.commented}\nenv:\n  A: \"${context.from_env}\"\nsteps:\n  - name: A\n    command: [echo, \"${context.b.c} $${context.lit}\"]\n    when: {jq: '.context.optional'}\n  - name: Loop\n    for_each:\n      items: [1]\n      steps:\n        - name: Inner\n          command: [echo, \"${context.inner}\"]\n";
        let workflow = super::load_str(std::path::Path::new("w.yaml"), text).unwrap();
        assert_eq!(super::context_reads(&workflow), ["b", "from_env", "inner"]);
    }
}
