//! The workflow language as docs/workflows.md describes it, one feature per test, against the
//! real binary with real processes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::acceptance::{
    DEADLINE, finish, finished_steps, run_in, spawn, strings, wait_for_event, ws_with,
};
use crate::harness::*;

/// Live (non-zombie) processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        if fields[0] != "Z" && fields[2] == pgid.to_string() {
            members.push(pid);
        }
    }
    members
}

/// True when `pid` has exited (gone, or a zombie nobody reaped yet).
fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().unwrap().split_whitespace().next() == Some("Z"),
    }
}

fn read_pid(ws: &Ws, rel: &str) -> u32 {
    ws.read(rel).trim().parse().expect("a pid")
}

/// Waits until `rel` holds a whole line (a pid written by a step).
fn wait_for_line(ws: &Ws, rel: &str) {
    wait_until(rel, DEADLINE, || {
        std::fs::read_to_string(ws.join(rel)).is_ok_and(|s| s.ends_with('\n'))
    });
}

// ---------------------------------------------------------------------------------------------
// when

#[test]
fn when_equals_runs_or_skips_and_skipped_step_takes_no_edge() {
    let ws = ws_with(
        r#"
steps:
  - name: A
    command: ["printf", "yes"]
  - name: EqTrue
    when: {equals: {left: "${steps.A.output}", right: "yes"}}
    command: ["touch", "eq_true"]
  - name: EqFalse
    when: {equals: {left: "${steps.A.output}", right: "no"}}
    command: ["touch", "eq_false"]
    on: {always: {goto: Last}}
  - name: AfterSkip
    command: ["touch", "after_skip"]
  - name: Last
    command: ["true"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert!(ws.exists("eq_true"));
    assert!(!ws.exists("eq_false"));
    assert!(ws.exists("after_skip"), "a skipped step takes no `on` edge");
    assert_eq!(
        finished_steps(&run),
        ["A", "EqTrue", "EqFalse", "AfterSkip", "Last"]
    );
    assert_eq!(run.step("EqTrue")["status"], "succeeded");
    assert_eq!(
        run.step("EqFalse")["status"],
        "skipped",
        "recorded in state.json"
    );
}

#[test]
fn when_not_equals_runs_or_skips() {
    let ws = ws_with(
        r#"
steps:
  - name: J
    command: ["printf", '{"count": 0}']
    output_capture: json
  - name: NeTrue
    when: {not_equals: {left: "${steps.J.json.count}", right: "1"}}
    command: ["touch", "ne_true"]
  - name: NeFalse
    when: {not_equals: {left: "${steps.J.json.count}", right: "0"}}
    command: ["touch", "ne_false"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert!(ws.exists("ne_true"));
    assert!(!ws.exists("ne_false"));
    assert_eq!(run.step("NeFalse")["status"], "skipped");
}

#[test]
fn when_jq_uses_jq_truthiness() {
    let ws = ws_with(
        r#"
context: {mode: fast}
steps:
  - name: J
    command: ["printf", '{"ok": true, "count": 0, "none": null, "list": [1, 2]}']
    output_capture: json
  - name: JqTrue
    when: {jq: '.steps.J.json.ok and .context.mode == "fast"'}
    command: ["touch", "jq_true"]
  - name: JqZero
    when: {jq: '.steps.J.json.count'}
    command: ["touch", "jq_zero"]
  - name: JqFalse
    when: {jq: '.steps.J.json.list | length > 5'}
    command: ["touch", "jq_false"]
    on: {always: {goto: Last}}
  - name: AfterSkip
    command: ["touch", "after_skip"]
  - name: JqNull
    when: {jq: '.steps.J.json.none'}
    command: ["touch", "jq_null"]
  - name: Last
    command: ["true"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert!(ws.exists("jq_true"));
    assert!(ws.exists("jq_zero"), "0 is truthy in jq");
    assert!(!ws.exists("jq_false"));
    assert!(!ws.exists("jq_null"), "null is falsy");
    assert!(ws.exists("after_skip"), "a skipped step takes no `on` edge");
    assert_eq!(run.step("JqFalse")["status"], "skipped");
    assert_eq!(run.step("JqNull")["status"], "skipped");
}

// ---------------------------------------------------------------------------------------------
// on / goto / strict_flow

#[test]
fn on_success_failure_always_goto() {
    let ws = ws_with(
        r#"
steps:
  - name: Start
    command: ["true"]
    on: {success: {goto: Fails}}
  - name: Skipped1
    command: ["touch", "wrong1"]
  - name: Fails
    command: ["bash", "-c", "exit 3"]
    on: {success: {goto: Skipped2}, failure: {goto: Always}}
  - name: Skipped2
    command: ["touch", "wrong2"]
  - name: Always
    command: ["false"]
    on: {always: {goto: Report}}
  - name: Skipped3
    command: ["touch", "wrong3"]
  - name: Report
    command: ["printf", "%s", "${steps.Fails.exit_code}"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(finished_steps(&run), ["Start", "Fails", "Always", "Report"]);
    assert_eq!(run.step("Report")["output"], "3");
    for f in ["wrong1", "wrong2", "wrong3"] {
        assert!(!ws.exists(f), "{f}");
    }
}

#[test]
fn goto_end_ends_the_run_successfully() {
    let ws = ws_with(
        r#"
steps:
  - name: Fails
    command: ["false"]
    on: {failure: {goto: _end}}
  - name: After
    command: ["touch", "after"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert!(!ws.exists("after"));
    assert_eq!(run.state()["status"], "succeeded");
}

#[test]
fn goto_end_inside_for_each_ends_the_whole_run() {
    let ws = ws_with(
        r#"
steps:
  - name: Each
    for_each:
      items: [a, b, c]
      steps:
        - name: Mark
          command: ["bash", "-c", 'echo "$1" >> seen', "_", "${item}"]
        - name: Stop
          when: {equals: {left: "${item}", right: "b"}}
          command: ["true"]
          on: {success: {goto: _end}}
  - name: After
    command: ["touch", "after"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(ws.read("seen"), "a\nb\n");
    assert!(!ws.exists("after"));
}

#[test]
fn unhandled_failure_stops_the_run_with_exit_1() {
    let ws = ws_with(
        r#"
steps:
  - name: Fails
    command: ["bash", "-c", "exit 7"]
  - name: After
    command: ["touch", "after"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.code(1).stderr_has("Fails");
    assert!(!ws.exists("after"));
    assert_eq!(run.step("Fails")["exit_code"], 7);
    assert_eq!(run.state()["status"], "failed");
}

#[test]
fn strict_flow_false_runs_on_and_ends_failed() {
    let ws = ws_with(
        r#"
strict_flow: false
steps:
  - name: Fails
    command: ["false"]
  - name: After
    command: ["touch", "after"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.code(1);
    assert!(ws.exists("after"));
    assert_eq!(run.step("After")["status"], "succeeded");
    assert_eq!(run.state()["status"], "failed");
}

// ---------------------------------------------------------------------------------------------
// for_each

#[test]
fn for_each_literal_items_with_as_and_loop_vars() {
    let ws = ws_with(
        r#"
steps:
  - name: Each
    for_each:
      items: ["a", "b c", 3, {k: v}]
      as: it
      steps:
        - name: Record
          command: ["bash", "-c", 'printf "%s|%s|%s\n" "$1" "$2" "$3" >> out.txt', "_", "${it}", "${loop.index}", "${loop.total}"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(
        ws.read("out.txt"),
        "a|0|4\nb c|1|4\n3|2|4\n{\"k\":\"v\"}|3|4\n"
    );
}

#[test]
fn nested_for_each_sees_outer_item() {
    let ws = ws_with(
        r#"
steps:
  - name: Outer
    for_each:
      items: [x, y]
      as: outer
      steps:
        - name: Inner
          for_each:
            items: [1, 2, 3]
            as: inner
            steps:
              - name: Record
                command: ["bash", "-c", 'echo "$1" >> out.txt', "_", "${outer}-${inner}-${loop.index}/${loop.total}"]
"#,
    );
    ws.run_wf(&[]).ok();
    assert_eq!(
        ws.read("out.txt"),
        "x-1-0/3\nx-2-1/3\nx-3-2/3\ny-1-0/3\ny-2-1/3\ny-3-2/3\n"
    );
}

// ---------------------------------------------------------------------------------------------
// timeout, retry, loops

#[test]
fn timeout_sec_exits_124_and_kills_the_process_group() {
    let ws = ws_with(
        r#"
steps:
  - name: Slow
    timeout_sec: 0.5
    command: ["bash", "-c", "sleep 100 & echo $! > grandchild.pid; sleep 100"]
  - name: After
    command: ["touch", "after"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.code(124);
    assert_eq!(run.step("Slow")["exit_code"], 124);
    assert_eq!(run.step("Slow")["status"], "failed");
    assert!(!ws.exists("after"));
    // Exit 124 is the proof the timeout fired: the 100 s sleep waited out would exit 0.
    let grandchild = read_pid(&ws, "grandchild.pid");
    wait_until("the grandchild sleep to be gone", DEADLINE, || {
        pid_gone(grandchild)
    });
}

const FLAKY: &str = "#!/bin/bash
n=$(( $(cat count 2>/dev/null || echo 0) + 1 ))
echo $n > count
echo \"attempt $n\"
[ $n -ge 3 ] || { echo \"failing $n\" >&2; exit 1; }
";

#[test]
fn retry_counts_attempts_and_keeps_each_attempts_logs() {
    let ws = ws_with(
        r#"
steps:
  - name: Flaky
    command: ["./flaky.sh"]
    retry: {max_attempts: 5, delay_sec: 0.05, backoff: 1}
"#,
    );
    ws.script("flaky.sh", FLAKY);
    let run = ws.run_wf(&[]);
    run.ok();
    let flaky = run.step("Flaky");
    assert_eq!(flaky["attempts"], 3);
    assert_eq!(flaky["output"], "attempt 3");
    assert_eq!(ws.read("count"), "3\n");
    let logs = ws.run_dir(run.id()).join("logs");
    let log = |name: &str| std::fs::read_to_string(logs.join(name)).ok();
    assert_eq!(log("0001-Flaky.stdout").as_deref(), Some("attempt 1\n"));
    assert_eq!(log("0001-Flaky.2.stdout").as_deref(), Some("attempt 2\n"));
    assert_eq!(log("0001-Flaky.3.stdout").as_deref(), Some("attempt 3\n"));
    assert_eq!(log("0001-Flaky.2.stderr").as_deref(), Some("failing 2\n"));
    assert_eq!(log("0001-Flaky.4.stdout"), None);
}

#[test]
fn retry_exhausted_fails_with_the_last_exit_code() {
    let ws = ws_with(
        r#"
steps:
  - name: Always
    command: ["bash", "-c", "echo x >> tries; exit 3"]
    retry: {max_attempts: 3, delay_sec: 0}
"#,
    );
    let run = ws.run_wf(&[]);
    run.code(1);
    assert_eq!(ws.read("tries"), "x\nx\nx\n");
    assert_eq!(run.step("Always")["attempts"], 3);
    assert_eq!(run.step("Always")["exit_code"], 3);
}

#[test]
fn provider_retries_exit_1_but_not_exit_2() {
    let ws = ws_with(
        r#"
providers:
  fake:
    command: ["bash", "-c", 'echo x >> calls; exit "$1"', "_", "${code}"]
steps:
  - name: Ask
    provider: fake
    provider_params: {code: "${context.code}"}
    retry: {max_attempts: 3, delay_sec: 0}
"#,
    );
    let run = ws.run_wf(&["--context", "code=1"]);
    run.code(1);
    assert_eq!(ws.read("calls"), "x\nx\nx\n", "exit 1 is retryable");
    assert_eq!(run.step("Ask")["attempts"], 3);

    std::fs::remove_file(ws.join("calls")).unwrap();
    let run = ws.run_wf(&["--context", "code=2"]);
    run.code(2);
    assert_eq!(ws.read("calls"), "x\n", "exit 2 is not retried");
    assert_eq!(run.step("Ask")["attempts"], 1);
}

#[test]
fn max_visits_detects_a_goto_cycle() {
    let ws = ws_with(
        r#"
steps:
  - name: Ping
    command: ["bash", "-c", "echo . >> visits"]
    on: {success: {goto: Pong}}
  - name: Pong
    command: ["true"]
    on: {success: {goto: Ping}}
"#,
    );
    let run = ws.run_wf(&[]);
    run.code(1)
        .stderr_has("loop detected")
        .stderr_has("Ping -> Pong -> Ping");
    assert_eq!(ws.read("visits").lines().count(), 50, "the default bound");
    assert!(
        run.state()["error"]
            .as_str()
            .unwrap()
            .contains("loop detected")
    );
}

#[test]
fn per_step_max_visits() {
    let ws = ws_with(
        r#"
steps:
  - name: Inc
    max_visits: 3
    command: ["bash", "-c", "echo . >> count"]
  - name: Again
    command: ["bash", "-c", '[ "$(wc -l < count)" -lt 5 ]']
    on: {success: {goto: Inc}, failure: {goto: _end}}
"#,
    );
    let run = ws.run_wf(&[]);
    run.code(1)
        .stderr_has("loop detected")
        .stderr_has("`Inc`")
        .stderr_has("max_visits 3");
    assert_eq!(ws.read("count").lines().count(), 3);
}

#[test]
fn max_visits_counts_per_for_each_iteration() {
    let ws = ws_with(
        r#"
max_visits: 2
steps:
  - name: Each
    for_each:
      items: [1, 2, 3, 4, 5]
      steps:
        - name: Body
          command: ["bash", "-c", 'echo "$1" >> seen', "_", "${item}"]
"#,
    );
    ws.run_wf(&[]).ok();
    assert_eq!(ws.read("seen"), "1\n2\n3\n4\n5\n");
}

// ---------------------------------------------------------------------------------------------
// variables

#[test]
fn undefined_variable_fails_at_run_time_naming_step_and_variable() {
    let ws = ws_with(
        r#"
steps:
  - name: First
    command: ["touch", "first"]
  - name: UsesMissing
    command: ["echo", "${context.missing}"]
  - name: After
    command: ["touch", "after"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.code(2)
        .stderr_has("UsesMissing")
        .stderr_has("context.missing");
    assert!(
        ws.exists("first"),
        "detected at run time, when the step is reached"
    );
    assert!(!ws.exists("after"));
    let step = run.step("UsesMissing");
    assert_eq!(step["exit_code"], 2);
    assert!(step["error"].as_str().unwrap().contains("context.missing"));
}

#[test]
fn dollar_dollar_brace_is_a_literal() {
    let ws = ws_with(
        r#"
context: {x: "value"}
steps:
  - name: Lit
    command: ["printf", "%s", "$${context.x} and $${steps.none.output} $HOME ${context.x}"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(
        run.step("Lit")["output"],
        "${context.x} and ${steps.none.output} $HOME value"
    );
}

#[test]
fn run_variables() {
    let ws = ws_with(
        r#"
steps:
  - name: Show
    command: ["printf", "%s|%s|%s|%s", "${run.id}", "${run.timestamp_utc}", "${run.workspace}", "${run.workflow}"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    let output = run.step("Show")["output"].as_str().unwrap().to_string();
    let parts: Vec<&str> = output.split('|').collect();
    assert_eq!(parts[0], run.id());
    assert_eq!(parts[1], run.state()["timestamp_utc"]);
    assert_eq!(parts[1].len(), 16, "YYYYMMDDTHHMMSSZ: {}", parts[1]);
    assert_eq!(parts[2], ws.path().display().to_string());
    assert_eq!(parts[3], "wf.yaml");
}

#[test]
fn argv_values_are_never_split() {
    let ws = ws_with(
        r#"
context:
  obj: {a: [1, "x y"]}
  n: 3
steps:
  - name: Rec
    command: ["python3", "rec.py", "${context.v}", "pre ${context.v} post", "${context.obj}", "${context.n}", ""]
"#,
    );
    ws.file(
        "rec.py",
        "import json, sys\njson.dump(sys.argv[1:], open('argv.json', 'w'))\n",
    );
    let v = "two words \"dq\" 'sq'; $(touch pwned) `touch pwned2` ${context.n} *\nline2";
    ws.run_wf(&["--context", &format!("v={v}")]).ok();
    let argv: Vec<String> = serde_json::from_str(&ws.read("argv.json")).unwrap();
    assert_eq!(
        argv,
        [
            v.to_string(),
            format!("pre {v} post"),
            r#"{"a":[1,"x y"]}"#.to_string(),
            "3".to_string(),
            String::new()
        ]
    );
    assert!(!ws.exists("pwned") && !ws.exists("pwned2"));
}

#[test]
fn json_dot_paths_and_lines_index() {
    let ws = ws_with(
        r#"
steps:
  - name: J
    command: ["printf", '{"a": {"b": [10, {"c": "deep"}]}, "t": true, "n": null}']
    output_capture: json
  - name: L
    command: ["printf", "l0\nl1\nl2\n"]
    output_capture: lines
  - name: Rec
    command: ["python3", "-c", "import json, sys; json.dump(sys.argv[1:], open('argv.json', 'w'))",
              "${steps.J.json.a.b.1.c}", "${steps.J.json.a.b.0}", "${steps.J.json.a.b}", "${steps.J.json.t}",
              "${steps.J.json.n}", "${steps.L.lines.2}", "${steps.L.lines}", "${steps.J.exit_code}"]
"#,
    );
    ws.run_wf(&[]).ok();
    let argv: Vec<String> = serde_json::from_str(&ws.read("argv.json")).unwrap();
    assert_eq!(
        argv,
        [
            "deep",
            "10",
            r#"[10,{"c":"deep"}]"#,
            "true",
            "null",
            "l2",
            r#"["l0","l1","l2"]"#,
            "0"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// capture limits and files

#[test]
fn text_capture_truncated_at_8kb() {
    let ws = ws_with(
        r#"
steps:
  - name: Small
    command: ["printf", "short"]
  - name: Big
    command: ["python3", "-c", "import sys; sys.stdout.write('x' * 20000)"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(run.step("Small")["truncated"], false);
    let big = run.step("Big");
    assert_eq!(big["truncated"], true);
    assert_eq!(big["output"].as_str().unwrap(), "x".repeat(8192));
    let log = ws.read(big["stdout_log"].as_str().unwrap());
    assert_eq!(log, "x".repeat(20000), "the whole stream is in the log");
}

#[test]
fn lines_capture_over_10000_lines_truncated() {
    let ws = ws_with(
        r#"
steps:
  - name: Exact
    command: ["seq", "1", "10000"]
    output_capture: lines
  - name: Over
    command: ["seq", "1", "12000"]
    output_capture: lines
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    let exact = run.step("Exact");
    assert_eq!(exact["truncated"], false);
    assert_eq!(exact["lines"].as_array().unwrap().len(), 10_000);
    let over = run.step("Over");
    assert_eq!(over["truncated"], true);
    let lines = strings(&over["lines"]);
    assert_eq!(lines.len(), 10_000);
    assert_eq!((lines[0].as_str(), lines[9999].as_str()), ("1", "10000"));
}

#[test]
fn output_file_writes_stdout() {
    let ws = ws_with(
        r#"
steps:
  - name: Write
    command: ["printf", "hello\nworld\n"]
    output_file: "artifacts/${context.who}/result.txt"
"#,
    );
    let run = ws.run_wf(&["--context", "who=engineer"]);
    run.ok();
    assert_eq!(ws.read("artifacts/engineer/result.txt"), "hello\nworld\n");
    assert_eq!(run.step("Write")["output"], "hello\nworld");
}

#[test]
fn paths_escaping_the_workspace_are_refused() {
    let root = Ws::new();
    let workspace = root.join("ws");
    root.file("secret.txt", "outside secret")
        .file("outside/secret.txt", "outside secret");
    std::fs::create_dir_all(&workspace).unwrap();
    std::os::unix::fs::symlink(root.join("outside"), workspace.join("link")).unwrap();
    std::os::unix::fs::symlink("/tmp", workspace.join("tmplink")).unwrap();
    let unique = format!(
        "orchestrate-escape-test-{}-{:?}",
        std::process::id(),
        Instant::now()
    )
    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "");
    let tmp_target = Path::new("/tmp").join(&unique);
    let abs_out = root.join("abs.txt").display().to_string();
    let tmp_out = format!("tmplink/{unique}");
    let outputs = [
        ("../escape.txt", root.join("escape.txt")),
        (abs_out.as_str(), root.join("abs.txt")),
        ("link/escape.txt", root.join("outside/escape.txt")),
        (tmp_out.as_str(), tmp_target.clone()),
    ];
    for (path, target) in &outputs {
        root.file(
            "ws/wf.yaml",
            &format!(
                "steps:\n  - name: Out\n    command: [\"printf\", \"data\"]\n    output_file: {path:?}\n"
            ),
        );
        let run = run_in(&workspace, &["run", "wf.yaml"]);
        let escaped = target.exists();
        if target == &tmp_target && escaped {
            std::fs::remove_file(target).unwrap();
        }
        run.code(2).stderr_has("outside the workspace");
        assert!(!escaped, "output_file {path} wrote {}", target.display());
    }
    for path in ["/etc/passwd", "../secret.txt", "link/secret.txt"] {
        root.file(
            "ws/wf.yaml",
            &format!(
                "providers:\n  p:\n    command: [\"bash\", \"-c\", 'printf %s \"$1\" > got.txt', \"_\", \"${{PROMPT}}\"]\nsteps:\n  - name: In\n    provider: p\n    input_file: {path:?}\n"
            ),
        );
        let run = run_in(&workspace, &["run", "wf.yaml"]);
        run.code(2).stderr_has("outside the workspace");
        assert!(!root.exists("ws/got.txt"), "input_file {path} was read");
    }
}

#[test]
fn wait_for_globs_and_enqueue_files_escaping_the_workspace_are_refused() {
    let root = Ws::new();
    let workspace = root.join("ws");
    root.file("outside/ready.txt", "outside")
        .file("outside/secret.txt", "outside secret");
    std::fs::create_dir_all(&workspace).unwrap();
    std::os::unix::fs::symlink(root.join("outside"), workspace.join("link")).unwrap();
    root.file("ws/agents/r.yaml", "workflow: workflows/r.yaml\n")
        .file(
            "ws/workflows/r.yaml",
            "steps:\n  - name: S\n    command: [\"true\"]\n",
        );
    let abs = root.join("outside/*.txt").display().to_string();
    for glob in ["../outside/*.txt", abs.as_str(), "link/*.txt"] {
        root.file(
            "ws/wf.yaml",
            &format!(
                "steps:\n  - name: Wait\n    wait_for: {{glob: {glob:?}, timeout_sec: 600, poll_ms: 10}}\n  - name: After\n    command: [touch, after]\n"
            ),
        );
        let run = run_in(&workspace, &["run", "wf.yaml"]);
        // Exit 2 is the refusal: a wait that ran out its 600 s timeout would exit 124.
        run.code(2).stderr_has("outside the workspace");
        assert!(!root.exists("ws/after"), "wait_for {glob} was followed");
    }
    for file in ["../outside/secret.txt", "/etc/passwd", "link/secret.txt"] {
        root.file(
            "ws/wf.yaml",
            &format!("steps:\n  - name: Send\n    enqueue: {{role: r, file: {file:?}}}\n"),
        );
        let run = run_in(&workspace, &["run", "wf.yaml"]);
        assert_ne!(run.code, 0, "enqueue of {file} succeeded");
        run.stderr_has("outside the workspace");
        let inbox = std::fs::read_dir(workspace.join("inbox/r"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(inbox, 0, "enqueue.file {file} reached the inbox");
    }
}

// ---------------------------------------------------------------------------------------------
// environment and secrets

#[test]
fn env_and_workflow_env() {
    let mut ws = ws_with(
        r#"
context: {x: "1"}
env:
  A: "wf-${context.x}"
  B: "wf"
steps:
  - name: First
    command: ["printf", "first"]
  - name: WithEnv
    env:
      B: "step"
      C: "${steps.First.output}"
    command: ["bash", "-c", 'printf "%s|%s|%s|%s" "$A" "$B" "$C" "$FROM_PARENT"']
  - name: WithoutEnv
    command: ["bash", "-c", 'printf "%s|%s|%s" "$A" "$B" "$${C-unset}"']
"#,
    );
    ws.env("FROM_PARENT", "inherited");
    let run = ws.run_wf(&[]);
    run.ok();
    assert_eq!(run.step("WithEnv")["output"], "wf-1|step|first|inherited");
    assert_eq!(run.step("WithoutEnv")["output"], "wf-1|wf|unset");
}

const SECRET: &str = "S3cr3t-Value-42";

const SECRETS_WF: &str = r#"
steps:
  - name: Use
    secrets: [MY_TOKEN]
    command: ["bash", "-c", 'echo "token=$MY_TOKEN"; echo "err $MY_TOKEN" >&2']
    output_file: use.out
  - name: Json
    secrets: [MY_TOKEN]
    command: ["bash", "-c", 'printf "{\"t\": \"%s\"}" "$MY_TOKEN"']
    output_capture: json
  - name: Other
    command: ["bash", "-c", 'if [ -n "$${MY_TOKEN+set}" ]; then echo "present:$MY_TOKEN"; else echo absent; fi']
  - name: Fails
    secrets: [MY_TOKEN]
    command: ["bash", "-c", 'echo "failing with $MY_TOKEN" >&2; exit 3']
"#;

fn secrets_ws() -> Ws {
    let mut ws = ws_with(SECRETS_WF);
    ws.env("MY_TOKEN", SECRET);
    ws
}

#[test]
fn secret_reaches_only_the_steps_that_list_it() {
    let ws = secrets_ws();
    let run = ws.run_wf(&[]);
    run.code(1);
    assert_eq!(ws.read("use.out"), format!("token={SECRET}\n"));
    assert_eq!(run.step("Use")["output"], "token=***");
    assert_eq!(run.step("Other")["output"], "absent");
}

#[test]
fn secret_value_is_never_written_under_orchestrate_dir() {
    let ws = secrets_ws();
    let run = ws.run_wf(&[]);
    run.code(1);
    assert_eq!(
        ws.read("use.out"),
        format!("token={SECRET}\n"),
        "the step printed it"
    );
    assert!(!run.stderr.contains(SECRET), "stderr: {}", run.stderr);
    let mut checked = 0;
    let mut stack = vec![ws.join(".orchestrate")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let text = String::from_utf8_lossy(&bytes);
                assert!(
                    !text.contains(SECRET),
                    "{} holds the secret",
                    path.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "only {checked} files checked");
}

// ---------------------------------------------------------------------------------------------
// CLI: context, run-step, interrupt, watch

#[test]
fn context_file_and_context_override_workflow_defaults() {
    let ws = ws_with(
        r#"
context: {a: wf, b: wf, c: wf}
steps:
  - name: Show
    command: ["printf", "%s|%s|%s|%s", "${context.a}", "${context.b}", "${context.c}", "${context.d.n}"]
"#,
    );
    ws.file("ctx.json", r#"{"b": "file", "c": "file", "d": {"n": 1}}"#);
    let run = ws.run_wf(&["--context-file", "ctx.json", "--context", "c=cli"]);
    run.ok();
    assert_eq!(run.step("Show")["output"], "wf|file|cli|1");
}

const RUN_STEP_WF: &str = r#"
steps:
  - name: A
    command: ["printf", "from-a"]
  - name: B
    command: ["bash", "-c", 'printf "%s" "$1" > b.txt', "_", "${steps.A.output}"]
  - name: C
    command: ["touch", "c-ran"]
"#;

#[test]
fn run_step_runs_only_that_step() {
    let ws = ws_with(RUN_STEP_WF);
    let run = ws.run(&["run-step", "C", "--workflow", "wf.yaml"]);
    run.ok();
    assert!(ws.exists("c-ran"));
    assert!(!ws.exists("b.txt"));
    assert_eq!(finished_steps(&run), ["C"]);
}

#[test]
fn run_step_with_run_reads_that_runs_results() {
    let ws = ws_with(RUN_STEP_WF);
    ws.run(&["run-step", "B", "--workflow", "wf.yaml"])
        .code(2)
        .stderr_has("steps.A.output");
    let full = ws.run_wf(&[]);
    full.ok();
    std::fs::remove_file(ws.join("b.txt")).unwrap();
    std::fs::remove_file(ws.join("c-ran")).unwrap();
    let run = ws.run(&["run-step", "B", "--workflow", "wf.yaml", "--run", full.id()]);
    run.ok();
    assert_eq!(ws.read("b.txt"), "from-a");
    assert!(!ws.exists("c-ran"));
    assert_eq!(finished_steps(&run), ["B"]);
}

#[test]
fn sigint_interrupts_the_run_with_130() {
    let ws = ws_with(
        r#"
steps:
  - name: Long
    command: ["bash", "-c", "echo $$ > leader.pid; sleep 600 & echo $! > child.pid; wait"]
  - name: After
    command: ["touch", "after"]
"#,
    );
    let child = spawn(&ws, &["run", "wf.yaml"]);
    wait_for_event(&ws, "step_started", "Long");
    wait_for_line(&ws, "child.pid");
    let leader = read_pid(&ws, "leader.pid");
    assert!(!group_members(leader).is_empty());
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // `finish` gives up long before the 600 s sleep could end by itself: the exit is the stop.
    let run = finish(&ws, child);
    run.code(130);
    assert_eq!(run.state()["status"], "interrupted");
    assert!(!ws.exists("after"));
    assert_eq!(
        group_members(leader),
        Vec::<u32>::new(),
        "the step's group is gone"
    );
    assert!(pid_gone(read_pid(&ws, "child.pid")));
}

#[test]
fn watch_reruns_when_the_workflow_changes() {
    let ws = ws_with(
        r#"
steps:
  - name: Write
    command: ["bash", "-c", "echo first >> out.txt"]
"#,
    );
    let mut child = ws
        .cmd(&["watch", "wf.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = Arc::clone(&lines);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                lines.lock().unwrap().push(line.unwrap_or_default());
            }
        })
    };
    let run_ids = || -> Vec<String> {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix("run_id: ").map(str::to_string))
            .collect()
    };
    let has = |needle: &str| lines.lock().unwrap().iter().any(|l| l.contains(needle));
    wait_until("the first run to finish", DEADLINE, || has("watching"));
    assert_eq!(ws.read("out.txt"), "first\n");
    ws.workflow(
        r#"
steps:
  - name: Write
    command: ["bash", "-c", "echo second >> out.txt"]
"#,
    );
    wait_until("a second run to finish", DEADLINE, || {
        let ids = run_ids();
        ids.len() >= 2 && has(&format!("run {} succeeded", ids[1]))
    });
    let ids = run_ids();
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    assert_ne!(ids[0], ids[1]);
    assert_eq!(ws.read("out.txt"), "first\nsecond\n");
    let second = ws.state(&ids[1]);
    assert_eq!(second["steps"]["Write"]["status"], "succeeded");
}
