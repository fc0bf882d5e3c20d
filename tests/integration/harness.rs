//! A small fluent harness: a temp workspace, files in it, and runs of the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_orchestrate");

/// A temporary workspace directory.
pub struct Ws {
    dir: tempfile::TempDir,
    path: PathBuf,
    env: Vec<(String, String)>,
}

impl Ws {
    pub fn new() -> Ws {
        let dir = tempfile::tempdir().expect("create temp dir");
        let path = dir.path().canonicalize().expect("canonicalize temp dir");
        Ws {
            dir,
            path,
            env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Writes a file (parents created).
    pub fn file(&self, rel: &str, content: &str) -> &Ws {
        let path = self.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        self
    }

    /// Writes an executable script (parents created).
    pub fn script(&self, rel: &str, content: &str) -> &Ws {
        use std::os::unix::fs::PermissionsExt;
        self.file(rel, content);
        std::fs::set_permissions(self.join(rel), std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// Writes `wf.yaml`.
    pub fn workflow(&self, yaml: &str) -> &Ws {
        self.file("wf.yaml", yaml)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.join(rel).exists()
    }

    /// Adds an environment variable for every command this workspace runs.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Ws {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Puts `WS/bin` first on PATH (for fake `claude`/`gemini`/`codex`).
    pub fn with_bin_path(&mut self) -> &mut Ws {
        let path = format!(
            "{}:{}",
            self.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        self.env("PATH", &path)
    }

    /// A command for the binary with `--workspace` set.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--workspace")
            .arg(&self.path)
            .args(args)
            .current_dir(&self.path);
        // The log filter and format are the defaults unless a test sets them.
        for var in [
            "RUST_LOG",
            "ORCHESTRATE_LOG_LEVEL",
            "ORCHESTRATE_LOG_FORMAT",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs the binary to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(
            self.cmd(args).output().expect("spawn orchestrate"),
            &self.path,
        )
    }

    /// Runs the binary to completion under `sh`, and counts the bytes it read: `rchar` of
    /// /proc (every read(2), from disk, page cache or pipe alike; a reaped child's count is added
    /// to its parent's). A test proves with it that a command did not read something, without
    /// timing it.
    pub fn run_counting_reads(&self, args: &[&str]) -> (Run, u64) {
        const MARK: &str = "rchar-of-the-command:";
        let command = self.cmd(args);
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!(
                "\"$@\"; rc=$?; echo \"{MARK} $(sed -n 's/^rchar: //p' /proc/$$/io)\" >&2; exit $rc"
            ))
            .arg("sh")
            .arg(command.get_program())
            .args(command.get_args())
            .current_dir(&self.path)
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            sh.env(k, v);
        }
        let mut run = Run::from(sh.output().expect("spawn sh"), &self.path);
        let (stderr, count) = run.stderr.rsplit_once(MARK).expect("the read count");
        let bytes = count.trim().parse().expect("rchar is a number");
        run.stderr = stderr.to_string();
        (run, bytes)
    }

    /// `orchestrate run wf.yaml <args>`.
    pub fn run_wf(&self, args: &[&str]) -> Run {
        let mut all = vec!["run", "wf.yaml"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.join(".orchestrate/runs").join(run_id)
    }

    pub fn state(&self, run_id: &str) -> Value {
        let text =
            std::fs::read_to_string(self.run_dir(run_id).join("state.json")).expect("state.json");
        serde_json::from_str(&text).expect("state.json is JSON")
    }

    pub fn events(&self, run_id: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.run_dir(run_id).join("events.jsonl"))
            .expect("events.jsonl");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("event line is JSON"))
            .collect()
    }
}

/// The result of one invocation.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub run_id: Option<String>,
    ws: PathBuf,
}

impl Run {
    pub fn from(output: Output, ws: &Path) -> Run {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let run_id = stderr
            .lines()
            .find_map(|l| l.strip_prefix("run_id: "))
            .map(|s| s.trim().to_string());
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr,
            run_id,
            ws: ws.to_path_buf(),
        }
    }

