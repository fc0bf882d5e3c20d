//! Budgets and idle timeouts, against a stand-in `claude` (a bash script in `WS/bin`) that prints
//! real-format stream JSON with known usage, then sleeps until it is stopped.
//!
//! The stand-in announces `claude-sonnet-4-5` ($3 / $15 per million input / output tokens) and
//! reports two API messages: 1000 in + 500 out (1500 tokens, $0.0105), then 2000 in + 1000 out
//! (4500 tokens in all, $0.0315 in all). It writes its pid and its sleeping child's pid, and
//! touches `reported` just before the second message.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const DEADLINE: Duration = Duration::from_secs(20);

/// The stand-in's output, then a long sleep (its child) until the engine stops it.
pub(crate) fn stand_in(ws: &mut Ws) {
    ws.with_bin_path();
    let script = r#"#!/usr/bin/env bash
dir="$STANDIN_DIR"
echo $$ > "$dir/agent.pid"
cat > /dev/null
echo '{"type":"system","subtype":"init","session_id":"s-1","model":"claude-sonnet-4-5"}'
echo '{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"thinking"}],"usage":{"input_tokens":1000,"output_tokens":500}},"session_id":"s-1"}'
sleep 0.2
sleep 600 &
echo $! > "$dir/sleep.pid"
touch "$dir/reported"
echo '{"type":"assistant","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"still going"}],"usage":{"input_tokens":2000,"output_tokens":1000}},"session_id":"s-1"}'
wait
echo '{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"s-1","usage":{"input_tokens":3000,"output_tokens":1500}}'
"#;
    ws.script("bin/claude", script);
    let dir = ws.join("standin");
    std::fs::create_dir_all(&dir).unwrap();
    ws.env("STANDIN_DIR", &dir.display().to_string());
}

pub(crate) fn pid_in(ws: &Ws, rel: &str) -> u32 {
    ws.read(rel).trim().parse().expect("a pid")
}

pub(crate) const AGENT_STEP: &str = r#"
  - name: Impl
    runtime: claude
    prompt: "implement it"
    phase: write
    retry: {max_attempts: 1}
"#;

/// Starts `orchestrate ARGS`, waits until the stand-in has reported its usage, and checks that
/// the agent and its 600 s child are stopped (long before their end); returns the finished run.
pub(crate) fn run_until_stopped(ws: &Ws, args: &[&str]) -> Run {
    let started = Started::new(ws, args);
    let reported: PathBuf = ws.join("standin/reported");
    wait_until("the stand-in to report its usage", DEADLINE, || {
        reported.exists()
    });
    let agent = pid_in(ws, "standin/agent.pid");
    let sleeper = pid_in(ws, "standin/sleep.pid");
    wait_until(
        "the agent's process group to be gone (it sleeps 600 s unless stopped)",
        Duration::from_secs(120),
        || !pid_alive(agent) && !pid_alive(sleeper),
    );
    started.finish(DEADLINE)
}

fn budget_event(events: &[Value]) -> Value {
    events
        .iter()
        .find(|e| e["event"] == "budget_exceeded")
        .cloned()
        .unwrap_or_else(|| panic!("no budget_exceeded event in {events:#?}"))
}

