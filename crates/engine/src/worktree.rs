//! `isolation: worktree`: a git worktree, on a branch of its own, per swarm task or per run.
//!
//! Owns: the effective setting (a role's over its workflow's, field by field), branch names
//! (the template, made a valid git ref), creating or reusing a task's worktree under a lock
//! shared by every orchestrate process of the repository (and retried on git's own lock
//! errors), the record of each worktree (`.orchestrate/worktree-records/`), removing it after a
//! success, and what `orchestrate gc` does (the command prints it). Does not decide where steps run (the runner takes the
//! checkout through `RunConfig::checkout`) or whether a task succeeded (`worker`, `cli`).
//!
//! Policy, in one place:
//! - tasks get `<dir>/<role>/<task>` on branch `orchestrate/<role>/<task>`; standalone runs get
//!   `<dir>/_runs/<run_id>` on `orchestrate/run/<run_id>` (`{role}` is `run`);
//! - a retry of a task (and a resume of a run) continues in the same worktree and branch: what
//!   the earlier attempt committed, or left uncommitted, is still there;
//! - after a success the worktree is removed (unless `keep: true`, or it holds uncommitted
//!   changes, which are never thrown away) and the branch stays, since it is the result; a
//!   branch the task made without committing anything is deleted with it;
//! - a failure keeps the worktree for inspection; `orchestrate gc` removes it later.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use orchestrate_queue::record::WorktreeInfo;
use serde::{Deserialize, Serialize};

use orchestrate_base::io_err::FromIo;
use orchestrate_lang::model::{Isolation, WorktreeSpec};
use orchestrate_queue::queue::TaskState;

pub(crate) const DEFAULT_BRANCH: &str = "orchestrate/{role}/{task}";
pub(crate) const DEFAULT_DIR: &str = ".orchestrate/worktrees";
/// Where the records of the worktrees orchestrate made live, relative to the workspace.
pub(crate) const RECORDS_DIR: &str = ".orchestrate/worktree-records";
/// The lock file, in the repository's common git directory: every orchestrate process of the
/// repository (any workspace in it) creates and removes worktrees one at a time.
const LOCK_FILE: &str = "orchestrate-worktrees.lock";
/// Attempts of a git command that failed on one of git's own lock files.
const LOCK_RETRIES: u32 = 8;

/// Why a task's or run's worktree could not be made, reused or removed.
#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    /// git could not be started (the I/O error of spawning it).
    #[error(
        "cannot run git ({0}); `isolation: worktree` needs git installed and on PATH, or remove `isolation`"
    )]
    GitMissing(std::io::Error),
    /// The workspace is not inside a git repository.
    #[error(
        "the workspace {} is not in a git repository, which `isolation: worktree` ({at}) needs: run `git init` and commit, or remove `isolation`",
        workspace.display()
    )]
    NotARepo {
        /// The workspace.
        workspace: PathBuf,
        /// `file:line` of the `isolation:` setting.
        at: String,
    },
    /// `isolation.worktree.base` names no commit.
    #[error(
        "the base `{base}` ({at}) is not a commit of the repository{why}; set `isolation.worktree.base` to a branch, tag or commit that exists"
    )]
    BaseNotFound {
        /// The base as configured.
        base: String,
        /// `file:line` of the `isolation:` setting.
        at: String,
        /// A hint, as a parenthesized suffix of the message, or empty.
        why: String,
    },
    /// The branch template rendered to a name git refuses.
    #[error(
        "`{branch}` is not a valid branch name ({message}); change `isolation.worktree.branch`"
    )]
    BadBranch {
        /// The rendered name.
        branch: String,
        /// What git said.
        message: String,
    },
    /// The worktree's directory exists but is not the worktree of the expected branch.
    #[error(
        "{} exists but is not the worktree of branch `{branch}`{what}; look at it, then move it away or delete it (and `git worktree prune`) and try again",
        path.display()
    )]
    PathTaken {
        /// The directory.
        path: PathBuf,
        /// The branch the worktree should have.
        branch: String,
        /// What is there instead, as a parenthesized suffix of the message, or empty.
        what: String,
    },
    /// A git command failed.
    #[error("`git {args}` failed in {}: {message}", dir.display())]
    Git {
        /// Where it ran.
        dir: PathBuf,
        /// Its arguments, space-separated.
        args: String,
        /// Its stderr, trimmed, or its exit status when it wrote nothing.
        message: String,
    },
    /// A file operation on a worktree record or directory failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `write`, `open`, `lock`), read after "cannot".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl FromIo for WorktreeError {
    fn from_io(action: &'static str, path: PathBuf, source: std::io::Error) -> Self {
        WorktreeError::Io {
            action,
            path,
            source,
        }
    }
}

