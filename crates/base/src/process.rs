//! Processes as the kernel shows them: the one place that asks about or acts on a process by pid.
//!
//! Owns: reading `/proc/<pid>/stat` ([`stat`]), naming a process for good (pid, start time and
//! boot id: [`alive`]), watching a child's exit without reaping it (pidfds, `waitid(WNOWAIT)`),
//! reaping, signalling one process, a process group or a session, starting a child in a session
//! of its own ([`new_session`]), and becoming a child subreaper. Through `rustix` where it offers
//! the call, so that the `unsafe` left is what tokio's reactor registration, `pre_exec` and the
//! calls rustix lacks need.
//!
//! Does not decide whom to signal or when (`exec`, the queue and the supervisor do), spawn
//! processes (`exec`), or know cgroups (`cgroup`).

use std::fs;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, WaitOptions};
use tokio::io::{Interest, unix::AsyncFd};

/// The fields of `/proc/<pid>/stat` the engine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Parent pid (`0` when the parent is outside this pid namespace).
    pub ppid: i32,
    pub(crate) pgrp: i32,
    /// Session id: the pid of the session leader.
    pub session: i32,
    /// Field 22, start time in clock ticks since boot: with the pid (and the boot id), names
    /// one process for good.
    pub start: u64,
}

impl Stat {
    /// Whether the process has exited (a zombie waiting to be reaped, or dead).
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// `/proc/<pid>/stat`, or `None` when there is no such process.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(stat: &str) -> Option<Stat> {
    // The command name (field 2) may hold spaces and parentheses: split after the last `)`.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    // Fields 7 to 21 come between the session (6) and the start time (22).
    let start = fields.nth(15)?.parse().ok()?;
    Some(Stat {
        state,
        ppid,
        pgrp,
        session,
        start,
    })
}

/// This process's pid, asked of the kernel once (the engine never forks without an exec).
pub fn own_pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Start time of a process in clock ticks since boot (`/proc/<pid>/stat` field 22).
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.start)
}

/// The parent pid of `pid`.
pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    stat(pid).and_then(|s| u32::try_from(s.ppid).ok())
}

/// This boot of the machine (`/proc/sys/kernel/random/boot_id`), empty when unreadable.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether `pid` is the process that started at `start` and has not exited (a zombie has).
pub fn running(pid: u32, start: u64) -> bool {
    stat(pid).is_some_and(|s| s.start == start && !s.exited())
}

/// Whether the process named by pid, start time and boot id (a lease, a status file) still
/// runs: the one liveness check for a process recorded in a file.
pub fn alive(pid: u32, start: u64, boot: &str) -> bool {
    boot == boot_id() && running(pid, start)
}

/// Whether a process `pid` exists (a zombie does), whoever it belongs to.
pub fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Every pid in `/proc`.
pub fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// This process's direct children, orphans reparented to it (a subreaper) included.
pub fn children_of_self() -> Vec<u32> {
    static CHILDREN_FILE: OnceLock<bool> = OnceLock::new();
    let supported = *CHILDREN_FILE.get_or_init(|| Path::new("/proc/thread-self/children").exists());
    if !supported {
        // Kernels without CONFIG_PROC_CHILDREN: every process's parent, the slow way.
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        return all_pids()
            .into_iter()
            .filter(|&pid| stat(pid).is_some_and(|s| s.ppid == me))
            .collect();
    }
    // Children belong to the thread that forked them (or that adopted them): ask every thread.
    let mut out = Vec::new();
    if let Ok(tasks) = fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

/// A pid that names one process: positive and in range (0 and negatives name groups).
fn one(pid: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(pid).ok().filter(|p| *p > 0)?)
}

fn not_one_process(pid: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("pid {pid} does not name one process"),
    )
}

/// Signals one process. Refuses pids 0 and 1 and those out of range (`kill(0)` signals our own
/// group, `kill(-1)` everyone). Callers make sure `pid` is still the process they mean
/// (an unreaped child, or verified by start time).
pub fn kill(pid: u32, signal: i32) -> io::Result<()> {
    let target = one(pid).filter(|p| p.as_raw_nonzero().get() > 1);
    let (Some(target), Some(signal)) = (target, Signal::from_named_raw(signal)) else {
        return Err(not_one_process(pid));
    };
    Ok(rustix::process::kill_process(target, signal)?)
}

/// Sends `signal` to every process in the process group `pgid`.
///
/// Does nothing when `pgid <= 1`: `killpg(0, _)` would signal the engine's own
/// group and glibc turns `killpg(1, _)` into `kill(-1, _)`, every process we
/// may signal.
///
/// Errors are ignored on purpose: the only ones possible for a valid `pgid`
/// and signal are `ESRCH` (the group is already empty, which is what callers want) and
/// `EPERM` (a member changed credentials), and neither can be acted upon.
pub fn kill_group(pgid: i32, signal: i32) {
    if pgid <= 1 {
        return;
    }
    if let (Some(group), Some(signal)) = (Pid::from_raw(pgid), Signal::from_named_raw(signal)) {
        let _ = rustix::process::kill_process_group(group, signal);
    }
}

/// The process group of `pid`, if it exists: 0 when the group's leader is outside our PID
/// namespace (a container whose init did not start a group of its own).
///
/// Through libc, not rustix: rustix 1.1 turns the 0 into a `Pid`, which is non-zero (a panic in
/// debug builds, undefined behaviour in release ones).
pub fn group_of(pid: u32) -> Option<i32> {
    let pid = i32::try_from(pid).ok().filter(|p| *p > 0)?;
    // SAFETY: getpgid(2) takes a plain integer and touches no memory of ours.
    let pgid = unsafe { libc::getpgid(pid) };
    (pgid >= 0).then_some(pgid)
}

