//! The queue's operations on `orchestrate_tasks`: enqueue, claim, heartbeat, complete and the
//! requeue of expired leases, each one short statement.
//!
//! Owns the protocol in SQL (and the history table finished tasks move to): a claim takes the oldest queued task of a role with `FOR UPDATE
//! SKIP LOCKED` (claimers never wait for each other and never hold a row lock for a run), counts
//! the attempt and bumps the task's fence; the lease is then only a deadline in the row, renewed
//! by heartbeat; a heartbeat or a completion names the fence it holds, so once a task was
//! requeued (its fence bumped) a stale holder's heartbeat and completion are refused. Does not
//! run tasks, decide when to heartbeat or self-fence (the worker does) or keep records on disk.

use std::time::Duration;

use crate::connect::{Db, DbError};

/// A claimed task: what its attempt needs, and the fence its heartbeats and completion name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The task's id (its file name without the extension).
    pub id: String,
    /// What the workflow is given.
    pub payload: Vec<u8>,
    /// Which attempt this is, from 1.
    pub attempt: i32,
    /// The fence: heartbeats and the completion of this attempt must name it.
    pub fence: i64,
    /// The correlation id carried from the enqueue.
    pub correlation_id: Option<String>,
}

/// What became of a task whose lease ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The task's id.
    pub id: String,
    /// `queued` again, or `failed` once `max_attempts` have started.
    pub state: String,
    /// The attempts started so far.
    pub attempt: i32,
}

/// The columns a task row and its history row share, in order.
const COLUMNS: &str = "role, id, payload, correlation_id, attempt, state, lease_owner, \
                       lease_expires, fence, status, source, enqueued_at, claimed_at, finished_at, \
                       released, machine";

/// What became of a task offered to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// Queued.
    Queued,
    /// This very task (same name, same `source`) is in the queue already, or was: an offer
    /// repeated after a crash between the commit and the removal of its file.
    Already,
    /// Another task of that name is queued or running: this one was not queued.
    Taken {
        /// `queued` or `running`.
        state: String,
        /// Who holds it, when running.
        holder: Option<String>,
    },
}

/// The channel a worker listens on; the payload is the role a task was queued for.
pub const QUEUED_CHANNEL: &str = "orchestrate_queued";

/// Adds a task; `false` when `role` has a task `id` queued or running (the name is the key while
/// the task lives). A finished task of that name moves to the history first, so a name may be
/// used again once its task ended, as in the filesystem queue.
pub async fn enqueue(
    db: &mut Db,
    role: &str,
    id: &str,
    payload: &[u8],
    correlation_id: Option<&str>,
    source: &str,
) -> Result<bool, DbError> {
    Ok(offer(db, role, id, payload, correlation_id, source, false).await? == Added::Queued)
}

