//! A cgroup (v2) of its own for every step process, so that stopping a step reaches every process
//! it started, also those that left its process group and session (`setsid`, a double-forked
//! daemon), and a step's end is the end of all of them.
//!
//! This module owns finding the cgroup v2 hierarchy and this process's place in it, making a
//! step's cgroup (`<our cgroup>/orchestrate-<pid>-<n>`), moving a child into it before it execs,
//! killing a cgroup (`cgroup.kill`) and waiting until it is empty, removing it, and sweeping the
//! empty ones that engines which died left behind. It does not decide when a step stops (`exec`
//! does) and sets no resource limits: only membership is used, so no controller is enabled and
//! the "no internal processes" rule never applies (it only concerns cgroups with domain
//! controllers enabled for their children).
//!
//! Where cgroups cannot be used (no cgroup2 mount, read-only, not ours to write, no `cgroup.kill`
//! before Linux 5.14, `ORCHESTRATE_CGROUPS=off`) [`Step::create`] returns `None` and `exec` relies
//! on process groups alone, as before; the reason is logged once at
//! debug level (shown with `ORCHESTRATE_DEBUG=1`).
//!
//! The cgroups are flat, one directory per step right under this process's own cgroup, so that a
//! run that ends cleanly leaves nothing behind; `<pid>` names the engine process that made them,
//! which lets a supervisor find the steps of a role process it had to kill ([`StepsOf`]).

use std::{
    ffi::{CStr, CString},
    fs, io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Every step cgroup's name starts with this, then `<pid>-<n>`.
const PREFIX: &str = "orchestrate-";

/// How long the processes of a killed cgroup may take to be gone. SIGKILL is not delayed by
/// anything but uninterruptible sleep (a hung network filesystem); past this the cgroup is left
/// in place rather than hang the engine.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why step processes are not put in cgroups.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupError {
    #[error("turned off by ORCHESTRATE_CGROUPS={value}")]
    Off { value: String },
    #[error("no cgroup v2 hierarchy is mounted (no `cgroup2` in /proc/self/mountinfo)")]
    NoMount,
    #[error("this process is in no cgroup v2 (no `0::` line in /proc/self/cgroup)")]
    NotInV2,
    #[error("this process's cgroup `{cgroup}` is not under a mounted cgroup2 hierarchy")]
    NotMounted { cgroup: String },
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} has no cgroup.kill (Linux 5.14 and later have it)", path.display())]
    NoKill { path: PathBuf },
    #[error("the kernel refused to start a step process in {}: {source}", path.display())]
    Refused {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a step process (pid {pid}) did not enter {} (it is in `{found}`)", path.display())]
    NotEntered {
        path: PathBuf,
        pid: u32,
        found: String,
    },
}

/// Where this process's cgroups live.
#[derive(Debug)]
struct Hierarchy {
    /// The cgroup2 mount point and the hierarchy path mounted there (`/` unless namespaced).
    mount: PathBuf,
    root: String,
    /// This process's own cgroup directory, the parent of its step cgroups.
    own: PathBuf,
    /// Its hierarchy path, as `/proc/PID/cgroup` names it.
    own_path: String,
}

impl Hierarchy {
    fn locate() -> Result<Hierarchy, CgroupError> {
        if let Some(value) = std::env::var_os("ORCHESTRATE_CGROUPS")
            && matches!(value.to_str(), Some("off" | "0" | "false" | "no"))
        {
            return Err(CgroupError::Off {
                value: value.to_string_lossy().into_owned(),
            });
        }
        let read = |path: &str| {
            fs::read_to_string(path).map_err(|source| CgroupError::Io {
                action: "read",
                path: PathBuf::from(path),
                source,
            })
        };
        let mounts = cgroup2_mounts(&read("/proc/self/mountinfo")?);
        if mounts.is_empty() {
            return Err(CgroupError::NoMount);
        }
        let cgroup = own_cgroup(&read("/proc/self/cgroup")?).ok_or(CgroupError::NotInV2)?;
        mounts
            .into_iter()
            .find_map(|(mount, root)| {
                let own = under(&mount, &root, &cgroup)?;
                own.is_dir().then(|| Hierarchy {
                    mount,
                    root,
                    own,
                    own_path: cgroup.clone(),
                })
            })
            .ok_or(CgroupError::NotMounted { cgroup })
    }

    /// The directory of the cgroup at hierarchy path `cgroup`.
    fn dir(&self, cgroup: &str) -> Option<PathBuf> {
        under(&self.mount, &self.root, cgroup)
    }
}