/// The worktree setting a role's tasks run with: the role's fields over the workflow's, a
/// role's `isolation: none` turning the workflow's off.
pub fn effective(role: Option<&Isolation>, workflow: Option<&Isolation>) -> Option<WorktreeSpec> {
    match (role, workflow) {
        (Some(Isolation::None), _) | (None, None | Some(Isolation::None)) => None,
        (None, Some(Isolation::Worktree(w))) => Some(w.clone()),
        (Some(Isolation::Worktree(r)), Some(Isolation::Worktree(w))) => Some(WorktreeSpec {
            base: r.base.clone().or_else(|| w.base.clone()),
            keep: r.keep.or(w.keep),
            branch: r.branch.clone().or_else(|| w.branch.clone()),
            dir: r.dir.clone().or_else(|| w.dir.clone()),
            remote: r.remote.clone().or_else(|| w.remote.clone()),
            at: r.at.clone(),
        }),
        (Some(Isolation::Worktree(r)), _) => Some(r.clone()),
    }
}

/// Whose worktree it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Owner {
    /// A swarm task (every attempt of it).
    Task {
        /// The role's name.
        role: String,
        /// The task's id.
        task: String,
    },
    /// A standalone run (`orchestrate run`, and its resumes).
    Run {
        /// The run's id.
        run_id: String,
    },
}

impl Owner {
    /// `{role}` and `{task}` of the branch template.
    fn names(&self) -> (&str, &str) {
        match self {
            Owner::Task { role, task } => (role, task),
            Owner::Run { run_id } => ("run", run_id),
        }
    }

    /// The worktree's place below `dir:`, and its record's below [`RECORDS_DIR`].
    fn rel(&self) -> PathBuf {
        match self {
            Owner::Task { role, task } => Path::new(role).join(task),
            Owner::Run { run_id } => Path::new("_runs").join(run_id),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Owner::Task { role, task } => format!("task `{task}` of role `{role}`"),
            Owner::Run { run_id } => format!("run {run_id}"),
        }
    }
}

/// A worktree orchestrate made, as recorded (and as `status.json` shows it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub(crate) format_version: u32,
    pub(crate) owner: Owner,
    /// The worktree's top directory.
    pub path: PathBuf,
    /// Where the steps run: `path`, or the workspace's subdirectory in it.
    pub checkout: PathBuf,
    /// The branch checked out in it.
    pub branch: String,
    /// The base as configured, and the commit it was when the branch was made.
    pub base: String,
    pub(crate) base_commit: String,
    /// Whether orchestrate made the branch (only those are ever deleted).
    pub(crate) created_branch: bool,
    /// `isolation.worktree.keep`: the worktree stays after the task or run succeeds.
    pub keep: bool,
    pub(crate) created_at: String,
}

impl Record {
    fn file(workspace: &Path, owner: &Owner) -> PathBuf {
        workspace
            .join(RECORDS_DIR)
            .join(format!("{}.json", owner.rel().display()))
    }

    fn read(path: &Path) -> Option<Record> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    fn write(&self, workspace: &Path) -> Result<(), WorktreeError> {
        let path = Record::file(workspace, &self.owner);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(WorktreeError::io_err("create", parent))?;
        }
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        orchestrate_base::fsutil::atomic_write(&path, &bytes)
            .map_err(WorktreeError::io_err("write", &path))
    }

    fn forget(&self, workspace: &Path) {
        let _ = std::fs::remove_file(Record::file(workspace, &self.owner));
    }

    /// `status.json`'s `worktree`: where, which branch, from what, and whether it is still there.
    pub fn status(&self, workspace: &Path, kept: bool) -> WorktreeInfo {
        WorktreeInfo {
            base: self.base.clone(),
            base_commit: self.base_commit.clone(),
            branch: self.branch.clone(),
            kept,
            path: orchestrate_base::fsutil::relative(workspace, &self.path),
        }
    }
}

