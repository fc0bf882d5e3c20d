//! Reading runs back: `status`, `logs`, `report`, `graph`.
//!
//! Owns: what each prints and its exit code. Does not read the records itself
//! (`orchestrate_observe::observe` does).

use std::path::Path;
use std::process::ExitCode;

use orchestrate_engine::runner::exit;
use orchestrate_lang::load;

use super::loading::relative_render;
use crate::error::{Error, Outcome};

pub(crate) fn status(workspace: &Path, run_id: Option<&str>, json: bool) -> Outcome {
    let view = match orchestrate_observe::observe::status(workspace, run_id) {
        Ok(view) => view,
        Err(err) => {
            return Err(Error::invalid(err.to_string()));
        }
    };
    // With no run named, a running swarm is part of "where things are".
    let swarm = if run_id.is_none() {
        orchestrate_swarm::supervisor::status(workspace)
            .ok()
            .filter(|s| s.supervisor.is_some())
    } else {
        None
    };
    if json {
        println!("{}", serde_json::json!({"run": view, "swarm": swarm}));
    } else {
        print!("{}", view.render());
        if let Some(swarm) = swarm {
            println!();
            print!("{}", orchestrate_swarm::supervisor::render_status(&swarm));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn report(
    workspace: &Path,
    run_id: Option<String>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    json: bool,
) -> Outcome {
    use orchestrate_observe::observe::RunSelector;
    let selector = match (run_id, since) {
        (Some(id), _) => RunSelector::One(id),
        (None, Some(time)) => RunSelector::Since(time),
        (None, None) => RunSelector::All,
    };
    match orchestrate_observe::observe::report(workspace, selector) {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", report.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => Err(Error::invalid(err.to_string())),
    }
}

pub(crate) fn graph(
    workspace: &Path,
    file: &Path,
    run_id: Option<&str>,
    format: orchestrate_observe::observe::GraphFormat,
) -> Outcome {
    use orchestrate_observe::observe::{self, Report, RunSelector};
    let workflow = match load::load_in(workspace, &workspace.join(file)) {
        Ok(w) => w,
        Err(err) => {
            eprint!("{}", relative_render(&err, workspace));
            return Ok(ExitCode::from(exit::INVALID));
        }
    };
    let text = match run_id {
        None => observe::graph(&workflow, None, format),
        Some(id) => match observe::report(workspace, RunSelector::One(id.to_string())) {
            Ok(Report::Run(run)) => observe::graph_of_run(&workflow, &run, format),
            Ok(_) => observe::graph(&workflow, None, format),
            Err(err) => {
                return Err(Error::invalid(err.to_string()));
            }
        },
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// `orchestrate logs RUN_ID [STEP]`: the run's step logs on stdout, `--follow` as they grow.
pub(crate) fn logs(workspace: &Path, run_id: &str, step: Option<&str>, follow: bool) -> Outcome {
    let mut out = std::io::stdout();
    orchestrate_observe::observe::logs(workspace, run_id, step, follow, &mut out)
        .map_err(|err| Error::invalid(err.to_string()))?;
    Ok(ExitCode::SUCCESS)
}
