//! `output_schema`: typed step outputs, validated in the engine and passed to CLIs with a
//! native flag; a violation fails the step with the first violations and can route to repair.

use crate::harness::*;

const REVIEW_SCHEMA: &str = r#"    output_schema:
      type: object
      required: [approved, findings]
      properties:
        approved: {type: boolean}
        findings: {type: array, items: {type: string}}
"#;

/// The reviewer answers badly once (a string where a boolean belongs, findings missing); the
/// `invalid` edge takes the run to a repair step that sees the violations in `${feedback}`;
/// the second answer matches and the run goes on.
#[test]
fn a_schema_violation_routes_to_repair_with_the_violations() {
    let ws = Ws::new();
    ws.script(
        "review.sh",
        "#!/bin/sh\nif [ -f repaired ]; then echo '{\"approved\": true, \"findings\": []}'; else echo '{\"approved\": \"yes\"}'; fi\n",
    );
    ws.workflow(&format!(
        r#"name: typed
steps:
  - name: Review
    command: ["./review.sh"]
    output_capture: json
{REVIEW_SCHEMA}    on:
      invalid: {{goto: Repair}}
  - name: Use
    command: ["echo", "approved=${{steps.Review.json.approved}}"]
    on: {{success: {{goto: _end}}}}
  - name: Repair
    command: ["sh", "-c", "printf '%s' \"$1\" > feedback.txt; printf '%s' \"$2\" > violations.json; touch repaired", "repair", "${{feedback}}", "${{feedback.violations}}"]
    on: {{success: {{goto: Review}}}}
"#
    ));
    let run = ws.run(&["run", "wf.yaml"]);
    run.ok();
    let feedback = ws.read("feedback.txt");
    assert!(
        feedback.contains("does not match its output_schema (inline)")
            && feedback.contains("/approved")
            && feedback.contains("\"yes\" is not of type \"boolean\"")
            && feedback.contains("\"findings\" is a required property"),
        "{feedback}"
    );
    assert_eq!(run.step("Use")["output"], "approved=true");
    let violations: serde_json::Value = serde_json::from_str(&ws.read("violations.json")).unwrap();
    assert!(
        violations
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["path"] == "/approved"),
        "{violations}"
    );
    let events = run.events();
    let first = events
        .iter()
        .find(|e| e["event"] == "step_finished" && e["step"] == "Review")
        .unwrap();
    assert_eq!(first["result"]["status"], "failed");
    let paths: Vec<&str> = first["result"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/approved") && paths.contains(&"/"),
        "{paths:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "goto" && e["from"] == "Review" && e["to"] == "Repair")
    );
}

/// Without an `invalid` edge a violation fails the run (exit 2, invalid output) naming the
/// step and the first violations; a schema can also come from a file.
#[test]
fn a_violation_without_an_invalid_edge_fails_the_run_with_the_first_violations() {
    let ws = Ws::new();
    ws.file(
        "schemas/count.json",
        r#"{"type": "object", "properties": {"count": {"type": "integer", "minimum": 1}}, "required": ["count"]}"#,
    );
    ws.workflow(
        "name: typed\nsteps:\n  - name: Count\n    command: [echo, '{\"count\": 0}']\n    output_capture: json\n    output_schema: schemas/count.json\n",
    );
    ws.run(&["run", "wf.yaml"])
        .code(2)
        .stderr_has("Count")
        .stderr_has("does not match its output_schema (schemas/count.json)")
        .stderr_has("/count: 0 is less than the minimum of 1");
    ws.workflow(
        "name: typed\nsteps:\n  - name: Count\n    command: [echo, '{\"count\": 3}']\n    output_capture: json\n    output_schema: schemas/count.json\n",
    );
    ws.run(&["run", "wf.yaml"]).ok();
}

