//! The role process's queue on PostgreSQL: `TaskQueue` over the database, with each machine's
//! inbox, `running/`, `processed/` and `failed/` kept as on one machine.
//!
//! Owns: taking in task files dropped into this machine's inbox (the row committed first, then
//! the file removed; the same file offered again after a crash is known by its identity, a
//! name already live is refused into `failed/`), claims from the database made into a task
//! directory in `running/` (the task's bytes, its lock, a lease naming the fence and the
//! machine), the lease's check for the holder (lost, or about to run out unrenewed), completion
//! (status.json written and synced, the database's fenced commit, then the move; a refused
//! attempt's files set aside), giving claims back, the rescue of expired leases and the
//! archiving of finished rows, and the local recovery of attempts whose processes all died.
//! Does not run tasks or decide when to stop them (the worker does).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::ops::ControlFlow;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orchestrate_base::io_err::FromIo;
use orchestrate_queue::queue::{
    self, Claim, ClaimResult, Completion, Enqueued, Layout, Lease, LeaseCheck, Meta, Owner,
    QueueError, Recovered, TaskQueue,
};
use orchestrate_queue::record::TaskStatus;

use crate::connect::DbError;
use crate::link::{LeaseState, Link};
use crate::queue::{Added, Done};

/// Expired leases are looked for this often (by every role process; each row is requeued once).
const RESCUE_EVERY: Duration = Duration::from_secs(10);

/// After a pull found nothing, the next ones within this time ask the database only when a task
/// was said to be queued meanwhile (a `NOTIFY`, or the connection made again): an idle role
/// process asks about once in this time, not at every look.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// Finished rows are moved to the history this often, in batches of [`ARCHIVE_BATCH`], once
/// they are [`ARCHIVE_AFTER`] old.
const ARCHIVE_EVERY: Duration = Duration::from_secs(30);
const ARCHIVE_BATCH: i64 = 5_000;
const ARCHIVE_AFTER: Duration = Duration::from_secs(60);

/// A role's queue in the database, as one role process on one machine uses it.
pub struct PgQueue {
    layout: Layout,
    link: Link,
    /// This machine's name, in leases and in the database.
    machine: String,
    /// How long a claim's lease lasts unrenewed.
    lease: Duration,
    /// Whether this machine runs the role's tasks (its labels allow it), or only takes in
    /// the files dropped into its inbox.
    runs: Arc<std::sync::atomic::AtomicBool>,
    held: Mutex<HashMap<String, Arc<LeaseState>>>,
    /// Set when a task was said to be queued (or the connection was made again): the next pull
    /// asks the database even within [`IDLE_POLL`] of an empty one.
    hinted: Arc<std::sync::atomic::AtomicBool>,
    /// When the last pull found nothing (`None` after one found a task).
    last_empty: Mutex<Option<Instant>>,
    last_rescue: Mutex<Option<Instant>>,
    last_archive: Mutex<Option<Instant>>,
}

impl PgQueue {
    /// The queue of `layout.role` through `link`, on `machine`; `runs` says whether tasks are
    /// claimed here (shared with the presence the link says). Leases last `lease`.
    pub fn new(
        layout: Layout,
        link: Link,
        machine: &str,
        lease: Duration,
        runs: Arc<std::sync::atomic::AtomicBool>,
        hinted: Arc<std::sync::atomic::AtomicBool>,
    ) -> PgQueue {
        PgQueue {
            layout,
            link,
            machine: machine.to_string(),
            lease,
            runs,
            hinted,
            last_empty: Mutex::new(None),
            held: Mutex::new(HashMap::new()),
            last_rescue: Mutex::new(None),
            last_archive: Mutex::new(None),
        }
    }

    /// The server, as messages name it.
    pub fn target(&self) -> String {
        self.link.target.to_string()
    }

    fn role_owned(&self) -> String {
        self.layout.role.clone()
    }

