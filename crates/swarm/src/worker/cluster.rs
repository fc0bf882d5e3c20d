//! The role process on a queue shared by several machines (PostgreSQL): which database, which
//! machine this is, and the link's news said in the role's log.
//!
//! Owns: the queue's URL (`ORCHESTRATE_QUEUE_URL`, else `queue:` in swarm.yaml), this machine's
//! name (`ORCHESTRATE_MACHINE`, else the host name), the schema check at start (an unmigrated
//! database is an error that says to run `orchestrate db migrate`; an unreachable one is said
//! and waited for), and opening the `PgQueue`. Does not implement the queue (`orchestrate-pg`).

use std::sync::Arc;
use std::time::Duration;

use orchestrate_queue::queue::Layout;

use super::log::{Log, say};

/// The database the swarm's queue lives in, if any: `ORCHESTRATE_QUEUE_URL`, else `queue:` of
/// swarm.yaml.
pub(super) fn queue_url(swarm: &orchestrate_lang::model::SwarmConfig) -> Option<String> {
    std::env::var("ORCHESTRATE_QUEUE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .or_else(|| swarm.queue_url.clone())
}

/// This machine's name in leases and records: `ORCHESTRATE_MACHINE`, else the host name.
pub(super) fn machine_name() -> String {
    std::env::var("ORCHESTRATE_MACHINE")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into())
}

/// This machine's labels, which roles' `machines:` ask for: `ORCHESTRATE_MACHINE_LABELS`
/// (comma- or space-separated; `swarm up --labels` sets it), else `machine_labels:` of
/// swarm.yaml.
pub(super) fn machine_labels(swarm: &orchestrate_lang::model::SwarmConfig) -> Vec<String> {
    match std::env::var("ORCHESTRATE_MACHINE_LABELS") {
        Ok(labels) => labels
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|label| !label.is_empty())
            .map(String::from)
            .collect(),
        Err(_) => swarm.machine_labels.clone(),
    }
}

/// The labels of `wanted` (a role's `machines:`) that `labels` (this machine's) lack.
pub(super) fn missing_labels<'a>(wanted: &'a [String], labels: &[String]) -> Vec<&'a str> {
    wanted
        .iter()
        .filter(|label| !labels.contains(label))
        .map(String::as_str)
        .collect()
}

/// Says once, at start or when the role's `machines:` changed, whether this process runs the
/// role's tasks: its role may ask for labels this machine lacks.
pub(super) fn say_placement(
    log: &Log,
    role: &orchestrate_lang::model::Role,
    labels: &[String],
    pulls: bool,
) {
    let missing = missing_labels(&role.machines, labels);
    if missing.is_empty() {
        return;
    }
    let has = if labels.is_empty() {
        "no labels".to_string()
    } else {
        format!("labels {}", labels.join(", "))
    };
    let then = if pulls {
        "tasks dropped here are taken into the queue and run on a machine that has them"
    } else {
        "its tasks wait in the inbox (without a database queue no other machine takes them)"
    };
    say!(
        always log,
        WARN,
        "not running `{}` tasks here: the role asks for machine label(s) {} (`machines:` in {}), this machine has {has} (`machine_labels:` in swarm.yaml, `swarm up --labels` or ORCHESTRATE_MACHINE_LABELS); {then}",
        role.name,
        missing.join(", "),
        role.path.display(),
    );
}

/// Who a role process is, for the cluster's list of role processes (`swarm status`), and where
/// it mirrors what the cluster says it follows.
pub(super) struct Member {
    /// The workspace on this machine.
    pub(super) workspace: std::path::PathBuf,
    /// Which replica of the role.
    pub(super) replica: u32,
    /// This machine's labels.
    pub(super) labels: Vec<String>,
    /// Whether it runs the role's tasks.
    pub(super) runs: bool,
}

