//! Running one step's process, from spawn until it is reaped.
//!
//! This module owns everything about a single child process: resolving
//! `argv[0]` (never through a shell), its environment, working directory and
//! stdin, streaming stdout and stderr into log files while keeping the start of
//! stdout in memory, masking secret values on the way, a wall-clock timeout,
//! cancellation, and stopping the child's whole process group (and cgroup) so
//! that nothing it started outlives it.
//!
//! It does not know about workflows, variables, retries or state: callers hand
//! it a fully resolved [`Spec`] and get a [`Finished`] back. It never panics on
//! a bad spec; anything that stops the child from starting is reported as
//! [`Outcome::SpawnFailed`].
//!
//! Process model: every child is the leader of a new process group
//! (`process_group(0)`), so signalling the group reaches its descendants too.
//! The group is always sent `SIGKILL` once the main child has exited and
//! *before* the child is reaped: while the leader is an unreaped zombie its
//! pid, and so the group id, cannot be reused by an unrelated process.
//! Where cgroup v2 can be used, the child also runs in a cgroup of its own
//! ([`crate::cgroup`]), entered before it execs; once the group is swept, the
//! cgroup is killed, waited for and removed, so processes that left the group
//! (`setsid`, double-forked daemons) end with the step too.

use std::{
    ffi::{OsStr, OsString},
    fmt,
    fs::File,
    io::{self, Write},
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    pin::pin,
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    process::Command,
};
use tokio_util::sync::CancellationToken;

use crate::{
    process::kill_group,
    spawn::{self, Child, SpawnError},
};

/// What replaces every occurrence of a secret in logs and captured output.
const MASK: &[u8] = b"***";

/// Bytes asked for per read of a pipe; the default Linux pipe capacity, so one
/// read normally empties the pipe.
const READ_CHUNK: usize = 64 * 1024;

/// How long stdout/stderr may stay open after the process group is gone.
///
/// Only a process that escaped the group (`setsid`, double fork into another
/// group) can still hold the pipes then; without this bound such a leak would
/// hang the engine forever. Output already buffered in the pipes is always read
/// in full, this only bounds waiting for *more*.
const LEAK_TIMEOUT: Duration = Duration::from_millis(100);

/// The longest grace between `SIGTERM` and `SIGKILL` when the caller's [`Spec::stop`] fires:
/// a budget stop must end the spending at once.
pub(crate) const STOP_GRACE: Duration = Duration::from_millis(500);

/// `PATH` used when neither the spec nor the engine has one (glibc's default
/// for `execvp`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Everything needed to run one step's process.
#[derive(Clone)]
pub struct Spec {
    /// Program and arguments, passed to the program as is (no shell).
    /// `argv[0]` without a `/` is looked up on `PATH` (the one in `env` if it
    /// sets `PATH`, else the engine's); with a `/` but relative, it is relative
    /// to `cwd`.
    pub argv: Vec<String>,
    /// Added to (overriding) the inherited environment; later entries win.
    pub env: Vec<(String, String)>,
    /// Removed from the inherited environment (before `env` is applied).
    pub env_remove: Vec<String>,
    /// Working directory of the child.
    pub cwd: PathBuf,
    /// What the child reads on stdin.
    pub stdin: Stdin,
    /// Full stdout, masked, streamed here; created or truncated.
    pub stdout_log: PathBuf,
    /// Full stderr, masked, streamed here; created or truncated.
    pub stderr_log: PathBuf,
    /// The user's redirect of stdout: every byte, *unmasked*, streamed here;
    /// created or truncated, parent directories created.
    pub stdout_file: Option<PathBuf>,
    /// Keep at most this many bytes of (masked) stdout in memory.
    pub capture_limit: usize,
    /// Wall-clock limit, measured from the start of [`run`].
    pub timeout: Option<Duration>,
    /// Output limit: a child that writes nothing on stdout or stderr for this long is stopped
    /// like a timed-out one ([`Outcome::IdleTimedOut`]).
    pub idle_timeout: Option<Duration>,
    /// Every complete line of stdout (unmasked, newline stripped; a final line without one is
    /// sent at the end) is sent here as it is read, for a caller that follows the stream live
    /// (budgets parse agent usage from it). The receiver may go away; lines are then dropped.
    pub stdout_lines: Option<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
    /// When this fires, the process group is stopped like on a timeout, with a grace of at most
    /// [`STOP_GRACE`], and the outcome is [`Outcome::Stopped`]: the caller decided (a budget).
    pub stop: Option<CancellationToken>,
    /// Time between `SIGTERM` and `SIGKILL` to the process group when stopping
    /// the child on timeout or cancellation.
    pub kill_grace: Duration,
    /// Values replaced by `***` in both logs and the captured stdout; empty
    /// values are ignored.
    pub secrets: Vec<String>,
    /// Descriptors of this process the child inherits (their close-on-exec flag is
    /// cleared in the child only). The swarm passes a task's locked file so that the
    /// lock lives as long as any process of the attempt.
    pub inherit_fds: Vec<i32>,
}

// Hand-written so that secrets and environment values (which often carry
// secrets) never end up in a debug log.
impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spec")
            .field("argv", &self.argv)
            .field(
                "env_keys",
                &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("cwd", &self.cwd)
            .field("stdin", &self.stdin)
            .field("stdout_log", &self.stdout_log)
            .field("stderr_log", &self.stderr_log)
            .field("stdout_file", &self.stdout_file)
            .field("capture_limit", &self.capture_limit)
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("stdout_lines", &self.stdout_lines.is_some())
            .field("stop", &self.stop.is_some())
            .field("kill_grace", &self.kill_grace)
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .finish()
    }
}

/// The child's standard input.
#[derive(Clone, PartialEq, Eq)]
pub enum Stdin {
    /// `/dev/null`.
    Null,
    /// These bytes, written by a separate task, then stdin is closed. A child
    /// that does not read them does not block the run.
    Bytes(Vec<u8>),
}

impl fmt::Debug for Stdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stdin::Null => f.write_str("Null"),
            // The bytes may be large or sensitive; their length is what matters.
            Stdin::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
        }
    }
}

/// How the process ended.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Exited on its own with this status code.
    Exited {
        /// The exit status the process returned.
        code: i32,
    },
    /// Killed by this signal, not by us.
    Signaled {
        /// The signal number (`9` for SIGKILL).
        signal: i32,
    },
    /// Ran past [`Spec::timeout`] and was stopped.
    TimedOut,
    /// Wrote nothing for [`Spec::idle_timeout`] (`after_ms`) and was stopped.
    IdleTimedOut {
        /// How long it had been silent when stopped, in milliseconds.
        after_ms: u64,
    },
    /// Stopped because the caller's [`Spec::stop`] fired (a budget ran out).
    Stopped,
    /// The cancellation token fired and the process was stopped.
    Cancelled,
    /// The process could not be started; `message` names `argv[0]` and why.
    SpawnFailed {
        /// What could not be started and why, naming `argv[0]`.
        message: String,
    },
}

/// Suffixes that mark a [`Outcome::SpawnFailed`] message as "command not
/// found" (exit code 127, as in shells) rather than "cannot execute" (126).
const NOT_FOUND_SUFFIXES: [&str; 2] = [" not found on PATH", " not found"];

impl Outcome {
    /// The shell-style exit code: the code itself, `128 + signal`, 124 for a
    /// timeout (as `timeout(1)`), 130 for cancellation (as Ctrl-C), 127 when
    /// the program was not found and 126 for any other spawn failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited { code } => *code,
            Outcome::Signaled { signal } => 128 + signal,
            Outcome::TimedOut | Outcome::IdleTimedOut { .. } => 124,
            Outcome::Stopped => 1,
            Outcome::Cancelled => 130,
            Outcome::SpawnFailed { message } => {
                if NOT_FOUND_SUFFIXES.iter().any(|s| message.ends_with(s)) {
                    127
                } else {
                    126
                }
            }
        }
    }

    /// True only for a process that exited with code 0.
    pub fn success(&self) -> bool {
        matches!(self, Outcome::Exited { code: 0 })
    }
}

/// The result of one [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// How the process ended.
    pub outcome: Outcome,
    /// The first `capture_limit` bytes of masked stdout.
    pub stdout: Vec<u8>,
    /// Total bytes the child wrote to stdout (before masking).
    pub stdout_bytes: u64,
    /// Whether `stdout` holds all of the (masked) stream, i.e. nothing was cut at
    /// `capture_limit`. Compare with this, not with `stdout_bytes`: masking
    /// changes the length.
    pub stdout_complete: bool,
    /// Number of stdout lines, counting a final line without a newline.
    pub(crate) stdout_lines: u64,
    /// Wall-clock time at which [`run`] started.
    pub(crate) started_at: chrono::DateTime<chrono::Utc>,
    /// Time from the start of [`run`] until the child was reaped and its
    /// output fully written.
    pub(crate) duration: Duration,
    /// The child's pid, if it was spawned.
    pub pid: Option<u32>,
    /// The step's cgroup (its hierarchy path, as `/proc/PID/cgroup` names it), when the child
    /// ran in one: what a readonly step's write attribution compares writers with.
    pub cgroup: Option<String>,
    /// Whether the stdout and the stderr log were created: a log exists only for a stream the
    /// child wrote to.
    pub logged: (bool, bool),
}

