//! Starting a step's process, and the handle to it until it is reaped.
//!
//! On Linux x86-64 a child is started with one `clone3` system call that asks for everything at
//! once: `CLONE_VM | CLONE_VFORK` (no copy of the engine's page tables, as `posix_spawn` does it,
//! instead of the `fork` that std falls back to when a hook must run in the child), `CLONE_PIDFD`
//! (the descriptor that says when it exits, without a `pidfd_open`), `CLONE_CLEAR_SIGHAND` (the
//! engine's signal handlers reset in the child by the kernel, not by a loop of `sigaction` calls)
//! and `CLONE_INTO_CGROUP` (born in the step's cgroup: no write to `cgroup.procs`, which takes a
//! global lock that waits for an RCU grace period, milliseconds). The child runs [`child_main`] on
//! a stack of its own while this thread is suspended, and execs (discarding what was sent to the
//! engine's process group before it had its own); a failure before the exec is left in memory both
//! share and read once `clone3` returns, so no pipe round trip is needed to learn that the exec
//! worked.
//!
//! Where that cannot be used (another architecture, a kernel older than 5.7, a seccomp filter
//! that refuses `clone3`), [`spawn`] says so and the caller uses tokio's `Command`, as before;
//! [`Child`] hides which one started the process. This module does not decide what to run, how
//! to wait or when to kill: `exec` does.

use std::{
    ffi::{CString, OsStr, OsString},
    io,
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd, RawFd},
        unix::{ffi::OsStrExt, process::ExitStatusExt},
    },
    path::Path,
    process::ExitStatus,
    sync::atomic::{AtomicBool, Ordering},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, unix::AsyncFd},
    net::unix::pipe,
};

/// A child's stdin or stdout/stderr end held by the engine.
pub(crate) type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The engine's end of a child's stdin.
pub(crate) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// What to start.
pub(crate) struct Request<'a> {
    /// The file to execute (already resolved).
    pub(crate) program: &'a Path,
    /// The arguments, `argv[0]` first (the name the user gave, not the resolved path).
    pub(crate) argv: &'a [String],
    /// The whole environment of the child.
    pub(crate) env: &'a [(OsString, OsString)],
    /// Working directory.
    pub(crate) cwd: &'a Path,
    /// Whether the child reads from a pipe (else `/dev/null`).
    pub(crate) piped_stdin: bool,
    /// Descriptors of this process the child keeps open across the exec.
    pub(crate) inherit: &'a [RawFd],
    /// The cgroup directory the child is born in.
    pub(crate) cgroup: Option<BorrowedFd<'a>>,
}

/// Why [`spawn`] did not start the process.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// This system cannot spawn this way; use tokio's `Command` (the reason is logged once).
    Unsupported,
    /// The kernel refused to put the child in the cgroup; cgroups should not be used.
    Cgroup(io::Error),
    /// The process could not be started: the exec (or the set-up before it) failed.
    Failed(io::Error),
}

/// Set once `clone3` turned out unusable here: every later spawn goes the std way at once.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// A started child: its pid, a descriptor that becomes readable when it exits, and the engine's
/// ends of its pipes. Dropped before it is reaped, the child is killed and reaped.
pub(crate) enum Child {
    /// Started by [`spawn`].
    Own(Own),
    /// Started by tokio's `Command` (the fallback), with a pidfd where the kernel has them.
    Tokio(Box<tokio::process::Child>, Option<AsyncFd<OwnedFd>>),
}

/// A child started by [`spawn`].
pub(crate) struct Own {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
    stdin: Option<Writer>,
    stdout: Option<Reader>,
    stderr: Option<Reader>,
}

impl Child {
    /// A child started by tokio, watched through a pidfd where there is one.
    pub(crate) fn tokio(child: tokio::process::Child) -> Child {
        let watch = child.id().and_then(crate::process::exit_watch);
        Child::Tokio(Box::new(child), watch)
    }

    /// The pid while the child is not reaped.
    pub(crate) fn id(&self) -> Option<u32> {
        match self {
            Child::Own(own) => own.status.is_none().then_some(own.pid),
            Child::Tokio(child, _) => child.id(),
        }
    }

    /// The engine's end of the child's stdin (once).
    pub(crate) fn take_stdin(&mut self) -> Option<Writer> {
        match self {
            Child::Own(own) => own.stdin.take(),
            Child::Tokio(child, _) => child.stdin.take().map(|w| Box::new(w) as Writer),
        }
    }

