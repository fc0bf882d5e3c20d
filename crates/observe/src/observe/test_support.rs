//! Test fixtures shared by the unit tests of the submodules: an `events.jsonl` writer shaped
//! like the runner's, step results, state snapshots, and two recorded runs.
//!
//! Compiled only for tests; nothing outside `#[cfg(test)]` may use it.

use super::fold::parse_ts;
use super::report::{Report, RunSelector, report};
use super::report_data::RunReport;
use chrono::{DateTime, Utc};
use orchestrate_engine::state::RunDir;
use serde_json::Value;
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};

/// Writes an `events.jsonl` the way the runner does: `v`, `seq`, `ts`, `event`, fields.
pub(super) struct Log {
    pub(super) seq: u64,
    pub(super) t0: DateTime<Utc>,
    pub(super) lines: String,
}

impl Log {
    pub(super) fn new(start: &str) -> Log {
        Log {
            seq: 0,
            t0: parse_ts(start).unwrap(),
            lines: String::new(),
        }
    }

    /// Appends `event` at `at` seconds after the start.
    pub(super) fn at(&mut self, at: f64, event: &str, fields: Value) -> &mut Log {
        self.seq += 1;
        let ts = self.t0 + chrono::Duration::microseconds((at * 1e6) as i64);
        let mut record = json!({
            "v": 1,
            "seq": self.seq,
            "ts": ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "event": event,
        });
        if let (Value::Object(r), Value::Object(f)) = (&mut record, fields) {
            r.extend(f);
        }
        self.lines.push_str(&record.to_string());
        self.lines.push('\n');
        self
    }

