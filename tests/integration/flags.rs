//! Flags are typed: what a flag cannot hold is a usage error (exit 2) naming the flag, never a
//! panic; enumerations list their choices; completions and the man page are generated.

use crate::harness::*;

/// A workspace the swarm commands accept.
fn ws() -> Ws {
    let ws = Ws::new();
    ws.file("agents/.keep", "");
    ws
}

/// Asserts a usage error about `flag`: exit 2, the flag named, no panic.
fn refused(ws: &Ws, args: &[&str], flag: &str) -> Run {
    let run = ws.run(args);
    run.code(2).stderr_has(flag);
    assert!(
        !run.stderr.contains("panicked"),
        "{args:?} panicked:\n{}",
        run.stderr
    );
    run
}

#[test]
fn duration_flags_refuse_inf_nan_negative_and_overflow_without_panicking() {
    let ws = ws();
    for bad in ["inf", "nan", "-1", "1e300"] {
        refused(&ws, &["cancel", "X", "--timeout", bad], "--timeout");
        refused(&ws, &["swarm", "down", "--timeout", bad], "--timeout");
        refused(&ws, &["swarm", "reload", "--timeout", bad], "--timeout");
        refused(&ws, &["swarm", "up", "--grace", bad], "--grace");
        refused(&ws, &["agent", "R", "--grace", bad], "--grace");
        refused(&ws, &["gc", "--older-than", bad], "--older-than");
    }
    // Good values, with and without a unit, still work.
    ws.run(&["swarm", "down", "--timeout", "2.5"]).ok();
    ws.run(&["gc", "--dry-run", "--older-than", "90"]).ok();
    ws.run(&["gc", "--dry-run", "--older-than", "12h"]).ok();
}

#[test]
fn integer_flags_refuse_overflow_and_negative_values() {
    let ws = ws();
    for bad in ["4294967296", "-1", "ten"] {
        refused(&ws, &["agent", "R", "--replica", bad], "--replica");
        refused(&ws, &["argv", "claude", "--max-turns", bad], "--max-turns");
    }
    ws.run(&["argv", "claude", "--max-turns", "7"])
        .ok()
        .stdout_has("\"7\"");
}

#[test]
fn enumeration_and_time_flags_list_their_choices() {
    let ws = ws();
    refused(&ws, &["argv", "claude", "--phase", "nope"], "--phase")
        .stderr_has("readonly, plan, write, full");
    refused(&ws, &["tasks", "--state", "nope"], "--state")
        .stderr_has("queued, running, processed, failed, ignored");
    ws.file("w.yaml", "steps:\n  - name: A\n    command: [\"true\"]\n");
    refused(&ws, &["graph", "w.yaml", "--format", "svg"], "--format").stderr_has("mermaid, dot");
    refused(&ws, &["argv", "gpt"], "<RUNTIME>").stderr_has("claude, codex, gemini");
    refused(&ws, &["report", "--since", "yesterday"], "--since").stderr_has("YYYY-MM-DD");
    ws.run(&["report", "--since", "2026-01-01"]).ok();
    // Every spelling accepted before still is, with the same defaults.
    ws.run(&["argv", "claude", "--phase", "plan"]).ok();
    ws.run(&["tasks", "--state", "failed"]).ok();
    ws.run(&["graph", "w.yaml", "--format", "dot"])
        .ok()
        .stdout_has("digraph");
    ws.run(&["graph", "w.yaml"]).ok().stdout_has("flowchart");
}

#[test]
fn completions_name_every_command_and_the_choices_of_enumerations() {
    let ws = Ws::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = ws.run(&["completions", shell]);
        run.ok();
        for word in [
            "swarm", "validate", "run-step", "phase", "readonly", "write",
        ] {
            assert!(
                run.stdout.contains(word),
                "{shell} completions lack {word}:\n{}",
                run.stdout
            );
        }
    }
    refused(&ws, &["completions", "tcsh"], "<SHELL>").stderr_has("bash");
}

#[test]
fn the_man_page_renders_and_names_the_commands() {
    let ws = Ws::new();
    let run = ws.run(&["man"]);
    run.ok()
        .stdout_has(".TH orchestrate 1")
        .stdout_has(".SH SUBCOMMANDS");
    for command in ["run", "swarm", "validate", "completions"] {
        run.stdout_has(&format!("orchestrate\\-{command}(1)"));
    }
    ws.run(&["man", "--dir", "man"]).ok();
    for page in [
        "orchestrate.1",
        "orchestrate-run.1",
        "orchestrate-swarm-up.1",
    ] {
        assert!(ws.exists(&format!("man/{page}")), "no {page}");
    }
    assert!(ws.read("man/orchestrate-cancel.1").contains("timeout"));
}
