//! Files that this engine process, or a process that started it, holds open for writing: writes
//! a readonly/plan step's workspace check must not blame on the step.
//!
//! Owns: walking this process and its ancestors (the shell that ran `orchestrate run … > run.jsonl`,
//! a harness writing its own log, a supervisor) through `/proc/PID/fd`, keeping the descriptors
//! whose access mode allows writing (`/proc/PID/fdinfo/N`), and naming their targets relative to
//! a workspace, as [`crate::fingerprint`] names paths. A step's processes are the engine's
//! descendants, never its ancestors, so nothing found here was opened by the step.
//!
//! Does not: see a writer that is neither the engine nor one of its ancestors (another terminal,
//! an editor, a sibling process of the engine's that its parent started), nor a file such a
//! process opened and closed again between two looks; those writes are still the step's as far
//! as this module can tell ([`crate::write_watch`] attributes them per process where fanotify
//! can be used). Nor does it tell apart a write through the held descriptor from the
//! step writing the same path: a file listed here is not checked at all. Processes this user may
//! not inspect (another user's, outside this pid namespace) are skipped. Off Linux (no `/proc`)
//! it finds nothing.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Ancestors followed at most: far above any real chain, a stop should `/proc` ever loop.
const MAX_ANCESTORS: usize = 64;

/// Workspace-relative, `/`-separated paths below `root` that this process or one of its
/// ancestors holds open for writing now.
pub fn held_for_writing(root: &Path) -> HashSet<String> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let mut found = HashSet::new();
    for pid in lineage() {
        for target in writable_targets(pid) {
            if let Ok(rel) = target.strip_prefix(&root)
                && !rel.as_os_str().is_empty()
            {
                found.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    found
}

/// This process, then its parent, grandparent, … up to the first process without a parent.
fn lineage() -> Vec<u32> {
    let mut pids = vec![std::process::id()];
    while pids.len() < MAX_ANCESTORS {
        let last = *pids.last().expect("not empty");
        match crate::process::parent_of(last) {
            Some(parent) if parent != 0 && !pids.contains(&parent) => pids.push(parent),
            _ => break,
        }
    }
    pids
}

/// The paths of `pid`'s descriptors open for writing (`O_WRONLY` or `O_RDWR`); sockets, pipes
/// and deleted files are left out.
fn writable_targets(pid: u32) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut targets = Vec::new();
    for entry in entries.flatten() {
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if !target.is_absolute() || target.to_string_lossy().ends_with(" (deleted)") {
            continue;
        }
        let fd = entry.file_name();
        let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy()));
        // A descriptor whose mode cannot be read (closed meanwhile) is not taken for a writer.
        let mode = info.ok().and_then(|info| access_mode(&info));
        if mode.is_some_and(|mode| mode != libc::O_RDONLY) {
            targets.push(target);
        }
    }
    targets
}

/// The access mode (`flags & O_ACCMODE`) of an fdinfo text's octal `flags:` line.
fn access_mode(fdinfo: &str) -> Option<i32> {
    let flags = fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))?
        .trim();
    i32::from_str_radix(flags, 8)
        .ok()
        .map(|flags| flags & libc::O_ACCMODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_mode_is_read_from_octal_flags() {
        assert_eq!(
            access_mode("pos:\t0\nflags:\t02100001\nmnt_id:\t30\n"),
            Some(libc::O_WRONLY)
        );
        assert_eq!(
            access_mode("pos:\t0\nflags:\t0100002\n"),
            Some(libc::O_RDWR)
        );
        assert_eq!(access_mode("flags:\t02100000\n"), Some(libc::O_RDONLY));
        assert_eq!(access_mode("pos:\t0\n"), None);
    }

    #[test]
    fn files_this_process_writes_are_found_and_files_it_reads_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("logs")).unwrap();
        let _written = fs::File::create(root.join("logs/run.jsonl")).unwrap();
        fs::write(root.join("read.txt"), "r").unwrap();
        let _read = fs::File::open(root.join("read.txt")).unwrap();
        let held = held_for_writing(root);
        assert!(held.contains("logs/run.jsonl"), "{held:?}");
        assert!(!held.contains("read.txt"), "{held:?}");
        assert!(held.iter().all(|path| !path.starts_with('/')), "{held:?}");
    }

    #[test]
    fn the_lineage_starts_here_and_climbs() {
        let pids = lineage();
        assert_eq!(pids[0], std::process::id());
        if Path::new("/proc/self/stat").exists() {
            assert_eq!(
                pids.get(1).copied(),
                Some(std::os::unix::process::parent_id())
            );
        }
    }
}