#[test]
fn a_cost_budget_stops_the_agent_at_the_crossing_with_its_figures() {
    let mut ws = Ws::new();
    stand_in(&mut ws);
    ws.workflow(&format!(
        "budget:\n  max_cost_usd: 0.02\nsteps:{AGENT_STEP}  - name: After\n    command: [touch, after]\n"
    ));
    let run = run_until_stopped(&ws, &["run", "wf.yaml"]);
    run.code(1)
        .stderr_has("budget exceeded: max_cost_usd (the run's budget, set at wf.yaml:2): spent $0.0315 against a limit of $0.02; the run has used 4500 tokens, $0.0315")
        .stderr_has("step `Impl` was running and its processes were stopped");
    assert!(!ws.exists("after"), "no step runs after the crossing");
    let event = budget_event(&run.events());
    assert_eq!(event["limit"], "max_cost_usd");
    assert_eq!(event["step"], "Impl");
    assert_eq!(event["tokens"], 4500);
    assert!(
        (event["cost_usd"].as_f64().unwrap() - 0.0315).abs() < 1e-9,
        "{event}"
    );
    assert_eq!(event["stopped"], true);
    let state = run.state();
    assert_eq!(state["status"], "failed");
    assert!(
        state["error"]
            .as_str()
            .unwrap()
            .starts_with("budget exceeded")
    );
    let step = run.step("Impl");
    assert_eq!(step["budget_exceeded"], "max_cost_usd");
    assert_eq!(step["usage"]["input"], 3000);
}

#[test]
fn a_token_budget_stops_the_agent() {
    let mut ws = Ws::new();
    stand_in(&mut ws);
    ws.workflow(&format!("budget:\n  max_tokens: 2000\nsteps:{AGENT_STEP}"));
    let run = run_until_stopped(&ws, &["run", "wf.yaml"]);
    run.code(1)
        .stderr_has("budget exceeded: max_tokens (the run's budget, set at wf.yaml:2): spent 4500 tokens against a limit of 2000 tokens");
    let event = budget_event(&run.events());
    assert_eq!(
        (event["limit"].clone(), event["tokens"].clone()),
        ("max_tokens".into(), 4500.into())
    );
}

#[test]
fn tokens_without_a_price_still_count_and_the_cost_limit_says_so() {
    let mut ws = Ws::new();
    stand_in(&mut ws);
    let script = ws
        .read("bin/claude")
        .replace("claude-sonnet-4-5", "claude-unknown-9");
    ws.script("bin/claude", &script);
    ws.workflow(&format!(
        "budget:\n  max_cost_usd: 0.001\n  max_tokens: 2000\nsteps:{AGENT_STEP}"
    ));
    let run = run_until_stopped(&ws, &["run", "wf.yaml"]);
    run.code(1)
        .stderr_has("budget exceeded: max_tokens")
        .stderr_has("plus 4500 tokens of unknown cost: no price for their model, so max_cost_usd cannot count them");
}

#[test]
fn a_wall_budget_stops_the_running_step_and_the_next_step_does_not_start() {
    let ws = Ws::new();
    ws.workflow(
        "budget:\n  max_wall_sec: 0.5\nsteps:\n  - name: Slow\n    command: [sh, -c, 'echo $$ > slow.pid; exec sleep 600']\n  - name: After\n    command: [touch, after]\n",
    );
    let run = run_within(&ws, &["run", "wf.yaml"], Duration::from_secs(120));
    run.code(1)
        .stderr_has("budget exceeded: max_wall_sec (the run's budget, set at wf.yaml:2)")
        .stderr_has("step `Slow` was running and its processes were stopped");
    assert!(!pid_alive(pid_in(&ws, "slow.pid")));
    assert!(!ws.exists("after"));
    assert_eq!(budget_event(&run.events())["limit"], "max_wall_sec");

    // Over the limit between steps (a wait has no process to stop): the next step fails
    // before it starts.
    ws.workflow(
        "budget:\n  max_wall_sec: 0.3\nsteps:\n  - name: Wait\n    wait_for: {glob: never, timeout_sec: 0.5}\n    on: {failure: {goto: After}}\n  - name: After\n    command: [touch, after]\n",
    );
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.code(1).stderr_has("step `After` was not started");
    assert!(!ws.exists("after"));
}

