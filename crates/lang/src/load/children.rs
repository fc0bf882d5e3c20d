//! Sub-workflows loaded with their parent: each `workflow:` step's child file (contained in
//! the workspace, no cycles between files, not nested too deep), its problems reported at the
//! child's lines, and the step's `with:` keys against the inputs the child reads. Does not
//! load a file itself: it is handed the loader (`pipeline`'s, which calls in here), so the
//! recursion goes through a parameter rather than a circle of modules. Does not run anything
//! (`subflow` runs child runs).

use std::path::Path;

use serde_json::Value as Json;

use crate::diag::{Diagnostic, did_you_mean};
use crate::model::{LoadedChild, Step, StepKind, SubWorkflow, Workflow};
use crate::template::Template;
use crate::yaml::Pos;

use super::options::{Link, LoadOptions};
use super::source::LoadError;
use super::vars::visit_strings;

/// Nesting deeper than this is refused at load time (a chain this long is a mistake, and
/// every level loads the files below it).
pub(crate) const MAX_WORKFLOW_DEPTH: usize = 16;

/// Loads one child workflow file with its text.
type LoadChild = fn(&Path, &LoadOptions) -> Result<LoadedChild, LoadError>;

/// Loads the child workflow of every `workflow:` step of `workflow` (nested `for_each` bodies
/// included) and attaches it to the step. Problems of the parent's own lines go to `diags`;
/// the children's own problems are returned, each rendered from the child's text. `load`
/// loads one child file, its own children included: `pipeline::load_with_text`, passed in
/// because loading recurses through here.
pub(super) fn attach(
    workflow: &mut Workflow,
    workspace: &Path,
    options: &LoadOptions,
    diags: &mut Vec<Diagnostic>,
    load: LoadChild,
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
        load,
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
    load: LoadChild,
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
        match (self.load)(&path, &options) {
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
        visit_strings(value, &mut |text| {
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
        let workflow = crate::load::load_str(std::path::Path::new("w.yaml"), text).unwrap();
        assert_eq!(super::context_reads(&workflow), ["b", "from_env", "inner"]);
    }
}
