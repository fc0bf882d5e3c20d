//! Durable file operations and workspace path rules.
//!
//! Owns: atomic replace (temp file, fsync, rename, fsync the directory), group commit of fsyncs
//! (`group_sync`), rename without replacing, whether any process has a file open for writing
//! (`writers`, by a read lease), resolving user paths against WORKSPACE so that none escapes it,
//! and the same check for the records readers open (`check_inside`). Does not know what the
//! files mean.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// Writes `bytes` to `path` so that a reader (or a crash) sees the old file or the new one,
/// never a mix: a uniquely named temp file in the same directory, fsync, rename over `path`,
/// fsync the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_and_rename(path, bytes, true)
}

/// The temp-file-then-rename write both replacements share; `durable` adds the fsyncs.
fn write_and_rename(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = parent_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", crate::process::own_pid()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&tmp, path)?;
        if durable {
            fsync_dir(&dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes a new file in a directory no reader looks into until the caller publishes it (by a
/// rename of the directory), and fsyncs it. No temp file and no fsync of the directory: the
/// file's own fsync makes its new entry durable too on Linux's journaling filesystems (ext4,
/// xfs, btrfs) and on ext4 without a journal (which syncs the parent of a new file). A crash
/// mid-write can leave a partial file, so whoever finds one unpublished must check it parses.
pub fn write_unpublished(path: &Path, bytes: &[u8]) -> io::Result<()> {
    group_sync(write_unsynced(path, bytes)?)
}

/// Writes a new file in a directory no reader looks into until the caller publishes it, without
/// syncing it: the caller syncs it (with others, [`sync_together`]) before publishing.
pub fn write_unsynced(path: &Path, bytes: &[u8]) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)?;
    Ok(file)
}

/// fsyncs every file, their writeback started together first so that a journaling filesystem
/// commits them in one transaction; the error of each file's fsync, in order.
pub fn sync_together(files: &[&File]) -> Vec<Option<io::Error>> {
    use std::os::fd::AsRawFd;
    if files.len() > 1 {
        for file in files {
            // SAFETY: a valid descriptor; the call only starts writeback of its dirty pages.
            unsafe {
                libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
    }
    files.iter().map(|file| file.sync_all().err()).collect()
}

/// fsyncs `file` together with the other files this process is syncing at about the same time
/// (group commit): one leader starts the writeback of every waiting file, then fsyncs each, so
/// that a journaling filesystem commits them all in one transaction instead of one each; the
/// others wait for the leader. Every file still gets its own fsync, whatever the filesystem.
pub(crate) fn group_sync(file: File) -> io::Result<()> {
    static GROUP: GroupSync = GroupSync::new();
    GROUP.sync(file)
}

struct GroupSync {
    state: std::sync::Mutex<GroupState>,
    done: std::sync::Condvar,
}

struct GroupState {
    /// Files waiting for the next leader, with their tickets.
    waiting: Vec<(u64, File)>,
    next_ticket: u64,
    /// Every ticket below this has been synced (or failed, see `failed`).
    synced_below: u64,
    leading: bool,
    /// When the last batch finished syncing.
    last_end: Option<Instant>,
    failed: Vec<(u64, io::Error)>,
}

impl GroupSync {
    const fn new() -> Self {
        GroupSync {
            state: std::sync::Mutex::new(GroupState {
                waiting: Vec::new(),
                next_ticket: 0,
                synced_below: 0,
                leading: false,
                last_end: None,
                failed: Vec::new(),
            }),
            done: std::sync::Condvar::new(),
        }
    }

    fn sync(&self, file: File) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push((ticket, file));
        loop {
            if state.synced_below > ticket {
                return match state.failed.iter().position(|(t, _)| *t == ticket) {
                    Some(at) => Err(state.failed.swap_remove(at).1),
                    None => Ok(()),
                };
            }
            if state.leading {
                state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            state.leading = true;
            if state
                .last_end
                .is_some_and(|end| end.elapsed() < BUSY_WITHIN)
            {
                drop(state);
                std::thread::sleep(GROUP_WINDOW);
                state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            }
            let batch = std::mem::take(&mut state.waiting);
            let below = state.next_ticket;
            drop(state);
            let failures = sync_all_of(batch);
            state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.failed.extend(failures);
            state.synced_below = below;
            state.last_end = Some(Instant::now());
            state.leading = false;
            self.done.notify_all();
        }
    }
}

/// How long a leader gathers files before syncing, when syncs come back to back: a journal
/// commit (~0.4 ms on ext4 here) then covers every completion of the window. Measured on a
/// journaled ext4 at 2 slots (BENCHMARKS.md): 0 ms 4,568 commits per 5,000 tasks, 1 ms 1,975,
/// 3 ms 1,018, 5 ms 737; throughput levels off from 3 ms.
const GROUP_WINDOW: Duration = Duration::from_millis(3);

/// Syncs closer together than this count as back to back; a sync after a quiet spell (a lone
/// task, an agent's long step) starts at once.
const BUSY_WITHIN: Duration = Duration::from_millis(20);

/// Starts the writeback of every file (so that their blocks are allocated in the running
/// transaction), then fsyncs each: the first fsync commits them all.
fn sync_all_of(batch: Vec<(u64, File)>) -> Vec<(u64, io::Error)> {
    let files: Vec<&File> = batch.iter().map(|(_, file)| file).collect();
    let errors = sync_together(&files);
    batch
        .iter()
        .zip(errors)
        .filter_map(|((ticket, _), error)| error.map(|e| (*ticket, e)))
        .collect()
}

/// Replaces `path` by writing a temp file and renaming it over, without fsync: readers never see
/// a partial file, but a power loss may lose the new contents. For records that are caches of
/// a durable source (a run's state snapshot beside its event log).
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_and_rename(path, bytes, false)
}

/// Makes a directory's entries (creations, renames) durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Renames `from` to `to`, failing with `AlreadyExists` instead of replacing an existing `to`
/// (renameat2 with RENAME_NOREPLACE). A plain rename silently clobbers.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    // CWD makes the paths relative to the current directory as std does.
    Ok(renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE)?)
}

/// Whether some process has a file open for writing, as far as the system can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writers {
    /// No process has it open for writing.
    None,
    /// At least one process has it open for writing.
    Some,
    /// The system cannot tell: leases are disabled (`/proc/sys/fs/leases-enable`), the
    /// filesystem does not support them, or the file is another user's and this process lacks
    /// `CAP_LEASE`.
    Unknown,
}

