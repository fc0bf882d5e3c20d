//! Rendering reports for people: the text of `RunReport` and `RunsReport`.
//!
//! Does not compute anything the JSON does not hold: it only lays out `report_data`.

use super::fold::exec_label;
use super::format::{fmt_cost, fmt_share, fmt_time, fmt_tokens, render_path, seconds, table};
use super::locate::RunSource;
use super::report_data::{RunReport, RunsReport};
use orchestrate_base::human;
use std::fmt::Write as _;

impl RunReport {
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.render_header(&mut out);
        self.render_steps(&mut out);
        self.render_path_check(&mut out);
        self.render_failures_and_children(&mut out);
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    /// The run, its task, its times and its error.
    fn render_header(&self, out: &mut String) {
        let _ = write!(out, "run {}", self.run_id);
        if let Some(workflow) = &self.workflow {
            let _ = write!(out, "  workflow {workflow}");
        }
        let _ = write!(out, "  {}", self.status);
        if self.resumes > 0 {
            let _ = write!(
                out,
                "  (resumed {} time{})",
                self.resumes,
                if self.resumes == 1 { "" } else { "s" }
            );
        }
        out.push('\n');
        if let Some(task) = &self.task {
            match (&task.task, &task.role) {
                (Some(id), Some(role)) => {
                    let _ = write!(out, "task {id} of role {role}");
                    if let Some(attempt) = task.attempt {
                        let _ = write!(out, " (attempt {attempt})");
                    }
                    let _ = writeln!(out, " in {}", self.path);
                }
                // No status.json (the attempt did not get to write one).
                _ => {
                    let _ = writeln!(out, "task run in {}", self.path);
                }
            }
        }
        if let Some(started) = &self.started_at {
            let _ = write!(out, "started {}", fmt_time(started));
            if let Some(finished) = &self.finished_at {
                let _ = write!(out, "  finished {}", fmt_time(finished));
            }
            if let Some(wall) = self.wall_sec {
                let _ = write!(out, "  wall {}", human::duration(seconds(wall)));
            }
            out.push('\n');
        }
        if let Some(error) = &self.error {
            let _ = writeln!(out, "error: {error}");
        }
        out.push('\n');
    }

    /// The table of steps with the totals, and the tokens no price covers.
    fn render_steps(&self, out: &mut String) {
        let mut rows: Vec<Vec<String>> = self
            .steps
            .iter()
            .map(|r| {
                let name = if r.parallel {
                    format!("{} (parallel)", r.step)
                } else if r.container {
                    format!("{} (for_each)", r.step)
                } else {
                    r.step.clone()
                };
                let mut outcome = Vec::new();
                if r.failed > 0 {
                    outcome.push(format!("{} failed", r.failed));
                }
                if r.rejected > 0 {
                    outcome.push(format!("{} rejected", r.rejected));
                }
                if r.skipped > 0 {
                    outcome.push(format!("{} skipped", r.skipped));
                }
                let cost = if r.unpriced > 0 {
                    format!("{} (+{} unpriced)", fmt_cost(r.cost_usd), r.unpriced)
                } else {
                    fmt_cost(r.cost_usd)
                };
                vec![
                    name,
                    r.visits.to_string(),
                    r.attempts.to_string(),
                    human::duration(seconds(r.duration_sec)),
                    if r.container {
                        "(body)".into()
                    } else {
                        fmt_share(r.duration_share)
                    },
                    fmt_tokens(r.tokens.input),
                    fmt_tokens(r.tokens.output),
                    fmt_tokens(r.tokens.cache()),
                    cost,
                    fmt_share(r.cost_share),
                    outcome.join(", "),
                ]
            })
            .collect();
        let t = &self.totals;
        rows.push(vec![
            "total".into(),
            t.visits.to_string(),
            t.attempts.to_string(),
            human::duration(seconds(t.duration_sec)),
            String::new(),
            fmt_tokens(t.tokens.input),
            fmt_tokens(t.tokens.output),
            fmt_tokens(t.tokens.cache()),
            if t.unpriced > 0 {
                format!("{} (+{} unpriced)", fmt_cost(t.cost_usd), t.unpriced)
            } else {
                fmt_cost(t.cost_usd)
            },
            String::new(),
            String::new(),
        ]);
        out.push_str(&table(
            &[
                "step", "visits", "attempts", "time", "time%", "in", "out", "cache", "cost",
                "cost%", "",
            ],
            "lrrrrrrrrrl",
            &rows,
        ));
        out.push('\n');
        // What the cost column cannot show: tokens spent on models with no price.
        for e in self.executions.iter().filter(|e| e.unpriced) {
            let t = &e.tokens;
            let tokens = t.input + t.output + t.cache_read + t.cache_write;
            let at = if e.iteration.is_empty() {
                String::new()
            } else {
                format!(
                    " [{}]",
                    e.iteration
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(".")
                )
            };
            let _ = writeln!(
                out,
                "! {}{at}: {} tokens, {}",
                e.step,
                orchestrate_base::human::group_digits(tokens),
                orchestrate_engine::progress::cost_unknown(e.model.as_deref())
            );
        }
    }

