//! The JSON Schemas under `docs/schema/`: generated from the types (`orchestrate_lang::schema`,
//! `orchestrate_queue::record`, `orchestrate_swarm::supervisor`, `orchestrate_swarm::control_log`),
//! checked in, and met by every shipped file, every fixture the loader accepts, what `init` lays
//! down and the records captured from the binary. (The examples in docs/ are fragments: none
//! loads on its own, so there is nothing whole to check.)

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::*;

const BLESS: &str = "ORCHESTRATE_BLESS";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every published schema by name, rendered from its types.
fn rendered() -> Vec<(&'static str, String)> {
    let mut out: Vec<(&str, String)> = orchestrate_lang::schema::SCHEMAS
        .iter()
        .map(|name| (*name, orchestrate_lang::schema::render(name).unwrap()))
        .collect();
    out.push(("status", orchestrate_queue::record::json_schema()));
    out.push((
        "supervisor-events",
        orchestrate_swarm::supervisor::events_json_schema(),
    ));
    out.push((
        "control-events",
        orchestrate_swarm::control_log::json_schema(),
    ));
    out
}

#[test]
fn the_checked_in_schemas_are_the_generated_ones() {
    let bless = std::env::var_os(BLESS).is_some();
    let mut stale = Vec::new();
    for (name, text) in rendered() {
        let path = repo(&format!("docs/schema/{name}.schema.json"));
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        if bless {
            std::fs::write(&path, &text).unwrap();
        } else {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "the schemas changed: {}; run `{BLESS}=1 cargo test --test integration json_schemas` to update them, and review the diff",
        stale.join(", ")
    );
}

fn yaml_json(path: &Path, text: &str) -> Value {
    orchestrate_lang::yaml::parse(text)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .to_json()
}

fn validator(schema: &Path) -> jsonschema::Validator {
    let text = std::fs::read_to_string(schema)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", schema.display()));
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

#[track_caller]
fn assert_valid(schema: &Path, file: &str, instance: &Value) {
    let validator = validator(schema);
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{file} does not meet {}:\n{}",
        schema.display(),
        errors.join("\n")
    );
}

/// The schema a file's first line names (`# yaml-language-server: $schema=REL`), resolved
/// against the file's directory.
fn schema_comment(path: &Path, text: &str) -> PathBuf {
    let first = text.lines().next().unwrap_or_default();
    let rel = first
        .strip_prefix("# yaml-language-server: $schema=")
        .unwrap_or_else(|| panic!("{} has no schema comment: {first:?}", path.display()));
    path.parent().unwrap().join(rel)
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Lines the supervisor wrote (captured from a `swarm up -d` whose role crashed until it failed,
/// a reload, `swarm down`, a leftover) meet its events' schema; one a kind's fields do not fit
/// does not.
#[test]
fn the_supervisors_lines_meet_its_events_schema() {
    let schema = repo("docs/schema/supervisor-events.schema.json");
    let captured = repo("crates/swarm/src/supervisor/event_captured.jsonl");
    let text = std::fs::read_to_string(&captured).unwrap();
    for line in text.lines() {
        assert_valid(&schema, line, &serde_json::from_str(line).unwrap());
    }
    let without_replica = serde_json::json!({"event": "spawned", "pid": 7});
    assert!(!validator(&schema).is_valid(&without_replica));
    let wrong_signal = serde_json::json!({"event": "stopping", "pid": 7, "signal": "SIGINT",
        "child": "qa#1", "role": "qa", "replica": 1, "state": "stopping"});
    assert!(!validator(&schema).is_valid(&wrong_signal));
}

/// Lines `pause`, `resume` and `cancel` wrote meet the control log's schema.
#[test]
fn the_control_logs_lines_meet_its_schema() {
    let schema = repo("docs/schema/control-events.schema.json");
    let captured = repo("crates/swarm/src/control_log_captured.jsonl");
    let text = std::fs::read_to_string(&captured).unwrap();
    for line in text.lines() {
        assert_valid(&schema, line, &serde_json::from_str(line).unwrap());
    }
    let no_role = serde_json::json!({"event": "role_paused", "by": "uid 0"});
    assert!(!validator(&schema).is_valid(&no_role));
}

#[test]
fn every_shipped_file_names_its_schema_and_meets_it() {
    for (dir, schema) in [("workflows", "workflow"), ("agents", "role")] {
        let files = yaml_files(&repo(dir));
        assert!(!files.is_empty(), "no files in {dir}/");
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            let named = schema_comment(&path, &text);
            assert_eq!(
                named.canonicalize().unwrap(),
                repo(&format!("docs/schema/{schema}.schema.json")),
                "{}",
                path.display()
            );
            assert_valid(
                &named,
                &path.display().to_string(),
                &yaml_json(&path, &text),
            );
        }
    }
}

#[test]
fn every_fixture_the_loader_accepts_meets_the_workflow_schema() {
    let schema = repo("docs/schema/workflow.schema.json");
    let mut checked = 0;
    for path in yaml_files(&repo("tests/fixtures/validate")) {
        if orchestrate_lang::load::load_file(&path).is_ok() {
            let text = std::fs::read_to_string(&path).unwrap();
            assert_valid(
                &schema,
                &path.display().to_string(),
                &yaml_json(&path, &text),
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} fixtures load");
    // And the schema refuses what the loader refuses most often: a misspelled field.
    let misspelled = serde_json::json!({"steps": [{"name": "Build", "comand": ["make"]}]});
    assert!(!validator(&schema).is_valid(&misspelled));
    // What the loader reads leniently, the schema allows: a number as text, seconds as text.
    let lenient =
        serde_json::json!({"steps": [{"name": 1, "command": ["sleep", 5], "timeout_sec": "30"}]});
    assert!(validator(&schema).is_valid(&lenient));
}

/// A workspace has no `docs/schema/`: `init` writes the schemas into `.orchestrate/schema/`
/// and points the files it lays down at them.
#[test]
fn init_lays_down_the_schemas_its_files_name_and_the_files_meet_them() {
    let ws = Ws::new();
    ws.run(&["init"]).ok();
    for (dir, schema) in [("workflows", "workflow"), ("agents", "role")] {
        let files = yaml_files(&ws.join(dir));
        assert!(!files.is_empty(), "init wrote nothing in {dir}/");
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            let named = schema_comment(&path, &text);
            assert_eq!(
                named.canonicalize().unwrap(),
                ws.join(&format!(".orchestrate/schema/{schema}.schema.json"))
                    .canonicalize()
                    .unwrap(),
            );
            assert_valid(
                &named,
                &path.display().to_string(),
                &yaml_json(&path, &text),
            );
        }
    }
    for name in orchestrate_lang::schema::SCHEMAS {
        assert_eq!(
            ws.read(&format!(".orchestrate/schema/{name}.schema.json")),
            std::fs::read_to_string(repo(&format!("docs/schema/{name}.schema.json"))).unwrap(),
        );
    }
    ws.run(&["validate", "workflows/demo.yaml"]).ok();
}
