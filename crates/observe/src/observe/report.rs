//! `report`: which runs a report covers (`RunSelector`) and the entry point that reports on one
//! run or many (`Report`).
//!
//! Does not compute or render a report itself: `analyze`, `many` and `report_text` do.

use super::analyze::analyze;
use super::error::ObserveError;
use super::load::load;
use super::locate::locate;
use super::many::many;
use super::report_data::{RunReport, RunsReport};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::Path;

/// Which runs a report covers.
#[derive(Debug, Clone)]
pub enum RunSelector {
    /// One run: a run id, or a task run's directory name (or task id).
    One(String),
    /// Runs (task runs included) started at or after this time.
    Since(DateTime<Utc>),
    /// Every run of the workspace, task runs included.
    All,
}

/// What `report` found: one run in detail, or a table of many; `--json` prints it as it is
/// (tagged by `kind`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// One run (`RunSelector::One`): its steps, path, failures and cost.
    Run(Box<RunReport>),
    /// Many runs (`RunSelector::Since` or `All`): a line each, totals, and those skipped.
    Runs(Box<RunsReport>),
}

impl Report {
    /// The report as text for a terminal.
    pub fn render(&self) -> String {
        match self {
            Report::Run(run) => run.render(),
            Report::Runs(runs) => runs.render(),
        }
    }
}