/// Runs `spec` to completion and reports how it went.
///
/// Never panics and never returns early: when this returns, the child has
/// been reaped, its process group has been sent `SIGKILL`, and both logs (and
/// `stdout_file`) hold everything that was read. If the returned future is
/// dropped midway, the process group is killed and tokio reaps the child.
pub async fn run(spec: Spec, cancel: CancellationToken) -> Finished {
    let started_at = chrono::Utc::now();
    let start = Instant::now();
    let not_run = |outcome: Outcome| Finished {
        outcome,
        stdout: Vec::new(),
        stdout_bytes: 0,
        stdout_complete: true,
        stdout_lines: 0,
        started_at,
        duration: start.elapsed(),
        pid: None,
        cgroup: None,
        logged: (false, false),
    };
    let failed = |message: String| not_run(Outcome::SpawnFailed { message });

    let raw_file = match open_stdout_file(spec.stdout_file.as_deref()) {
        Ok(file) => file,
        Err(message) => return failed(message),
    };
    let Some(argv0) = spec.argv.first() else {
        return failed("cannot run an empty command line".to_owned());
    };
    if cancel.is_cancelled() {
        return not_run(Outcome::Cancelled);
    }
    let (program, remembered) = match program_of(&spec, argv0) {
        Ok(found) => found,
        Err(message) => return failed(message),
    };
    let launched = match launch(&spec, argv0, &program) {
        // A remembered lookup whose file is gone (or changed): look again, once, as a shell
        // does with its `hash` table.
        Err(_) if remembered => {
            forget_program(&spec, argv0);
            match program_of(&spec, argv0) {
                Ok((program, _)) => launch(&spec, argv0, &program).map_err(|e| (e, program)),
                Err(message) => return failed(message),
            }
        }
        other => other.map_err(|e| (e, program)),
    };
    let (mut child, cgroup) = match launched {
        Ok(started) => started,
        Err((e, program)) => return failed(spawn_failure(argv0, &program, &spec.cwd, &e)),
    };

    let pid = child.id();
    // The child is its group's leader, so the group id is its pid. `id()` is
    // `Some` until the child is reaped; 0 makes `kill_group` a no-op.
    let pgid = pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    let cgroup_path = cgroup.as_ref().map(|cgroup| cgroup.path().to_owned());
    let mut guard = GroupGuard::new(pgid, cgroup);
    let stdin_task = feed_stdin(spec.stdin, child.take_stdin());

    // Milliseconds since `start` of the latest read from either pipe, for `idle_timeout`.
    let last_output = std::sync::atomic::AtomicU64::new(0);
    let masker = Masker::new(&spec.secrets);
    let mut out = Output::new(
        spec.stdout_log,
        raw_file,
        masker.clone(),
        spec.capture_limit,
        spec.stdout_lines,
        (&last_output, start),
    );
    let mut err = Output::new(
        spec.stderr_log,
        None,
        masker,
        0,
        None,
        (&last_output, start),
    );
    let limits = Limits {
        deadline: spec.timeout.and_then(|t| start.checked_add(t)),
        idle: spec.idle_timeout.map(|idle| (idle, &last_output, start)),
        stop: spec.stop.as_ref(),
    };
    let (stop, status) = wait_and_drain(
        &mut child,
        (pgid, guard.cgroup.as_mut()),
        limits,
        (spec.kill_grace, &cancel),
        (&mut out, &mut err),
    )
    .await;
    // Reaped: from here on the pid and group id may belong to someone else.
    guard.disarm();
    if let Some(task) = stdin_task {
        // A grandchild outside the group could keep stdin open without
        // reading; the write is pointless now that the child is gone.
        task.abort();
    }

    Finished {
        outcome: outcome(stop, status, spec.idle_timeout, argv0, pgid),
        stdout: out.capture,
        stdout_bytes: out.bytes,
        stdout_complete: !out.cut,
        stdout_lines: out.newlines + u64::from(out.last.is_some_and(|b| b != b'\n')),
        started_at,
        duration: start.elapsed(),
        pid,
        cgroup: cgroup_path,
        logged: (out.log.created(), err.log.created()),
    }
}

/// Creates the user's redirect of stdout, if there is one, before anything runs: a file that
/// cannot be created is a failure to run the step.
fn open_stdout_file(path: Option<&Path>) -> Result<Option<File>, String> {
    match path {
        None => Ok(None),
        Some(path) => match create_file(path) {
            Ok(file) => Ok(Some(file)),
            Err(e) => Err(format!(
                "cannot create output file `{}`: {e}",
                path.display()
            )),
        },
    }
}

/// The program `argv0` names, looked up on the spec's `PATH` (else the engine's), and whether
/// the lookup was remembered from an earlier step; the message names a missing working
/// directory before a missing program.
fn program_of(spec: &Spec, argv0: &str) -> Result<(PathBuf, bool), String> {
    let path_var = path_var(spec);
    if let Some(program) = Lookups::get(argv0, path_var.as_deref()) {
        return Ok((program, true));
    }
    let program = resolve_program(argv0, path_var.as_deref(), &spec.cwd)
        .map_err(|message| cwd_problem(argv0, &spec.cwd).unwrap_or(message))?;
    Lookups::put(argv0, path_var.as_deref(), &program);
    Ok((program, false))
}

/// Forgets the remembered lookup of `argv0` (its spawn failed).
fn forget_program(spec: &Spec, argv0: &str) {
    Lookups::forget(argv0, path_var(spec).as_deref());
}

/// The `PATH` a step's program is looked up on: the spec's, else the engine's.
fn path_var(spec: &Spec) -> Option<OsString> {
    spec.env
        .iter()
        .rev()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| OsString::from(value))
        .or_else(|| std::env::var_os("PATH"))
}

/// Programs found on `PATH`, remembered per name and `PATH` value like a shell's `hash` table:
/// a step that runs `true` a thousand times searches `PATH` once, not a thousand times (each
/// search is a failing `stat` per directory before the one that has it). A remembered file
/// that is gone or no longer runs is looked up again at once ([`run`]), and every lookup is
/// done again after [`LOOKUP_KEPT_FOR`], so that a program newly installed earlier on `PATH` is
/// found within seconds by a role that runs for weeks. Only lookups whose `PATH` is all
/// absolute directories are remembered (a relative entry depends on the step's directory).
struct Lookups;

/// Lookups remembered, at most this many (then the table starts over).
const LOOKUPS_KEPT: usize = 256;

/// How long a lookup is trusted.
const LOOKUP_KEPT_FOR: Duration = Duration::from_secs(2);

/// A remembered lookup: the name, the `PATH` it was found on, the file, and when.
type Lookup = (String, OsString, PathBuf, Instant);

impl Lookups {
    fn table() -> std::sync::MutexGuard<'static, Vec<Lookup>> {
        static TABLE: std::sync::Mutex<Vec<Lookup>> = std::sync::Mutex::new(Vec::new());
        TABLE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a lookup of `argv0` on `path_var` may be remembered at all.
    fn cacheable(argv0: &str, path_var: Option<&OsStr>) -> Option<OsString> {
        if argv0.contains('/') {
            return None;
        }
        let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
        std::env::split_paths(path_var)
            .all(|dir| dir.is_absolute())
            .then(|| path_var.to_owned())
    }

    fn get(argv0: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
        let key = Lookups::cacheable(argv0, path_var)?;
        Lookups::table()
            .iter()
            .find(|(name, path, _, at)| {
                name == argv0 && *path == key && at.elapsed() < LOOKUP_KEPT_FOR
            })
            .map(|(_, _, program, _)| program.clone())
    }

    fn put(argv0: &str, path_var: Option<&OsStr>, program: &Path) {
        let Some(key) = Lookups::cacheable(argv0, path_var) else {
            return;
        };
        let mut table = Lookups::table();
        if table.len() >= LOOKUPS_KEPT {
            table.clear();
        }
        table.retain(|(name, path, _, _)| !(name == argv0 && *path == key));
        table.push((argv0.to_owned(), key, program.to_owned(), Instant::now()));
    }

    fn forget(argv0: &str, path_var: Option<&OsStr>) {
        if let Some(key) = Lookups::cacheable(argv0, path_var) {
            Lookups::table().retain(|(name, path, _, _)| !(name == argv0 && *path == key));
        }
    }
}

/// Starts the child of `spec`, in a cgroup of its own where the system allows one: by
/// `clone3` ([`crate::spawn`]), born in the cgroup, else by tokio's `Command`, entering the
/// cgroup before it execs.
fn launch(
    spec: &Spec,
    argv0: &str,
    program: &Path,
) -> io::Result<(Child, Option<crate::cgroup::Step>)> {
    // The step's own cgroup, where the system allows one: stopping it reaches every process the
    // step started, also those that left its group and session.
    let mut cgroup = crate::cgroup::Step::create();
    let env = spawn::child_env(&spec.env_remove, &spec.env);
    let mut request = spawn::Request {
        program,
        argv: &spec.argv,
        env: &env,
        cwd: &spec.cwd,
        piped_stdin: matches!(spec.stdin, Stdin::Bytes(_)),
        inherit: &spec.inherit_fds,
        cgroup: cgroup.as_ref().and_then(crate::cgroup::Step::dir_fd),
    };
    let first = spawn::spawn(&request);
    let retried = match first {
        Err(SpawnError::Cgroup(error)) => {
            if let Some(cgroup) = &cgroup {
                cgroup.refused(error);
            }
            request.cgroup = None;
            let again = spawn::spawn(&request);
            cgroup = None;
            again
        }
        other => other,
    };
    match retried {
        // Born in the cgroup (the kernel refuses the spawn otherwise).
        Ok(child) => return Ok((child, cgroup)),
        Err(SpawnError::Failed(error) | SpawnError::Cgroup(error)) => return Err(error),
        Err(SpawnError::Unsupported) => {}
    }
    let mut command = command(spec, argv0, program, cgroup.as_ref());
    let child = Child::tokio(spawn_std(&mut command, &spec.inherit_fds)?);
    // A child that did not land in its cgroup is stopped by its group alone.
    let cgroup = cgroup.filter(|cgroup| child.id().is_some_and(|pid| cgroup.holds(pid)));
    Ok((child, cgroup))
}

