//! Steering and seeing the whole cluster: pauses and cancel requests that every machine's role
//! processes follow, the role processes' presence, the spending of every machine, and the task
//! rows as the CLI lists and shows them.
//!
//! Owns the statements on `orchestrate_controls`, `orchestrate_workers` and
//! `orchestrate_spending`, the `orchestrate_control` notification that makes role processes
//! look at once, and the one statement a role process runs every few seconds ([`sync`]): its
//! presence said, its role's pause and cancel requests read, queued tasks with a cancel request
//! failed, and what the other machines spent today. Does not act on them (the swarm mirrors
//! them into its control files and ledger) or claim (`queue`).

use serde::{Deserialize, Serialize};

use crate::connect::{Db, DbError};

/// The channel `pause`, `resume` and `cancel` notify, with the role as payload.
pub const CONTROL_CHANNEL: &str = "orchestrate_control";

/// A role's pause or a task's cancel request: who asked, and when (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asked {
    /// Who asked (`$USER` and the machine).
    pub by: String,
    /// When.
    pub since: String,
}

/// A circuit breaker's state as a machine holds it: its state file's text, and when that
/// machine last changed it (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    /// The runtime (or profile) it is for.
    pub runtime: String,
    /// The state file's JSON.
    pub state: String,
    /// When it last changed.
    pub updated_at: String,
}

/// This machine's breakers, read when the role process syncs.
pub type LocalBreakers = std::sync::Arc<dyn Fn() -> Vec<Breaker> + Send + Sync>;

/// What a role process's machine is and does, said every few seconds.
#[derive(Clone)]
pub struct Presence {
    /// This machine's name.
    pub machine: String,
    /// Which replica of the role.
    pub replica: i32,
    /// The role process's pid.
    pub pid: i32,
    /// This machine's labels, comma-separated.
    pub labels: String,
    /// Whether it runs the role's tasks or only takes dropped files in (a reload that changes
    /// the role's `machines:` changes it).
    pub runs: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Its workspace on its machine.
    pub workspace: String,
    /// Its machine's breakers, offered to the others at each sync.
    pub breakers: LocalBreakers,
}

/// What [`sync`] learns for a role process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Synced {
    /// The role's pause, if it is paused.
    pub paused: Option<Asked>,
    /// Cancel requests for the role's running tasks, by task id.
    pub cancels: Vec<(String, Asked)>,
    /// Tokens the other machines' attempts spent today (UTC).
    pub tokens_elsewhere: i64,
    /// US dollars they spent today.
    pub cost_elsewhere: f64,
    /// The breakers as other machines last changed them.
    pub breakers: Vec<Breaker>,
}

const AT: &str = "to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";