/// The repository a workspace is in.
struct Repo {
    /// The top of the workspace's work tree.
    top: PathBuf,
    /// The common git directory (shared by every worktree of the repository).
    common_dir: PathBuf,
    /// The workspace below `top` (empty when it is the top).
    prefix: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> Result<Output, WorktreeError> {
    orchestrate_base::exec::git_output(dir, args, &[]).map_err(WorktreeError::GitMissing)
}

/// `git args` in `dir`, its stdout on success; retried while git reports one of its own lock
/// files taken (another git process of the repository, a user's included).
fn git_ok(dir: &Path, args: &[&str]) -> Result<String, WorktreeError> {
    let mut delay = Duration::from_millis(25);
    for attempt in 1..=LOCK_RETRIES {
        let out = git(dir, args)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if attempt < LOCK_RETRIES && lock_contention(&stderr) {
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(1));
            continue;
        }
        return Err(WorktreeError::Git {
            dir: dir.to_path_buf(),
            args: args.join(" "),
            message: if stderr.is_empty() {
                format!("exit status {}", out.status)
            } else {
                stderr
            },
        });
    }
    unreachable!("the last attempt returns")
}

/// Whether git failed because one of its lock files (`index.lock`, `config.lock`, a ref's
/// `.lock`) was taken.
fn lock_contention(stderr: &str) -> bool {
    // "Unable to create '.../index.lock': File exists", "could not lock config file ...",
    // "cannot lock ref 'refs/heads/x': Unable to create '...x.lock': File exists"; not
    // "cannot lock ref ...: 'refs/heads/x' exists; cannot create 'refs/heads/x/y'", which
    // no retry mends.
    stderr.contains(".lock': File exists") || stderr.contains("could not lock config file")
}

fn discover(workspace: &Path, at: &str) -> Result<Repo, WorktreeError> {
    let not_a_repo = || WorktreeError::NotARepo {
        workspace: workspace.to_path_buf(),
        at: at.to_string(),
    };
    let out = git(
        workspace,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--show-toplevel",
            "--git-common-dir",
        ],
    )?;
    if !out.status.success() {
        return Err(not_a_repo());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let (Some(top), Some(common)) = (lines.next(), lines.next()) else {
        return Err(not_a_repo());
    };
    let top = PathBuf::from(top);
    let canonical = workspace
        .canonicalize()
        .unwrap_or_else(|_| workspace.to_path_buf());
    let prefix = canonical
        .strip_prefix(top.canonicalize().unwrap_or_else(|_| top.clone()))
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Ok(Repo {
        top,
        common_dir: PathBuf::from(common),
        prefix,
    })
}

/// The repository-wide lock around worktree creation and removal (released when dropped).
fn lock(repo: &Repo) -> Result<File, WorktreeError> {
    let path = repo.common_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(WorktreeError::io_err("open", &path))?;
    file.lock().map_err(WorktreeError::io_err("lock", &path))?;
    Ok(file)
}

/// Adds `/<dir>/` to the repository's `info/exclude` when the worktrees live inside the work
/// tree, so that the main checkout stays clean. Call under [`lock`].
fn exclude(repo: &Repo, dir: &Path) -> Result<(), WorktreeError> {
    let top = repo.top.canonicalize().unwrap_or_else(|_| repo.top.clone());
    let Ok(rel) = dir.strip_prefix(&top) else {
        return Ok(());
    };
    if rel.as_os_str().is_empty() {
        return Ok(());
    }
    let line = format!("/{}/", rel.display());
    let info = repo.common_dir.join("info");
    let file = info.join("exclude");
    let current = std::fs::read_to_string(&file).unwrap_or_default();
    if current.lines().any(|l| l.trim() == line) {
        return Ok(());
    }
    std::fs::create_dir_all(&info).map_err(WorktreeError::io_err("create", &info))?;
    let mut text = current;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "# worktrees of `isolation: worktree` (orchestrate)\n{line}\n"
    ));
    orchestrate_base::fsutil::atomic_write(&file, text.as_bytes())
        .map_err(WorktreeError::io_err("write", &file))
}

/// The registered worktrees of the repository: path and branch (`refs/heads/...`, if any).
fn registered(workspace: &Path) -> Result<Vec<(PathBuf, Option<String>)>, WorktreeError> {
    let text = git_ok(workspace, &["worktree", "list", "--porcelain"])?;
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut path = None;
        let mut branch = None;
        for line in block.lines() {
            if let Some(p) = line.strip_prefix("worktree ") {
                path = Some(PathBuf::from(p));
            } else if let Some(b) = line.strip_prefix("branch refs/heads/") {
                branch = Some(b.to_string());
            }
        }
        if let Some(path) = path {
            out.push((path, branch));
        }
    }
    Ok(out)
}

