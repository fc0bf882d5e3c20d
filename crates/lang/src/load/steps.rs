//! One step: its name, the fields every kind of step may have (`output_capture`, `when`, `on`,
//! `retry`, timeouts, `env`, `secrets`, `converge`, `output_schema`, ...) and which of them
//! have no meaning on its kind. Does not read what the step does (`kinds`) nor check it
//! against the rest of the workflow (`checks`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diag::did_you_mean;
use crate::model::{
    Capture, Condition, Converge, Findings, Retry, Step, StepKind, Target, Transitions,
};
use crate::template::Part;
use crate::yaml::{self, Node, Value};

use super::fields::{Fields, Loader, map_entries};

pub(super) const STEP_FIELDS: &[&str] = &[
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

/// The fields of `when:`: exactly one of them.
pub(super) const CONDITION_FIELDS: &[&str] = &["equals", "not_equals", "jq"];
/// The fields of `when: {equals: ...}` and `when: {not_equals: ...}`.
pub(super) const COMPARE_FIELDS: &[&str] = &["left", "right"];
/// The outcomes `on:` maps to a `goto`.
pub(super) const TRANSITION_FIELDS: &[&str] =
    &["success", "failure", "always", "rejected", "invalid"];
/// The fields of one `on.<outcome>`.
pub(super) const GOTO_FIELDS: &[&str] = &["goto"];
/// The fields of `retry:` as a mapping.
pub(super) const RETRY_FIELDS: &[&str] = &["max_attempts", "delay_sec", "backoff", "on_exit_codes"];
/// The fields of `converge:`.
pub(super) const CONVERGE_FIELDS: &[&str] = &["findings", "rounds", "on_stall"];

/// Names a step may not take: they are goto keywords.
const RESERVED_STEP_NAMES: &[&str] = &["_end"];

impl Loader {
    pub(super) fn step(&mut self, node: &Node) -> Option<Step> {
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
        let name = self.step_name(node, &fields)?;
        let what = format!("step `{name}`");
        let kind = self.step_kind(node, &fields, &what, misspelled)?;

        let capture = self.capture(&fields, &what);
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
        self.check_idle_timeout(&fields, &kind, &what);
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
        let at = self.field_positions(node);
        let rejected_when = fields
            .value("rejected_when")
            .and_then(|n| self.string(n, "`rejected_when`"));
        let converge = fields
            .value("converge")
            .and_then(|n| self.converge(n, &what));
        let output_schema = fields
            .value("output_schema")
            .and_then(|n| self.output_schema(n, &what));
        self.check_output_schema(&fields, &kind, capture, &what);
        // An agent step with a schema answers in JSON.
        let capture = if output_schema.is_some() && matches!(kind, StepKind::Agent(_)) {
            Capture::Json
        } else {
            capture
        };
        let agent = fields
            .value("agent")
            .and_then(|n| self.string(n, "`agent`"));
        self.check_meaningless(&fields, &kind, &what);
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

    /// The step's `name`: letters, digits, `_` and `-`, not a goto keyword.
    fn step_name(&mut self, node: &Node, fields: &Fields) -> Option<String> {
        match fields.value("name") {
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
                Some(name)
            }
            None => {
                self.error(node.pos, "a step has no `name`").hint =
                    Some("every step needs a unique `name`".into());
                None
            }
        }
    }

    /// `output_capture: text | lines | json` (text when absent or wrong).
    fn capture(&mut self, fields: &Fields, what: &str) -> Capture {
        match fields.value("output_capture") {
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
        }
    }

    /// `idle_timeout_sec` limits a process's silence: only steps that run one have it.
    fn check_idle_timeout(&mut self, fields: &Fields, kind: &StepKind, what: &str) {
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
    }

    /// Where the fields that later checks point at are: `line, column` by dotted path.
    fn field_positions(&self, node: &Node) -> BTreeMap<&'static str, (u32, u32)> {
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
        at
    }

    /// `output_schema` checks JSON output, so the step must capture JSON (agent steps answer in
    /// it); `on.invalid` is taken only when a schema is there.
    fn check_output_schema(
        &mut self,
        fields: &Fields,
        kind: &StepKind,
        capture: Capture,
        what: &str,
    ) {
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
    }

    /// The fields that mean nothing on the step's kind: what a `workflow:` step leaves to its
    /// child, and `output_file` on steps that write no output of their own.
    fn check_meaningless(&mut self, fields: &Fields, kind: &StepKind, what: &str) {
        if let StepKind::Workflow(_) = kind {
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
        ) = (fields.key_pos("output_file"), kind)
        {
            self.error(
                pos,
                format!(
                    "`output_file` has no meaning on a {} step ({what})",
                    kind.label()
                ),
            );
        }
    }

    fn condition(&mut self, node: &Node, what: &str) -> Option<Condition> {
        let fields = self.fields(node, CONDITION_FIELDS, &format!("`when` of {what}"))?;
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
            COMPARE_FIELDS,
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

    fn transitions(&mut self, node: &Node, what: &str) -> Transitions {
        let mut out = Transitions::default();
        let Some(fields) = self.fields(node, TRANSITION_FIELDS, &format!("`on` of {what}")) else {
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
            let Some(f) = self.fields(n, GOTO_FIELDS, &format!("`on.{key}` of {what}")) else {
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

    pub(super) fn retry(&mut self, node: &Node, what: &str) -> Retry {
        let mut retry = Retry {
            explicit: true,
            ..Retry::default()
        };
        if let Value::Int(_) = node.value {
            retry.max_attempts = self.count(node, "`retry`", 1, 100).unwrap_or(1);
            return retry;
        }
        let Some(fields) = self.fields(node, RETRY_FIELDS, &format!("`retry` of {what}")) else {
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

    pub(super) fn converge(&mut self, node: &Node, what: &str) -> Option<Converge> {
        let fields = self.fields(node, CONVERGE_FIELDS, &format!("`converge` of {what}"))?;
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

    /// `output_schema:` a JSON Schema inline (a mapping) or a workspace file (`.json`, `.yaml`).
    pub(super) fn output_schema(
        &mut self,
        node: &Node,
        what: &str,
    ) -> Option<crate::model::OutputSchema> {
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
}