/// Says `presence` for `role` and reads what the role's processes follow, in one statement: its
/// pause, the cancel requests of its running tasks (queued tasks with one are failed here,
/// cancelled; requests whose task ended are removed), the other machines' spending today, and
/// the breakers (this machine's offered, kept where newer; the others' read).
pub async fn sync(
    db: &Db,
    role: &str,
    presence: &Presence,
    holding: i32,
) -> Result<Synced, DbError> {
    let local = (presence.breakers)();
    let runs = presence.runs.load(std::sync::atomic::Ordering::Relaxed);
    let names: Vec<&str> = local.iter().map(|b| b.runtime.as_str()).collect();
    let states: Vec<&str> = local.iter().map(|b| b.state.as_str()).collect();
    let times: Vec<&str> = local.iter().map(|b| b.updated_at.as_str()).collect();
    let sql = &format!(
                "WITH seen AS (
                    INSERT INTO orchestrate_workers
                           (machine, role, replica, pid, labels, runs, workspace, holding)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                    ON CONFLICT (machine, role, replica) DO UPDATE
                       SET started_at = CASE WHEN orchestrate_workers.pid = EXCLUDED.pid
                                             THEN orchestrate_workers.started_at ELSE now() END,
                           pid = EXCLUDED.pid, labels = EXCLUDED.labels, runs = EXCLUDED.runs,
                           workspace = EXCLUDED.workspace, holding = EXCLUDED.holding,
                           seen_at = now()
                    RETURNING 1),
                 asked AS (
                    SELECT id, by_whom, {AT} AS at FROM orchestrate_controls
                     WHERE kind = 'cancel' AND role = $2),
                 cancelled AS (
                    UPDATE orchestrate_tasks t
                       SET state = 'failed', finished_at = now(),
                           status = jsonb_build_object(
                               'task', t.id, 'role', t.role, 'success', false, 'exit_code', 130,
                               'message', 'cancelled by ' || a.by_whom || ' at ' || a.at
                                          || ' before it ran; not retried')
                      FROM asked a
                     WHERE t.role = $2 AND t.id = a.id AND t.state = 'queued'
                 RETURNING t.id),
                 offered AS (
                    INSERT INTO orchestrate_breakers (runtime, state, machine, updated_at)
                    SELECT n, s, $1, u FROM unnest($9::text[], $10::text[], $11::text[]) AS b(n, s, u)
                    ON CONFLICT (runtime) DO UPDATE
                       SET state = EXCLUDED.state, machine = EXCLUDED.machine,
                           updated_at = EXCLUDED.updated_at
                     WHERE orchestrate_breakers.updated_at < EXCLUDED.updated_at
                 RETURNING 1),
                 done AS (
                    DELETE FROM orchestrate_controls c
                     WHERE c.kind = 'cancel' AND c.role = $2
                       AND NOT EXISTS (SELECT 1 FROM orchestrate_tasks t
                                        WHERE t.role = c.role AND t.id = c.id
                                          AND t.state IN ('queued', 'running'))
                 RETURNING c.id)
                 SELECT (SELECT by_whom FROM orchestrate_controls
                          WHERE kind = 'pause' AND role = $2 AND id = ''),
                        (SELECT {AT} FROM orchestrate_controls
                          WHERE kind = 'pause' AND role = $2 AND id = ''),
                        (SELECT coalesce(array_agg(a.id), '{{}}') FROM asked a
                          WHERE a.id NOT IN (SELECT id FROM cancelled)),
                        (SELECT coalesce(array_agg(a.by_whom), '{{}}') FROM asked a
                          WHERE a.id NOT IN (SELECT id FROM cancelled)),
                        (SELECT coalesce(array_agg(a.at), '{{}}') FROM asked a
                          WHERE a.id NOT IN (SELECT id FROM cancelled)),
                        (SELECT coalesce(sum(tokens), 0)::bigint FROM orchestrate_spending
                          WHERE day = (now() AT TIME ZONE 'UTC')::date AND machine <> $1),
                        (SELECT coalesce(sum(cost_usd), 0)::float8 FROM orchestrate_spending
                          WHERE day = (now() AT TIME ZONE 'UTC')::date AND machine <> $1),
                        (SELECT count(*) FROM seen) + (SELECT count(*) FROM done)
                          + (SELECT count(*) FROM offered),
                        (SELECT coalesce(array_agg(runtime ORDER BY runtime), '{{}}') FROM orchestrate_breakers
                          WHERE machine <> $1),
                        (SELECT coalesce(array_agg(state ORDER BY runtime), '{{}}') FROM orchestrate_breakers
                          WHERE machine <> $1),
                        (SELECT coalesce(array_agg(updated_at ORDER BY runtime), '{{}}') FROM orchestrate_breakers
                          WHERE machine <> $1)"
            );
    let statement = db
        .prepared(sql)
        .await
        .map_err(db.failed("sync with the cluster"))?;
    let row = db
        .client
        .query_one(
            &statement,
            &[
                &presence.machine,
                &role,
                &presence.replica,
                &presence.pid,
                &presence.labels,
                &runs,
                &presence.workspace,
                &holding,
                &names,
                &states,
                &times,
            ],
        )
        .await
        .map_err(db.failed("sync with the cluster"))?;
    let paused = match (
        row.get::<_, Option<String>>(0),
        row.get::<_, Option<String>>(1),
    ) {
        (Some(by), Some(since)) => Some(Asked { by, since }),
        _ => None,
    };
    let ids: Vec<String> = row.get(2);
    let bys: Vec<String> = row.get(3);
    let ats: Vec<String> = row.get(4);
    let cancels = ids
        .into_iter()
        .zip(bys.into_iter().zip(ats))
        .map(|(id, (by, since))| (id, Asked { by, since }))
        .collect();
    let runtimes: Vec<String> = row.get(8);
    let states: Vec<String> = row.get(9);
    let times: Vec<String> = row.get(10);
    let breakers = runtimes
        .into_iter()
        .zip(states.into_iter().zip(times))
        .map(|(runtime, (state, updated_at))| Breaker {
            runtime,
            state,
            updated_at,
        })
        .collect();
    Ok(Synced {
        paused,
        cancels,
        tokens_elsewhere: row.get(5),
        cost_elsewhere: row.get(6),
        breakers,
    })
}

