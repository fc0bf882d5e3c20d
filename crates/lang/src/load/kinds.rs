//! What a step does: which action it names (exactly one of `command`, `prompt`, `provider`,
//! `for_each`, `parallel`, `wait_for`, `enqueue`, `approval`, `workflow`) and that action's
//! body. Does not read the fields every step shares (`steps`) nor load child files
//! (`children`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value as Json;

use crate::diag::did_you_mean;
use crate::model::{
    AgentStep, Branch, EnqueueContent, FanOut, Items, Join, Phase, Prompt, StepKind,
};
use crate::template::Template;
use crate::yaml::{Node, Value};

use super::fields::{Fields, Loader};
use super::vars::{RESERVED_ROOTS, parse_pointer, visit_strings};

/// The fields of `approval:`.
pub(super) const APPROVAL_FIELDS: &[&str] = &["message", "artifacts", "timeout_sec"];
/// The fields of `enqueue:`.
pub(super) const ENQUEUE_FIELDS: &[&str] = &["role", "text", "file", "json", "name"];
/// The fields of `for_each:`.
pub(super) const FOR_EACH_FIELDS: &[&str] =
    &["items", "items_from", "as", "steps", "max_parallel", "join"];
/// The fields of `parallel:`.
pub(super) const PARALLEL_FIELDS: &[&str] = &["branches", "max_parallel", "join"];
/// The fields of `wait_for:`.
pub(super) const WAIT_FOR_FIELDS: &[&str] = &["glob", "timeout_sec", "poll_ms", "min_count"];

impl Loader {
    pub(super) fn step_kind(
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
            "provider" | "command_override" => self.provider(fields, what),
            "for_each" => self.for_each(fields.get("for_each")?, what),
            "parallel" => self.parallel(fields.get("parallel")?, what),
            "enqueue" => self.enqueue(fields.get("enqueue")?, what),
            "approval" => self.approval(fields.get("approval")?, what),
            "workflow" => self.sub_workflow(fields, what),
            "prompt" | "prompt_file" => self.agent(fields, what),
            _ => self.wait_for(fields.get("wait_for")?, what),
        }
    }

    /// A provider step (`provider`, `command_override`, or only `input_file`): the provider's
    /// parameters, its prompt file and the argv that replaces the provider's.
    fn provider(&mut self, fields: &Fields, what: &str) -> Option<StepKind> {
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

    pub(super) fn agent(&mut self, fields: &Fields, what: &str) -> Option<StepKind> {
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

    pub(super) fn approval(&mut self, node: &Node, what: &str) -> Option<StepKind> {
        let ctx = format!("`approval` of {what}");
        let fields = self.fields(node, APPROVAL_FIELDS, &ctx)?;
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

    pub(super) fn enqueue(&mut self, node: &Node, what: &str) -> Option<StepKind> {
        let ctx = format!("`enqueue` of {what}");
        let fields = self.fields(node, ENQUEUE_FIELDS, &ctx)?;
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

    pub(super) fn for_each(&mut self, node: &Node, what: &str) -> Option<StepKind> {
        let fields = self.fields(node, FOR_EACH_FIELDS, &format!("`for_each` of {what}"))?;
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
    pub(super) fn fan(
        &mut self,
        fields: &Fields,
        what: &str,
        default_parallel: u32,
    ) -> Option<FanOut> {
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
    pub(super) fn parallel(&mut self, node: &Node, what: &str) -> Option<StepKind> {
        let what_p = format!("`parallel` of {what}");
        let fields = self.fields(node, PARALLEL_FIELDS, &what_p)?;
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

    pub(super) fn wait_for(&mut self, node: &Node, what: &str) -> Option<StepKind> {
        let fields = self.fields(node, WAIT_FOR_FIELDS, &format!("`wait_for` of {what}"))?;
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
}
