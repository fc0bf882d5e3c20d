//! A role process's link to the queue's database: one connection on a thread of its own, made
//! again with backoff when it is lost, and the leases of the claims it holds, renewed there.
//!
//! Owns: the connection's thread and its async runtime (the role process's callers are
//! synchronous: the loop's claims, the completer thread), answering each call or saying the
//! database is unreachable (at once while a reconnection waits for its backoff; after
//! [`CALL_TIMEOUT`] when the server does not answer), `LISTEN` for queued tasks, and the lease
//! keeper: every held claim's lease renewed in one statement, with what each holder needs to
//! know to stop in time ([`LeaseState`]). Does not decide what the calls do (`queue`) or what a
//! holder does when its lease is lost (the worker).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connect::{Db, DbError, Target};

/// A call the database does not answer within this is given up, and the connection made again.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The first wait before connecting again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a holder of a claim knows of its lease: when it was last renewed (measured before the
/// renewal was sent, so never later than the server's idea of it) and whether it was lost.
#[derive(Debug)]
pub struct LeaseState {
    renewed: Mutex<Instant>,
    lost: AtomicBool,
}

impl LeaseState {
    fn new(at: Instant) -> LeaseState {
        LeaseState {
            renewed: Mutex::new(at),
            lost: AtomicBool::new(false),
        }
    }

