//! The one-supervisor-per-workspace lock: `supervisor.lock`, held while the supervisor runs and
//! naming its holder, for the error a second supervisor gives.
//!
//! Does not tell whether a supervisor is alive (`SupervisorInfo::alive` in `status_file` does).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use orchestrate_base::io_err::FromIo;
use orchestrate_queue::queue;

use super::error::SupervisorError;
use super::status_file::lock_path;

/// Takes the workspace's supervisor lock, or says who holds it. Held while the file is open.
pub(super) fn take_lock(workspace: &Path) -> Result<File, SupervisorError> {
    let path = lock_path(workspace);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(SupervisorError::io_err("open", &path))?;
    match file.try_lock() {
        Ok(()) => {
            // Who holds it, for the error of a second supervisor; the status file is the record.
            let me = queue::Owner::current();
            file.set_len(0)
                .map_err(SupervisorError::io_err("write", &path))?;
            writeln!(file, "{} {}", me.pid, me.pid_start)
                .map_err(SupervisorError::io_err("write", &path))?;
            Ok(file)
        }
        Err(fs::TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse().ok());
            Err(SupervisorError::AlreadyRunning {
                workspace: workspace.to_path_buf(),
                pid,
            })
        }
        Err(fs::TryLockError::Error(source)) => Err(SupervisorError::Io {
            action: "lock",
            path,
            source,
        }),
    }
}
