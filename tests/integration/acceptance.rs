//! The spec's 18 acceptance tests ("Acceptance Tests" section), one `aNN_*` test each (a few
//! have a companion test for a second property of the same item), all against the real binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

// ---------------------------------------------------------------------------------------------
// Helpers shared with language.rs.

pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A fresh workspace holding `wf.yaml`.
pub(crate) fn ws_with(yaml: &str) -> Ws {
    let ws = Ws::new();
    ws.workflow(yaml);
    ws
}

/// Starts the binary in the background, stdout and stderr piped.
pub(crate) fn spawn(ws: &Ws, args: &[&str]) -> Child {
    ws.cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn orchestrate")
}

/// Waits (bounded) for a spawned binary to exit and collects what it printed.
pub(crate) fn finish(ws: &Ws, mut child: Child) -> Run {
    wait_until("orchestrate to exit", DEADLINE, || {
        child.try_wait().expect("try_wait").is_some()
    });
    Run::from(child.wait_with_output().expect("collect output"), ws.path())
}

/// Runs the binary with `dir` as the workspace (for a workspace nested in a temp dir, so that
/// "outside the workspace" is still inside the test's own directory).
pub(crate) fn run_in(dir: &Path, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .arg("--workspace")
        .arg(dir)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("spawn orchestrate");
    Run::from(output, dir)
}

/// The directory of the one run in the workspace, once it exists.
pub(crate) fn only_run_dir(ws: &Ws) -> PathBuf {
    let runs = ws.join(".orchestrate/runs");
    let mut found = None;
    wait_until("the run directory", DEADLINE, || {
        let entries: Vec<PathBuf> = std::fs::read_dir(&runs)
            .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        found = entries.into_iter().find(|p| p.is_dir());
        found.is_some()
    });
    found.unwrap()
}

/// Waits until the run's events.jsonl has `event` for `step`.
pub(crate) fn wait_for_event(ws: &Ws, event: &str, step: &str) {
    let events = only_run_dir(ws).join("events.jsonl");
    wait_until(&format!("{event} of {step}"), DEADLINE, || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|e| e["event"] == event && e["step"] == step)
    });
}

/// Names of the steps that finished, in order (from events.jsonl).
pub(crate) fn finished_steps(run: &Run) -> Vec<String> {
    run.events()
        .iter()
        .filter(|e| e["event"] == "step_finished")
        .map(|e| e["step"].as_str().unwrap().to_string())
        .collect()
}

/// Strings of a JSON array.
pub(crate) fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect()
}

