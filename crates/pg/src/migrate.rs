//! The schema: numbered migrations embedded in the binary, applied in order, each once.
//!
//! Owns `orchestrate_schema` (the versions applied, when) and applying what is missing in one
//! transaction under an advisory lock, so that two machines migrating at once apply each
//! migration once; and refusing a database whose schema is newer than this binary. Does not
//! decide when to migrate (`orchestrate db migrate` does; `swarm up` only checks).

use crate::connect::{Db, DbError};

/// The migrations, in order: (version, SQL).
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_tasks.sql")),
    (2, include_str!("migrations/0002_history.sql")),
    (3, include_str!("migrations/0003_released_and_machine.sql")),
    (4, include_str!("migrations/0004_steering.sql")),
];

/// The newest schema version this binary knows.
pub const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The advisory lock migrations hold (an arbitrary constant: "orch" in ASCII).
const LOCK: i64 = 0x6f72_6368;

/// What a migration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The version before (0: no schema).
    pub from: i32,
    /// The version after.
    pub to: i32,
}

const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS orchestrate_schema (
    version    integer     PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// The schema version of the database (`None`: no schema yet).
pub async fn schema_version(db: &Db) -> Result<Option<i32>, DbError> {
    let exists = db
        .client
        .query_one("SELECT to_regclass('orchestrate_schema') IS NOT NULL", &[])
        .await
        .map_err(db.failed("read the schema version"))?
        .get::<_, bool>(0);
    if !exists {
        return Ok(None);
    }
    let row = db
        .client
        .query_one("SELECT max(version) FROM orchestrate_schema", &[])
        .await
        .map_err(db.failed("read the schema version"))?;
    Ok(row.get::<_, Option<i32>>(0))
}

/// Creates or upgrades the schema to [`LATEST`], in one transaction under an advisory lock.
/// Applying it again does nothing; a newer schema is refused.
pub async fn migrate(db: &mut Db) -> Result<Migrated, DbError> {
    let failed = db.failed("migrate the schema");
    let target = db.target.clone();
    let tx = db.client.transaction().await.map_err(&failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(&failed)?;
    tx.batch_execute(SCHEMA_TABLE).await.map_err(&failed)?;
    let from = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM orchestrate_schema",
            &[],
        )
        .await
        .map_err(&failed)?
        .get::<_, i32>(0);
    if from > LATEST {
        return Err(DbError::TooNew {
            target,
            found: from,
            known: LATEST,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
        tx.batch_execute(sql).await.map_err(&failed)?;
        tx.execute(
            "INSERT INTO orchestrate_schema (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(&failed)?;
    }
    tx.commit().await.map_err(&failed)?;
    Ok(Migrated {
        from,
        to: LATEST.max(from),
    })
}
