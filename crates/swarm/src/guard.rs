//! The lease guard: a small process beside a role process on a database queue that stops the
//! steps of a claim once its lease may no longer be held, when the role process itself cannot
//! (stopped by SIGSTOP, frozen, killed with -9).
//!
//! Owns: starting the guard (`orchestrate __lease-guard PID RUNNING_DIR`, in a process group of its
//! own, its standard input a pipe from the role process), the deadlines the role process sends it
//! (a line per change, `ID MS`: by this `CLOCK_MONOTONIC` time in milliseconds, when the claim's
//! lease was last renewed plus three quarters of a lease, its processes must be gone; `ID -` once
//! the claim is no longer held), and what it does when one passes: SIGKILL every process that holds
//! that claim's task file in the role's `running/` (steps inherit the task's lock), after writing
//! `guard-stopped` into the claim's directory, sparing the role process itself, so that its late
//! completion is refused by the fence rather than lost. When the pipe closes (the role process
//! ended) it waits out the deadlines it has, acts on them, then exits. Does not renew leases
//! (`orchestrate-pg`'s link does) and does not decide deadlines.

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

    /// The times by which the guard stops each claim's processes unless told otherwise (`None`:
    /// no longer held, nothing to stop).
    pub fn deadlines(&self, claims: &[(String, Option<Instant>)]) {
        let now = Instant::now();
        let base = monotonic_ms();
        let mut text = String::new();
        for (id, at) in claims {
            match at {
                Some(at) => {
                    let left = at.saturating_duration_since(now).as_millis() as u64;
                    text.push_str(&format!("{id} {}\n", base + left));
                }
                None => text.push_str(&format!("{id} -\n")),
            }
        }
        let mut input = self.input.lock().unwrap_or_else(|e| e.into_inner());
        let _ = input.write_all(text.as_bytes());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.try_wait();
    }
}

/// The guard process: reads claims' deadlines from standard input and stops the processes of
/// a claim of role process `pid` (the holders of its task file in `running`) when its passes.
pub fn run(pid: u32, running: PathBuf) {
    let (tx, rx) = std::sync::mpsc::channel::<(String, Option<u64>)>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let Some((id, at)) = line.trim().rsplit_once(' ') else {
                continue;
            };
            if tx.send((id.to_string(), at.parse::<u64>().ok())).is_err() {
                return;
            }
        }
    });
    let mut deadlines: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut open = true;
    loop {
        let now = monotonic_ms();
        let due: Vec<String> = deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            deadlines.remove(&id);
            stop_claim(pid, &running, &id);
        }
        let next = deadlines.values().min().copied();
        if !open {
            match next {
                Some(at) => {
                    std::thread::sleep(Duration::from_millis(at.saturating_sub(monotonic_ms())));
                    continue;
                }
                None => return,
            }
        }
        let wait = next.map_or(Duration::from_secs(3600), |at| {
            Duration::from_millis(at.saturating_sub(monotonic_ms()))
        });
        match rx.recv_timeout(wait) {
            Ok((id, Some(at))) => {
                deadlines.insert(id, at);
            }
            Ok((id, None)) => {
                deadlines.remove(&id);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // The role process ended: what it held may run on until its deadline, no longer.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => open = false,
        }
    }
}

/// SIGKILLs every process but `pid` holding the task file of claim `id` of `pid` in `running`.
fn stop_claim(pid: u32, running: &Path, id: &str) {
    let mut stopped = Vec::new();
    for entry in std::fs::read_dir(running).into_iter().flatten().flatten() {
        // That claim of that role process (another replica's claims are its own business).
        let mine = std::fs::read(entry.path().join("lease.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<orchestrate_queue::queue::Lease>(&b).ok())
            .is_some_and(|lease| lease.pid == pid && lease.id == id);
        if !mine {
            continue;
        }
        // Said first, so that the role process never takes the attempt's end for its result.
        let _ = std::fs::write(
            entry.path().join(orchestrate_queue::queue::GUARD_STOPPED),
            format!(
                "stopped by the lease guard of role process {pid} at {}\n",
                orchestrate_base::clock::now_rfc3339()
            ),
        );
        for holder in orchestrate_queue::queue::holders(&entry.path().join("task")) {
            if holder != pid && orchestrate_base::process::kill(holder, libc::SIGKILL).is_ok() {
                stopped.push(holder.to_string());
            }
        }
    }
    if !stopped.is_empty() {
        eprintln!(
            "lease guard of role process {pid}: the lease of `{id}` was not renewed in time; \
             stopped its processes (pids {}) before another machine may take the task",
            stopped.join(", ")
        );
    }
}
