//! Roles of the swarm: finding them in `agents/`, and where their queues live.
//!
//! Owns: the `agents/` directory convention and the mapping from a role name to its queue
//! layout (for a workflow's `enqueue` step in a workspace with no `agents/`, a role without a
//! file still has the default inbox `inbox/<role>`; people and scripts enqueue only to defined
//! roles), and the "no such role, did you mean" message. Does not parse role files (`load`
//! does) or run anything.

use std::path::{Path, PathBuf};

use crate::load::{self, LoadError};
use crate::model::{Role, Workflow};
use crate::queue::Layout;

pub fn agents_dir(workspace: &Path) -> PathBuf {
    workspace.join("agents")
}

/// Every `agents/*.yaml`, sorted by name, each with its workflow; all problems of all files.
pub fn load_all(workspace: &Path) -> Result<Vec<(Role, Workflow)>, Vec<LoadError>> {
    let dir = agents_dir(workspace);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect(),
        Err(err) => {
            return Err(vec![LoadError {
                path: dir.clone(),
                source_text: None,
                diagnostics: vec![
                    crate::diag::Diagnostic::error(
                        &dir,
                        crate::yaml::Pos::default(),
                        format!("cannot read the roles directory: {err}"),
                    )
                    .with_hint("create agents/<role>.yaml files, or run `orchestrate init`"),
                ],
            }]);
        }
    };
    files.sort();
    let mut roles = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match load::load_role_file(workspace, &file) {
            Ok(pair) => roles.push(pair),
            Err(mut errs) => errors.append(&mut errs),
        }
    }
    if errors.is_empty() {
        Ok(roles)
    } else {
        Err(errors)
    }
}

/// One role by name: `agents/<name>.yaml`. A name with no file is refused as an unknown role
/// (with the roles there are), not as an unreadable workflow.
pub fn load_one(workspace: &Path, name: &str) -> Result<(Role, Workflow), Vec<LoadError>> {
    let fail = |path: &Path, message: String| {
        vec![LoadError {
            path: path.to_path_buf(),
            source_text: None,
            diagnostics: vec![crate::diag::Diagnostic::error(
                path,
                crate::yaml::Pos::default(),
                message,
            )],
        }]
    };
    if let Err(reason) = crate::queue::check_id(name) {
        return Err(fail(
            Path::new(name),
            format!("`{name}` is not a role name: {reason}"),
        ));
    }
    let file = agents_dir(workspace).join(format!("{name}.yaml"));
    if !file.exists() {
        return Err(fail(&file, unknown_role(workspace, name)));
    }
    load::load_role_file(workspace, &file)
}

/// The message for a role with no `agents/<name>.yaml`: which file is missing, and the nearest
/// role there is ("did you mean") or the list of roles.
pub fn unknown_role(workspace: &Path, name: &str) -> String {
    let dir = agents_dir(workspace);
    let mut known: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    known.sort();
    let hint = if !dir.is_dir() {
        format!(
            "{} has no agents/ directory; create agents/{name}.yaml or run `orchestrate init`",
            workspace.display()
        )
    } else if let Some(near) = crate::diag::did_you_mean(name, known.iter().map(String::as_str)) {
        format!("did you mean `{near}`?")
    } else if known.is_empty() {
        format!("agents/ has no roles; create agents/{name}.yaml")
    } else {
        format!("roles: {}", known.join(", "))
    };
    format!("there is no role `{name}` (no agents/{name}.yaml); {hint}")
}

/// The queue layout of a role that must be defined (`agents/<name>.yaml`): what people and
/// scripts enqueue to, so that a misspelled role, or the wrong directory, fails instead of
/// filling an inbox nobody reads.
pub fn layout_of_defined(workspace: &Path, name: &str) -> Result<Layout, String> {
    crate::queue::check_id(name)
        .map_err(|reason| format!("`{name}` is not a role name: {reason}"))?;
    if !agents_dir(workspace).join(format!("{name}.yaml")).is_file() {
        return Err(unknown_role(workspace, name));
    }
    layout_for(workspace, name)
}

/// The queue layout of role `name`: its file's `inbox:` if it has one, else `inbox/<name>`.
/// When the workspace has an `agents/` directory, the role must be defined there, so that a
/// misspelled role fails instead of filling an inbox nobody reads.
pub fn layout_for(workspace: &Path, name: &str) -> Result<Layout, String> {
    crate::queue::check_id(name)
        .map_err(|reason| format!("`{name}` is not a role name: {reason}"))?;
    let dir = agents_dir(workspace);
    let file = dir.join(format!("{name}.yaml"));
    if !dir.is_dir() {
        return Ok(Layout::new(
            workspace,
            name,
            Path::new(&format!("inbox/{name}")),
        ));
    }
    if !file.is_file() {
        return Err(unknown_role(workspace, name));
    }
    let inbox = inbox_of(&file).unwrap_or_else(|| format!("inbox/{name}"));
    let path = crate::fsutil::resolve_in_workspace(workspace, &inbox)
        .map_err(|e| format!("role `{name}` inbox: {e}"))?;
    let rel = path.strip_prefix(workspace).unwrap_or(&path).to_path_buf();
    Ok(Layout::new(workspace, name, &rel))
}

/// The `inbox:` of a role file, read without validating the rest (enqueue must not fail
/// because of an unrelated problem in the receiving role).
fn inbox_of(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let root = crate::yaml::parse(&text).ok()?;
    let crate::yaml::Value::Map(entries) = &root.value else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| k.scalar_text().as_deref() == Some("inbox"))
        .and_then(|(_, v)| v.scalar_text())
}

/// The layout for a loaded role.
pub fn layout(workspace: &Path, role: &Role) -> Layout {
    Layout::new(workspace, &role.name, Path::new(&role.inbox))
}