/// Adds a task, in one transaction that also wakes the role's idle workers (`NOTIFY`, once per
/// call). `source` says where it came from; when it names one file (`once`: a dropped file's
/// machine, device, inode and change time) and that file was offered before (taken in, then the
/// ingester died before removing it), it is [`Added::Already`], never a second task.
pub async fn offer(
    db: &mut Db,
    role: &str,
    id: &str,
    payload: &[u8],
    correlation_id: Option<&str>,
    source: &str,
    once: bool,
) -> Result<Added, DbError> {
    let failed = db.failed("enqueue a task");
    let tx = db.client.transaction().await.map_err(&failed)?;
    let seen = if !once {
        None
    } else {
        tx.query_opt(
            "SELECT 1 FROM orchestrate_tasks WHERE role = $1 AND id = $2 AND source = $3
             UNION ALL
             SELECT 1 FROM orchestrate_tasks_history WHERE role = $1 AND id = $2 AND source = $3
             LIMIT 1",
            &[&role, &id, &source],
        )
        .await
        .map_err(&failed)?
    };
    if seen.is_some() {
        return Ok(Added::Already);
    }
    tx.execute(
        &format!(
            "WITH old AS (DELETE FROM orchestrate_tasks
                           WHERE role = $1 AND id = $2 AND state IN ('processed', 'failed')
                       RETURNING {COLUMNS})
             INSERT INTO orchestrate_tasks_history ({COLUMNS}) SELECT {COLUMNS} FROM old"
        ),
        &[&role, &id],
    )
    .await
    .map_err(&failed)?;
    let added = tx
        .execute(
            "INSERT INTO orchestrate_tasks (role, id, payload, correlation_id, source)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (role, id) DO NOTHING",
            &[&role, &id, &payload, &correlation_id, &source],
        )
        .await
        .map_err(&failed)?;
    if added == 0 {
        let row = tx
            .query_opt(
                "SELECT state, lease_owner FROM orchestrate_tasks WHERE role = $1 AND id = $2",
                &[&role, &id],
            )
            .await
            .map_err(&failed)?;
        let (state, holder) = row.map_or(("queued".to_string(), None), |r| (r.get(0), r.get(1)));
        return Ok(Added::Taken { state, holder });
    }
    tx.execute("SELECT pg_notify($1, $2)", &[&QUEUED_CHANNEL, &role])
        .await
        .map_err(&failed)?;
    tx.commit().await.map_err(&failed)?;
    Ok(Added::Queued)
}

/// Moves up to `batch` tasks that finished more than `older_than` ago into the history table;
/// returns how many moved. Called repeatedly (a batch at a time) it keeps the hot table to the
/// tasks that live, however many have finished.
pub async fn archive_finished(db: &Db, older_than: Duration, batch: i64) -> Result<u64, DbError> {
    db.client
        .execute(
            &format!(
                "WITH moved AS (
                    DELETE FROM orchestrate_tasks WHERE ctid IN (
                        SELECT ctid FROM orchestrate_tasks
                         WHERE state IN ('processed', 'failed')
                           AND finished_at < now() - make_interval(secs => $1)
                         ORDER BY finished_at
                         LIMIT $2
                           FOR UPDATE SKIP LOCKED)
                 RETURNING {COLUMNS})
                 INSERT INTO orchestrate_tasks_history ({COLUMNS}) SELECT {COLUMNS} FROM moved"
            ),
            &[&older_than.as_secs_f64(), &batch],
        )
        .await
        .map_err(db.failed("archive finished tasks"))
}

/// Claims the oldest queued task of `role` for `owner` (`machine:pid`; the machine is kept after
/// the task ends) with a lease of `lease`, or `None` when
/// nothing is queued (or every queued row is being claimed by someone else right now).
pub async fn claim(
    db: &Db,
    role: &str,
    owner: &str,
    lease: Duration,
) -> Result<Option<Claimed>, DbError> {
    let statement = db
        .prepared(
            "UPDATE orchestrate_tasks t
                SET state = 'running', attempt = t.attempt + 1, fence = t.fence + 1,
                    lease_owner = $2, lease_expires = now() + make_interval(secs => $3),
                    claimed_at = now(), machine = split_part($2, ':', 1)
              WHERE (t.role, t.id) = (
                    SELECT role, id FROM orchestrate_tasks
                     WHERE role = $1 AND state = 'queued'
                     ORDER BY enqueued_at, id
                     FOR UPDATE SKIP LOCKED
                     LIMIT 1)
          RETURNING t.id, t.payload, t.attempt, t.fence, t.correlation_id",
        )
        .await
        .map_err(db.failed("claim a task"))?;
    let row = db
        .client
        .query_opt(&statement, &[&role, &owner, &lease.as_secs_f64()])
        .await
        .map_err(db.failed("claim a task"))?;
    Ok(row.map(|row| Claimed {
        id: row.get(0),
        payload: row.get(1),
        attempt: row.get(2),
        fence: row.get(3),
        correlation_id: row.get(4),
    }))
}

