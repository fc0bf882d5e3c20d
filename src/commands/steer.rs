//! Steering what runs: `cancel` (a run or a swarm task), `pause ROLE` and `resume ROLE`.
//!
//! Owns: what each prints and its exit code. Does not write the requests or act on them
//! (`orchestrate_swarm::control` writes them; role processes and runs act on them).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use orchestrate_swarm::control;

use crate::error::{Error, Outcome};

/// `orchestrate cancel TARGET`: a run id, a swarm task id, or a task's run id.
pub(crate) fn cancel(workspace: &Path, target: &str, wait: Option<Duration>) -> Outcome {
    match control::request_cancel(workspace, target, wait) {
        Ok(message) => {
            eprintln!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        Err(err) if err.is_refused() => Err(Error::invalid(err.to_string())),
        Err(err) => Err(Error::failed(err.to_string())),
    }
}

/// `orchestrate pause ROLE`.
pub(crate) fn pause(workspace: &Path, role: &str) -> Outcome {
    control::check_role(workspace, role).map_err(Error::Invalid)?;
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