/// This process's session id: 0 when the session's leader is outside our PID namespace (a
/// process started by `docker exec`, or under `unshare --pid`), -1 if it cannot be read.
///
/// Through libc for the reason [`group_of`] gives.
pub fn own_session() -> i32 {
    // SAFETY: getsid(2) takes a plain integer and touches no memory of ours.
    let sid = unsafe { libc::getsid(0) };
    sid.max(-1)
}

/// Signals every process in session `sid`. Only while the session leader is unreaped or verified
/// alive: then no other session can have that id.
pub fn kill_session(sid: u32, signal: i32) {
    let Ok(sid) = i32::try_from(sid) else { return };
    for pid in all_pids() {
        if stat(pid).is_some_and(|s| s.session == sid) {
            let _ = kill(pid, signal);
        }
    }
}

/// Makes the child that `command` starts the leader of a new session, hence of a new process
/// group and without a controlling terminal: `setsid(2)` between its fork and exec.
pub fn new_session(command: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and makes one setsid(2) call,
    // which is async-signal-safe; it allocates nothing and touches no state of ours.
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid()?;
            Ok(())
        })
    }
}

/// Keeps `fd`, a descriptor of this process, open across the exec of the child that `command`
/// starts: its close-on-exec flag is cleared in the child only, so no other child inherits it.
/// The caller keeps `fd` open until the child is spawned.
pub fn keep_across_exec(command: &mut Command, fd: RawFd) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and makes one fcntl(2) call,
    // which is async-signal-safe; it allocates nothing. `fd` is open in the child, a copy of the
    // parent's descriptor table at the fork, during which the caller keeps it open.
    unsafe {
        command.pre_exec(move || {
            rustix::io::fcntl_setfd(BorrowedFd::borrow_raw(fd), rustix::io::FdFlags::empty())?;
            Ok(())
        })
    }
}

/// Makes this process the reaper of its descendants' orphans (`PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() -> io::Result<()> {
    Ok(rustix::process::set_child_subreaper(one(
        std::process::id(),
    ))?)
}

/// Unblocks every signal for the calling thread (call it first thing in `main`, before any
/// thread starts: threads and children inherit the mask).
///
/// A blocked mask is inherited across exec, and whatever started us may have left one: a
/// supervisor of its own, a CI runner, a language runtime's `exec`. With SIGINT or SIGTERM
/// blocked, Ctrl-C, `swarm down` and a step's graceful stop would reach nobody, and every step
/// we run would inherit the same deafness.
pub fn unblock_signals() {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initializes the set it is given (a valid, writable sigset_t), after
    // which it is read by pthread_sigmask; no old mask is asked for.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut());
    }
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The real user id.
pub fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// A pidfd for `pid`, readable once it exits (is a zombie), or `None` without pidfd support
/// (Linux < 5.3). Tokio's `Child::wait` reaps, after which the pid and group id could be reused;
/// this notices the exit while both still name our child.
pub fn exit_watch(pid: u32) -> Option<AsyncFd<OwnedFd>> {
    let fd = rustix::process::pidfd_open(one(pid)?, rustix::process::PidfdFlags::empty()).ok()?;
    // SAFETY: an `OwnedFd` keeps its descriptor open and unchanged until it is dropped, and the
    // `AsyncFd` owns it for its whole lifetime.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
}

/// Whether our child `pid` has exited, asked without reaping it (`waitid` with `WNOWAIT`). An
/// error (no such child) counts as exited.
pub fn exited_unreaped(pid: u32) -> bool {
    let Some(pid) = one(pid) else { return true };
    !matches!(
        rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        ),
        Ok(None)
    )
}

/// Reaps our child `pid` if it has exited (`waitpid` with `WNOHANG`): `Ok(Some(status))` once
/// reaped, `Ok(None)` while it runs.
pub fn try_reap(pid: u32) -> io::Result<Option<ExitStatus>> {
    let target = one(pid).ok_or_else(|| not_one_process(pid))?;
    Ok(rustix::process::waitpid(Some(target), WaitOptions::NOHANG)?
        .map(|(_, status)| ExitStatus::from_raw(status.as_raw())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_reads_the_fields_after_the_last_parenthesis() {
        let line = "42 (a) b (c)) S 7 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            Stat {
                state: 'S',
                ppid: 7,
                pgrp: 42,
                session: 42,
                start: 12345
            }
        );
        assert!(parse_stat("42 (no close paren S 1").is_none());
    }

    #[test]
    fn this_process_is_alive_and_named_for_good() {
        let me = std::process::id();
        let start = start_time(me).unwrap();
        assert!(running(me, start));
        assert!(alive(me, start, &boot_id()));
        assert!(!alive(me, start, "another boot"));
        assert!(!running(me, start + 1));
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
    }

    #[test]
    fn kill_refuses_what_is_not_one_process() {
        for pid in [0, 1, u32::MAX] {
            assert_eq!(
                kill(pid, libc::SIGTERM).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
    }

    #[test]
    fn a_child_is_seen_exited_before_it_is_reaped() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !exited_unreaped(pid) {
            assert!(std::time::Instant::now() < deadline, "never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(stat(pid).unwrap().exited(), "still a zombie: not reaped");
        assert!(try_reap(pid).unwrap().unwrap().success());
        drop(child);
    }
}
