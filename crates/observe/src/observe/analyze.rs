//! The report of one run: its workflow (the saved copy, else the file it names), its status,
//! its executions summed per step, totals, repeats, out-of-order transitions, and the path taken
//! checked against the workflow's graph.
//!
//! Does not find or read the run (`locate`, `load`) or render the report (`report_text`).

use super::children::children_of;
use super::fold::{
    Execution, Facts, Tokens, engine_alive, fold, lock_pid, seconds_between, str_field,
};
use super::graph::{Graph, Hop, START, default_path};
use super::load::{Loaded, run_started};
use super::locate::{RunSource, dir_name};
use super::report_data::{
    Failure, OutOfOrder, PathCheck, Repeat, RunReport, StepRow, TaskInfo, Totals,
};
use orchestrate_lang::model::Workflow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

fn task_info(loaded: &Loaded) -> Option<TaskInfo> {
    if loaded.loc.source == RunSource::Runs {
        return None;
    }
    let status = loaded.status_json.as_ref();
    let field = |k: &str| status.and_then(|s| s[k].as_str().map(str::to_string));
    Some(TaskInfo {
        role: field("agent"),
        task: field("task"),
        attempt: status.and_then(|s| s["attempt"].as_u64()),
        message: field("message"),
    })
}

/// How a run's workflow loads: a swarm task's as its role loads it (provider steps without
/// `provider:` use the role's runtime), any other on its own.
fn load_options(workspace: &Path, loaded: &Loaded) -> orchestrate_lang::load::LoadOptions {
    let role = match loaded.loc.source {
        RunSource::Runs => None,
        RunSource::Running => loaded
            .loc
            .root
            .parent()
            .map(dir_name)
            .filter(|r| !r.is_empty()),
        RunSource::Processed | RunSource::Failed => task_info(loaded).and_then(|t| t.role),
    };
    orchestrate_lang::load::LoadOptions {
        default_provider: role
            .and_then(|role| orchestrate_engine::role::load_one(workspace, &role).ok())
            .and_then(|(role, _)| role.runtime),
        ..Default::default()
    }
}

/// The workflow a run ran: the copy saved in RUN_ROOT, else (older task runs kept no copy)
/// the file the run names, when its fingerprint is still the run's.
pub(super) fn run_workflow(
    workspace: &Path,
    loaded: &Loaded,
) -> Result<(Workflow, String), String> {
    let options = load_options(workspace, loaded);
    let copy = loaded.loc.root.join("workflow.yaml");
    if copy.is_file() {
        return orchestrate_lang::load::load_file_with(&copy, &options)
            .map(|w| (w, "workflow.yaml saved with the run".to_string()))
            .map_err(|e| {
                format!(
                    "its saved workflow.yaml no longer loads: {}",
                    e.render().lines().next().unwrap_or("")
                )
            });
    }
    // Which file ran and its fingerprint: state.json's, else the run_started event's (a swarm
    // task's run recorded before task runs kept their workflow.yaml).
    let named = match &loaded.state {
        Some(state) => Some((state.workflow.clone(), state.fingerprint.clone())),
        None => run_started(&loaded.events)
            .map(|(_, started)| (started.workflow, started.fingerprint))
            .filter(|(workflow, fingerprint)| !workflow.is_empty() && !fingerprint.is_empty()),
    };
    let Some((workflow_path, fingerprint)) = named else {
        return Err(
            "no saved workflow.yaml, and neither state.json nor a run_started event names the workflow"
                .into(),
        );
    };
    let path = Path::new(&workflow_path);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        workspace.join(path)
    };
    let workflow = orchestrate_lang::load::load_file_with(&path, &options)
        .map_err(|_| format!("no saved workflow.yaml, and {workflow_path} does not load"))?;
    if workflow.fingerprint != fingerprint {
        return Err(format!(
            "no saved workflow.yaml, and {workflow_path} changed since the run (fingerprint {} != {fingerprint})",
            workflow.fingerprint
        ));
    }
    Ok((
        workflow,
        format!("{workflow_path} (unchanged since the run)"),
    ))
}