fn branch_exists(workspace: &Path, branch: &str) -> Result<bool, WorktreeError> {
    let out = git(
        workspace,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ],
    )?;
    Ok(out.status.success())
}

fn canonical_or(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// The branch of `owner`'s worktree: the spec's template rendered, sanitized and checked by git.
fn branch_of(
    workspace: &Path,
    spec: &WorktreeSpec,
    owner: &Owner,
    workflow: &str,
) -> Result<String, WorktreeError> {
    let (role, task) = owner.names();
    let template = spec.branch.as_deref().unwrap_or(DEFAULT_BRANCH);
    let rendered =
        orchestrate_lang::branch::render(template, role, task, workflow).map_err(|message| {
            WorktreeError::BadBranch {
                branch: template.to_string(),
                message,
            }
        })?;
    let branch = orchestrate_lang::branch::sanitize(&rendered);
    let check = git(workspace, &["check-ref-format", "--branch", &branch])?;
    if !check.status.success() {
        return Err(WorktreeError::BadBranch {
            message: String::from_utf8_lossy(&check.stderr).trim().to_string(),
            branch,
        });
    }
    Ok(branch)
}

/// Whether the worktree registered at `path` (`found`, with its branch) is ours to reopen
/// (`recorded`: an earlier attempt recorded it); one that is not, but is in the way and ours
/// to remove, is removed. A place taken by another is an error.
fn reusable(
    workspace: &Path,
    found: Option<&(PathBuf, Option<String>)>,
    path: &Path,
    branch: &str,
    recorded: bool,
) -> Result<bool, WorktreeError> {
    Ok(match found {
        Some((_, Some(b))) if b == branch && path.is_dir() && recorded => true,
        // Ours by place and branch but never recorded: the process making it died inside
        // `git worktree add` (the checkout may be half done). Nothing ran in it: make it again.
        Some((_, Some(b))) if b == branch && path.is_dir() => {
            let path_text = path.display().to_string();
            git_ok(
                workspace,
                &["worktree", "remove", "--force", "--force", &path_text],
            )?;
            false
        }
        Some((_, other)) if path.is_dir() => {
            return Err(WorktreeError::PathTaken {
                path: path.to_path_buf(),
                branch: branch.to_string(),
                what: match other {
                    Some(b) => format!(" (it is the worktree of `{b}`)"),
                    None => " (it is a worktree with a detached HEAD)".into(),
                },
            });
        }
        // Registered but its directory is gone: forget the registration first.
        Some(_) => {
            git_ok(workspace, &["worktree", "prune"])?;
            false
        }
        None if path.exists() => {
            return Err(WorktreeError::PathTaken {
                path: path.to_path_buf(),
                branch: branch.to_string(),
                what: String::new(),
            });
        }
        None => false,
    })
}

/// A new branch `branch` at `base` checked out at `path`; its base commit.
fn new_branch(
    workspace: &Path,
    spec: &WorktreeSpec,
    path: &Path,
    branch: &str,
    base: &str,
) -> Result<String, WorktreeError> {
    let commit = git(
        workspace,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{base}^{{commit}}"),
        ],
    )?;
    if !commit.status.success() {
        let why = if base == "HEAD" {
            " (a repository with no commits yet? commit something first)".to_string()
        } else {
            String::new()
        };
        return Err(WorktreeError::BaseNotFound {
            base: base.to_string(),
            at: spec.at.clone(),
            why,
        });
    }
    let commit = String::from_utf8_lossy(&commit.stdout).trim().to_string();
    let path_text = path.display().to_string();
    git_ok(
        workspace,
        &["worktree", "add", "-b", branch, &path_text, &commit],
    )?;
    Ok(commit)
}