    /// The engine's end of the child's stdout (once).
    pub(crate) fn take_stdout(&mut self) -> Option<Reader> {
        match self {
            Child::Own(own) => own.stdout.take(),
            Child::Tokio(child, _) => child.stdout.take().map(|r| Box::new(r) as Reader),
        }
    }

    /// The engine's end of the child's stderr (once).
    pub(crate) fn take_stderr(&mut self) -> Option<Reader> {
        match self {
            Child::Own(own) => own.stderr.take(),
            Child::Tokio(child, _) => child.stderr.take().map(|r| Box::new(r) as Reader),
        }
    }

    /// Returns once the child has exited, without reaping it where a pidfd says so: until it
    /// is reaped its pid, and so its process group id, cannot be reused. Without a pidfd (the
    /// fallback on Linux < 5.3) this reaps, accepting a tiny reuse window.
    pub(crate) async fn exited(&mut self) {
        let pidfd = match self {
            Child::Own(own) => Some(&own.pidfd),
            Child::Tokio(_, watch) => watch.as_ref(),
        };
        // Readiness is deliberately not cleared: an exited child stays exited, so a second
        // wait returns at once.
        if let Some(fd) = pidfd
            && fd.readable().await.is_ok()
        {
            return;
        }
        let _ = self.wait().await;
    }

    /// Waits for the child to exit and reaps it (once; later calls return the same status).
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Child::Own(own) => own.wait().await,
            Child::Tokio(child, _) => child.wait().await,
        }
    }

    /// Sends the child itself SIGKILL (its group and cgroup are the caller's business).
    pub(crate) fn start_kill(&mut self) -> io::Result<()> {
        match self {
            Child::Own(own) => own.kill(),
            Child::Tokio(child, _) => child.start_kill(),
        }
    }
}

impl Own {
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        loop {
            let _ = self.pidfd.readable().await?;
            if let Some(status) = reap(self.pid, false)? {
                self.status = Some(status);
                return Ok(status);
            }
            // Readable only once it has exited; a spurious wake-up waits again.
            if let Ok(mut guard) = self.pidfd.readable().await {
                guard.clear_ready();
            }
        }
    }

    fn kill(&self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL)
            .map_err(io::Error::from)
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let _ = self.kill();
        if let Ok(Some(_)) = reap(self.pid, false) {
            return;
        }
        // Killed but not gone yet: reap it off this thread (it dies within moments).
        let pid = self.pid;
        let _ = std::thread::Builder::new()
            .name("reap".into())
            .spawn(move || reap(pid, true));
    }
}

/// `waitpid` on our child `pid`: its status once reaped, `None` while it runs (`block` false).
fn reap(pid: u32, block: bool) -> io::Result<Option<ExitStatus>> {
    let target = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap_or(-1))
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let options = if block {
        rustix::process::WaitOptions::empty()
    } else {
        rustix::process::WaitOptions::NOHANG
    };
    Ok(rustix::process::waitpid(Some(target), options)?
        .map(|(_, status)| ExitStatus::from_raw(status.as_raw())))
}

/// Starts `request` with `clone3` (see the module documentation), or says why not.
pub(crate) fn spawn(request: &Request<'_>) -> Result<Child, SpawnError> {
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return Err(SpawnError::Unsupported);
    }
    static CHOSEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let turned_off = CHOSEN.get_or_init(|| {
        std::env::var("ORCHESTRATE_SPAWN")
            .ok()
            .filter(|value| value == "std")
    });
    if let Some(value) = turned_off {
        return Err(unsupported(&format!(
            "turned off by ORCHESTRATE_SPAWN={value}"
        )));
    }
    let started = imp::spawn(request);
    if started.is_ok() {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| tracing::debug!("steps are spawned by clone3"));
    }
    started
}

/// Turns `clone3` off for this process, logging why once.
fn unsupported(reason: &dyn std::fmt::Display) -> SpawnError {
    if !UNSUPPORTED.swap(true, Ordering::Relaxed) {
        tracing::debug!("steps are spawned by std's Command: {reason}");
    }
    SpawnError::Unsupported
}

/// A C string of `bytes`, or the error std gives for an interior NUL.
fn c_string(bytes: &[u8]) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| {
        SpawnError::Failed(io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        ))
    })
}

/// `KEY=VALUE` for each variable.
fn env_block(env: &[(OsString, OsString)]) -> Result<Vec<CString>, SpawnError> {
    env.iter()
        .map(|(key, value)| {
            let mut entry = Vec::with_capacity(key.len() + value.len() + 1);
            entry.extend_from_slice(key.as_bytes());
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            c_string(&entry)
        })
        .collect()
}

