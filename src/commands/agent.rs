//! `orchestrate agent ROLE`: a role process, started by hand or by `swarm up`.
//!
//! Does not claim or run tasks itself (`orchestrate_swarm::worker` does): it checks the role
//! and the swarm settings, then reports how the process ended.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::loading::print_load_errors;
use super::signals::signal_pair;
use crate::error::{Error, Outcome};

/// `orchestrate agent ROLE`: one role process, claiming and running the role's tasks until
/// stopped (or, with `--once`, until its inbox is empty).
pub(crate) async fn agent(
    workspace: &Path,
    name: &str,
    replica: u32,
    once: bool,
    grace: Duration,
    quiet: bool,
    metrics_dir: Option<PathBuf>,
) -> Outcome {
    let options = orchestrate_swarm::worker::AgentOptions {
        replica,
        once,
        grace,
        quiet,
        metrics_dir: orchestrate_swarm::metrics::dir_from(metrics_dir, workspace),
    };
    let version = match orchestrate_engine::role::Version::load(workspace, name) {
        Ok(version) => version,
        Err(errors) => {
            print_load_errors(workspace, &errors);
            return Err(Error::invalid(format!(
                "role `{name}` cannot start; fix the problems above"
            )));
        }
    };
    if let Err(error) = orchestrate_lang::load::load_swarm(workspace) {
        print_load_errors(workspace, &[error]);
        return Err(Error::invalid(format!(
            "role `{name}` cannot start; fix the problems above"
        )));
    }
    let (stop, kill) = signal_pair();
    match orchestrate_swarm::worker::run_agent(workspace, version, options, stop, kill).await {
        Ok(report) => {
            eprintln!(
                "[{name}] stopped: {} processed, {} failed, {} quarantined, {} given back",
                report.processed, report.failed, report.quarantined, report.released
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(message) => Err(Error::failed(format!("role `{name}`: {message}"))),
    }
}
