//! The role process and the supervisor that started it.
//!
//! Owns: which supervisor started this process (`ORCHESTRATE_SUPERVISOR_PID`, checked against
//! the parent pid), how often to check that it is still there, and telling it that this process
//! is ready. Does not stop anything itself (`stop` does when the supervisor is gone).

use std::time::Duration;

/// How often a role process started by a supervisor checks that it still has one.
pub(super) const ORPHAN_CHECK: Duration = Duration::from_secs(1);

/// Set by `swarm up` for the role processes it starts: the supervisor's pid. A role process
/// whose parent is no longer that pid has been orphaned and stops.
pub const SUPERVISOR_PID_ENV: &str = "ORCHESTRATE_SUPERVISOR_PID";

/// The supervisor that started this process, when it is our parent now. The variable is also
/// inherited by whatever the tasks' steps run (an `orchestrate agent` a step starts, say): a
/// process whose parent is not that pid at start was not started by it.
pub(super) fn supervisor_pid() -> Option<u32> {
    let pid: u32 = std::env::var(SUPERVISOR_PID_ENV).ok()?.parse().ok()?;
    (std::os::unix::process::parent_id() == pid).then_some(pid)
}

/// Tells a supervisor (if any) that this process is ready: the watch is registered and the
/// first listing done.
pub(super) fn report_ready() {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let Some(fd) = std::env::var("ORCHESTRATE_READY_FD")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: the supervisor passed this descriptor for us to own; it is used once here and
    // closed when the File drops.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let _ = file.write_all(b"ready\n");
}