/// The environment a child gets: the engine's, without `remove`, with `set` applied in order.
pub(crate) fn child_env(remove: &[String], set: &[(String, String)]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(key, _)| !remove.iter().any(|r| OsStr::new(r) == key))
        .collect();
    for (key, value) in set {
        match env.iter_mut().find(|(k, _)| k == OsStr::new(key)) {
            Some(slot) => slot.1 = OsString::from(value),
            None => env.push((OsString::from(key), OsString::from(value))),
        }
    }
    env
}

/// `/dev/null`, opened once, for the stdin of children that get no bytes.
fn dev_null() -> io::Result<BorrowedFd<'static>> {
    static NULL: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();
    if let Some(fd) = NULL.get() {
        return Ok(fd.as_fd());
    }
    let fd = OwnedFd::from(std::fs::File::open("/dev/null")?);
    Ok(NULL.get_or_init(|| fd).as_fd())
}

/// A pipe whose end at `ours` (0 read, 1 write) is non-blocking, for the reactor; both ends
/// close on exec (the child gets its end by `dup2`, which clears that flag).
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((read, write))
}

fn nonblocking(fd: &OwnedFd) -> io::Result<()> {
    rustix::io::ioctl_fionbio(fd, true).map_err(io::Error::from)
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod imp {
    //! The x86-64 `clone3` spawn. Everything the child touches is prepared here, in the parent:
    //! the child only makes system calls on memory this thread keeps alive (it is suspended
    //! until the child execs or exits), and never allocates or takes a lock.

    use std::{
        ffi::{CString, c_char, c_int, c_void},
        io,
        os::fd::{AsRawFd, FromRawFd, OwnedFd},
        sync::atomic::{AtomicI32, Ordering},
    };

    use super::{
        AsyncFd, Child, Interest, Own, Reader, Request, SpawnError, Writer, c_string, dev_null,
        env_block, nonblocking, pipe, pipe_pair, unsupported,
    };
    use std::os::unix::ffi::OsStrExt;

    const CLONE_PIDFD: u64 = 0x1000;
    const CLONE_VM: u64 = 0x100;
    const CLONE_VFORK: u64 = 0x4000;
    const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    /// The child's stack: it calls a handful of thin libc wrappers, nothing deep.
    const STACK: usize = 64 * 1024;

    /// `struct clone_args` (linux/sched.h), up to `cgroup` (Linux 5.7).
    #[repr(C, align(8))]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }

    /// What the child reads, and where it leaves the error of a failed step before the exec.
    #[repr(C)]
    struct ChildArgs {
        program: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
        cwd: *const c_char,
        /// Sources of the child's descriptors 0, 1 and 2.
        stdio: [c_int; 3],
        inherit: *const c_int,
        inherit_len: usize,
        /// The errno of the failed call, 0 while all went well.
        error: AtomicI32,
    }

    pub(super) fn spawn(request: &Request<'_>) -> Result<Child, SpawnError> {
        let program = c_string(request.program.as_os_str().as_bytes())?;
        let cwd = c_string(request.cwd.as_os_str().as_bytes())?;
        let argv: Vec<CString> = request
            .argv
            .iter()
            .map(|arg| c_string(arg.as_bytes()))
            .collect::<Result<_, _>>()?;
        let envp = env_block(request.env)?;
        let argv_ptrs = null_terminated(&argv);
        let envp_ptrs = null_terminated(&envp);

        let failed = |e: io::Error| SpawnError::Failed(e);
        let stdin = if request.piped_stdin {
            Some(pipe_pair().map_err(failed)?)
        } else {
            None
        };
        let stdout = pipe_pair().map_err(failed)?;
        let stderr = pipe_pair().map_err(failed)?;
        let stdin_source = match &stdin {
            Some((read, _)) => read.as_raw_fd(),
            None => dev_null().map_err(failed)?.as_raw_fd(),
        };
        let args = ChildArgs {
            program: program.as_ptr(),
            argv: argv_ptrs.as_ptr(),
            envp: envp_ptrs.as_ptr(),
            cwd: cwd.as_ptr(),
            stdio: [stdin_source, stdout.1.as_raw_fd(), stderr.1.as_raw_fd()],
            inherit: request.inherit.as_ptr(),
            inherit_len: request.inherit.len(),
            error: AtomicI32::new(0),
        };

        let (pid, pidfd) = clone(&args, request.cgroup.map(|fd| fd.as_raw_fd()))?;
        // The child has exec'd or exited. Its ends of the pipes close when this returns.
        let error = args.error.load(Ordering::Acquire);
        if error != 0 {
            // It exited (127) without running anything; reap it and say why.
            let _ = super::reap(pid, true);
            return Err(SpawnError::Failed(io::Error::from_raw_os_error(error)));
        }
        // SAFETY: the `AsyncFd` owns the descriptor for its whole lifetime, and an `OwnedFd`
        // keeps it open and unchanged until dropped.
        let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
            .map_err(|e| failed(io::Error::other(e.to_string())))?;
        let reader = |fd: OwnedFd| -> io::Result<Reader> {
            nonblocking(&fd)?;
            Ok(Box::new(pipe::Receiver::from_owned_fd_unchecked(fd)?))
        };
        let mut own = Own {
            pid,
            pidfd,
            status: None,
            stdin: None,
            stdout: None,
            stderr: None,
        };
        // From here on `own` kills and reaps the child if anything fails.
        if let Some((_, write)) = stdin {
            nonblocking(&write).map_err(failed)?;
            let sender = pipe::Sender::from_owned_fd_unchecked(write).map_err(failed)?;
            own.stdin = Some(Box::new(sender) as Writer);
        }
        own.stdout = Some(reader(stdout.0).map_err(failed)?);
        own.stderr = Some(reader(stderr.0).map_err(failed)?);
        Ok(Child::Own(own))
    }

    /// Pointers to each string, then a null.
    fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    }

    /// The `clone3` call: the child's pid and pidfd once it has exec'd or exited.
    fn clone(args: &ChildArgs, cgroup: Option<c_int>) -> Result<(u32, OwnedFd), SpawnError> {
        let mut stack = vec![0u8; STACK];
        // The top of the stack, 16-byte aligned as the ABI wants it at a call.
        let top = (stack.as_mut_ptr() as usize + STACK) & !15;
        let base = stack.as_mut_ptr() as usize;
        let mut pidfd: c_int = -1;
        let mut clone_args = CloneArgs {
            flags: CLONE_VM | CLONE_VFORK | CLONE_PIDFD | CLONE_CLEAR_SIGHAND,
            pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
            exit_signal: libc::SIGCHLD as u64,
            stack: base as u64,
            stack_size: (top - base) as u64,
            ..CloneArgs::default()
        };
        let size = match cgroup {
            Some(fd) => {
                clone_args.flags |= CLONE_INTO_CGROUP;
                clone_args.cgroup = fd as u64;
                std::mem::size_of::<CloneArgs>()
            }
            // Without a cgroup the first version of the struct does (Linux 5.3+).
            None => 64,
        };
        // Every signal is blocked in this thread across the call, so the child starts with all
        // of them blocked: none can run a handler in memory it shares with the engine before
        // the kernel has reset the handlers (CLONE_CLEAR_SIGHAND) and the child unblocks.
        let mut all: libc::sigset_t = unsafe_zeroed();
        let mut old: libc::sigset_t = unsafe_zeroed();
        // SAFETY: sigfillset and rt_sigprocmask on sets owned here; the raw system call also
        // blocks the two signals glibc reserves, which pthread_sigmask would leave open.
        unsafe {
            libc::sigfillset(&mut all);
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &all,
                &mut old,
                8usize,
            );
        }
        // SAFETY: `clone_args` and `args` live until this returns, and the child only reads
        // `args` (and writes its `error`) while this thread is suspended (CLONE_VFORK); it runs
        // on `stack`, which is dropped only after the child has exec'd or exited.
        let ret = unsafe {
            clone3(
                &mut clone_args,
                size,
                child_main,
                std::ptr::from_ref(args).cast_mut().cast::<c_void>(),
            )
        };
        // SAFETY: restores this thread's mask from `old`, filled by the call above.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &old,
                std::ptr::null_mut::<libc::sigset_t>(),
                8usize,
            );
        }
        drop(stack);
        if ret < 0 {
            let code = i32::try_from(-ret).unwrap_or(libc::EINVAL);
            let error = io::Error::from_raw_os_error(code);
            return Err(match code {
                // No clone3 (an old kernel, or a seccomp filter that answers ENOSYS), or a
                // flag or a struct size this kernel does not know (Linux < 5.7).
                libc::ENOSYS | libc::E2BIG => unsupported(&format!("clone3: {error}")),
                libc::EINVAL if cgroup.is_none() => unsupported(&format!("clone3: {error}")),
                // The cgroup's rules (delegation, a domain cgroup with controllers) refuse it.
                _ if cgroup.is_some() && code != libc::ENOMEM && code != libc::EAGAIN => {
                    SpawnError::Cgroup(error)
                }
                _ => SpawnError::Failed(error),
            });
        }
        let pid = u32::try_from(ret).map_err(|_| SpawnError::Failed(io::Error::other("pid")))?;
        // SAFETY: CLONE_PIDFD stored a new descriptor for the child, owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        Ok((pid, pidfd))
    }

    fn unsafe_zeroed() -> libc::sigset_t {
        // SAFETY: sigset_t is plain data; all zeroes is the empty set.
        unsafe { std::mem::zeroed() }
    }

    /// `clone3(args, size)`; in the child, calls `f(arg)` on the new stack (it never returns).
    ///
    /// # Safety
    /// `args` must describe a valid stack for the child and `f` must not return.
    unsafe fn clone3(
        args: *mut CloneArgs,
        size: usize,
        f: extern "C" fn(*mut c_void) -> !,
        arg: *mut c_void,
    ) -> isize {
        let ret: isize;
        // SAFETY: the caller's contract. The child starts after `syscall` with rax = 0 and its
        // stack pointer at the top of the new stack; it clears the frame pointer and calls
        // `f`, which execs or exits. The parent gets the pid (or -errno) in rax; the system
        // call preserves every register but rax, rcx and r11.
        unsafe {
            std::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "xor ebp, ebp",
                "mov rdi, r12",
                "call r13",
                "ud2",
                "2:",
                inlateout("rax") libc::SYS_clone3 as isize => ret,
                in("rdi") args,
                in("rsi") size,
                in("r12") arg,
                in("r13") f,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// The child: descriptors, directory, process group, signals, then the exec. Only system
    /// calls; the first that fails leaves its errno in `error` and exits 127.
    extern "C" fn child_main(arg: *mut c_void) -> ! {
        // SAFETY: `arg` is the parent's `ChildArgs`, alive and unchanged while it is suspended.
        let args = unsafe { &*(arg as *const ChildArgs) };
        // SAFETY: each call is a thin system call wrapper on descriptors and C strings the
        // parent prepared; nothing allocates or locks.
        unsafe {
            for (target, &source) in args.stdio.iter().enumerate() {
                let target = target as c_int;
                let done = if source == target {
                    libc::fcntl(source, libc::F_SETFD, 0)
                } else {
                    libc::dup2(source, target)
                };
                if done < 0 {
                    fail(args);
                }
            }
            for i in 0..args.inherit_len {
                if libc::fcntl(*args.inherit.add(i), libc::F_SETFD, 0) < 0 {
                    fail(args);
                }
            }
            if libc::chdir(args.cwd) < 0 || libc::setpgid(0, 0) < 0 {
                fail(args);
            }
            // Until `setpgid` the child was in the engine's process group, its signals blocked:
            // one sent to that group meanwhile (Ctrl-C, a supervisor's SIGTERM to a role
            // process) is pending here, and was meant for the engine. Setting a signal to
            // "ignore" discards its pending instances; the disposition is then put back.
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::syscall(libc::SYS_rt_sigpending, &mut pending, 8usize);
            for signal in 1..=64 {
                if libc::sigismember(&pending, signal) == 1 {
                    let mut ignore: libc::sigaction = std::mem::zeroed();
                    ignore.sa_sigaction = libc::SIG_IGN;
                    let mut before: libc::sigaction = std::mem::zeroed();
                    libc::sigaction(signal, &ignore, &mut before);
                    libc::sigaction(signal, &before, std::ptr::null_mut());
                }
            }
            // The engine ignores SIGPIPE (Rust does); its children get the default, as std
            // gives them. Caught signals were reset by the kernel; ignored ones stay ignored.
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGPIPE, &default, std::ptr::null_mut());
            let empty: libc::sigset_t = std::mem::zeroed();
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &empty,
                std::ptr::null_mut::<libc::sigset_t>(),
                8usize,
            );
            libc::execve(args.program, args.argv, args.envp);
            fail(args)
        }
    }

    /// Leaves errno for the parent and exits without running anything of the engine's.
    fn fail(args: &ChildArgs) -> ! {
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL);
        args.error.store(errno.max(1), Ordering::Release);
        // SAFETY: exit_group ends the child only (it is a process of its own).
        unsafe {
            libc::syscall(libc::SYS_exit_group, 127);
        }
        unreachable!("exit_group returned")
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
mod imp {
    use super::{Child, Request, SpawnError, unsupported};

    pub(super) fn spawn(_request: &Request<'_>) -> Result<Child, SpawnError> {
        Err(unsupported(
            &"clone3 spawning is only built for Linux x86-64",
        ))
    }
}
