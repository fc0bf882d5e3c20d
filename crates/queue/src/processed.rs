//! `--clean-processed` and `--archive-processed`, with the spec's safety rules.
//!
//! Owns: emptying `WORKSPACE/processed/` (and refusing any other directory) and zipping it to a
//! destination outside it. Does not decide when; the CLI calls these before and after a run.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;

use orchestrate_base::fsutil::normalize;
use orchestrate_base::io_err::FromIo;

/// Why `processed/` could not be cleaned or archived.
#[derive(Debug, thiserror::Error)]
pub enum ProcessedError {
    /// The configured directory is not inside the workspace.
    #[error("refusing to clean `{configured}`: it resolves to {}, which is not a directory inside the workspace {}; --clean-processed only empties WORKSPACE/processed/", resolved.display(), workspace.display())]
    OutsideWorkspace {
        /// The directory as configured.
        configured: String,
        /// Where it resolves to.
        resolved: PathBuf,
        /// The workspace it must stay inside.
        workspace: PathBuf,
    },
    /// The directory to clean is a symlink.
    #[error("refusing to clean {}: it is a symlink; --clean-processed never follows links", path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// The archive would be written into the directory it archives.
    #[error("refusing to archive into {}: the archive must be outside the processed directory {}", dest.display(), processed.display())]
    ArchiveInside {
        /// The archive asked for.
        dest: PathBuf,
        /// The directory being archived.
        processed: PathBuf,
    },
    /// Reading, removing or archiving a file failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What was being done, read after "failed to".
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl FromIo for ProcessedError {
    fn from_io(action: &'static str, path: PathBuf, source: io::Error) -> Self {
        ProcessedError::Io {
            action,
            path,
            source,
        }
    }
}

/// The processed directory the workflow configures, checked to be a proper subdirectory of the
/// workspace (not the workspace itself, not outside it, not a symlink).
pub fn processed_dir(workspace: &Path, configured: &str) -> Result<PathBuf, ProcessedError> {
    let resolved = normalize(&workspace.join(configured));
    let outside = || ProcessedError::OutsideWorkspace {
        configured: configured.to_string(),
        resolved: resolved.clone(),
        workspace: workspace.to_path_buf(),
    };
    if !resolved.starts_with(workspace) || resolved == workspace {
        return Err(outside());
    }
    // Any symlinked component could lead outside.
    let mut current = workspace.to_path_buf();
    for part in resolved
        .strip_prefix(workspace)
        .map_err(|_| outside())?
        .components()
    {
        current.push(part);
        if fs::symlink_metadata(&current)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
        {
            return Err(ProcessedError::Symlink { path: current });
        }
    }
    Ok(resolved)
}

/// Empties the processed directory, keeping the directory itself. Returns entries removed.
pub fn clean(dir: &Path) -> Result<usize, ProcessedError> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(ProcessedError::io_err("create", dir))?;
        return Ok(0);
    }
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(ProcessedError::io_err("list", dir))? {
        let entry = entry.map_err(ProcessedError::io_err("list", dir))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(ProcessedError::io_err("inspect", &path))?;
        if kind.is_dir() {
            fs::remove_dir_all(&path).map_err(ProcessedError::io_err("remove", &path))?;
        } else {
            fs::remove_file(&path).map_err(ProcessedError::io_err("remove", &path))?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// Checks an archive destination before the run starts, so a bad one fails fast.
pub fn check_archive_dest(processed: &Path, dest: &Path) -> Result<(), ProcessedError> {
    let dest = normalize(dest);
    if dest.starts_with(processed) {
        return Err(ProcessedError::ArchiveInside {
            dest,
            processed: processed.to_path_buf(),
        });
    }
    Ok(())
}

/// Zips the processed directory into `dest` (written to a temp name, then renamed). Returns the
/// number of files archived.
pub fn archive(processed: &Path, dest: &Path) -> Result<usize, ProcessedError> {
    check_archive_dest(processed, dest)?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(ProcessedError::io_err("create", parent))?;
    }
    let tmp = dest.with_extension("zip.tmp");
    let file = File::create(&tmp).map_err(ProcessedError::io_err("create", &tmp))?;
    let mut zip = zip::ZipWriter::new(file);
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut count = 0;
    if processed.exists() {
        for entry in walkdir::WalkDir::new(processed)
            .min_depth(1)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| ProcessedError::Io {
                action: "walk",
                path: processed.to_path_buf(),
                source: io::Error::other(e),
            })?;
            let rel = entry.path().strip_prefix(processed).unwrap_or(entry.path());
            let name = rel.to_string_lossy().into_owned();
            let zip_err = |e: zip::result::ZipError| ProcessedError::Io {
                action: "write",
                path: tmp.clone(),
                source: io::Error::other(e),
            };
            if entry.file_type().is_dir() {
                zip.add_directory(name, options).map_err(zip_err)?;
            } else if entry.file_type().is_file() {
                zip.start_file(name, options).map_err(zip_err)?;
                let mut src = File::open(entry.path())
                    .map_err(ProcessedError::io_err("read", entry.path()))?;
                io::copy(&mut src, &mut zip).map_err(ProcessedError::io_err("write", &tmp))?;
                count += 1;
            }
        }
    }
    let file = zip.finish().map_err(|e| ProcessedError::Io {
        action: "write",
        path: tmp.clone(),
        source: io::Error::other(e),
    })?;
    file.sync_all()
        .map_err(ProcessedError::io_err("sync", &tmp))?;
    fs::rename(&tmp, dest).map_err(ProcessedError::io_err("rename", &tmp))?;
    Ok(count)
}
