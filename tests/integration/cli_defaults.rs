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
