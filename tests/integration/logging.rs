//! Logs through `tracing`: `--log-format json` writes one JSON object per line with level,
//! target, fields and message; `--log-level` and `RUST_LOG` choose what is shown (the flag wins);
//! the text lines keep the messages. The agent's closing summary is its display, not a log line.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// A workspace with role `r` (one command step) and task `t1` queued.
fn queued() -> Ws {
    let ws = Ws::new();
    role(
        &ws,
        "r",
        "settle_ms: 0\n",
        "steps:\n  - name: A\n    command: [\"true\"]\n",
    );
    ws.run(&["enqueue", "r", "--text", "hi", "--name", "t1"])
        .ok();
    ws
}

/// `agent r --once` with `args` and `env`, which processes `t1`.
fn agent(ws: &mut Ws, args: &[&str], env: &[(&str, &str)]) -> Run {
    for (key, value) in env {
        ws.env(key, value);
    }
    let mut argv = vec!["agent", "r", "--once"];
    argv.extend(args);
    let run = ws.run(&argv);
    run.ok().stderr_has("1 processed, 0 failed");
    run
}

/// The log lines: all of stderr but the agent's summary.
fn log_lines(run: &Run) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| !l.starts_with("[r] stopped: "))
        .collect()
}

#[test]
fn json_logs_are_one_object_per_line_with_the_task_claimed_and_finished() {
    let mut ws = queued();
    let run = agent(&mut ws, &["--log-format", "json"], &[]);
    let events: Vec<Value> = log_lines(&run)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", run.stderr)))
        .collect();
    for event in &events {
        assert!(
            event["level"].is_string()
                && event["target"].is_string()
                && event["fields"]["message"].is_string(),
            "{event}"
        );
    }
    let find = |prefix: &str| {
        events
            .iter()
            .find(|e| {
                e["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("no {prefix:?} event in\n{}", run.stderr))
    };
    let claimed = find("claimed `t1` (attempt 1)");
    assert_eq!(claimed["level"], "INFO");
    assert_eq!(claimed["target"], "orchestrate_swarm::worker");
    assert_eq!(claimed["fields"]["role"], "r");
    assert_eq!(claimed["fields"]["task"], "t1");
    assert_eq!(claimed["fields"]["attempt"], 1);
    let finished = find("`t1` attempt 1 processed: processed/");
    assert_eq!(finished["level"], "INFO");
    assert_eq!(finished["fields"]["task"], "t1");
    assert_eq!(finished["fields"]["outcome"], "processed");
    let status: Value =
        serde_json::from_str(&ws.read(&format!("processed/{}/status.json", only_processed(&ws))))
            .unwrap();
    assert_eq!(finished["fields"]["run_id"], status["run_id"]);
}

fn only_processed(ws: &Ws) -> String {
    let names = entries(ws, "processed");
    assert_eq!(names.len(), 1, "{names:?}");
    names[0].clone()
}

#[test]
fn text_logs_keep_the_messages_after_level_and_target() {
    let mut ws = queued();
    let run = agent(&mut ws, &[], &[]);
    run.stderr_has("INFO orchestrate_swarm::worker: watching inbox/r (1 queued, concurrency 1)")
        .stderr_has("INFO orchestrate_swarm::worker: claimed `t1` (attempt 1) role=r replica=1 task=t1 attempt=1")
        .stderr_has("`t1` attempt 1 processed: processed/");
    assert!(
        !run.stderr.contains('\x1b'),
        "colours off a terminal: {}",
        run.stderr
    );
}

#[test]
fn log_level_warn_hides_info_lines() {
    let mut ws = queued();
    let run = agent(&mut ws, &["--log-level", "warn"], &[]);
    assert_eq!(log_lines(&run), Vec::<&str>::new(), "{}", run.stderr);
}

#[test]
fn rust_log_filters_by_target_and_the_flag_wins_over_it() {
    let mut ws = queued();
    let run = agent(&mut ws, &[], &[("RUST_LOG", "warn")]);
    assert_eq!(log_lines(&run), Vec::<&str>::new(), "{}", run.stderr);

    let mut ws = queued();
    let run = agent(
        &mut ws,
        &[],
        &[("RUST_LOG", "warn,orchestrate_swarm::worker=info")],
    );
    run.stderr_has("claimed `t1`");

    let mut ws = queued();
    let run = agent(&mut ws, &["--log-level", "info"], &[("RUST_LOG", "error")]);
    run.stderr_has("claimed `t1`");
}

#[test]
fn log_flags_refuse_what_they_do_not_know() {
    let ws = Ws::new();
    for (flag, value) in [("--log-level", "loud"), ("--log-format", "xml")] {
        let run = ws.run(&[flag, value, "validate", "wf.yaml"]);
        run.code(2).stderr_has(flag);
    }
}

#[test]
fn swarm_up_hands_its_log_flags_to_the_supervisor_and_its_role_processes() {
    let ws = queued();
    let up = run_within(
        &ws,
        &[
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "swarm",
            "up",
            "-d",
            "--grace",
            "1",
        ],
        Duration::from_secs(60),
    );
    let down = || {
        let _ = ws
            .cmd(&["swarm", "down", "--force", "--timeout", "20"])
            .output();
    };
    if up.code != 0 {
        down();
        panic!("swarm up failed: {}", up.stderr);
    }
    let log = ".orchestrate/swarm/supervisor.log";
    let claimed = |text: &str| text.contains("claimed `t1`");
    wait_until("t1 to be claimed", Duration::from_secs(30), || {
        ws.exists(log) && claimed(&ws.read(log))
    });
    down();
    let text = ws.read(log);
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // The role process's claim, in JSON, and a debug event of the supervisor's.
    assert!(
        lines
            .iter()
            .any(|e| claimed(e["fields"]["message"].as_str().unwrap_or(""))),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|e| e["level"] == "DEBUG" && e["target"] == "orchestrate_swarm::supervisor"),
        "{text}"
    );
}

#[test]
fn a_task_runs_warnings_reach_the_role_process_log() {
    let (mut ws, codex_home) = crate::pricing::codex_ws();
    role(
        &ws,
        "r",
        "settle_ms: 0\n",
        &crate::pricing::ask(Some("my-model-1"), "budget: {max_cost_usd: 5}\n"),
    );
    ws.run(&["enqueue", "r", "--text", "hi", "--name", "t1"])
        .ok();
    let run = agent(&mut ws, &["--log-format", "json"], &[]);
    let warning = log_lines(&run)
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("max_cost_usd cannot count step Ask"))
        })
        .unwrap_or_else(|| panic!("no warning in the role's log:\n{}", run.stderr));
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["target"], "orchestrate_engine::runner");
    assert!(warning["fields"]["run_id"].is_string(), "{warning}");
    drop(codex_home);
}