/// Creates the worktree of `owner` (or reopens the one an earlier attempt left), records it,
/// and returns its record. A new branch starts from `from` when given (a branch a task was
/// handed: fetched from `spec.remote` first, when set), else from `spec.base`. Blocking: call
/// it off the async threads.
pub fn prepare(
    workspace: &Path,
    spec: &WorktreeSpec,
    owner: &Owner,
    workflow: &str,
    from: Option<&str>,
) -> Result<Record, WorktreeError> {
    let repo = discover(workspace, &spec.at)?;
    let branch = branch_of(workspace, spec, owner, workflow)?;
    let dir = orchestrate_base::fsutil::normalize(
        &workspace.join(spec.dir.as_deref().unwrap_or(DEFAULT_DIR)),
    );
    let path = dir.join(owner.rel());
    let base = match (from, &spec.remote) {
        (Some(from), Some(remote)) => fetch(workspace, spec, remote, from)?,
        (Some(from), None) => from.to_string(),
        (None, _) => spec.base.clone().unwrap_or_else(|| "HEAD".into()),
    };
    let keep = spec.keep.unwrap_or(false);

    let _lock = lock(&repo)?;
    // Read under the lock: `gc` removes the worktree and forgets its record under it.
    let previous = record_of(workspace, owner);
    std::fs::create_dir_all(&dir).map_err(WorktreeError::io_err("create", &dir))?;
    exclude(&repo, &canonical_or(&dir))?;
    let worktrees = registered(workspace)?;
    let found = worktrees
        .iter()
        .find(|(p, _)| canonical_or(p) == canonical_or(&path));
    let reuse = reusable(workspace, found, &path, &branch, previous.is_some())?;
    let (base_commit, created_branch) = if reuse {
        match &previous {
            Some(p) => (p.base_commit.clone(), p.created_branch),
            None => (git_ok(&path, &["rev-parse", "HEAD"])?, false),
        }
    } else if branch_exists(workspace, &branch)? {
        // The branch of an earlier attempt (or one a person made): continue it.
        let path_text = path.display().to_string();
        git_ok(workspace, &["worktree", "add", &path_text, &branch])?;
        match &previous {
            Some(p) => (p.base_commit.clone(), p.created_branch),
            None => (git_ok(&path, &["rev-parse", "HEAD"])?, false),
        }
    } else {
        (new_branch(workspace, spec, &path, &branch, &base)?, true)
    };
    let record = Record {
        format_version: 1,
        owner: owner.clone(),
        checkout: path.join(&repo.prefix),
        path,
        branch,
        base,
        base_commit,
        created_branch,
        keep,
        created_at: previous
            .map(|p| p.created_at)
            .unwrap_or_else(orchestrate_base::clock::now_rfc3339),
    };
    record.write(workspace)?;
    Ok(record)
}

/// Fetches branch `from` of `remote` (a hand-off from another machine) into
/// `refs/remotes/REMOTE/FROM`; returns that ref, what the new branch starts from.
fn fetch(
    workspace: &Path,
    spec: &WorktreeSpec,
    remote: &str,
    from: &str,
) -> Result<String, WorktreeError> {
    let checked = git(workspace, &["check-ref-format", "--branch", from])?;
    if !checked.status.success() || from.starts_with('-') {
        return Err(WorktreeError::BadBranch {
            branch: from.to_string(),
            message: format!(
                "the task's `branch` names it; it is fetched from remote `{remote}` as `isolation` at {} says",
                spec.at
            ),
        });
    }
    let target = format!("refs/remotes/{remote}/{from}");
    git_ok(
        workspace,
        &[
            "fetch",
            "--no-tags",
            remote,
            &format!("+refs/heads/{from}:{target}"),
        ],
    )?;
    Ok(target)
}

/// Pushes the task's branch to `remote` under the same name, never forced: a remote branch that
/// moved elsewhere is refused, and the error says so. Returns `REMOTE/BRANCH`.
pub fn push(workspace: &Path, record: &Record, remote: &str) -> Result<String, String> {
    let refspec = format!("refs/heads/{0}:refs/heads/{0}", record.branch);
    let dir = if record.path.is_dir() {
        &record.path
    } else {
        workspace
    };
    git_ok(dir, &["push", "--porcelain", remote, &refspec])
        .map(|_| format!("{remote}/{}", record.branch))
        .map_err(|err| {
            format!(
                "pushing branch `{}` to remote `{remote}` failed (never forced: a remote branch that moved on is refused): {err}",
                record.branch
            )
        })
}

/// What became of a worktree when its task or run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The worktree is still there.
    pub kept: bool,
    /// Why it was kept, or what was removed, for the log.
    pub note: String,
}

