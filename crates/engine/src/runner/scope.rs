//! Template scope: what `${...}` resolves to at one point of a run (`run`, `context`, `steps`,
//! `task`, `feedback`, loop variables), provider placeholders over it, and `when` conditions.
//!
//! Does not parse or render templates (`orchestrate_lang::template`).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{LoopFrame, Runner};
use orchestrate_lang::model::Condition;
use orchestrate_lang::template::{self, Lookup, Template, Undefined, VarRef};

/// Renders every string of a JSON value as a template (`enqueue.json`).
pub(super) fn render_json(value: &Value, scope: &dyn Lookup) -> Result<Value, String> {
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

/// Variable lookup at one point of the run.
pub(super) struct Scope<'a> {
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
                "branch": self.runner.config.branch,
            },
            "context": state.context,
            // Results as templates see them: JSON, converted here.
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
                Some("branch") => match &self.runner.config.branch {
                    Some(branch) => Some(json!(branch)),
                    None => {
                        return Err(Undefined::new(
                            var,
                            "`run.branch` exists only when the run works in a git worktree (`isolation: worktree`)",
                        ));
                    }
                },
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
                let result = result.to_value();
                let found = template::walk(&result, &rest[1..]).cloned();
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
pub(super) struct ProviderScope<'a> {
    pub(super) values: &'a HashMap<String, String>,
    pub(super) base: &'a dyn Lookup,
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

impl Runner {
    pub(super) fn scope<'a>(&'a self, loops: &'a [LoopFrame]) -> Scope<'a> {
        Scope {
            runner: self,
            loops,
        }
    }

    pub(super) fn condition(
        &self,
        condition: &Condition,
        loops: &[LoopFrame],
    ) -> Result<bool, String> {
        let scope = self.scope(loops);
        let render = |t: &Template| t.render(&scope).map_err(|e| format!("in `when`: {e}"));
        match condition {
            Condition::Equals { left, right } => Ok(render(left)? == render(right)?),
            Condition::NotEquals { left, right } => Ok(render(left)? != render(right)?),
            Condition::Jq(expr) => orchestrate_lang::jq::eval_bool(expr, &scope.document())
                .map_err(|e| format!("in `when.jq`: {e}")),
        }
    }

    /// `${run.workspace}`: where the steps work (the checkout of an isolated run).
    fn run_workspace(&self) -> String {
        match &self.config.checkout {
            Some(dir) => dir.display().to_string(),
            None => self.state.workspace.clone(),
        }
    }
}