#[test]
fn an_idle_step_is_stopped_with_its_own_reason() {
    let mut ws = Ws::new();
    ws.with_bin_path();
    // Prints once, then says nothing.
    ws.script(
        "bin/claude",
        "#!/usr/bin/env bash\ncat > /dev/null\necho '{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s-1\",\"model\":\"claude-sonnet-4-5\"}'\necho $$ > agent.pid\nexec sleep 600\n",
    );
    ws.workflow(
        "steps:\n  - name: Quiet\n    command: [sh, -c, 'echo once; echo $$ > cmd.pid; exec sleep 600']\n    idle_timeout_sec: 0.5\n    on: {failure: {goto: Agent}}\n  - name: Agent\n    runtime: claude\n    prompt: hi\n    phase: write\n    idle_timeout_sec: 0.5\n    timeout_sec: 60\n",
    );
    // Two idle stops (one attempt each: an idle agent is not retried), not two 30 s sleeps.
    let run = run_within(&ws, &["run", "wf.yaml"], Duration::from_secs(120));
    run.code(124)
        .stderr_has("no output for 0.5 s (idle_timeout_sec); its processes were stopped");
    for (name, pid) in [("Quiet", "cmd.pid"), ("Agent", "agent.pid")] {
        let step = run.step(name);
        assert_eq!(step["exit_code"], 124, "{step:#}");
        assert_eq!(step["outcome"]["kind"], "idle_timed_out", "{step:#}");
        assert!(!pid_alive(pid_in(&ws, pid)));
    }
    assert_eq!(run.step("Agent")["error"]["kind"], "idle_timeout");
    assert_eq!(run.step("Agent")["attempts"], 1);
}

#[test]
fn a_role_budget_fails_the_task_and_the_ledger_records_its_spending() {
    let mut ws = Ws::new();
    stand_in(&mut ws);
    role(
        &ws,
        "dev",
        "settle_ms: 0\nbudget:\n  max_tokens: 2000\n",
        &format!("budget:\n  max_tokens: 100000\nsteps:{AGENT_STEP}"),
    );
    ws.run(&["enqueue", "dev", "--text", "go", "--name", "t1"])
        .ok();
    let run = run_until_stopped(&ws, &["agent", "dev", "--once"]);
    run.ok();
    let failed = entries(&ws, "failed");
    assert_eq!(failed.len(), 1, "failed/ holds {failed:?}; {}", run.stderr);
    let status = json_file(&ws, &format!("failed/{}/status.json", failed[0]));
    assert_eq!(status["success"], false);
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with("budget exceeded: max_tokens (the run's budget, set at agents/dev.yaml:4): spent 4500 tokens against a limit of 2000 tokens"),
        "{message}"
    );
    let ledger = entries(&ws, ".orchestrate/ledger");
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    let line: Value =
        serde_json::from_str(&ws.read(&format!(".orchestrate/ledger/{}", ledger[0]))).unwrap();
    assert_eq!(
        (line["task"].clone(), line["tokens"].clone()),
        ("t1".into(), 4500.into())
    );
    assert!(
        (line["cost_usd"].as_f64().unwrap() - 0.0315).abs() < 1e-9,
        "{line}"
    );
}

#[test]
fn a_spent_daily_budget_leaves_tasks_queued() {
    let ws = Ws::new();
    role(
        &ws,
        "dev",
        "settle_ms: 0\n",
        "steps:\n  - name: Work\n    command: [touch, worked]\n",
    );
    ws.file("swarm.yaml", "budget:\n  max_tokens_per_day: 1000\n");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    ws.file(
        &format!(".orchestrate/ledger/{today}.jsonl"),
        "{\"task\":\"earlier\",\"tokens\":1200,\"cost_usd\":0.01}\n",
    );
    ws.run(&["enqueue", "dev", "--text", "go", "--name", "t1"])
        .ok();
    let run = run_within(&ws, &["agent", "dev", "--once"], DEADLINE);
    run.ok().stderr_has(&format!(
        "not claiming new tasks: budget exceeded: the swarm spent 1200 tokens today ({today} UTC), at or over max_tokens_per_day 1000 tokens (set at swarm.yaml:2)"
    ));
    assert_eq!(queued(&ws, "dev"), ["t1.task"]);
    assert!(!ws.exists("worked"));
    assert!(entries(&ws, "failed").is_empty());

    // Raised: the task runs; it spent nothing, so the day's ledger gains no line.
    ws.file("swarm.yaml", "budget:\n  max_tokens_per_day: 5000\n");
    run_within(&ws, &["agent", "dev", "--once"], DEADLINE).ok();
    assert!(ws.exists("worked"));
    assert_eq!(
        lines(&ws, &format!(".orchestrate/ledger/{today}.jsonl")).len(),
        1
    );
}