/// `mount` joined with `cgroup` relative to `root`; `None` when `cgroup` is not under `root`.
fn under(mount: &Path, root: &str, cgroup: &str) -> Option<PathBuf> {
    let rest = cgroup.strip_prefix(root.trim_end_matches('/'))?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let rest = rest.trim_start_matches('/');
    Some(if rest.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rest)
    })
}

/// `(mount point, root)` of every cgroup2 mount in a mountinfo text.
fn cgroup2_mounts(mountinfo: &str) -> Vec<(PathBuf, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, after) = line.split_once(" - ")?;
            if after.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let mut fields = fields.split_whitespace().skip(3);
            let root = unescape(fields.next()?);
            let mount = unescape(fields.next()?);
            Some((PathBuf::from(mount), root))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = bytes
                .get(i + 1..i + 4)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 path in a `/proc/PID/cgroup` text (its `0::PATH` line).
fn own_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_owned)
}

/// The cgroup v2 path of process `pid` now (as its `/proc/PID/cgroup` names it), or `None` when
/// it is gone or cannot be inspected.
pub(crate) fn of_pid(pid: u32) -> Option<String> {
    own_cgroup(&fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

/// The hierarchy, located once per process.
fn hierarchy() -> Result<&'static Hierarchy, &'static CgroupError> {
    static HIERARCHY: OnceLock<Result<Hierarchy, CgroupError>> = OnceLock::new();
    HIERARCHY.get_or_init(Hierarchy::locate).as_ref()
}

/// Set once cgroups turned out not to work here; every later step uses process groups only.
static FELL_BACK: AtomicBool = AtomicBool::new(false);

/// Stops using cgroups in this process, saying why once.
fn fall_back(reason: &CgroupError) {
    if !FELL_BACK.swap(true, Ordering::Relaxed) {
        tracing::debug!(
            "step processes are not put in cgroups: {reason}; stopping a step reaches its process group only"
        );
    }
}

/// The step cgroups of this process that exist now, for [`kill_all_now`].
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One step's cgroup. Dropped without [`Step::empty`] (the step's future was dropped), it kills
/// what is inside and removes itself in the background.
#[derive(Debug)]
pub(crate) struct Step {
    dir: PathBuf,
    /// The hierarchy path, as `/proc/PID/cgroup` names it.
    path: String,
    /// `cgroup.procs`, ready for [`enter`] in the forked child (which must not allocate).
    procs: CString,
    /// The directory, opened for `clone3(CLONE_INTO_CGROUP)`.
    fd: Option<std::os::fd::OwnedFd>,
    removed: bool,
}

impl Step {
    /// Makes a new cgroup for one step, or `None` where cgroups cannot be used.
    pub(crate) fn create() -> Option<Step> {
        if FELL_BACK.load(Ordering::Relaxed) {
            return None;
        }
        let hierarchy = match hierarchy() {
            Ok(hierarchy) => hierarchy,
            Err(reason) => {
                fall_back(reason);
                return None;
            }
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let pid = crate::process::own_pid();
        // A name taken belongs to an engine that had our pid (another pid namespace, or one
        // that died): never ours to touch, so take the next number.
        for _ in 0..64 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = hierarchy.own.join(format!("{PREFIX}{pid}-{n}"));
            match fs::create_dir(&dir) {
                Ok(()) => {
                    let path = format!(
                        "{}/{PREFIX}{pid}-{n}",
                        hierarchy.own_path.trim_end_matches('/')
                    );
                    return Step::checked(dir, path, &hierarchy.own);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    fall_back(&CgroupError::Io {
                        action: "create the cgroup",
                        path: dir,
                        source,
                    });
                    return None;
                }
            }
        }
        None
    }

    /// The first cgroup this process makes is checked for `cgroup.kill`, and the empty cgroups
    /// of dead engines beside it are removed.
    fn checked(dir: PathBuf, path: String, own: &Path) -> Option<Step> {
        static USABLE: OnceLock<bool> = OnceLock::new();
        let usable = *USABLE.get_or_init(|| {
            if !dir.join("cgroup.kill").exists() {
                fall_back(&CgroupError::NoKill { path: dir.clone() });
                return false;
            }
            sweep(own);
            tracing::debug!(
                "step processes run in cgroups of their own under {}",
                own.display()
            );
            true
        });
        if !usable {
            let _ = fs::remove_dir(&dir);
            return None;
        }
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).ok()?;
        let fd = rustix::fs::open(
            &dir,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok();
        live().push(dir.clone());
        Some(Step {
            dir,
            path,
            procs,
            fd,
            removed: false,
        })
    }

    /// The hierarchy path (`/…/orchestrate-<pid>-<n>`), as `/proc/PID/cgroup` names it for a
    /// process inside.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The path [`enter`] writes to, for the child's `pre_exec`.
    pub(crate) fn procs(&self) -> CString {
        self.procs.clone()
    }

    /// The cgroup's directory, for a child born in it (`clone3(CLONE_INTO_CGROUP)`).
    pub(crate) fn dir_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// The kernel would not start a child in this cgroup: cgroups are not used from here on.
    pub(crate) fn refused(&self, source: io::Error) {
        fall_back(&CgroupError::Refused {
            path: self.dir.clone(),
            source,
        });
    }

    /// Whether the (unreaped) child `pid` is in this cgroup. When it is not, [`enter`] failed
    /// (a kernel or permission rule of this system): cgroups are not used from here on.
    pub(crate) fn holds(&self, pid: u32) -> bool {
        let found = of_pid(pid).unwrap_or_default();
        let inside = hierarchy()
            .ok()
            .and_then(|h| h.dir(&found))
            .is_some_and(|dir| dir == self.dir);
        if !inside {
            fall_back(&CgroupError::NotEntered {
                path: self.dir.clone(),
                pid,
                found,
            });
        }
        inside
    }

    /// Makes sure no process of the step is left: removes the cgroup when it is already empty
    /// (the common case: one `rmdir`), otherwise kills what is inside, waits until it is gone
    /// and removes the cgroup.
    pub(crate) async fn empty(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        self.fd = None;
        forget(&self.dir);
        // rmdir fails (EBUSY) while a process or a child cgroup (a nested engine's) is inside.
        if fs::remove_dir(&self.dir).is_ok() {
            return;
        }
        kill(&self.dir);
        let dir = self.dir.clone();
        // Off the async workers: waiting is bounded, but a process in uninterruptible sleep can
        // take that long.
        let _ = tokio::task::spawn_blocking(move || clear(&dir)).await;
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        self.fd = None;
        forget(&self.dir);
        kill(&self.dir);
        if fs::remove_dir(&self.dir).is_err() {
            let dir = self.dir.clone();
            // Nobody waits for a dropped step; the processes die within moments.
            let _ = std::thread::Builder::new()
                .name("cgroup-clear".into())
                .spawn(move || clear(&dir));
        }
    }
}

fn forget(dir: &Path) {
    live().retain(|d| d != dir);
}

/// In the forked child, before it execs: moves the calling process into the cgroup whose
/// `cgroup.procs` is `procs` (writing `0` names the writer). Only async-signal-safe calls, no
/// allocation. A failure leaves the child where it is; the parent finds out ([`Step::holds`]).
pub(crate) fn enter(procs: &CStr) {
    use rustix::fs::{Mode, OFlags};
    // rustix makes the system calls directly (async-signal-safe) and takes the C string as it
    // is (no allocation); the descriptor is closed when dropped, before returning.
    if let Ok(fd) = rustix::fs::open(procs, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty()) {
        let _ = rustix::io::write(&fd, b"0");
    }
}

/// Writes `1` to `dir/cgroup.kill`: SIGKILL to every process in the cgroup and below. A cgroup
/// already gone is what the caller wants.
fn kill(dir: &Path) {
    let _ = fs::write(dir.join("cgroup.kill"), b"1");
}

/// Waits until the killed cgroup `dir` is empty, then removes it with any child cgroups.
fn clear(dir: &Path) {
    if !wait_empty(dir, Instant::now() + EMPTY_TIMEOUT) {
        tracing::debug!(
            "processes of {} outlived SIGKILL for {EMPTY_TIMEOUT:?} (uninterruptible sleep?); the cgroup is left in place",
            dir.display()
        );
        return;
    }
    remove_tree(dir);
}

/// Waits until `dir/cgroup.events` says `populated 0` (true) or `deadline` passes (false). A
/// cgroup that is gone is empty.
fn wait_empty(dir: &Path, deadline: Instant) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use std::os::unix::fs::FileExt;
    let Ok(events) = fs::File::open(dir.join("cgroup.events")) else {
        return true;
    };
    loop {
        let mut buf = [0u8; 256];
        let Ok(n) = events.read_at(&mut buf, 0) else {
            return true;
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        if !text.lines().any(|l| l == "populated 1") {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        // The kernel signals a change of cgroup.events as POLLPRI; the timeout caps a missed one.
        let wait = left
            .min(Duration::from_millis(50))
            .max(Duration::from_millis(1));
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: i64::from(wait.subsec_millis()) * 1_000_000,
        };
        let _ = poll(&mut [PollFd::new(&events, PollFlags::PRI)], Some(&timeout));
    }
}

/// Removes the cgroup `dir` and any child cgroups, deepest first. Errors are ignored: a
/// populated cgroup stays.
fn remove_tree(dir: &Path) {
    if fs::remove_dir(dir).is_ok() {
        return;
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

/// The engine pid in a step cgroup's name.
fn engine_of(name: &str) -> Option<u32> {
    let (pid, n) = name.strip_prefix(PREFIX)?.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Removes the step cgroups in `own` of engines that no longer run, when they are empty (a
/// populated one holds processes an engine left when it was killed: not ours to stop).
fn sweep(own: &Path) {
    let me = std::process::id();
    for entry in fs::read_dir(own).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(engine_of) else {
            continue;
        };
        if pid != me && !crate::process::exists(pid) {
            remove_tree(&entry.path());
        }
    }
}

/// SIGKILL to the processes of every step cgroup of this process, without waiting: for an exit
/// right now (a second Ctrl-C).
pub(crate) fn kill_all_now() {
    for dir in live().iter() {
        kill(dir);
    }
}

/// The step cgroups of another engine process (a role process), found while it still lives, for
/// stopping its steps after it is killed.
#[derive(Debug)]
pub struct StepsOf {
    dir: PathBuf,
    pid: u32,
}

impl StepsOf {
    /// Where process `pid` makes its step cgroups. Read while `pid` is known to be that process
    /// (an unreaped child, or verified by its start time); `None` without cgroups.
    pub fn find(pid: u32) -> Option<StepsOf> {
        let hierarchy = hierarchy().ok()?;
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let dir = hierarchy.dir(&own_cgroup(&text)?)?;
        Some(StepsOf { dir, pid })
    }

    /// Kills every step cgroup of that process, waits until they are empty and removes them;
    /// how many there were. Call once the process itself is dead, so it makes no new one.
    pub fn kill(&self) -> usize {
        let ours: Vec<PathBuf> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_str().and_then(engine_of) == Some(self.pid))
            .map(|e| e.path())
            .collect();
        for dir in &ours {
            kill(dir);
        }
        for dir in &ours {
            clear(dir);
        }
        ours.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_cgroup2_lines_are_found_and_unescaped() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
52 23 0:38 /a\\040b /mnt/my\\040cg rw shared:5 - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mounts(text),
            [
                (PathBuf::from("/sys/fs/cgroup/unified"), "/".to_owned()),
                (PathBuf::from("/mnt/my cg"), "/a b".to_owned()),
            ]
        );
    }

    #[test]
    fn own_cgroup_is_the_v2_line() {
        assert_eq!(
            own_cgroup("9:name=systemd:/\n4:memory:/x\n0::/user.slice/a.scope\n").as_deref(),
            Some("/user.slice/a.scope")
        );
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
    }

    #[test]
    fn cgroup_paths_map_under_the_mount_root() {
        let m = Path::new("/sys/fs/cgroup");
        assert_eq!(under(m, "/", "/"), Some(m.to_path_buf()));
        assert_eq!(under(m, "/", "/a/b"), Some(m.join("a/b")));
        assert_eq!(under(m, "/a", "/a/b"), Some(m.join("b")));
        assert_eq!(under(m, "/a", "/a"), Some(m.to_path_buf()));
        assert_eq!(under(m, "/a", "/ab"), None);
        assert_eq!(under(m, "/a", "/c"), None);
    }

    #[test]
    fn the_sweep_removes_empty_cgroups_of_dead_engines_only() {
        let Ok(hierarchy) = hierarchy() else {
            eprintln!("no cgroup v2 here: nothing to sweep");
            return;
        };
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = hierarchy.own.join(format!("{PREFIX}{dead}-0"));
        if fs::create_dir(&stale).is_err() {
            eprintln!("cgroups are not writable here: nothing to sweep");
            return;
        }
        // A nested engine's cgroup inside the stale one goes too.
        fs::create_dir(stale.join(format!("{PREFIX}1-0"))).unwrap();
        let mine = hierarchy
            .own
            .join(format!("{PREFIX}{}-{}", std::process::id(), u64::MAX));
        fs::create_dir(&mine).unwrap();
        sweep(&hierarchy.own);
        let (stale_left, mine_left) = (stale.exists(), mine.exists());
        remove_tree(&stale);
        let _ = fs::remove_dir(&mine);
        assert!(!stale_left, "{} was left", stale.display());
        assert!(mine_left, "{} is this process's own", mine.display());
    }

    #[test]
    fn step_cgroup_names_give_their_engine() {
        assert_eq!(engine_of("orchestrate-123-0"), Some(123));
        assert_eq!(engine_of("orchestrate-123-x"), None);
        assert_eq!(engine_of("orchestrate-123"), None);
        assert_eq!(engine_of("other-1-2"), None);
    }
}