    fn ts(&self, at: f64) -> String {
        (self.t0 + chrono::Duration::microseconds((at * 1e6) as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    /// `step_started` (+ `process_started` for process kinds) and `step_finished`.
    pub(super) fn step(
        &mut self,
        at: f64,
        name: &str,
        exec: u64,
        iteration: &[u64],
        kind: &str,
        result: Value,
    ) -> &mut Log {
        let duration = result["duration"].as_f64().unwrap_or(0.0);
        self.at(
            at,
            "step_started",
            json!({"step": name, "exec": exec, "kind": kind, "iteration": iteration}),
        );
        if kind != "for_each" && kind != "approval" {
            let attempts = result["attempts"].as_u64().unwrap_or(1);
            for attempt in 1..=attempts {
                self.at(
                    at,
                    "process_started",
                    json!({"step": name, "exec": exec, "attempt": attempt, "argv": ["make"]}),
                );
            }
        }
        self.finished(at + duration, name, exec, iteration, result)
    }

    pub(super) fn finished(
        &mut self,
        at: f64,
        name: &str,
        exec: u64,
        iteration: &[u64],
        mut result: Value,
    ) -> &mut Log {
        let duration = result["duration"].as_f64().unwrap_or(0.0);
        result["started_at"] = json!(self.ts(at - duration));
        result["finished_at"] = json!(self.ts(at));
        self.at(
            at,
            "step_finished",
            json!({"step": name, "exec": exec, "iteration": iteration, "result": result}),
        )
    }

    pub(super) fn write(&self, root: &Path) {
        fs::create_dir_all(root).unwrap();
        fs::write(root.join("events.jsonl"), &self.lines).unwrap();
    }
}

pub(super) fn ok(duration: f64) -> Value {
    json!({"status": "succeeded", "exit_code": 0, "attempts": 1, "duration": duration,
               "outcome": {"kind": "exited", "code": 0}, "output": "", "truncated": false})
}

pub(super) fn failed(duration: f64, code: i64) -> Value {
    json!({"status": "failed", "exit_code": code, "attempts": 1, "duration": duration,
               "error": format!("exited with code {code}"),
               "outcome": {"kind": "exited", "code": code}, "output": "", "truncated": false})
}

pub(super) fn agent(
    duration: f64,
    phase: &str,
    input: u64,
    output: u64,
    cost: Option<f64>,
) -> Value {
    json!({"status": "succeeded", "exit_code": 0, "attempts": 1, "duration": duration,
               "runtime": "claude", "profile": "claude", "model": "claude-sonnet-4-5",
               "phase": phase, "result": "done", "session_id": "s-1",
               "usage": {"input": input, "output": output, "cache_read": 4000,
                         "cache_write": 200, "reasoning": 0},
               "cost_usd": cost, "turns": 3, "denials": [], "api_retries": 0,
               "truncated": false})
}

pub(super) fn state(run_id: &str, workflow: &str, text: &str, status: &str) -> Value {
    json!({
        "format_version": 1, "run_id": run_id, "workflow": workflow,
        "workflow_name": "ship", "fingerprint": orchestrate_lang::load::fingerprint(text),
        "workspace": "/ws", "status": status,
        "started_at": "2026-11-20T10:00:00.000000Z",
        "updated_at": "2026-11-20T10:05:00.000000Z",
        "timestamp_utc": "20261120T100000Z", "context": {}, "executions": 0,
        "events_seq": 0, "resumes": 0, "steps": {}
    })
}

pub(super) fn write_state(root: &Path, value: &Value) {
    fs::create_dir_all(root).unwrap();
    fs::write(
        root.join("state.json"),
        serde_json::to_vec_pretty(value).unwrap(),
    )
    .unwrap();
}

pub(super) const SHIP: &str = "name: ship
steps:
  - name: Plan
    prompt: \"Plan the change\"
    phase: plan
  - name: Build
    command: [\"make\"]
  - name: Test
    command: [\"make\", \"test\"]
    on:
      failure: {goto: Build}
  - name: Deploy
    command: [\"deploy\"]
  - name: Notify
    command: [\"notify\"]
";

const LOOPED: &str = "name: resumable
steps:
  - name: Prep
    command: [\"bash\", \"-c\", \"echo prep\"]
  - name: Loop
    for_each:
      items: [a, b]
      steps:
        - name: Work
          command: [\"bash\", \"-c\", \"echo work $1\", \"w\", \"${item}\"]
        - name: Check
          command: [\"bash\", \"-c\", \"test -f ok\"]
  - name: Done
    command: [\"echo\", \"done\"]
";

pub(super) fn run_root(ws: &Path, id: &str) -> PathBuf {
    RunDir::new(ws, id).root
}

/// The run of LOOPED that failed in Check of item 0, then was resumed and succeeded: the
/// records the runner writes (replayed steps are not recorded again; execution numbers
/// restart with the resume).
pub(super) fn resumed_run(ws: &Path) -> String {
    let id = "20261120T100000Z-aaaaaa";
    let root = run_root(ws, id);
    let mut log = Log::new("2026-11-20T10:00:00Z");
    log.at(
        0.0,
        "run_started",
        json!({"run_id": id, "workflow": "workflows/r.yaml",
            "name": "resumable", "fingerprint": orchestrate_lang::load::fingerprint(LOOPED),
            "context": {}, "timestamp_utc": "20261120T100000Z", "pid": 4242}),
    )
    .step(0.0, "Prep", 1, &[], "command", ok(1.0))
    .at(
        1.0,
        "step_started",
        json!({"step": "Loop", "exec": 2, "kind": "for_each", "iteration": []}),
    )
    .at(1.0, "loop_started", json!({"step": "Loop", "total": 2}))
    .at(
        1.0,
        "iteration_started",
        json!({"step": "Loop", "index": 0, "total": 2}),
    )
    .step(1.0, "Work", 3, &[0], "command", ok(2.0))
    .step(3.0, "Check", 4, &[0], "command", failed(0.5, 3))
    .finished(
        3.5,
        "Loop",
        2,
        &[],
        json!({"status": "failed", "exit_code": 3, "duration": 2.5,
                "iterations": 0, "total": 2,
                "error": "iteration 0 failed: step `Check` (line 11) failed: exited with code 3"}),
    )
    .at(
        3.5,
        "run_finished",
        json!({"status": "failed", "exit_code": 1,
                "error": "step `Loop` (line 5) failed: iteration 0 failed"}),
    )
    .at(60.0, "run_resumed", json!({"resumes": 1, "journal": 4}))
    .at(
        60.0,
        "step_started",
        json!({"step": "Loop", "exec": 2, "kind": "for_each", "iteration": []}),
    )
    .at(60.0, "loop_started", json!({"step": "Loop", "total": 2}))
    .at(
        60.0,
        "iteration_started",
        json!({"step": "Loop", "index": 0, "total": 2}),
    )
    .step(60.0, "Check", 4, &[0], "command", ok(0.5))
    .at(
        60.5,
        "iteration_started",
        json!({"step": "Loop", "index": 1, "total": 2}),
    )
    .step(60.5, "Work", 5, &[1], "command", ok(2.0))
    .step(62.5, "Check", 6, &[1], "command", ok(0.5))
    .finished(
        63.0,
        "Loop",
        2,
        &[],
        json!({"status": "succeeded", "exit_code": 0,
                "duration": 3.0, "iterations": 2, "total": 2}),
    )
    .step(63.0, "Done", 7, &[], "command", ok(1.0))
    .at(
        64.0,
        "run_finished",
        json!({"status": "succeeded", "exit_code": 0, "error": null}),
    );
    log.write(&root);
    fs::write(root.join("workflow.yaml"), LOOPED).unwrap();
    write_state(&root, &state(id, "workflows/r.yaml", LOOPED, "succeeded"));
    id.to_string()
}

/// A run of SHIP whose Test failed once and went back to Build (a loop with repeats), then
/// jumped from Test straight to Notify (out of order), never entering Deploy.
pub(super) fn looping_run(ws: &Path) -> String {
    let id = "20261121T090000Z-bbbbbb";
    let root = run_root(ws, id);
    let mut log = Log::new("2026-11-21T09:00:00Z");
    log.at(
        0.0,
        "run_started",
        json!({"run_id": id, "workflow": "ship.yaml", "name": "ship",
            "fingerprint": "x", "context": {}, "timestamp_utc": "20261121T090000Z", "pid": 1}),
    )
    .at(
        0.0,
        "phase_entered",
        json!({"step": "Plan", "phase": "plan", "from": null, "runtime": "claude"}),
    )
    .step(
        0.0,
        "Plan",
        1,
        &[],
        "agent",
        agent(30.0, "plan", 2000, 500, Some(0.30)),
    )
    .step(30.0, "Build", 2, &[], "command", ok(10.0))
    .step(40.0, "Test", 3, &[], "command", failed(5.0, 1))
    .at(45.0, "goto", json!({"from": "Test", "to": "Build"}))
    .step(45.0, "Build", 4, &[], "command", ok(10.0))
    .step(55.0, "Test", 5, &[], "command", ok(5.0))
    .step(60.0, "Notify", 6, &[], "command", ok(0.0))
    .at(
        60.0,
        "run_finished",
        json!({"status": "succeeded", "exit_code": 0, "error": null}),
    );
    log.write(&root);
    fs::write(root.join("workflow.yaml"), SHIP).unwrap();
    write_state(&root, &state(id, "ship.yaml", SHIP, "succeeded"));
    id.to_string()
}

pub(super) fn one(ws: &Path, id: &str) -> RunReport {
    match report(ws, RunSelector::One(id.into())).unwrap() {
        Report::Run(run) => *run,
        Report::Runs(_) => panic!("asked for one run"),
    }
}