/// Extends the lease of the attempt holding `fence` to `lease` from now; `false` when that
/// attempt no longer holds the task (requeued, or finished): its holder must stop.
pub async fn heartbeat(
    db: &Db,
    role: &str,
    id: &str,
    fence: i64,
    lease: Duration,
) -> Result<bool, DbError> {
    let renewed = db
        .client
        .execute(
            "UPDATE orchestrate_tasks SET lease_expires = now() + make_interval(secs => $4)
              WHERE role = $1 AND id = $2 AND fence = $3 AND state = 'running'",
            &[&role, &id, &fence, &lease.as_secs_f64()],
        )
        .await
        .map_err(db.failed("renew a lease"))?;
    Ok(renewed == 1)
}

/// Records the end of the attempt holding `fence`: `processed` or `failed` with its status
/// JSON; `false` (and nothing changed) when that attempt no longer holds the task.
pub async fn complete(
    db: &Db,
    role: &str,
    id: &str,
    fence: i64,
    success: bool,
    status_json: &str,
) -> Result<bool, DbError> {
    let done = db
        .client
        .execute(
            "UPDATE orchestrate_tasks
                SET state = CASE WHEN $4 THEN 'processed' ELSE 'failed' END,
                    status = $5::text::jsonb, finished_at = now(),
                    lease_owner = NULL, lease_expires = NULL
              WHERE role = $1 AND id = $2 AND fence = $3 AND state = 'running'",
            &[&role, &id, &fence, &success, &status_json],
        )
        .await
        .map_err(db.failed("complete a task"))?;
    Ok(done == 1)
}

/// Puts the tasks of `role` whose lease ran out back in the queue, or into `failed` once
/// `max_attempts` have started; each one's fence is bumped, so its old holder is refused.
pub async fn requeue_expired(
    db: &Db,
    role: &str,
    max_attempts: i32,
) -> Result<Vec<Expired>, DbError> {
    let rows = db
        .client
        .query(
            "UPDATE orchestrate_tasks
                SET state = CASE WHEN attempt - released >= $2 THEN 'failed' ELSE 'queued' END,
                    fence = fence + 1, lease_owner = NULL, lease_expires = NULL,
                    finished_at = CASE WHEN attempt - released >= $2 THEN now() END
              WHERE role = $1 AND state = 'running' AND lease_expires < now()
          RETURNING id, state, attempt",
            &[&role, &max_attempts],
        )
        .await
        .map_err(db.failed("requeue expired leases"))?;
    Ok(rows
        .iter()
        .map(|row| Expired {
            id: row.get(0),
            state: row.get(1),
            attempt: row.get(2),
        })
        .collect())
}