/// Whether any process has `file` open for writing. Linux refuses a read lease
/// (`F_SETLEASE`, `F_RDLCK`) with `EAGAIN` exactly while some descriptor of the file is open for
/// writing, in any process; a lease that is granted is released at once. `file` must be open
/// read-only (a read lease is only granted on such a descriptor).
pub fn writers(file: &File) -> Writers {
    match with_read_lease(file, || ()) {
        Ok(()) => Writers::None,
        Err(err) if err.raw_os_error() == Some(libc::EAGAIN) => Writers::Some,
        Err(_) => Writers::Unknown,
    }
}

/// Runs `during` while holding a read lease on `file`.
///
/// A writer that opens the file meanwhile breaks the lease, and the kernel then signals the
/// holder: SIGIO by default, whose default action ends the process. The descriptor is told to
/// send SIGURG instead (ignored by default, handled by nothing here) for the lease's lifetime,
/// so a breaker costs nothing but its own short wait for the release.
#[cfg(target_os = "linux")]
fn with_read_lease<T>(file: &File, during: impl FnOnce() -> T) -> io::Result<T> {
    use std::os::fd::AsRawFd;
    // <asm-generic/fcntl.h>, the same on every Linux architecture; the libc crate lacks it.
    const F_SETSIG: libc::c_int = 10;
    let fd = file.as_raw_fd();
    let fcntl = |cmd: libc::c_int, arg: libc::c_int| -> io::Result<()> {
        // SAFETY: fcntl(2) on a descriptor `file` owns, with an integer argument.
        let rc = unsafe { libc::fcntl(fd, cmd, arg) };
        if rc == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    fcntl(F_SETSIG, libc::SIGURG)?;
    let taken = fcntl(libc::F_SETLEASE, libc::F_RDLCK);
    let result = taken.map(|()| {
        let value = during();
        // Releasing a lease we hold cannot fail; the descriptor's close would release it too.
        let _ = fcntl(libc::F_SETLEASE, libc::F_UNLCK);
        value
    });
    // Back to the default (SIGIO) so that the descriptor carries nothing of this check; no
    // lease is held any more, so no signal can come of it.
    let _ = fcntl(F_SETSIG, 0);
    result
}

#[cfg(not(target_os = "linux"))]
fn with_read_lease<T>(_file: &File, _during: impl FnOnce() -> T) -> io::Result<T> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// `path` as people read it: relative to `workspace` when inside it, else as it is.
pub fn relative(workspace: &Path, path: &Path) -> String {
    path.strip_prefix(workspace)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Removes `.` and `..` lexically, without touching the filesystem.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Why a user path was refused.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The path (after `..`, symlinks and `~`) lands outside the workspace.
    #[error("`{path}` resolves to {resolved}, outside the workspace {workspace}")]
    Escapes {
        /// The path as the user gave it.
        path: String,
        /// Where it resolves to.
        resolved: PathBuf,
        /// The workspace it had to stay inside.
        workspace: PathBuf,
    },
}

/// Names the workspace to a command run without `--workspace` (cron, scripts, and every step
/// process, so that an `orchestrate` a step runs finds its run's workspace even from a task's
/// worktree, where the search upward would stop at the checkout).
pub const WORKSPACE_ENV: &str = "ORCHESTRATE_WORKSPACE";

/// Resolves a user-declared path against WORKSPACE (the spec's rule) and refuses one that
/// leaves it, lexically (`../x`, `/etc/x`) or through a symlinked directory.
pub fn resolve_in_workspace(workspace: &Path, path: &str) -> Result<PathBuf, PathError> {
    let joined = normalize(&workspace.join(path));
    let escapes = |resolved: PathBuf| PathError::Escapes {
        path: path.to_string(),
        resolved,
        workspace: workspace.to_path_buf(),
    };
    if !joined.starts_with(workspace) {
        return Err(escapes(joined));
    }
    // The deepest existing ancestor decides where symlinks lead.
    let real_workspace = workspace
        .canonicalize()
        .unwrap_or_else(|_| workspace.to_path_buf());
    let mut existing = joined.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => return Ok(joined),
        }
    }
    if let Ok(real) = existing.canonicalize()
        && !real.starts_with(&real_workspace)
    {
        return Err(escapes(real));
    }
    Ok(joined)
}