/// A role process that stopped: no longer listed.
pub async fn gone(
    db: &Db,
    machine: &str,
    role: &str,
    replica: i32,
    pid: i32,
) -> Result<(), DbError> {
    db.client
        .execute(
            "DELETE FROM orchestrate_workers
              WHERE machine = $1 AND role = $2 AND replica = $3 AND pid = $4",
            &[&machine, &role, &replica, &pid],
        )
        .await
        .map_err(db.failed("say a role process stopped"))?;
    Ok(())
}

/// Pauses `role` on every machine; the pause in force and whether it was there already.
pub async fn pause(db: &mut Db, role: &str, by: &str) -> Result<(Asked, bool), DbError> {
    let failed = db.failed("pause a role");
    let tx = db.client.transaction().await.map_err(&failed)?;
    let added = tx
        .execute(
            "INSERT INTO orchestrate_controls (kind, role, id, by_whom) VALUES ('pause', $1, '', $2)
             ON CONFLICT DO NOTHING",
            &[&role, &by],
        )
        .await
        .map_err(&failed)?;
    let row = tx
        .query_one(
            &format!(
                "SELECT by_whom, {AT} FROM orchestrate_controls
                  WHERE kind = 'pause' AND role = $1 AND id = ''"
            ),
            &[&role],
        )
        .await
        .map_err(&failed)?;
    notify(&tx, role).await.map_err(&failed)?;
    tx.commit().await.map_err(&failed)?;
    Ok((
        Asked {
            by: row.get(0),
            since: row.get(1),
        },
        added == 0,
    ))
}

/// Lifts `role`'s pause on every machine; the pause it was, if there was one.
pub async fn resume(db: &mut Db, role: &str) -> Result<Option<Asked>, DbError> {
    let failed = db.failed("resume a role");
    let tx = db.client.transaction().await.map_err(&failed)?;
    let row = tx
        .query_opt(
            &format!(
                "DELETE FROM orchestrate_controls WHERE kind = 'pause' AND role = $1 AND id = ''
                 RETURNING by_whom, {AT}"
            ),
            &[&role],
        )
        .await
        .map_err(&failed)?;
    notify(&tx, role).await.map_err(&failed)?;
    tx.commit().await.map_err(&failed)?;
    Ok(row.map(|r| Asked {
        by: r.get(0),
        since: r.get(1),
    }))
}

/// What became of a cancel request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// The task was queued: it is failed now, cancelled, and never runs.
    WasQueued,
    /// The task runs (held by `holder`, `machine:pid`): its role process is asked to stop it.
    Asked {
        /// Who holds it.
        holder: Option<String>,
    },
    /// The task already ended (`processed` or `failed`).
    Ended(String),
    /// No task of that id.
    NotFound,
}

