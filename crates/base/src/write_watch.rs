//! Who wrote which file of a workspace while a readonly/plan step ran: per-process attribution
//! of the writes the step's workspace check would otherwise blame on the step.
//!
//! Owns: a fanotify group (Linux, `CAP_SYS_ADMIN`) marking the workspace's mount for
//! `FAN_MODIFY | FAN_CLOSE_WRITE`, and a thread of its own that reads the events as they come;
//! for each, the written path (the event descriptor's `/proc/self/fd/N` link; the descriptor is
//! closed at once), kept only when it is inside the workspace, and the writer: its pid and, read
//! at once while it most likely still lives, its cgroup v2 path (`/proc/PID/cgroup`). And the
//! rule that decides from those records whether a changed path is known not to be the step's
//! ([`Seen::outside`]): the watch was complete (no queue overflow, no event lost), at least one
//! event named the path, and every one came from a process that was alive when its event was
//! read and was outside the step's cgroup (the engine itself is outside).
//!
//! Does not: see deletions or renames (a mount mark reports neither), so a removed, renamed or
//! retyped path stays the step's; see a path through its old name once it was renamed before its
//! event was read; attribute a write whose process was gone (or in another pid namespace) when
//! its event was read, even one outside the step; know which cgroup a step runs in (the runner
//! passes it from [`crate::exec::Finished`]); or decide anything when fanotify cannot be used
//! (not root, off Linux, `fanotify_init`/`fanotify_mark` refused): [`Watch::start`] fails and the
//! check keeps its rule without attribution ([`crate::held_files`], the engine's own writes).
//! `ORCHESTRATE_WRITE_WATCH=off` turns it off likewise.
//! Writes on another filesystem mounted inside the workspace are not seen either.

