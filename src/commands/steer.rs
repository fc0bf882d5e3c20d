//! Steering what runs: `cancel` (a run or a swarm task), `pause ROLE` and `resume ROLE`.
//!
//! Owns: what each prints and its exit code. Does not write the requests or act on them
//! (`orchestrate_swarm::control` writes them; role processes and runs act on them).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use orchestrate_swarm::control;

use super::cluster;
use crate::error::{Error, Outcome};

/// `orchestrate cancel TARGET`: a run id, a swarm task id, or a task's run id. On a queue
/// database, a task that is not running on this machine is cancelled through it, wherever it
/// is queued or runs.
pub(crate) fn cancel(workspace: &Path, target: &str, wait: Option<Duration>) -> Outcome {
    match control::request_cancel(workspace, target, wait) {
        Ok(message) => {
            eprintln!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        Err(err) if err.is_refused() => match cluster::url(workspace) {
            Some(url) if err.elsewhere_possible() => cancel_in_cluster(&url, target, wait, &err),
            _ => Err(Error::invalid(err.to_string())),
        },
        Err(err) => Err(Error::failed(err.to_string())),
    }
}

/// Cancels task `target` through the queue database: a queued row is failed at once, a running
/// one's role process (on any machine) is asked to stop it. `local` is what this machine's
/// records said (shown should the database not know the task either).
fn cancel_in_cluster(
    url: &str,
    target: &str,
    wait: Option<Duration>,
    local: &control::ControlError,
) -> Outcome {
    let id = target.to_string();
    let rows = cluster::with_db(
        url,
        Box::new(move |db| {
            Box::pin(
                async move { orchestrate_pg::control::tasks(db, None, None, Some(&id), 20).await },
            )
        }),
    )
    .map_err(|e| Error::failed(format!("{local}; and the queue database: {e}")))?;
    // The live row of that id (queued or running), else the latest.
    let Some(row) = rows
        .iter()
        .find(|r| r.id == target && matches!(r.state.as_str(), "queued" | "running"))
        .or_else(|| rows.iter().find(|r| r.id == target))
        .cloned()
    else {
        return Err(Error::invalid(local.to_string()));
    };
    let (role, id, by) = (row.role.clone(), row.id.clone(), cluster::who());
    let answer = cluster::with_db(
        url,
        Box::new(move |db| {
            Box::pin(async move { orchestrate_pg::control::cancel(db, &role, &id, &by).await })
        }),
    )
    .map_err(|e| Error::failed(format!("cancelling task `{target}`: {e}")))?;
    let role = &row.role;
    match answer {
        orchestrate_pg::control::Cancel::WasQueued => {
            eprintln!(
                "cancelled task `{target}` of role `{role}` before it ran (it was queued in the queue database); `orchestrate show {target}` shows it"
            );
            Ok(ExitCode::SUCCESS)
        }
        orchestrate_pg::control::Cancel::Asked { holder } => {
            let holder = holder.unwrap_or_else(|| "a role process".into());
            let Some(wait) = wait else {
                eprintln!(
                    "asked {holder} to cancel task `{target}` of role `{role}` (through the queue database); `orchestrate show {target}` shows where it went"
                );
                return Ok(ExitCode::SUCCESS);
            };
            let deadline = std::time::Instant::now() + wait;
            loop {
                let (role_, id_) = (row.role.clone(), row.id.clone());
                let state = cluster::with_db(
                    url,
                    Box::new(move |db| {
                        Box::pin(
                            async move { orchestrate_pg::queue::state_of(db, &role_, &id_).await },
                        )
                    }),
                )
                .ok()
                .flatten()
                .map(|(state, _)| state);
                match state.as_deref() {
                    Some("failed") => {
                        eprintln!(
                            "cancelled task `{target}` of role `{role}` on {holder}: its record is in failed/ on that machine"
                        );
                        return Ok(ExitCode::SUCCESS);
                    }
                    Some("processed") => {
                        eprintln!(
                            "task `{target}` of role `{role}` finished on {holder} before the cancel took effect"
                        );
                        return Ok(ExitCode::SUCCESS);
                    }
                    _ if std::time::Instant::now() >= deadline => {
                        return Err(Error::failed(format!(
                            "task `{target}` of role `{role}` still runs on {holder} after {wait:?}; the request stands (its role process stops it when it next hears from the database); `orchestrate show {target}` shows where it went"
                        )));
                    }
                    _ => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        }
        orchestrate_pg::control::Cancel::Ended(state) => Err(Error::invalid(format!(
            "task `{target}` of role `{role}` already ended ({state}); nothing to cancel"
        ))),
        orchestrate_pg::control::Cancel::NotFound => Err(Error::invalid(local.to_string())),
    }
}

/// `orchestrate pause ROLE`: on a queue database, on every machine.
pub(crate) fn pause(workspace: &Path, role: &str) -> Outcome {
    control::check_role(workspace, role).map_err(Error::Invalid)?;
    if let Some(url) = cluster::url(workspace) {
        let (r, by) = (role.to_string(), cluster::who());
        let (asked, already) = cluster::with_db(
            &url,
            Box::new(move |db| {
                Box::pin(async move { orchestrate_pg::control::pause(db, &r, &by).await })
            }),
        )
        .map_err(|e| {
            Error::failed(format!(
                "pausing role `{role}` on every machine: {e}; nothing was paused"
            ))
        })?;
        let _ = control::pause(workspace, role);
        if already {
            eprintln!(
                "role `{role}` was already paused on every machine (since {} by {}); `orchestrate resume {role}` lifts it",
                asked.since, asked.by
            );
        } else {
            eprintln!(
                "paused role `{role}` on every machine: no new claims (tasks in flight finish, queued ones wait); `orchestrate resume {role}` lifts it"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    match control::pause(workspace, role) {
        Ok((p, true)) => eprintln!(
            "role `{role}` was already paused (since {} by {}); `orchestrate resume {role}` lifts it",
            p.since, p.by
        ),
        Ok((_, false)) => eprintln!(
            "paused role `{role}`: it claims no new tasks (tasks in flight finish, queued ones wait); `orchestrate resume {role}` lifts it"
        ),
        Err(err) => return Err(Error::failed(format!("pausing role `{role}`: {err}"))),
    }
    Ok(ExitCode::SUCCESS)
}

/// `orchestrate resume ROLE` (or `--role`).
pub(crate) fn resume_role(workspace: &Path, role: &str) -> Outcome {
    control::check_role(workspace, role).map_err(Error::Invalid)?;
    if let Some(url) = cluster::url(workspace) {
        let r = role.to_string();
        let was = cluster::with_db(
            &url,
            Box::new(move |db| {
                Box::pin(async move { orchestrate_pg::control::resume(db, &r).await })
            }),
        )
        .map_err(|e| {
            Error::failed(format!(
                "resuming role `{role}` on every machine: {e}; it stays paused"
            ))
        })?;
        let _ = control::unpause(workspace, role);
        match was {
            Some(p) => eprintln!(
                "resumed role `{role}` on every machine (paused since {} by {}); its queued tasks are claimed again",
                p.since, p.by
            ),
            None => eprintln!("role `{role}` is not paused; nothing to resume"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    match control::unpause(workspace, role) {
        Ok(Some(p)) => eprintln!(
            "resumed role `{role}` (paused since {} by {}); its queued tasks are claimed again",
            p.since, p.by
        ),
        Ok(None) => eprintln!("role `{role}` is not paused; nothing to resume"),
        Err(err) => {
            return Err(Error::failed(format!("resuming role `{role}`: {err}")));
        }
    }
    Ok(ExitCode::SUCCESS)
}