/// The run's status as recorded, with an unfinished run whose engine is gone called `stopped`.
pub(super) fn run_status(loaded: &Loaded, facts: &Facts) -> (String, Option<String>) {
    if let Some(end) = &facts.end {
        return (end.status.clone(), end.error.clone());
    }
    if loaded.loc.source == RunSource::Runs && engine_alive(&loaded.loc.root) == Some(false) {
        return (
            "stopped".into(),
            Some(format!(
                "its engine (pid {}) is gone without recording an end; continue it with \
                 `orchestrate resume {}`",
                lock_pid(&loaded.loc.root).unwrap_or_default(),
                loaded.run_id
            )),
        );
    }
    if let Some(status) = &loaded.status_json {
        // A task attempt that ended before its runner recorded an end.
        let outcome = if status["success"] == true {
            "succeeded"
        } else {
            "failed"
        };
        return (outcome.into(), str_field(status, "message"));
    }
    match &loaded.state {
        Some(state) if state.status != orchestrate_engine::state::RunStatus::Running => (
            serde_json::to_value(state.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "unknown".into()),
            state.error.clone(),
        ),
        _ => ("running".into(), None),
    }
}

pub(super) fn analyze(workspace: &Path, loaded: &Loaded) -> RunReport {
    let facts = fold(&loaded.events, &loaded.run_id);
    let mut notes = loaded.notes.clone();
    let (status, error) = run_status(loaded, &facts);

    let path: Vec<&Execution> = facts.path.iter().map(|&i| &facts.executions[i]).collect();
    let (steps, totals) = step_rows(&facts.executions, &path);

    let (check, check_skipped) = match run_workflow(workspace, loaded) {
        Ok((workflow, source)) => (Some(check_path(&workflow, &path, &status, source)), None),
        Err(reason) => (None, Some(reason)),
    };

    let failures = failures_of(&facts.executions);

    let started_at = facts
        .started_at
        .clone()
        .or_else(|| loaded.state.as_ref().map(|s| s.started_at.clone()));
    let finished_at = facts.end.as_ref().map(|e| e.at.clone());
    let wall_sec = match (&started_at, finished_at.as_ref().or(facts.last_ts.as_ref())) {
        (Some(from), Some(to)) => seconds_between(from, to),
        _ => None,
    };
    if loaded.events.is_empty() {
        notes.push("the event log is empty: nothing ran yet".into());
    }
    let children = children_of(workspace, &loaded.events, status == "running");
    RunReport {
        run_id: loaded.run_id.clone(),
        source: loaded.loc.source,
        path: loaded.loc.label(workspace),
        task: task_info(loaded),
        workflow: facts
            .workflow_name
            .clone()
            .or_else(|| loaded.state.as_ref().map(|s| s.workflow_name.clone())),
        status,
        error,
        started_at,
        finished_at,
        wall_sec,
        resumes: facts.resumes,
        steps,
        totals,
        path_taken: path.iter().map(|e| e.step.clone()).collect(),
        check,
        check_skipped,
        failures,
        loop_detected: facts.loop_detected.clone(),
        executions: facts.executions.clone(),
        children,
        notes,
    }
}

/// One row per step, in order of first execution, with its executions summed and its visits
/// counted along `path`; and the run's totals (a container's own numbers are its body's, so
/// they are left out of the totals).
fn step_rows(executions: &[Execution], path: &[&Execution]) -> (Vec<StepRow>, Totals) {
    let mut order: Vec<String> = Vec::new();
    let mut rows: HashMap<String, StepRow> = HashMap::new();
    let mut totals = Totals::default();
    for e in executions {
        let row = rows.entry(e.step.clone()).or_insert_with(|| {
            order.push(e.step.clone());
            StepRow {
                step: e.step.clone(),
                visits: 0,
                attempts: 0,
                skipped: 0,
                failed: 0,
                rejected: 0,
                duration_sec: 0.0,
                tokens: Tokens::default(),
                cost_usd: 0.0,
                unpriced: 0,
                duration_share: 0.0,
                cost_share: 0.0,
                container: false,
                parallel: false,
            }
        });
        row.container |= e.container;
        row.parallel |= e.parallel;
        row.attempts += e.attempts;
        row.duration_sec += e.duration_sec;
        row.tokens.add(&e.tokens);
        row.cost_usd += e.cost_usd;
        row.unpriced += u32::from(e.unpriced);
        match e.status.as_str() {
            "skipped" => row.skipped += 1,
            "failed" => row.failed += 1,
            "rejected" => row.rejected += 1,
            _ => {}
        }
        if !e.container {
            totals.executions += u32::from(e.status != "skipped");
            totals.attempts += e.attempts;
            totals.duration_sec += e.duration_sec;
            totals.tokens.add(&e.tokens);
            totals.cost_usd += e.cost_usd;
            totals.unpriced += u32::from(e.unpriced);
        }
    }
    for e in path {
        if let Some(row) = rows.get_mut(&e.step) {
            row.visits += 1;
        }
        totals.visits += u32::from(!e.container);
    }
    let mut steps: Vec<StepRow> = order.iter().filter_map(|name| rows.remove(name)).collect();
    for row in &mut steps {
        row.duration_share = share(row.duration_sec, totals.duration_sec);
        row.cost_share = share(row.cost_usd, totals.cost_usd);
    }
    (steps, totals)
}

