//! The agent CLIs' defaults as people meet them: in a fresh `orchestrate init` workspace, which
//! is no git repository and no folder gemini was told to trust, with no model named.

use crate::harness::*;

/// A stand-in `codex` that refuses, as codex 0.169 does, to run outside a git repository
/// without `--skip-git-repo-check`.
fn strict_codex(ws: &Ws) {
    ws.script(
        "bin/codex",
        r#"#!/bin/sh
for arg in "$@"; do
  [ "$arg" = --skip-git-repo-check ] && { echo "codex answer"; exit 0; }
done
echo "Not inside a trusted directory and --skip-git-repo-check was not specified." >&2
exit 1
"#,
    );
}

/// A stand-in `gemini` that exits 55 with gemini 0.61's own (coloured) message in a folder it
/// was not told to trust.
fn strict_gemini(ws: &Ws) {
    let refusal = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/runtimes/gemini.untrusted-workspace.STDERR.txt"
    );
    ws.script(
        "bin/gemini",
        &format!(
            r#"#!/bin/sh
[ "$GEMINI_CLI_TRUST_WORKSPACE" = true ] && {{ echo "gemini answer"; exit 0; }}
for arg in "$@"; do
  [ "$arg" = --skip-trust ] && {{ echo "gemini answer"; exit 0; }}
done
cat '{refusal}' >&2
exit 55
"#
        ),
    );
}

fn strict_ws() -> Ws {
    let mut ws = Ws::new();
    ws.with_bin_path();
    strict_codex(&ws);
    strict_gemini(&ws);
    ws.file("p.md", "the prompt");
    assert!(!ws.exists(".git"));
    ws
}