/// Opens the role's queue in the database at `url`; leases last `lease`. `on_queued` is called
/// when a task is queued for the role anywhere (a hint to claim). A role process (`member`)
/// syncs with the cluster, mirroring its pause and cancel requests into this machine's control
/// files (which the role process watches); a command does not.
pub(super) fn open(
    url: &str,
    layout: &Layout,
    lease: Duration,
    log: &Log,
    on_queued: Arc<dyn Fn() + Send + Sync>,
    member: Option<Member>,
) -> Result<orchestrate_pg::PgQueue, String> {
    let events_log = log.clone();
    let guarded = member.is_some();
    let machine = machine_name();
    let runs = Arc::new(std::sync::atomic::AtomicBool::new(
        member.as_ref().is_none_or(|m| m.runs),
    ));
    // News of a queued task (or of the connection made again, after which notifications may
    // have been missed): the next pull asks the database.
    let hinted = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hint = Arc::clone(&hinted);
    let presence = member.as_ref().map(|m| {
        let workspace = m.workspace.clone();
        orchestrate_pg::control::Presence {
            machine: machine.clone(),
            replica: i32::try_from(m.replica).unwrap_or(i32::MAX),
            pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
            labels: m.labels.join(","),
            runs: Arc::clone(&runs),
            workspace: m.workspace.display().to_string(),
            breakers: Arc::new(move || {
                crate::breaker::local_states(&workspace)
                    .into_iter()
                    .map(
                        |(runtime, state, updated_at)| orchestrate_pg::control::Breaker {
                            runtime,
                            state,
                            updated_at,
                        },
                    )
                    .collect()
            }),
        }
    });
    let mirror = member.map(|m| (m.workspace, layout.clone()));
    // A guard outside this process stops our steps should we be unable to (stopped, frozen).
    let guard = if guarded {
        match crate::guard::Guard::start(&layout.running) {
            Ok(guard) => Some(guard),
            Err(err) => {
                say!(
                    always log,
                    WARN,
                    "cannot start the lease guard ({err}): should this process be stopped, its steps run on past their leases"
                );
                None
            }
        }
    } else {
        None
    };
    let events = Arc::new(move |event: orchestrate_pg::LinkEvent| match event {
        orchestrate_pg::LinkEvent::Queued => {
            hint.store(true, std::sync::atomic::Ordering::SeqCst);
            on_queued();
        }
        orchestrate_pg::LinkEvent::Lost(reason) => say!(
            always & events_log,
            WARN,
            "lost the queue database ({reason}); reconnecting with backoff, tasks dropped here wait in the inbox"
        ),
        orchestrate_pg::LinkEvent::Back(after) => {
            hint.store(true, std::sync::atomic::Ordering::SeqCst);
            say!(
                always & events_log,
                INFO,
                "the queue database is back after {:.1} s",
                after.as_secs_f64()
            );
        }
        orchestrate_pg::LinkEvent::Deadlines(claims) => {
            if let Some(guard) = &guard {
                guard.deadlines(&claims);
            }
        }
        orchestrate_pg::LinkEvent::Synced(synced) => {
            if let Some((workspace, layout)) = &mirror {
                mirror_cluster(workspace, layout, &synced, &events_log);
            }
        }
    });
    // Renewed four times per lease: a holder stops its attempt once half of it passed unrenewed.
    let link = orchestrate_pg::Link::start(url, &layout.role, lease, lease / 4, events, presence)
        .map_err(|e| format!("cannot start the queue database's thread: {e}"))?;
    let checked = link.call(|conn| {
        Box::pin(async move {
            let db = conn.db().await?;
            orchestrate_pg::schema_version(db).await
        })
    });
    match checked {
        Ok(Some(version)) if version == orchestrate_pg::LATEST => {}
        Ok(found) if found.unwrap_or(0) < orchestrate_pg::LATEST => {
            return Err(orchestrate_pg::DbError::NotMigrated {
                target: link.target.clone(),
                found: found.unwrap_or(0),
                needed: orchestrate_pg::LATEST,
            }
            .to_string());
        }
        Ok(found) => {
            return Err(orchestrate_pg::DbError::TooNew {
                target: link.target.clone(),
                found: found.unwrap_or(0),
                known: orchestrate_pg::LATEST,
            }
            .to_string());
        }
        Err(err @ orchestrate_pg::DbError::Unreachable { .. }) => say!(
            always log,
            WARN,
            "{err}; starting all the same: tasks dropped here wait in the inbox until it is back"
        ),
        Err(err) => return Err(err.to_string()),
    }
    say!(
        log,
        INFO,
        "queue: {} (machine `{machine}`, leases of {:.0} s)",
        link.target,
        lease.as_secs_f64()
    );
    Ok(orchestrate_pg::PgQueue::new(
        layout.clone(),
        link,
        &machine,
        lease,
        runs,
        hinted,
    ))
}

/// The queue of `layout.role` in the workspace's database, for a command that is not a role
/// process (`orchestrate enqueue`): `None` when the swarm has no database, or when swarm.yaml
/// cannot be read (then the inbox is the safe place: a role process takes the task in from there
/// once the file is fixed). Says nothing unless something fails.
pub fn open_queue(
    workspace: &std::path::Path,
    layout: &Layout,
) -> Result<Option<orchestrate_pg::PgQueue>, String> {
    let swarm = orchestrate_lang::load::load_swarm(workspace).unwrap_or_default();
    let Some(url) = queue_url(&swarm) else {
        return Ok(None);
    };
    let log = Log {
        role: layout.role.clone(),
        replica: 0,
        quiet: true,
    };
    // The lease does not matter to a command that claims nothing.
    open(
        &url,
        layout,
        Duration::from_secs(60),
        &log,
        Arc::new(|| {}),
        None,
    )
    .map(Some)
}

/// Mirrors what the cluster says the role follows into this machine's control files and
/// ledger: the role's pause (`.orchestrate/control/ROLE/paused.json`, made or removed), the
/// cancel requests of the tasks this machine runs, and what the other machines spent today.
/// The role process's watch on its control directory sees what changed.
fn mirror_cluster(
    workspace: &std::path::Path,
    layout: &Layout,
    synced: &orchestrate_pg::control::Synced,
    log: &Log,
) {
    crate::control::mirror_pause(
        workspace,
        &layout.role,
        synced.paused.as_ref().map(|asked| crate::control::Pause {
            role: layout.role.clone(),
            since: asked.since.clone(),
            by: asked.by.clone(),
        }),
    );
    for (id, asked) in &synced.cancels {
        if layout.running.join(id).is_dir() {
            crate::control::mirror_task_cancel(
                workspace,
                &layout.role,
                id,
                &asked.by,
                &asked.since,
            );
        }
    }
    for breaker in &synced.breakers {
        crate::breaker::adopt(workspace, &breaker.runtime, &breaker.state);
    }
    if let Err(err) = orchestrate_engine::budget::note_elsewhere(
        workspace,
        u64::try_from(synced.tokens_elsewhere).unwrap_or(0),
        synced.cost_elsewhere,
    ) {
        say!(
            log,
            WARN,
            "{err}: the daily budget counts only this machine's spending until it is written"
        );
    }
}
