//! Agent steps, runtimes, phases, approvals and rejection edges, against fake `claude`, `codex`
//! and `gemini` CLIs that replay the verbatim outputs in `tests/fixtures/runtimes/`.
//!
//! Each fake is a bash script in `WS/bin` (first on PATH). It records every call (argv one
//! argument per line, stdin, environment) into a directory outside the workspace, so that its
//! bookkeeping never shows up in a readonly step's workspace fingerprint, and answers call N with
//! line N of that directory's `mode/<name>` file (the last line once they run out): a line of
//! bash, usually `emit FIXTURE; exit CODE`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

/// How long any single condition may take to come true before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/runtimes");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

const CLAUDE_SESSION: &str = "c47bbb07-3a3e-43cc-a4d6-9bb9c068edb1";
const CLAUDE_JSON_SESSION: &str = "0c6e9cfe-8afa-4baa-b557-2635cc55712e";
const CODEX_THREAD: &str = "01a20558-5601-7dd3-ba4f-af744f2c7095";
const GEMINI_SESSION: &str = "2cbc152d-314b-433a-ae7b-d309e500297e";

/// What each fake prints for a plain success.
const CLAUDE_OK: &str = "emit claude.stream-json.tool-success.jsonl";
const CODEX_OK: &str = "emit codex.jsonl.success.jsonl";
const GEMINI_OK: &str = "emit gemini.stream-json.success.jsonl";

// ---------------------------------------------------------------------------------------------
// The lab: a workspace with fake CLIs on PATH and a record directory beside it.

struct Lab {
    ws: Ws,
    rec: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let mut ws = Ws::new();
        ws.with_bin_path();
        let rec = tempfile::tempdir().expect("record dir");
        let lab = Lab { ws, rec };
        for dir in ["fx", "calls", "mode"] {
            std::fs::create_dir_all(lab.rec(dir)).unwrap();
        }
        for entry in std::fs::read_dir(FIXTURES).expect("fixtures dir") {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), lab.rec("fx").join(entry.file_name())).unwrap();
        }
        for name in ["claude", "codex", "gemini"] {
            lab.install_fake(name);
        }
        lab
    }

    fn rec(&self, rel: &str) -> PathBuf {
        self.rec.path().join(rel)
    }

    fn install_fake(&self, name: &str) {
        let script = format!(
            r#"#!/usr/bin/env bash
rec='{rec}'
name='{name}'
fx="$rec/fx"
n=$(( $(cat "$rec/calls/$name.count" 2>/dev/null || echo 0) + 1 ))
printf '%s\n' "$@" > "$rec/calls/$name.$n.argv"
cat > "$rec/calls/$name.$n.stdin"
env > "$rec/calls/$name.$n.env"
echo "$n" > "$rec/calls/$name.count"
emit() {{ cat "$fx/$1"; }}
line=$(sed -n "${{n}}p" "$rec/mode/$name" 2>/dev/null)
[ -n "$line" ] || line=$(tail -n 1 "$rec/mode/$name" 2>/dev/null)
[ -n "$line" ] || {{ echo "fake $name: no answer configured" >&2; exit 99; }}
eval "$line"
"#,
            rec = self.rec.path().display(),
        );
        self.ws.script(&format!("bin/{name}"), &script);
    }

    /// How the fake `name` answers: call N runs line N (the last line once they run out).
    fn answer(&self, name: &str, lines: &[&str]) -> &Lab {
        std::fs::write(self.rec("mode").join(name), lines.join("\n") + "\n").unwrap();
        self
    }

    /// A crafted output, usable as `emit NAME`.
    fn fixture(&self, name: &str, content: &str) -> &Lab {
        std::fs::write(self.rec("fx").join(name), content).unwrap();
        self
    }

    fn calls(&self, name: &str) -> usize {
        std::fs::read_to_string(self.rec("calls").join(format!("{name}.count")))
            .map(|t| t.trim().parse().unwrap())
            .unwrap_or(0)
    }

    /// The argv (without argv\[0\]) of call `n` (1-based) of fake `name`.
    fn argv(&self, name: &str, n: usize) -> Vec<String> {
        let text = std::fs::read_to_string(self.rec("calls").join(format!("{name}.{n}.argv")))
            .unwrap_or_else(|e| panic!("no call {n} of {name}: {e}"));
        text.lines().map(str::to_string).collect()
    }

    fn stdin(&self, name: &str, n: usize) -> String {
        std::fs::read_to_string(self.rec("calls").join(format!("{name}.{n}.stdin"))).unwrap()
    }

    /// The value of `key` in the environment of call `n`.
    fn env_of(&self, name: &str, n: usize, key: &str) -> Option<String> {
        let text =
            std::fs::read_to_string(self.rec("calls").join(format!("{name}.{n}.env"))).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
    }

    fn workflow(&self, yaml: &str) -> &Lab {
        self.ws.workflow(yaml);
        self
    }

    /// `orchestrate run wf.yaml ARGS`, bounded.
    fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["run", "wf.yaml"];
        all.extend_from_slice(args);
        run_within(&self.ws, &all, DEADLINE)
    }

    fn bg(&self, args: &[&str]) -> Bg {
        Bg::spawn(&self.ws, &self.rec("orchestrate.stderr"), args)
    }
}

/// A background `orchestrate`, killed if the test ends before it exits.
struct Bg {
    child: Child,
    stderr: PathBuf,
}