    /// Takes inbox entry `file_name` into the database: `Continue` once it is queued (or was
    /// already), the claim result to act on otherwise.
    fn ingest(
        &self,
        file_name: &str,
        settle: Duration,
        max_bytes: u64,
    ) -> Result<ControlFlow<ClaimResult>, QueueError> {
        let file = match queue::take_inbox_file(&self.layout, file_name, settle, max_bytes)? {
            ControlFlow::Continue(file) => file,
            ControlFlow::Break(result) => return Ok(ControlFlow::Break(result)),
        };
        let source = format!("inbox:{}:{}", self.machine, file.identity);
        let (role, id, payload) = (self.role_owned(), file.id.clone(), file.content.clone());
        let correlation = self
            .layout
            .noted_correlation(&file.id)
            .or_else(|| correlation_of(&payload));
        let added = self
            .link
            .call(move |conn| {
                Box::pin(async move {
                    let db = conn.db().await?;
                    crate::queue::offer(
                        db,
                        &role,
                        &id,
                        &payload,
                        correlation.as_deref(),
                        &source,
                        true,
                    )
                    .await
                })
            })
            .map_err(backend)?;
        match added {
            Added::Queued | Added::Already => {
                // The row is committed: the file may go. Should this process die before the
                // unlink, the file is offered again and found `Already`.
                fs::remove_file(&file.path).map_err(QueueError::io_err("remove", &file.path))?;
                self.layout.forget_notes(&file.id);
                Ok(ControlFlow::Continue(()))
            }
            Added::Taken { state, holder } => {
                let held = holder.map(|h| format!(" by {h}")).unwrap_or_default();
                let reason = format!(
                    "a task named `{}` of role `{}` is already {state}{held} in the queue at {}; \
                     this file was not queued (rename it and drop it in again to run it too)",
                    file.id, self.layout.role, self.link.target
                );
                drop(file);
                queue::refuse(&self.layout, file_name, &reason).map(ControlFlow::Break)
            }
        }
    }