/// Cancels task `id` of `role` wherever it is: a queued row is failed at once, a running one's
/// holder is asked (through [`sync`]) to stop it.
pub async fn cancel(db: &mut Db, role: &str, id: &str, by: &str) -> Result<Cancel, DbError> {
    let failed = db.failed("cancel a task");
    let tx = db.client.transaction().await.map_err(&failed)?;
    let row = tx
        .query_opt(
            "SELECT state, lease_owner FROM orchestrate_tasks WHERE role = $1 AND id = $2
                FOR UPDATE",
            &[&role, &id],
        )
        .await
        .map_err(&failed)?;
    let Some(row) = row else {
        return Ok(Cancel::NotFound);
    };
    let state: String = row.get(0);
    let answer = match state.as_str() {
        "queued" => {
            tx.execute(
                "UPDATE orchestrate_tasks
                    SET state = 'failed', finished_at = now(),
                        status = jsonb_build_object(
                            'task', id, 'role', role, 'success', false, 'exit_code', 130,
                            'message', 'cancelled by ' || $3 || ' before it ran; not retried')
                  WHERE role = $1 AND id = $2",
                &[&role, &id, &by],
            )
            .await
            .map_err(&failed)?;
            Cancel::WasQueued
        }
        "running" => {
            tx.execute(
                "INSERT INTO orchestrate_controls (kind, role, id, by_whom) VALUES ('cancel', $1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&role, &id, &by],
            )
            .await
            .map_err(&failed)?;
            notify(&tx, role).await.map_err(&failed)?;
            Cancel::Asked { holder: row.get(1) }
        }
        _ => Cancel::Ended(state),
    };
    tx.commit().await.map_err(&failed)?;
    Ok(answer)
}

/// What became of a retry asked of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Queued again (role), attempts from zero; its failed row went into the history.
    Queued(String),
    /// Its latest row is not failed (its state).
    NotFailed(String),
    /// No task of that id.
    NotFound,
}

/// Queues failed task `id` again from its row (its payload and correlation id), whichever
/// machine ran it: a fresh row with attempts from zero, the failed one kept in the history.
pub async fn retry(db: &mut Db, id: &str, source: &str) -> Result<Retry, DbError> {
    let row = db
        .client
        .query_opt(
            "SELECT role, state, payload, correlation_id FROM orchestrate_tasks WHERE id = $1
             ORDER BY (state = 'failed') DESC, enqueued_at DESC LIMIT 1",
            &[&id],
        )
        .await
        .map_err(db.failed("find a task to retry"))?;
    let Some(row) = row else {
        return Ok(Retry::NotFound);
    };
    let (role, state): (String, String) = (row.get(0), row.get(1));
    if state != "failed" {
        return Ok(Retry::NotFailed(state));
    }
    let payload: Vec<u8> = row.get(2);
    let correlation: Option<String> = row.get(3);
    match crate::queue::offer(
        db,
        &role,
        id,
        &payload,
        correlation.as_deref(),
        source,
        false,
    )
    .await?
    {
        crate::queue::Added::Queued | crate::queue::Added::Already => Ok(Retry::Queued(role)),
        crate::queue::Added::Taken { state, .. } => Ok(Retry::NotFailed(state)),
    }
}

/// Notes what attempt `run_id` of task `task` spent, for the daily budget of every machine.
#[allow(clippy::too_many_arguments)]
pub async fn spent(
    db: &Db,
    machine: &str,
    role: &str,
    task: &str,
    attempt: i32,
    run_id: &str,
    tokens: i64,
    cost_usd: f64,
) -> Result<(), DbError> {
    db.client
        .execute(
            "INSERT INTO orchestrate_spending
                    (day, machine, run_id, role, task, attempt, tokens, cost_usd)
             VALUES ((now() AT TIME ZONE 'UTC')::date, $1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT DO NOTHING",
            &[
                &machine, &run_id, &role, &task, &attempt, &tokens, &cost_usd,
            ],
        )
        .await
        .map_err(db.failed("note what an attempt spent"))?;
    Ok(())
}

/// A role process as the cluster last heard of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Worker {
    /// Its machine.
    pub machine: String,
    /// Its role.
    pub role: String,
    /// Which replica.
    pub replica: i32,
    /// Its pid on its machine.
    pub pid: i32,
    /// Its machine's labels.
    pub labels: Vec<String>,
    /// Whether it runs the role's tasks (else it only takes dropped files in).
    pub runs: bool,
    /// Its workspace on its machine.
    pub workspace: String,
    /// Claims it held when last heard of.
    pub holding: i32,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Seconds since it was last heard of.
    pub silent_sec: f64,
}

