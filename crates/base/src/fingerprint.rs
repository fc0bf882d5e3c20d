//! Workspace fingerprints: what a `readonly` or `plan` step is checked against.
//!
//! Owns: listing the files of a workspace (through `git ls-files` when the workspace is inside a
//! git work tree, so git-ignored files drop out; otherwise a walk that never follows symlinks),
//! recording per path what cheaply shows a change (kind, mode, size, mtime, ctime, inode, link
//! target, and a content hash where timestamps cannot tell), and diffing two snapshots into a
//! sorted list of changes. In a git repository it also records the repository state a plan-mode
//! agent could change without touching a work-tree file: HEAD, the staged index entries, refs,
//! packed-refs, config and info/exclude.
//!
//! Does not: decide what a change means for the step (the runner fails the step), watch the
//! workspace while the step runs, record directories (as in git, a directory shows through the
//! files in it, so an empty directory a step creates is not a change), or see inside nested
//! repositories and submodules (one directory entry each, as `git status` shows them).
//!
//! Why the content hash is sometimes needed ("racy git"): file timestamps advance in ticks (a
//! jiffy on most Linux filesystems, a second on some, two on FAT), so a file written again in the
//! tick the snapshot was taken in, at the same size, has the same metadata as before. Files whose
//! mtime or ctime falls within [`RACY_WINDOW_NS`] of the snapshot are therefore hashed, and
//! [`Snapshot::rescan`] hashes them again afterwards so the two hashes can be compared.
//!
//! "Modified" means written, not necessarily different: a file rewritten with the same bytes
//! has a new mtime and is reported. Git's own bookkeeping is the exception: `.git/index` is
//! fingerprinted by its entries (mode, object id, stage, path) rather than its bytes, because
//! `git status` rewrites the index's cached stat data and must not fail a read-only step.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::hash::Fnv1a;
use crate::io_err::FromIo;

/// The default [`Options::max_files`]: far above a source tree, far below a tree that still
/// holds build output nobody meant to fingerprint.
pub(crate) const DEFAULT_MAX_FILES: usize = 200_000;

/// Files whose mtime or ctime is at most this far before the snapshot (or after it) are
/// content-hashed: two seconds covers one-second and FAT timestamp granularity and clock jitter.
pub(crate) const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// Racy files larger than this are not hashed: reading gigabytes to rule out a same-size
/// rewrite within one timestamp tick costs more than the case is worth.
pub(crate) const HASH_LIMIT: u64 = 64 * 1024 * 1024;

/// The engine's own directory, written by every step, never part of a fingerprint.
const ENGINE_DIR: &str = ".orchestrate/";

/// Below this many paths, statting on one thread beats starting more.
const PARALLEL_THRESHOLD: usize = 4096;

/// What to fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Paths the step may write: glob patterns (`*` stays within one path component, `**`
    /// crosses them) anchored at the workspace root; an absolute path below the workspace is
    /// made relative. A pattern also covers everything below a directory it matches; a pattern
    /// ending in `/` matches directories only. `.orchestrate/` is always ignored.
    pub ignore: Vec<String>,
    /// Fail instead of recording more than this many entries.
    pub max_files: usize,
    /// Ask `git` for the file list (and so honour .gitignore) when the workspace is in a work
    /// tree. When false, or when git is missing or the workspace is not in a work tree, every
    /// file is walked; a `.git` directory at the root is then read directly, its index by bytes
    /// (so a `git status` that refreshes it shows as `.git/index` modified).
    pub use_git: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ignore: Vec::new(),
            max_files: DEFAULT_MAX_FILES,
            use_git: true,
        }
    }
}

/// How a snapshot found its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Method {
    /// `git ls-files`: tracked plus untracked-but-not-ignored files, and the repository state.
    Git,
    /// A directory walk: every file except `.git` directories and ignore patterns.
    Walk,
}

/// What one snapshot saw. Take the "after" side with [`Snapshot::rescan`], which hashes again
/// whatever this one had to hash.
#[derive(Debug, Clone)]
pub struct Snapshot {
    workspace: PathBuf,
    options: Options,
    ignore: IgnoreSet,
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the tests check which way a snapshot was taken")
    )]
    method: Method,
    entries: BTreeMap<Vec<u8>, Entry>,
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Change {
    /// Workspace-relative, `/`-separated; repository state is named as if the git directory
    /// were `.git/` in the workspace (`.git/HEAD`, `.git/refs/heads/main`).
    pub path: String,
    /// Whether the path appeared, went away or changed.
    pub kind: ChangeKind,
}

/// What happened to one path between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Present after, absent before.
    Added,
    /// Present before, absent after.
    Removed,
    /// Same kind, but contents, size, timestamps, inode, permissions or link target differ.
    Modified,
    /// A file became a symlink (or a fifo, or a nested repository), or the other way round.
    /// A file replaced by a directory of files is that file removed and those files added.
    TypeChanged,
}

/// Why a workspace could not be snapshotted.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    /// Reading the workspace failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What was being done, read after "failed to" (`read symlink`).
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A `git` command (listing tracked files, reading repository state) failed.
    #[error("failed to run `git {args}` in {}: {message}", workspace.display())]
    Git {
        /// The repository it ran in.
        workspace: PathBuf,
        /// Its arguments after `git`, space-separated.
        args: String,
        /// Its stderr, or why it could not be run.
        message: String,
    },
    /// The workspace holds more files than [`Options::max_files`].
    #[error(
        "failed to fingerprint {}: more than {limit} files; ignore generated directories or raise max_files",
        workspace.display()
    )]
    TooManyFiles {
        /// The workspace that was being snapshotted.
        workspace: PathBuf,
        /// The `max_files` bound it went past.
        limit: usize,
    },
    /// An ignore pattern is not a valid glob.
    #[error("failed to parse ignore pattern `{pattern}`: {message}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// Why the glob parser refused it.
        message: String,
    },
}

impl FromIo for FingerprintError {
    fn from_io(action: &'static str, path: PathBuf, source: io::Error) -> Self {
        FingerprintError::Io {
            action,
            path,
            source,
        }
    }
}