impl Bg {
    fn spawn(ws: &Ws, stderr: &Path, args: &[&str]) -> Bg {
        let file = std::fs::File::create(stderr).unwrap();
        let child = ws
            .cmd(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn orchestrate");
        Bg {
            child,
            stderr: stderr.to_path_buf(),
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    fn wait(&mut self) -> ExitStatus {
        exit_within(&mut self.child, DEADLINE)
            .unwrap_or_else(|| panic!("orchestrate did not exit\n--- stderr\n{}", self.stderr()))
    }

    /// Waits for the exit and asserts its code.
    fn exits(&mut self, code: i32) {
        let status = self.wait();
        assert_eq!(status.code(), Some(code), "stderr:\n{}", self.stderr());
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, "--", &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {signal} failed");
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The complete lines of a run's events.jsonl so far (tolerates a torn last line).
fn events_so_far(ws: &Ws, id: &str) -> Vec<Value> {
    std::fs::read_to_string(ws.run_dir(id).join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn count_events(events: &[Value], name: &str, step: &str) -> usize {
    events
        .iter()
        .filter(|e| e["event"] == name && e["step"] == step)
        .count()
}

/// Waits until the run has recorded `n` events `name` for `step`.
fn wait_events(ws: &Ws, id: &str, name: &str, step: &str, n: usize) {
    wait_until(&format!("{n} x {name} of {step}"), DEADLINE, || {
        count_events(&events_so_far(ws, id), name, step) >= n
    });
}

fn pos(argv: &[String], item: &str) -> usize {
    argv.iter()
        .position(|a| a == item)
        .unwrap_or_else(|| panic!("{item:?} not in argv {argv:?}"))
}

/// `argv` holds `flag value` as two consecutive arguments.
fn has_pair(argv: &[String], flag: &str, value: &str) -> bool {
    argv.windows(2).any(|w| w[0] == flag && w[1] == value)
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

/// Writes `content` to `rel` atomically (a temp file in the same directory, then rename).
fn atomic_write(ws: &Ws, rel: &str, content: &str) {
    let path = ws.join(rel);
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn approx(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 1e-9)
}

// ---------------------------------------------------------------------------------------------
// 1. One agent step per runtime: argv, stdin, and the recorded result.

/// A workflow of one agent step `Ask` on `runtime` and a command step `Use` that writes the
/// step's fields, one per line, into `used.txt`.
fn ask_and_use(runtime: &str, model: &str) -> String {
    format!(
        r#"name: ask
context:
  x: MARKER-ctx-42
steps:
  - name: Ask
    runtime: {runtime}
    model: {model}
    prompt: "Look at ${{context.x}} please"
  - name: Use
    command:
      - bash
      - -c
      - 'printf "%s\n" "$@" > used.txt'
      - use
      - "${{steps.Ask.result}}"
      - "${{steps.Ask.session_id}}"
      - "${{steps.Ask.usage.input}}"
      - "${{steps.Ask.usage.output}}"
      - "${{steps.Ask.usage.cache_read}}"
      - "${{steps.Ask.usage.cache_write}}"
      - "${{steps.Ask.cost_usd}}"
      - "${{steps.Ask.turns}}"
      - "${{steps.Ask.runtime}}"
      - "${{steps.Ask.phase}}"
"#
    )
}

/// Checks the prompt went to stdin, rendered, and nowhere in argv.
fn assert_prompt_on_stdin(lab: &Lab, name: &str) {
    assert_eq!(lab.stdin(name, 1), "Look at MARKER-ctx-42 please");
    let argv = lab.argv(name, 1);
    assert!(
        !argv
            .iter()
            .any(|a| a.contains("MARKER-ctx-42") || a.contains("Look at")),
        "the prompt must not be in argv: {argv:?}"
    );
}

#[test]
fn a_finished_agent_step_line_shows_its_tokens_and_cost() {
    let lab = Lab::new();
    lab.answer("claude", &[CLAUDE_OK])
        .workflow(&ask_and_use("claude", "sonnet-x"));
    let run = lab.run(&[]);
    // 2468 input + 112 output + 4000 cache read + 200 cache write, at the table's prices.
    run.ok()
        .stderr_has("✓ Ask (")
        .stderr_has(", 6,780 tokens, $0.0139)");
    // A command step has no usage: no spend on its line.
    let used = run
        .stderr
        .lines()
        .find(|l| l.starts_with("✓ Use ("))
        .unwrap();
    assert!(!used.contains("tokens"), "{used}");
}

#[test]
fn claude_step_argv_stdin_and_result_fields() {
    let lab = Lab::new();
    lab.answer("claude", &[CLAUDE_OK])
        .workflow(&ask_and_use("claude", "sonnet-x"));
    let run = lab.run(&[]);
    run.ok();
    assert_eq!(lab.calls("claude"), 1);
    assert_eq!(
        lab.argv("claude", 1),
        s(&[
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "dontAsk",
            "--disallowedTools",
            "Write,Edit,NotebookEdit",
            "--model",
            "sonnet-x",
        ])
    );
    assert_prompt_on_stdin(&lab, "claude");
    assert_eq!(
        lab.env_of("claude", 1, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")
            .as_deref(),
        Some("1")
    );

    let ask = run.step("Ask");
    assert_eq!(ask["status"], "succeeded", "{ask:#}");
    assert_eq!(ask["result"], "FAKE_OK: done.");
    assert_eq!(ask["session_id"], CLAUDE_SESSION);
    assert_eq!(ask["usage"]["input"], 2468);
    assert_eq!(ask["usage"]["output"], 112);
    assert_eq!(ask["usage"]["cache_read"], 4000);
    assert_eq!(ask["usage"]["cache_write"], 200);
    assert!(approx(&ask["cost_usd"], 0.013912), "{ask:#}");
    assert_eq!(ask["turns"], 2);
    assert_eq!(ask["runtime"], "claude");
    assert_eq!(ask["phase"], "readonly");
    // The model the CLI reports having used.
    assert_eq!(ask["model"], "claude-opus-5-5");
    assert_eq!(
        lines(&lab.ws, "used.txt"),
        s(&[
            "FAKE_OK: done.",
            CLAUDE_SESSION,
            "2468",
            "112",
            "4000",
            "200",
            "0.013912",
            "2",
            "claude",
            "readonly",
        ])
    );
}

#[test]
fn codex_step_argv_stdin_and_result_fields_cost_null_without_a_price() {
    let lab = Lab::new();
    lab.answer("codex", &[CODEX_OK])
        .workflow(&ask_and_use("codex", "my-model-1"));
    let run = lab.run(&[]);
    run.ok();
    assert_eq!(lab.calls("codex"), 1);
    let ws = lab.ws.path().display().to_string();
    assert_eq!(
        lab.argv("codex", 1),
        s(&[
            "exec",
            "--json",
            "--skip-git-repo-check",
            "-C",
            &ws,
            "-s",
            "read-only",
            "-m",
            "my-model-1",
            "-",
        ])
    );
    assert_prompt_on_stdin(&lab, "codex");

    let ask = run.step("Ask");
    assert_eq!(ask["status"], "succeeded", "{ask:#}");
    assert_eq!(
        ask["result"],
        "FAKE_OK: hello from the fake OpenAI Responses API."
    );
    assert_eq!(ask["session_id"], CODEX_THREAD);
    // input_tokens 1234 includes the 1000 cached ones.
    assert_eq!(ask["usage"]["input"], 234);
    assert_eq!(ask["usage"]["output"], 56);
    assert_eq!(ask["usage"]["cache_read"], 1000);
    assert_eq!(ask["usage"]["cache_write"], 0);
    assert_eq!(ask["cost_usd"], Value::Null, "my-model-1 has no price");
    assert_eq!(ask["turns"], Value::Null);
    assert_eq!(ask["runtime"], "codex");
    assert_eq!(ask["phase"], "readonly");
    assert_eq!(
        lines(&lab.ws, "used.txt"),
        s(&[
            "FAKE_OK: hello from the fake OpenAI Responses API.",
            CODEX_THREAD,
            "234",
            "56",
            "1000",
            "0",
            "null",
            "null",
            "codex",
            "readonly",
        ])
    );
}

#[test]
fn codex_cost_comes_from_a_runtimes_yaml_price_override() {
    let lab = Lab::new();
    lab.answer("codex", &[CODEX_OK])
        .workflow(&ask_and_use("codex", "my-model-1"));
    lab.ws.file(
        "runtimes.yaml",
        "prices:\n  my-model: {input: 1, output: 2, cache_read: 0.5}\n",
    );
    let run = lab.run(&[]);
    run.ok();
    // 234 input x $1 + 56 output x $2 + 1000 cache reads x $0.5, per million tokens.
    let expected = (234.0 + 56.0 * 2.0 + 1000.0 * 0.5) / 1e6;
    let ask = run.step("Ask");
    assert!(approx(&ask["cost_usd"], expected), "{ask:#}");
    let used = lines(&lab.ws, "used.txt");
    let cost: f64 = used[6].parse().expect("cost substitutes as a number");
    assert!((cost - expected).abs() < 1e-9, "{used:?}");
}

#[test]
fn gemini_step_argv_stdin_and_result_fields() {
    let lab = Lab::new();
    lab.answer("gemini", &[GEMINI_OK])
        .workflow(&ask_and_use("gemini", "gem-x"));
    let run = lab.run(&[]);
    run.ok();
    assert_eq!(lab.calls("gemini"), 1);
    assert_eq!(
        lab.argv("gemini", 1),
        s(&[
            "--output-format",
            "stream-json",
            "--skip-trust",
            "--approval-mode",
            "default",
            "-m",
            "gem-x",
        ])
    );
    assert_prompt_on_stdin(&lab, "gemini");
    assert_eq!(
        lab.env_of("gemini", 1, "GEMINI_CLI_TRUST_WORKSPACE")
            .as_deref(),
        Some("true")
    );

    let ask = run.step("Ask");
    assert_eq!(ask["status"], "succeeded", "{ask:#}");
    assert_eq!(ask["result"], "FAKE_OK: hello from the fake Gemini API.");
    assert_eq!(ask["session_id"], GEMINI_SESSION);
    assert_eq!(ask["usage"]["input"], 468);
    // 112 candidates and 20 thinking tokens (the stream's total minus input and output).
    assert_eq!(ask["usage"]["output"], 132);
    assert_eq!(ask["usage"]["reasoning"], 20);
    assert_eq!(ask["usage"]["cache_read"], 2000);
    assert_eq!(ask["usage"]["cache_write"], 0);
    // gemini's `auto` routing: 3.5-flash-lite and 3.8-flash, both in the built-in table; each
    // request's 10 thinking tokens are billed as output (56 + 10).
    let cost = (234.0 * 0.30 + 66.0 * 2.50 + 1000.0 * 0.03) / 1e6
        + (234.0 * 0.75 + 66.0 * 3.75 + 1000.0 * 0.075) / 1e6;
    assert!(approx(&ask["cost_usd"], cost), "{ask:#}");
    assert_eq!(ask["runtime"], "gemini");
    assert_eq!(ask["phase"], "readonly");
    assert_eq!(
        lines(&lab.ws, "used.txt"),
        s(&[
            "FAKE_OK: hello from the fake Gemini API.",
            GEMINI_SESSION,
            "468",
            "132",
            "2000",
            "0",
            &ask["cost_usd"].to_string(),
            "null",
            "gemini",
            "readonly",
        ])
    );
}

#[test]
fn gemini_cost_is_priced_per_model_with_a_price_override() {
    let lab = Lab::new();
    lab.answer("gemini", &[GEMINI_OK])
        .workflow(&ask_and_use("gemini", "gem-x"));
    lab.ws.file(
        "runtimes.yaml",
        "prices:\n  gemini-3: {input: 1, output: 2, cache_read: 0.5}\n",
    );
    let run = lab.run(&[]);
    run.ok();
    // Two models (router and main), each 234 input, 56 + 10 thinking output, 1000 cache reads.
    let expected = 2.0 * (234.0 + 66.0 * 2.0 + 1000.0 * 0.5) / 1e6;
    let ask = run.step("Ask");
    assert!(approx(&ask["cost_usd"], expected), "{ask:#}");
}

// ---------------------------------------------------------------------------------------------
// 2. Phases: write with allow_shell, full only with --allow-full.

#[test]
fn write_phase_with_allow_shell_maps_to_each_clis_controls() {
    let lab = Lab::new();
    lab.answer("claude", &[CLAUDE_OK])
        .answer("codex", &[CODEX_OK])
        .answer("gemini", &[GEMINI_OK])
        .workflow(
            r#"name: write
steps:
  - name: C
    runtime: claude
    phase: write
    allow_shell: ["cargo test"]
    prompt: "change it"
  - name: X
    runtime: codex
    phase: write
    allow_shell: ["cargo test"]
    prompt: "change it"
  - name: G
    runtime: gemini
    phase: write
    allow_shell: ["cargo test"]
    prompt: "change it"
"#,
        );
    let run = lab.run(&[]);
    run.ok();

    let claude = lab.argv("claude", 1);
    assert!(
        has_pair(&claude, "--permission-mode", "acceptEdits"),
        "{claude:?}"
    );
    assert!(
        has_pair(&claude, "--allowedTools", "Bash(cargo test:*)"),
        "{claude:?}"
    );
    assert!(
        !claude.iter().any(|a| a == "--disallowedTools"),
        "{claude:?}"
    );

    let codex = lab.argv("codex", 1);
    assert!(has_pair(&codex, "-s", "workspace-write"), "{codex:?}");

    let gemini = lab.argv("gemini", 1);
    assert!(
        has_pair(&gemini, "--approval-mode", "auto_edit"),
        "{gemini:?}"
    );
    let policy = &gemini[pos(&gemini, "--policy") + 1];
    let text = std::fs::read_to_string(policy)
        .unwrap_or_else(|e| panic!("policy file {policy} must exist after the run: {e}"));
    assert!(
        text.contains("commandPrefix = \"cargo test\""),
        "policy:\n{text}"
    );
    assert!(text.contains("run_shell_command"), "policy:\n{text}");
    for step in ["C", "X", "G"] {
        assert_eq!(run.step(step)["phase"], "write");
    }
}

const FULL_STEPS: &str = r#"name: full
steps:
  - name: C
    runtime: claude
    phase: full
    prompt: "anything"
  - name: X
    runtime: codex
    phase: full
    prompt: "anything"
  - name: G
    runtime: gemini
    phase: full
    prompt: "anything"
"#;

#[test]
fn full_phase_without_allow_full_fails_with_exit_2_naming_the_flag() {
    let lab = Lab::new();
    lab.answer("claude", &[CLAUDE_OK]).workflow(FULL_STEPS);
    let run = lab.run(&[]);
    run.code(2).stderr_has("--allow-full");
    assert_eq!(lab.calls("claude"), 0, "nothing may run without the flag");
    assert_eq!(run.step("C")["status"], "failed");
}

#[test]
fn full_phase_with_allow_full_runs_with_the_full_flags() {
    let lab = Lab::new();
    lab.answer("claude", &[CLAUDE_OK])
        .answer("codex", &[CODEX_OK])
        .answer("gemini", &[GEMINI_OK])
        .workflow(FULL_STEPS);
    lab.run(&["--allow-full"]).ok();
    let claude = lab.argv("claude", 1);
    assert!(
        has_pair(&claude, "--permission-mode", "bypassPermissions"),
        "{claude:?}"
    );
    if is_root() {
        assert_eq!(
            lab.env_of("claude", 1, "IS_SANDBOX").as_deref(),
            Some("1"),
            "claude refuses bypassPermissions as root without IS_SANDBOX"
        );
    }
    let codex = lab.argv("codex", 1);
    assert!(
        codex
            .iter()
            .any(|a| a == "--dangerously-bypass-approvals-and-sandbox"),
        "{codex:?}"
    );
    assert!(!codex.iter().any(|a| a == "-s"), "{codex:?}");
    let gemini = lab.argv("gemini", 1);
    assert!(has_pair(&gemini, "--approval-mode", "yolo"), "{gemini:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. resume: the earlier step's session, and codex usage per step.

#[test]
fn claude_and_gemini_resume_pass_the_earlier_session_id() {
    let lab = Lab::new();
    lab.answer(
        "claude",
        &[
            "emit claude.json.success.json",
            "emit claude.json.success.json",
        ],
    )
    .answer("gemini", &[GEMINI_OK])
    .workflow(
        r#"name: resume
steps:
  - name: Explore
    runtime: claude
    prompt: "look"
  - name: Continue
    runtime: claude
    resume: Explore
    prompt: "go on"
  - name: GExplore
    runtime: gemini
    prompt: "look"
  - name: GContinue
    runtime: gemini
    resume: GExplore
    prompt: "go on"
"#,
    );
    lab.run(&[]).ok();
    assert_eq!(lab.calls("claude"), 2);
    assert!(!lab.argv("claude", 1).iter().any(|a| a == "--resume"));
    let second = lab.argv("claude", 2);
    assert!(
        has_pair(&second, "--resume", CLAUDE_JSON_SESSION),
        "{second:?}"
    );
    assert_eq!(lab.stdin("claude", 2), "go on");
    let gemini = lab.argv("gemini", 2);
    assert!(has_pair(&gemini, "--resume", GEMINI_SESSION), "{gemini:?}");
}

#[test]
fn codex_resume_goes_after_the_sandbox_and_usage_is_per_step() {
    let lab = Lab::new();
    // The second turn of the same thread reports the thread's running total.
    lab.answer(
        "codex",
        &[
            CODEX_OK,
            "sed 's/01a20558-7379-7391-ab81-e5a2694bcb10/01a20558-5601-7dd3-ba4f-af744f2c7095/' \"$fx/codex.jsonl.resume-cumulative-usage.jsonl\"",
        ],
    )
    .workflow(
        r#"name: resume
steps:
  - name: Explore
    runtime: codex
    model: gpt-5
    prompt: "look"
  - name: Continue
    runtime: codex
    model: gpt-5
    resume: Explore
    prompt: "go on"
"#,
    );
    let run = lab.run(&[]);
    run.ok();
    assert_eq!(lab.calls("codex"), 2);
    let argv = lab.argv("codex", 2);
    let sandbox = pos(&argv, "-s");
    let resume = pos(&argv, "resume");
    assert_eq!(argv[sandbox + 1], "read-only");
    assert_eq!(argv[resume + 1], CODEX_THREAD, "{argv:?}");
    assert!(sandbox < resume, "{argv:?}");
    assert_eq!(argv.last().unwrap(), "-", "{argv:?}");
    assert_eq!(resume + 2, argv.len() - 1, "{argv:?}");

    let first = run.step("Explore");
    assert_eq!(first["usage"]["input"], 234);
    let second = run.step("Continue");
    assert_eq!(second["status"], "succeeded", "{second:#}");
    assert_eq!(second["session_id"], CODEX_THREAD);
    // Thread totals 3702 in (3000 cached) / 168 out minus the first turn's 1234 (1000) / 56.
    assert_eq!(second["usage"]["input"], 468, "{second:#}");
    assert_eq!(second["usage"]["cache_read"], 2000, "{second:#}");
    assert_eq!(second["usage"]["output"], 112, "{second:#}");
    assert_eq!(second["usage"]["reasoning"], 24, "{second:#}");
    // The step is priced on its own tokens (gpt-5 is in the built-in table).
    let expected = (468.0 * 1.25 + 112.0 * 10.0 + 2000.0 * 0.125) / 1e6;
    assert!(approx(&second["cost_usd"], expected), "{second:#}");
}

/// A chain of three claude steps, each resuming the one before, one model request each: the
/// real CLI's `modelUsage` and `total_cost_usd` cover the whole session on resume (verbatim
/// outputs of claude 2.1.330 against the stand-in server), yet each step records its own.
#[test]
fn resumed_claude_steps_do_not_count_the_earlier_session_again() {
    let lab = Lab::new();
    lab.answer(
        "claude",
        &[
            "emit claude.stream-json.resume-chain-start.jsonl",
            "emit claude.stream-json.resume-cumulative-usage.jsonl",
            "emit claude.stream-json.resume-cumulative-usage-2.jsonl",
        ],
    )
    .workflow(
        r#"name: chain
budget:
  # Three requests cost 3 x $0.006956 = $0.020868; counted as the session totals the CLI
  # reports they would come to $0.041736 and stop the run.
  max_cost_usd: 0.03
steps:
  - name: One
    runtime: claude
    prompt: "look"
  - name: Two
    runtime: claude
    resume: One
    prompt: "go on"
  - name: Three
    runtime: claude
    resume: Two
    prompt: "finish"
"#,
    );
    let run = lab.run(&[]);
    run.ok();
    assert_eq!(lab.calls("claude"), 3);
    for name in ["One", "Two", "Three"] {
        let step = run.step(name);
        assert_eq!(step["status"], "succeeded", "{name}: {step:#}");
        for (field, want) in [
            ("input", 1234),
            ("output", 56),
            ("cache_read", 2000),
            ("cache_write", 100),
        ] {
            assert_eq!(step["usage"][field], want, "{name} {field}: {step:#}");
        }
        assert!(approx(&step["cost_usd"], 0.006956), "{name}: {step:#}");
    }
    // The session's totals stay on record for the next resume.
    assert_eq!(run.step("Three")["usage_cumulative"]["input"], 3702);
    assert!(approx(&run.step("Three")["cost_usd_cumulative"], 0.020868));
}

/// Two steps resume the same step: the session went on in between (claude keeps one session id
/// across resumes), so the second one's share is measured from where the first left it.
#[test]
fn a_session_resumed_twice_from_one_step_is_counted_from_its_latest_totals() {
    let lab = Lab::new();
    lab.answer(
        "claude",
        &[
            "emit claude.stream-json.resume-chain-start.jsonl",
            "emit claude.stream-json.resume-cumulative-usage.jsonl",
            "emit claude.stream-json.resume-cumulative-usage-2.jsonl",
        ],
    )
    .workflow(
        r#"name: fork
steps:
  - name: One
    runtime: claude
    prompt: "look"
  - name: Two
    runtime: claude
    resume: One
    prompt: "go on"
  - name: Three
    runtime: claude
    resume: One
    prompt: "again"
"#,
    );
    let run = lab.run(&[]);
    run.ok();
    let three = run.step("Three");
    assert_eq!(three["usage"]["input"], 1234, "{three:#}");
    assert!(approx(&three["cost_usd"], 0.006956), "{three:#}");
}

// ---------------------------------------------------------------------------------------------
// 4. Who runs a step.

const NO_RUNTIME: &str = r#"name: plain
steps:
  - name: Ask
    prompt: "hello"
  - name: Show
    command: [bash, -c, 'echo "$1" > who.txt', show, "${steps.Ask.runtime}"]
"#;

#[test]
fn a_workflow_without_runtimes_runs_on_runtime_codex_and_on_runtime_gemini() {
    let lab = Lab::new();
    lab.answer("codex", &[CODEX_OK])
        .answer("gemini", &[GEMINI_OK])
        .answer("claude", &[CLAUDE_OK])
        .workflow(NO_RUNTIME);
    lab.run(&["--runtime", "codex"]).ok();
    assert_eq!(lab.calls("codex"), 1);
    assert_eq!(lines(&lab.ws, "who.txt"), ["codex"]);
    lab.run(&["--runtime", "gemini"]).ok();
    assert_eq!(lab.calls("gemini"), 1);
    assert_eq!(lines(&lab.ws, "who.txt"), ["gemini"]);
    assert_eq!(lab.calls("claude"), 0);
}

#[test]
fn the_runtimes_yaml_default_profile_decides_when_nothing_else_does() {
    let lab = Lab::new();
    lab.answer("claude", &[CLAUDE_OK]).workflow(NO_RUNTIME);
    lab.ws.file(
        "runtimes.yaml",
        "default: fast\nprofiles:\n  fast: {runtime: claude, model: haiku, env: {FOO: bar}}\n",
    );
    let run = lab.run(&[]);
    run.ok();
    assert_eq!(lab.calls("claude"), 1);
    let argv = lab.argv("claude", 1);
    assert!(has_pair(&argv, "--model", "haiku"), "{argv:?}");
    assert_eq!(lab.env_of("claude", 1, "FOO").as_deref(), Some("bar"));
    let ask = run.step("Ask");
    assert_eq!(ask["runtime"], "claude");
    assert_eq!(ask["profile"], "fast");
}

#[test]
fn runtime_flag_beats_the_steps_runtime() {
    let lab = Lab::new();
    lab.answer("claude", &[CLAUDE_OK])
        .answer("codex", &[CODEX_OK])
        .workflow(
            r#"name: pinned
steps:
  - name: Ask
    runtime: claude
    prompt: "hello"
"#,
        );
    let run = lab.run(&["--runtime", "codex"]);
    run.ok();
    assert_eq!(lab.calls("claude"), 0);
    assert_eq!(lab.calls("codex"), 1);
    assert_eq!(run.step("Ask")["runtime"], "codex");
}

#[test]
fn no_runtime_anywhere_fails_with_exit_2_saying_how_to_choose() {
    let lab = Lab::new();
    lab.workflow(NO_RUNTIME);
    let run = lab.run(&[]);
    run.code(2)
        .stderr_has("--runtime")
        .stderr_has("runtimes.yaml")
        .stderr_has("runtime:");
    assert_eq!(
        lab.calls("claude") + lab.calls("codex") + lab.calls("gemini"),
        0
    );
}

#[test]
fn runtimes_yaml_with_an_unknown_field_fails_with_exit_2_and_its_position() {
    let lab = Lab::new();
    lab.answer("claude", &[CLAUDE_OK]).workflow(NO_RUNTIME);
    lab.ws.file(
        "runtimes.yaml",
        "default: fast\nprofiles:\n  fast:\n    runtime: claude\n    modle: haiku\n",
    );
    let run = lab.run(&[]);
    run.code(2)
        .stderr_has("runtimes.yaml:5:5")
        .stderr_has("modle")
        .stderr_has("model");
    assert_eq!(lab.calls("claude"), 0);
    assert!(
        !lab.ws.exists(".orchestrate/runs"),
        "nothing is run with a broken runtimes.yaml"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Error classes.

/// One agent step `Ask` on `runtime` with extra step fields.
fn one_step(runtime: &str, extra: &str) -> String {
    format!(
        "name: one\nsteps:\n  - name: Ask\n    runtime: {runtime}\n    prompt: \"hello\"\n{extra}"
    )
}

#[test]
fn rate_limit_then_success_is_retried() {
    let lab = Lab::new();
    lab.answer(
        "claude",
        &[
            "emit claude.stream-json.rate-limit-429.jsonl; exit 1",
            CLAUDE_OK,
        ],
    )
    .workflow(&one_step(
        "claude",
        "    retry: {max_attempts: 3, delay_sec: 0.05}\n",
    ));
    let run = lab.run(&[]);
    run.ok();
    assert_eq!(lab.calls("claude"), 2);
    let ask = run.step("Ask");
    assert_eq!(ask["status"], "succeeded");
    assert_eq!(ask["attempts"], 2);
    let events = run.events();
    assert_eq!(count_events(&events, "retry_scheduled", "Ask"), 1);
}

#[test]
fn an_auth_error_fails_at_once_saying_how_to_log_in() {
    let lab = Lab::new();
    lab.answer("claude", &["emit claude.json.not-logged-in.json; exit 1"])
        .workflow(&one_step(
            "claude",
            "    retry: {max_attempts: 3, delay_sec: 0.05}\n",
        ));
    let run = lab.run(&[]);
    run.code(1);
    assert_eq!(lab.calls("claude"), 1, "an auth error is not retried");
    let ask = run.step("Ask");
    assert_eq!(ask["error"]["kind"], "auth", "{ask:#}");
    let message = ask["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not authenticated"), "{message}");
    assert!(message.contains("log in"), "{message}");
    // What the person running the workflow sees.
    run.stderr_has("not authenticated").stderr_has("log in");
}

#[test]
fn a_401_fails_at_once_on_every_runtime() {
    for (name, line) in [
        ("claude", "emit claude.json.auth-401.json; exit 1"),
        ("gemini", "emit gemini.stream-json.auth-401.jsonl; exit 145"),
        ("codex", "emit codex.jsonl.auth-401.jsonl; exit 1"),
    ] {
        let lab = Lab::new();
        lab.answer(name, &[line]).workflow(&one_step(name, ""));
        let run = lab.run(&[]);
        run.code(1);
        assert_eq!(lab.calls(name), 1, "{name}: an auth error is not retried");
        let ask = run.step("Ask");
        assert_eq!(ask["error"]["kind"], "auth", "{name}: {ask:#}");
        assert!(
            ask["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("not authenticated"),
            "{name}: {ask:#}"
        );
    }
}

/// claude retries some rejected credentials (an OAuth token) ten times over minutes, saying so
/// in its stream (`api_retry` with `"error":"authentication_failed"`): the engine stops it at
/// the first one. The fake prints claude's first two lines, then would retry for 600 s.
#[test]
fn claude_is_stopped_at_its_first_authentication_failure() {
    let lab = Lab::new();
    lab.answer(
        "claude",
        &["head -n 2 \"$fx/claude.stream-json.auth-401-retried.jsonl\"; sleep 600"],
    )
    .workflow(&one_step("claude", ""));
    // `run` gives up long before the fake's 600 s: that the run ends at all is the stop.
    let run = lab.run(&[]);
    run.code(1);
    assert_eq!(lab.calls("claude"), 1, "an auth error is not retried");
    let ask = run.step("Ask");
    assert_eq!(ask["status"], "failed", "{ask:#}");
    assert_eq!(ask["error"]["kind"], "auth", "{ask:#}");
    assert_eq!(ask["error"]["http_status"], 401, "{ask:#}");
    let message = ask["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("rejected the credentials"), "{message}");
    assert!(message.contains("not authenticated"), "{message}");
    run.stderr_has("not authenticated");
}

#[test]
fn gemini_429_exit_173_is_classified_rate_limit() {
    let lab = Lab::new();
    lab.answer(
        "gemini",
        &["emit gemini.stream-json.rate-limit-429.jsonl; exit 173"],
    )
    // One attempt (on_exit_codes makes max_attempts count), so the class is what is recorded.
    .workflow(&one_step(
        "gemini",
        "    retry: {max_attempts: 1, on_exit_codes: [173]}\n",
    ));
    let run = lab.run(&[]);
    run.code(1);
    let ask = run.step("Ask");
    assert_eq!(ask["exit_code"], 173);
    assert_eq!(ask["error"]["kind"], "rate_limit", "{ask:#}");
    assert_eq!(ask["error"]["http_status"], 429, "{ask:#}");
}

#[test]
fn claude_is_error_with_subtype_success_is_a_failure() {
    let lab = Lab::new();
    lab.fixture(
        "claude-odd-error.json",
        r#"{"type":"result","subtype":"success","is_error":true,"result":"Something went sideways","session_id":"s-odd","num_turns":1}"#,
    )
    .answer("claude", &["emit claude-odd-error.json; exit 0"])
    .workflow(&one_step("claude", ""));
    let run = lab.run(&[]);
    run.code(1);
    let ask = run.step("Ask");
    assert_eq!(ask["status"], "failed", "{ask:#}");
    assert!(ask["error"]["kind"].is_string(), "{ask:#}");
    assert_eq!(lab.calls("claude"), 1);
}

#[test]
fn a_bad_argv_error_fails_at_once_as_bad_argv() {
    let lab = Lab::new();
    lab.answer(
        "claude",
        &["echo \"error: unknown option '--zz'\" >&2; exit 1"],
    )
    .workflow(&one_step(
        "claude",
        "    retry: {max_attempts: 3, delay_sec: 0.05}\n",
    ));
    let run = lab.run(&[]);
    run.code(1);
    assert_eq!(lab.calls("claude"), 1, "a bad argv is not retried");
    let ask = run.step("Ask");
    assert_eq!(ask["error"]["kind"], "bad_argv", "{ask:#}");
    let message = ask["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("unknown option '--zz'"), "{message}");
}

#[test]
fn a_usage_limit_with_a_reset_time_pauses_then_retries() {
    let lab = Lab::new();
    // The legacy claude form carries epoch seconds: reset two seconds after the call.
    lab.answer(
        "claude",
        &[
            r#"echo "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":true,\"result\":\"Claude AI usage limit reached|$(( $(date +%s) + 2 ))\",\"session_id\":\"s1\"}"; exit 1"#,
            CLAUDE_OK,
        ],
    )
    .workflow(&one_step("claude", ""));
    let started = Instant::now();
    let run = lab.run(&[]);
    run.ok();
    assert_eq!(lab.calls("claude"), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the step must wait for the reset ({:?})",
        started.elapsed()
    );
    let events = run.events();
    let paused: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "paused" && e["step"] == "Ask")
        .collect();
    assert_eq!(paused.len(), 1, "{events:#?}");
    assert_eq!(paused[0]["reason"], "usage_limit");
    assert!(paused[0]["until"].is_string());
    assert_eq!(run.step("Ask")["status"], "succeeded");
}

#[test]
fn a_usage_limit_that_resets_in_seconds_pauses_for_those_seconds() {
    let lab = Lab::new();
    // "try again in 2s": parse.rs reads `2s` as the reset time.
    lab.fixture(
        "claude-usage-in-2s.json",
        r#"{"type":"result","subtype":"success","is_error":true,"result":"You've hit your usage limit. Please try again in 2s","session_id":"s1"}"#,
    )
    .answer("claude", &["emit claude-usage-in-2s.json; exit 1", CLAUDE_OK])
    .workflow(&one_step("claude", ""));
    let mut bg = lab.bg(&["run", "wf.yaml"]);
    let id = only_run_id(&lab.ws);
    wait_events(&lab.ws, &id, "paused", "Ask", 1);
    let events = events_so_far(&lab.ws, &id);
    let paused = events
        .iter()
        .find(|e| e["event"] == "paused")
        .expect("paused event");
    assert_eq!(paused["resets_at"], "2s", "{paused:#}");
    let until = seconds_until(paused["until"].as_str().unwrap_or_default());
    assert!(
        until <= 10.0,
        "a limit that resets in 2 s must not pause for {until:.0} s: {paused:#}"
    );
    bg.exits(0);
    assert_eq!(lab.calls("claude"), 2);
}

#[test]
fn the_output_of_a_paused_attempt_keeps_its_own_log() {
    let lab = Lab::new();
    lab.answer(
        "claude",
        &[
            r#"echo "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":true,\"result\":\"Claude AI usage limit reached|$(( $(date +%s) + 1 ))\",\"session_id\":\"s1\"}"; exit 1"#,
            CLAUDE_OK,
        ],
    )
    .workflow(&one_step("claude", ""));
    let run = lab.run(&[]);
    run.ok();
    assert_eq!(lab.calls("claude"), 2);
    let logs = lab.ws.run_dir(run.id()).join("logs");
    let mut texts: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".stdout"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    texts.sort();
    assert!(
        texts.iter().any(|t| t.contains("usage limit reached")),
        "the usage-limit answer that caused the pause is in no log: {:?}",
        std::fs::read_dir(&logs)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );
    assert!(texts.iter().any(|t| t.contains("FAKE_OK: done.")));
}

/// Seconds from now until an RFC 3339 UTC time (`date -d` does the parsing).
fn seconds_until(rfc3339: &str) -> f64 {
    let out = Command::new("date")
        .args(["-d", rfc3339, "+%s.%N"])
        .output()
        .expect("date");
    let then: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("date could not read {rfc3339:?}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    then - now
}

#[test]
fn retry_max_attempts_1_on_an_agent_step_means_one_attempt() {
    let lab = Lab::new();
    lab.answer("codex", &["emit codex.jsonl.server-500.jsonl; exit 1"])
        .workflow(&one_step(
            "codex",
            "    retry: {max_attempts: 1, delay_sec: 0.05}\n",
        ));
    let run = lab.run(&[]);
    run.code(1);
    assert_eq!(run.step("Ask")["error"]["kind"], "server");
    assert_eq!(
        lab.calls("codex"),
        1,
        "`retry: {{max_attempts: 1}}` says otherwise than the default 3 attempts"
    );
}

#[test]
fn a_server_error_is_retried_with_the_steps_delay() {
    let lab = Lab::new();
    lab.answer(
        "codex",
        &["emit codex.jsonl.server-500.jsonl; exit 1", CODEX_OK],
    )
    .workflow(&one_step(
        "codex",
        "    retry: {max_attempts: 3, delay_sec: 0.05}\n",
    ));
    let run = lab.run(&[]);
    run.ok();
    assert_eq!(lab.calls("codex"), 2);
    assert_eq!(count_events(&run.events(), "retry_scheduled", "Ask"), 1);
}

// ---------------------------------------------------------------------------------------------
// 6. Approvals.

const APPROVAL_WF: &str = r#"name: approve
context:
  what: v1
steps:
  - name: Plan
    command: [bash, -c, 'printf "[%s]\n" "$1" >> feedback.log', plan, "${feedback}"]
  - name: Approve
    approval:
      message: "Ship ${context.what}?"
      artifacts: [artifacts/plan.md]
    on:
      rejected: {goto: Plan}
  - name: After
    command: [bash, -c, 'printf "%s|%s|%s\n" "$1" "$2" "$3" > after.txt', after, "${steps.Approve.decision}", "${steps.Approve.note}", "${steps.Approve.by}"]
"#;

fn request_rel(id: &str) -> String {
    format!(".orchestrate/approvals/{id}/Approve.request.json")
}

fn decision_rel(id: &str) -> String {
    format!(".orchestrate/approvals/{id}/Approve.decision.json")
}

/// Starts the approval workflow and waits for its first request; returns the run id.
fn start_approval(lab: &Lab, yaml: &str) -> (Bg, String) {
    lab.workflow(yaml);
    let bg = lab.bg(&["run", "wf.yaml"]);
    let id = only_run_id(&lab.ws);
    wait_events(&lab.ws, &id, "approval_requested", "Approve", 1);
    (bg, id)
}

#[test]
fn approval_writes_a_request_blocks_and_approve_finishes_the_run() {
    let lab = Lab::new();
    let (mut bg, id) = start_approval(&lab, APPROVAL_WF);
    let request: Value = serde_json::from_str(&lab.ws.read(&request_rel(&id))).unwrap();
    assert_eq!(request["message"], "Ship v1?");
    assert_eq!(request["artifacts"], json!(["artifacts/plan.md"]));
    assert_eq!(request["run_id"], id.as_str());
    assert_eq!(request["step"], "Approve");
    assert!(request["request_id"].is_string());

    std::thread::sleep(Duration::from_millis(300));
    assert!(bg.running(), "the run must wait for a decision");
    assert!(!lab.ws.exists("after.txt"));

    lab.ws
        .run(&["approve", &id, "Approve", "--note", "N", "--by", "alice"])
        .ok();
    bg.exits(0);
    assert_eq!(lines(&lab.ws, "after.txt"), ["approve|N|alice"]);
    let state = lab.ws.state(&id);
    let approve = &state["steps"]["Approve"];
    assert_eq!(approve["status"], "succeeded", "{approve:#}");
    assert_eq!(approve["note"], "N");
    assert_eq!(approve["by"], "alice");
    let events = lab.ws.events(&id);
    assert_eq!(count_events(&events, "approval_requested", "Approve"), 1);
    assert_eq!(count_events(&events, "approval_decided", "Approve"), 1);
    let decided = events
        .iter()
        .find(|e| e["event"] == "approval_decided")
        .unwrap();
    assert_eq!(decided["decision"]["decision"], "approve");
    assert_eq!(decided["decision"]["by"], "alice");
    // The requests live with the run's records: nothing untracked in the repository's root.
    assert!(
        !lab.ws.exists("approvals"),
        "an approvals/ directory was left"
    );
}

#[test]
fn approve_answers_a_request_left_in_the_old_approvals_directory() {
    // A run started before requests moved under .orchestrate/ waits on approvals/<run>/.
    let ws = Ws::new();
    let id = "20261201T000000Z-0000";
    ws.file(
        &format!("approvals/{id}/Gate.request.json"),
        &json!({"format_version": 1, "request_id": "r1", "run_id": id, "step": "Gate",
            "message": "ok?", "artifacts": [], "requested_at": "2026-12-01T00:00:00Z", "how": []})
        .to_string(),
    );
    ws.run(&["approve", id, "Gate", "--by", "bob"]).ok();
    let decision: Value =
        serde_json::from_str(&ws.read(&format!("approvals/{id}/Gate.decision.json"))).unwrap();
    assert_eq!(decision["decision"], "approve");
    assert_eq!(decision["request_id"], "r1");
    assert!(!ws.exists(&format!(".orchestrate/approvals/{id}")));
}

#[test]
fn reject_goes_back_with_the_reason_as_feedback_then_approve_finishes() {
    let lab = Lab::new();
    let (mut bg, id) = start_approval(&lab, APPROVAL_WF);
    lab.ws
        .run(&["reject", &id, "Approve", "--reason", "R is the reason"])
        .ok();
    wait_events(&lab.ws, &id, "approval_requested", "Approve", 2);
    assert_eq!(lines(&lab.ws, "feedback.log"), ["[]", "[R is the reason]"]);
    lab.ws.run(&["approve", &id, "Approve"]).ok();
    bg.exits(0);
    let events = lab.ws.events(&id);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "goto" && e["from"] == "Approve" && e["to"] == "Plan"),
        "{events:#?}"
    );
    assert_eq!(count_events(&events, "approval_decided", "Approve"), 2);
    assert_eq!(
        lines(&lab.ws, "after.txt")[0].split('|').next(),
        Some("approve")
    );
}

#[test]
fn a_decision_file_written_by_hand_is_honoured() {
    let lab = Lab::new();
    let (mut bg, id) = start_approval(&lab, APPROVAL_WF);
    atomic_write(
        &lab.ws,
        &decision_rel(&id),
        r#"{"decision": "approve", "by": "cron", "note": "by hand"}"#,
    );
    bg.exits(0);
    assert_eq!(lines(&lab.ws, "after.txt"), ["approve|by hand|cron"]);
}

#[test]
fn a_malformed_decision_file_is_not_an_approval() {
    let lab = Lab::new();
    let (mut bg, id) = start_approval(&lab, APPROVAL_WF);
    atomic_write(&lab.ws, &decision_rel(&id), r#"{"decision": "approved"}"#);
    wait_events(&lab.ws, &id, "approval_unreadable", "Approve", 1);
    std::thread::sleep(Duration::from_millis(500));
    assert!(bg.running(), "a malformed decision must not end the wait");
    assert!(!lab.ws.exists("after.txt"));
    atomic_write(&lab.ws, &decision_rel(&id), r#"{"decision": "approve"}"#);
    bg.exits(0);
    assert_eq!(lab.ws.state(&id)["steps"]["Approve"]["status"], "succeeded");
}

#[test]
fn reject_without_a_reason_is_refused() {
    let lab = Lab::new();
    let (mut bg, id) = start_approval(&lab, APPROVAL_WF);
    let refused = lab.ws.run(&["reject", &id, "Approve"]);
    refused.code(2);
    assert!(refused.stderr.contains("--reason"), "{}", refused.stderr);
    let empty = lab.ws.run(&["reject", &id, "Approve", "--reason", "  "]);
    empty.code(2).stderr_has("--reason");
    assert!(!lab.ws.exists(&decision_rel(&id)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(bg.running());
    lab.ws.run(&["approve", &id, "Approve"]).ok();
    bg.exits(0);
}

#[test]
fn approve_without_a_pending_request_exits_2_with_a_clear_message() {
    let lab = Lab::new();
    lab.workflow("name: none\nsteps:\n  - name: A\n    command: [true]\n");
    let run = lab.run(&[]);
    run.ok();
    let refused = lab.ws.run(&["approve", run.id(), "Approve"]);
    refused
        .code(2)
        .stderr_has("no approval is pending")
        .stderr_has("Approve");
    let unknown = lab
        .ws
        .run(&["approve", "20990101T000000Z-nosuch", "Approve"]);
    unknown.code(2).stderr_has("no approval is pending");
}

#[test]
fn approve_after_the_decision_was_taken_is_refused() {
    let lab = Lab::new();
    let (mut bg, id) = start_approval(&lab, APPROVAL_WF);
    lab.ws
        .run(&["approve", &id, "Approve", "--by", "alice"])
        .ok();
    bg.exits(0);
    let recorded = lab.ws.read(&decision_rel(&id));
    // Nothing is pending any more: a late decision must not rewrite who decided.
    let late = lab.ws.run(&[
        "reject", &id, "Approve", "--reason", "too late", "--by", "mallory",
    ]);
    late.code(2).stderr_has("no approval is pending");
    let again = lab.ws.run(&["approve", &id, "Approve", "--by", "mallory"]);
    again.code(2).stderr_has("no approval is pending");
    assert_eq!(lab.ws.read(&decision_rel(&id)), recorded);
}

#[test]
fn an_approval_timeout_fails_the_step_with_exit_124() {
    let lab = Lab::new();
    lab.workflow(
        r#"name: timeout
steps:
  - name: Approve
    approval:
      message: "anyone?"
      timeout_sec: 1
"#,
    );
    let started = Instant::now();
    let run = lab.run(&[]);
    run.code(124);
    assert!(started.elapsed() >= Duration::from_millis(900));
    let approve = run.step("Approve");
    assert_eq!(approve["status"], "failed");
    assert_eq!(approve["exit_code"], 124);
}

#[test]
fn an_interrupted_approval_is_resumed_and_a_decision_given_meanwhile_is_honoured() {
    let lab = Lab::new();
    let (mut bg, id) = start_approval(&lab, APPROVAL_WF);
    bg.signal("-INT");
    bg.exits(130);
    assert_eq!(lab.ws.state(&id)["status"], "interrupted");
    lab.ws
        .run(&[
            "approve",
            &id,
            "Approve",
            "--note",
            "while down",
            "--by",
            "bob",
        ])
        .ok();
    let resumed = run_within(&lab.ws, &["resume", &id], DEADLINE);
    resumed.ok();
    assert_eq!(lines(&lab.ws, "after.txt"), ["approve|while down|bob"]);
    assert_eq!(lines(&lab.ws, "feedback.log"), ["[]"], "Plan ran once");
    assert_eq!(lab.ws.state(&id)["status"], "succeeded");
}

#[test]
fn a_hand_written_decision_given_while_the_run_was_down_is_honoured() {
    let lab = Lab::new();
    let (mut bg, id) = start_approval(&lab, APPROVAL_WF);
    bg.signal("-INT");
    bg.exits(130);
    // A tool (cron, ssh, a phone) answers while the engine is down: no request_id.
    atomic_write(
        &lab.ws,
        &decision_rel(&id),
        r#"{"decision": "approve", "by": "phone"}"#,
    );
    let mut resumed = lab.bg(&["resume", &id]);
    // A generous deadline: without the decision seen, the run would wait for ever.
    let decided = Instant::now() + Duration::from_secs(60);
    while resumed.running() && Instant::now() < decided {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !resumed.running(),
        "the resumed run still waits for a decision that was given while it was down: {:?}\n{}",
        std::fs::read_dir(lab.ws.join(&format!(".orchestrate/approvals/{id}")))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect::<Vec<_>>(),
        resumed.stderr()
    );
    resumed.exits(0);
    assert_eq!(lines(&lab.ws, "after.txt"), ["approve||phone"]);
}

// ---------------------------------------------------------------------------------------------
// 7. rejected_when.

#[test]
fn rejected_when_goes_back_with_the_findings_as_feedback() {
    let lab = Lab::new();
    lab.workflow(
        r#"name: review
steps:
  - name: Plan
    command: [bash, -c, 'printf "%s|%s\n" "$1" "$2" >> feedback.log', plan, "${feedback}", "${feedback.from}"]
  - name: Review
    command: [bash, -c, 'if [ -f reviewed ]; then echo "{\"approved\": true}"; else touch reviewed; echo "{\"approved\": false, \"findings\": [\"x\"]}"; fi']
    output_capture: json
    rejected_when: '.json.approved != true'
    on:
      rejected: {goto: Plan}
"#,
    );
    let run = lab.run(&[]);
    run.ok();
    let log = lines(&lab.ws, "feedback.log");
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0], "|");
    assert!(log[1].contains("\"findings\":[\"x\"]"), "{log:?}");
    assert!(log[1].ends_with("|Review"), "{log:?}");
    let events = run.events();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "goto" && e["from"] == "Review" && e["to"] == "Plan")
    );
    assert_eq!(run.step("Review")["status"], "succeeded");
}

#[test]
fn a_reviewer_that_always_rejects_ends_in_loop_detected() {
    let lab = Lab::new();
    lab.workflow(
        r#"name: stubborn
steps:
  - name: Plan
    max_visits: 3
    command: [bash, -c, 'echo plan >> plan.log']
  - name: Review
    command: [bash, -c, 'echo "{\"approved\": false, \"findings\": [\"no\"]}"']
    output_capture: json
    rejected_when: '.json.approved != true'
    on:
      rejected: {goto: Plan}
"#,
    );
    let run = lab.run(&[]);
    run.code(1).stderr_has("loop detected");
    assert_eq!(lines(&lab.ws, "plan.log").len(), 3);
}

#[test]
fn a_rejection_without_an_edge_fails_the_run_saying_it_was_rejected() {
    let lab = Lab::new();
    lab.workflow(
        r#"name: nowhere
steps:
  - name: Review
    command: [bash, -c, 'echo "{\"approved\": false, \"findings\": [\"no\"]}"']
    output_capture: json
    rejected_when: '.json.approved != true'
  - name: Never
    command: [bash, -c, 'touch never']
"#,
    );
    let run = lab.run(&[]);
    run.code(1).stderr_has("rejected");
    assert!(!lab.ws.exists("never"));
    assert_eq!(run.step("Review")["status"], "rejected");
}

#[test]
fn an_agent_review_rejected_by_its_json_answer_goes_back() {
    let lab = Lab::new();
    lab.fixture(
        "claude-review-no.jsonl",
        &(json!({"type":"result","subtype":"success","is_error":false,"result":"```json\n{\"approved\": false, \"findings\": [\"add tests\"]}\n```","session_id":"r1","num_turns":1,"total_cost_usd":0.001}).to_string() + "\n"),
    )
    .fixture(
        "claude-review-yes.jsonl",
        &(json!({"type":"result","subtype":"success","is_error":false,"result":"{\"approved\": true, \"findings\": []}","session_id":"r2","num_turns":1,"total_cost_usd":0.001}).to_string() + "\n"),
    )
    .answer(
        "claude",
        &[
            CLAUDE_OK,
            "emit claude-review-no.jsonl",
            CLAUDE_OK,
            "emit claude-review-yes.jsonl",
        ],
    )
    .workflow(
        r#"name: agent-review
steps:
  - name: Plan
    runtime: claude
    phase: plan
    prompt: "Plan it. Feedback: ${feedback}"
  - name: Review
    runtime: claude
    output_capture: json
    prompt: "Review it"
    rejected_when: '.json.approved != true'
    on:
      rejected: {goto: Plan}
"#,
    );
    let run = lab.run(&[]);
    run.ok();
    assert_eq!(lab.calls("claude"), 4);
    assert_eq!(lab.stdin("claude", 1), "Plan it. Feedback: ");
    let replan = lab.stdin("claude", 3);
    assert!(replan.contains("add tests"), "{replan}");
}

// ---------------------------------------------------------------------------------------------
// 8. The shipped graphs, offline with the stand-in.

/// A lab whose workspace has `scripts/stand-in-agent`.
fn standin_lab() -> Lab {
    let lab = Lab::new();
    let text = std::fs::read_to_string(format!("{REPO}/scripts/stand-in-agent")).unwrap();
    lab.ws.script("scripts/stand-in-agent", &text);
    lab
}

fn shipped(name: &str) -> String {
    format!("{REPO}/workflows/{name}")
}

#[test]
fn default_graph_waits_at_approve_goes_back_on_reject_and_completes_on_approve() {
    let lab = standin_lab();
    let wf = shipped("default.yaml");
    let mut bg = lab.bg(&["run", &wf, "--runtime", "standin", "--context", "task=T"]);
    let id = only_run_id(&lab.ws);
    wait_events(&lab.ws, &id, "approval_requested", "Approve", 1);
    assert!(lab.ws.exists("artifacts/plan.md"));
    lab.ws
        .run(&["reject", &id, "Approve", "--reason", "needs tests"])
        .ok();
    wait_events(&lab.ws, &id, "approval_requested", "Approve", 2);
    let events = events_so_far(&lab.ws, &id);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "goto" && e["from"] == "Approve" && e["to"] == "Plan"),
        "{events:#?}"
    );
    // The second plan's prompt carries the reason.
    let plan_argvs: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "process_started" && e["step"] == "Plan")
        .map(|e| e["argv"].to_string())
        .collect();
    assert_eq!(plan_argvs.len(), 2, "{plan_argvs:?}");
    assert!(!plan_argvs[0].contains("needs tests"));
    assert!(plan_argvs[1].contains("needs tests"), "{}", plan_argvs[1]);

    lab.ws.run(&["approve", &id, "Approve"]).ok();
    bg.exits(0);
    let state = lab.ws.state(&id);
    assert_eq!(state["status"], "succeeded");
    for step in [
        "Explore",
        "Plan",
        "SavePlan",
        "Review",
        "Approve",
        "Implement",
        "Verify",
    ] {
        assert_eq!(
            state["steps"][step]["status"], "succeeded",
            "{step}: {:#}",
            state["steps"][step]
        );
    }
    // Phases change along the graph.
    let events = lab.ws.events(&id);
    let phases: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["event"] == "phase_entered")
        .map(|e| {
            (
                e["step"].as_str().unwrap_or("").to_string(),
                e["phase"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        phases.contains(&("Implement".into(), "write".into())),
        "{phases:?}"
    );
    assert!(
        phases.contains(&("Plan".into(), "plan".into())),
        "{phases:?}"
    );
}

#[test]
fn plan_only_graph_ends_after_approve() {
    let lab = standin_lab();
    let wf = shipped("plan-only.yaml");
    let mut bg = lab.bg(&["run", &wf, "--runtime", "standin", "--context", "task=T"]);
    let id = only_run_id(&lab.ws);
    wait_events(&lab.ws, &id, "approval_requested", "Approve", 1);
    lab.ws.run(&["approve", &id, "Approve"]).ok();
    bg.exits(0);
    let state = lab.ws.state(&id);
    assert_eq!(state["status"], "succeeded");
    let mut steps: Vec<&String> = state["steps"].as_object().unwrap().keys().collect();
    steps.sort();
    assert_eq!(
        steps,
        ["Approve", "Explore", "Plan", "Review", "SavePlan"],
        "{state:#}"
    );
}

#[test]
fn waves_graph_completes_in_one_wave_with_the_stand_in() {
    let lab = standin_lab();
    let wf = shipped("waves.yaml");
    let run = run_within(
        &lab.ws,
        &["run", &wf, "--runtime", "standin", "--context", "task=T"],
        DEADLINE,
    );
    run.ok();
    let events = run.events();
    assert_eq!(count_events(&events, "step_finished", "Implement"), 1);
    assert_eq!(count_events(&events, "step_finished", "Evaluate"), 1);
    assert_eq!(run.step("Evaluate")["json"]["done"], true);
}

// ---------------------------------------------------------------------------------------------
// 9. Phase verification: the engine does not trust the CLI.

/// A readonly claude step whose fake writes `path` (ignoring its flags), with extra step fields.
fn writing_agent(lab: &Lab, path: &str, extra: &str) -> Run {
    lab.answer(
        "claude",
        &[&format!(
            "mkdir -p \"$(dirname '{path}')\" && echo sneaky > '{path}'; {CLAUDE_OK}"
        )],
    )
    .workflow(&one_step("claude", extra));
    lab.run(&[])
}

#[test]
fn a_readonly_step_that_writes_a_file_fails_with_phase_violation() {
    let lab = Lab::new();
    let run = writing_agent(&lab, "stray.txt", "");
    run.code(1);
    assert!(lab.ws.exists("stray.txt"), "the fake did write");
    let ask = run.step("Ask");
    assert_eq!(ask["status"], "failed", "{ask:#}");
    assert_eq!(ask["error"]["kind"], "phase_violation", "{ask:#}");
    let changed = ask["changed_files"].as_array().expect("changed_files");
    assert!(
        changed.iter().any(|c| c["path"] == "stray.txt"),
        "{changed:?}"
    );
    assert_eq!(
        count_events(&run.events(), "phase_violation", "Ask"),
        1,
        "a phase_violation event is recorded"
    );
}

#[test]
fn a_readonly_write_to_a_declared_artifact_passes() {
    let lab = Lab::new();
    let run = writing_agent(
        &lab,
        "artifacts/review/r.md",
        "    artifacts: [\"artifacts/review/**\"]\n",
    );
    run.ok();
    assert!(lab.ws.exists("artifacts/review/r.md"));
    assert_eq!(run.step("Ask")["status"], "succeeded");
}

#[test]
fn a_readonly_steps_own_output_file_is_not_its_change() {
    // The engine writes the answer to `output_file`; that is no change of the agent's.
    let lab = Lab::new();
    let run = writing_agent(
        &lab,
        ".orchestrate/nothing.txt",
        "    output_file: notes/ask.md\n",
    );
    run.ok();
    assert_eq!(run.step("Ask")["status"], "succeeded");
    assert!(lab.ws.exists("notes/ask.md"));
}

#[test]
fn a_readonly_step_that_rewrites_an_earlier_steps_output_file_fails() {
    // Written by the engine, but before this step's window: the agent's rewrite is caught.
    let lab = Lab::new();
    lab.answer(
        "claude",
        &[&format!("echo sneaky > notes/first.md; {CLAUDE_OK}")],
    )
    .workflow(
        "name: two\nsteps:\n  - name: First\n    command: [echo, first]\n    output_file: notes/first.md\n  - name: Ask\n    runtime: claude\n    prompt: \"hello\"\n",
    );
    let run = lab.run(&[]);
    run.code(1);
    let ask = run.step("Ask");
    assert_eq!(ask["error"]["kind"], "phase_violation", "{ask:#}");
    assert!(
        ask["changed_files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == "notes/first.md"),
        "{ask:#}"
    );
}

#[test]
fn parallel_readonly_items_do_not_count_each_others_output_files() {
    // Four readonly reviews at once, each with its own output file: a sibling's file written by
    // the engine during an item's run is not that item's change; a stray write still is.
    let lab = Lab::new();
    lab.answer("claude", &[&format!("sleep 0.3; {CLAUDE_OK}")])
        .workflow(
            r#"name: reviews
steps:
  - name: Each
    for_each:
      items: [a, b, c, d]
      as: f
      max_parallel: 4
      steps:
        - name: Review
          runtime: claude
          prompt: "review ${f}"
          output_file: "reviews/${f}.md"
"#,
        );
    let run = lab.run(&[]);
    run.ok();
    for f in ["a", "b", "c", "d"] {
        assert!(lab.ws.exists(&format!("reviews/{f}.md")), "{f}");
    }
    let lab = Lab::new();
    lab.answer(
        "claude",
        &[&format!("sleep 0.3; echo x > stray-$$.txt; {CLAUDE_OK}")],
    )
    .workflow(
        r#"name: reviews
steps:
  - name: Each
    for_each:
      items: [a, b]
      as: f
      max_parallel: 2
      join: all_done
      steps:
        - name: Review
          runtime: claude
          prompt: "review ${f}"
          output_file: "reviews/${f}.md"
"#,
    );
    let run = lab.run(&[]);
    let results = run.step("Each")["results"].clone();
    for item in results.as_array().unwrap() {
        assert_eq!(item["status"], "failed", "{item:#}");
    }
}

/// `orchestrate run wf.yaml ARGS` under `sh -c 'SHELL_SCRIPT'`, where the script runs the
/// engine as `"$@"`: the shell is the engine's parent, as a user's shell or a harness is.
fn run_under_shell(lab: &Lab, script: &str, args: &[&str]) -> Run {
    let engine = lab.ws.cmd(&[&["run", "wf.yaml"], args].concat());
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(script)
        .arg("sh")
        .arg(engine.get_program())
        .args(engine.get_args())
        .current_dir(lab.ws.path())
        .envs(engine.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = sh.spawn().expect("spawn sh");
    let status = exit_within(&mut child, patient(DEADLINE));
    if status.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("wait for sh");
    assert!(status.is_some(), "the run did not end: {output:?}");
    Run::from(output, lab.ws.path())
}

/// Regression: `orchestrate run wf.yaml --json > run.jsonl` in a workspace without git failed
/// every readonly step with `changes: run.jsonl (modified)`.
#[test]
fn a_readonly_steps_run_output_redirected_into_the_workspace_is_not_its_change() {
    let lab = Lab::new();
    // The step ends only once the engine has written to run.jsonl during it.
    lab.answer(
        "claude",
        &[&format!(
            "until grep -q process_started run.jsonl; do sleep 0.05; done; {CLAUDE_OK}"
        )],
    )
    .workflow(&one_step("claude", ""));
    assert!(!lab.ws.exists(".git"), "no git repository");
    let run = run_under_shell(&lab, r#""$@" > run.jsonl 2> run.log"#, &["--json"]);
    let id = lab.ws.read("run.log");
    let id = id
        .lines()
        .find_map(|l| l.strip_prefix("run_id: "))
        .unwrap_or_else(|| panic!("no run id in run.log: {id}"));
    let state = lab.ws.state(id.trim());
    run.code(0);
    assert_eq!(state["steps"]["Ask"]["status"], "succeeded", "{state:#}");
    assert!(lab.ws.read("run.jsonl").contains("run_finished"));
}

#[test]
fn a_readonly_step_that_writes_is_caught_while_the_run_output_goes_into_the_workspace() {
    let lab = Lab::new();
    lab.answer(
        "claude",
        &[&format!(
            "until grep -q process_started run.jsonl; do sleep 0.05; done; echo sneaky > stray.txt; {CLAUDE_OK}"
        )],
    )
    .workflow(&one_step("claude", ""));
    let run = run_under_shell(&lab, r#""$@" > run.jsonl 2> run.log"#, &["--json"]);
    run.code(1);
    let events = lab.ws.read("run.jsonl");
    let violation: Value = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "phase_violation")
        .unwrap_or_else(|| panic!("no phase_violation in run.jsonl: {events}"));
    let paths: Vec<&str> = violation["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["path"].as_str())
        .collect();
    assert_eq!(paths, ["stray.txt"], "{violation:#}");
}

/// A harness that keeps its own log open next to the run and appends to it while a readonly
/// step runs (here through a helper process it started beside the engine): the log is held open
/// for writing by the engine's parent, so it is not the step's change.
#[test]
fn a_harness_appending_to_its_own_log_during_a_readonly_step_is_not_blamed() {
    let lab = Lab::new();
    let started = lab.rec("started");
    let written = lab.rec("written");
    lab.answer(
        "claude",
        &[&format!(
            "touch '{}'; until [ -e '{}' ]; do sleep 0.05; done; {CLAUDE_OK}",
            started.display(),
            written.display()
        )],
    )
    .workflow(&one_step("claude", ""));
    let script = format!(
        r#"exec 3>> harness.log
echo "harness: starting the run" >&3
( until [ -e '{started}' ]; do sleep 0.05; done; echo "harness: the step is running" >&3; touch '{written}' ) &
"$@" 3>&-"#,
        started = started.display(),
        written = written.display()
    );
    let run = run_under_shell(&lab, &script, &[]);
    run.ok();
    assert_eq!(run.step("Ask")["status"], "succeeded");
    assert!(
        lab.ws
            .read("harness.log")
            .contains("harness: the step is running"),
        "the harness wrote during the step"
    );
}

/// A process the test starts beside the engine (neither its ancestor nor the step's), that
/// appends a line to `harness.log` in the workspace, opening and closing it each time, once the
/// step has touched `started` and until the test ends; it touches `written` after each line.
struct OutsideWriter(Child);

impl OutsideWriter {
    fn start(lab: &Lab) -> OutsideWriter {
        let script = r#"echo "harness: up" >> harness.log
until [ -e "$1" ]; do sleep 0.02; done
while :; do echo "harness: the step is running" >> harness.log; touch "$2"; sleep 0.02; done"#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(lab.rec("started"))
            .arg(lab.rec("written"))
            .current_dir(lab.ws.path())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the outside writer");
        wait_until("the outside writer's first line", DEADLINE, || {
            lab.ws.exists("harness.log")
        });
        OutsideWriter(child)
    }
}

impl Drop for OutsideWriter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A readonly step's fake that waits, after `before`, until the outside writer wrote during it.
fn waiting_for_the_outside_writer(lab: &Lab, before: &str) {
    lab.answer(
        "claude",
        &[&format!(
            "touch '{}'; until [ -e '{}' ]; do sleep 0.02; done; {before}{CLAUDE_OK}",
            lab.rec("started").display(),
            lab.rec("written").display()
        )],
    )
    .workflow(&one_step("claude", ""));
}

/// Whether this run attributed writes per process (fanotify, and a cgroup for the step): logged
/// at debug level, shown under ORCHESTRATE_DEBUG=1.
fn attributed(run: &Run) -> Result<(), String> {
    for (needle, what) in [
        (
            "DEBUG orchestrate_base::write_watch: readonly/plan checks attribute writes per process",
            "fanotify",
        ),
        (
            "DEBUG orchestrate_base::cgroup: step processes run in cgroups",
            "cgroups",
        ),
    ] {
        if !run.stderr.contains(needle) {
            return Err(format!(
                "writes are not attributed per process here (no {what}): {}",
                run.stderr
                    .lines()
                    .filter(|l| l.contains(" DEBUG "))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    }
    Ok(())
}

/// Regression: a harness (not the engine's ancestor) that opens, appends to and closes its own
/// log in the workspace once per line failed every readonly step with `harness.log (modified)`.
#[test]
fn a_process_outside_the_step_appending_to_a_log_in_the_workspace_is_not_blamed() {
    let mut lab = Lab::new();
    lab.ws.env("ORCHESTRATE_DEBUG", "1");
    waiting_for_the_outside_writer(&lab, "");
    let writer = OutsideWriter::start(&lab);
    let run = lab.run(&[]);
    drop(writer);
    if let Err(why) = attributed(&run) {
        return skip_or_fail(&why);
    }
    run.ok();
    let ask = run.step("Ask");
    assert_eq!(ask["status"], "succeeded", "{ask:#}");
    assert!(ask.get("changed_files").is_none(), "{ask:#}");
    assert!(
        lab.ws
            .read("harness.log")
            .contains("harness: the step is running"),
        "the outside writer wrote during the step"
    );
}

#[test]
fn a_readonly_steps_own_writes_are_caught_beside_an_outside_writer() {
    let mut lab = Lab::new();
    lab.ws.env("ORCHESTRATE_DEBUG", "1");
    // The fake writes one file itself and one through a short-lived child.
    waiting_for_the_outside_writer(
        &lab,
        "echo sneaky > stray.txt; sh -c 'echo x > child.txt'; ",
    );
    let writer = OutsideWriter::start(&lab);
    let run = lab.run(&[]);
    drop(writer);
    if let Err(why) = attributed(&run) {
        return skip_or_fail(&why);
    }
    run.code(1);
    let ask = run.step("Ask");
    assert_eq!(ask["error"]["kind"], "phase_violation", "{ask:#}");
    let paths: Vec<&str> = ask["changed_files"]
        .as_array()
        .expect("changed_files")
        .iter()
        .filter_map(|c| c["path"].as_str())
        .collect();
    assert_eq!(paths, ["child.txt", "stray.txt"], "{ask:#}");
}

/// Without attribution (here turned off) the check keeps its rule, silently: the outside
/// writer's log is blamed on the step as before, and the run says why only under
/// ORCHESTRATE_DEBUG=1.
#[test]
fn without_attribution_an_outside_writers_log_is_still_blamed() {
    let mut lab = Lab::new();
    lab.ws.env("ORCHESTRATE_WRITE_WATCH", "off");
    waiting_for_the_outside_writer(&lab, "");
    let writer = OutsideWriter::start(&lab);
    let run = lab.run(&[]);
    drop(writer);
    run.code(1);
    assert!(!run.stderr.contains(" DEBUG "), "{}", run.stderr);
    let ask = run.step("Ask");
    assert_eq!(ask["error"]["kind"], "phase_violation", "{ask:#}");
    let paths: Vec<&str> = ask["changed_files"]
        .as_array()
        .expect("changed_files")
        .iter()
        .filter_map(|c| c["path"].as_str())
        .collect();
    assert_eq!(paths, ["harness.log"], "{ask:#}");

    lab.ws.env("ORCHESTRATE_DEBUG", "1");
    let writer = OutsideWriter::start(&lab);
    let run = lab.run(&[]);
    drop(writer);
    run.stderr_has("DEBUG orchestrate_base::write_watch: readonly/plan checks cannot attribute writes per process: turned off by ORCHESTRATE_WRITE_WATCH=off");
}

/// Two readonly items at once: one writes a file while the other runs (the first fake to take
/// `first` waits, the other writes). With attribution the write is the writer's alone (each
/// item's steps run in cgroups of their own); without it, the waiting item was blamed too.
#[test]
fn a_parallel_readonly_siblings_write_is_blamed_on_the_sibling_only() {
    let mut lab = Lab::new();
    lab.ws.env("ORCHESTRATE_DEBUG", "1");
    lab.answer(
        "claude",
        &[&format!(
            r#"if mkdir "$rec/first" 2>/dev/null; then until [ -e "$rec/wrote" ]; do sleep 0.02; done; else echo x > stray.txt; touch "$rec/wrote"; fi; {CLAUDE_OK}"#
        )],
    )
    .workflow(
        r#"name: reviews
steps:
  - name: Each
    for_each:
      items: [a, b]
      as: f
      max_parallel: 2
      join: all_done
      steps:
        - name: Review
          runtime: claude
          prompt: "review ${f}"
"#,
    );
    let run = lab.run(&[]);
    if let Err(why) = attributed(&run) {
        return skip_or_fail(&why);
    }
    let results = run.step("Each")["results"].clone();
    let (failed, succeeded): (Vec<&Value>, Vec<&Value>) = results
        .as_array()
        .expect("results")
        .iter()
        .partition(|item| item["status"] == "failed");
    assert_eq!((failed.len(), succeeded.len()), (1, 1), "{results:#}");
    let text = failed[0].to_string();
    assert!(
        text.contains("stray.txt") && text.contains("phase_violation"),
        "{results:#}"
    );
}

#[test]
fn a_readonly_write_under_the_engine_dir_passes() {
    let lab = Lab::new();
    let run = writing_agent(&lab, ".orchestrate/agent-notes.txt", "");
    run.ok();
    assert_eq!(run.step("Ask")["status"], "succeeded");
}

#[test]
fn in_a_git_repo_a_git_ignored_write_passes_and_another_does_not() {
    let lab = Lab::new();
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(lab.ws.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdout(Stdio::null())
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    lab.ws.file(".gitignore", "*.log\n");
    let run = writing_agent(&lab, "debug.log", "");
    run.ok();
    assert_eq!(run.step("Ask")["status"], "succeeded");

    let run = writing_agent(&lab, "tracked-too.txt", "");
    run.code(1);
    let ask = run.step("Ask");
    assert_eq!(ask["error"]["kind"], "phase_violation", "{ask:#}");
    let changed = ask["changed_files"].as_array().expect("changed_files");
    assert!(
        changed.iter().any(|c| c["path"] == "tracked-too.txt"),
        "{changed:?}"
    );
    assert!(
        !changed.iter().any(|c| c["path"] == "debug.log"),
        "{changed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 10. Events.

#[test]
fn phase_entered_is_recorded_when_the_phase_changes_between_agent_steps() {
    let lab = Lab::new();
    lab.answer("claude", &[CLAUDE_OK]).workflow(
        r#"name: phases
steps:
  - name: A
    runtime: claude
    prompt: "a"
  - name: B
    runtime: claude
    prompt: "b"
  - name: Cmd
    command: [true]
  - name: C
    runtime: claude
    phase: write
    prompt: "c"
  - name: D
    runtime: claude
    phase: plan
    prompt: "d"
"#,
    );
    let run = lab.run(&[]);
    run.ok();
    let entered: Vec<(String, Value, Value)> = run
        .events()
        .iter()
        .filter(|e| e["event"] == "phase_entered")
        .map(|e| {
            (
                e["step"].as_str().unwrap_or("").to_string(),
                e["phase"].clone(),
                e["from"].clone(),
            )
        })
        .collect();
    assert_eq!(
        entered,
        vec![
            ("A".to_string(), json!("readonly"), Value::Null),
            ("C".to_string(), json!("write"), json!("readonly")),
            ("D".to_string(), json!("plan"), json!("write")),
        ]
    );
}