/// Every role process heard of within `within_sec` seconds, by machine, role and replica.
pub async fn workers(db: &Db, within_sec: f64) -> Result<Vec<Worker>, DbError> {
    let rows = db
        .client
        .query(
            "SELECT machine, role, replica, pid, labels, runs, workspace, holding,
                    to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    extract(epoch FROM now() - seen_at)::float8
               FROM orchestrate_workers
              WHERE seen_at > now() - make_interval(secs => $1)
              ORDER BY machine, role, replica",
            &[&within_sec],
        )
        .await
        .map_err(db.failed("list role processes"))?;
    Ok(rows
        .iter()
        .map(|r| Worker {
            machine: r.get(0),
            role: r.get(1),
            replica: r.get(2),
            pid: r.get(3),
            labels: r
                .get::<_, String>(4)
                .split(',')
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
            runs: r.get(5),
            workspace: r.get(6),
            holding: r.get(7),
            started_at: r.get(8),
            silent_sec: r.get(9),
        })
        .collect())
}

/// What the cluster holds of each role: how many tasks are queued and running, and how many
/// ended today (UTC) in the hot table and the history, processed and failed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Depth {
    /// The role.
    pub role: String,
    /// Waiting to be claimed.
    pub queued: i64,
    /// Claimed and running.
    pub running: i64,
    /// Processed today.
    pub processed_today: i64,
    /// Failed today.
    pub failed_today: i64,
}

/// Each role's [`Depth`].
pub async fn depths(db: &Db) -> Result<Vec<Depth>, DbError> {
    let rows = db
        .client
        .query(
            "WITH today AS (SELECT (now() AT TIME ZONE 'UTC')::date AS day),
                  t AS (SELECT role, state, finished_at FROM orchestrate_tasks
                        UNION ALL
                        SELECT role, state, finished_at FROM orchestrate_tasks_history
                         WHERE finished_at >= (SELECT day FROM today))
             SELECT role,
                    count(*) FILTER (WHERE state = 'queued'),
                    count(*) FILTER (WHERE state = 'running'),
                    count(*) FILTER (WHERE state = 'processed'
                                       AND (finished_at AT TIME ZONE 'UTC')::date = (SELECT day FROM today)),
                    count(*) FILTER (WHERE state = 'failed'
                                       AND (finished_at AT TIME ZONE 'UTC')::date = (SELECT day FROM today))
               FROM t GROUP BY role ORDER BY role",
            &[],
        )
        .await
        .map_err(db.failed("count tasks"))?;
    Ok(rows
        .iter()
        .map(|r| Depth {
            role: r.get(0),
            queued: r.get(1),
            running: r.get(2),
            processed_today: r.get(3),
            failed_today: r.get(4),
        })
        .collect())
}

/// What one role spent on one machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spent {
    /// The machine.
    pub machine: String,
    /// The role.
    pub role: String,
    /// Attempts that spent anything.
    pub attempts: i64,
    /// Tokens.
    pub tokens: i64,
    /// US dollars.
    pub cost_usd: f64,
}

/// What every machine's attempts spent (since `since`, a UTC date `YYYY-MM-DD`, when given),
/// by machine and role.
pub async fn spending(db: &Db, since: Option<&str>) -> Result<Vec<Spent>, DbError> {
    let rows = db
        .client
        .query(
            "SELECT machine, role, count(*), coalesce(sum(tokens), 0)::bigint,
                    coalesce(sum(cost_usd), 0)::float8
               FROM orchestrate_spending
              WHERE $1::text IS NULL OR day >= $1::date
              GROUP BY machine, role ORDER BY machine, role",
            &[&since],
        )
        .await
        .map_err(db.failed("sum the spending"))?;
    Ok(rows
        .iter()
        .map(|r| Spent {
            machine: r.get(0),
            role: r.get(1),
            attempts: r.get(2),
            tokens: r.get(3),
            cost_usd: r.get(4),
        })
        .collect())
}