/// Records what `workspace` holds now.
pub fn snapshot(workspace: &Path, options: &Options) -> Result<Snapshot, FingerprintError> {
    let ignore = IgnoreSet::new(&relative_patterns(workspace, &options.ignore))?;
    take(workspace, options, ignore, None, now_ns())
}

impl Snapshot {
    /// Snapshots the same workspace with the same options again, content-hashing every file
    /// this snapshot hashed so that a same-tick, same-size rewrite still shows.
    pub fn rescan(&self) -> Result<Snapshot, FingerprintError> {
        take(
            &self.workspace,
            &self.options,
            self.ignore.clone(),
            Some(&self.entries),
            now_ns(),
        )
    }

    /// What changed since this snapshot: `diff(self, &self.rescan()?)`.
    #[cfg(test)]
    pub(crate) fn changes(&self) -> Result<Vec<Change>, FingerprintError> {
        Ok(diff(self, &self.rescan()?))
    }

    #[cfg(test)]
    pub(crate) fn method(&self) -> Method {
        self.method
    }

    /// Number of recorded entries (files, symlinks, nested repositories, repository state).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Every path added, removed or changed between `before` and `after`, sorted by path.
///
/// A file hashed on one side only is judged by its metadata: [`Snapshot::rescan`] makes sure
/// the "after" side hashes whatever the "before" side did.
pub fn diff(before: &Snapshot, after: &Snapshot) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut old = before.entries.iter().peekable();
    let mut new = after.entries.iter().peekable();
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((a, _)), Some((b, _))) => a.cmp(b),
        };
        let (path, kind) = match order {
            Ordering::Less => {
                let (path, _) = old.next().expect("peeked");
                (path, Some(ChangeKind::Removed))
            }
            Ordering::Greater => {
                let (path, _) = new.next().expect("peeked");
                (path, Some(ChangeKind::Added))
            }
            Ordering::Equal => {
                let (path, a) = old.next().expect("peeked");
                let (_, b) = new.next().expect("peeked");
                (path, a.compare(b))
            }
        };
        if let Some(kind) = kind {
            changes.push(Change {
                path: String::from_utf8_lossy(path).into_owned(),
                kind,
            });
        }
    }
    changes
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Modified => "modified",
            ChangeKind::TypeChanged => "type changed",
        })
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path, self.kind)
    }
}

// ---------------------------------------------------------------------------------------------
// Entries

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    /// Fifo, socket or device node.
    Other,
}

/// What is compared for one path. Fields that would change without the path changing are
/// left zero: a directory's timestamps and size move whenever an entry below it does (the
/// entries themselves are compared), a symlink is its target, repository state is its content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    meta: Meta,
    /// FNV-1a of the contents, when the metadata alone could miss a change.
    hash: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Meta {
    /// Permission bits (`st_mode & 0o7777`).
    mode: u32,
    size: u64,
    mtime_ns: i64,
    /// Catches writes that put the mtime back (`touch -r`, `cp -p`) and chmod/chown.
    ctime_ns: i64,
    inode: u64,
    target: Option<Box<[u8]>>,
}

impl Entry {
    fn compare(&self, after: &Entry) -> Option<ChangeKind> {
        if self.kind != after.kind {
            return Some(ChangeKind::TypeChanged);
        }
        let hashes_differ = matches!((self.hash, after.hash), (Some(a), Some(b)) if a != b);
        (self.meta != after.meta || hashes_differ).then_some(ChangeKind::Modified)
    }

    /// An entry known by its content only (repository state).
    fn content(bytes: &[u8]) -> Entry {
        let mut hasher = Fnv1a::new();
        hasher.write(bytes);
        Entry {
            kind: Kind::File,
            meta: Meta {
                size: bytes.len() as u64,
                ..Meta::default()
            },
            hash: Some(hasher.finish()),
        }
    }
}

/// Records `rel` (relative to `workspace`) without following it if it is a symlink. `None`
/// when it vanished between listing and statting. `hash` says whether a regular file must be
/// content-hashed regardless of its timestamps.
fn stat_entry(
    workspace: &Path,
    rel: &[u8],
    racy_since_ns: i64,
    hash: bool,
) -> Result<Option<Entry>, FingerprintError> {
    let path = workspace.join(std::ffi::OsStr::from_bytes(rel));
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(FingerprintError::Io {
                action: "read metadata of",
                path,
                source,
            });
        }
    };
    let file_type = meta.file_type();
    let mode = meta.mode() & 0o7777;
    let entry = if file_type.is_dir() {
        Entry {
            kind: Kind::Dir,
            meta: Meta {
                mode,
                ..Meta::default()
            },
            hash: None,
        }
    } else if file_type.is_symlink() {
        let target = match fs::read_link(&path) {
            Ok(target) => target.into_os_string().into_vec().into_boxed_slice(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(FingerprintError::Io {
                    action: "read symlink",
                    path,
                    source,
                });
            }
        };
        Entry {
            kind: Kind::Symlink,
            meta: Meta {
                target: Some(target),
                ..Meta::default()
            },
            hash: None,
        }
    } else {
        let kind = if file_type.is_file() {
            Kind::File
        } else {
            Kind::Other
        };
        let meta = full_meta(&meta, mode);
        let racy = meta.mtime_ns.max(meta.ctime_ns) >= racy_since_ns;
        let hash = if kind == Kind::File && (hash || racy) && meta.size <= HASH_LIMIT {
            hash_file(&path)?
        } else {
            None
        };
        Entry { kind, meta, hash }
    };
    Ok(Some(entry))
}

fn full_meta(meta: &Metadata, mode: u32) -> Meta {
    Meta {
        mode,
        size: meta.size(),
        mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
        inode: meta.ino(),
        target: None,
    }
}

/// Saturates rather than overflows for timestamps past 2262 (`touch -d 3000-01-01`).
fn nanos(secs: i64, nsecs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsecs)
}

