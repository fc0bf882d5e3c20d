//! The whole cluster as commands see it, when the swarm's queue lives in a database: a
//! one-shot connection for `tasks`, `show`, `cancel`, `pause`, `resume` and `swarm status`.
//!
//! Owns finding the database (`ORCHESTRATE_QUEUE_URL`, else `queue:` of swarm.yaml) and running
//! one call on it from a synchronous command. Does not decide what the commands print (their
//! modules do) nor hold the statements (`orchestrate_pg::control`).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use orchestrate_pg::{Db, DbError};

/// How long a command waits for the database to answer before saying it cannot be reached.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// The swarm's queue database, if it has one (swarm.yaml that cannot be read: none, as the
/// commands that read it say).
pub(crate) fn url(workspace: &Path) -> Option<String> {
    std::env::var("ORCHESTRATE_QUEUE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .or_else(|| {
            orchestrate_lang::load::load_swarm(workspace)
                .ok()
                .and_then(|swarm| swarm.queue_url)
        })
}

/// A call on a connection: what `with_db` runs.
pub(crate) type Call<T> = Box<
    dyn for<'a> FnOnce(&'a mut Db) -> Pin<Box<dyn Future<Output = Result<T, DbError>> + Send + 'a>>
        + Send,
>;

/// Connects to `url` and runs `call`, on a thread of its own (the commands are synchronous and
/// may run inside the CLI's async runtime); within [`ANSWER_WITHIN`] or unreachable.
pub(crate) fn with_db<T: Send + 'static>(url: &str, call: Call<T>) -> Result<T, DbError> {
    let url = url.to_string();
    let target = orchestrate_pg::Target::of_url(&url);
    let unreachable = move |reason: String| DbError::Unreachable {
        target: target.clone(),
        reason,
    };
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            match tokio::time::timeout(ANSWER_WITHIN, async {
                let mut db = Db::connect(&url).await?;
                call(&mut db).await
            })
            .await
            {
                Ok(answer) => Ok(answer),
                Err(_) => Err(format!("no answer within {ANSWER_WITHIN:?}")),
            }
        })
    });
    match worker.join() {
        Ok(Ok(answer)) => answer,
        Ok(Err(reason)) => Err(unreachable(reason)),
        Err(_) => Err(unreachable("the connection's thread panicked".into())),
    }
}

/// Who asks, as control records name them: the user and this machine.
pub(crate) fn who() -> String {
    format!(
        "{}@{}",
        orchestrate_queue::cancel::who(),
        orchestrate_swarm::worker::machine()
    )
}