    /// When the lease was last renewed (or taken).
    pub fn renewed(&self) -> Instant {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the database said the claim is no longer held.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// What the link tells the role process about.
#[derive(Debug, Clone)]
pub enum LinkEvent {
    /// A task was queued for the role (a `NOTIFY`): a hint to claim.
    Queued,
    /// The connection was lost; it is being made again with backoff.
    Lost(String),
    /// Connected again, after being unreachable for this long.
    Back(Duration),
    /// For claims by id: the time by which its processes must be gone unless its lease is
    /// renewed again (when it was last renewed plus three quarters of a lease), or `None` once
    /// it is no longer held. What a guard outside the process enforces.
    Deadlines(Vec<(String, Option<Instant>)>),
    /// What the cluster says the role's processes follow (every [`SYNC_EVERY`], and at once
    /// when `pause`, `resume` or `cancel` notify).
    Synced(crate::control::Synced),
}

/// How often a role process says it is alive and reads its role's pause and cancel requests.
pub const SYNC_EVERY: Duration = Duration::from_secs(5);

/// What the thread works with: the connection (when there is one) and the claims held.
pub struct Conn {
    url: String,
    /// The server, for messages.
    pub target: Target,
    db: Option<Db>,
    next_try: Instant,
    backoff: Duration,
    down_since: Option<Instant>,
    last_error: String,
    notes: tokio::sync::mpsc::UnboundedSender<String>,
    events: Arc<dyn Fn(LinkEvent) + Send + Sync>,
    held: HashMap<String, (i64, Arc<LeaseState>)>,
    lease: Duration,
}

impl Conn {
    /// Tells of the deadlines of claims `ids` (renewed at `at`; `None`: no longer held).
    fn deadlines(&self, ids: Vec<(String, Option<Instant>)>) {
        if ids.is_empty() {
            return;
        }
        let lease = self.lease;
        (self.events)(LinkEvent::Deadlines(
            ids.into_iter()
                .map(|(id, at)| (id, at.map(|at| at + lease * 3 / 4)))
                .collect(),
        ));
    }

    /// The connection, made (again) if it is missing or closed and its backoff is over.
    pub async fn db(&mut self) -> Result<&mut Db, DbError> {
        if self.db.as_ref().is_some_and(|db| db.client.is_closed()) {
            self.lost("the connection closed".into());
        }
        if self.db.is_none() {
            if Instant::now() < self.next_try {
                return Err(self.unreachable());
            }
            let connecting = Db::connect_with(&self.url, Some(self.notes.clone()));
            let made = match tokio::time::timeout(CALL_TIMEOUT, connecting).await {
                Ok(Ok(db)) => {
                    let listen = format!(
                        "LISTEN {}; LISTEN {}",
                        crate::queue::QUEUED_CHANNEL,
                        crate::control::CONTROL_CHANNEL
                    );
                    match db.client.batch_execute(&listen).await {
                        Ok(()) => Ok(db),
                        Err(err) => Err(db.failed("listen for queued tasks")(err).to_string()),
                    }
                }
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
            };
            match made {
                Ok(db) => {
                    if let Some(since) = self.down_since.take() {
                        (self.events)(LinkEvent::Back(since.elapsed()));
                    }
                    self.backoff = FIRST_BACKOFF;
                    self.db = Some(db);
                }
                Err(reason) => {
                    self.lost(reason);
                    return Err(self.unreachable());
                }
            }
        }
        Ok(self.db.as_mut().expect("made above"))
    }

    /// Drops the connection after `reason`; the next call waits out the backoff first.
    fn lost(&mut self, reason: String) {
        self.db = None;
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            (self.events)(LinkEvent::Lost(reason.clone()));
        }
        self.last_error = reason;
        self.next_try = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn unreachable(&self) -> DbError {
        DbError::Unreachable {
            target: self.target.clone(),
            reason: format!(
                "{}; trying again in {:.1} s",
                self.last_error,
                self.next_try
                    .saturating_duration_since(Instant::now())
                    .as_secs_f64()
            ),
        }
    }

    /// Keeps the lease of claim `id` (fence `fence`), taken at `at`, renewed from now on.
    pub fn hold(&mut self, id: &str, fence: i64, at: Instant) -> Arc<LeaseState> {
        let state = Arc::new(LeaseState::new(at));
        self.held
            .insert(id.to_string(), (fence, Arc::clone(&state)));
        self.deadlines(vec![(id.to_string(), Some(at))]);
        state
    }

    /// Stops renewing the lease of claim `id`.
    pub fn unhold(&mut self, id: &str) {
        if self.held.remove(id).is_some() {
            self.deadlines(vec![(id.to_string(), None)]);
        }
    }
}

type Job = Box<dyn for<'a> FnOnce(&'a mut Conn) -> Pin<Box<dyn Future<Output = ()> + 'a>> + Send>;

/// The link: calls go to the connection's thread and wait for its answer.
pub struct Link {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    /// The server, for messages.
    pub target: Target,
}

impl Link {
    /// Starts the thread for `role`'s queue at `url`, renewing held leases by `lease` every
    /// `renew_every`; it connects on the first call. `events` hears of queued tasks and of the
    /// connection lost and made again. With `presence` (a role process, not a command), it
    /// also syncs with the cluster every [`SYNC_EVERY`] ([`LinkEvent::Synced`]).
    pub fn start(
        url: &str,
        role: &str,
        lease: Duration,
        renew_every: Duration,
        events: Arc<dyn Fn(LinkEvent) + Send + Sync>,
        presence: Option<crate::control::Presence>,
    ) -> std::io::Result<Link> {
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let target = Target::of_url(url);
        let (notes, mut notes_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut conn = Conn {
            url: url.to_string(),
            target: target.clone(),
            db: None,
            next_try: Instant::now(),
            backoff: FIRST_BACKOFF,
            down_since: None,
            last_error: String::new(),
            notes,
            events: Arc::clone(&events),
            held: HashMap::new(),
            lease,
        };
        let role = role.to_string();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("queue-db".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut renew = tokio::time::interval(renew_every);
                    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut sync = tokio::time::interval(SYNC_EVERY);
                    sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            job = rx.recv() => {
                                let Some(job) = job else {
                                    if let Some(presence) = &presence {
                                        let _ = tokio::time::timeout(CALL_TIMEOUT, say_gone(&mut conn, &role, presence)).await;
                                    }
                                    return;
                                };
                                if tokio::time::timeout(CALL_TIMEOUT, job(&mut conn)).await.is_err() {
                                    conn.lost(format!("no answer within {CALL_TIMEOUT:?}"));
                                }
                            }
                            _ = renew.tick() => {
                                if !conn.held.is_empty()
                                    && tokio::time::timeout(CALL_TIMEOUT, renew_held(&mut conn, &role, lease)).await.is_err()
                                {
                                    conn.lost(format!("no answer within {CALL_TIMEOUT:?}"));
                                }
                            }
                            _ = sync.tick(), if presence.is_some() => {
                                if let Some(presence) = &presence
                                    && tokio::time::timeout(CALL_TIMEOUT, sync_now(&mut conn, &role, presence)).await.is_err()
                                {
                                    conn.lost(format!("no answer within {CALL_TIMEOUT:?}"));
                                }
                            }
                            Some(note) = notes_rx.recv() => {
                                if note == format!("{}:{role}", crate::queue::QUEUED_CHANNEL) {
                                    events(LinkEvent::Queued);
                                } else if note == format!("{}:{role}", crate::control::CONTROL_CHANNEL)
                                    && let Some(presence) = &presence
                                    && tokio::time::timeout(CALL_TIMEOUT, sync_now(&mut conn, &role, presence)).await.is_err()
                                {
                                    conn.lost(format!("no answer within {CALL_TIMEOUT:?}"));
                                }
                            }
                        }
                    }
                });
            })?;
        Ok(Link { jobs, target })
    }

    /// Runs `call` on the connection's thread and waits for its answer.
    pub fn call<T: Send + 'static>(
        &self,
        call: impl for<'a> FnOnce(
            &'a mut Conn,
        ) -> Pin<Box<dyn Future<Output = Result<T, DbError>> + 'a>>
        + Send
        + 'static,
    ) -> Result<T, DbError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let _ = tx.send(call(conn).await);
            })
        });
        let gone = || DbError::Unreachable {
            target: self.target.clone(),
            reason: format!("no answer within {CALL_TIMEOUT:?}"),
        };
        self.jobs.send(job).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