/// Hashes a regular file's contents. `None` when it cannot be opened for reading (mode 000):
/// the metadata, ctime included, still shows a chmod followed by a write.
fn hash_file(path: &Path) -> Result<Option<u64>, FingerprintError> {
    // O_NOFOLLOW: the path was a regular file when statted; if it has since become a symlink,
    // do not read through it (possibly out of the workspace). O_NONBLOCK: nor hang if it has
    // become a fifo.
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ) || e.raw_os_error() == Some(libc::ELOOP) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(FingerprintError::from_io("read", path.to_path_buf(), e)),
    };
    let mut hasher = Fnv1a::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.write(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FingerprintError::from_io("read", path.to_path_buf(), e)),
        }
    }
    Ok(Some(hasher.finish()))
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------------------------------------
// Taking a snapshot

/// What the listing stage hands the stat stage.
struct Listing {
    method: Method,
    /// Workspace-relative paths, sorted and unique.
    paths: Vec<Vec<u8>>,
    /// Repository state entries, already recorded.
    git_state: Vec<(Vec<u8>, Entry)>,
}

fn take(
    workspace: &Path,
    options: &Options,
    ignore: IgnoreSet,
    baseline: Option<&BTreeMap<Vec<u8>, Entry>>,
    now_ns: i64,
) -> Result<Snapshot, FingerprintError> {
    let racy_since_ns = now_ns.saturating_sub(RACY_WINDOW_NS);
    match fs::metadata(workspace) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(FingerprintError::Io {
                action: "fingerprint",
                path: workspace.to_path_buf(),
                source: io::Error::from(io::ErrorKind::NotADirectory),
            });
        }
        Err(source) => {
            return Err(FingerprintError::Io {
                action: "read metadata of",
                path: workspace.to_path_buf(),
                source,
            });
        }
    }
    let repo = if options.use_git {
        discover_repo(workspace)?
    } else {
        None
    };
    let listing = match repo {
        Some(repo) => list_git(workspace, &repo, &ignore, options.max_files)?,
        None => list_walk(workspace, &ignore, options.max_files)?,
    };
    let mut entries: BTreeMap<Vec<u8>, Entry> =
        stat_all(workspace, &listing.paths, racy_since_ns, baseline)?
            .into_iter()
            .collect();
    entries.extend(listing.git_state);
    Ok(Snapshot {
        workspace: workspace.to_path_buf(),
        options: options.clone(),
        ignore,
        method: listing.method,
        entries,
    })
}

/// Stats every path, on a few threads when there are many (lstat is a syscall each; two cores
/// halve a 50,000-file snapshot).
fn stat_all(
    workspace: &Path,
    paths: &[Vec<u8>],
    racy_since_ns: i64,
    baseline: Option<&BTreeMap<Vec<u8>, Entry>>,
) -> Result<Vec<(Vec<u8>, Entry)>, FingerprintError> {
    let stat_chunk = |chunk: &[Vec<u8>]| -> Result<Vec<(Vec<u8>, Entry)>, FingerprintError> {
        let mut out = Vec::with_capacity(chunk.len());
        for rel in chunk {
            let hashed_before = baseline
                .and_then(|b| b.get(rel))
                .is_some_and(|e| e.hash.is_some());
            if let Some(entry) = stat_entry(workspace, rel, racy_since_ns, hashed_before)? {
                out.push((rel.clone(), entry));
            }
        }
        Ok(out)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if threads == 1 || paths.len() < PARALLEL_THRESHOLD {
        return stat_chunk(paths);
    }
    let chunk_len = paths.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(chunk_len)
            .map(|chunk| scope.spawn(move || stat_chunk(chunk)))
            .collect();
        let mut all = Vec::with_capacity(paths.len());
        for handle in handles {
            match handle.join() {
                Ok(part) => all.extend(part?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(all)
    })
}

fn too_many(workspace: &Path, limit: usize) -> FingerprintError {
    FingerprintError::TooManyFiles {
        workspace: workspace.to_path_buf(),
        limit,
    }
}

/// Lists everything below `workspace` except `.git` entries and ignored paths, without
/// following symlinks (a link is recorded as a link, never entered).
fn list_walk(
    workspace: &Path,
    ignore: &IgnoreSet,
    max_files: usize,
) -> Result<Listing, FingerprintError> {
    let mut paths = Vec::new();
    let walker = walkdir::WalkDir::new(workspace)
        .min_depth(1)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            if e.file_name() == ".git" {
                return false;
            }
            let rel = e.path().strip_prefix(workspace).unwrap_or(e.path());
            !ignore.matches(&rel.to_string_lossy(), e.file_type().is_dir())
        });
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let path = e.path().unwrap_or(workspace).to_path_buf();
                match e.into_io_error() {
                    // Vanished while walking: absent, as it would be a moment later.
                    Some(io) if io.kind() == io::ErrorKind::NotFound => continue,
                    Some(source) => {
                        return Err(FingerprintError::Io {
                            action: "list directory",
                            path,
                            source,
                        });
                    }
                    None => continue, // loops need followed links; none are followed
                }
            }
        };
        // Directories are not entries: as in git, a directory shows through the files in it,
        // so a step may create one to hold an ignored artifact.
        if entry.file_type().is_dir() {
            continue;
        }
        if paths.len() == max_files {
            return Err(too_many(workspace, max_files));
        }
        let rel = entry.path().strip_prefix(workspace).unwrap_or(entry.path());
        paths.push(rel.as_os_str().as_bytes().to_vec());
    }
    paths.sort_unstable();
    // Without git to ask, a repository at the workspace root is still read directly.
    let dot_git = workspace.join(".git");
    let git_state = if dot_git.is_dir() {
        let repo = Repo {
            git_dir: dot_git.clone(),
            common_dir: dot_git,
            prefix: String::new(),
        };
        repo_state(&repo, IndexFingerprint::FileContent)?
    } else {
        Vec::new()
    };
    Ok(Listing {
        method: Method::Walk,
        paths,
        git_state,
    })
}

// ---------------------------------------------------------------------------------------------
// Git

