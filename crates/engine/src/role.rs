//! Roles of the swarm: finding them in `agents/`, and where their queues live.
//!
//! Owns: the `agents/` directory convention and the mapping from a role name to its queue
//! layout (for a workflow's `enqueue` step in a workspace with no `agents/`, a role without a
//! file still has the default inbox `inbox/<role>`; people and scripts enqueue only to defined
//! roles), and the "no such role, did you mean" message. Does not parse role files (`load`
//! does) or run anything.

use std::path::{Path, PathBuf};

use orchestrate_lang::load::{self, LoadError};
use orchestrate_lang::model::{Role, Workflow};
use orchestrate_queue::queue::{self, Layout, TaskInfo};

/// Where role definitions live: `WORKSPACE/agents`.
pub fn agents_dir(workspace: &Path) -> PathBuf {
    workspace.join("agents")
}

/// The names of the roles in `agents/` (`<name>.yaml`), sorted.
pub fn names(workspace: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(agents_dir(workspace))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".yaml").map(str::to_string)
        })
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    names
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
                    orchestrate_lang::diag::Diagnostic::error(
                        &dir,
                        orchestrate_lang::yaml::Pos::default(),
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
            diagnostics: vec![orchestrate_lang::diag::Diagnostic::error(
                path,
                orchestrate_lang::yaml::Pos::default(),
                message,
            )],
        }]
    };
    if let Err(reason) = orchestrate_base::ids::check_id(name) {
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
    } else if let Some(near) =
        orchestrate_lang::diag::did_you_mean(name, known.iter().map(String::as_str))
    {
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
    orchestrate_base::ids::check_id(name)
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
    orchestrate_base::ids::check_id(name)
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
    let path = orchestrate_base::fsutil::resolve_in_workspace(workspace, &inbox)
        .map_err(|e| format!("role `{name}` inbox: {e}"))?;
    let rel = path.strip_prefix(workspace).unwrap_or(&path).to_path_buf();
    Ok(Layout::new(workspace, name, &rel))
}

/// Every role the workspace knows: agents/*.yaml, plus inbox directories without a role file.
pub fn known_layouts(workspace: &Path) -> Vec<Layout> {
    let mut names: Vec<String> = Vec::new();
    let mut layouts = Vec::new();
    if let Ok(entries) = std::fs::read_dir(agents_dir(workspace)) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "yaml" || x == "yml")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
                && let Ok(layout) = layout_for(workspace, stem)
            {
                names.push(stem.to_string());
                layouts.push(layout);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(workspace.join("inbox")) {
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str()
                && entry.path().is_dir()
                && !names.iter().any(|n| n == name)
                && orchestrate_base::ids::check_id(name).is_ok()
            {
                names.push(name.to_string());
                layouts.push(Layout::new(
                    workspace,
                    name,
                    &PathBuf::from("inbox").join(name),
                ));
            }
        }
    }
    layouts.sort_by(|a, b| a.role.cmp(&b.role));
    layouts
}

/// Every task of every role the workspace knows, in every state.
pub(crate) fn all_tasks(workspace: &Path) -> Vec<TaskInfo> {
    known_layouts(workspace)
        .iter()
        .flat_map(queue::list)
        .collect()
}

/// Finds a task by id (or by its directory name / path).
pub fn find_tasks(workspace: &Path, needle: &str) -> Vec<TaskInfo> {
    let needle = needle.trim_end_matches('/');
    all_tasks(workspace)
        .into_iter()
        .filter(|t| t.id == needle || t.path == needle || t.path.rsplit('/').next() == Some(needle))
        .collect()
}