/// Says this role process is alive and tells the role process what the cluster says it follows.
async fn sync_now(conn: &mut Conn, role: &str, presence: &crate::control::Presence) {
    let holding = i32::try_from(conn.held.len()).unwrap_or(i32::MAX);
    let Ok(db) = conn.db().await else {
        return;
    };
    match crate::control::sync(db, role, presence, holding).await {
        Ok(synced) => (conn.events)(LinkEvent::Synced(synced)),
        Err(err) => conn.lost(err.to_string()),
    }
}

/// Takes this role process off the cluster's list as it stops.
async fn say_gone(conn: &mut Conn, role: &str, presence: &crate::control::Presence) {
    if let Ok(db) = conn.db().await {
        let _ =
            crate::control::gone(db, &presence.machine, role, presence.replica, presence.pid).await;
    }
}

/// Renews every held lease in one statement; a lease the database no longer has is marked
/// lost. A failure leaves the states as they were: their holders see them age.
async fn renew_held(conn: &mut Conn, role: &str, lease: Duration) {
    let sent = Instant::now();
    // A lease past its guard's deadline is not renewed again: its steps were stopped (or are
    // being stopped), and a result it still brings must not be recorded.
    for (_, state) in conn.held.values() {
        if state.renewed() + lease * 3 / 4 <= sent {
            state.lost.store(true, Ordering::SeqCst);
        }
    }
    let held: Vec<(String, i64)> = conn
        .held
        .iter()
        .filter(|(_, (_, state))| !state.lost())
        .map(|(id, (fence, _))| (id.clone(), *fence))
        .collect();
    if held.is_empty() {
        return;
    }
    let Ok(db) = conn.db().await else {
        return;
    };
    match crate::queue::renew(db, role, &held, lease).await {
        Ok(kept) => {
            let kept: std::collections::HashSet<String> = kept.into_iter().collect();
            let mut renewed = Vec::new();
            for (id, (_, state)) in &conn.held {
                if state.lost() {
                    continue;
                }
                if kept.contains(id) && Instant::now() < state.renewed() + lease * 3 / 4 {
                    *state.renewed.lock().unwrap_or_else(|e| e.into_inner()) = sent;
                    renewed.push((id.clone(), Some(sent)));
                } else {
                    // Requeued by now, or renewed too late: its guard's deadline passed first.
                    // Its guard's deadline stands: should its steps still run then, they stop.
                    state.lost.store(true, Ordering::SeqCst);
                }
            }
            conn.deadlines(renewed);
        }
        Err(err) => conn.lost(err.to_string()),
    }
}