/// How many run directories the workspace holds.
pub(crate) fn run_count(ws: &Ws) -> usize {
    std::fs::read_dir(ws.join(".orchestrate/runs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Files in a zip (name -> content) read with python3's zipfile.
fn zip_files(path: &Path) -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             assert z.testzip() is None\n\
             print(json.dumps({n: z.read(n).decode() for n in z.namelist() if not n.endswith('/')}))",
        ])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn is_compact_timestamp(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

// ---------------------------------------------------------------------------------------------
// 1-3: capture modes and dynamic for_each.

#[test]
fn a01_lines_capture() {
    let ws = ws_with(
        r#"
steps:
  - name: List
    command: ["printf", "inbox/a.task\ninbox/b c.task\n\nlast"]
    output_capture: lines
  - name: Use
    command: ["printf", "%s|%s", "${steps.List.lines.1}", "${steps.List.lines.3}"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    let list = run.step("List");
    assert_eq!(
        list["lines"],
        json!(["inbox/a.task", "inbox/b c.task", "", "last"])
    );
    assert_eq!(list["truncated"], json!(false));
    assert!(
        list.get("output").is_none(),
        "lines mode omits output: {list}"
    );
    assert_eq!(run.step("Use")["output"], "inbox/b c.task|last");
}

#[test]
fn a02_json_capture() {
    let ws = ws_with(
        r#"
steps:
  - name: Report
    command: ["printf", '{"success": true, "files": ["a.py", "b.py"], "meta": {"count": 2}}']
    output_capture: json
  - name: Use
    command: ["printf", "%s|%s|%s", "${steps.Report.json.success}", "${steps.Report.json.meta.count}", "${steps.Report.json.files}"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    let report = run.step("Report");
    assert_eq!(
        report["json"],
        json!({"success": true, "files": ["a.py", "b.py"], "meta": {"count": 2}})
    );
    assert!(
        report.get("output").is_none(),
        "json mode omits output: {report}"
    );
    assert_eq!(run.step("Use")["output"], r#"true|2|["a.py","b.py"]"#);
}

#[test]
fn a03_dynamic_for_each() {
    let ws = ws_with(
        r#"
steps:
  - name: List
    command: ["printf", "one\ntwo words\nthree\n"]
    output_capture: lines
  - name: Each
    for_each:
      items_from: "steps.List.lines"
      as: name
      steps:
        - name: Record
          command: ["bash", "-c", 'printf "%s:%s/%s\n" "$1" "$2" "$3" >> seen.txt', "_", "${loop.index}", "${name}", "${loop.total}"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(ws.read("seen.txt"), "0:one/3\n1:two words/3\n2:three/3\n");
    assert_eq!(run.step("Each")["iterations"], 3);
}

// ---------------------------------------------------------------------------------------------
// 4-6: status files and the task queue.

#[test]
fn a04_status_schema() {
    let ws = ws_with(
        r#"
steps:
  - name: WriteStatus
    agent: engineer
    command:
      - printf
      - "%s"
      - >-
        {"schema": "status/v1", "correlation_id": "corr-1", "agent": "engineer",
        "run_id": "${run.id}", "step": "WriteStatus", "timestamp": "2025-01-15T10:30:00Z",
        "success": true, "exit_code": 0, "outputs": ["artifacts/engineer/implementation.py"],
        "metrics": {"files_modified": 3, "lines_added": 150},
        "next_actions": [{"agent": "qa", "file": "inbox/qa/review_implementation.task"}],
        "message": "Feature implemented successfully"}
    output_file: artifacts/engineer/status.json
    output_capture: json
  - name: ReadStatus
    command: ["cat", "artifacts/engineer/status.json"]
    output_capture: json
  - name: HandOff
    when:
      equals: {left: "${steps.ReadStatus.json.schema}", right: "status/v1"}
    command:
      - bash
      - -c
      - mkdir -p "$(dirname "$1")" && printf '%s %s %s' "$2" "$3" "$4" > "$1"
      - _
      - ${steps.ReadStatus.json.next_actions.0.file}
      - ${steps.ReadStatus.json.success}
      - ${steps.ReadStatus.json.metrics.files_modified}
      - ${steps.WriteStatus.json.outputs.0}
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    let on_disk: Value = serde_json::from_str(&ws.read("artifacts/engineer/status.json"))
        .expect("status.json is JSON");
    assert_eq!(on_disk["schema"], "status/v1");
    assert_eq!(on_disk["run_id"], run.id());
    assert_eq!(on_disk["metrics"]["lines_added"], 150);
    assert_eq!(run.step("ReadStatus")["json"], on_disk);
    assert_eq!(
        ws.read("inbox/qa/review_implementation.task"),
        "true 3 artifacts/engineer/implementation.py"
    );
}

#[test]
fn a05_inbox_atomicity() {
    let ws = ws_with(
        r#"
steps:
  - name: WriteTask
    command:
      - bash
      - -c
      - |
        mkdir -p inbox/x
        printf 'line 1\nline 2\n' > inbox/x/t1.tmp
        mv inbox/x/t1.tmp inbox/x/t1.task
        printf 'half-written' > inbox/x/t2.tmp
  - name: Wait
    wait_for: {glob: "inbox/x/*.task", timeout_sec: 5, poll_ms: 20}
  - name: Read
    command: ["cat", "${steps.Wait.files.0}"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(strings(&run.step("Wait")["files"]), ["inbox/x/t1.task"]);
    assert_eq!(run.step("Read")["output"], "line 1\nline 2");
    assert!(
        !ws.exists("inbox/x/t1.tmp"),
        "the rename left no .tmp behind"
    );
}

#[test]
fn a05_inbox_atomicity_tmp_never_satisfies_wait_for() {
    let ws = ws_with(
        r#"
steps:
  - name: Wait
    wait_for: {glob: "inbox/x/*.task", timeout_sec: 10, poll_ms: 20}
"#,
    );
    std::fs::create_dir_all(ws.join("inbox/x")).unwrap();
    let mut child = spawn(&ws, &["run", "wf.yaml"]);
    wait_for_event(&ws, "step_started", "Wait");
    ws.file("inbox/x/t1.tmp", "partial");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "wait_for finished on a .tmp file"
    );
    std::fs::rename(ws.join("inbox/x/t1.tmp"), ws.join("inbox/x/t1.task")).unwrap();
    let run = finish(&ws, child);
    run.ok();
    assert_eq!(strings(&run.step("Wait")["files"]), ["inbox/x/t1.task"]);
}

#[test]
fn a06_processed_failed() {
    let ws = ws_with(
        r#"
steps:
  - name: List
    command: ["bash", "-c", "ls inbox/engineer/*.task | sort"]
    output_capture: lines
  - name: Each
    for_each:
      items_from: steps.List.lines
      as: task_file
      steps:
        - name: Work
          command: ["bash", "-c", '! grep -q FAIL "$1"', "_", "${task_file}"]
          on:
            failure: {goto: Quarantine}
        - name: Archive
          command: ["bash", "-c", 'mkdir -p "$1" && mv "$2" "$1/"', "_", "processed/${run.timestamp_utc}", "${task_file}"]
          on:
            success: {goto: Next}
        - name: Quarantine
          command: ["bash", "-c", 'mkdir -p "$1" && mv "$2" "$1/"', "_", "failed/${run.timestamp_utc}", "${task_file}"]
        - name: Next
          command: ["true"]
"#,
    );
    ws.file("inbox/engineer/a.task", "fine")
        .file("inbox/engineer/b.task", "this one will FAIL")
        .file("inbox/engineer/c.task", "fine too");
    let run = ws.run_wf(&[]);
    run.ok();
    let ts = run.state()["timestamp_utc"].as_str().unwrap().to_string();
    assert!(is_compact_timestamp(&ts), "timestamp_utc {ts:?}");
    assert_eq!(ws.read(&format!("processed/{ts}/a.task")), "fine");
    assert_eq!(ws.read(&format!("processed/{ts}/c.task")), "fine too");
    assert_eq!(
        ws.read(&format!("failed/{ts}/b.task")),
        "this one will FAIL"
    );
    assert!(!ws.exists(&format!("processed/{ts}/b.task")));
    assert!(!ws.exists(&format!("failed/{ts}/a.task")));
    assert_eq!(
        std::fs::read_dir(ws.join("inbox/engineer"))
            .unwrap()
            .count(),
        0
    );
}

// ---------------------------------------------------------------------------------------------
// 7: no env namespace.

#[test]
fn a07_no_env_namespace() {
    let ws = ws_with(
        r#"
steps:
  - name: First
    command: ["touch", "first-ran"]
  - name: Home
    command: ["echo", "${env.HOME}"]
"#,
    );
    let validate = ws.run(&["validate", "wf.yaml"]);
    validate.code(2).stderr_has("wf.yaml:6:").stderr_has("env");
    let run = ws.run_wf(&[]);
    run.code(2).stderr_has("${env.HOME}");
    assert!(run.run_id.is_none(), "no run was started: {}", run.stderr);
    assert!(
        !ws.exists("first-ran"),
        "nothing runs when the workflow is invalid"
    );
    assert_eq!(run_count(&ws), 0);
}

// ---------------------------------------------------------------------------------------------
// 8-9: providers.

/// A prompt with everything a shell or a template engine would mangle; no trailing newline.
const TRICKY_PROMPT: &str = "Say \"hi\" and 'bye';\n$(touch pwned) `touch pwned2` ${context.model} $${x}\n\tindented -- --model x";

#[test]
fn a08_provider_templates() {
    let mut ws = Ws::new();
    ws.with_bin_path();
    fake_cli(&ws, "claude", "model reply\n");
    ws.file("prompts/analyze.md", TRICKY_PROMPT);
    ws.workflow(
        r#"
providers:
  claude:
    command: ["claude", "-p", "${PROMPT}", "--model", "${model}", "--effort", "${effort}"]
    defaults: {model: "claude-sonnet-4-20250514", effort: low}
steps:
  - name: Analyze
    provider: claude
    provider_params:
      model: "${context.model}"
    input_file: "prompts/${context.prompt}.md"
    output_file: artifacts/architect/analysis.md
"#,
    );
    let run = ws.run_wf(&[
        "--context",
        "model=claude-opus-4-1-20250805",
        "--context",
        "prompt=analyze",
    ]);
    run.ok();
    assert_eq!(
        recorded_argv(&ws, "claude"),
        [
            "-p",
            TRICKY_PROMPT,
            "--model",
            "claude-opus-4-1-20250805",
            "--effort",
            "low"
        ]
    );
    assert_eq!(ws.read("artifacts/architect/analysis.md"), "model reply\n");
    assert!(!ws.exists("pwned") && !ws.exists("pwned2"));
}

#[test]
fn a08_provider_templates_builtin_defaults() {
    let mut ws = Ws::new();
    ws.with_bin_path();
    fake_cli(&ws, "claude", "ok");
    fake_cli(&ws, "gemini", "ok");
    fake_cli(&ws, "codex", "ok");
    ws.file("p.md", "the prompt").workflow(
        r#"
steps:
  - name: Claude
    provider: claude
    input_file: p.md
  - name: Gemini
    provider: gemini
    input_file: p.md
  - name: Codex
    provider: codex
    input_file: p.md
"#,
    );
    ws.run_wf(&[]).ok();
    // No model named: each CLI's own default (claude-sonnet-4-20250514 is retired). codex and
    // gemini run outside a git repository or trusted folder too.
    assert_eq!(recorded_argv(&ws, "claude"), ["-p", "the prompt"]);
    assert_eq!(
        recorded_argv(&ws, "gemini"),
        ["--skip-trust", "-p", "the prompt"]
    );
    assert_eq!(
        recorded_argv(&ws, "codex"),
        ["exec", "--skip-git-repo-check", "the prompt"]
    );
}

/// A model named by the step, or by the run's role, still reaches the built-in templates.
#[test]
fn builtin_provider_templates_pass_a_named_model() {
    let mut ws = Ws::new();
    ws.with_bin_path();
    fake_cli(&ws, "claude", "ok");
    fake_cli(&ws, "gemini", "ok");
    fake_cli(&ws, "codex", "ok");
    ws.file("p.md", "the prompt").workflow(
        r#"
steps:
  - name: Claude
    provider: claude
    provider_params: {model: claude-opus-4-1-20250805}
    input_file: p.md
  - name: Gemini
    provider: gemini
    provider_params: {model: gemini-2.5-pro}
    input_file: p.md
  - name: Codex
    provider: codex
    provider_params: {model: gpt-5}
    input_file: p.md
"#,
    );
    ws.run_wf(&[]).ok();
    assert_eq!(
        recorded_argv(&ws, "claude"),
        ["-p", "the prompt", "--model", "claude-opus-4-1-20250805"]
    );
    assert_eq!(
        recorded_argv(&ws, "gemini"),
        ["--skip-trust", "-p", "the prompt", "-m", "gemini-2.5-pro"]
    );
    assert_eq!(
        recorded_argv(&ws, "codex"),
        ["exec", "--skip-git-repo-check", "the prompt", "-m", "gpt-5"]
    );
}

#[test]
fn a09_command_override() {
    let mut ws = Ws::new();
    ws.with_bin_path();
    fake_cli(&ws, "claude", "");
    fake_cli(&ws, "codex", "");
    ws.file("p.md", "prompt text").workflow(
        r#"
providers:
  claude:
    command: ["claude", "-p", "${PROMPT}", "--model", "${model}", "--template-only"]
    defaults: {model: "default-model"}
steps:
  - name: WithProvider
    provider: claude
    provider_params: {model: "param-model"}
    input_file: p.md
    command_override: ["codex", "exec", "${PROMPT}", "--as", "${model}"]
  - name: CustomProvider
    command_override: ["claude", "-p", "Special prompt", "--model", "claude-opus-4-1-20250805"]
"#,
    );
    ws.run_wf(&[]).ok();
    assert_eq!(
        recorded_argv(&ws, "codex"),
        ["exec", "prompt text", "--as", "param-model"]
    );
    assert_eq!(
        recorded_argv(&ws, "claude"),
        [
            "-p",
            "Special prompt",
            "--model",
            "claude-opus-4-1-20250805"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 10-11: --clean-processed and --archive-processed.

#[test]
fn a10_clean_processed() {
    let ws = ws_with(
        r#"
steps:
  - name: Look
    command: ["ls", "-A", "processed"]
    output_capture: lines
"#,
    );
    ws.file("processed/old.task", "old")
        .file("processed/.hidden", "h")
        .file("processed/20240101T000000Z/done.task", "done")
        .file("keep/target.txt", "must survive")
        .file("inbox/engineer/pending.task", "pending");
    std::os::unix::fs::symlink(ws.join("keep"), ws.join("processed/link")).unwrap();
    let run = ws.run_wf(&["--clean-processed"]);
    run.ok();
    assert_eq!(
        run.step("Look")["lines"],
        json!([]),
        "emptied before the run"
    );
    assert!(ws.join("processed").is_dir(), "the directory itself stays");
    assert_eq!(
        ws.read("keep/target.txt"),
        "must survive",
        "links are not followed"
    );
    assert_eq!(ws.read("inbox/engineer/pending.task"), "pending");
}

const ARCHIVE_WF: &str = r#"
steps:
  - name: Done
    command: ["bash", "-c", 'mkdir -p processed/batch && printf "%s" "$1" > processed/batch/a.task', "_", "${context.content}"]
  - name: Check
    command: ["bash", "-c", 'exit "$1"', "_", "${context.code}"]
"#;

#[test]
fn a11_archive_processed() {
    let ws = ws_with(ARCHIVE_WF);
    ws.file("processed/earlier.task", "earlier");
    // An explicit destination.
    let run = ws.run_wf(&[
        "--context",
        "content=first",
        "--context",
        "code=0",
        "--archive-processed",
        "archives/out.zip",
    ]);
    run.ok();
    assert_eq!(
        zip_files(&ws.join("archives/out.zip")),
        json!({"batch/a.task": "first", "earlier.task": "earlier"})
    );
    assert!(!ws.run_dir(run.id()).join("processed.zip").exists());

    // The default destination: RUN_ROOT/processed.zip.
    let run = ws.run_wf(&[
        "--archive-processed",
        "--context",
        "content=second",
        "--context",
        "code=0",
    ]);
    run.ok();
    assert_eq!(
        zip_files(&ws.run_dir(run.id()).join("processed.zip")),
        json!({"batch/a.task": "second", "earlier.task": "earlier"})
    );
}

#[test]
fn a11_archive_processed_only_on_success() {
    let ws = ws_with(ARCHIVE_WF);
    let args = ["--context", "content=x", "--context", "code=3"];
    let run = ws.run_wf(&[&args[..], &["--archive-processed", "out.zip"]].concat());
    run.code(1);
    assert!(!ws.exists("out.zip"), "a failed run writes no archive");
    let run = ws.run_wf(&[&args[..], &["--archive-processed"]].concat());
    run.code(1);
    assert!(!ws.run_dir(run.id()).join("processed.zip").exists());
}

#[test]
fn a11_archive_processed_refuses_destination_inside_processed() {
    let ws = ws_with(ARCHIVE_WF);
    ws.file("processed/keep.task", "keep");
    for dest in [
        "processed/out.zip",
        "processed/sub/../out.zip",
        "./processed/x/y.zip",
    ] {
        let run = ws.run_wf(&[
            "--context",
            "content=x",
            "--context",
            "code=0",
            "--archive-processed",
            dest,
        ]);
        run.code(2).stderr_has("outside");
        assert!(
            run.run_id.is_none(),
            "{dest}: nothing may run: {}",
            run.stderr
        );
        assert!(!ws.exists("processed/batch"), "{dest}: a step ran");
    }
    assert_eq!(run_count(&ws), 0);
    assert_eq!(std::fs::read_dir(ws.join("processed")).unwrap().count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 12-14: pointers and JSON limits.

#[test]
fn a12_pointer_grammar() {
    let ws = ws_with(
        r#"
steps:
  - name: X
    command: ["printf", '{"files": ["src/a.py", "src/b c.py", "README.md"], "nested": {"files": ["n1"]}}']
    output_capture: json
  - name: Each
    for_each:
      items_from: "steps.X.json.files"
      steps:
        - name: Record
          command: ["bash", "-c", 'printf "%s=%s\n" "$1" "$2" >> seen.txt', "_", "${loop.index}", "${item}"]
  - name: Deep
    for_each:
      items_from: "steps.X.json.nested.files"
      as: f
      steps:
        - name: RecordDeep
          command: ["bash", "-c", 'printf "deep=%s\n" "$1" >> seen.txt', "_", "${f}"]
"#,
    );
    ws.run_wf(&[]).ok();
    assert_eq!(
        ws.read("seen.txt"),
        "0=src/a.py\n1=src/b c.py\n2=README.md\ndeep=n1\n"
    );
}

const BIG_JSON: &str = r#"
steps:
  - name: Big
    command: ["python3", "-c", "import json; print(json.dumps({'data': 'x' * (1100 * 1024)}))"]
    output_capture: json
    allow_parse_error: ALLOW
  - name: After
    command: ["touch", "after-ran"]
"#;

#[test]
fn a13_json_oversize() {
    let ws = ws_with(&BIG_JSON.replace("ALLOW", "false"));
    let run = ws.run_wf(&[]);
    run.code(2);
    let big = run.step("Big");
    assert_eq!(big["status"], "failed");
    assert_eq!(big["exit_code"], 2);
    assert!(!ws.exists("after-ran"));
    assert_eq!(run.state()["status"], "failed");
}

#[test]
fn a14_json_parse_error_flag() {
    let ws = ws_with(&BIG_JSON.replace("ALLOW", "true"));
    let run = ws.run_wf(&[]);
    run.ok();
    let big = run.step("Big");
    assert_eq!(big["status"], "succeeded");
    assert_eq!(big["exit_code"], 0);
    assert!(ws.exists("after-ran"));

    // Invalid (not oversized) JSON likewise.
    let ws = ws_with(
        r#"
steps:
  - name: Bad
    command: ["printf", "{not json"]
    output_capture: json
    allow_parse_error: true
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(run.step("Bad")["status"], "succeeded");
}

// ---------------------------------------------------------------------------------------------
// 15: --clean-processed refuses a processed_dir outside WORKSPACE.

#[test]
fn a15_cli_safety() {
    let root = Ws::new();
    let workspace = root.join("ws");
    root.file("outside/keep.txt", "keep")
        .file("ws/processed/inside.txt", "inside")
        .file("ws/data.txt", "data");
    let outside_abs = root.join("outside").display().to_string();
    for dir in ["../outside", outside_abs.as_str(), ".", "processed/../.."] {
        root.file(
            "ws/wf.yaml",
            &format!(
                "processed_dir: {dir:?}\nsteps:\n  - name: S\n    command: [\"touch\", \"ran\"]\n"
            ),
        );
        let run = run_in(&workspace, &["run", "wf.yaml", "--clean-processed"]);
        run.code(2).stderr_has("refusing");
        assert!(run.run_id.is_none(), "{dir}: no run may start");
        assert!(!root.exists("ws/ran"), "{dir}: the step ran");
        assert_eq!(root.read("outside/keep.txt"), "keep", "{dir}");
        assert_eq!(root.read("ws/data.txt"), "data", "{dir}");
        assert_eq!(root.read("ws/processed/inside.txt"), "inside", "{dir}");
    }
}

// ---------------------------------------------------------------------------------------------
// 16-18: wait_for.

#[test]
fn a16_wait_for_files() {
    let ws = ws_with(
        r#"
steps:
  - name: Wait
    wait_for: {glob: "inbox/qa/*.task", timeout_sec: 15, poll_ms: 20, min_count: 2}
  - name: After
    command: ["bash", "-c", "cat inbox/qa/*.task"]
"#,
    );
    std::fs::create_dir_all(ws.join("inbox/qa")).unwrap();
    let mut child = spawn(&ws, &["run", "wf.yaml"]);
    wait_for_event(&ws, "step_started", "Wait");
    let deliver = |name: &str| {
        std::thread::sleep(Duration::from_millis(200));
        ws.file(&format!("inbox/qa/{name}.tmp"), name);
        std::fs::rename(
            ws.join(&format!("inbox/qa/{name}.tmp")),
            ws.join(&format!("inbox/qa/{name}.task")),
        )
        .unwrap();
    };
    deliver("one");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        child.try_wait().unwrap().is_none(),
        "wait_for returned with one file of min_count 2"
    );
    deliver("two");
    let run = finish(&ws, child);
    run.ok();
    assert_eq!(run.step("After")["output"], "onetwo");
    // At least the test's own pauses before the two files: a lower bound, which load only
    // raises. That it returned before its 15 s timeout is `run.ok()` (a timeout exits 124).
    assert!(run.step("Wait")["wait_duration"].as_f64().unwrap() >= 0.4);
}

#[test]
fn a17_wait_timeout() {
    let ws = ws_with(
        r#"
steps:
  - name: Wait
    wait_for: {glob: "inbox/none/*.task", timeout_sec: 0.6, poll_ms: 50}
  - name: After
    command: ["touch", "after-ran"]
"#,
    );
    let started = Instant::now();
    let run = ws.run_wf(&[]);
    let elapsed = started.elapsed();
    run.code(124);
    let wait = run.step("Wait");
    assert_eq!(wait["status"], "failed");
    assert_eq!(wait["exit_code"], 124);
    assert!(!ws.exists("after-ran"));
    // The timeout never fires early (a lower bound, which load only raises); that it fired at
    // all is the exit code 124 above, however slow the machine.
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(wait["wait_duration"].as_f64().unwrap() >= 0.6, "{wait}");
}

#[test]
fn a18_wait_state_tracking() {
    let ws = ws_with(
        r#"
steps:
  - name: Wait
    wait_for: {glob: "replies/*.json", timeout_sec: 15, poll_ms: 25, min_count: 2}
"#,
    );
    ws.file("replies/a.json", "{}")
        .file("replies/ignored.txt", "");
    let child = spawn(&ws, &["run", "wf.yaml"]);
    wait_for_event(&ws, "step_started", "Wait");
    std::thread::sleep(Duration::from_millis(250));
    ws.file("replies/b.json", "{}");
    let run = finish(&ws, child);
    run.ok();
    let wait = run.step("Wait");
    let mut files = strings(&wait["files"]);
    files.sort();
    assert_eq!(files, ["replies/a.json", "replies/b.json"]);
    let waited = wait["wait_duration"].as_f64().expect("wait_duration");
    assert!((0.2..10.0).contains(&waited), "wait_duration {waited}");
    let polls = wait["poll_count"].as_u64().expect("poll_count");
    assert!(polls >= 3, "poll_count {polls} for a 250 ms wait at 25 ms");

    // On timeout the same fields are recorded.
    let ws = ws_with(
        r#"
steps:
  - name: Wait
    wait_for: {glob: "replies/*.json", timeout_sec: 0.2, poll_ms: 50}
"#,
    );
    let run = ws.run_wf(&[]);
    run.code(124);
    let wait = run.step("Wait");
    assert_eq!(wait["files"], json!([]));
    assert!(wait["wait_duration"].as_f64().unwrap() >= 0.2);
    assert!(wait["poll_count"].as_u64().unwrap() >= 2);
}
