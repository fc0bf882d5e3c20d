//! Role files (`agents/<role>.yaml`): their fields, the workspace paths they name, and the
//! role's workflow loaded with them (its steps checked against the role's `capabilities`).
//! Does not run a role (the swarm does) nor load the workflow itself (`pipeline`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::{Diagnostic, did_you_mean};
use crate::model::{Role, Workflow};
use crate::yaml::{Node, Pos, Value};

use super::fields::{Fields, Loader, map_entries};
use super::options::LoadOptions;
use super::pipeline::load_file_with;
use super::source::{LoadError, failed, read_source, start};

pub(super) const ROLE_FIELDS: &[&str] = &[
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
    "machines",
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

impl Loader {
    pub(super) fn role(&mut self, root: &Node) -> Option<Role> {
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
        let machines = fields
            .value("machines")
            .and_then(|n| self.labels(n, "`machines`"))
            .unwrap_or_default();
        Some(Role {
            machines,
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

    /// A list of machine labels (`machines: [gpu]`, `machine_labels: [gpu, cuda]`): names of
    /// letters, digits, `.`, `_` and `-`.
    pub(super) fn labels(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        let Value::Seq(items) = &node.value else {
            self.error(node.pos, format!("{what} must be a list of machine labels"))
                .hint = Some("for example `[gpu]`".into());
            return None;
        };
        let mut out = Vec::new();
        for item in items {
            let label = self.string(item, "a machine label")?;
            match orchestrate_base::ids::check_id(&label) {
                Ok(()) if !out.contains(&label) => out.push(label),
                Ok(()) => {}
                Err(reason) => {
                    self.error(
                        item.pos,
                        format!("`{label}` is not a valid machine label: {reason}"),
                    );
                }
            }
        }
        Some(out)
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
}