/// Removes a successful task's worktree (not with `keep: true`, nor when it holds uncommitted
/// changes), and its branch when the task committed nothing on it; keeps a failed one.
/// Blocking: call it off the async threads.
pub fn finish(workspace: &Path, record: &Record, success: bool) -> Ending {
    let kept = |note: String| Ending { kept: true, note };
    let shown = orchestrate_base::fsutil::relative(workspace, &record.path);
    if !success {
        return kept(format!(
            "kept worktree {shown} (branch `{}`) for inspection; `orchestrate gc` removes it later",
            record.branch
        ));
    }
    if record.keep {
        return kept(format!(
            "kept worktree {shown} (branch `{}`): `keep: true`",
            record.branch
        ));
    }
    match remove(workspace, record, false) {
        Ok(removed) => Ending {
            kept: false,
            note: removed,
        },
        Err(why) => kept(format!("kept worktree {shown}: {why}")),
    }
}

/// Removes the worktree (refusing uncommitted changes unless `force`), then the branch when
/// orchestrate made it and it holds nothing that is not in its base commit; forgets the record.
fn remove(workspace: &Path, record: &Record, force: bool) -> Result<String, String> {
    let repo = discover(workspace, &record.owner.describe()).map_err(|e| e.to_string())?;
    let _lock = lock(&repo).map_err(|e| e.to_string())?;
    remove_locked(workspace, record, force)
}

/// [`remove`], with the repository's worktree lock already held.
fn remove_locked(workspace: &Path, record: &Record, force: bool) -> Result<String, String> {
    let shown = orchestrate_base::fsutil::relative(workspace, &record.path);
    if !force && let Some(why) = uncommitted(record)? {
        return Err(why);
    }
    let path_text = record.path.display().to_string();
    if record.path.is_dir() {
        let mut args = vec!["worktree", "remove"];
        if force {
            args.push("--force");
        }
        args.push(&path_text);
        git_ok(workspace, &args).map_err(|e| e.to_string())?;
    } else {
        git_ok(workspace, &["worktree", "prune"]).map_err(|e| e.to_string())?;
    }
    let mut note = format!("removed worktree {shown}");
    if record.created_branch && branch_exists(workspace, &record.branch).unwrap_or(false) {
        let new = git_ok(
            workspace,
            &[
                "rev-list",
                "--count",
                &format!("{}..refs/heads/{}", record.base_commit, record.branch),
            ],
        )
        .ok()
        .and_then(|n| n.parse::<u64>().ok());
        if new == Some(0) {
            git_ok(workspace, &["branch", "-D", &record.branch]).map_err(|e| e.to_string())?;
            note.push_str(&format!(
                " and branch `{}` (no commits of its own)",
                record.branch
            ));
        } else {
            note.push_str(&format!("; branch `{}` keeps the work", record.branch));
        }
    }
    record.forget(workspace);
    Ok(note)
}

/// Why a worktree is kept although its owner is done with it: it holds uncommitted changes
/// (only `--force` removes those).
fn uncommitted(record: &Record) -> Result<Option<String>, String> {
    if !record.path.is_dir() {
        return Ok(None);
    }
    let status = git_ok(&record.path, &["status", "--porcelain"]).map_err(|e| e.to_string())?;
    let changed = status.lines().count();
    Ok((changed > 0).then(|| {
        format!(
            "it has uncommitted changes ({changed} file(s)); commit them on `{}`, or remove it with `git worktree remove --force {}` (or `orchestrate gc --force`)",
            record.branch,
            record.path.display()
        )
    }))
}

// ---------------------------------------------------------------------------------------------
// gc

/// How `orchestrate gc` treats worktrees (its flags).
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Say what would be removed; remove nothing.
    pub dry_run: bool,
    /// Worktrees of failed tasks and runs are removed once they failed this long ago.
    pub older_than: Duration,
    /// Remove worktrees with uncommitted changes too.
    pub force: bool,
}

/// Why a recorded worktree is still needed, or why it may go.
enum Verdict {
    Keep(String),
    Stale(String),
}

/// What `gc` did with one recorded worktree, as a line for the person who ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcLine {
    /// Whether it counts as removed (or would be), kept, or could not be removed.
    pub(crate) verdict: GcVerdict,
    /// The line shown, e.g. the path and why it was kept or removed.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GcVerdict {
    Removed,
    Kept,
    Failed,
}

/// What `gc` did in all: the counts, and git's error pruning its registrations (counted in
/// `failed`).
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Worktrees removed (or, with `dry_run`, that would be).
    pub removed: usize,
    /// Worktrees still needed.
    pub kept: usize,
    /// Worktrees that could not be removed, and a failed prune.
    pub failed: usize,
    /// git's error when pruning its worktree registrations.
    pub prune_error: Option<String>,
}