/// The executions that failed, were rejected or interrupted, with what went wrong.
fn failures_of(executions: &[Execution]) -> Vec<Failure> {
    executions
        .iter()
        .filter(|e| matches!(e.status.as_str(), "failed" | "rejected" | "interrupted"))
        .map(|e| Failure {
            step: e.step.clone(),
            exec: e.exec,
            lane: e.lane.clone(),
            status: e.status.clone(),
            error: e.error.clone().unwrap_or_else(|| match e.exit_code {
                Some(code) => format!("exit code {code}"),
                None => e.status.clone(),
            }),
            superseded: e.superseded,
        })
        .collect()
}

pub(super) fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

fn check_path(workflow: &Workflow, path: &[&Execution], status: &str, source: String) -> PathCheck {
    let graph = Graph::of(workflow);
    let known: HashSet<&str> = workflow
        .all_steps()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let mut check = PathCheck {
        workflow: source,
        ..PathCheck::default()
    };

    // Out of order: each step must be reachable from the one before by the graph's edges.
    let start = Hop::name(START);
    let mut previous: Option<Hop> = Some(start);
    for (position, e) in path.iter().enumerate() {
        if !known.contains(e.step.as_str()) {
            if !check.unknown.contains(&e.step) {
                check.unknown.push(e.step.clone());
            }
            // After an unknown step nothing can be said about the next transition.
            previous = None;
            continue;
        }
        let hop = Hop::of(e);
        if let Some(from) = &previous
            && graph.route(from, &hop).is_none()
        {
            check.out_of_order.push(OutOfOrder {
                position,
                from: from.step.to_string(),
                to: e.step.clone(),
                allowed: graph.successors(from.step),
            });
        }
        previous = Some(hop);
    }

    // Repeated: more than one visit within one activation of its step list.
    let mut per_pass: HashMap<(&str, &[u64]), u32> = HashMap::new();
    let mut visits: HashMap<&str, u32> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for e in path {
        *per_pass
            .entry((e.step.as_str(), e.iteration.as_slice()))
            .or_default() += 1;
        let v = visits.entry(e.step.as_str()).or_default();
        if *v == 0 {
            order.push(e.step.as_str());
        }
        *v += 1;
    }
    for name in order {
        let most = per_pass
            .iter()
            .filter(|((n, _), _)| *n == name)
            .map(|(_, &c)| c)
            .max()
            .unwrap_or(0);
        if most > 1 {
            check.repeated.push(Repeat {
                step: name.to_string(),
                visits: visits.get(name).copied().unwrap_or(0),
                most_in_one_pass: most,
            });
        }
    }

    // Skipped / not reached: default-path steps never entered.
    let entered: HashSet<&str> = path.iter().map(|e| e.step.as_str()).collect();
    let default = default_path(workflow);
    // A loop that was skipped or had no items explains why its body never ran.
    let empty_loops: HashSet<&str> = path
        .iter()
        .filter(|e| {
            e.container
                || graph
                    .edges
                    .iter()
                    .any(|g| g.from == e.step && g.label == Some("each"))
        })
        .map(|e| e.step.as_str())
        .filter(|name| {
            path.iter()
                .filter(|e| e.step == *name)
                .all(|e| e.status == "skipped" || e.items == Some(0))
        })
        .collect();
    let last_reached = default
        .iter()
        .rposition(|name| entered.contains(name.as_str()));
    for (index, name) in default.iter().enumerate() {
        if entered.contains(name.as_str()) {
            continue;
        }
        let mut ancestor = graph.parent.get(name);
        let mut explained = false;
        while let Some(parent) = ancestor {
            if !entered.contains(parent.as_str()) || empty_loops.contains(parent.as_str()) {
                explained = true;
                break;
            }
            ancestor = graph.parent.get(parent);
        }
        if explained {
            continue;
        }
        let passed = status == "succeeded" || last_reached.is_some_and(|last| index < last);
        if passed {
            check.skipped.push(name.clone());
        } else {
            check.not_reached.push(name.clone());
        }
    }
    check
}
