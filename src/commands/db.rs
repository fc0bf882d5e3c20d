//! `orchestrate db`: the swarm's queue database.
//!
//! Owns the command's output and errors; the schema and its migrations are `orchestrate_pg`'s.

use std::path::Path;
use std::process::ExitCode;

use crate::error::{Error, Outcome};

/// `db migrate`: creates or upgrades the queue's schema and says what it did.
pub(crate) async fn migrate(workspace: &Path, url: Option<String>) -> Outcome {
    let url = queue_url(workspace, url)?;
    let mut db = orchestrate_pg::Db::connect(&url).await.map_err(message)?;
    let done = orchestrate_pg::migrate(&mut db).await.map_err(message)?;
    if done.from == done.to {
        println!(
            "the queue schema at {} is up to date (version {})",
            db.target, done.to
        );
    } else if done.from == 0 {
        println!(
            "created the queue schema at {} (version {})",
            db.target, done.to
        );
    } else {
        println!(
            "upgraded the queue schema at {} from version {} to {}",
            db.target, done.from, done.to
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The database's URL: `--url`, else `ORCHESTRATE_QUEUE_URL`, else `queue:` in the workspace's
/// swarm.yaml.
fn queue_url(workspace: &Path, given: Option<String>) -> Result<String, Error> {
    let given = given
        .or_else(|| std::env::var("ORCHESTRATE_QUEUE_URL").ok())
        .filter(|url| !url.trim().is_empty());
    if let Some(url) = given {
        return Ok(url);
    }
    let swarm =
        orchestrate_lang::load::load_swarm(workspace).map_err(|e| Error::invalid(e.to_string()))?;
    swarm.queue_url.ok_or_else(|| {
        Error::invalid(format!(
            "no queue database given: pass --url postgres://USER:PASSWORD@HOST:PORT/DATABASE, set ORCHESTRATE_QUEUE_URL, or write `queue:` in {}",
            workspace.join("swarm.yaml").display()
        ))
    })
}

/// A database error as the command's: a bad URL or a newer schema is the user's to fix (exit
/// 2), the rest a failure (exit 1). Messages never hold the password.
fn message(err: orchestrate_pg::DbError) -> Error {
    let text = match &err {
        orchestrate_pg::DbError::Connect { .. } => format!(
            "{err}; check the URL (--url or ORCHESTRATE_QUEUE_URL) and that the server runs"
        ),
        _ => err.to_string(),
    };
    match err {
        orchestrate_pg::DbError::BadUrl { .. }
        | orchestrate_pg::DbError::TooNew { .. }
        | orchestrate_pg::DbError::PasswordFile { .. } => Error::invalid(text),
        _ => Error::failed(text),
    }
}