/// `orchestrate gc`: removes the worktrees of finished tasks and runs, deletes the branches
/// orchestrate made that hold nothing beyond their base (merged, or empty), and prunes git's
/// registrations of worktrees whose directories are gone. `run_status` gives a run's status
/// (`succeeded`, `running`, `stopped`, ...) from its records, `None` when they cannot be read.
/// Each worktree's line goes to `on_line` as it is decided (under the lock, so a long gc shows
/// progress); an error before or between worktrees stops it.
pub fn gc(
    workspace: &Path,
    options: &GcOptions,
    run_status: &dyn Fn(&str) -> Option<String>,
    on_line: &mut dyn FnMut(GcLine),
) -> Result<GcReport, WorktreeError> {
    let records_dir = workspace.join(RECORDS_DIR);
    let mut records: Vec<(PathBuf, Record)> = walkdir::WalkDir::new(&records_dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| Record::read(e.path()).map(|r| (e.path().to_path_buf(), r)))
        .collect();
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let verb = if options.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut report = GcReport::default();
    let mut line = |verdict: GcVerdict, text: String| {
        match verdict {
            GcVerdict::Removed => report.removed += 1,
            GcVerdict::Kept => report.kept += 1,
            GcVerdict::Failed => report.failed += 1,
        }
        on_line(GcLine { verdict, text });
    };
    let repo = match discover(workspace, "`orchestrate gc`") {
        Ok(repo) => Some(repo),
        Err(err) if !records.is_empty() => return Err(err),
        Err(_) => None,
    };
    for (_, record) in &records {
        // The verdict and the removal under one hold of the lock, so that a task claimed
        // meanwhile finds its worktree either whole or gone (and makes it again), never half.
        let _lock = match repo.as_ref().map(lock) {
            Some(Ok(file)) => Some(file),
            Some(Err(err)) => return Err(err),
            None => None,
        };
        let shown = orchestrate_base::fsutil::relative(workspace, &record.path);
        let who = record.owner.describe();
        let verdict = match verdict(workspace, &record.owner, options.older_than, run_status) {
            // Uncommitted work is kept whatever its owner's state, in a dry run as in a real
            // one: a documented keep, not a failure.
            Verdict::Stale(why) if !options.force => match uncommitted(record) {
                Ok(None) => Verdict::Stale(why),
                Ok(Some(dirty)) => Verdict::Keep(format!("{why}, but {dirty}")),
                Err(err) => {
                    line(
                        GcVerdict::Failed,
                        format!("kept {shown} ({who}: {why}): {err}"),
                    );
                    continue;
                }
            },
            verdict => verdict,
        };
        match verdict {
            Verdict::Keep(why) => line(GcVerdict::Kept, format!("kept {shown} ({who}): {why}")),
            Verdict::Stale(why) if options.dry_run => line(
                GcVerdict::Removed,
                format!("{verb} {shown} (branch `{}`; {who}: {why})", record.branch),
            ),
            Verdict::Stale(why) => match remove_locked(workspace, record, options.force) {
                Ok(note) => line(GcVerdict::Removed, format!("{note} ({who}: {why})")),
                Err(err) => line(
                    GcVerdict::Failed,
                    format!("kept {shown} ({who}: {why}): {err}"),
                ),
            },
        }
    }
    if !options.dry_run
        && repo.is_some()
        && let Err(err) = git_ok(workspace, &["worktree", "prune"])
    {
        report.prune_error = Some(err.to_string());
        report.failed += 1;
    }
    Ok(report)
}