#[test]
fn bad_schemas_and_edges_are_reported_by_validate() {
    let ws = Ws::new();
    ws.workflow(
        r#"name: bad
steps:
  - name: A
    command: [echo, "{}"]
    output_capture: json
    output_schema: {type: 12}
  - name: B
    command: [echo, hi]
    output_schema: {type: object}
  - name: C
    command: [echo, "{}"]
    output_capture: json
    on:
      invalid: {goto: A}
  - name: D
    command: [echo, "{}"]
    output_capture: json
    output_schema: {type: object}
    on:
      invalid: {goto: Repiar}
  - name: Repair
    command: ["true"]
  - name: E
    command: [echo, "{}"]
    output_capture: json
    output_schema: missing.json
"#,
    );
    ws.run(&["validate", "wf.yaml"])
        .code(2)
        .stderr_has("wf.yaml:6:")
        .stderr_has("`output_schema` of step `A` is not a valid JSON Schema")
        .stderr_has("`output_schema` on step `B` checks JSON output, but the step captures none")
        .stderr_has("`on.invalid` of step `C` is never taken: the step has no `output_schema`")
        .stderr_has("did you mean `Repair`?")
        .stderr_has("`output_schema` of step `E`: no file `missing.json`");
}

/// An agent step's schema goes to the CLI's native flag (claude `--json-schema`), and the
/// answer it gives through the schema (`structured_output`) is the step's JSON.
#[test]
fn an_agent_steps_schema_goes_to_claude_and_its_structured_output_is_checked() {
    let mut ws = Ws::new();
    ws.with_bin_path();
    let answer = |structured: &str| {
        let init = r#"{"type":"system","subtype":"init","session_id":"s1","model":"m"}"#;
        let result = format!(
            r#"{{"type":"result","subtype":"success","is_error":false,"result":"here it is","session_id":"s1","num_turns":1,"total_cost_usd":0.001,"usage":{{"input_tokens":10,"output_tokens":5}},"structured_output":{structured}}}"#
        );
        format!("{init}\n{result}\n")
    };
    fake_cli(
        &ws,
        "claude",
        &answer(r#"{"approved": true, "findings": []}"#),
    );
    ws.workflow(&format!(
        // `write`: the fake records its argv in the workspace.
        "name: typed\nsteps:\n  - name: Review\n    runtime: claude\n    phase: write\n    prompt: review it\n{REVIEW_SCHEMA}"
    ));
    let run = ws.run(&["run", "wf.yaml"]);
    run.ok();
    let argv = recorded_argv(&ws, "claude");
    let at = argv
        .iter()
        .position(|a| a == "--json-schema")
        .expect("--json-schema");
    let sent: serde_json::Value = serde_json::from_str(&argv[at + 1]).unwrap();
    assert_eq!(
        sent["required"],
        serde_json::json!(["approved", "findings"])
    );
    assert_eq!(run.step("Review")["json"]["approved"], true);

    // An answer that does not match fails the step as a schema violation.
    fake_cli(&ws, "claude", &answer(r#"{"approved": 1}"#));
    ws.run(&["run", "wf.yaml"])
        .code(2)
        .stderr_has("does not match its output_schema (inline)")
        .stderr_has("/approved: 1 is not of type \"boolean\"");
}

/// `validate` checks `${steps.X.json.path}` against X's schema where one is declared.
#[test]
fn json_references_are_checked_against_the_schema() {
    let ws = Ws::new();
    ws.workflow(&format!(
        r#"name: refs
steps:
  - name: Review
    command: [echo, "{{}}"]
    output_capture: json
{REVIEW_SCHEMA}  - name: Use
    command: [echo, "${{steps.Review.json.aproved}} ${{steps.Review.json.findings.0}} ${{steps.Review.json.approved}}"]
"#
    ));
    let run = ws.run(&["validate", "wf.yaml"]);
    run.code(2)
        .stderr_has(
            "uses `${steps.Review.json.aproved}`, but the output_schema of step `Review` (inline) has no property `aproved` there",
        )
        .stderr_has("did you mean `approved`?");
    // `findings.0` (through `items`) and `approved` are declared: one problem only.
    run.stderr_has("1 problem(s) found");
}