#[test]
fn the_daily_budget_stops_a_running_task_when_today_plus_its_usage_crosses_it() {
    let mut ws = Ws::new();
    stand_in(&mut ws);
    role(&ws, "dev", "settle_ms: 0\n", &format!("steps:{AGENT_STEP}"));
    ws.file("swarm.yaml", "budget:\n  max_tokens_per_day: 5000\n");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    ws.file(
        &format!(".orchestrate/ledger/{today}.jsonl"),
        "{\"task\":\"earlier\",\"tokens\":1000,\"cost_usd\":0.01}\n",
    );
    ws.run(&["enqueue", "dev", "--text", "go", "--name", "t1"])
        .ok();
    let run = run_until_stopped(&ws, &["agent", "dev", "--once"]);
    run.ok();
    let failed = entries(&ws, "failed");
    assert_eq!(failed.len(), 1, "failed/ holds {failed:?}; {}", run.stderr);
    let status = json_file(&ws, &format!("failed/{}/status.json", failed[0]));
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with("budget exceeded: max_tokens_per_day (the swarm's daily budget, set at swarm.yaml:2): spent 5500 tokens today against a limit of 5000 tokens"),
        "{message}"
    );
}

#[test]
fn a_bad_swarm_file_keeps_roles_from_starting() {
    let ws = Ws::new();
    role(
        &ws,
        "dev",
        "",
        "steps:\n  - name: Work\n    command: [\"true\"]\n",
    );
    ws.file("swarm.yaml", "budget:\n  max_tokens_per_dai: 10\n");
    ws.run(&["enqueue", "dev", "--text", "go", "--name", "t1"])
        .ok();
    for args in [&["agent", "dev", "--once"][..], &["swarm", "up"][..]] {
        run_within(&ws, args, DEADLINE)
            .code(2)
            .stderr_has("swarm.yaml:2:3: error: unknown field `max_tokens_per_dai` in `budget` of swarm.yaml")
            .stderr_has("did you mean `max_tokens_per_day`?");
    }
    assert_eq!(queued(&ws, "dev"), ["t1.task"]);
}

#[test]
fn a_role_idle_timeout_is_the_default_for_its_agent_steps() {
    let mut ws = Ws::new();
    ws.with_bin_path();
    ws.script(
        "bin/claude",
        "#!/usr/bin/env bash\ncat > /dev/null\necho '{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s-1\"}'\nexec sleep 600\n",
    );
    role(
        &ws,
        "dev",
        "settle_ms: 0\nmax_attempts: 1\nidle_timeout_sec: 0.5\n",
        "steps:\n  - name: Agent\n    runtime: claude\n    prompt: hi\n    phase: write\n",
    );
    ws.run(&["enqueue", "dev", "--text", "go", "--name", "t1"])
        .ok();
    run_within(&ws, &["agent", "dev", "--once"], Duration::from_secs(120)).ok();
    let failed = entries(&ws, "failed");
    assert_eq!(failed.len(), 1, "failed/ holds {failed:?}");
    let status = json_file(&ws, &format!("failed/{}/status.json", failed[0]));
    assert_eq!(status["exit_code"], 124, "{status:#}");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("no output for 0.5 s (idle_timeout_sec)"),
        "{message}"
    );
}
