//! Every pinned CLI's spending visible and priced: the model a CLI uses when the step names none
//! (codex never says), steps that cannot be priced saying so in the run and in `report`, and a
//! cost budget warning at start about steps it may not be able to count.
//!
//! The fake `codex` in `WS/bin` prints the verbatim `codex.jsonl.success.jsonl` sample (which
//! names no model) and records its argv; CODEX_HOME is a directory of the test's own, so the
//! machine's `~/.codex` never matters.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const DEADLINE: Duration = Duration::from_secs(30);
const CODEX_SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/runtimes/codex.jsonl.success.jsonl"
);

/// A workspace with a fake `codex` on PATH and an empty CODEX_HOME of its own.
pub(crate) fn codex_ws() -> (Ws, tempfile::TempDir) {
    let mut ws = Ws::new();
    ws.with_bin_path();
    let codex_home = tempfile::tempdir().expect("codex home");
    ws.env("CODEX_HOME", &codex_home.path().display().to_string());
    ws.script(
        "bin/codex",
        &format!(
            "#!/usr/bin/env bash\nprintf '%s\\n' \"$@\" > \"$CODEX_HOME/argv\"\ncat > /dev/null\ncat '{CODEX_SAMPLE}'\n"
        ),
    );
    (ws, codex_home)
}

/// One codex step, with `model:` when given.
pub(crate) fn ask(model: Option<&str>, budget: &str) -> String {
    let model = model
        .map(|m| format!("    model: {m}\n"))
        .unwrap_or_default();
    format!(
        "name: ask\n{budget}steps:\n  - name: Ask\n    runtime: codex\n{model}    prompt: \"say hi\"\n"
    )
}

/// USD of the sample's one request (234 input, 56 output, 1000 cache reads) at a price.
fn sample_cost(input: f64, output: f64, cache_read: f64) -> f64 {
    (234.0 * input + 56.0 * output + 1000.0 * cache_read) / 1e6
}

fn approx(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 1e-12)
}

#[test]
fn codex_without_a_model_is_priced_as_the_pinned_cli_default() {
    let (ws, codex_home) = codex_ws();
    ws.workflow(&ask(None, ""));
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.ok();
    let argv = std::fs::read_to_string(codex_home.path().join("argv")).unwrap();
    assert!(!argv.lines().any(|a| a == "-m"), "no model asked: {argv}");
    let step = run.step("Ask");
    assert_eq!(step["model"], "gpt-6.1-sol", "{step:#}");
    assert_eq!(step["requested_model"], Value::Null);
    assert!(
        approx(&step["cost_usd"], sample_cost(2.0, 10.0, 0.10)),
        "{step:#}"
    );
}

#[test]
fn codex_model_from_its_config_toml_is_recorded_and_priced() {
    let (ws, codex_home) = codex_ws();
    std::fs::write(
        codex_home.path().join("config.toml"),
        // `[profiles.NAME]` tables are ignored by codex 0.169 unless `-p NAME` selects them.
        "model = \"gpt-5-mini\"\n\n[profiles.pricey]\nmodel = \"gpt-5\"\n",
    )
    .unwrap();
    ws.workflow(&ask(None, ""));
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.ok();
    let step = run.step("Ask");
    assert_eq!(step["model"], "gpt-5-mini", "{step:#}");
    assert!(
        approx(&step["cost_usd"], sample_cost(0.25, 2.0, 0.025)),
        "{step:#}"
    );
}

#[test]
fn an_unpriced_step_says_cost_unknown_in_the_run_and_in_report() {
    let (ws, _codex_home) = codex_ws();
    ws.workflow(&ask(Some("my-model-1"), ""));
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.ok();
    assert_eq!(run.step("Ask")["cost_usd"], Value::Null);
    let said = "1,290 tokens, cost unknown: no price for model my-model-1 in runtimes.yaml";
    assert!(
        run.stdout.contains(said) || run.stderr.contains(said),
        "the run's output says so: {}{}",
        run.stdout,
        run.stderr
    );
    let report = ws.run(&["report", run.id()]);
    report.ok().stdout_has(said);
}

#[test]
fn a_cost_budget_warns_at_start_about_steps_it_cannot_price() {
    let (ws, codex_home) = codex_ws();
    ws.workflow(&ask(Some("my-model-1"), "budget: {max_cost_usd: 5}\n"));
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.ok();
    let output = format!("{}{}", run.stdout, run.stderr);
    let warning = output
        .find("max_cost_usd cannot count step Ask")
        .unwrap_or_else(|| panic!("no warning at start: {output}"));
    assert!(
        output[warning..].contains("my-model-1: {input: ..., output: ...}")
            || output[warning..].contains("prices:"),
        "the warning says what to add to runtimes.yaml: {output}"
    );
    let started = run
        .events()
        .iter()
        .position(|e| e["event"] == "step_started")
        .expect("the step started");
    let warned = run
        .events()
        .iter()
        .position(|e| e["event"] == "budget_unpriced")
        .expect("a budget_unpriced event");
    assert!(warned < started, "warned before the step started");

    // A step the engine can price (the CLI's default model) draws no warning.
    ws.workflow(&ask(None, "budget: {max_cost_usd: 5}\n"));
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.ok();
    assert!(
        !run.events().iter().any(|e| e["event"] == "budget_unpriced"),
        "{:?}",
        run.events()
    );
    drop(codex_home);
}
