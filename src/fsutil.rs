//! Durable file operations and workspace path rules.
//!
//! Owns: atomic replace (temp file, fsync, rename, fsync the directory), rename without
//! replacing, and resolving user paths against WORKSPACE so that none escapes it. Does not know
//! what the files mean.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

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
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
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
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
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
    let from_c = CString::new(from.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let to_c = CString::new(to.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call; AT_FDCWD
    // makes the paths relative to the current directory as std does.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
    #[error("`{path}` resolves to {resolved}, outside the workspace {workspace}")]
    Escapes {
        path: String,
        resolved: PathBuf,
        workspace: PathBuf,
    },
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
