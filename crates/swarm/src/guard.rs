//! The lease guard: a small process beside a role process on a database queue that stops the
//! role process's steps once its leases may no longer be held, when the role process itself
//! cannot (stopped by SIGSTOP, frozen, killed with -9).
//!
//! Owns: starting the guard (`orchestrate __lease-guard PID RUNNING_DIR`, in a process group of
//! its own, its standard input a pipe from the role process), the deadlines the role process
//! sends it (a line per change: a `CLOCK_MONOTONIC` time in milliseconds by which every held
//! lease was last renewed plus three quarters of a lease, or `-` when it holds none), and what
//! it does when a deadline passes: SIGKILL every process that holds a task file of the role's
//! `running/` (steps inherit the task's lock; the role process itself is spared, so that its
//! late completion is refused by the fence rather than lost), and the step cgroups of the role
//! process. When the pipe closes (the role process ended) it keeps the last deadline, then
//! exits. Does not renew leases (`orchestrate-pg`'s link does) and does not decide deadlines.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use orchestrate_base::clock::monotonic_ms;

/// The role process's end of the guard: deadlines written to its standard input.
pub struct Guard {
    input: std::sync::Mutex<std::process::ChildStdin>,
    child: std::sync::Mutex<std::process::Child>,
}

impl Guard {
    /// Starts the guard of this process, whose claimed tasks are in `running`.
    pub fn start(running: &Path) -> std::io::Result<Guard> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()?;
        let mut child = std::process::Command::new(exe)
            .arg("__lease-guard")
            .arg(std::process::id().to_string())
            .arg(running)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            // Not in the role process's group: a signal to that group does not reach it.
            .process_group(0)
            .spawn()?;
        let input = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no pipe to the lease guard"))?;
        Ok(Guard {
            input: std::sync::Mutex::new(input),
            child: std::sync::Mutex::new(child),
        })
    }

    /// The time by which the guard stops the steps unless told otherwise (`None`: no lease
    /// held, nothing to stop).
    pub fn deadline(&self, at: Option<Instant>) {
        let line = match at {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                format!("{}\n", monotonic_ms() + left.as_millis() as u64)
            }
            None => "-\n".to_string(),
        };
        let mut input = self.input.lock().unwrap_or_else(|e| e.into_inner());
        let _ = input.write_all(line.as_bytes());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.deadline(None);
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.try_wait();
    }
}

/// The guard process: reads deadlines from standard input and stops the steps of role
/// process `pid` (the holders of the task files in `running`) when one passes.
pub fn run(pid: u32, running: PathBuf) {
    let (tx, rx) = std::sync::mpsc::channel::<Option<Option<u64>>>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let deadline = line.trim().parse::<u64>().ok();
            if tx.send(Some(deadline)).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });
    let mut deadline: Option<u64> = None;
    loop {
        let wait = match deadline {
            Some(at) => Duration::from_millis(at.saturating_sub(monotonic_ms())),
            None => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok(Some(next)) => deadline = next,
            // The role process ended: its steps may run on until the last deadline, no longer.
            Ok(None) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(at) = deadline {
                    std::thread::sleep(Duration::from_millis(at.saturating_sub(monotonic_ms())));
                    stop_steps(pid, &running);
                }
                return;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                stop_steps(pid, &running);
                deadline = None;
            }
        }
    }
}

/// SIGKILLs every process but `pid` holding a task file in `running`, and `pid`'s step cgroups.
fn stop_steps(pid: u32, running: &Path) {
    let mut stopped = Vec::new();
    if let Ok(entries) = std::fs::read_dir(running) {
        for entry in entries.flatten() {
            // Only the claims of that role process (another replica's are its own business).
            let mine = std::fs::read(entry.path().join("lease.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<orchestrate_queue::queue::Lease>(&b).ok())
                .is_some_and(|lease| lease.pid == pid);
            if !mine {
                continue;
            }
            for holder in orchestrate_queue::queue::holders(&entry.path().join("task")) {
                if holder != pid && orchestrate_base::process::kill(holder, libc::SIGKILL).is_ok() {
                    stopped.push(holder.to_string());
                }
            }
        }
    }
    let cgroups = orchestrate_base::cgroup::StepsOf::find(pid).map_or(0, |steps| steps.kill());
    eprintln!(
        "lease guard of role process {pid}: its leases were not renewed in time; stopped its steps \
         (pids {}; {cgroups} step cgroups) before another machine may take their tasks",
        if stopped.is_empty() {
            "none".to_string()
        } else {
            stopped.join(", ")
        }
    );
}