/// Where a work tree's repository keeps HEAD and the index (`git_dir`) and refs and config
/// (`common_dir`; different from `git_dir` in a linked worktree).
struct Repo {
    git_dir: PathBuf,
    common_dir: PathBuf,
    /// The workspace's path below the top of the work tree, `/`-terminated, or empty.
    prefix: String,
}

fn git(workspace: &Path, args: &[&str]) -> io::Result<Output> {
    // Fingerprinting must not write: no opportunistic index refresh.
    crate::exec::git_output(workspace, args, &[("GIT_OPTIONAL_LOCKS", "0")])
}

fn git_failed(workspace: &Path, args: &[&str], message: String) -> FingerprintError {
    FingerprintError::Git {
        workspace: workspace.to_path_buf(),
        args: args.join(" "),
        message,
    }
}

/// Escapes the characters a gitignore pattern treats specially, so `text` matches literally.
fn escape_gitignore(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '*' | '?' | '[' | ' ' | '!' | '#') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The repository whose work tree holds `workspace`, or `None` (walk instead) when git is not
/// installed, the workspace is not in a work tree, git refuses it (an unsafe owner), or the
/// workspace itself is git-ignored in a parent repository (git would list nothing in it).
fn discover_repo(workspace: &Path) -> Result<Option<Repo>, FingerprintError> {
    // (Not `--path-format=absolute`: it needs git 2.31; the common dir is relative to the
    // current directory, which is the workspace.)
    const ARGS: &[&str] = &[
        "rev-parse",
        "--is-inside-work-tree",
        "--absolute-git-dir",
        "--git-common-dir",
        "--show-prefix",
    ];
    let out = match git(workspace, ARGS) {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None), // no git installed
        Err(e) => return Err(git_failed(workspace, ARGS, e.to_string())),
    };
    if !out.status.success() {
        return Ok(None);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let (Some("true"), Some(git_dir), Some(common_dir), prefix) =
        (lines.next(), lines.next(), lines.next(), lines.next())
    else {
        return Ok(None);
    };
    let repo = Repo {
        git_dir: PathBuf::from(git_dir),
        common_dir: workspace.join(common_dir),
        prefix: prefix.unwrap_or_default().to_owned(),
    };
    if !repo.prefix.is_empty() {
        const CHECK: &[&str] = &["check-ignore", "-q", "."];
        let ignored = git(workspace, CHECK)
            .map_err(|e| git_failed(workspace, CHECK, e.to_string()))?
            .status;
        // 1: not ignored. 0: ignored. Anything else: git could not tell; walk to be safe.
        if ignored.code() != Some(1) {
            return Ok(None);
        }
    }
    Ok(Some(repo))
}

/// Lists tracked and untracked-but-not-ignored files below `workspace` with one `git
/// ls-files`, and fingerprints the index from the same output.
fn list_git(
    workspace: &Path,
    repo: &Repo,
    ignore: &IgnoreSet,
    max_files: usize,
) -> Result<Listing, FingerprintError> {
    // -t tags each record ("H " tracked, "? " untracked, ...); -s adds "mode oid stage\t" to
    // tracked ones, which is what the index means (its cached stat data is not). The exclude
    // keeps git from listing the engine's own (possibly large, never gitignored) directory;
    // command-line excludes are anchored at the top of the work tree, hence the prefix.
    let engine_dir = format!("--exclude=/{}{ENGINE_DIR}", escape_gitignore(&repo.prefix));
    let args = [
        "ls-files",
        "-z",
        "-t",
        "-s",
        "--cached",
        "--others",
        "--exclude-standard",
        &engine_dir,
    ];
    let out = git(workspace, &args).map_err(|e| git_failed(workspace, &args, e.to_string()))?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(git_failed(workspace, &args, message));
    }
    let mut index = Fnv1a::new();
    let mut index_len = 0u64;
    let mut dir_cache = HashMap::new();
    let mut paths = Vec::new();
    for record in out.stdout.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let Some((&tag, rest)) = record.split_first() else {
            continue;
        };
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        let path = if tag == b'?' {
            rest
        } else {
            index.write(rest);
            index.write(&[0]);
            index_len += rest.len() as u64 + 1;
            match rest.iter().position(|&b| b == b'\t') {
                Some(tab) => &rest[tab + 1..],
                None => rest,
            }
        };
        // A nested repository is listed as "dir/": one directory entry.
        let (path, is_dir) = match path.strip_suffix(b"/") {
            Some(dir) => (dir, true),
            None => (path, false),
        };
        if ignore.matches_with_parents(&String::from_utf8_lossy(path), is_dir, &mut dir_cache) {
            continue;
        }
        paths.push(path.to_vec());
    }
    paths.sort_unstable();
    paths.dedup(); // an unmerged path is listed once per stage
    if paths.len() > max_files {
        return Err(too_many(workspace, max_files));
    }
    let index = IndexFingerprint::Listing(Entry {
        kind: Kind::File,
        meta: Meta {
            size: index_len,
            ..Meta::default()
        },
        hash: Some(index.finish()),
    });
    Ok(Listing {
        method: Method::Git,
        paths,
        git_state: repo_state(repo, index)?,
    })
}

enum IndexFingerprint {
    /// From `git ls-files -s`: entries only.
    Listing(Entry),
    /// The index file's bytes, when git is not there to read it (nor to refresh it).
    FileContent,
}

