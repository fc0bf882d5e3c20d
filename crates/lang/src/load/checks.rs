//! Whole-workflow checks, made once every step is read and the children are attached: unique
//! step names, `goto` targets, jq syntax, provider parameters, `resume` targets, fan-out bodies,
//! `converge`, pointers; and the walk that hands each template to `refs`. Does not read YAML
//! (the model is complete) nor check a variable itself (`refs`).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::diag::{Diagnostic, did_you_mean};
use crate::model::{
    AgentStep, Capture, Condition, Converge, EnqueueContent, Findings, Items, Pointer, Prompt,
    Step, StepKind, Target, Workflow,
};
use crate::template::Template;
use crate::yaml::Pos;

use super::fields::Loader;
use super::options::LoadOptions;
use super::vars::visit_strings;

/// Semantic checks over the whole workflow: names, gotos, variables, pointers, jq.
pub(super) struct Checker<'a> {
    pub(super) loader: &'a mut Loader,
    pub(super) workflow: &'a Workflow,
    pub(super) options: &'a LoadOptions,
    /// Step name -> (capture mode, kind label, line).
    pub(super) steps: HashMap<String, (Capture, &'static str)>,
    pub(super) text_positions: HashMap<String, u32>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(
        loader: &'a mut Loader,
        workflow: &'a Workflow,
        options: &'a LoadOptions,
    ) -> Self {
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

    pub(super) fn at(&mut self, line: u32, message: impl Into<String>) -> &mut Diagnostic {
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

    pub(super) fn check(mut self) {
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
            self.check_step(step, &local, scope);
        }
    }

    /// One step of a list whose names are `local`: its gotos, its own fields, then what its
    /// kind does.
    fn check_step(&mut self, step: &Step, local: &HashSet<&str>, scope: &Scope) {
        let what = format!("step `{}`", step.name);
        self.check_gotos(step, local, &what);
        self.check_step_fields(step, local, scope, &what);
        self.check_kind(step, scope, &what);
    }

    /// `on.<outcome>: {goto: X}` names a step of the same list (`local`).
    fn check_gotos(&mut self, step: &Step, local: &HashSet<&str>, what: &str) {
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
    }

    /// The fields every kind of step may have: `output_file`, `env`, `when`, `rejected_when`,
    /// `converge` and `on.rejected`.
    fn check_step_fields(&mut self, step: &Step, local: &HashSet<&str>, scope: &Scope, what: &str) {
        if let Some(t) = &step.output_file {
            self.check_template(t, scope, step.line, what);
        }
        for (_, t) in &step.env {
            self.check_template(t, scope, step.line, what);
        }
        match &step.when {
            Some(Condition::Equals { left, right } | Condition::NotEquals { left, right }) => {
                self.check_template(left, scope, step.line, what);
                self.check_template(right, scope, step.line, what);
            }
            Some(Condition::Jq(expr)) => {
                if let Err(err) = crate::jq::check(expr) {
                    let shift = match &err {
                        crate::jq::JqError::Compile {
                            offset: Some(o), ..
                        } => expr.get(..*o).map(|p| p.chars().count()).unwrap_or(0),
                        _ => 0,
                    };
                    let d = self.at_field(step, "when.jq", format!("`when.jq` of {what}: {err}"));
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
            self.check_converge(step, converge, local, scope, what);
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
                .hint =
                Some("only `approval` steps and steps with `rejected_when` can be rejected".into());
        }
    }

    /// What the step's kind does: its templates, and what each kind needs of the rest.
    fn check_kind(&mut self, step: &Step, scope: &Scope, what: &str) {
        match &step.kind {
            StepKind::Agent(agent) => self.check_agent(step, agent, scope, what),
            StepKind::Approval {
                message, artifacts, ..
            } => {
                self.check_template(message, scope, step.line, what);
                for t in artifacts {
                    self.check_template(t, scope, step.line, what);
                }
            }
            StepKind::Command { argv } => {
                for t in argv {
                    self.check_template(t, scope, step.line, what);
                }
            }
            StepKind::Provider {
                provider,
                params,
                input_file,
                command_override,
            } => {
                for t in params.values() {
                    self.check_template(t, scope, step.line, what);
                }
                if let Some(t) = input_file {
                    self.check_template(t, scope, step.line, what);
                }
                match command_override {
                    Some(argv) => {
                        for t in argv {
                            let provider_scope = scope.with_provider_params(
                                params.keys().cloned().chain(["PROMPT".to_string()]),
                            );
                            self.check_template(t, &provider_scope, step.line, what);
                        }
                    }
                    None => self.check_provider_params(step, provider, params, input_file, what),
                }
            }
            StepKind::ForEach {
                items,
                var,
                steps,
                fan,
            } => {
                if let Items::From(pointer) = items {
                    self.check_pointer(pointer, step, what);
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
                self.check_template(glob, scope, step.line, what);
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
                self.check_template(role, scope, step.line, what);
                if let Some(name) = name {
                    self.check_template(name, scope, step.line, what);
                }
                match content {
                    EnqueueContent::Text(t) | EnqueueContent::File(t) => {
                        self.check_template(t, scope, step.line, what)
                    }
                    EnqueueContent::Json(value) => {
                        let mut templates = Vec::new();
                        visit_strings(value, &mut |text| {
                            if let Ok(t) = Template::parse(text) {
                                templates.push(t);
                            }
                        });
                        for t in &templates {
                            self.check_template(t, scope, step.line, what);
                        }
                    }
                }
            }
        }
    }

    /// An agent step's prompt and model, and the step it `resume`s.
    fn check_agent(&mut self, step: &Step, agent: &AgentStep, scope: &Scope, what: &str) {
        let (Prompt::Text(t) | Prompt::File(t)) = &agent.prompt;
        self.check_template(t, scope, step.line, what);
        if let Some(t) = &agent.model {
            self.check_template(t, scope, step.line, what);
        }
        if let Some(target) = &agent.resume {
            match self.workflow.find_step(target) {
                Some(s) if matches!(s.kind, StepKind::Agent(_)) => {}
                Some(_) => {
                    self.at(
                        step.line,
                        format!("{what} resumes `{target}`, which is not an agent step"),
                    )
                    .hint = Some("`resume` continues the session of an earlier agent step".into());
                }
                None => {
                    self.at(
                        step.line,
                        format!("{what} resumes `{target}`, but there is no step `{target}`"),
                    );
                }
            }
        }
    }

    /// A provider step without `command_override`: its provider exists (the step's, or the
    /// role's runtime) and every parameter of the provider's template has a value.
    fn check_provider_params(
        &mut self,
        step: &Step,
        provider: &Option<String>,
        params: &BTreeMap<String, Template>,
        input_file: &Option<Template>,
        what: &str,
    ) {
        let template_params = |t: &Template| {
            t.vars()
                .filter(|v| v.segments.len() == 1)
                .map(|v| v.root().to_string())
                .collect::<Vec<_>>()
        };
        let Some(name) = provider
            .clone()
            .or_else(|| self.options.default_provider.clone())
        else {
            self.at(step.line, format!("{what} has no `provider`"))
                    .hint = Some("set `provider: claude` (or gemini, codex, or one under `providers:`); a role's `runtime:` supplies it when the workflow runs for a role".into());
            return;
        };
        let Some(template) = self.workflow.providers.get(&name) else {
            let names: Vec<&str> = self.workflow.providers.keys().map(String::as_str).collect();
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
            return;
        };
        for arg in &template.command {
            for param in template_params(arg) {
                if param == "PROMPT" {
                    if input_file.is_none() {
                        self.at_field(step, "provider", format!("{what}: provider `{name}` needs a prompt (`${{PROMPT}}`) but the step has no `input_file`"))
                                .hint = Some("add `input_file: prompts/<file>.md`, or use `command_override`".into());
                    }
                } else if !params.contains_key(&param) && !template.defaults.contains_key(&param) {
                    self.at_field(step, "provider", format!("{what}: provider `{name}` uses `${{{param}}}`, but neither `provider_params` nor the provider's `defaults` give `{param}`"))
                            .hint = Some(format!("add `provider_params: {{{param}: ...}}`"));
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
}

/// What names are in scope at a point of the workflow.
#[derive(Debug, Clone, Default)]
pub(super) struct Scope {
    /// `as:` names of the enclosing `for_each` steps, innermost last.
    pub(super) loops: Vec<String>,
    pub(super) provider_params: Vec<String>,
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
