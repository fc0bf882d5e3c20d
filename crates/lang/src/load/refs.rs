//! One template's variables against what is in scope: the namespaces (`run`, `loop`,
//! `context`, `steps`, `task`, `feedback`, loop and provider names), and `${steps.X.FIELD...}`
//! against step X (its capture, its kind, a child's declared outputs, its `output_schema`).
//! Does not walk the workflow (`checks` does, and calls in here).

use crate::diag::did_you_mean;
use crate::model::{Capture, StepKind};
use crate::template::{Part, Template};

use super::checks::{Checker, Scope};
use super::vars::{RUN_FIELDS, STEP_RESULT_FIELDS, STRUCTURED_FIELDS, TASK_FIELDS};

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

impl Checker<'_> {
    pub(super) fn check_template(
        &mut self,
        template: &Template,
        scope: &Scope,
        line: u32,
        what: &str,
    ) {
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

    pub(super) fn check_var(
        &mut self,
        var: &crate::template::VarRef,
        scope: &Scope,
        line: u32,
        what: &str,
    ) {
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
            ("outputs", _) if var.segments.len() > 3 => self.check_output_ref(var, text, what, name),
            ("json", Capture::Json) if var.segments.len() > 3 => {
                self.check_schema_ref(var, text, what, name)
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

    /// `${steps.X.outputs.KEY}`: the child workflow run by step X declares output KEY.
    fn check_output_ref(
        &self,
        var: &crate::template::VarRef,
        text: &str,
        what: &str,
        name: &str,
    ) -> Option<(String, String)> {
        let workflow = self.workflow;
        let step = workflow.all_steps().into_iter().find(|s| s.name == *name)?;
        let StepKind::Workflow(sub) = &step.kind else {
            return None;
        };
        let child = sub.child.as_ref()?;
        let wanted = &var.segments[3];
        let declared: Vec<&str> = child
            .workflow
            .outputs
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
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

    /// `${steps.X.json.PATH}` on a step with an `output_schema`: the schema allows PATH.
    fn check_schema_ref(
        &self,
        var: &crate::template::VarRef,
        text: &str,
        what: &str,
        name: &str,
    ) -> Option<(String, String)> {
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