/// Reports on one run, the runs since a time, or all runs (task runs under `processed/` and
/// `failed/` included). A run whose records cannot be read is an error for `One` and a
/// `skipped` entry with its reason otherwise.
pub fn report(workspace: &Path, selector: RunSelector) -> Result<Report, ObserveError> {
    match selector {
        RunSelector::One(id) => {
            let loc = locate(workspace, &id)?;
            let loaded = load(workspace, &loc).map_err(|reason| ObserveError::Unreadable {
                id: id.clone(),
                path: loc.root.clone(),
                reason,
            })?;
            Ok(Report::Run(Box::new(analyze(workspace, &loaded))))
        }
        RunSelector::Since(since) => Ok(Report::Runs(Box::new(many(workspace, Some(since))))),
        RunSelector::All => Ok(Report::Runs(Box::new(many(workspace, None)))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fold::parse_ts;
    use super::super::locate::RunSource;
    use super::super::test_support::{
        Log, SHIP, agent, failed, looping_run, ok, one, resumed_run, run_root, state, write_state,
    };
    use super::*;
    use serde_json::json;
    use std::fs;

    #[test]
    fn report_merges_a_resumed_runs_replay_into_one_path() {
        let ws = tempfile::tempdir().unwrap();
        let id = resumed_run(ws.path());
        let run = one(ws.path(), &id);
        assert_eq!(run.status, "succeeded");
        assert_eq!(run.resumes, 1);
        assert_eq!(
            run.path_taken,
            ["Prep", "Loop", "Work", "Check", "Work", "Check", "Done"]
        );
        let check = run.check.as_ref().unwrap();
        assert!(check.out_of_order.is_empty(), "{check:?}");
        assert!(
            check.repeated.is_empty(),
            "iterations are not repeats: {check:?}"
        );
        assert!(check.skipped.is_empty() && check.not_reached.is_empty());
        // The failed Check and the failed Loop were run again: spent, not on the path.
        let row = |name: &str| run.steps.iter().find(|r| r.step == name).unwrap().clone();
        assert_eq!(row("Check").visits, 2);
        assert_eq!(row("Check").attempts, 3);
        assert_eq!(row("Check").failed, 1);
        assert!((row("Check").duration_sec - 1.5).abs() < 1e-9);
        assert!(row("Loop").container);
        assert_eq!(run.failures.len(), 2);
        assert!(run.failures.iter().all(|f| f.superseded));
        // Totals leave the for_each out (its time is its body's): 1 + 2 + .5 + .5 + 2 + .5 + 1.
        assert!((run.totals.duration_sec - 7.5).abs() < 1e-9);
        assert_eq!(run.totals.visits, 6);
        assert!((row("Work").duration_share - 4.0 / 7.5).abs() < 1e-9);
        assert!((run.wall_sec.unwrap() - 64.0).abs() < 1e-6);
        let text = run.render();
        assert!(text.contains("(resumed 1 time)"), "{text}");
        assert!(
            text.contains("Prep → Loop → Work → Check → Work → Check → Done"),
            "{text}"
        );
        assert!(text.contains("[run again after resume]"), "{text}");
        let json = serde_json::to_value(Report::Run(Box::new(run))).unwrap();
        assert_eq!(json["kind"], "run");
        assert_eq!(json["steps"][0]["step"], "Prep");
    }

    #[test]
    fn report_flags_repeats_skips_and_out_of_order_transitions() {
        let ws = tempfile::tempdir().unwrap();
        let id = looping_run(ws.path());
        let run = one(ws.path(), &id);
        let check = run.check.clone().unwrap();
        let repeated: Vec<(&str, u32)> = check
            .repeated
            .iter()
            .map(|r| (r.step.as_str(), r.visits))
            .collect();
        assert_eq!(repeated, [("Build", 2), ("Test", 2)]);
        assert_eq!(check.skipped, ["Deploy"]);
        assert_eq!(check.out_of_order.len(), 1, "{check:?}");
        let o = &check.out_of_order[0];
        assert_eq!(
            (o.from.as_str(), o.to.as_str(), o.position),
            ("Test", "Notify", 5)
        );
        assert_eq!(o.allowed, ["Build", "Deploy"]);
        // Costs and tokens: only the agent step spent any.
        let plan = &run.steps[0];
        assert_eq!(plan.step, "Plan");
        assert_eq!(plan.tokens.input, 2000);
        assert_eq!(plan.tokens.cache(), 4200);
        assert!((plan.cost_share - 1.0).abs() < 1e-9);
        assert!((plan.duration_share - 0.5).abs() < 1e-9);
        assert!((run.totals.cost_usd - 0.30).abs() < 1e-9);
        let text = run.render();
        assert!(text.contains("out of order at #6: Test → Notify"), "{text}");
        assert!(
            text.contains("skipped (on the default path, never entered): Deploy"),
            "{text}"
        );
        assert!(text.contains("repeated: Build ×2"), "{text}");
        assert!(text.contains("$0.3000"), "{text}");
    }

    #[test]
    fn report_over_many_runs_includes_task_runs_and_skips_bad_records() {
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path();
        resumed_run(ws);
        looping_run(ws);
        // A task run of the swarm: no saved workflow (the check loads the role's workflow file
        // when its fingerprint matches), a status.json beside the records.
        fs::write(ws.join("ship.yaml"), SHIP).unwrap();
        let task = ws.join("processed/20261122T080000.000001Z_engineer_t-1");
        let mut log = Log::new("2026-11-22T08:00:00Z");
        log.at(
            0.0,
            "run_started",
            json!({"run_id": "20261122T080000Z-cccccc", "workflow": "ship.yaml",
            "name": "ship", "fingerprint": orchestrate_lang::load::fingerprint(SHIP), "context": {},
            "timestamp_utc": "20261122T080000Z", "pid": 7}),
        )
        .step(
            0.0,
            "Plan",
            1,
            &[],
            "agent",
            agent(10.0, "plan", 1000, 100, Some(0.10)),
        )
        .step(10.0, "Build", 2, &[], "command", ok(20.0))
        .step(30.0, "Test", 3, &[], "command", ok(4.0))
        .step(34.0, "Deploy", 4, &[], "command", ok(1.0))
        .step(35.0, "Notify", 5, &[], "command", ok(0.0))
        .at(
            35.0,
            "run_finished",
            json!({"status": "succeeded", "exit_code": 0, "error": null}),
        );
        log.write(&task);
        write_state(
            &task,
            &state("20261122T080000Z-cccccc", "ship.yaml", SHIP, "succeeded"),
        );
        fs::write(task.join("t-1.task"), "build it\n").unwrap();
        fs::write(
            task.join("status.json"),
            json!({"schema": "status/v1", "agent": "engineer",
            "task": "t-1", "attempt": 1, "success": true, "exit_code": 0,
            "run_id": "20261122T080000Z-cccccc", "message": "workflow succeeded"})
            .to_string(),
        )
        .unwrap();
        // A failed task attempt whose Plan had no price.
        let failed_task = ws.join("failed/20261122T090000.000001Z_engineer_t-2");
        let mut log = Log::new("2026-11-22T09:00:00Z");
        log.at(
            0.0,
            "run_started",
            json!({"run_id": "20261122T090000Z-dddddd", "name": "ship"}),
        )
        .step(
            0.0,
            "Plan",
            1,
            &[],
            "agent",
            agent(50.0, "plan", 10, 10, None),
        )
        .step(50.0, "Build", 2, &[], "command", failed(3.0, 2))
        .at(
            53.0,
            "run_finished",
            json!({"status": "failed", "exit_code": 2, "error": "step `Build` failed"}),
        );
        log.write(&failed_task);
        // A spec-format processed/ entry (a task file only) is not a run and not reported.
        fs::create_dir_all(ws.join("processed/20261124T010835Z_0")).unwrap();
        fs::write(ws.join("processed/20261124T010835Z_0/part_1.task"), "x").unwrap();
        // Damaged in the middle: skipped with the line.
        let torn = run_root(ws, "20261123T000000Z-eeeeee");
        fs::create_dir_all(&torn).unwrap();
        fs::write(
            torn.join("events.jsonl"),
            "{\"v\":1,\"seq\":1,\"event\":\"run_started\"}\n{\"v\":1,\"se\n{\"v\":1,\"seq\":3}\n",
        )
        .unwrap();
        // From a newer orchestrate: skipped, never guessed at.
        let newer = run_root(ws, "20261123T000001Z-ffffff");
        fs::create_dir_all(&newer).unwrap();
        fs::write(
            newer.join("events.jsonl"),
            "{\"v\":2,\"seq\":1,\"ts\":\"2026-11-23T00:00:01Z\",\"event\":\"run_started\"}\n",
        )
        .unwrap();
        // A torn final line only (a crash mid-append): read, with a note.
        let crashed = run_root(ws, "20261123T000002Z-a0a0a0");
        let mut log = Log::new("2026-11-23T00:00:02Z");
        log.at(
            0.0,
            "run_started",
            json!({"run_id": "20261123T000002Z-a0a0a0", "name": "ship"}),
        )
        .step(
            0.0,
            "Plan",
            1,
            &[],
            "agent",
            agent(20.0, "plan", 10, 10, Some(0.02)),
        );
        log.lines
            .push_str("{\"v\":1,\"seq\":9,\"event\":\"step_fin");
        log.write(&crashed);

        let Report::Runs(all) = report(ws, RunSelector::All).unwrap() else {
            panic!("many runs")
        };
        let paths: Vec<&str> = all.runs.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(all.runs.len(), 5, "{paths:?}");
        assert!(paths.contains(&"processed/20261122T080000.000001Z_engineer_t-1"));
        assert!(paths.contains(&"failed/20261122T090000.000001Z_engineer_t-2"));
        assert_eq!(all.skipped.len(), 2, "{:?}", all.skipped);
        assert!(
            all.skipped
                .iter()
                .any(|s| s.reason.contains("line 2") && s.reason.contains("damaged"))
        );
        assert!(
            all.skipped
                .iter()
                .any(|s| s.reason.contains("newer") && s.reason.contains("upgrade"))
        );

        let plan = all.steps.iter().find(|s| s.step == "Plan").unwrap();
        assert_eq!(plan.count, 4);
        assert_eq!(plan.runs, 4);
        assert_eq!(plan.unpriced, 1);
        // Durations 30, 10, 50, 20 -> p50 20, p95 50; costs .30 .10 0 .02 -> p50 .02, p95 .30.
        assert_eq!(plan.p50_duration_sec, 20.0);
        assert_eq!(plan.p95_duration_sec, 50.0);
        assert!((plan.p50_cost_usd - 0.02).abs() < 1e-9);
        assert!((plan.p95_cost_usd - 0.30).abs() < 1e-9);
        let build = all.steps.iter().find(|s| s.step == "Build").unwrap();
        assert_eq!((build.count, build.failed), (4, 1));
        assert!((build.failure_rate - 0.25).abs() < 1e-9);
        assert_eq!(all.slowest[0].step, "Plan");
        assert_eq!(all.slowest[0].duration_sec, 50.0);
        assert_eq!(all.costliest[0].cost_usd, 0.30);
        assert!((all.total_cost_usd - 0.42).abs() < 1e-9);

        // The task run was checked against the role's workflow file (same fingerprint).
        let task_run = one(ws, "t-1");
        assert_eq!(task_run.source, RunSource::Processed);
        assert_eq!(
            task_run.task.as_ref().unwrap().role.as_deref(),
            Some("engineer")
        );
        let check = task_run.check.unwrap();
        assert!(
            check.workflow.contains("unchanged since the run"),
            "{check:?}"
        );
        assert!(check.is_clean() && check.repeated.is_empty(), "{check:?}");
        // The failed one has neither a workflow copy nor a state: not checked, with the reason.
        let failed_run = one(ws, "t-2");
        assert!(failed_run.check.is_none());
        assert!(
            failed_run
                .check_skipped
                .unwrap()
                .contains("no saved workflow.yaml")
        );
        // One damaged run asked for by name is an error that names it.
        let err = report(ws, RunSelector::One("20261123T000000Z-eeeeee".into())).unwrap_err();
        assert!(err.to_string().contains("line 2 of events.jsonl"), "{err}");

        let Report::Runs(since) = report(
            ws,
            RunSelector::Since(parse_ts("2026-11-22T00:00:00Z").unwrap()),
        )
        .unwrap() else {
            panic!("many runs")
        };
        assert_eq!(since.runs.len(), 3);
        let text = since.render();
        assert!(
            text.contains("3 runs (2 task runs) since 2026-11-22T00:00:00Z"),
            "{text}"
        );
        assert!(text.contains("skipped (records not readable)"), "{text}");
        assert!(text.contains("costliest steps:"), "{text}");
        assert!(text.contains("(+1 unpriced)"), "{text}");
    }
}