    /// Makes claim `c` of the database into a task directory in `running/`.
    fn materialize(&self, c: &crate::queue::Claimed, owner: &Owner) -> Result<Claim, QueueError> {
        fs::create_dir_all(&self.layout.running)
            .map_err(QueueError::io_err("create", &self.layout.running))?;
        // A directory of an earlier attempt still here (its processes may still be running,
        // fenced off): this attempt takes a name of its own.
        let mut dir = self.layout.running.join(&c.id);
        if let Err(err) = fs::create_dir(&dir) {
            if err.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(QueueError::Io {
                    action: "create",
                    path: dir,
                    source: err,
                });
            }
            dir = self.layout.running.join(format!(".{}~{}", c.id, c.fence));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).map_err(QueueError::io_err("create", &dir))?;
        }
        let task_path = dir.join("task");
        let mut lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&task_path)
            .map_err(QueueError::io_err("create", &task_path))?;
        lock.write_all(&c.payload)
            .map_err(QueueError::io_err("write", &task_path))?;
        lock.try_lock().map_err(|e| QueueError::Io {
            action: "lock",
            path: task_path.clone(),
            source: match e {
                fs::TryLockError::Error(err) => err,
                fs::TryLockError::WouldBlock => std::io::Error::other("locked by another"),
            },
        })?;
        let attempt = u32::try_from(c.attempt).unwrap_or(1);
        let mut lease = Lease::new(&self.layout.role, &c.id, attempt, owner);
        lease.fence = Some(c.fence);
        lease.machine = Some(self.machine.clone());
        queue::write_lease(&lease, &dir)?;
        let mut meta = Meta::default();
        meta.correlation_id = c.correlation_id.clone();
        Ok(Claim {
            id: c.id.clone(),
            dir,
            task_path,
            lock,
            attempt,
            meta,
            has_sidecar: false,
            lease,
            content: c.payload.clone(),
        })
    }

    fn hold(&self, id: &str, fence: i64, at: Instant) -> Result<(), QueueError> {
        let key = id.to_string();
        let state = self
            .link
            .call(move |conn| Box::pin(async move { Ok(conn.hold(&key, fence, at)) }))
            .map_err(backend)?;
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), state);
        Ok(())
    }

    fn unhold(&self, id: &str) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let key = id.to_string();
        let _ = self.link.call(move |conn| {
            Box::pin(async move {
                conn.unhold(&key);
                Ok(())
            })
        });
    }

    /// Every `every`, true once (and notes the time): for the periodic chores.
    fn due(slot: &Mutex<Option<Instant>>, every: Duration) -> bool {
        let mut last = slot.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Local claims whose processes are all gone and which this process does not hold: their
    /// completion is finished if the database took it, else their lease is ended now (the
    /// task is requeued, charged) and their files set aside.
    fn recover_local(&self) -> Vec<Recovered> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(&self.layout.running) else {
            return out;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let Ok(bytes) = fs::read(dir.join("lease.json")) else {
                continue;
            };
            let Ok(lease) = serde_json::from_slice::<Lease>(&bytes) else {
                continue;
            };
            let Some(fence) = lease.fence else { continue };
            if self
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&lease.id)
            {
                continue;
            }
            let Ok(task) = fs::File::open(dir.join("task")) else {
                continue;
            };
            if task.try_lock().is_err() {
                continue;
            }
            let (role, id) = (self.role_owned(), lease.id.clone());
            let state = self.link.call(move |conn| {
                Box::pin(async move {
                    let db = conn.db().await?;
                    crate::queue::state_of(db, &role, &id).await
                })
            });
            let Ok(state) = state else { return out };
            let finished_here = matches!(&state, Some((s, f)) if *f == fence && (s == "processed" || s == "failed"));
            let written = fs::read(dir.join("status.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            if finished_here && let Some(status) = written {
                let success = status["success"].as_bool().unwrap_or(false);
                drop(task);
                if queue::move_finished(&self.layout, &dir, &lease.id, success).is_ok() {
                    out.push(Recovered {
                        id: lease.id.clone(),
                        attempt: lease.attempt,
                        action: if success { "processed" } else { "failed" }.into(),
                        reason: "completed the final move".into(),
                    });
                }
                continue;
            }
            let (role, id) = (self.role_owned(), lease.id.clone());
            let _ = self.link.call(move |conn| {
                Box::pin(async move {
                    let db = conn.db().await?;
                    crate::queue::expire(db, &role, &id, fence).await
                })
            });
            drop(task);
            if queue::set_aside(&self.layout, &dir, &lease.id, lease.attempt).is_ok() {
                out.push(Recovered {
                    id: lease.id.clone(),
                    attempt: lease.attempt,
                    action: "given up".into(),
                    reason: format!(
                        "attempt {} ended without finishing: its worker died; the queue requeues it",
                        lease.attempt
                    ),
                });
            }
        }
        out
    }

    /// Queues a task for `layout.role` (any role of the swarm, through this role's
    /// connection): its row, or while the database is unreachable, a file in that role's inbox
    /// on this machine (`spooled` says why), taken in once it is back.
    pub fn enqueue_to(
        &self,
        layout: &Layout,
        id: Option<&str>,
        content: &[u8],
        correlation_id: Option<&str>,
        source: &str,
    ) -> Result<Enqueued, QueueError> {
        let id = queue::task_id(id)?;
        let correlation = correlation_id
            .map(str::to_string)
            .or_else(|| correlation_of(content))
            .unwrap_or_else(|| id.clone());
        let (role, key, payload, source_text, corr) = (
            layout.role.clone(),
            id.clone(),
            content.to_vec(),
            format!("{source}:{}:{}", self.machine, std::process::id()),
            correlation.clone(),
        );
        let added = self.link.call(move |conn| {
            Box::pin(async move {
                let db = conn.db().await?;
                crate::queue::offer(db, &role, &key, &payload, Some(&corr), &source_text, false)
                    .await
            })
        });
        match added {
            Ok(Added::Queued | Added::Already) => Ok(Enqueued {
                role: layout.role.clone(),
                file: format!("{} (the queue database)", self.link.target),
                id,
                correlation_id: correlation,
                spooled: None,
            }),
            Ok(Added::Taken { .. }) => Err(QueueError::Exists {
                id,
                inbox: PathBuf::from(format!("{} (role {})", self.link.target, layout.role)),
            }),
            // Unreachable: the task waits in this machine's inbox, taken in once it is back.
            Err(err @ DbError::Unreachable { .. }) => layout
                .enqueue(Some(&id), content, Some(&correlation), source)
                .map(|mut spooled| {
                    spooled.spooled = Some(err.to_string());
                    spooled
                }),
            Err(err) => Err(backend(err)),
        }
    }

    /// Notes in the database what attempt `run_id` of task `task` spent, for the daily budget
    /// of every machine.
    pub fn note_spent(
        &self,
        task: &str,
        attempt: u32,
        run_id: &str,
        tokens: u64,
        cost_usd: f64,
    ) -> Result<(), DbError> {
        let (machine, role, task, run_id) = (
            self.machine.clone(),
            self.role_owned(),
            task.to_string(),
            run_id.to_string(),
        );
        let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        self.link.call(move |conn| {
            Box::pin(async move {
                let db = conn.db().await?;
                crate::control::spent(
                    db, &machine, &role, &task, attempt, &run_id, tokens, cost_usd,
                )
                .await
            })
        })
    }

    /// Lets go of `claim`: its lease no longer renewed, the database told (`charged`: its lease
    /// ended now, the attempt counted; else given back uncharged), its files set aside. The
    /// database's answer (whether that attempt still held the task), or why there is none.
    fn let_go(&self, claim: Claim, charged: bool) -> Result<Result<bool, DbError>, QueueError> {
        self.unhold(&claim.id);
        let (role, id, fence) = (
            self.role_owned(),
            claim.id.clone(),
            claim.lease.fence.unwrap_or(-1),
        );
        let answer = self.link.call(move |conn| {
            Box::pin(async move {
                let db = conn.db().await?;
                if charged {
                    crate::queue::expire(db, &role, &id, fence).await
                } else {
                    crate::queue::release(db, &role, &id, fence).await
                }
            })
        });
        let Claim {
            id,
            dir,
            lock,
            attempt,
            ..
        } = claim;
        queue::set_aside(&self.layout, &dir, &id, attempt)?;
        drop(lock);
        Ok(answer)
    }

    /// Whether the lease of claim `id` is lost, or unrenewed for half its length.
    fn stale(&self, id: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|state| state.lost() || state.renewed().elapsed() >= self.lease / 2)
    }

    /// Records the end of attempts whose leases hold: status.json, the fenced commit, the move.
    fn record(&self, done: &[Completion<'_>]) -> Vec<Result<PathBuf, QueueError>> {
        let written = queue::write_records(done);
        let mut rows = Vec::new();
        for (c, w) in done.iter().zip(&written) {
            if w.is_ok() {
                rows.push(Done {
                    id: c.claim.id.clone(),
                    fence: c.claim.lease.fence.unwrap_or(-1),
                    success: c.success,
                    status: serde_json::to_string(c.status).unwrap_or_default(),
                });
            }
        }
        // The database must answer: acceptance or refusal. While it is unreachable, wait for
        // it (should the lease run out meanwhile, the answer is a refusal).
        let mut wait = Duration::from_millis(100);
        let accepted: std::collections::HashSet<String> = loop {
            if rows.is_empty() {
                break Default::default();
            }
            let (role, batch) = (self.role_owned(), rows.clone());
            match self.link.call(move |conn| {
                Box::pin(async move {
                    let db = conn.db().await?;
                    crate::queue::complete_all(db, &role, &batch).await
                })
            }) {
                Ok(ids) => break ids.into_iter().collect(),
                // Not to be fixed by waiting: the claims stay in running/, and recovery asks
                // the database what became of each once this process let go of them.
                Err(err) if !err.is_transient() => {
                    return done
                        .iter()
                        .map(|c| {
                            self.unhold(&c.claim.id);
                            Err(QueueError::Backend {
                                reason: err.to_string(),
                            })
                        })
                        .collect();
                }
                Err(_) => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        };
        done.iter()
            .zip(written)
            .map(|(c, w)| {
                self.unhold(&c.claim.id);
                w?;
                if accepted.contains(&c.claim.id) {
                    queue::publish(&self.layout, c.claim, c.success)
                } else {
                    let kept =
                        queue::set_aside(&self.layout, &c.claim.dir, &c.claim.id, c.claim.attempt)?;
                    Err(QueueError::Superseded {
                        id: c.claim.id.clone(),
                        attempt: c.claim.attempt,
                        kept,
                    })
                }
            })
            .collect()
    }
}

/// A JSON task's own `correlation_id`, if it has one.
fn correlation_of(payload: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()?
        .get("correlation_id")?
        .as_str()
        .map(str::to_string)
}

fn backend(err: DbError) -> QueueError {
    if err.is_transient() {
        QueueError::Unavailable {
            reason: err.to_string(),
        }
    } else {
        QueueError::Backend {
            reason: err.to_string(),
        }
    }
}

impl TaskQueue for PgQueue {
    fn role(&self) -> &str {
        &self.layout.role
    }

    fn pulls(&self) -> bool {
        true
    }

    fn run_here(&self, runs: bool) {
        self.runs.store(runs, std::sync::atomic::Ordering::Relaxed);
    }

    fn enqueue(
        &self,
        id: Option<&str>,
        content: &[u8],
        correlation_id: Option<&str>,
        source: &str,
    ) -> Result<Enqueued, QueueError> {
        self.enqueue_to(&self.layout, id, content, correlation_id, source)
    }

    fn claim(
        &self,
        candidate: &str,
        owner: &Owner,
        settle: Duration,
        max_bytes: u64,
    ) -> Result<ClaimResult, QueueError> {
        if !candidate.is_empty()
            && let ControlFlow::Break(result) = self.ingest(candidate, settle, max_bytes)?
        {
            return Ok(result);
        }
        if !self.runs.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(ClaimResult::Gone);
        }
        // Idle: no news of a queued task since the last empty pull, a moment ago.
        let hinted = self.hinted.swap(false, std::sync::atomic::Ordering::SeqCst);
        let recently_empty = self
            .last_empty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < IDLE_POLL);
        if candidate.is_empty() && !hinted && recently_empty {
            return Ok(ClaimResult::Gone);
        }
        let (role, holder, lease) = (
            self.role_owned(),
            format!("{}:{}", self.machine, owner.pid),
            self.lease,
        );
        let sent = Instant::now();
        let claimed = self
            .link
            .call(move |conn| {
                Box::pin(async move {
                    let db = conn.db().await?;
                    crate::queue::claim(db, &role, &holder, lease).await
                })
            })
            .map_err(backend)?;
        let Some(claimed) = claimed else {
            *self.last_empty.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            return Ok(ClaimResult::Gone);
        };
        *self.last_empty.lock().unwrap_or_else(|e| e.into_inner()) = None;
        match self.materialize(&claimed, owner) {
            Ok(claim) => {
                self.hold(&claim.id, claimed.fence, sent)?;
                Ok(ClaimResult::Claimed(Box::new(claim)))
            }
            Err(err) => {
                // Not runnable here (a disk error): back to the queue at once, uncharged.
                let (role, id, fence) = (self.role_owned(), claimed.id.clone(), claimed.fence);
                let _ = self.link.call(move |conn| {
                    Box::pin(async move {
                        let db = conn.db().await?;
                        crate::queue::release(db, &role, &id, fence).await
                    })
                });
                Err(err)
            }
        }
    }

    fn heartbeat(&self, claim: &mut Claim) -> LeaseCheck {
        claim.heartbeat();
        let state = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&claim.id)
            .cloned();
        let Some(state) = state else {
            return LeaseCheck::Held;
        };
        if state.lost() {
            return LeaseCheck::Lost(format!(
                "the queue at {} no longer has attempt {} of `{}` as running (its lease ran out \
                 and it was requeued)",
                self.link.target, claim.attempt, claim.id
            ));
        }
        // Half the lease unrenewed: stop now, well before it runs out and another machine
        // may take the task.
        let unrenewed = state.renewed().elapsed();
        if unrenewed >= self.lease / 2 {
            return LeaseCheck::Lost(format!(
                "the lease of `{}` could not be renewed for {:.1} s (of {:.0} s) at {}",
                claim.id,
                unrenewed.as_secs_f64(),
                self.lease.as_secs_f64(),
                self.link.target
            ));
        }
        LeaseCheck::Held
    }

    fn complete(
        &self,
        claim: &Claim,
        success: bool,
        status: &TaskStatus,
    ) -> Result<PathBuf, QueueError> {
        let done = [Completion {
            claim,
            success,
            status,
        }];
        self.complete_all(&done).pop().unwrap_or_else(|| {
            Err(QueueError::Backend {
                reason: "no completion result".into(),
            })
        })
    }

    fn complete_all(&self, done: &[Completion<'_>]) -> Vec<Result<PathBuf, QueueError>> {
        // An attempt that ended while its lease was unrenewed for half its length may have been
        // stopped by its guard rather than by its own workflow: its result is not recorded.
        let stale: Vec<bool> = done
            .iter()
            .map(|c| self.stale(&c.claim.id) || c.claim.dir.join(queue::GUARD_STOPPED).exists())
            .collect();
        let fresh: Vec<Completion<'_>> = done
            .iter()
            .zip(&stale)
            .filter(|(_, stale)| !**stale)
            .map(|(c, _)| *c)
            .collect();
        let mut recorded = self.record(&fresh).into_iter();
        done.iter()
            .zip(stale)
            .map(|(c, stale)| {
                if stale {
                    self.unhold(&c.claim.id);
                    let kept =
                        queue::set_aside(&self.layout, &c.claim.dir, &c.claim.id, c.claim.attempt)?;
                    Err(QueueError::Superseded {
                        id: c.claim.id.clone(),
                        attempt: c.claim.attempt,
                        kept,
                    })
                } else {
                    recorded.next().unwrap_or_else(|| {
                        Err(QueueError::Backend {
                            reason: "no completion result".into(),
                        })
                    })
                }
            })
            .collect()
    }

    fn release(&self, claim: Claim, _reason: &str) -> Result<&'static str, QueueError> {
        match self.let_go(claim, false)? {
            Ok(true) => Ok("requeued"),
            // Unreachable, or already requeued: its lease runs out and the task is requeued.
            Ok(false) | Err(_) => Ok("left to its lease"),
        }
    }

    fn give_up(&self, claim: Claim, _reason: &str) -> Result<&'static str, QueueError> {
        // Its lease ends now rather than when it runs out: requeued, charged, by the next rescue.
        let _ = self.let_go(claim, true)?;
        Ok("given up")
    }

    fn recover(
        &self,
        max_attempts: u32,
        _hung_after: Option<Duration>,
    ) -> Result<Vec<Recovered>, QueueError> {
        let mut out = self.recover_local();
        // Expired leases are looked for a few times per lease (at most every 10 s).
        let every = (self.lease / 4).clamp(Duration::from_secs(1), RESCUE_EVERY);
        if Self::due(&self.last_rescue, every) {
            let role = self.role_owned();
            let max = i32::try_from(max_attempts).unwrap_or(i32::MAX);
            let expired = self
                .link
                .call(move |conn| {
                    Box::pin(async move {
                        let db = conn.db().await?;
                        crate::queue::requeue_expired(db, &role, max).await
                    })
                })
                .map_err(backend)?;
            if !expired.is_empty() {
                // Queued again without a notification: the next pull asks.
                self.hinted.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            out.extend(expired.into_iter().map(|e| Recovered {
                id: e.id,
                attempt: u32::try_from(e.attempt).unwrap_or(0),
                action: if e.state == "failed" {
                    "failed".into()
                } else {
                    "requeued".into()
                },
                reason: format!(
                    "its lease ran out (attempt {}): its holder died, hung or lost the database",
                    e.attempt
                ),
            }));
        }
        if Self::due(&self.last_archive, ARCHIVE_EVERY) {
            let _ = self.link.call(move |conn| {
                Box::pin(async move {
                    let db = conn.db().await?;
                    crate::queue::archive_finished(db, ARCHIVE_AFTER, ARCHIVE_BATCH).await
                })
            });
        }
        Ok(out)
    }
}
