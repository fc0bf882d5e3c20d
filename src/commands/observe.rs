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
    let across = !matches!(selector, RunSelector::One(_));
    match orchestrate_observe::observe::report(workspace, selector) {
        Ok(report) => {
            // Across runs on a shared database: what every machine spent, too.
            let cluster = super::cluster::url(workspace)
                .filter(|_| across)
                .map(|url| cluster_spending(&url, since));
            if json {
                let mut value = serde_json::to_value(&report).unwrap_or_default();
                match cluster {
                    Some(Ok(rows)) => value["cluster_spending"] = serde_json::json!(rows),
                    Some(Err(err)) => value["cluster_spending"] = serde_json::json!({"error": err}),
                    None => {}
                }
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            } else {
                print!("{}", report.render());
                match cluster {
                    Some(Ok(rows)) => print!("{}", render_cluster_spending(&rows)),
                    Some(Err(err)) => println!("\nspending across the cluster: {err}"),
                    None => {}
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => Err(Error::invalid(err.to_string())),
    }
}

/// What every machine's attempts spent, from the queue database.
fn cluster_spending(
    url: &str,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Vec<orchestrate_pg::control::Spent>, String> {
    let since = since.map(|t| t.format("%Y-%m-%d").to_string());
    super::cluster::with_db(
        url,
        Box::new(move |db| {
            Box::pin(async move { orchestrate_pg::control::spending(db, since.as_deref()).await })
        }),
    )
    .map_err(|e| e.to_string())
}

fn render_cluster_spending(rows: &[orchestrate_pg::control::Spent]) -> String {
    let mut out = String::from("\nspending across the cluster (the queue database):\n");
    if rows.is_empty() {
        out.push_str("  no attempt has spent anything\n");
        return out;
    }
    out.push_str(&format!(
        "  {:<14} {:<14} {:>8} {:>12} {:>10}\n",
        "MACHINE", "ROLE", "ATTEMPTS", "TOKENS", "COST USD"
    ));
    let (mut tokens, mut cost) = (0i64, 0f64);
    for r in rows {
        tokens += r.tokens;
        cost += r.cost_usd;
        out.push_str(&format!(
            "  {:<14} {:<14} {:>8} {:>12} {:>10.4}\n",
            r.machine, r.role, r.attempts, r.tokens, r.cost_usd
        ));
    }
    out.push_str(&format!(
        "  {:<14} {:<14} {:>8} {:>12} {:>10.4}\n",
        "total", "", "", tokens, cost
    ));
    out
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