use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Why writes are not attributed per process.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchError {
    #[error("turned off by ORCHESTRATE_WRITE_WATCH={value}")]
    Off { value: String },
    #[cfg(not(target_os = "linux"))]
    #[error("fanotify is Linux only")]
    Unsupported,
    #[error("failed to {action} (fanotify needs CAP_SYS_ADMIN): {source}")]
    Fanotify {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to start the write watcher thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Who wrote a path, as seen when its event was read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Writer {
    /// Alive, in the cgroup at this hierarchy path.
    Alive { pid: u32, cgroup: String },
    /// Gone by then, or not ours to inspect (pid 0: another pid namespace).
    Gone { pid: u32 },
}

/// What one watch saw: per workspace-relative path (as the fingerprint names it), every distinct
/// writer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Events were lost (the queue overflowed, an event could not be read, the watcher
    /// stopped early): nothing is attributed.
    pub(crate) lost: bool,
    pub(crate) writers: HashMap<String, HashSet<Writer>>,
}

impl Seen {
    /// Whether the change of `path` is known not to be the step's that ran in `step_cgroup`:
    /// nothing was lost, some event named `path`, and every one came from a process alive when
    /// it was read and outside `step_cgroup` (and the cgroups below it: a nested engine's steps).
    pub fn outside(&self, path: &str, step_cgroup: &str) -> bool {
        if self.lost {
            return false;
        }
        let Some(writers) = self.writers.get(path) else {
            return false;
        };
        !writers.is_empty()
            && writers.iter().all(|writer| match writer {
                Writer::Alive { cgroup, .. } => !within(cgroup, step_cgroup),
                Writer::Gone { .. } => false,
            })
    }

    fn note(&mut self, path: String, writer: Writer) {
        self.writers.entry(path).or_default().insert(writer);
    }
}

/// Whether the cgroup `cgroup` is `parent` or below it.
fn within(cgroup: &str, parent: &str) -> bool {
    let parent = parent.trim_end_matches('/');
    cgroup == parent
        || cgroup
            .strip_prefix(parent)
            .is_some_and(|rest| rest.starts_with('/'))
        || parent.is_empty()
}

/// A running watch; [`Watch::finish`] stops it and returns what it saw. Dropped, it stops too.
#[derive(Debug)]
pub struct Watch {
    #[cfg(target_os = "linux")]
    inner: linux::Running,
}

impl Watch {
    /// Starts watching the mount `root` is on. The mark is in place when this returns, so every
    /// write from then on is seen.
    pub(crate) fn start(root: &Path) -> Result<Watch, WatchError> {
        if let Some(value) = std::env::var_os("ORCHESTRATE_WRITE_WATCH")
            && matches!(value.to_str(), Some("off" | "0" | "false" | "no"))
        {
            return Err(WatchError::Off {
                value: value.to_string_lossy().into_owned(),
            });
        }
        #[cfg(target_os = "linux")]
        {
            linux::Running::start(root).map(|inner| Watch { inner })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = root;
            Err(WatchError::Unsupported)
        }
    }

    /// [`Watch::start`], or `None` with the reason said once (`ORCHESTRATE_DEBUG=1`): the
    /// check then runs without attribution.
    pub fn start_or_explain(root: &Path) -> Option<Watch> {
        use std::sync::atomic::{AtomicBool, Ordering};
        static SAID: AtomicBool = AtomicBool::new(false);
        match Watch::start(root) {
            Ok(watch) => {
                if !SAID.swap(true, Ordering::Relaxed) {
                    tracing::debug!("readonly/plan checks attribute writes per process (fanotify)");
                }
                Some(watch)
            }
            Err(reason) => {
                if !SAID.swap(true, Ordering::Relaxed) {
                    tracing::debug!(
                        "readonly/plan checks cannot attribute writes per process: {reason}; every write during a step is the step's unless the engine or an ancestor wrote it"
                    );
                }
                None
            }
        }
    }

    /// Stops watching after reading every event queued so far, and returns what was seen.
    pub fn finish(self) -> Seen {
        #[cfg(target_os = "linux")]
        {
            self.inner.finish()
        }
        #[cfg(not(target_os = "linux"))]
        {
            Seen::default()
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};
    use std::thread::JoinHandle;

    use super::{Seen, WatchError, Writer};

    /// Read buffer: many events per read (each 24 bytes without info records).
    const BUFFER: usize = 64 * 1024;

    #[derive(Debug)]
    pub(crate) struct Running {
        /// Closing it (drop) tells the thread to drain what is queued and stop.
        stop: Option<OwnedFd>,
        thread: Option<JoinHandle<Seen>>,
    }

    impl Running {
        pub(crate) fn start(root: &Path) -> Result<Running, WatchError> {
            let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
            let fanotify = |action, source| WatchError::Fanotify { action, source };
            // An unlimited queue (CAP_SYS_ADMIN, as the mount mark needs anyway): a mount mark
            // sees every write on the filesystem, and a thread descheduled on a busy machine must
            // not lose the step's events to a full queue. The thread drains it as events come.
            // SAFETY: plain syscall; the result is checked.
            let fd = unsafe {
                libc::fanotify_init(
                    libc::FAN_CLASS_NOTIF
                        | libc::FAN_CLOEXEC
                        | libc::FAN_NONBLOCK
                        | libc::FAN_UNLIMITED_QUEUE,
                    // Event descriptors are never inherited by a step (spawned meanwhile).
                    (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as libc::c_uint,
                )
            };
            if fd < 0 {
                return Err(fanotify("initialize fanotify", io::Error::last_os_error()));
            }
            // SAFETY: a descriptor fanotify_init just returned, owned by nobody else.
            let group = unsafe { OwnedFd::from_raw_fd(fd) };
            let path = CString::new(root.as_os_str().as_bytes()).map_err(|_| {
                fanotify(
                    "mark the workspace's mount",
                    io::Error::from(io::ErrorKind::InvalidInput),
                )
            })?;
            // SAFETY: a valid descriptor and C string; the result is checked.
            let marked = unsafe {
                libc::fanotify_mark(
                    group.as_raw_fd(),
                    libc::FAN_MARK_ADD | libc::FAN_MARK_MOUNT,
                    libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                )
            };
            if marked != 0 {
                return Err(fanotify(
                    "mark the workspace's mount",
                    io::Error::last_os_error(),
                ));
            }
            let (wake, stop) = pipe().map_err(|source| fanotify("make a pipe", source))?;
            let thread = std::thread::Builder::new()
                .name("write-watch".into())
                .spawn(move || read_events(&group, &wake, &root))
                .map_err(WatchError::Thread)?;
            Ok(Running {
                stop: Some(stop),
                thread: Some(thread),
            })
        }

        pub(crate) fn finish(mut self) -> Seen {
            self.stop.take();
            match self.thread.take().map(JoinHandle::join) {
                Some(Ok(seen)) => seen,
                _ => Seen {
                    lost: true,
                    ..Seen::default()
                },
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            // Closing the pipe stops the thread; nobody waits for it.
            self.stop.take();
        }
    }

    /// A close-on-exec pipe: (read end, write end).
    fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 fills the two-element array we own; the result is checked.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: two descriptors pipe2 just returned, owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }

    /// The thread: reads events until the stop pipe closes, then drains what is queued.
    fn read_events(group: &OwnedFd, wake: &OwnedFd, root: &Path) -> Seen {
        let mut seen = Seen::default();
        // u64 words: the kernel writes metadata aligned to 8 bytes.
        let mut buf = vec![0u64; BUFFER / 8];
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: group.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two pollfds we own; the count matches.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if ready < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                seen.lost = true;
                return seen;
            }
            let stopping = fds[1].revents != 0;
            if stopping {
                // No new events from here on, so that the drain below ends on a busy filesystem;
                // those already queued stay readable.
                // SAFETY: plain syscall on the group we own; a null path is allowed for a flush.
                unsafe {
                    libc::fanotify_mark(
                        group.as_raw_fd(),
                        libc::FAN_MARK_FLUSH | libc::FAN_MARK_MOUNT,
                        0,
                        libc::AT_FDCWD,
                        std::ptr::null(),
                    )
                };
            }
            // Drain: when stopping, everything queued before the stop was asked for.
            loop {
                match read_batch(group, &mut buf, root, &mut seen) {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(()) => {
                        seen.lost = true;
                        return seen;
                    }
                }
            }
            if stopping {
                return seen;
            }
        }
    }

    /// Reads one batch of events into `seen`: `Ok(true)` when some were read, `Ok(false)` when
    /// none are queued, `Err` when reading failed (events may be lost).
    fn read_batch(
        group: &OwnedFd,
        buf: &mut [u64],
        root: &Path,
        seen: &mut Seen,
    ) -> Result<bool, ()> {
        let bytes = std::mem::size_of_val(buf);
        // SAFETY: reads at most `bytes` into the buffer we own.
        let n = unsafe { libc::read(group.as_raw_fd(), buf.as_mut_ptr().cast(), bytes) };
        if n < 0 {
            return match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock => Ok(false),
                io::ErrorKind::Interrupted => Ok(true),
                // An event whose descriptor could not be opened (EMFILE, ...) is gone.
                _ => Err(()),
            };
        }
        let n = n as usize;
        if n == 0 {
            return Ok(false);
        }
        // SAFETY: the first `n` bytes were just written by the kernel; u8 has no alignment.
        let data = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        let header = std::mem::size_of::<libc::fanotify_event_metadata>();
        let mut offset = 0;
        while offset + header <= n {
            // SAFETY: `header` bytes are in bounds; read_unaligned makes no alignment demand.
            let event: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(data[offset..].as_ptr().cast()) };
            let len = event.event_len as usize;
            if event.vers != libc::FANOTIFY_METADATA_VERSION || len < header {
                return Err(());
            }
            offset += len;
            if event.fd < 0 {
                if event.mask & libc::FAN_Q_OVERFLOW != 0 {
                    seen.lost = true;
                }
                continue;
            }
            // SAFETY: the kernel opened this descriptor for us; we own and close it.
            let file = unsafe { OwnedFd::from_raw_fd(event.fd) };
            let Some(path) = relative(&file, root) else {
                continue;
            };
            drop(file);
            let pid = u32::try_from(event.pid).unwrap_or(0);
            let writer = match (pid != 0).then(|| crate::cgroup::of_pid(pid)).flatten() {
                Some(cgroup) => Writer::Alive { pid, cgroup },
                None => Writer::Gone { pid },
            };
            seen.note(path, writer);
        }
        Ok(true)
    }

    /// The event file's workspace-relative path, or `None` outside the workspace (or deleted).
    fn relative(file: &OwnedFd, root: &Path) -> Option<String> {
        let target: PathBuf =
            std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
        if target.as_os_str().as_bytes().ends_with(b" (deleted)") {
            return None;
        }
        let rel = target.strip_prefix(root).ok()?;
        (!rel.as_os_str().is_empty()).then(|| rel.to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: &str = "/orchestrate-7-3";

    fn seen(events: &[(&str, Writer)]) -> Seen {
        let mut seen = Seen::default();
        for (path, writer) in events {
            seen.note((*path).to_owned(), writer.clone());
        }
        seen
    }

    fn alive(pid: u32, cgroup: &str) -> Writer {
        Writer::Alive {
            pid,
            cgroup: cgroup.to_owned(),
        }
    }

    #[test]
    fn a_path_only_outside_processes_wrote_is_not_the_steps() {
        let seen = seen(&[
            ("harness.log", alive(10, "/")),
            ("harness.log", alive(11, "/user.slice/cron")),
        ]);
        assert!(seen.outside("harness.log", STEP));
    }

    #[test]
    fn a_path_no_event_named_stays_the_steps() {
        let seen = seen(&[("harness.log", alive(10, "/"))]);
        assert!(!seen.outside("renamed-or-deleted.txt", STEP));
    }

    #[test]
    fn after_an_overflow_nothing_is_attributed() {
        let mut seen = seen(&[("harness.log", alive(10, "/"))]);
        seen.lost = true;
        assert!(!seen.outside("harness.log", STEP));
    }

    #[test]
    fn a_writer_gone_when_read_may_have_been_the_steps() {
        let seen = seen(&[
            ("harness.log", alive(10, "/")),
            ("harness.log", Writer::Gone { pid: 12 }),
        ]);
        assert!(!seen.outside("harness.log", STEP));
        let other_namespace = seen_of("x", Writer::Gone { pid: 0 });
        assert!(!other_namespace.outside("x", STEP));
    }

    fn seen_of(path: &str, writer: Writer) -> Seen {
        seen(&[(path, writer)])
    }

    #[test]
    fn mixed_writers_with_one_in_the_step_are_the_steps() {
        let seen = seen(&[
            ("shared.log", alive(10, "/")),
            ("shared.log", alive(20, STEP)),
            ("nested.txt", alive(21, "/orchestrate-7-3/orchestrate-30-0")),
        ]);
        assert!(!seen.outside("shared.log", STEP));
        assert!(!seen.outside("nested.txt", STEP), "a nested engine's step");
    }

    #[test]
    fn a_cgroup_whose_name_extends_the_steps_is_outside_it() {
        let seen = seen_of("a", alive(10, "/orchestrate-7-30"));
        assert!(seen.outside("a", STEP));
        assert!(!seen_of("a", alive(10, "/anything")).outside("a", "/"));
    }

    /// The watcher itself, where fanotify can be used (root on Linux): a write by this process
    /// (outside any step cgroup) to a file in the watched directory is seen with its writer, and
    /// a file outside the directory is not recorded.
    #[test]
    fn a_write_in_the_workspace_is_seen_with_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let Ok(watch) = Watch::start(dir.path()) else {
            eprintln!("SKIPPED: fanotify is not usable here");
            return;
        };
        std::fs::write(dir.path().join("log.txt"), "line\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/deep.txt"), "x").unwrap();
        std::fs::write(outside.path().join("elsewhere.txt"), "x").unwrap();
        let seen = watch.finish();
        assert!(!seen.lost);
        let me = std::process::id();
        let cgroup = crate::cgroup::of_pid(me).unwrap_or_default();
        let writers = &seen.writers["log.txt"];
        assert!(
            writers.contains(&Writer::Alive {
                pid: me,
                cgroup: cgroup.clone()
            }),
            "{writers:?}"
        );
        assert!(seen.writers.contains_key("sub/deep.txt"), "{seen:?}");
        assert!(
            seen.writers.keys().all(|path| !path.contains("elsewhere")),
            "{seen:?}"
        );
        assert!(seen.outside("log.txt", "/orchestrate-0-0"));
    }
}