#[test]
fn builtin_codex_and_gemini_templates_run_outside_a_git_repository() {
    let ws = strict_ws();
    ws.workflow(
        r#"
steps:
  - name: Codex
    provider: codex
    input_file: p.md
  - name: Gemini
    provider: gemini
    input_file: p.md
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(run.step("Codex")["output"], "codex answer");
    assert_eq!(run.step("Gemini")["output"], "gemini answer");
}

#[test]
fn an_untrusted_directory_refusal_is_classified_with_what_to_do() {
    let ws = strict_ws();
    // The templates as the README wrote them before: no trust flags.
    ws.workflow(
        r#"
providers:
  codex: {command: [codex, exec, "${PROMPT}"]}
  gemini: {command: [gemini, -p, "${PROMPT}"]}
steps:
  - name: Codex
    provider: codex
    input_file: p.md
    on: {failure: {goto: Gemini}}
  - name: Gemini
    provider: gemini
    input_file: p.md
"#,
    );
    let run = ws.run_wf(&[]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    let codex = run.step("Codex");
    assert_eq!(codex["error"]["kind"], "untrusted", "{codex:#}");
    let message = codex["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("codex exited with code 1: Not inside a trusted directory"),
        "{message}"
    );
    assert!(
        message.contains("pass `--skip-git-repo-check`") && message.contains("git init"),
        "{message}"
    );
    assert_eq!(codex["attempts"], 1);
    let gemini = run.step("Gemini");
    assert_eq!(gemini["error"]["kind"], "untrusted", "{gemini:#}");
    let message = gemini["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "gemini exited with code 55: Gemini CLI is not running in a trusted directory."
        ),
        "{message}"
    );
    assert!(
        !message.contains('\u{1b}'),
        "ANSI colour left in {message:?}"
    );
    assert!(
        message.contains("pass `--skip-trust`")
            && message.contains("GEMINI_CLI_TRUST_WORKSPACE=true"),
        "{message}"
    );
    run.stderr_has("pass `--skip-trust`");
}

/// An exit that nothing explains keeps the plain message (and the provider retry rules).
#[test]
fn an_unexplained_provider_exit_keeps_its_plain_message() {
    let mut ws = Ws::new();
    ws.with_bin_path();
    ws.script("bin/codex", "#!/bin/sh\necho 'something odd' >&2\nexit 3\n");
    ws.file("p.md", "the prompt").workflow(
        r#"
steps:
  - name: Codex
    provider: codex
    input_file: p.md
"#,
    );
    let run = ws.run_wf(&[]);
    assert_ne!(run.code, 0);
    assert_eq!(run.step("Codex")["error"], "exited with code 3");
}

/// gemini limits turns only through its settings, which the engine gives it in a home of the
/// step's own: that home must still hold the user's settings and sign-in, and the session
/// must land where the next step's `--resume` (in the user's home) finds it.
#[test]
fn gemini_resumes_a_session_begun_under_max_turns_with_the_users_settings() {
    let mut ws = Ws::new();
    ws.with_bin_path();
    let user_home = tempfile::tempdir().unwrap();
    let rec = tempfile::tempdir().unwrap();
    let gemini_dir = user_home.path().join(".gemini");
    std::fs::create_dir_all(&gemini_dir).unwrap();
    std::fs::write(
        gemini_dir.join("settings.json"),
        "{\n  // signed in with Google\n  \"security\": {\"auth\": {\"selectedType\": \"oauth-personal\"}}\n}\n",
    )
    .unwrap();
    std::fs::write(
        gemini_dir.join("oauth_creds.json"),
        "{\"refresh_token\": \"r\"}",
    )
    .unwrap();
    ws.env("HOME", user_home.path().to_str().unwrap())
        .env("GEMINI_CLI_HOME", "");
    // Sessions live in <home>/.gemini/tmp/<project>/chats, as gemini 0.61 keeps them.
    ws.script(
        "bin/gemini",
        &format!(
            r#"#!/usr/bin/env bash
rec='{rec}'
dir="${{GEMINI_CLI_HOME:-$HOME}}/.gemini"
n=$(( $(cat "$rec/count" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$rec/count"
cp "$dir/settings.json" "$rec/settings.$n.json" 2>/dev/null
cp "$dir/oauth_creds.json" "$rec/creds.$n.json" 2>/dev/null
cat > /dev/null
session="s-$n"
while [ $# -gt 0 ]; do [ "$1" = --resume ] && session=$2; shift; done
chats="$dir/tmp/project/chats"
if [ "$session" != "s-$n" ] && [ ! -f "$chats/$session" ]; then
  echo "Error resuming session: No previous sessions found for this project." >&2
  exit 42
fi
mkdir -p "$chats" && touch "$chats/$session"
echo '{{"type":"init","session_id":"'"$session"'","model":"gemini-2.5-flash"}}'
echo '{{"type":"message","role":"assistant","content":"done","delta":true}}'
echo '{{"type":"result","status":"success","stats":{{"total_tokens":3,"input_tokens":2,"output_tokens":1,"cached":0,"input":2,"duration_ms":1,"tool_calls":0}}}}'
"#,
            rec = rec.path().display()
        ),
    );
    ws.workflow(
        r#"name: turns
steps:
  - name: First
    runtime: gemini
    max_turns: 2
    prompt: "look"
  - name: Second
    runtime: gemini
    resume: First
    prompt: "go on"
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    let second = run.step("Second");
    assert_eq!(second["status"], "succeeded", "{second:#}");
    assert_eq!(second["session_id"], "s-1");
    let settings = |n: u32| -> serde_json::Value {
        let path = rec.path().join(format!("settings.{n}.json"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    let first = settings(1);
    assert_eq!(first["model"]["maxSessionTurns"], 2, "{first:#}");
    assert_eq!(first["security"]["auth"]["selectedType"], "oauth-personal");
    assert!(
        rec.path().join("creds.1.json").exists(),
        "the sign-in was hidden"
    );
    // The next step ran on the user's own settings file, untouched.
    let second_settings = std::fs::read_to_string(rec.path().join("settings.2.json")).unwrap();
    assert!(second_settings.contains("// signed in with Google"));
    assert!(!second_settings.contains("maxSessionTurns"));
    assert!(gemini_dir.join("tmp/project/chats/s-1").exists());
}