/// Checks that an existing entry under WORKSPACE (a record in `processed/`, `failed/`,
/// `running/` or `.orchestrate/runs/`, or a file in one) stays inside it: the rule of
/// [`resolve_in_workspace`], for what readers are about to open. A symbolic link or `..` that
/// leads outside is refused; readers that serve records (the commands, a dashboard) must not
/// show what such an entry points to.
pub fn check_inside(workspace: &Path, path: &Path) -> Result<PathBuf, PathError> {
    let rel = path.strip_prefix(workspace).unwrap_or(path);
    resolve_in_workspace(workspace, &rel.to_string_lossy())
}

/// The first line of the file at `path` (its newline included), reading at most `limit` bytes:
/// a log's opening record without reading the whole log. `None` if it cannot be opened or read.
pub fn first_line(path: &Path, limit: u64) -> Option<String> {
    use std::io::{BufRead, Read};
    let file = File::open(path).ok()?;
    let mut first = String::new();
    io::BufReader::new(file)
        .take(limit)
        .read_line(&mut first)
        .ok()?;
    Some(first)
}

/// Reads a record file under WORKSPACE, refusing one that leads outside it ([`check_inside`]).
pub fn read_inside(workspace: &Path, path: &Path) -> Option<Vec<u8>> {
    check_inside(workspace, path).ok()?;
    std::fs::read(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_sync_answers_every_caller_with_its_own_result() {
        // 16 threads sync at once, every fourth one a pipe (fsync fails with EINVAL): each
        // regular file's caller gets Ok and each pipe's caller its own error, whatever batch
        // they landed in, and nobody waits forever.
        let dir = tempfile::tempdir().unwrap();
        let results: Vec<(usize, io::Result<()>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let path = dir.path().join(format!("f{i}"));
                    scope.spawn(move || {
                        if i % 4 == 0 {
                            let (reader, _writer) = io::pipe().unwrap();
                            let file = File::from(std::os::fd::OwnedFd::from(reader));
                            (i, group_sync(file))
                        } else {
                            let mut file = File::create(&path).unwrap();
                            file.write_all(b"x").unwrap();
                            (i, group_sync(file))
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, result) in results {
            if i % 4 == 0 {
                assert_eq!(
                    result.unwrap_err().raw_os_error(),
                    Some(libc::EINVAL),
                    "caller {i}"
                );
            } else {
                assert!(result.is_ok(), "caller {i}: {result:?}");
            }
        }
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn noreplace_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        assert_eq!(
            rename_noreplace(&a, &b).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(fs::read(&b).unwrap(), b"b");
    }

    #[test]
    fn records_that_lead_outside_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path();
        std::fs::write(outside.path().join("status.json"), "{}").unwrap();
        std::fs::create_dir_all(ws.join("processed/ok")).unwrap();
        std::fs::write(ws.join("processed/ok/status.json"), "{}").unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.join("processed/evil")).unwrap();
        assert!(check_inside(ws, &ws.join("processed/ok/status.json")).is_ok());
        assert!(check_inside(ws, &ws.join("processed/evil")).is_err());
        assert!(check_inside(ws, &ws.join("processed/evil/status.json")).is_err());
        assert!(check_inside(ws, &ws.join("processed/../../x")).is_err());
        assert!(read_inside(ws, &ws.join("processed/evil/status.json")).is_none());
        assert!(read_inside(ws, &ws.join("processed/ok/status.json")).is_some());
    }

    #[test]
    fn writers_are_seen_while_the_file_is_open_for_writing_and_not_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.task");
        let writer = File::create(&path).unwrap();
        let reader = File::open(&path).unwrap();
        assert_eq!(writers(&reader), Writers::Some);
        // Another reader changes nothing; the last writer's close does.
        let _other_reader = File::open(&path).unwrap();
        assert_eq!(writers(&reader), Writers::Some);
        drop(writer);
        assert_eq!(writers(&reader), Writers::None);
    }

    #[test]
    fn a_writer_breaking_the_lease_does_not_kill_the_holder() {
        // Opening the file for writing while the lease is held breaks it and makes the kernel
        // signal the holder (this process). With SIGIO, its default action, the test binary
        // would die here; a non-blocking open fails with EWOULDBLOCK instead of waiting.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.task");
        fs::write(&path, "a\n").unwrap();
        let reader = File::open(&path).unwrap();
        let opened = with_read_lease(&reader, || {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
                .map(drop)
        })
        .unwrap();
        assert_eq!(
            opened.unwrap_err().raw_os_error(),
            Some(libc::EWOULDBLOCK),
            "the open should have found the lease"
        );
        // Still alive, and the lease is gone: a writer opens at once.
        let writer = OpenOptions::new().write(true).open(&path).unwrap();
        assert_eq!(writers(&reader), Writers::Some);
        drop(writer);
    }

    #[test]
    fn paths_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().canonicalize().unwrap();
        assert!(resolve_in_workspace(&ws, "artifacts/x.md").is_ok());
        assert!(resolve_in_workspace(&ws, "a/../b").is_ok());
        assert!(resolve_in_workspace(&ws, "../outside").is_err());
        assert!(resolve_in_workspace(&ws, "/etc/passwd").is_err());
        std::os::unix::fs::symlink("/tmp", ws.join("link")).unwrap();
        assert!(resolve_in_workspace(&ws, "link/x").is_err());
    }
}