/// The cluster's pauses, by role.
pub async fn pauses(db: &Db) -> Result<Vec<(String, Asked)>, DbError> {
    let rows = db
        .client
        .query(
            &format!(
                "SELECT role, by_whom, {AT} FROM orchestrate_controls WHERE kind = 'pause'
                  ORDER BY role"
            ),
            &[],
        )
        .await
        .map_err(db.failed("list pauses"))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                Asked {
                    by: r.get(1),
                    since: r.get(2),
                },
            )
        })
        .collect())
}

/// A task as the cluster knows it (the hot table or the history).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRow {
    /// Its role.
    pub role: String,
    /// Its id.
    pub id: String,
    /// `queued`, `running`, `processed` or `failed`.
    pub state: String,
    /// Attempts started.
    pub attempt: i32,
    /// The machine that runs or ran its last attempt.
    pub machine: Option<String>,
    /// Who holds it, while running (`machine:pid`).
    pub holder: Option<String>,
    /// Its correlation id.
    pub correlation_id: Option<String>,
    /// When it was queued, claimed and finished (RFC 3339).
    pub enqueued_at: String,
    /// When its last attempt was claimed.
    pub claimed_at: Option<String>,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Its status.json, once it ended.
    pub status: Option<serde_json::Value>,
}

/// Tasks of `role` (every role: `None`) in state `state` (any: `None`), newest first, at most
/// `limit`; with `id`, only that task (its current row and its archived ones).
pub async fn tasks(
    db: &Db,
    role: Option<&str>,
    state: Option<&str>,
    id: Option<&str>,
    limit: i64,
) -> Result<Vec<TaskRow>, DbError> {
    const TS: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'";
    const COLUMNS: &str = "role, id, state, attempt, machine, lease_owner, correlation_id, \
                           enqueued_at, claimed_at, finished_at, status";
    let rows = db
        .client
        .query(
            &format!(
                "SELECT role, id, state, attempt, machine, lease_owner, correlation_id,
                        to_char(enqueued_at AT TIME ZONE 'UTC', {TS}),
                        to_char(claimed_at AT TIME ZONE 'UTC', {TS}),
                        to_char(finished_at AT TIME ZONE 'UTC', {TS}),
                        status::text
                   FROM (SELECT {COLUMNS} FROM orchestrate_tasks
                         UNION ALL
                         SELECT {COLUMNS} FROM orchestrate_tasks_history) t
                  WHERE ($1::text IS NULL OR role = $1)
                    AND ($2::text IS NULL OR state = $2)
                    AND ($3::text IS NULL OR id = $3 OR correlation_id = $3)
                  ORDER BY coalesce(finished_at, claimed_at, enqueued_at) DESC, id
                  LIMIT $4"
            ),
            &[&role, &state, &id, &limit],
        )
        .await
        .map_err(db.failed("list tasks"))?;
    Ok(rows
        .iter()
        .map(|r| TaskRow {
            role: r.get(0),
            id: r.get(1),
            state: r.get(2),
            attempt: r.get(3),
            machine: r.get(4),
            holder: r.get(5),
            correlation_id: r.get(6),
            enqueued_at: r.get(7),
            claimed_at: r.get(8),
            finished_at: r.get(9),
            status: r
                .get::<_, Option<String>>(10)
                .and_then(|s| serde_json::from_str(&s).ok()),
        })
        .collect())
}

async fn notify(
    tx: &tokio_postgres::Transaction<'_>,
    role: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CONTROL_CHANNEL, &role])
        .await
        .map(|_| ())
}