/// The `inbox:` of a role file, read without validating the rest (enqueue must not fail
/// because of an unrelated problem in the receiving role).
fn inbox_of(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let root = orchestrate_lang::yaml::parse(&text).ok()?;
    let orchestrate_lang::yaml::Value::Map(entries) = &root.value else {
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

/// One loaded version of a role: what a role process runs its next tasks on.
#[derive(Debug, Clone)]
pub struct Version {
    /// The role as its file defines it.
    pub role: Role,
    /// The role's workflow, loaded and validated.
    pub workflow: Workflow,
    /// The workflow file's text, as loaded.
    pub workflow_text: String,
    /// `workflow_hash` in a task's `status.json`: see [`workflow_hash`].
    pub hash: String,
    /// What the files looked like when this version was loaded, to notice edits cheaply.
    pub stamp: Stamp,
}

impl Version {
    /// Loads `agents/<name>.yaml` and its workflow (sub-workflows included), validated.
    pub fn load(workspace: &Path, name: &str) -> Result<Version, Vec<LoadError>> {
        // Stamped before reading: an edit racing with the load is seen by the next check.
        let before = Stamp::of(&[agents_dir(workspace).join(format!("{name}.yaml"))]);
        let (role, workflow) = load_one(workspace, name)?;
        let workflow_path = workspace.join(&role.workflow);
        let workflow_text = std::fs::read_to_string(&workflow_path).unwrap_or_default();
        let mut files = vec![role.path.clone(), workflow_path];
        let mut texts = vec![workflow_text.clone()];
        children(workspace, &workflow, &mut files, &mut texts);
        let mut stamp = Stamp::of(&files);
        // The role file as it was before the load: if it changed meanwhile, the stamps differ.
        if let (Some(first), Some(old)) = (stamp.0.first_mut(), before.0.into_iter().next()) {
            *first = old;
        }
        Ok(Version {
            hash: workflow_hash(&texts),
            role,
            workflow,
            workflow_text,
            stamp,
        })
    }

    /// The hash's first 12 hex digits, for messages.
    pub fn short_hash(&self) -> &str {
        &self.hash[..self.hash.len().min(12)]
    }
}

/// The files of every `workflow:` step's child, depth first, with their texts.
fn children(
    workspace: &Path,
    workflow: &Workflow,
    files: &mut Vec<PathBuf>,
    texts: &mut Vec<String>,
) {
    for step in workflow.all_steps() {
        if let orchestrate_lang::model::StepKind::Workflow(sub) = &step.kind
            && let Some(child) = &sub.child
        {
            files.push(workspace.join(&sub.path));
            texts.push(child.text.clone());
            children(workspace, &child.workflow, files, texts);
        }
    }
}

/// SHA-256 (hex) of the workflow file's text; with sub-workflows, of every file's text in load
/// order (the workflow's first, then each `workflow:` step's child, depth first).
pub(crate) fn workflow_hash(texts: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for text in texts {
        hasher.update(text.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Size, modification time, inode and change time of each file (`None`: missing): compared before
/// each claim, a few `stat` calls, to notice an edit without reading anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(Vec<(PathBuf, Option<FileStamp>)>);

/// One file's size, modification time (s, ns), inode and change time (s, ns).
type FileStamp = (u64, i64, i64, u64, i64, i64);

impl Stamp {
    pub(crate) fn of(files: &[PathBuf]) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp(
            files
                .iter()
                .map(|path| {
                    let meta = std::fs::metadata(path).ok().map(|m| {
                        (
                            m.len(),
                            m.mtime(),
                            m.mtime_nsec(),
                            m.ino(),
                            m.ctime(),
                            m.ctime_nsec(),
                        )
                    });
                    (path.clone(), meta)
                })
                .collect(),
        )
    }

    /// The same files, looked at again now.
    pub fn now(&self) -> Stamp {
        let files: Vec<PathBuf> = self.0.iter().map(|(p, _)| p.clone()).collect();
        Stamp::of(&files)
    }
}

/// Where role processes record themselves: `.orchestrate/swarm/procs/<role>#<replica>.json`.
pub(crate) fn procs_dir(workspace: &Path) -> PathBuf {
    workspace.join(".orchestrate/swarm/procs")
}

/// A live role process, as it records itself (written at start and after every reload, removed
/// when it exits): how `swarm status` finds role processes that no supervisor lists, and what
/// version of the role each one runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcRecord {
    /// Version of this record's format (1).
    pub format_version: u32,
    /// The role's name.
    pub role: String,
    /// Which replica of the role, from 0.
    pub replica: u32,
    /// The role process's id.
    pub pid: u32,
    /// The process's start time (`/proc`), so that a reused pid is not taken for it.
    pub pid_start: u64,
    /// The machine's boot the process belongs to: a pid from an earlier boot is not live.
    pub boot_id: String,
    /// The supervisor that started it (`None`: started by hand, `orchestrate agent`).
    pub supervisor_pid: Option<u32>,
    /// RFC 3339.
    pub started_at: String,
    /// How long its tasks in flight get to finish when it is asked to stop (`--grace`).
    #[serde(default)]
    pub grace_ms: Option<u64>,
    /// The version new tasks run on.
    pub workflow_hash: String,
    /// When the version in `workflow_hash` was loaded, RFC 3339.
    pub loaded_at: String,
    /// The last look at the role's files: when, and what came of it.
    pub checked_at: String,
    /// What the last look at the role's files did.
    pub reload: ReloadOutcome,
}

/// What the last look at a role's files did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The version loaded at start.
    Started,
    /// Nothing changed.
    Unchanged,
    /// A new version was loaded; new tasks run on it.
    Reloaded {
        /// The `workflow_hash` of the version it replaced.
        previous_hash: String,
    },
    /// The edit did not load: the previous version keeps running. `error` is the first problem
    /// (`file:line:column: message`), `errors` all of them rendered.
    Kept {
        /// The first problem.
        error: String,
        /// Every problem, rendered.
        errors: String,
    },
}

impl ProcRecord {
    /// The record of replica `replica` of `role`: `.orchestrate/swarm/procs/<role>#<replica>.json`.
    pub fn path(workspace: &Path, role: &str, replica: u32) -> PathBuf {
        procs_dir(workspace).join(format!("{role}#{replica}.json"))
    }

    /// Writes the record durably (temp file, fsync, rename), creating its directory.
    pub fn write(&self, workspace: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(procs_dir(workspace))?;
        orchestrate_base::json_file::write(
            &Self::path(workspace, &self.role, self.replica),
            self,
            true,
        )
    }

    /// Every record in the workspace, live or not (the reader checks the pid).
    pub fn read_all(workspace: &Path) -> Vec<ProcRecord> {
        let Ok(entries) = std::fs::read_dir(procs_dir(workspace)) else {
            return Vec::new();
        };
        let mut records: Vec<ProcRecord> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        records.sort_by(|a, b| (&a.role, a.replica).cmp(&(&b.role, b.replica)));
        records
    }
}

/// The first problem of a failed load, `file:line:column: message` with the file relative to
/// the workspace, and every problem rendered.
pub fn describe_errors(workspace: &Path, errors: &[LoadError]) -> (String, String) {
    let first = errors
        .iter()
        .flat_map(|e| e.diagnostics.iter())
        .next()
        .map(|d| {
            let file = d.file.strip_prefix(workspace).unwrap_or(&d.file);
            format!("{}:{}:{}: {}", file.display(), d.line, d.column, d.message)
        })
        .unwrap_or_else(|| "the role does not load".to_string());
    let all = errors
        .iter()
        .map(|e| {
            let mut copy = LoadError {
                path: e.path.clone(),
                source_text: e.source_text.clone(),
                diagnostics: e.diagnostics.clone(),
            };
            for d in &mut copy.diagnostics {
                if let Ok(rel) = d.file.strip_prefix(workspace) {
                    d.file = rel.to_path_buf();
                }
            }
            copy.render()
        })
        .collect::<Vec<_>>()
        .join("\n");
    (first, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_hash_of_one_file_is_its_sha256() {
        // `printf abc | sha256sum`
        assert_eq!(
            workflow_hash(&["abc".to_string()]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_stamp_changes_when_a_file_is_rewritten_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.yaml");
        std::fs::write(&file, "a").unwrap();
        let stamp = Stamp::of(std::slice::from_ref(&file));
        assert_eq!(stamp.now(), stamp);
        // Same size, new content: the change time (or inode, through a rename) moves.
        std::fs::write(dir.path().join("w.tmp"), "b").unwrap();
        std::fs::rename(dir.path().join("w.tmp"), &file).unwrap();
        assert_ne!(stamp.now(), stamp);
        std::fs::remove_file(&file).unwrap();
        assert_ne!(stamp.now(), stamp);
    }
}
