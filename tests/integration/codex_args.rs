//! Codex's own flags in a runtime profile's `args:` (`-m`, `-c model=`, `-p NAME`): they reach
//! codex as given, and the model they choose (codex never names it) is the one recorded and
//! priced, in codex 0.169.0's order.
//!
//! The fake `codex` in `WS/bin` prints the verbatim `codex.jsonl.success.jsonl` sample (234
//! input, 56 output, 1000 cache-read tokens; no model named) and records its argv.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const DEADLINE: Duration = Duration::from_secs(30);
const CODEX_SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/runtimes/codex.jsonl.success.jsonl"
);

/// A workspace with a fake `codex` on PATH, an empty CODEX_HOME of its own, a runtimes.yaml
/// whose default profile `work` passes `args`, and one codex step naming no model.
fn run_with_args(args: &str, files: &[(&str, &str)]) -> (Value, Vec<String>) {
    let mut ws = Ws::new();
    ws.with_bin_path();
    let codex_home = tempfile::tempdir().expect("codex home");
    ws.env("CODEX_HOME", &codex_home.path().display().to_string());
    for (name, text) in files {
        std::fs::write(codex_home.path().join(name), text).unwrap();
    }
    ws.script(
        "bin/codex",
        &format!(
            "#!/usr/bin/env bash\nprintf '%s\\n' \"$@\" > \"$CODEX_HOME/argv\"\ncat > /dev/null\ncat '{CODEX_SAMPLE}'\n"
        ),
    );
    ws.file(
        "runtimes.yaml",
        &format!("default: work\nprofiles:\n  work: {{runtime: codex, args: {args}}}\n"),
    );
    ws.workflow("name: ask\nsteps:\n  - name: Ask\n    prompt: \"say hi\"\n");
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.ok();
    let argv = std::fs::read_to_string(codex_home.path().join("argv")).unwrap();
    (run.step("Ask"), argv.lines().map(str::to_string).collect())
}

/// USD of the sample's one request at a price (input, output, cache read per M tokens).
fn sample_cost(input: f64, output: f64, cache_read: f64) -> f64 {
    (234.0 * input + 56.0 * output + 1000.0 * cache_read) / 1e6
}

fn assert_priced(step: &Value, model: &str, cost: f64) {
    assert_eq!(step["model"], model, "{step:#}");
    let recorded = step["cost_usd"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (recorded - cost).abs() < 1e-12,
        "cost {recorded} != {cost}: {step:#}"
    );
}

#[test]
fn codex_config_override_model_in_profile_args_is_recorded_and_priced() {
    let (step, argv) = run_with_args(
        r#"["-c", "model=\"gpt-5-mini\""]"#,
        &[("config.toml", "model = \"o3\"\n")],
    );
    assert_eq!(
        argv[..3],
        ["exec", "-c", "model=\"gpt-5-mini\""],
        "{argv:?}"
    );
    assert!(!argv.iter().any(|a| a == "-m"), "{argv:?}");
    assert_priced(&step, "gpt-5-mini", sample_cost(0.25, 2.0, 0.025));
}

#[test]
fn codex_model_flag_in_profile_args_beats_its_config_override_and_config_toml() {
    let (step, _) = run_with_args(
        r#"[-c, "model=o3", --model, gpt-5-nano]"#,
        &[("config.toml", "model = \"gpt-4.1\"\n")],
    );
    assert_priced(&step, "gpt-5-nano", sample_cost(0.05, 0.40, 0.005));
}

#[test]
fn codex_profile_flag_in_profile_args_prices_the_model_of_its_config_layer() {
    let (step, argv) = run_with_args(
        "[-p, work]",
        &[
            ("config.toml", "model = \"o3\"\n"),
            ("work.config.toml", "model = \"gpt-4.1\"\n"),
        ],
    );
    assert_eq!(argv[..3], ["exec", "-p", "work"], "{argv:?}");
    assert_priced(&step, "gpt-4.1", sample_cost(2.0, 8.0, 0.50));
}