    /// Asserts the exit code, showing the output when it differs.
    pub fn code(&self, expected: i32) -> &Run {
        assert_eq!(
            self.code, expected,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn ok(&self) -> &Run {
        self.code(0)
    }

    pub fn stderr_has(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n--- stderr\n{}",
            self.stderr
        );
        self
    }

    pub fn stdout_has(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n--- stdout\n{}",
            self.stdout
        );
        self
    }

    pub fn id(&self) -> &str {
        self.run_id
            .as_deref()
            .unwrap_or_else(|| panic!("no run_id printed\n--- stderr\n{}", self.stderr))
    }

    pub fn state(&self) -> Value {
        let text = std::fs::read_to_string(
            self.ws
                .join(".orchestrate/runs")
                .join(self.id())
                .join("state.json"),
        )
        .expect("state.json");
        serde_json::from_str(&text).unwrap()
    }

    /// The recorded result of a step.
    pub fn step(&self, name: &str) -> Value {
        let state = self.state();
        state["steps"]
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no step {name} in state: {state:#}"))
    }

    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(
            self.ws
                .join(".orchestrate/runs")
                .join(self.id())
                .join("events.jsonl"),
        )
        .expect("events");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// How long a wait may really take before the test fails: `timeout` times a patience factor
/// (3; `ORCHESTRATE_TEST_PATIENCE` sets another). The deadlines of waits guard against hangs,
/// and a loaded machine (test binaries side by side on 2 cores) is slow, not hung. Only a
/// failure waits longer for it; a passing test never does.
pub fn patient(timeout: Duration) -> Duration {
    let factor = std::env::var("ORCHESTRATE_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    timeout * factor
}

/// Waits until `cond` holds or the deadline passes (then panics with `what`).
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + patient(timeout);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A fake model CLI that records its argv (one argument per line, NUL-safe as JSON) into
/// `WS/<name>.argv.json` and prints `reply`.
pub fn fake_cli(ws: &Ws, name: &str, reply: &str) {
    let script = format!(
        "#!/usr/bin/env python3\nimport json, sys\njson.dump(sys.argv[1:], open({argv:?}, 'w'))\nsys.stdout.write({reply:?})\n",
        argv = ws.join(&format!("{name}.argv.json")).display().to_string(),
        reply = reply,
    );
    ws.script(&format!("bin/{name}"), &script);
}

pub fn recorded_argv(ws: &Ws, name: &str) -> Vec<String> {
    serde_json::from_str(&ws.read(&format!("{name}.argv.json"))).expect("argv json")
}

/// Waits for `child` to exit: its status, or `None` when it is still running after `timeout`.
pub fn exit_within(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the binary like [`Ws::run`], but with a deadline: a run still going after `timeout` is
/// killed and the test fails with what it printed so far.
pub fn run_within(ws: &Ws, args: &[&str], timeout: Duration) -> Run {
    Started::new(ws, args).finish(timeout)
}

/// The binary running in the background, its output going to temp files; killed if the test
/// ends before [`Started::finish`].
pub struct Started {
    child: std::process::Child,
    out: std::fs::File,
    err: std::fs::File,
    args: String,
    ws: PathBuf,
}

impl Started {
    pub fn new(ws: &Ws, args: &[&str]) -> Started {
        let out = tempfile::tempfile().expect("temp file for stdout");
        let err = tempfile::tempfile().expect("temp file for stderr");
        let child = ws
            .cmd(args)
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .spawn()
            .expect("spawn orchestrate");
        Started {
            child,
            out,
            err,
            args: args.join(" "),
            ws: ws.path().to_path_buf(),
        }
    }

    /// Waits for the exit; a run still going after `timeout` is killed and the test fails with
    /// what it printed so far.
    pub fn finish(mut self, timeout: Duration) -> Run {
        use std::io::{Read, Seek, SeekFrom};
        let timeout = patient(timeout);
        let (status, timed_out) = match exit_within(&mut self.child, timeout) {
            Some(status) => (status, false),
            None => {
                let _ = self.child.kill();
                (self.child.wait().expect("wait for orchestrate"), true)
            }
        };
        let read = |file: &mut std::fs::File| {
            let mut bytes = Vec::new();
            file.seek(SeekFrom::Start(0)).unwrap();
            file.read_to_end(&mut bytes).unwrap();
            bytes
        };
        let (stdout, stderr) = (read(&mut self.out), read(&mut self.err));
        assert!(
            !timed_out,
            "`orchestrate {}` did not exit within {timeout:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
        Run::from(
            Output {
                status,
                stdout,
                stderr,
            },
            &self.ws,
        )
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        // A no-op once `finish` has reaped it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// Helpers of the swarm and supervisor suites (roles, queue directories, process liveness).

/// Writes `agents/<name>.yaml` (`workflow: workflows/<name>.yaml` plus `settings`) and the
/// workflow file.
pub fn role(ws: &Ws, name: &str, settings: &str, workflow: &str) {
    ws.file(
        &format!("agents/{name}.yaml"),
        &format!("workflow: workflows/{name}.yaml\n{settings}"),
    );
    ws.file(&format!("workflows/{name}.yaml"), workflow);
}

/// Sorted names in a workspace directory (empty when it does not exist).
pub fn entries(ws: &Ws, rel: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(ws.join(rel))
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `*.task` files in a role's inbox.
pub fn queued(ws: &Ws, role: &str) -> Vec<String> {
    entries(ws, &format!("inbox/{role}"))
        .into_iter()
        .filter(|n| n.ends_with(".task"))
        .collect()
}

pub fn json_file(ws: &Ws, rel: &str) -> Value {
    serde_json::from_str(&ws.read(rel)).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

/// The sidecar of a queued task.
pub fn sidecar(ws: &Ws, role: &str, id: &str) -> Value {
    json_file(ws, &format!(".orchestrate/queue/{role}/{id}.json"))
}

pub fn pid_alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; look at its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Lines of a file (empty when it does not exist).
pub fn lines(ws: &Ws, rel: &str) -> Vec<String> {
    std::fs::read_to_string(ws.join(rel))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Whether task `id` is a line of `seen.log` (the recording workflows of the swarm tests write
/// one line per task they ran).
pub fn seen(ws: &Ws, id: &str) -> bool {
    lines(ws, "seen.log").iter().any(|l| l == id)
}

/// The id of the only run in the workspace, once its directory exists (a run started in the
/// background).
pub fn only_run_id(ws: &Ws) -> String {
    let runs = ws.join(".orchestrate/runs");
    let mut id = String::new();
    wait_until("the run directory", Duration::from_secs(20), || {
        let names: Vec<String> = std::fs::read_dir(&runs)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(names.len() <= 1, "more than one run: {names:?}");
        match names.first() {
            Some(name) => {
                id = name.clone();
                true
            }
            None => false,
        }
    });
    id
}

/// `kill SIGNAL -- TARGET` (a pid, or `-PGID` for a process group); true when delivered.
pub fn signal_quiet(signal: &str, target: &str) -> bool {
    Command::new("kill")
        .args([signal, "--", target])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The pid a step wrote into `rel` (`echo $$ > rel`), once the file holds a whole line.
pub fn pid_from_file(ws: &Ws, rel: &str) -> String {
    let mut pid = String::new();
    wait_until(
        &format!("{rel} to hold a pid"),
        Duration::from_secs(20),
        || match std::fs::read_to_string(ws.join(rel)) {
            Ok(text) if text.ends_with('\n') => {
                pid = text.trim().to_string();
                true
            }
            _ => false,
        },
    );
    pid
}

/// xorshift64*: a small seedable generator, so a randomized test's failure names its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Seeded from the environment variable `var` (to replay a failure), else from the clock.
    pub fn from_env(var: &str) -> (Rng, u64) {
        let seed = std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            .max(1);
        (Rng::new(seed), seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A crash mid-step: SIGKILL to the engine `child` (reaped), then to the step's process group
/// `group` (a pid from [`pid_from_file`]), which would otherwise outlive it.
pub fn crash(child: &mut std::process::Child, group: &str) {
    let _ = child.kill();
    let _ = child.wait();
    signal_quiet("-KILL", &format!("-{group}"));
}

/// Role processes (`orchestrate agent`, also `--once` runs) started by a test. On drop (also when
/// the test fails), every one still running is killed, and so is every process still working in
/// the workspace: orphaned steps, which run in their own process groups and outlive a SIGKILLed
/// agent.
pub struct Agents {
    ws: PathBuf,
    logs: tempfile::TempDir,
    children: Vec<std::process::Child>,
}

impl Agents {
    pub fn new(ws: &Ws) -> Agents {
        Agents {
            ws: ws.path().to_path_buf(),
            logs: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        }
    }

    /// Starts `orchestrate agent ROLE -q --replica N EXTRA...`; returns its index.
    pub fn start(&mut self, ws: &Ws, role: &str, extra: &[&str]) -> usize {
        let mut args = vec!["-q"];
        args.extend_from_slice(extra);
        self.spawn(ws, role, &args, &[])
    }

    /// Starts `orchestrate agent ROLE --replica N EXTRA...` with `env`; returns its index.
    pub fn spawn(&mut self, ws: &Ws, role: &str, extra: &[&str], env: &[(&str, &str)]) -> usize {
        let n = self.children.len();
        let replica = (n + 1).to_string();
        let mut args = vec!["agent", role, "--replica", replica.as_str()];
        args.extend_from_slice(extra);
        let log = std::fs::File::create(self.log_path(n)).unwrap();
        let mut cmd = ws.cmd(&args);
        cmd.stdout(Stdio::null()).stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.children
            .push(cmd.spawn().expect("spawn orchestrate agent"));
        n
    }

    pub fn log_path(&self, n: usize) -> PathBuf {
        self.logs.path().join(format!("agent-{n}.log"))
    }

    /// What agent `n` wrote on stderr.
    pub fn log(&self, n: usize) -> String {
        std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
    }

    /// Everything the agents wrote on stderr, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.children.len())
            .map(|n| format!("--- agent {n} (pid {}):\n{}", self.pid(n), self.log(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn pid(&self, n: usize) -> u32 {
        self.children[n].id()
    }

    /// Sends `sig` (a name: `TERM`, `KILL`, `STOP`, ...) to agent `n`.
    pub fn signal(&self, n: usize, sig: &str) {
        signal_quiet(&format!("-{sig}"), &self.pid(n).to_string());
    }

    /// Waits for agent `n` to exit and returns its status.
    pub fn wait(&mut self, n: usize, timeout: Duration) -> std::process::ExitStatus {
        exit_within(&mut self.children[n], timeout)
            .unwrap_or_else(|| panic!("agent {n} did not exit within {timeout:?}\n{}", self.logs()))
    }

    /// Runs one agent to completion (`--once` or a dying agent) and returns its status.
    pub fn run(
        &mut self,
        ws: &Ws,
        role: &str,
        extra: &[&str],
        timeout: Duration,
    ) -> std::process::ExitStatus {
        let n = self.start(ws, role, extra);
        self.wait(n, timeout)
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for child in &mut self.children {
            // A no-op for one already reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in working_in(&self.ws) {
            signal_quiet("-KILL", &pid.to_string());
        }
    }
}

/// Live processes whose working directory is `dir` (a task's steps run in the workspace).
pub fn working_in(dir: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir)
                && pid_alive(pid)
        })
        .collect()
}

/// A test that cannot run here (a missing kernel feature, not root): prints `SKIPPED: why` and
/// lets the caller return, unless `ORCHESTRATE_TEST_REQUIRE_ALL=1` is set (CI), which fails it.
/// Use as `return skip_or_fail("...")`.
pub fn skip_or_fail(why: &str) {
    if std::env::var("ORCHESTRATE_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("cannot run this test here ({why}), and ORCHESTRATE_TEST_REQUIRE_ALL=1 requires it");
    }
    eprintln!("SKIPPED: {why}");
}