/// Extends by `lease` from now the leases of `held` (id and fence) of `role`; returns the ids
/// still held (those missing were requeued or finished: their holders must stop).
pub async fn renew(
    db: &Db,
    role: &str,
    held: &[(String, i64)],
    lease: Duration,
) -> Result<Vec<String>, DbError> {
    let (ids, fences): (Vec<&str>, Vec<i64>) = held.iter().map(|(i, f)| (i.as_str(), *f)).unzip();
    let statement = db
        .prepared(
            "UPDATE orchestrate_tasks t SET lease_expires = now() + make_interval(secs => $4)
               FROM unnest($2::text[], $3::bigint[]) AS h(id, fence)
              WHERE t.role = $1 AND t.id = h.id AND t.fence = h.fence AND t.state = 'running'
          RETURNING t.id",
        )
        .await
        .map_err(db.failed("renew leases"))?;
    let rows = db
        .client
        .query(&statement, &[&role, &ids, &fences, &lease.as_secs_f64()])
        .await
        .map_err(db.failed("renew leases"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// One attempt's end, for [`complete_all`].
#[derive(Debug, Clone)]
pub struct Done {
    /// The task's id.
    pub id: String,
    /// The fence its claim holds.
    pub fence: i64,
    /// `processed` (true) or `failed`.
    pub success: bool,
    /// Its status JSON.
    pub status: String,
}

/// Records the end of several attempts of `role` in one statement; returns the ids accepted
/// (an attempt whose fence no longer holds its task is refused and changes nothing). Asked
/// again after an answer was lost (the server restarted after committing), an attempt already
/// recorded with the same fence and end (in the hot table or archived) counts as accepted.
pub async fn complete_all(db: &Db, role: &str, done: &[Done]) -> Result<Vec<String>, DbError> {
    let ids: Vec<&str> = done.iter().map(|d| d.id.as_str()).collect();
    let fences: Vec<i64> = done.iter().map(|d| d.fence).collect();
    let successes: Vec<bool> = done.iter().map(|d| d.success).collect();
    let statuses: Vec<&str> = done.iter().map(|d| d.status.as_str()).collect();
    let statement = db
        .prepared(
            "WITH d AS (SELECT * FROM unnest($2::text[], $3::bigint[], $4::bool[], $5::text[])
                                  AS d(id, fence, ok, status)),
                  done AS (
                    UPDATE orchestrate_tasks t
                       SET state = CASE WHEN d.ok THEN 'processed' ELSE 'failed' END,
                           status = d.status::jsonb, finished_at = now(),
                           lease_owner = NULL, lease_expires = NULL
                      FROM d
                     WHERE t.role = $1 AND t.id = d.id AND t.fence = d.fence
                       AND t.state = 'running'
                 RETURNING t.id)
             SELECT id FROM done
             UNION
             SELECT d.id FROM d JOIN orchestrate_tasks t
                 ON t.role = $1 AND t.id = d.id AND t.fence = d.fence
                AND t.state = CASE WHEN d.ok THEN 'processed' ELSE 'failed' END
             UNION
             SELECT d.id FROM d JOIN orchestrate_tasks_history h
                 ON h.role = $1 AND h.id = d.id AND h.fence = d.fence
                AND h.state = CASE WHEN d.ok THEN 'processed' ELSE 'failed' END",
        )
        .await
        .map_err(db.failed("complete tasks"))?;
    let rows = db
        .client
        .query(&statement, &[&role, &ids, &fences, &successes, &statuses])
        .await
        .map_err(db.failed("complete tasks"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Gives the attempt holding `fence` back uncharged (its worker is shutting down): queued
/// again at once, its fence bumped. `false` when that attempt no longer holds the task.
pub async fn release(db: &Db, role: &str, id: &str, fence: i64) -> Result<bool, DbError> {
    let n = db
        .client
        .execute(
            "WITH back AS (
                UPDATE orchestrate_tasks
                   SET state = 'queued', released = released + 1, fence = fence + 1,
                       lease_owner = NULL, lease_expires = NULL, claimed_at = NULL
                 WHERE role = $1 AND id = $2 AND fence = $3 AND state = 'running'
             RETURNING role)
             SELECT pg_notify($4, role) FROM back",
            &[&role, &id, &fence, &QUEUED_CHANNEL],
        )
        .await
        .map_err(db.failed("release a task"))?;
    Ok(n == 1)
}

/// Ends the lease of the attempt holding `fence` now (its processes died on this machine):
/// the next [`requeue_expired`] puts the task back, charged, or fails it.
pub async fn expire(db: &Db, role: &str, id: &str, fence: i64) -> Result<bool, DbError> {
    let n = db
        .client
        .execute(
            "UPDATE orchestrate_tasks SET lease_expires = now() - interval '1 microsecond'
              WHERE role = $1 AND id = $2 AND fence = $3 AND state = 'running'",
            &[&role, &id, &fence],
        )
        .await
        .map_err(db.failed("end a lease"))?;
    Ok(n == 1)
}

/// The state of task `id` of `role` and its fence, if the task is in the hot table.
pub async fn state_of(db: &Db, role: &str, id: &str) -> Result<Option<(String, i64)>, DbError> {
    let row = db
        .client
        .query_opt(
            "SELECT state, fence FROM orchestrate_tasks WHERE role = $1 AND id = $2",
            &[&role, &id],
        )
        .await
        .map_err(db.failed("look a task up"))?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}