    /// The path taken, and what checking it against the workflow found.
    fn render_path_check(&self, out: &mut String) {
        let _ = writeln!(out, "path: {}", render_path(&self.path_taken));
        match (&self.check, &self.check_skipped) {
            (Some(check), _) => {
                let _ = writeln!(out, "checked against {}:", check.workflow);
                if check.out_of_order.is_empty() && check.unknown.is_empty() {
                    let _ = writeln!(out, "  ✓ every transition follows an edge of the graph");
                }
                for o in &check.out_of_order {
                    let _ = writeln!(
                        out,
                        "  ! out of order at #{}: {} → {} (no edge allows it; from {} the graph goes to {})",
                        o.position + 1,
                        o.from,
                        o.to,
                        o.from,
                        if o.allowed.is_empty() {
                            "nowhere".to_string()
                        } else {
                            o.allowed.join(", ")
                        }
                    );
                }
                if !check.unknown.is_empty() {
                    let _ = writeln!(out, "  ! not in the workflow: {}", check.unknown.join(", "));
                }
                for r in &check.repeated {
                    let _ = writeln!(
                        out,
                        "  ↻ repeated: {} ×{} (at most {} in one pass)",
                        r.step, r.visits, r.most_in_one_pass
                    );
                }
                if !check.skipped.is_empty() {
                    let _ = writeln!(
                        out,
                        "  ! skipped (on the default path, never entered): {}",
                        check.skipped.join(", ")
                    );
                }
                if !check.not_reached.is_empty() {
                    let _ = writeln!(
                        out,
                        "  - not reached (the run stopped before them): {}",
                        check.not_reached.join(", ")
                    );
                }
            }
            (None, Some(reason)) => {
                let _ = writeln!(out, "path not checked: {reason}");
            }
            (None, None) => {}
        }
    }

    /// The loop detected, the failures and the child runs.
    fn render_failures_and_children(&self, out: &mut String) {
        if let Some(cycle) = &self.loop_detected {
            let _ = writeln!(out, "loop detected: {cycle}");
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "failures:");
            for f in &self.failures {
                let _ = writeln!(
                    out,
                    "  {} (exec {}) {}: {}{}",
                    f.step,
                    exec_label(&f.lane, f.exec),
                    f.status,
                    f.error,
                    if f.superseded {
                        " [run again after resume]"
                    } else {
                        ""
                    }
                );
            }
        }
        if !self.children.is_empty() {
            let _ = writeln!(
                out,
                "\nchild runs (their spending is in their steps' rows above):"
            );
            for child in &self.children {
                let id = child.run_id.as_deref().unwrap_or("?");
                let _ = writeln!(
                    out,
                    "  {} (exec {}): workflow {}, run {id} {}  (orchestrate report {id})",
                    child.step, child.exec, child.workflow, child.status
                );
            }
        }
    }
}

impl RunsReport {
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let tasks = self
            .runs
            .iter()
            .filter(|r| r.source != RunSource::Runs)
            .count();
        let _ = write!(
            out,
            "{} run{}",
            self.runs.len(),
            if self.runs.len() == 1 { "" } else { "s" }
        );
        if tasks > 0 {
            let _ = write!(
                out,
                " ({tasks} task run{})",
                if tasks == 1 { "" } else { "s" }
            );
        }
        if let Some(since) = &self.since {
            let _ = write!(out, " since {since}");
        }
        let _ = writeln!(
            out,
            ": {} of step time, {}",
            human::duration(seconds(self.total_duration_sec)),
            fmt_cost(self.total_cost_usd)
        );
        self.render_runs(&mut out);
        self.render_step_stats(&mut out);
        for (title, list) in [("slowest", &self.slowest), ("costliest", &self.costliest)] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{title} steps:");
            for n in list {
                let _ = writeln!(
                    out,
                    "  {:>8}  {:>9}  {} (exec {}) in {}",
                    human::duration(seconds(n.duration_sec)),
                    fmt_cost(n.cost_usd),
                    n.step,
                    exec_label(&n.lane, n.exec),
                    n.path
                );
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(out, "\nskipped (records not readable):");
            for s in &self.skipped {
                let _ = writeln!(out, "  {}: {}", s.path, s.reason);
            }
        }
        out
    }

    /// One line per run (or why there are none).
    fn render_runs(&self, out: &mut String) {
        if self.runs.is_empty() {
            let _ = writeln!(
                out,
                "no runs to report on; start one with `orchestrate run WORKFLOW`"
            );
        } else {
            out.push('\n');
            let rows: Vec<Vec<String>> = self
                .runs
                .iter()
                .map(|r| {
                    vec![
                        if r.source == RunSource::Runs {
                            r.run_id.clone()
                        } else {
                            r.path.clone()
                        },
                        r.workflow.clone().unwrap_or_default(),
                        r.status.clone(),
                        r.started_at.as_deref().map(fmt_time).unwrap_or_default(),
                        human::duration(seconds(r.duration_sec)),
                        fmt_cost(r.cost_usd),
                    ]
                })
                .collect();
            out.push_str(&table(
                &["run", "workflow", "status", "started", "time", "cost"],
                "llllrr",
                &rows,
            ));
        }
    }

    /// Statistics per step name over the runs.
    fn render_step_stats(&self, out: &mut String) {
        if !self.steps.is_empty() {
            out.push('\n');
            let rows: Vec<Vec<String>> = self
                .steps
                .iter()
                .map(|s| {
                    vec![
                        s.step.clone(),
                        s.count.to_string(),
                        s.runs.to_string(),
                        human::duration(seconds(s.p50_duration_sec)),
                        human::duration(seconds(s.p95_duration_sec)),
                        fmt_cost(s.p50_cost_usd),
                        fmt_cost(s.p95_cost_usd),
                        format!("{:.0}%", s.failure_rate * 100.0),
                        human::duration(seconds(s.total_duration_sec)),
                        if s.unpriced > 0 {
                            format!("{} (+{} unpriced)", fmt_cost(s.total_cost_usd), s.unpriced)
                        } else {
                            fmt_cost(s.total_cost_usd)
                        },
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "step",
                    "count",
                    "runs",
                    "p50 time",
                    "p95 time",
                    "p50 cost",
                    "p95 cost",
                    "fail%",
                    "total time",
                    "total cost",
                ],
                "lrrrrrrrrr",
                &rows,
            ));
        }
    }
}