/// Whether the owner of a worktree is done with it.
fn verdict(
    workspace: &Path,
    owner: &Owner,
    older_than: Duration,
    run_status: &dyn Fn(&str) -> Option<String>,
) -> Verdict {
    let old_enough = |finished: Option<chrono::DateTime<chrono::Utc>>| match finished {
        Some(at) => {
            let age = (chrono::Utc::now() - at).to_std().unwrap_or_default();
            age >= older_than
        }
        None => true,
    };
    let age_text = format_age(older_than);
    match owner {
        Owner::Task { role, task } => {
            let layout = match crate::role::layout_for(workspace, role) {
                Ok(layout) => layout,
                Err(_) => orchestrate_queue::queue::Layout::new(
                    workspace,
                    role,
                    Path::new(&format!("inbox/{role}")),
                ),
            };
            let entries: Vec<orchestrate_queue::queue::TaskInfo> =
                orchestrate_queue::queue::list(&layout)
                    .into_iter()
                    .filter(|t| t.id == *task)
                    .collect();
            if entries.iter().any(|t| t.state == TaskState::Running) {
                return Verdict::Keep("the task is running".into());
            }
            if entries.iter().any(|t| t.state == TaskState::Queued) {
                return Verdict::Keep(
                    "the task is queued again; its next attempt continues in it".into(),
                );
            }
            let last = entries
                .iter()
                .filter(|t| t.finished.is_some())
                .max_by(|a, b| a.finished.cmp(&b.finished));
            match last {
                None => Verdict::Stale("the task no longer exists".into()),
                Some(t) if t.state == TaskState::Processed => {
                    Verdict::Stale("the task succeeded".into())
                }
                Some(t) => {
                    let at = t.finished.as_deref().and_then(parse_compact);
                    if old_enough(at) {
                        Verdict::Stale(format!("the task failed more than {age_text} ago"))
                    } else {
                        Verdict::Keep(format!(
                            "the task failed less than {age_text} ago (`--older-than` sets the age)"
                        ))
                    }
                }
            }
        }
        Owner::Run { run_id } => {
            let dir = crate::state::RunDir::new(workspace, run_id);
            if !dir.root.is_dir() {
                return Verdict::Stale("the run no longer exists".into());
            }
            // The caller reads the run's records, which tell a run whose engine is gone
            // ("stopped") from a running one.
            let status = run_status(run_id);
            match status.as_deref() {
                None => Verdict::Keep("its records cannot be read".into()),
                Some("succeeded") => Verdict::Stale("the run succeeded".into()),
                Some("running") => Verdict::Keep("the run is running".into()),
                Some(_) => {
                    let at = dir
                        .read_state()
                        .ok()
                        .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s.updated_at).ok())
                        .map(|t| t.with_timezone(&chrono::Utc));
                    if old_enough(at) {
                        Verdict::Stale(format!("the run ended more than {age_text} ago"))
                    } else {
                        Verdict::Keep(format!(
                            "the run ended less than {age_text} ago and may be resumed"
                        ))
                    }
                }
            }
        }
    }
}

/// A `processed/`/`failed/` name's timestamp prefix (`20261124T005538123456Z` and the like).
fn parse_compact(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let head = digits.get(..14)?;
    chrono::NaiveDateTime::parse_from_str(head, "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

fn format_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// For `orchestrate status RUN`: where an isolated run's steps work, while the worktree is there.
pub fn describe_run(workspace: &Path, run_id: &str) -> Option<String> {
    let owner = Owner::Run {
        run_id: run_id.to_string(),
    };
    let record = record_of(workspace, &owner).filter(|r| r.path.is_dir())?;
    Some(format!(
        "steps work in the worktree {} (branch `{}`)",
        record.checkout.display(),
        record.branch
    ))
}

/// The record of `owner`'s worktree, if orchestrate made one.
pub fn record_of(workspace: &Path, owner: &Owner) -> Option<Record> {
    Record::read(&Record::file(workspace, owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_fields_override_the_workflow_s() {
        let w = Isolation::Worktree(WorktreeSpec {
            base: Some("main".into()),
            keep: Some(true),
            ..WorktreeSpec::default()
        });
        let r = Isolation::Worktree(WorktreeSpec {
            keep: Some(false),
            ..WorktreeSpec::default()
        });
        let merged = effective(Some(&r), Some(&w)).unwrap();
        assert_eq!(
            (merged.base.as_deref(), merged.keep),
            (Some("main"), Some(false))
        );
        assert!(effective(Some(&Isolation::None), Some(&w)).is_none());
        assert!(effective(None, None).is_none());
    }

    #[test]
    fn only_git_s_lock_errors_are_retried() {
        assert!(lock_contention(
            "fatal: Unable to create '/r/.git/index.lock': File exists."
        ));
        assert!(lock_contention(
            "error: could not lock config file .git/config: File exists"
        ));
        assert!(!lock_contention(
            "fatal: cannot lock ref 'refs/heads/a/b': 'refs/heads/a' exists; cannot create 'refs/heads/a/b'"
        ));
        assert!(!lock_contention("fatal: invalid reference: nope"));
    }

    #[test]
    fn compact_times_parse() {
        assert_eq!(
            parse_compact("20261124T005538123456Z"),
            chrono::NaiveDate::from_ymd_opt(2026, 11, 24)
                .and_then(|d| d.and_hms_opt(0, 55, 38))
                .map(|t| t.and_utc())
        );
    }
}