/// The command for `spec`, not yet spawned (the fallback of [`launch`]): argv, environment,
/// working directory, pipes, a process group of its own, and entering `cgroup` before it execs.
fn command(
    spec: &Spec,
    argv0: &str,
    program: &Path,
    cgroup: Option<&crate::cgroup::Step>,
) -> Command {
    let mut command = Command::new(program);
    command
        // The child sees the name it was given, not the resolved path.
        .arg0(argv0)
        .args(&spec.argv[1..]);
    for key in &spec.env_remove {
        command.env_remove(key);
    }
    command
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(match spec.stdin {
            Stdin::Null => Stdio::null(),
            Stdin::Bytes(_) => Stdio::piped(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Backstop for a dropped future: tokio then kills and reaps the child;
        // `GroupGuard` takes care of its descendants.
        .kill_on_drop(true);
    // The child enters the cgroup in `pre_exec`, before it execs, so no process of the step
    // ever runs outside it; moving it after the spawn would let it fork first. The price is
    // that std forks instead of using `posix_spawn`, and the write to `cgroup.procs` waits for
    // the kernel's global cgroup lock.
    if let Some(cgroup) = cgroup {
        let procs = cgroup.procs();
        // SAFETY: the hook runs in the forked child before exec; `cgroup::enter` makes only
        // async-signal-safe calls (open, write, close) on a path allocated here, in the parent.
        unsafe {
            command.pre_exec(move || {
                crate::cgroup::enter(&procs);
                Ok(())
            });
        }
    }
    command
}

/// Spawns `command` with `inherit_fds` open to it, one spawn at a time (see [`spawn_lock`]).
fn spawn_std(command: &mut Command, inherit_fds: &[i32]) -> io::Result<tokio::process::Child> {
    let _serial = spawn_lock();
    match Inheritable::open_up(inherit_fds) {
        Ok(_inheritable) => command.spawn(),
        Err(e) => Err(e),
    }
}

/// Writes the stdin bytes, if any, from a task of their own, so a child that does not read
/// them cannot block the run. Without bytes the pipe is dropped here: the child gets EOF at once.
fn feed_stdin(stdin: Stdin, pipe: Option<spawn::Writer>) -> Option<tokio::task::JoinHandle<()>> {
    match (stdin, pipe) {
        (Stdin::Bytes(bytes), Some(mut pipe)) if !bytes.is_empty() => {
            Some(tokio::spawn(async move {
                // EPIPE just means the child stopped reading (or never
                // started), which is its business; no other write error could
                // be acted upon either. Dropping `pipe` closes stdin.
                let _ = pipe.write_all(&bytes).await;
            }))
        }
        // No bytes: dropping the pipe here gives the child EOF at once.
        _ => None,
    }
}

/// Waits for the child (see [`supervise`]) while draining both of its pipes into `out` and
/// `err`; once it is reaped, output still buffered is read in full but more is waited for only
/// [`LEAK_TIMEOUT`].
async fn wait_and_drain(
    child: &mut Child,
    group: (i32, Option<&mut crate::cgroup::Step>),
    limits: Limits<'_>,
    (kill_grace, cancel): (Duration, &CancellationToken),
    (out, err): (&mut Output<'_>, &mut Output<'_>),
) -> (Stop, io::Result<ExitStatus>) {
    let stdout_pipe = child.take_stdout();
    let stderr_pipe = child.take_stderr();
    let stop_reading = CancellationToken::new();
    // The pipes are drained in this task, concurrently with waiting, so a
    // child writing a lot never blocks and no thread is needed per run.
    let mut drains = pin!(async {
        tokio::join!(
            drain(stdout_pipe, out, &stop_reading),
            drain(stderr_pipe, err, &stop_reading),
        )
    });
    let mut supervise = pin!(supervise(child, group, limits, kill_grace, cancel));
    let mut drained = false;
    let result = loop {
        tokio::select! {
            result = &mut supervise => break result,
            _ = &mut drains, if !drained => drained = true,
        }
    };
    if !drained {
        tokio::select! {
            _ = &mut drains => {}
            () = tokio::time::sleep(LEAK_TIMEOUT) => {
                stop_reading.cancel();
                drains.await;
            }
        }
    }
    result
}

/// How the run ended, from why the wait ended and the reaped status.
fn outcome(
    stop: Stop,
    status: io::Result<ExitStatus>,
    idle_timeout: Option<Duration>,
    argv0: &str,
    pgid: i32,
) -> Outcome {
    match stop {
        Stop::TimedOut => Outcome::TimedOut,
        Stop::Idle => Outcome::IdleTimedOut {
            after_ms: u64::try_from(idle_timeout.unwrap_or_default().as_millis())
                .unwrap_or(u64::MAX),
        },
        Stop::Stopped => Outcome::Stopped,
        Stop::Cancelled => Outcome::Cancelled,
        Stop::Exited => match status {
            Ok(status) => outcome_of(status),
            // Only possible if something else in the engine reaped our child
            // (e.g. a stray waitpid(-1)); the fixed outcome set has no better
            // place for it than a failure to run.
            Err(e) => Outcome::SpawnFailed {
                message: format!("lost track of `{argv0}` (pid {pgid}): {e}"),
            },
        },
    }
}

/// Why the wait for the child ended.
enum Stop {
    Exited,
    TimedOut,
    Idle,
    Stopped,
    Cancelled,
}

/// What, besides cancellation, ends a child early.
struct Limits<'a> {
    deadline: Option<Instant>,
    /// The idle limit, the time of the latest output (ms since the start) and the start.
    idle: Option<(Duration, &'a std::sync::atomic::AtomicU64, Instant)>,
    stop: Option<&'a CancellationToken>,
}

/// Waits for the child to exit, stopping its group on timeout or cancellation,
/// then sweeps the group (and the step's cgroup) and reaps the child.
async fn supervise(
    child: &mut Child,
    (pgid, cgroup): (i32, Option<&mut crate::cgroup::Step>),
    limits: Limits<'_>,
    kill_grace: Duration,
    cancel: &CancellationToken,
) -> (Stop, io::Result<ExitStatus>) {
    let stop = tokio::select! {
        // An exit that races with the deadline or a cancel still counts as
        // an exit.
        biased;
        () = child.exited() => Stop::Exited,
        () = sleep_until(limits.deadline) => Stop::TimedOut,
        () = idle_for(limits.idle) => Stop::Idle,
        () = stopped(limits.stop) => Stop::Stopped,
        () = cancel.cancelled() => Stop::Cancelled,
    };
    let kill_grace = if matches!(stop, Stop::Stopped) {
        kill_grace.min(STOP_GRACE)
    } else {
        kill_grace
    };
    if !matches!(stop, Stop::Exited) {
        kill_group(pgid, libc::SIGTERM);
        if tokio::time::timeout(kill_grace, child.exited())
            .await
            .is_err()
        {
            // Also the child itself, in case it moved to another group. It is
            // not reaped yet, so its pid is still its own.
            let _ = child.start_kill();
        }
    }
    // Whatever the child left behind in its group goes too (SIGKILL to an
    // already empty group is a harmless ESRCH). This happens before the child
    // is reaped, so `pgid` cannot have been reused yet.
    kill_group(pgid, libc::SIGKILL);
    // And so does what left the group (`setsid`, a double fork): the step ends when all of its
    // processes have.
    if let Some(cgroup) = cgroup {
        cgroup.empty().await;
    }
    (stop, child.wait().await)
}

/// Returns once no output has been read for the idle limit (never without one).
async fn idle_for(idle: Option<(Duration, &std::sync::atomic::AtomicU64, Instant)>) {
    let Some((limit, last_ms, start)) = idle else {
        return std::future::pending().await;
    };
    loop {
        let last =
            start + Duration::from_millis(last_ms.load(std::sync::atomic::Ordering::Relaxed));
        let due = last + limit;
        if Instant::now() >= due {
            return;
        }
        tokio::time::sleep_until(due.into()).await;
    }
}

/// Returns when the caller's stop token fires (never without one).
async fn stopped(stop: Option<&CancellationToken>) {
    match stop {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Serializes every spawn of a child process in this process.
///
/// A step inherits some descriptors (a task's lock, so that the lock outlives a killed worker
/// while any process of the attempt lives). Clearing close-on-exec in the child needs a
/// `pre_exec` hook, which forces `fork` (copying the engine's page tables, about half a
/// millisecond per step) where std otherwise uses `posix_spawn`. Instead the descriptors are
/// made inheritable in this process only for the instant of their own step's spawn, under this
/// lock; every other spawn takes the lock too, so no other child can inherit them. (Where steps
/// get cgroups their spawn has a `pre_exec` hook anyway; the descriptors still go this one way.)
pub(crate) fn spawn_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `git ARGS` in `dir` for the engine's own use and returns its output: the directory
/// decides the repository (the `GIT_DIR`-style variables of whoever started the engine, a git
/// hook say, are removed), `env` is added, stdin is empty, and it is spawned under
/// [`spawn_lock`] so that it never inherits a descriptor made inheritable for a step.
pub fn git_output(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::io::Result<std::process::Output> {
    let mut command = std::process::Command::new("git");
    command
        .args(args)
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_COMMON_DIR")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = {
        let _serial = spawn_lock();
        command.spawn()?
    };
    child.wait_with_output()
}

/// Descriptors made inheritable (close-on-exec cleared) until dropped. Hold [`spawn_lock`].
struct Inheritable<'a>(&'a [i32]);

impl<'a> Inheritable<'a> {
    fn open_up(fds: &'a [i32]) -> io::Result<Inheritable<'a>> {
        for (done, &fd) in fds.iter().enumerate() {
            // SAFETY: fcntl(2) on a descriptor number; an invalid one is an error, not UB.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                let err = io::Error::last_os_error();
                drop(Inheritable(&fds[..done]));
                return Err(err);
            }
        }
        Ok(Inheritable(fds))
    }
}

impl Drop for Inheritable<'_> {
    fn drop(&mut self) {
        for &fd in self.0 {
            // SAFETY: as above.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// Kills the process group (and the cgroup) if [`run`]'s future is dropped before the child
/// has been reaped. While armed, its group is one of [`kill_all_now`]'s.
struct GroupGuard {
    pgid: i32,
    armed: bool,
    cgroup: Option<crate::cgroup::Step>,
}

/// Groups of children not reaped yet, for [`kill_all_now`].
static LIVE_GROUPS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

fn live_groups() -> std::sync::MutexGuard<'static, Vec<i32>> {
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl GroupGuard {
    fn new(pgid: i32, cgroup: Option<crate::cgroup::Step>) -> GroupGuard {
        live_groups().push(pgid);
        GroupGuard {
            pgid,
            armed: true,
            cgroup,
        }
    }

    /// Called once the child is reaped: its group id may be reused from now on.
    fn disarm(&mut self) {
        if self.armed {
            self.armed = false;
            live_groups().retain(|&g| g != self.pgid);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            kill_group(self.pgid, libc::SIGKILL);
            self.disarm();
        }
        // `cgroup`, unless emptied, kills what is in it when dropped.
    }
}

/// SIGKILL to every step process of this process (their groups and cgroups), for an exit right
/// now (a second Ctrl-C) that leaves nothing running behind. Does not wait.
pub fn kill_all_now() {
    for &pgid in live_groups().iter() {
        // Listed only while unreaped: the group id is still the step's.
        kill_group(pgid, libc::SIGKILL);
    }
    crate::cgroup::kill_all_now();
}

fn outcome_of(status: ExitStatus) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Exited { code },
        (None, Some(signal)) => Outcome::Signaled { signal },
        // `wait` only reports terminated children, which have one or the
        // other; keep the raw status rather than invent a meaning.
        (None, None) => Outcome::Exited {
            code: status.into_raw(),
        },
    }
}

/// Creates or truncates `path`, creating missing parent directories.
///
/// Parents are only created after a first failure, so the common case costs a
/// single `open`.
fn create_file(path: &Path) -> io::Result<File> {
    match File::create(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            File::create(path)
        }
        other => other,
    }
}

/// Finds the file to execute for `argv0`.
///
/// Resolving here rather than in the child gives precise error messages and
/// lets std use `posix_spawn` (it cannot when the child's `PATH` differs from
/// ours and the program needs a lookup).
fn resolve_program(argv0: &str, path_var: Option<&OsStr>, cwd: &Path) -> Result<PathBuf, String> {
    if argv0.is_empty() {
        return Err("cannot run an empty program name".to_owned());
    }
    if argv0.contains('/') {
        // Relative paths are relative to the step's directory, as in a shell
        // that has `cd`ed there. Problems surface as spawn errors, diagnosed
        // then, so the common case costs no extra `stat`.
        return Ok(absolute(&cwd.join(argv0)));
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut not_executable = None;
    for dir in std::env::split_paths(path_var) {
        // An empty entry means the current directory, the child's one.
        let dir = if dir.is_absolute() {
            dir
        } else {
            absolute(&cwd.join(dir))
        };
        let candidate = dir.join(argv0);
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                return Ok(candidate);
            }
            Ok(meta) if meta.is_file() && not_executable.is_none() => {
                not_executable = Some(candidate);
            }
            _ => {}
        }
    }
    Err(match not_executable {
        Some(found) => format!(
            "`{argv0}` found at `{}` but it is not executable",
            found.display()
        ),
        None => format!("`{argv0}` not found on PATH"),
    })
}

/// `path` made absolute against the engine's directory (no filesystem access
/// beyond `getcwd`); falls back to `path` itself if that fails.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Describes why `cwd` cannot be used, if it cannot.
fn cwd_problem(argv0: &str, cwd: &Path) -> Option<String> {
    let problem = match std::fs::metadata(cwd) {
        Ok(meta) if meta.is_dir() => return None,
        Ok(_) => "is not a directory".to_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => "does not exist".to_owned(),
        Err(e) => format!("is not accessible: {e}"),
    };
    Some(format!(
        "cannot run `{argv0}`: working directory `{}` {problem}",
        cwd.display()
    ))
}

/// Turns a spawn error into a message naming `argv0` and the reason.
fn spawn_failure(argv0: &str, program: &Path, cwd: &Path, error: &io::Error) -> String {
    // A missing directory is reported as ENOENT, indistinguishable from a
    // missing program; look before blaming the program.
    if let Some(message) = cwd_problem(argv0, cwd) {
        return message;
    }
    let meta = std::fs::metadata(program);
    match error.kind() {
        io::ErrorKind::NotFound => match meta {
            // The file is there, so what is missing is its `#!` interpreter or
            // its dynamic loader.
            Ok(_) => format!("cannot run `{argv0}`: its interpreter or loader was not found"),
            Err(_) if argv0.contains('/') => format!("`{argv0}` not found"),
            Err(_) => format!("`{argv0}` not found on PATH"),
        },
        io::ErrorKind::PermissionDenied => match meta {
            Ok(meta) if meta.is_dir() => format!("cannot run `{argv0}`: it is a directory"),
            _ => format!("cannot run `{argv0}`: it is not executable (permission denied)"),
        },
        _ if error.raw_os_error() == Some(libc::ENOEXEC) => {
            format!("cannot run `{argv0}`: it is not a valid executable (exec format error)")
        }
        _ => format!("cannot run `{argv0}`: {error}"),
    }
}

/// A log file that is written until its first error.
///
/// Logs are created on the first byte, not up front: creating two files per
/// step dominated the engine's per-step cost (ext4 serializes creates behind
/// the journal commits of the event log's fdatasync), and a step that prints
/// nothing needs no log. A failing log (disk full) must not stop draining the
/// pipe, or the child would block; the rest of the output is then dropped for
/// that file only. Writes are plain blocking writes: they land in the page
/// cache and are far cheaper than a hop to tokio's blocking pool per chunk.
enum Sink {
    Pending(PathBuf),
    Open(Option<File>),
    /// The file could not be created.
    Uncreated,
}

impl Sink {
    /// Whether the file was created (the stream wrote something).
    fn created(&self) -> bool {
        matches!(self, Sink::Open(_))
    }

    fn write(&mut self, data: &[u8]) {
        if let Sink::Pending(path) = self {
            *self = match create_file(path) {
                Ok(file) => Sink::Open(Some(file)),
                Err(_) => Sink::Uncreated,
            };
        }
        if let Sink::Open(slot) = self
            && let Some(file) = slot
            && file.write_all(data).is_err()
        {
            *slot = None;
        }
    }
}

/// Everything done with one output stream of the child.
struct Output<'a> {
    /// Masked copy of the stream.
    log: Sink,
    /// Unmasked copy of the stream (the user's `output_file`).
    raw: Sink,
    /// `None` when there are no secrets, so bytes pass through uncopied.
    masker: Option<Masker>,
    /// Scratch buffer for masked bytes, reused across chunks.
    masked: Vec<u8>,
    /// First `capture_limit` masked bytes.
    capture: Vec<u8>,
    capture_limit: usize,
    /// Some masked bytes did not fit in `capture`.
    cut: bool,
    bytes: u64,
    newlines: u64,
    last: Option<u8>,
    /// [`Spec::stdout_lines`] and the partial line read so far.
    tap: Option<(tokio::sync::mpsc::UnboundedSender<Vec<u8>>, Vec<u8>)>,
    /// Where to note the time of each read (ms since the start), for `idle_timeout`.
    last_output: Option<(&'a std::sync::atomic::AtomicU64, Instant)>,
}

impl<'a> Output<'a> {
    /// One stream: its log (created on the first byte), the user's unmasked copy, the first
    /// `capture_limit` masked bytes kept, complete lines sent to `tap`, reads timed on
    /// `last_output`.
    fn new(
        log: PathBuf,
        raw: Option<File>,
        masker: Option<Masker>,
        capture_limit: usize,
        tap: Option<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
        last_output: (&'a std::sync::atomic::AtomicU64, Instant),
    ) -> Output<'a> {
        Output {
            log: Sink::Pending(log),
            raw: Sink::Open(raw),
            masker,
            masked: Vec::new(),
            capture: Vec::new(),
            capture_limit,
            cut: false,
            bytes: 0,
            newlines: 0,
            last: None,
            tap: tap.map(|tx| (tx, Vec::new())),
            last_output: Some(last_output),
        }
    }

    fn feed(&mut self, data: &[u8]) {
        if let Some((last, start)) = self.last_output {
            let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            last.store(ms, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some((tx, partial)) = &mut self.tap {
            let mut rest = data;
            while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
                partial.extend_from_slice(&rest[..newline]);
                let _ = tx.send(std::mem::take(partial));
                rest = &rest[newline + 1..];
            }
            partial.extend_from_slice(rest);
        }
        self.bytes += data.len() as u64;
        self.newlines += data.iter().filter(|&&b| b == b'\n').count() as u64;
        self.last = data.last().copied().or(self.last);
        self.raw.write(data);
        match &mut self.masker {
            None => self.emit_direct(data),
            Some(masker) => {
                masker.push(data, &mut self.masked);
                self.emit_masked();
            }
        }
    }

    fn finish(&mut self) {
        if let Some((tx, partial)) = self.tap.take()
            && !partial.is_empty()
        {
            let _ = tx.send(partial);
        }
        if let Some(masker) = &mut self.masker {
            masker.finish(&mut self.masked);
            self.emit_masked();
        }
    }

    fn emit_masked(&mut self) {
        let masked = std::mem::take(&mut self.masked);
        self.emit_direct(&masked);
        self.masked = masked;
        self.masked.clear();
    }

    fn emit_direct(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.log.write(data);
        let room = self.capture_limit.saturating_sub(self.capture.len());
        if room > 0 {
            self.capture
                .extend_from_slice(&data[..room.min(data.len())]);
        }
        if data.len() > room {
            self.cut = true;
        }
    }
}

/// Reads `pipe` to its end (or until `stop` fires while it has nothing to
/// read), feeding every chunk to `out`.
async fn drain<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    out: &mut Output<'_>,
    stop: &CancellationToken,
) {
    if let Some(mut pipe) = pipe {
        let mut buf = Vec::with_capacity(READ_CHUNK);
        loop {
            buf.clear();
            let read = tokio::select! {
                // Reading first means `stop` only wins when the pipe is
                // empty, so no buffered output is ever dropped.
                biased;
                read = pipe.read_buf(&mut buf) => read,
                () = stop.cancelled() => break,
            };
            match read {
                Ok(0) => break,
                Ok(_) => out.feed(&buf),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Reading a pipe cannot fail in a way a retry would fix.
                Err(_) => break,
            }
        }
    }
    out.finish();
}

/// Streaming replacement of secrets by [`MASK`].
///
/// Every byte covered by an occurrence of any secret is masked: overlapping
/// occurrences (of one secret or of several, including a secret inside a
/// longer one) merge into one `***`, so no fragment of a secret survives,
/// which is what replacing longest first aims at. Output is held back only as
/// long as a secret could still be completed by bytes not yet read: at most
/// the longest secret's length minus one, and (when no secret contains a
/// newline) never past the last complete line. A secret split across reads,
/// or across a partial line of any length, is therefore still masked, and the
/// masked stream does not depend on how the input was chunked.
#[derive(Clone)]
struct Masker {
    /// Non-empty, deduplicated, longest first.
    secrets: Vec<Vec<u8>>,
    longest: usize,
    /// No secret contains `\n`, so every occurrence lies within one line.
    line_bound: bool,
    pending: Vec<u8>,
    ranges: Vec<(usize, usize)>,
}

impl Masker {
    fn new(secrets: &[String]) -> Option<Masker> {
        let mut secrets: Vec<Vec<u8>> = secrets
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        let longest = secrets.first()?.len();
        Some(Masker {
            line_bound: !secrets.iter().any(|s| s.contains(&b'\n')),
            secrets,
            longest,
            pending: Vec::new(),
            ranges: Vec::new(),
        })
    }

    /// Takes `data` and appends to `out` whatever can be safely released.
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(data);
        self.find_ranges();
        let len = self.pending.len();
        // An occurrence starting before `cut` ends within `pending`, so it has
        // been found already.
        let mut cut = len.saturating_sub(self.longest - 1);
        if self.line_bound
            && let Some(newline) = self.pending.iter().rposition(|&b| b == b'\n')
        {
            cut = cut.max(newline + 1);
        }
        // Never split a masked range: release up to its start and keep it
        // for the next round, where it is found again.
        if let Some(&(start, _)) = self.ranges.iter().find(|&&(s, e)| s < cut && cut < e) {
            cut = start;
        }
        self.release(cut, out);
    }

    /// Releases everything still held (end of stream).
    fn finish(&mut self, out: &mut Vec<u8>) {
        self.find_ranges();
        self.release(self.pending.len(), out);
    }

    /// Fills `ranges` with the merged, sorted byte ranges of `pending` covered
    /// by secrets.
    fn find_ranges(&mut self) {
        self.ranges.clear();
        let hay = &self.pending[..];
        for secret in &self.secrets {
            let Some((&first, _)) = secret.split_first() else {
                continue;
            };
            let Some(last_start) = hay.len().checked_sub(secret.len()) else {
                continue;
            };
            let mut from = 0;
            while from <= last_start {
                let Some(offset) = hay[from..=last_start].iter().position(|&b| b == first) else {
                    break;
                };
                let start = from + offset;
                if hay[start..start + secret.len()] == secret[..] {
                    self.ranges.push((start, start + secret.len()));
                }
                from = start + 1;
            }
        }
        if self.ranges.len() > 1 {
            self.ranges.sort_unstable();
            let mut merged = 0;
            for i in 1..self.ranges.len() {
                let (start, end) = self.ranges[i];
                // Overlapping ranges merge; merely adjacent ones stay apart so
                // that `tokentoken` reads `******`.
                if start < self.ranges[merged].1 {
                    self.ranges[merged].1 = self.ranges[merged].1.max(end);
                } else {
                    merged += 1;
                    self.ranges[merged] = (start, end);
                }
            }
            self.ranges.truncate(merged + 1);
        }
    }

    /// Appends `pending[..cut]`, masked, to `out` and drops it from `pending`.
    fn release(&mut self, cut: usize, out: &mut Vec<u8>) {
        let mut at = 0;
        for &(start, end) in self.ranges.iter().take_while(|&&(_, end)| end <= cut) {
            out.extend_from_slice(&self.pending[at..start]);
            out.extend_from_slice(MASK);
            at = end;
        }
        out.extend_from_slice(&self.pending[at..cut]);
        self.pending.drain(..cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process;
    use tempfile::TempDir;

    const SECRET: &str = "hunter2-token";

    fn spec(dir: &TempDir, argv: &[&str]) -> Spec {
        Spec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            env_remove: Vec::new(),
            cwd: dir.path().to_owned(),
            stdin: Stdin::Null,
            stdout_log: dir.path().join("stdout.log"),
            stderr_log: dir.path().join("stderr.log"),
            stdout_file: None,
            capture_limit: 1 << 20,
            // A safety net so a broken test fails instead of hanging.
            timeout: Some(Duration::from_secs(20)),
            idle_timeout: None,
            stdout_lines: None,
            stop: None,
            kill_grace: Duration::from_millis(100),
            secrets: Vec::new(),
            inherit_fds: Vec::new(),
        }
    }

    fn sh(dir: &TempDir, script: &str) -> Spec {
        spec(dir, &["/bin/sh", "-c", script])
    }

    async fn go(spec: Spec) -> Finished {
        run(spec, CancellationToken::new()).await
    }

    fn read(path: impl AsRef<Path>) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn read_or_empty(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_default()
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    /// True once `pid` no longer runs. PID 1 in some containers never reaps
    /// orphans, so a zombie (`Z`) or dead (`X`) entry counts as gone.
    fn gone(pid: u32) -> bool {
        crate::process::stat(pid).is_none_or(|s| s.exited())
    }

    /// A generous deadline: it guards against a hang; a loaded machine is slow, not hung.
    async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn first_pid(bytes: &[u8]) -> u32 {
        String::from_utf8_lossy(bytes)
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Run as a process of its own (see the test below): a process group whose SIGTERMs, sent
    /// by another thread while steps start, are for this process, which catches them.
    #[test]
    fn group_signals_while_steps_start() {
        if std::env::var_os("ORCHESTRATE_TEST_GROUP_SIGNALS").is_none() {
            return;
        }
        extern "C" fn caught(_: libc::c_int) {}
        // SAFETY: installs a handler that does nothing, for SIGTERM only.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = caught as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // SAFETY: kill(2) to this process's own group.
                    unsafe { libc::kill(0, libc::SIGTERM) };
                }
            })
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = TempDir::new().unwrap();
        let mut hit = Vec::new();
        for _ in 0..400 {
            let done = runtime.block_on(go(spec(&dir, &["true"])));
            if done.outcome != (Outcome::Exited { code: 0 }) {
                hit.push(done.outcome);
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sender.join().unwrap();
        assert!(
            hit.is_empty(),
            "{} of 400 steps ended by their parent's signals, the first {:?}",
            hit.len(),
            hit[0]
        );
    }

    /// A signal to the engine's process group (Ctrl-C in its terminal, a supervisor's SIGTERM to
    /// a role process) never reaches a step that was starting then: the step was not yet in a
    /// group of its own, and it must not die of what was meant for its parent.
    #[test]
    fn a_signal_to_the_engines_group_never_reaches_a_starting_step() {
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "exec::tests::group_signals_while_steps_start",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("ORCHESTRATE_TEST_GROUP_SIGNALS", "1")
            .process_group(0)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
    }

    #[tokio::test]
    async fn exit_codes_and_output() {
        let dir = TempDir::new().unwrap();
        let done = go(sh(&dir, "echo hello; echo oops >&2; exit 3")).await;
        assert_eq!(done.outcome, Outcome::Exited { code: 3 });
        assert_eq!(done.outcome.exit_code(), 3);
        assert!(!done.outcome.success());
        assert_eq!(done.stdout, b"hello\n");
        assert_eq!(done.stdout_bytes, 6);
        assert_eq!(done.stdout_lines, 1);
        assert!(done.pid.is_some());
        assert_eq!(read(dir.path().join("stdout.log")), b"hello\n");
        assert_eq!(read(dir.path().join("stderr.log")), b"oops\n");

        let done = go(spec(&dir, &["true"])).await;
        assert!(done.outcome.success());
        assert_eq!((done.stdout_bytes, done.stdout_lines), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inherited_descriptors_reach_only_their_own_step() {
        use std::os::fd::AsRawFd;
        let dir = TempDir::new().unwrap();
        let lock = File::create(dir.path().join("lock")).unwrap();
        let fd = lock.as_raw_fd();
        // SAFETY: F_GETFD only reads the descriptor's flags; `lock` keeps `fd` open.
        let cloexec = || unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC != 0;
        assert!(cloexec());
        let probe = format!("if [ -e /proc/self/fd/{fd} ]; then echo has; else echo lacks; fi");
        // Steps with and without the descriptor spawned at the same time, many times over:
        // only the ones given it ever see it.
        for _ in 0..20 {
            let mut with = sh(&dir, &probe);
            with.inherit_fds = vec![fd];
            let without = sh(&dir, &probe);
            let (with, without) = tokio::join!(
                tokio::spawn(async move { go(with).await }),
                tokio::spawn(async move { go(without).await })
            );
            assert_eq!(with.unwrap().stdout, b"has\n");
            assert_eq!(without.unwrap().stdout, b"lacks\n");
        }
        // The engine's own descriptor is close-on-exec again.
        assert!(cloexec());
        drop(lock);
    }

    #[tokio::test]
    async fn killed_by_a_signal() {
        let dir = TempDir::new().unwrap();
        let done = go(sh(&dir, "kill -TERM $$")).await;
        assert_eq!(
            done.outcome,
            Outcome::Signaled {
                signal: libc::SIGTERM
            }
        );
        assert_eq!(done.outcome.exit_code(), 128 + libc::SIGTERM);
    }

    #[test]
    fn outcome_codes_and_serde() {
        let not_found = Outcome::SpawnFailed {
            message: "`x` not found on PATH".into(),
        };
        let cases = [
            (
                Outcome::Exited { code: 0 },
                0,
                r#"{"kind":"exited","code":0}"#,
            ),
            (
                Outcome::Signaled { signal: 9 },
                137,
                r#"{"kind":"signaled","signal":9}"#,
            ),
            (Outcome::TimedOut, 124, r#"{"kind":"timed_out"}"#),
            (
                Outcome::IdleTimedOut { after_ms: 1500 },
                124,
                r#"{"kind":"idle_timed_out","after_ms":1500}"#,
            ),
            (Outcome::Stopped, 1, r#"{"kind":"stopped"}"#),
            (Outcome::Cancelled, 130, r#"{"kind":"cancelled"}"#),
            (
                not_found,
                127,
                r#"{"kind":"spawn_failed","message":"`x` not found on PATH"}"#,
            ),
            (
                Outcome::SpawnFailed {
                    message: "cannot run `x`: it is a directory".into(),
                },
                126,
                r#"{"kind":"spawn_failed","message":"cannot run `x`: it is a directory"}"#,
            ),
        ];
        for (outcome, code, json) in cases {
            assert_eq!(outcome.exit_code(), code, "{outcome:?}");
            assert_eq!(outcome.success(), code == 0);
            assert_eq!(serde_json::to_string(&outcome).unwrap(), json);
            assert_eq!(serde_json::from_str::<Outcome>(json).unwrap(), outcome);
        }
    }

    #[tokio::test]
    async fn argv_is_not_interpreted_by_a_shell() {
        let dir = TempDir::new().unwrap();
        let done = go(spec(&dir, &["echo", "$HOME", "a  b", "*"])).await;
        assert_eq!(done.stdout, b"$HOME a  b *\n");
    }

    #[tokio::test]
    async fn env_cwd_and_arg0() {
        let dir = TempDir::new().unwrap();
        let mut s = sh(&dir, r#"echo "$FOO $0"; pwd"#);
        s.env = vec![("FOO".into(), "one".into()), ("FOO".into(), "two".into())];
        let done = go(s).await;
        let expected = format!(
            "two /bin/sh\n{}\n",
            dir.path().canonicalize().unwrap().display()
        );
        assert_eq!(String::from_utf8(done.stdout).unwrap(), expected);
    }

    #[tokio::test]
    async fn path_comes_from_the_spec_env_when_set() {
        let dir = TempDir::new().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("mytool");
        std::fs::write(&tool, "#!/bin/sh\necho \"tool $1\"\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();

        let mut s = spec(&dir, &["mytool", "x"]);
        s.env = vec![("PATH".into(), format!("/nonexistent:{}", bin.display()))];
        let done = go(s).await;
        assert_eq!(done.outcome, Outcome::Exited { code: 0 });
        assert_eq!(done.stdout, b"tool x\n");

        // The engine's PATH is not consulted when the spec sets one.
        let mut s = spec(&dir, &["sh", "-c", "true"]);
        s.env = vec![("PATH".into(), bin.display().to_string())];
        let done = go(s).await;
        assert_eq!(
            done.outcome,
            Outcome::SpawnFailed {
                message: "`sh` not found on PATH".into()
            }
        );

        // A relative path with a slash is relative to `cwd`.
        let done = go(spec(&dir, &["./bin/mytool", "rel"])).await;
        assert_eq!(done.stdout, b"tool rel\n");
    }

    #[tokio::test]
    async fn spawn_failures_are_outcomes_and_write_no_logs() {
        let dir = TempDir::new().unwrap();
        let plain = dir.path().join("plain.txt");
        std::fs::write(&plain, "echo hi\n").unwrap();
        let plain = plain.display().to_string();
        let missing_dir = dir.path().join("missing");

        let cases: [(Spec, &str, i32); 5] = [
            (
                spec(&dir, &["nosuchcmd-xyz"]),
                "`nosuchcmd-xyz` not found on PATH",
                127,
            ),
            (spec(&dir, &["./nosuch"]), "`./nosuch` not found", 127),
            (spec(&dir, &[&plain]), "it is not executable", 126),
            (spec(&dir, &["/tmp"]), "it is a directory", 126),
            (
                Spec {
                    cwd: missing_dir.clone(),
                    ..spec(&dir, &["sh", "-c", "true"])
                },
                "cannot run `sh`: working directory",
                126,
            ),
        ];
        for (s, expected, code) in cases {
            let (out, err) = (s.stdout_log.clone(), s.stderr_log.clone());
            let done = go(s).await;
            let Outcome::SpawnFailed { message } = &done.outcome else {
                panic!("expected a spawn failure, got {:?}", done.outcome);
            };
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
            assert_eq!(done.outcome.exit_code(), code, "{message}");
            assert_eq!(done.pid, None);
            assert!(
                !out.exists() && !err.exists(),
                "logs are created on first output only"
            );
        }

        let done = go(Spec {
            argv: Vec::new(),
            ..spec(&dir, &[])
        })
        .await;
        assert!(matches!(done.outcome, Outcome::SpawnFailed { .. }));
    }

    #[tokio::test]
    async fn a_script_whose_interpreter_is_missing_is_a_spawn_failure_that_says_so() {
        let dir = TempDir::new().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/nonexistent/interpreter\necho hi\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let done = go(spec(&dir, &[&script.display().to_string()])).await;
        let Outcome::SpawnFailed { message } = &done.outcome else {
            panic!("expected a spawn failure, got {:?}", done.outcome);
        };
        assert!(
            message.contains("interpreter or loader was not found"),
            "{message}"
        );
        assert_eq!(done.pid, None);
    }

    #[tokio::test]
    async fn the_child_gets_exactly_the_environment_asked_for() {
        let dir = TempDir::new().unwrap();
        let mut s = spec(&dir, &["env"]);
        s.env_remove = vec!["HOME".into()];
        s.env = vec![
            ("ORCH_T_ONE".into(), "1".into()),
            ("ORCH_T_ONE".into(), "later wins".into()),
            ("ORCH_T_TWO".into(), "a=b c".into()),
        ];
        let done = go(s).await;
        let text = String::from_utf8(done.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&"ORCH_T_ONE=later wins"), "{text}");
        assert!(lines.contains(&"ORCH_T_TWO=a=b c"), "{text}");
        assert!(!lines.iter().any(|l| l.starts_with("HOME=")), "{text}");
        assert!(lines.iter().any(|l| l.starts_with("PATH=")), "{text}");
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("ORCH_T_ONE="))
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn the_child_starts_with_no_signal_blocked_sigpipe_default_and_ignored_ones_kept() {
        // The engine catches signals (tokio installs handlers), ignores SIGPIPE (Rust does) and
        // may have inherited an ignored signal (`nohup`): the step must start with nothing
        // blocked, SIGPIPE at its default, the inherited ignore kept, and no handler of ours.
        let _caught =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).unwrap();
        // SAFETY: setting SIGUSR2's disposition to ignore; no handler code is involved.
        unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
        let dir = TempDir::new().unwrap();
        let done = go(spec(&dir, &["cat", "/proc/self/status"])).await;
        let text = String::from_utf8(done.stdout).unwrap();
        let mask = |field: &str| {
            let line = text
                .lines()
                .find(|l| l.starts_with(field))
                .unwrap_or_else(|| panic!("no {field} in {text}"));
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        let bit = |signal: i32| 1u64 << (signal - 1);
        assert_eq!(mask("SigBlk:"), 0, "{text}");
        assert_eq!(mask("SigCgt:"), 0, "{text}");
        assert_ne!(mask("SigIgn:") & bit(libc::SIGUSR2), 0, "{text}");
        assert_eq!(mask("SigIgn:") & bit(libc::SIGPIPE), 0, "{text}");
        // SAFETY: as above, back to the default.
        unsafe { libc::signal(libc::SIGUSR2, libc::SIG_DFL) };
    }

    #[tokio::test]
    async fn a_program_remembered_from_path_is_looked_up_again_once_it_is_gone() {
        let dir = TempDir::new().unwrap();
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        std::fs::create_dir_all(&first).unwrap();
        std::fs::create_dir_all(&second).unwrap();
        let tool = |at: &Path, says: &str| {
            let path = at.join("orch-test-tool");
            std::fs::write(&path, format!("#!/bin/sh\necho {says}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let path = format!("{}:{}:/usr/bin:/bin", first.display(), second.display());
        let run = || {
            let mut s = spec(&dir, &["orch-test-tool"]);
            s.env = vec![("PATH".into(), path.clone())];
            go(s)
        };
        tool(&first, "first");
        assert_eq!(run().await.stdout, b"first\n");
        assert_eq!(run().await.stdout, b"first\n");
        std::fs::remove_file(first.join("orch-test-tool")).unwrap();
        tool(&second, "second");
        let done = run().await;
        assert_eq!(done.outcome, Outcome::Exited { code: 0 });
        assert_eq!(done.stdout, b"second\n");
    }

    #[tokio::test]
    async fn stdin_bytes_and_null() {
        let dir = TempDir::new().unwrap();
        let mut s = spec(&dir, &["cat"]);
        s.stdin = Stdin::Bytes(b"fed via stdin".to_vec());
        assert_eq!(go(s).await.stdout, b"fed via stdin");

        let done = go(spec(&dir, &["cat"])).await;
        assert_eq!(done.outcome, Outcome::Exited { code: 0 });
        assert_eq!(done.stdout, b"");
    }

    #[tokio::test]
    async fn a_child_that_ignores_stdin_does_not_deadlock() {
        let dir = TempDir::new().unwrap();
        // Far more than a pipe holds, to a child that never reads it.
        let mut s = sh(&dir, "sleep 0.05; echo done");
        s.stdin = Stdin::Bytes(vec![b'x'; 4 << 20]);
        s.timeout = Some(Duration::from_secs(5));
        let done = go(s).await;
        assert_eq!(done.outcome, Outcome::Exited { code: 0 });
        assert_eq!(done.stdout, b"done\n");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = TempDir::new().unwrap();
        let mut s = sh(&dir, "sleep 100 & echo $!; sleep 100");
        s.timeout = Some(Duration::from_millis(300));
        let done = go(s).await;
        assert_eq!(done.outcome, Outcome::TimedOut);
        assert_eq!(done.outcome.exit_code(), 124);
        assert!(done.duration >= Duration::from_millis(300));
        assert!(
            // A wide margin: stopped, not waited out (the sleeps are 100 s).
            done.duration < Duration::from_secs(60),
            "{:?}",
            done.duration
        );
        let grandchild = first_pid(&done.stdout);
        wait_until("the grandchild to die", || gone(grandchild)).await;
        assert!(gone(done.pid.unwrap()));
    }

    #[tokio::test]
    async fn idle_timeout_kills_a_silent_group_but_not_a_chatty_one() {
        let dir = TempDir::new().unwrap();
        // Prints once, then falls silent.
        let mut s = sh(&dir, "sleep 100 & echo $!; sleep 100");
        s.idle_timeout = Some(Duration::from_millis(300));
        let done = go(s).await;
        assert_eq!(done.outcome, Outcome::IdleTimedOut { after_ms: 300 });
        assert_eq!(done.outcome.exit_code(), 124);
        assert!(done.duration >= Duration::from_millis(300));
        assert!(
            // A wide margin: stopped, not waited out (the sleeps are 100 s).
            done.duration < Duration::from_secs(60),
            "{:?}",
            done.duration
        );
        let grandchild = first_pid(&done.stdout);
        wait_until("the grandchild to die", || gone(grandchild)).await;
        assert!(gone(done.pid.unwrap()));

        // Output on stderr every 100 ms keeps a 300 ms idle limit from firing, for well
        // past 300 ms in total.
        let mut s = sh(
            &dir,
            "for i in 1 2 3 4 5 6 7 8; do echo tick >&2; sleep 0.1; done",
        );
        s.idle_timeout = Some(Duration::from_millis(300));
        let done = go(s).await;
        assert_eq!(done.outcome, Outcome::Exited { code: 0 });
        assert!(
            done.duration >= Duration::from_millis(700),
            "{:?}",
            done.duration
        );
    }

    #[tokio::test]
    async fn stdout_lines_are_tapped_live_and_stop_ends_the_group_at_once() {
        let dir = TempDir::new().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let mut s = sh(
            &dir,
            "trap '' TERM; printf 'one\\ntw'; sleep 0.05; printf 'o\\n'; sleep 100 & echo $!; sleep 100",
        );
        s.stdout_lines = Some(tx);
        s.stop = Some(stop.clone());
        s.kill_grace = Duration::from_secs(600);
        let task = tokio::spawn(go(s));
        let mut seen = Vec::new();
        while seen.len() < 3 {
            seen.push(String::from_utf8(rx.recv().await.unwrap()).unwrap());
        }
        assert_eq!(seen[..2], ["one", "two"]);
        let grandchild: u32 = seen[2].parse().unwrap();
        let stopped_at = Instant::now();
        stop.cancel();
        let done = task.await.unwrap();
        assert_eq!(done.outcome, Outcome::Stopped);
        // TERM is ignored, so only SIGKILL after STOP_GRACE ends it: a wide margin below both
        // the 600 s grace and the 100 s sleep.
        assert!(
            stopped_at.elapsed() < Duration::from_secs(60),
            "{:?}",
            stopped_at.elapsed()
        );
        wait_until("the grandchild to die", || gone(grandchild)).await;
        // The sender is dropped with the run: the receiver sees the end.
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn sigkill_follows_an_ignored_sigterm_after_the_grace() {
        let dir = TempDir::new().unwrap();
        // The ignored disposition is inherited by `sleep` too.
        let mut s = sh(&dir, "trap '' TERM; sleep 100 & echo $!; sleep 100");
        s.timeout = Some(Duration::from_millis(150));
        s.kill_grace = Duration::from_millis(200);
        let done = go(s).await;
        assert_eq!(done.outcome, Outcome::TimedOut);
        assert!(
            done.duration >= Duration::from_millis(350),
            "{:?}",
            done.duration
        );
        assert!(
            // A wide margin: stopped, not waited out (the sleeps are 100 s).
            done.duration < Duration::from_secs(60),
            "{:?}",
            done.duration
        );
        let grandchild = first_pid(&done.stdout);
        wait_until("the grandchild to die", || gone(grandchild)).await;
    }

    #[tokio::test]
    async fn leftovers_are_killed_after_a_normal_exit() {
        let dir = TempDir::new().unwrap();
        // The background sleep also holds stdout open: the run only ends
        // because the group is killed.
        let done = go(sh(&dir, "sleep 100 & echo $!")).await;
        assert_eq!(done.outcome, Outcome::Exited { code: 0 });
        assert!(
            // A wide margin: stopped, not waited out (the sleeps are 100 s).
            done.duration < Duration::from_secs(60),
            "{:?}",
            done.duration
        );
        let grandchild = first_pid(&done.stdout);
        wait_until("the grandchild to die", || gone(grandchild)).await;
    }

    #[tokio::test]
    async fn cancellation_kills_the_group() {
        let dir = TempDir::new().unwrap();
        let s = sh(&dir, "sleep 100 & echo $!; sleep 100");
        let log = s.stdout_log.clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(s, cancel.clone()));
        // The log is streamed: the pid shows up while the child still runs.
        wait_until("the grandchild pid in the log", || {
            read_or_empty(&log).ends_with(b"\n")
        })
        .await;
        let grandchild = first_pid(&read(&log));
        assert!(!gone(grandchild));
        cancel.cancel();
        let done = task.await.unwrap();
        assert_eq!(done.outcome, Outcome::Cancelled);
        assert_eq!(done.outcome.exit_code(), 130);
        wait_until("the grandchild to die", || gone(grandchild)).await;

        // Already cancelled: nothing is started.
        let done = run(sh(&dir, "echo no"), cancel).await;
        assert_eq!((done.outcome, done.pid), (Outcome::Cancelled, None));
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_group() {
        let dir = TempDir::new().unwrap();
        let s = sh(&dir, "sleep 100 & echo $!; sleep 100");
        let log = s.stdout_log.clone();
        let task = tokio::spawn(go(s));
        wait_until("the grandchild pid in the log", || {
            read_or_empty(&log).ends_with(b"\n")
        })
        .await;
        let grandchild = first_pid(&read(&log));
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        wait_until("the grandchild to die", || gone(grandchild)).await;
    }

    /// Whether steps get cgroups here (cgroup v2 writable, as root or delegated).
    fn cgroups() -> bool {
        let usable = crate::cgroup::Step::create().is_some();
        if !usable {
            eprintln!("cgroups are not usable here: only the process-group fallback is tested");
        }
        usable
    }

    /// Kills `pid` unless it is gone already (a process the fallback cannot reach).
    fn kill_if_alive(pid: u32) {
        if !gone(pid) {
            // `pid` is the test's own sleep, still running.
            let _ = process::kill(pid, libc::SIGKILL);
        }
    }

    /// `Finished::cgroup` names the step's cgroup as its processes see it in /proc/PID/cgroup
    /// (what a readonly step's write attribution compares writers with).
    #[tokio::test]
    async fn the_finished_step_names_the_cgroup_its_process_was_in() {
        let dir = TempDir::new().unwrap();
        let done = go(sh(&dir, "sed -n 's/^0:://p' /proc/self/cgroup")).await;
        if !cgroups() {
            assert_eq!(done.cgroup, None);
            return;
        }
        let seen = String::from_utf8_lossy(&done.stdout).trim().to_owned();
        assert_eq!(done.cgroup.as_deref(), Some(seen.as_str()));
        assert!(seen.contains("/orchestrate-"), "{seen}");
    }

    #[tokio::test]
    async fn a_process_escaping_the_group_does_not_hang_the_run_and_ends_with_the_step() {
        let dir = TempDir::new().unwrap();
        // `setsid` puts the sleep in its own session, out of reach of the group kill, while it
        // keeps stdout open; the daemon double-forks (its parent exits at once).
        let done = go(sh(
            &dir,
            "setsid sh -c 'echo $$ > gc.pid; exec sleep 100' &
             setsid sh -c 'sh -c \"echo \\$\\$ > daemon.pid; exec sleep 100\" & exit 0' &
             while [ ! -s gc.pid ] || [ ! -s daemon.pid ]; do sleep 0.01; done",
        ))
        .await;
        assert_eq!(done.outcome, Outcome::Exited { code: 0 });
        assert!(
            // A wide margin: stopped, not waited out (the sleeps are 100 s).
            done.duration < Duration::from_secs(60),
            "{:?}",
            done.duration
        );
        let pids = ["gc.pid", "daemon.pid"].map(|f| first_pid(&read(dir.path().join(f))));
        if cgroups() {
            // A step's end is the end of every process it started.
            for pid in pids {
                wait_until("the escaped sleep to die with its step", || gone(pid)).await;
            }
        }
        pids.into_iter().for_each(kill_if_alive);
    }

    #[tokio::test]
    async fn cancelling_or_dropping_a_step_kills_what_escaped_its_group() {
        let dir = TempDir::new().unwrap();
        let script =
            "trap '' TERM; setsid sh -c 'echo $$ > gc.pid; exec sleep 100' & exec sleep 100";
        let gc = dir.path().join("gc.pid");
        let contained = cgroups();

        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(sh(&dir, script), cancel.clone()));
        wait_until("the grandchild pid", || !read_or_empty(&gc).is_empty()).await;
        let escaped = first_pid(&read(&gc));
        cancel.cancel();
        assert_eq!(task.await.unwrap().outcome, Outcome::Cancelled);
        if contained {
            wait_until("the escaped sleep to die on cancel", || gone(escaped)).await;
        }
        kill_if_alive(escaped);

        std::fs::remove_file(&gc).unwrap();
        let task = tokio::spawn(go(sh(&dir, script)));
        wait_until("the grandchild pid", || !read_or_empty(&gc).is_empty()).await;
        let escaped = first_pid(&read(&gc));
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        if contained {
            wait_until("the escaped sleep to die on drop", || gone(escaped)).await;
        }
        kill_if_alive(escaped);
    }

    #[tokio::test]
    async fn fifty_megabytes_do_not_block_and_are_counted() {
        let dir = TempDir::new().unwrap();
        let mut s = sh(
            &dir,
            "head -c 20000000 /dev/zero >&2; head -c 50000000 /dev/zero | tr '\\0' 'a'; echo",
        );
        s.capture_limit = 1000;
        s.stdout_file = Some(dir.path().join("deep/er/out.txt"));
        let done = go(s).await;
        assert_eq!(done.outcome, Outcome::Exited { code: 0 });
        assert_eq!(done.stdout, vec![b'a'; 1000]);
        assert_eq!(done.stdout_bytes, 50_000_001);
        assert_eq!(done.stdout_lines, 1);
        let file_len = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().len();
        assert_eq!(file_len("deep/er/out.txt"), 50_000_001);
        assert_eq!(file_len("stdout.log"), 50_000_001);
        assert_eq!(file_len("stderr.log"), 20_000_000);
    }

    #[tokio::test]
    async fn endless_output_is_capped_and_timed_out() {
        let dir = TempDir::new().unwrap();
        let mut s = spec(&dir, &["yes"]);
        s.capture_limit = 10;
        s.timeout = Some(Duration::from_millis(200));
        let done = go(s).await;
        assert_eq!(done.outcome, Outcome::TimedOut);
        assert_eq!(done.stdout, b"y\ny\ny\ny\ny\n");
        assert!(done.stdout_bytes > 10);
        // A kill mid-write may leave a final `y` without its newline.
        assert_eq!(done.stdout_lines, done.stdout_bytes.div_ceil(2));
    }

    #[tokio::test]
    async fn line_counts() {
        let dir = TempDir::new().unwrap();
        for (script, lines) in [
            ("printf 'a\\nb\\nc'", 3),
            ("printf 'a\\nb\\n'", 2),
            ("printf ''", 0),
            ("printf '\\n\\n'", 2),
        ] {
            assert_eq!(go(sh(&dir, script)).await.stdout_lines, lines, "{script}");
        }
    }

    #[tokio::test]
    async fn secrets_are_masked_even_when_split_across_writes() {
        let dir = TempDir::new().unwrap();
        // Two printf calls are two write()s; the pause makes them two reads.
        let script = "printf 'key=hunter2-'; sleep 0.05; printf 'token ab!\\n'; \
                      printf 'e=hunter2-' >&2; sleep 0.05; printf 'token\\n' >&2; \
                      printf 'tail hunter2'";
        let mut s = sh(&dir, script);
        s.secrets = vec![SECRET.into(), "ab".into(), String::new()];
        s.stdout_file = Some(dir.path().join("raw.txt"));
        let done = go(s).await;
        assert_eq!(done.stdout, b"key=*** ***!\ntail hunter2");
        assert_eq!(read(dir.path().join("stdout.log")), done.stdout);
        assert_eq!(read(dir.path().join("stderr.log")), b"e=***\n");
        // The user's redirect is theirs, unmasked.
        assert_eq!(
            read(dir.path().join("raw.txt")),
            b"key=hunter2-token ab!\ntail hunter2"
        );
        assert_eq!(done.stdout_bytes, 34);
        assert_eq!(done.stdout_lines, 2);
    }

    #[tokio::test]
    async fn secret_after_a_long_partial_line_is_masked() {
        let dir = TempDir::new().unwrap();
        let script = format!("head -c 200000 /dev/zero | tr '\\0' x; printf '{SECRET}'; echo");
        let mut s = sh(&dir, &script);
        s.secrets = vec![SECRET.into()];
        let done = go(s).await;
        let log = read(dir.path().join("stdout.log"));
        assert!(!contains(&log, SECRET));
        assert!(log.ends_with(b"x***\n"));
        assert_eq!(log.len(), 200_000 + 4);
        assert_eq!(done.stdout, log);
    }

    fn mask_in_chunks(secrets: &[&str], input: &[u8], chunk: usize) -> Vec<u8> {
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        let mut masker = Masker::new(&secrets).unwrap();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            masker.push(piece, &mut out);
        }
        masker.finish(&mut out);
        out
    }

    #[test]
    fn masking_is_independent_of_chunking() {
        let cases: &[(&[&str], &str, &str)] = &[
            (&["abcd", "ab"], "abcd ab abc", "*** *** ***c"),
            (&["abc", "bcd"], "xabcdx", "x***x"),
            (&["aa"], "aaa aa", "*** ***"),
            (&["tok"], "toktok", "******"),
            (&["multi\nline"], "a multi\nline b\nmulti", "a *** b\nmulti"),
            (&["s"], "sss\n", "*********\n"),
            (&["zz"], "no secret here\n", "no secret here\n"),
        ];
        for &(secrets, input, expected) in cases {
            for chunk in [1, 2, 3, 5, 64, 1 << 20] {
                let out = mask_in_chunks(secrets, input.as_bytes(), chunk);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    expected,
                    "secrets {secrets:?}, input {input:?}, chunk {chunk}"
                );
            }
        }
        assert!(Masker::new(&[String::new()]).is_none());
    }

    #[test]
    fn masking_releases_complete_lines_at_once() {
        let mut masker = Masker::new(&[SECRET.to_owned()]).unwrap();
        let mut out = Vec::new();
        masker.push(b"line one\nline tw", &mut out);
        // The partial line is short, so it could still become the secret.
        assert_eq!(out, b"line one\n");
        masker.push(&[b'o'; 100], &mut out);
        // Only the last len - 1 bytes are held back from a long partial line.
        assert_eq!(out.len(), 9 + 7 + 100 - (SECRET.len() - 1));
    }

    /// Open descriptors of this process (the test harness runs other tests
    /// alongside, hence the slack in the assertion below).
    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    /// Zombie children of this process.
    fn zombie_children() -> usize {
        let me = i32::try_from(std::process::id()).unwrap();
        process::all_pids()
            .into_iter()
            .filter_map(process::stat)
            .filter(|stat| stat.state == 'Z' && stat.ppid == me)
            .count()
    }

    #[tokio::test]
    async fn no_descriptor_or_zombie_leaks() {
        let dir = TempDir::new().unwrap();
        let before = open_fds();
        for i in 0..60 {
            let mut s = sh(&dir, "echo x; echo y >&2");
            s.secrets = vec!["x".into()];
            s.stdin = if i % 2 == 0 {
                Stdin::Null
            } else {
                Stdin::Bytes(b"in".to_vec())
            };
            s.stdout_file = Some(dir.path().join("f"));
            assert!(go(s).await.outcome.success());
        }
        let after = open_fds();
        assert!(after < before + 30, "fds went from {before} to {after}");
        wait_until("no zombie children", || zombie_children() == 0).await;
    }

    /// Compares `run` with a bare spawn-and-wait loop; run with
    /// `cargo test --release -- --ignored --nocapture overhead`.
    #[tokio::test]
    #[ignore = "timing benchmark, not a correctness test"]
    async fn overhead_versus_plain_spawn() {
        let dir = TempDir::new().unwrap();
        let n = 1000;
        let t = Instant::now();
        for _ in 0..n {
            let status = std::process::Command::new("true").status().unwrap();
            assert!(status.success());
        }
        let plain = t.elapsed();
        let t = Instant::now();
        for _ in 0..n {
            assert!(go(spec(&dir, &["true"])).await.outcome.success());
        }
        let ours = t.elapsed();
        println!("{n} x true: plain {plain:?}, run {ours:?}");
    }
}