/// The repository state a plan-mode agent changes by committing, checking out, staging,
/// branching or configuring: HEAD, the index, packed-refs, loose refs, config and
/// info/exclude (which hides files from the listing), each by content.
fn repo_state(
    repo: &Repo,
    index: IndexFingerprint,
) -> Result<Vec<(Vec<u8>, Entry)>, FingerprintError> {
    let mut state = Vec::new();
    let mut read = |dir: &Path, rel: &str| -> Result<(), FingerprintError> {
        let path = dir.join(rel);
        match fs::read(&path) {
            Ok(bytes) => state.push((format!(".git/{rel}").into_bytes(), Entry::content(&bytes))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(FingerprintError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        }
        Ok(())
    };
    read(&repo.git_dir, "HEAD")?;
    if matches!(index, IndexFingerprint::FileContent) {
        read(&repo.git_dir, "index")?;
    }
    for rel in ["packed-refs", "config", "info/exclude"] {
        read(&repo.common_dir, rel)?;
    }
    let refs = repo.common_dir.join("refs");
    for entry in walkdir::WalkDir::new(&refs).min_depth(1) {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e)
                if e.io_error()
                    .is_some_and(|io| io.kind() == io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(e) => {
                let path = e.path().unwrap_or(&refs).to_path_buf();
                return Err(FingerprintError::Io {
                    action: "list directory",
                    path,
                    source: e
                        .into_io_error()
                        .unwrap_or_else(|| io::Error::other("loop")),
                });
            }
        };
        if entry.file_type().is_file() {
            let rel = entry
                .path()
                .strip_prefix(&repo.common_dir)
                .unwrap_or(entry.path());
            read(&repo.common_dir, &rel.to_string_lossy())?;
        }
    }
    if let IndexFingerprint::Listing(entry) = index {
        state.push((b".git/index".to_vec(), entry));
    }
    Ok(state)
}

// ---------------------------------------------------------------------------------------------
// Ignore patterns

#[derive(Debug, Clone)]
struct IgnoreSet {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    matcher: Matcher,
    dir_only: bool,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// No glob metacharacters: a string compare (most declared artifact paths).
    Literal(String),
    Glob(glob::Pattern),
}

const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// Makes absolute patterns below `workspace` (a declared artifact given as a full path)
/// workspace-relative; every other pattern is already relative, a leading `/` anchoring it at
/// the workspace root as in .gitignore.
fn relative_patterns(workspace: &Path, patterns: &[String]) -> Vec<String> {
    patterns
        .iter()
        .map(|p| match Path::new(p).strip_prefix(workspace) {
            Ok(rel) if Path::new(p).is_absolute() && !rel.as_os_str().is_empty() => {
                let trailing = if p.ends_with('/') { "/" } else { "" };
                format!("{}{trailing}", rel.display())
            }
            _ => p.clone(),
        })
        .collect()
}

impl IgnoreSet {
    fn new(patterns: &[String]) -> Result<IgnoreSet, FingerprintError> {
        let rules = std::iter::once(ENGINE_DIR)
            .chain(patterns.iter().map(String::as_str))
            .map(Rule::parse)
            .collect::<Result<_, _>>()?;
        Ok(IgnoreSet { rules })
    }

    /// Whether a rule matches `path` itself (its parents are the caller's business: a walk
    /// never descends into an ignored directory).
    fn matches(&self, path: &str, is_dir: bool) -> bool {
        self.rules.iter().any(|r| r.matches(path, is_dir))
    }

    /// Whether a rule matches `path` or any directory above it; `cache` remembers directories.
    fn matches_with_parents(
        &self,
        path: &str,
        is_dir: bool,
        cache: &mut HashMap<String, bool>,
    ) -> bool {
        let parent_ignored = match path.rsplit_once('/') {
            Some((parent, _)) => match cache.get(parent) {
                Some(&ignored) => ignored,
                None => {
                    let ignored = self.matches_with_parents(parent, true, cache);
                    cache.insert(parent.to_owned(), ignored);
                    ignored
                }
            },
            None => false,
        };
        parent_ignored || self.matches(path, is_dir)
    }
}

impl Rule {
    fn parse(pattern: &str) -> Result<Rule, FingerprintError> {
        let invalid = |message: &str| FingerprintError::Pattern {
            pattern: pattern.to_owned(),
            message: message.to_owned(),
        };
        let mut text = pattern.trim_start_matches("./").trim_start_matches('/');
        let dir_only = text.ends_with('/');
        text = text.trim_end_matches('/');
        if text.is_empty() {
            return Err(invalid("it matches the whole workspace"));
        }
        let matcher = if text.contains(['*', '?', '[']) {
            Matcher::Glob(glob::Pattern::new(text).map_err(|e| invalid(e.msg))?)
        } else {
            Matcher::Literal(text.to_owned())
        };
        Ok(Rule { matcher, dir_only })
    }

    fn matches(&self, path: &str, is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        match &self.matcher {
            Matcher::Literal(literal) => literal == path,
            Matcher::Glob(glob) => glob.matches_with(path, MATCH),
        }
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn has_git() -> bool {
        Command::new("git").arg("--version").output().is_ok()
    }

    fn run_git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@example.com",
                "-c",
                "commit.gpgsign=false",
                // No background gc competing with the timing tests.
                "-c",
                "gc.auto=0",
                "-c",
                "maintenance.auto=false",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn git_repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        run_git(dir.path(), &["init", "-q"]);
        dir
    }

    fn walk() -> Options {
        Options {
            use_git: false,
            ..Options::default()
        }
    }

    fn with_ignore(mut options: Options, patterns: &[&str]) -> Options {
        options.ignore = patterns.iter().map(|p| p.to_string()).collect();
        options
    }

    /// The same scenario in a plain directory (walk) and, where git exists, a fresh repository.
    fn workspaces() -> Vec<(tempfile::TempDir, Options, Method)> {
        let mut all = vec![(tempfile::tempdir().unwrap(), walk(), Method::Walk)];
        if has_git() {
            all.push((git_repo(), Options::default(), Method::Git));
        }
        all
    }

    fn changes(before: &Snapshot) -> Vec<(String, ChangeKind)> {
        before
            .changes()
            .unwrap()
            .into_iter()
            .map(|c| (c.path, c.kind))
            .collect()
    }

    fn one(path: &str, kind: ChangeKind) -> Vec<(String, ChangeKind)> {
        vec![(path.to_owned(), kind)]
    }

    #[test]
    fn no_change_gives_an_empty_diff() {
        for (dir, options, method) in workspaces() {
            write(dir.path(), "a.txt", "a");
            write(dir.path(), "src/lib.rs", "fn main() {}");
            symlink("a.txt", dir.path().join("link")).unwrap();
            let before = snapshot(dir.path(), &options).unwrap();
            assert_eq!(before.method(), method);
            assert!(before.len() >= 3);
            assert_eq!(changes(&before), [], "{method:?}");
        }
    }

    #[test]
    fn added_removed_and_modified_files_are_detected() {
        for (dir, options, method) in workspaces() {
            let root = dir.path();
            write(root, "keep.txt", "keep");
            write(root, "gone.txt", "gone");
            write(root, "edit.txt", "short");
            let before = snapshot(root, &options).unwrap();
            write(root, "new/file.txt", "new");
            fs::remove_file(root.join("gone.txt")).unwrap();
            write(root, "edit.txt", "longer text");
            let expected = [
                ("edit.txt".to_owned(), ChangeKind::Modified),
                ("gone.txt".to_owned(), ChangeKind::Removed),
                ("new/file.txt".to_owned(), ChangeKind::Added),
            ];
            assert_eq!(changes(&before), expected, "{method:?}");
        }
    }

    #[test]
    fn a_mode_change_is_detected() {
        for (dir, options, _) in workspaces() {
            write(dir.path(), "run.sh", "echo hi");
            let before = snapshot(dir.path(), &options).unwrap();
            fs::set_permissions(dir.path().join("run.sh"), fs::Permissions::from_mode(0o755))
                .unwrap();
            assert_eq!(changes(&before), one("run.sh", ChangeKind::Modified));
        }
    }

    #[test]
    fn a_retargeted_symlink_is_detected() {
        for (dir, options, _) in workspaces() {
            write(dir.path(), "a", "a");
            write(dir.path(), "b", "b");
            symlink("a", dir.path().join("link")).unwrap();
            let before = snapshot(dir.path(), &options).unwrap();
            fs::remove_file(dir.path().join("link")).unwrap();
            symlink("b", dir.path().join("link")).unwrap();
            assert_eq!(changes(&before), one("link", ChangeKind::Modified));
        }
    }

    #[test]
    fn a_file_replaced_by_a_symlink_is_a_type_change() {
        for (dir, options, _) in workspaces() {
            write(dir.path(), "a", "a");
            let before = snapshot(dir.path(), &options).unwrap();
            fs::remove_file(dir.path().join("a")).unwrap();
            symlink("/etc/hostname", dir.path().join("a")).unwrap();
            assert_eq!(changes(&before), one("a", ChangeKind::TypeChanged));
        }
    }

    #[test]
    fn symlinks_are_not_followed_out_of_the_workspace() {
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret/file", "x");
        for (dir, options, _) in workspaces() {
            symlink(outside.path(), dir.path().join("out")).unwrap();
            let before = snapshot(dir.path(), &options).unwrap();
            let paths: Vec<_> = before
                .entries
                .keys()
                .filter(|k| !k.starts_with(b".git/"))
                .collect();
            assert_eq!(paths, [b"out"]);
            write(outside.path(), "secret/other", "y");
            assert_eq!(changes(&before), []);
        }
    }

    #[test]
    fn a_rewrite_that_restores_the_mtime_is_detected() {
        for (dir, options, _) in workspaces() {
            let path = dir.path().join("f.txt");
            write(dir.path(), "f.txt", "aaaa");
            let mtime = fs::metadata(&path).unwrap().modified().unwrap();
            let before = snapshot(dir.path(), &options).unwrap();
            write(dir.path(), "f.txt", "bbbb");
            let file = fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(mtime).unwrap();
            assert_eq!(changes(&before), one("f.txt", ChangeKind::Modified));
        }
    }

    /// The racy-git case: a same-size rewrite within one timestamp tick leaves size, mtime,
    /// ctime and inode as they were. This filesystem's ticks are finer than the test, so the
    /// "after" timestamps are set back to the "before" ones, as a coarse filesystem would leave
    /// them; only the content hashes can tell.
    #[test]
    fn a_same_size_write_within_one_tick_is_detected() {
        for (dir, options, _) in workspaces() {
            write(dir.path(), "racy.txt", "aaaa");
            write(dir.path(), "calm.txt", "cccc");
            let before = snapshot(dir.path(), &options).unwrap();
            assert!(
                before.entries[&b"racy.txt".to_vec()].hash.is_some(),
                "fresh file hashed"
            );
            write(dir.path(), "racy.txt", "bbbb");
            let mut after = before.rescan().unwrap();
            for name in ["racy.txt", "calm.txt"] {
                let key = name.as_bytes().to_vec();
                after.entries.insert(
                    key.clone(),
                    Entry {
                        meta: before.entries[&key].meta.clone(),
                        ..after.entries[&key].clone()
                    },
                );
            }
            let found: Vec<_> = diff(&before, &after).into_iter().map(|c| c.path).collect();
            assert_eq!(found, ["racy.txt"]);
        }
    }

    #[test]
    fn files_older_than_the_racy_window_are_not_hashed_but_rescans_rehash() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "old.txt", "old");
        let ignore = IgnoreSet::new(&[]).unwrap();
        let later = now_ns() + 10 * RACY_WINDOW_NS;
        let calm = take(dir.path(), &walk(), ignore.clone(), None, later).unwrap();
        assert_eq!(calm.entries[&b"old.txt".to_vec()].hash, None);
        let fresh = snapshot(dir.path(), &walk()).unwrap();
        let rescan = take(dir.path(), &walk(), ignore, Some(&fresh.entries), later).unwrap();
        assert!(rescan.entries[&b"old.txt".to_vec()].hash.is_some());
    }

    #[test]
    fn the_engine_dir_and_ignore_patterns_are_not_fingerprinted() {
        for (dir, options, _) in workspaces() {
            let root = dir.path();
            let options = with_ignore(options, &["out/", "**/*.log", "notes.md", "gen"]);
            write(root, "src/a.rs", "a");
            let before = snapshot(root, &options).unwrap();
            for rel in [
                ".orchestrate/runs/1/state.json",
                "out/report.md",
                "src/deep/debug.log",
                "top.log",
                "notes.md",
                "gen/x/y.rs",
            ] {
                write(root, rel, "written by the step");
            }
            write(root, "outside.md", "not declared");
            write(root, "src/notes.md", "patterns are anchored at the root");
            assert_eq!(
                changes(&before),
                [
                    ("outside.md".to_owned(), ChangeKind::Added),
                    ("src/notes.md".to_owned(), ChangeKind::Added),
                ]
            );
        }
    }

    #[test]
    fn patterns_match_paths_and_their_parents() {
        let set = IgnoreSet::new(&["build/".into(), "docs/*.md".into(), "a/**/z".into()]).unwrap();
        let ignored = |p: &str, dir: bool| set.matches_with_parents(p, dir, &mut HashMap::new());
        assert!(ignored(".orchestrate/x", false));
        assert!(ignored("build/x/y", false));
        assert!(!ignored("build", false));
        assert!(ignored("build", true));
        assert!(!ignored("src/build/x", false));
        assert!(ignored("docs/a.md", false));
        assert!(!ignored("docs/sub/a.md", false));
        assert!(ignored("a/z", false));
        assert!(ignored("a/b/c/z/file", false));
        assert!(!ignored("orchestrate/x", false));
    }

    #[test]
    fn absolute_patterns_below_the_workspace_become_relative() {
        let ws = Path::new("/w/ws");
        let given = [
            "/w/ws/out/".into(),
            "/w/ws/a.md".into(),
            "/top".into(),
            "b/*".into(),
        ];
        assert_eq!(
            relative_patterns(ws, &given),
            ["out/", "a.md", "/top", "b/*"]
        );
    }

    #[test]
    fn an_invalid_or_empty_pattern_is_an_error() {
        let err = snapshot(Path::new("/"), &with_ignore(walk(), &["a/[b"])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed to parse ignore pattern `a/[b`"),
            "{err}"
        );
        let err = IgnoreSet::new(&["/".into()]).unwrap_err();
        assert!(
            err.to_string().contains("matches the whole workspace"),
            "{err}"
        );
    }

    #[test]
    fn more_files_than_max_files_is_an_error_naming_the_workspace() {
        for (dir, mut options, _) in workspaces() {
            for i in 0..5 {
                write(dir.path(), &format!("f{i}"), "x");
            }
            options.max_files = 3;
            let err = snapshot(dir.path(), &options).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("failed to fingerprint "), "{text}");
            assert!(text.contains(&dir.path().display().to_string()), "{text}");
        }
    }

    #[test]
    fn a_missing_workspace_is_an_error_naming_it() {
        let err = snapshot(Path::new("/nonexistent/ws"), &walk()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ws"), "{err}");
    }

    #[test]
    fn git_ignored_files_are_skipped_but_untracked_files_are_seen() {
        if !has_git() {
            return;
        }
        let repo = git_repo();
        let root = repo.path();
        write(root, ".gitignore", "target/\n*.tmp\n");
        write(root, "tracked.rs", "t");
        write(root, "target/debug/big", "ignored");
        run_git(root, &["add", "."]);
        run_git(root, &["commit", "-q", "-m", "init"]);
        write(root, "untracked.rs", "u");
        let before = snapshot(root, &Options::default()).unwrap();
        assert!(before.entries.contains_key(b"untracked.rs".as_slice()));
        assert!(!before.entries.keys().any(|k| k.starts_with(b"target")));
        write(root, "target/debug/more", "ignored");
        write(root, "scratch.tmp", "ignored");
        write(root, "brand-new.rs", "agent wrote this");
        assert_eq!(changes(&before), one("brand-new.rs", ChangeKind::Added));
    }

    #[test]
    fn info_exclude_cannot_hide_a_new_file() {
        if !has_git() {
            return;
        }
        let repo = git_repo();
        let before = snapshot(repo.path(), &Options::default()).unwrap();
        write(repo.path(), "sneaky.rs", "x");
        write(repo.path(), ".git/info/exclude", "sneaky.rs\n");
        assert_eq!(
            changes(&before),
            one(".git/info/exclude", ChangeKind::Modified)
        );
    }

    #[test]
    fn git_commit_checkout_and_add_are_detected() {
        if !has_git() {
            return;
        }
        let repo = git_repo();
        let root = repo.path();
        write(root, "a.rs", "a");
        run_git(root, &["add", "."]);
        run_git(root, &["commit", "-q", "-m", "init"]);

        let before = snapshot(root, &Options::default()).unwrap();
        run_git(
            root,
            &["commit", "-q", "--allow-empty", "-m", "plan-mode commit"],
        );
        let found = changes(&before);
        assert!(
            found
                .iter()
                .any(|(p, k)| p.starts_with(".git/refs/heads/") && *k == ChangeKind::Modified),
            "{found:?}"
        );

        let before = snapshot(root, &Options::default()).unwrap();
        run_git(root, &["checkout", "-q", "-b", "other"]);
        let found = changes(&before);
        assert!(
            found.contains(&(".git/HEAD".to_owned(), ChangeKind::Modified)),
            "{found:?}"
        );

        write(root, "b.rs", "b");
        let before = snapshot(root, &Options::default()).unwrap();
        run_git(root, &["add", "b.rs"]);
        assert_eq!(changes(&before), one(".git/index", ChangeKind::Modified));
    }

    #[test]
    fn a_commit_in_a_linked_worktree_is_detected() {
        if !has_git() {
            return;
        }
        let repo = git_repo();
        write(repo.path(), "a.rs", "a");
        run_git(repo.path(), &["add", "."]);
        run_git(repo.path(), &["commit", "-q", "-m", "init"]);
        let parent = tempfile::tempdir().unwrap();
        let wt = parent.path().join("wt");
        run_git(
            repo.path(),
            &["worktree", "add", "-q", "-b", "side", wt.to_str().unwrap()],
        );
        let before = snapshot(&wt, &Options::default()).unwrap();
        assert_eq!(before.method(), Method::Git);
        run_git(
            &wt,
            &["commit", "-q", "--allow-empty", "-m", "in the worktree"],
        );
        assert_eq!(
            changes(&before),
            one(".git/refs/heads/side", ChangeKind::Modified)
        );
    }

    /// Regression: `git status` rewrites the index's cached stat data; a read-only step that
    /// runs it has not changed the repository.
    #[test]
    fn git_status_refreshing_the_index_is_not_a_change() {
        if !has_git() {
            return;
        }
        let repo = git_repo();
        let root = repo.path();
        write(root, "a.rs", "a");
        run_git(root, &["add", "."]);
        run_git(root, &["commit", "-q", "-m", "init"]);
        // Make the index's stat data stale so that status has something to refresh.
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(root.join("a.rs"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let index = root.join(".git/index");
        let index_before = fs::metadata(&index).unwrap().modified().unwrap();
        let before = snapshot(root, &Options::default()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        run_git(root, &["status", "--porcelain"]);
        assert_ne!(
            fs::metadata(&index).unwrap().modified().unwrap(),
            index_before,
            "status refreshed"
        );
        assert_eq!(changes(&before), []);
    }

    #[test]
    fn a_workspace_in_a_subdirectory_of_a_repository_lists_relative_paths() {
        if !has_git() {
            return;
        }
        let repo = git_repo();
        write(repo.path(), "outside.rs", "o");
        write(repo.path(), "ws/inside.rs", "i");
        let ws = repo.path().join("ws");
        let before = snapshot(&ws, &Options::default()).unwrap();
        assert_eq!(before.method(), Method::Git);
        assert!(before.entries.contains_key(b"inside.rs".as_slice()));
        write(repo.path(), "outside2.rs", "not in the workspace");
        write(&ws, "inside2.rs", "in the workspace");
        assert_eq!(changes(&before), one("inside2.rs", ChangeKind::Added));
    }

    #[test]
    fn git_is_not_asked_to_list_the_engine_dir() {
        if !has_git() {
            return;
        }
        let repo = git_repo();
        let ws = repo.path().join("sub [1]");
        write(&ws, ".orchestrate/runs/r1/events.jsonl", "{}");
        write(&ws, "a.rs", "a");
        let Some(found) = discover_repo(&ws).unwrap() else {
            panic!("not a repository");
        };
        assert_eq!(found.prefix, "sub [1]/");
        let listing = list_git(&ws, &found, &IgnoreSet { rules: Vec::new() }, 10).unwrap();
        assert_eq!(listing.paths, [b"a.rs"]);
    }

    #[test]
    fn gitignore_escaping() {
        assert_eq!(escape_gitignore("a b/[x]*?/"), "a\\ b/\\[x]\\*\\?/");
    }

    /// Regression guard: git lists nothing inside an ignored directory, so a workspace there
    /// must be walked, not reported empty.
    #[test]
    fn a_workspace_git_ignores_is_walked() {
        if !has_git() {
            return;
        }
        let repo = git_repo();
        write(repo.path(), ".gitignore", "runs/\n");
        write(repo.path(), "runs/ws/file.rs", "f");
        let ws = repo.path().join("runs/ws");
        let before = snapshot(&ws, &Options::default()).unwrap();
        assert_eq!(before.method(), Method::Walk);
        assert!(before.entries.contains_key(b"file.rs".as_slice()));
        write(&ws, "file.rs", "changed");
        assert_eq!(changes(&before), one("file.rs", ChangeKind::Modified));
    }

    #[test]
    fn changes_serialize_as_snake_case() {
        let change = Change {
            path: "a/b".into(),
            kind: ChangeKind::TypeChanged,
        };
        assert_eq!(
            serde_json::to_string(&change).unwrap(),
            r#"{"path":"a/b","kind":"type_changed"}"#
        );
        assert_eq!(change.to_string(), "a/b (type changed)");
    }

    fn make_tree(root: &Path, files: usize) {
        for i in 0..files {
            write(
                root,
                &format!("d{:03}/e{:02}/f{i}.rs", i % 250, i % 20),
                "fn x() {}\n",
            );
        }
    }

    fn time_snapshots(files: usize) {
        let mut cases = vec![(tempfile::tempdir().unwrap(), walk())];
        if has_git() {
            let repo = git_repo();
            make_tree(repo.path(), files);
            run_git(repo.path(), &["add", "."]);
            run_git(repo.path(), &["commit", "-q", "-m", "tree"]);
            cases.push((repo, Options::default()));
        }
        make_tree(cases[0].0.path(), files);
        for (dir, options) in cases {
            // Outside the racy window, as a tree that existed before the step would be.
            let later = now_ns() + 10 * RACY_WINDOW_NS;
            let ignore = IgnoreSet::new(&[]).unwrap();
            let mut times = Vec::new();
            let mut snap = None;
            for _ in 0..5 {
                let start = Instant::now();
                snap = Some(take(dir.path(), &options, ignore.clone(), None, later).unwrap());
                times.push(start.elapsed());
            }
            let snap = snap.unwrap();
            times.sort();
            let start = Instant::now();
            let fresh = snapshot(dir.path(), &options).unwrap();
            let fresh_elapsed = start.elapsed();
            eprintln!(
                "fingerprint: {files} files, {:?}: {} entries, median {:?} (min {:?}, max {:?}) \
                 of 5 unchanged snapshots; {fresh_elapsed:?} for `snapshot`, which hashes files \
                 written in the last {} s",
                snap.method(),
                snap.len(),
                times[2],
                times[0],
                times[4],
                RACY_WINDOW_NS / 1_000_000_000,
            );
            assert_eq!(diff(&snap, &fresh), []);
        }
    }

    /// Prints (does not assert) how long a 20,000-file snapshot takes.
    #[test]
    fn snapshot_time_for_20000_files() {
        time_snapshots(20_000);
    }

    /// `cargo test --release -- --ignored --nocapture snapshot_time_for_50000`
    #[test]
    #[ignore = "slow; run for the benchmark"]
    fn snapshot_time_for_50000_files() {
        time_snapshots(50_000);
    }
}
