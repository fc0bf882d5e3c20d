//! The report over many runs: one line per run, per-step statistics with percentiles, the
//! slowest and costliest executions, and the runs left out with why.
//!
//! Does not analyze a run itself (`analyze`) or render (`report_text`).

use super::analyze::{analyze, share};
use super::fold::{Execution, Tokens, parse_ts};
use super::load::{Loaded, load, run_started};
use super::locate::all_runs;
use super::report_data::{Notable, RunLine, RunReport, RunsReport, SkippedRun, StepStats};
use chrono::{DateTime, Utc};
use orchestrate_engine::event::Envelope;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Entries in the "slowest" and "costliest" lists of a many-run report.
const TOP_N: usize = 5;

fn run_start(loaded: &Loaded) -> Option<DateTime<Utc>> {
    let first_ts = || {
        let first = loaded.events.first()?;
        Some(Envelope::from_record(first).ts)
    };
    run_started(&loaded.events)
        .map(|(envelope, _)| envelope.ts)
        .filter(|ts| !ts.is_empty())
        .or_else(first_ts)
        .filter(|ts| !ts.is_empty())
        .as_deref()
        .and_then(parse_ts)
        .or_else(|| loaded.state.as_ref().and_then(|s| parse_ts(&s.started_at)))
}

pub(super) fn many(workspace: &Path, since: Option<DateTime<Utc>>) -> RunsReport {
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    let mut reports: Vec<(DateTime<Utc>, RunReport)> = Vec::new();
    for loc in all_runs(workspace) {
        let loaded = match load(workspace, &loc) {
            Ok(loaded) => loaded,
            Err(reason) => {
                skipped.push(SkippedRun {
                    path: loc.label(workspace),
                    reason,
                });
                continue;
            }
        };
        let start = run_start(&loaded);
        if let Some(since) = since {
            match start {
                Some(start) if start >= since => {}
                Some(_) => continue,
                None => {
                    skipped.push(SkippedRun {
                        path: loc.label(workspace),
                        reason: "its start time is not recorded, so --since cannot place it".into(),
                    });
                    continue;
                }
            }
        }
        reports.push((start.unwrap_or_default(), analyze(workspace, &loaded)));
    }
    reports.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.path.cmp(&b.1.path)));

    let mut samples: BTreeMap<String, Vec<&Execution>> = BTreeMap::new();
    let mut runs_of: HashMap<String, HashSet<usize>> = HashMap::new();
    let mut notable: Vec<Notable> = Vec::new();
    let mut total_duration = 0.0;
    let mut total_cost = 0.0;
    for (index, (_, report)) in reports.iter().enumerate() {
        runs.push(RunLine {
            run_id: report.run_id.clone(),
            source: report.source,
            path: report.path.clone(),
            workflow: report.workflow.clone(),
            status: report.status.clone(),
            started_at: report.started_at.clone(),
            duration_sec: report.totals.duration_sec,
            cost_usd: report.totals.cost_usd,
        });
        total_duration += report.totals.duration_sec;
        total_cost += report.totals.cost_usd;
        for e in &report.executions {
            if e.status == "skipped" || e.container {
                continue;
            }
            samples.entry(e.step.clone()).or_default().push(e);
            runs_of.entry(e.step.clone()).or_default().insert(index);
            notable.push(Notable {
                run_id: report.run_id.clone(),
                path: report.path.clone(),
                step: e.step.clone(),
                exec: e.exec,
                lane: e.lane.clone(),
                duration_sec: e.duration_sec,
                cost_usd: e.cost_usd,
            });
        }
    }
    let mut steps: Vec<StepStats> = samples
        .into_iter()
        .map(|(step, executions)| {
            let durations: Vec<f64> = executions.iter().map(|e| e.duration_sec).collect();
            let costs: Vec<f64> = executions.iter().map(|e| e.cost_usd).collect();
            let count = u32::try_from(executions.len()).unwrap_or(u32::MAX);
            let failed = executions.iter().filter(|e| e.status == "failed").count() as u32;
            let mut tokens = Tokens::default();
            executions.iter().for_each(|e| tokens.add(&e.tokens));
            StepStats {
                runs: runs_of.get(&step).map_or(0, |r| r.len() as u32),
                p50_duration_sec: percentile(&durations, 0.50),
                p95_duration_sec: percentile(&durations, 0.95),
                p50_cost_usd: percentile(&costs, 0.50),
                p95_cost_usd: percentile(&costs, 0.95),
                failed,
                rejected: executions.iter().filter(|e| e.status == "rejected").count() as u32,
                failure_rate: share(f64::from(failed), f64::from(count)),
                total_duration_sec: durations.iter().sum(),
                total_cost_usd: costs.iter().sum(),
                unpriced: executions.iter().filter(|e| e.unpriced).count() as u32,
                tokens,
                count,
                step,
            }
        })
        .collect();
    steps.sort_by(|a, b| {
        b.total_duration_sec
            .total_cmp(&a.total_duration_sec)
            .then_with(|| a.step.cmp(&b.step))
    });
    let mut slowest = notable.clone();
    slowest.sort_by(|a, b| b.duration_sec.total_cmp(&a.duration_sec));
    slowest.truncate(TOP_N);
    let mut costliest: Vec<Notable> = notable.into_iter().filter(|n| n.cost_usd > 0.0).collect();
    costliest.sort_by(|a, b| b.cost_usd.total_cmp(&a.cost_usd));
    costliest.truncate(TOP_N);
    RunsReport {
        since: since.map(|s| s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        runs,
        skipped,
        steps,
        slowest,
        costliest,
        total_duration_sec: total_duration,
        total_cost_usd: total_cost,
    }
}

/// Nearest-rank percentile: the smallest sample with at least `p` of the samples at or below.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[3.0], 0.95), 3.0);
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 10.0);
        assert_eq!(percentile(&v, 0.95), 19.0);
    }
}
