//! `orchestrate validate`: every diagnostic pinned as a snapshot.
//!
//! Each fixture `tests/fixtures/validate/NAME.yaml` is validated with the fixtures directory as
//! WORKSPACE (so paths render as `NAME.yaml:line:column`), and the rendered stderr is compared with
//! `tests/fixtures/validate/NAME.stderr`. `UPDATE_SNAPSHOTS=1 cargo test --test integration
//! validate` rewrites the expected files after a deliberate change in wording or position.

#[allow(unused_imports)]
use crate::harness::*;

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/validate")
}

/// `orchestrate --workspace tests/fixtures/validate validate ARGS...`.
fn validate(args: &[&str]) -> Run {
    let dir = fixtures();
    let output = Command::new(BIN)
        .arg("--workspace")
        .arg(&dir)
        .arg("validate")
        .args(args)
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawn orchestrate");
    Run::from(output, &dir)
}

/// Compares `actual` with `tests/fixtures/validate/NAME.stderr`, or rewrites that file when
/// `UPDATE_SNAPSHOTS=1`.
pub(crate) fn assert_snapshot(name: &str, actual: &str) {
    let path = fixtures().join(format!("{name}.stderr"));
    if std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no snapshot {} ({e}); create it with UPDATE_SNAPSHOTS=1\n--- actual\n{actual}",
            path.display()
        )
    });
    assert!(
        actual == expected,
        "diagnostics differ from {} (UPDATE_SNAPSHOTS=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// Validates `NAME.yaml`, which must be refused (exit 2, nothing on stdout), and pins its stderr.
pub(crate) fn refused(name: &str) -> Run {
    let run = validate(&[&format!("{name}.yaml")]);
    run.code(2);
    assert_eq!(
        run.stdout, "",
        "a refused workflow prints nothing on stdout"
    );
    assert_snapshot(name, &run.stderr);
    run
}

/// The `file:line:column` prefixes of the rendered problems, in output order.
fn locations(stderr: &str) -> Vec<(u32, u32)> {
    stderr
        .lines()
        .filter(|l| l.contains(": error: "))
        .map(|l| {
            let loc = l.split(": error: ").next().unwrap();
            let mut parts = loc.rsplitn(3, ':');
            let column = parts.next().unwrap().parse().expect("column");
            let line = parts.next().unwrap().parse().expect("line");
            (line, column)
        })
        .collect()
}

#[test]
fn unknown_field_is_reported_with_did_you_mean() {
    let run = refused("unknown_field");
    run.stderr_has("unknown_field.yaml:4:5: error: unknown field `comand` in step `Build`")
        .stderr_has("did you mean `command`?");
}

#[test]
fn several_problems_are_all_reported_at_once_in_line_order() {
    let run = refused("several_problems");
    let locs = locations(&run.stderr);
    assert_eq!(
        locs,
        vec![
            (2, 1),
            (5, 27),
            (6, 21),
            (8, 23),
            (10, 23),
            (12, 22),
            (13, 18)
        ],
        "{}",
        run.stderr
    );
    let mut sorted = locs.clone();
    sorted.sort();
    assert_eq!(locs, sorted, "problems are listed in line order");
    run.stderr_has("7 problem(s) found");
}

#[test]
fn carets_sit_under_wide_characters_by_their_display_width() {
    let run = refused("wide_characters");
    // `    command: [echo, "` is 21 columns, `日本語` 6, ` ` 1, `🚀` 2, ` ` 1: `${env.USER}` (11
    // characters) starts 31 columns into the line, though it is its 28th character.
    run.stderr_has("wide_characters.yaml:3:28: error: step `挨拶` uses `${env.USER}`")
        .stderr_has(&format!("\n  | {}{}\n", " ".repeat(31), "^".repeat(11)));
}

#[test]
fn goto_to_a_missing_step_is_reported() {
    refused("goto_missing")
        .stderr_has("goto_missing.yaml:6:23: error: step `Build` has `goto: Fixx`, but there is no step `Fixx`")
        .stderr_has("did you mean `Fix`?");
}

#[test]
fn duplicate_step_names_are_reported_nested_too() {
    let run = refused("duplicate_names");
    assert_eq!(locations(&run.stderr), vec![(9, 11), (13, 11), (15, 5)]);
    run.stderr_has("duplicate step name `Build`")
        .stderr_has("duplicate step name `Inner`");
}

#[test]
fn bad_pointer_grammar_is_reported() {
    let run = refused("bad_pointers");
    assert_eq!(locations(&run.stderr), vec![(8, 19), (14, 19), (20, 19)]);
    run.stderr_has("`items_from: steps.List.json.files[0]`")
        .stderr_has("`items_from: steps.List.output`")
        .stderr_has("`items_from: foo.List.lines`");
}

#[test]
fn pointer_to_a_step_without_lines_or_json_capture_is_reported() {
    refused("pointer_capture_mismatch")
        .stderr_has("step `Text` does not capture lines")
        .stderr_has("step `Lines` does not capture json");
}

#[test]
fn env_namespace_is_rejected() {
    refused("env_namespace").stderr_has(
        "env_namespace.yaml:4:20: error: step `Home` uses `${env.HOME}`: the `env` namespace is not available",
    );
}

#[test]
fn unknown_namespace_is_reported_with_did_you_mean() {
    refused("unknown_namespace")
        .stderr_has("unknown variable namespace `contxt`")
        .stderr_has("did you mean `context`?");
}

#[test]
fn loop_index_outside_for_each_is_reported() {
    refused("loop_outside_for_each").stderr_has("uses `${loop.index}` outside a `for_each`");
}

#[test]
fn output_of_a_json_capturing_step_is_reported() {
    refused("output_on_json_step")
        .stderr_has("uses `${steps.Data.output}`, but step `Data` captures json");
}

#[test]
fn undefined_provider_is_reported() {
    refused("undefined_provider")
        .stderr_has("uses provider `claud`, which is not defined")
        .stderr_has("did you mean `claude`?");
}

#[test]
fn provider_template_param_without_default_or_param_is_reported() {
    refused("provider_param_missing").stderr_has(
        "provider `local` uses `${model}`, but neither `provider_params` nor the provider's `defaults` give `model`",
    );
}

#[test]
fn prompt_template_without_input_file_is_reported() {
    refused("prompt_without_input_file")
        .stderr_has("needs a prompt (`${PROMPT}`) but the step has no `input_file`");
}

#[test]
fn unparsable_jq_is_reported_with_a_clear_error() {
    refused("bad_jq").stderr_has("invalid jq expression `.steps.Check | | .exit_code`");
}

#[test]
fn unterminated_template_is_reported_at_its_dollar() {
    refused("unterminated_template").stderr_has(
        "unterminated_template.yaml:4:29: error: in `command` of step `Show`: unterminated `${`",
    );
}

#[test]
fn malformed_yaml_is_reported_with_its_position() {
    // An unclosed `[` on line 4: reported at the bracket, not where the parser gave up (5:9).
    refused("malformed_yaml").stderr_has(
        "malformed_yaml.yaml:4:14: error: invalid YAML: unclosed `[`: the flow list opened here \
         is still open at line 5",
    );
}

#[test]
fn unclosed_brackets_and_quotes_are_reported_where_they_open() {
    let ws = Ws::new();
    let head = "name: x\nsteps:\n  - name: A\n";
    for (line4, at, says) in [
        (
            "    command: [echo, hi,\n",
            "wf.yaml:4:14: error: invalid YAML: unclosed `[`",
            "close it with `]`",
        ),
        (
            "    env: {A: b,\n",
            "wf.yaml:4:10: error: invalid YAML: unclosed `{`",
            "close it with `}`",
        ),
        (
            "    command: [\"echo, hi]\n",
            "wf.yaml:4:15: error: invalid YAML: the string opened by this `\"` runs on to line 5",
            "close it with `\"` on this line",
        ),
        (
            "    command: 'echo\n",
            "wf.yaml:4:14: error: invalid YAML: unclosed `'`: the string opened here is never closed",
            "close it with `'`",
        ),
    ] {
        ws.workflow(&format!("{head}{line4}  - name: \"B\"\n    command: [c]\n"));
        let run = ws.run(&["validate", "wf.yaml"]);
        run.code(2).stderr_has(at).stderr_has(says);
        assert!(!run.stderr.contains("wf.yaml:5:"), "{}", run.stderr);
    }
    // A flow list spread over lines with a real mistake inside is reported at the mistake.
    ws.workflow(&format!(
        "{head}    command: [\n      echo,\n      a: b: c\n    ]\n"
    ));
    ws.run(&["validate", "wf.yaml"])
        .code(2)
        .stderr_has("wf.yaml:6:11: error: invalid YAML: ");
}

/// Bounded by work, not time: the parser stops at the first replayed node past its limit.
#[test]
fn yaml_alias_bomb_is_refused_at_the_replay_limit() {
    refused("alias_bomb")
        .stderr_has("alias_bomb.yaml:5:20: error: invalid YAML: aliases expand to too much data")
        .stderr_has("at most 50,000 nodes may be replayed from anchors")
        .stderr_has("had replayed 50,001 when it was refused");
}

#[test]
fn deeply_nested_yaml_is_refused_without_crashing() {
    // 10,000 levels of `[`, one per line.
    refused("deep_nesting").stderr_has(
        "deep_nesting.yaml:65:1: error: invalid YAML: the document nests deeper than 64 levels",
    );
}

#[test]
fn deeply_nested_yaml_on_one_line_is_refused_without_crashing() {
    let ws = Ws::new();
    ws.file(
        "deep.yaml",
        &format!("steps: {}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
    );
    let run = ws.run(&["validate", "deep.yaml"]);
    run.code(2)
        .stderr_has("deep.yaml:1:")
        .stderr_has("error: invalid YAML: ");
}

#[test]
fn empty_file_is_reported() {
    refused("empty").stderr_has("empty.yaml:1:1: error: the workflow is empty");
}

#[test]
fn non_utf8_file_is_reported() {
    refused("non_utf8").stderr_has("non_utf8.yaml:1:10: error: the file is not UTF-8");
}

#[test]
fn directory_given_as_file_is_reported() {
    let run = validate(&["a_directory"]);
    run.code(2)
        .stderr_has("a_directory: error: not a regular file");
    assert_snapshot("a_directory", &run.stderr);
}

#[test]
fn missing_file_is_reported() {
    let run = validate(&["does_not_exist.yaml"]);
    run.code(2)
        .stderr_has("does_not_exist.yaml: error: cannot read the workflow file");
    assert_snapshot("does_not_exist", &run.stderr);
}

#[test]
fn goto_end_on_success_is_accepted() {
    let run = validate(&["end_goto.yaml"]);
    run.ok();
    assert_eq!(run.stdout, "end_goto.yaml: ok (2 steps)\n");
    assert_eq!(run.stderr, "");
}

#[test]
fn valid_workflow_prints_ok_and_exits_0() {
    let run = validate(&["valid.yaml"]);
    run.ok();
    assert_eq!(run.stdout, "valid.yaml: ok (4 steps)\n");
    assert_eq!(run.stderr, "");
}

#[test]
fn multiple_files_with_one_bad_exit_2_and_both_are_reported() {
    let run = validate(&["valid.yaml", "goto_missing.yaml"]);
    run.code(2);
    assert_eq!(run.stdout, "valid.yaml: ok (4 steps)\n");
    run.stderr_has("goto_missing.yaml:6:23: error: ");
    assert_snapshot("multiple_files", &run.stderr);
}

#[test]
fn run_of_an_invalid_workflow_exits_2_and_runs_nothing() {
    let ws = Ws::new();
    ws.workflow(
        r#"name: invalid
steps:
  - name: Touch
    command: [touch, side-effect]
  - name: Home
    command: [ls, "${env.HOME}"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.code(2)
        .stderr_has("wf.yaml:6:20: error: ")
        .stderr_has("nothing was run");
    assert!(run.run_id.is_none(), "no run id is printed: {}", run.stderr);
    assert!(!ws.exists("side-effect"), "a step ran");
    assert!(
        !ws.exists(".orchestrate"),
        "a run directory was created: {:?}",
        std::fs::read_dir(ws.join(".orchestrate")).map(|d| d.count())
    );
}

#[test]
fn bad_budget_and_idle_timeout_fields_are_reported() {
    let run = refused("bad_budget");
    assert_eq!(
        locations(&run.stderr),
        vec![(3, 17), (4, 15), (5, 17), (6, 3), (10, 23), (14, 5)],
        "{}",
        run.stderr
    );
    run.stderr_has("`budget.max_cost_usd` must be a number above 0")
        .stderr_has("unknown field `max_token` in `budget` of the workflow")
        .stderr_has("did you mean `max_tokens`?")
        .stderr_has("`idle_timeout_sec` has no meaning on a wait_for step (step `Wait`)");
}

#[test]
fn bad_swarm_budget_is_reported() {
    let run = refused("swarm");
    assert_eq!(
        locations(&run.stderr),
        vec![(2, 25), (3, 3), (4, 1)],
        "{}",
        run.stderr
    );
    run.stderr_has("did you mean `max_tokens_per_day`?")
        .stderr_has("did you mean `budget`?");
}

#[test]
fn bad_role_budget_is_reported() {
    let run = refused("agents/bad_budget_role");
    assert_eq!(
        locations(&run.stderr),
        vec![(2, 19), (4, 15), (5, 3)],
        "{}",
        run.stderr
    );
    run.stderr_has(
        "agents/bad_budget_role.yaml:5:3: error: unknown field `max_wall` in `budget` of the role",
    )
    .stderr_has("did you mean `max_wall_sec`?");
}

#[test]
fn bad_isolation_is_reported() {
    let run = refused("bad_isolation");
    assert_eq!(
        locations(&run.stderr),
        vec![(4, 11), (5, 5), (6, 13), (7, 11)],
        "{}",
        run.stderr
    );
    run.stderr_has("`isolation.worktree.base` is empty")
        .stderr_has("unknown field `kep` in `isolation.worktree` of the workflow")
        .stderr_has("did you mean `keep`?")
        .stderr_has("uses `{id}`, which is not one of {role}, {task}, {workflow}")
        .stderr_has("`isolation.worktree.keep` must be true or false");
    let run = refused("agents/bad_isolation_role");
    assert_eq!(locations(&run.stderr), vec![(2, 12)], "{}", run.stderr);
    run.stderr_has("unknown isolation `worktre` in `isolation` of the role")
        .stderr_has("did you mean `worktree`?");
}

#[test]
fn good_isolation_validates() {
    let ws = Ws::new();
    ws.workflow(
        "isolation: {worktree: {base: main, keep: true, branch: \"wt/{workflow}/{task}\", dir: ../wt}}\nsteps:\n  - name: A\n    command: [\"true\"]\n",
    );
    ws.file("agents/r.yaml", "workflow: wf.yaml\nisolation: none\n");
    ws.run(&["validate", "wf.yaml", "agents/r.yaml"]).ok();
}

#[test]
fn a_good_budget_validates() {
    let ws = Ws::new();
    ws.file(
        "swarm.yaml",
        "budget:\n  max_cost_usd_per_day: 2.5\n  max_tokens_per_day: 100000\n",
    );
    ws.workflow(
        "budget:\n  max_cost_usd: 0.5\n  max_tokens: 20000\n  max_wall_sec: 600\nsteps:\n  - name: A\n    command: [\"true\"]\n    idle_timeout_sec: 30\n",
    );
    ws.run(&["validate", "swarm.yaml", "wf.yaml"])
        .ok()
        .stdout_has("swarm.yaml: ok")
        .stdout_has("wf.yaml: ok");
}

#[test]
fn converge_blocks_are_checked_with_locations() {
    let run = refused("bad_converge");
    assert_eq!(
        locations(&run.stderr),
        vec![(7, 35), (8, 15), (9, 17), (13, 18), (15, 7), (19, 15)],
        "{}",
        run.stderr
    );
    run.stderr_has("`converge.findings` of step `Review`: invalid jq expression")
        .stderr_has("`converge.rounds` must be a whole number from 1 to 1000, found `0`")
        .stderr_has(
            "step `Review` has `converge.on_stall: Escalte`, but there is no step `Escalte`",
        )
        .stderr_has("did you mean `Escalate`?")
        .stderr_has("there is no step `Reviw`")
        .stderr_has("unknown field `patience` in `converge` of step `Fix`")
        .stderr_has("`converge` of step `Later` needs `findings`");
}

#[test]
fn huge_yaml_is_refused_by_its_size_without_being_read() {
    let ws = Ws::new();
    // 50 MB, sparse after a valid start: refused from its size alone.
    let file = std::fs::File::create(ws.join("wf.yaml")).unwrap();
    std::io::Write::write_all(&mut &file, b"steps:\n  - name: A\n    command: [true]\n").unwrap();
    file.set_len(50 << 20).unwrap();
    drop(file);
    let (run, read) = ws.run_counting_reads(&["validate", "wf.yaml"]);
    run.code(2)
        .stderr_has("wf.yaml: error: the file is 52428800 bytes; workflows are limited to 8388608")
        .stderr_has("split the workflow");
    // Bounded by work: it read less than a megabyte, not the 50 MB.
    assert!(read < 1 << 20, "validate read {read} bytes");
    ws.run_wf(&[]).code(2).stderr_has("limited to 8388608");
    assert!(!ws.exists(".orchestrate/runs"), "a run was started");
    // The same file as a role's definition stops the role before it claims anything.
    std::fs::create_dir_all(ws.join("agents")).unwrap();
    std::fs::rename(ws.join("wf.yaml"), ws.join("agents/r.yaml")).unwrap();
    ws.file("inbox/r/t.task", "kept\n");
    let agent = ws.run(&["agent", "r", "--once"]);
    assert_ne!(agent.code, 0, "{}", agent.stderr);
    agent.stderr_has("limited to 8388608");
    assert_eq!(
        ws.read("inbox/r/t.task"),
        "kept\n",
        "the task is left alone"
    );
}

/// Bounded by work, not time: the parser stops at the node that crosses the limit, long before
/// the end of the file, and says which limit it was.
#[test]
fn yaml_just_under_the_size_limit_with_too_many_nodes_is_refused_at_the_node_limit() {
    let ws = Ws::new();
    // ~2.5 MB of list items (312,000): under the byte limit, over the 250,000-node budget.
    let mut text = String::from("name: big\ncontext:\n  items:\n");
    while text.len() < 2_500_000 {
        text.push_str("    - x\n");
    }
    text.push_str("steps:\n  - name: A\n    command: [true]\n");
    ws.workflow(&text);
    let run = ws.run(&["validate", "wf.yaml"]);
    run.code(2)
        .stderr_has("error: invalid YAML: the document has more than 250,000 nodes")
        .stderr_has("refused at node 250,001")
        .stderr_has("split the workflow");
    assert!(!run.stderr.contains("budget breached"), "{}", run.stderr);
    let line: usize = run
        .stderr
        .split("wf.yaml:")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line in {}", run.stderr));
    let lines = text.lines().count();
    assert!(
        line < 250_001 && line < lines,
        "refused at line {line} of {lines}: not where the limit was crossed"
    );
}

#[test]
fn malformed_yaml_variants_are_each_reported_with_a_position() {
    let ws = Ws::new();
    for (text, needle) in [
        ("steps:\n  - name: A\n   command: [x]\n", "wf.yaml:"),
        ("steps: [\n", "wf.yaml:"),
        ("\t- tab\n", "wf.yaml:"),
        ("a: &x 1\nb: *y\n", "wf.yaml:"),
        ("{{{{", "wf.yaml:"),
        ("steps:\n  - name: \"unterminated\n", "wf.yaml:"),
        ("--- !!binary\nAAAA\n", "wf.yaml:"),
        ("\u{feff}\u{0}\u{1}", "wf.yaml:"),
    ] {
        ws.workflow(text);
        let run = ws.run(&["validate", "wf.yaml"]);
        assert_eq!(run.code, 2, "{text:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(needle) && run.stderr.contains("error:"),
            "{text:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{text:?}: {}", run.stderr);
    }
}

#[test]
fn fan_out_fields_are_checked_where_they_are_written() {
    refused("bad_fanout")
        .stderr_has("bad_fanout.yaml:6:21: error: `max_parallel` of `for_each` of step `Each` must be a whole number from 1 to 1024, found `0`")
        .stderr_has("bad_fanout.yaml:7:13: error: `join: all_sucess` of `for_each` of step `Each` is not a join policy")
        .stderr_has("did you mean `all_success`?")
        .stderr_has("bad_fanout.yaml:19:29: error: step `Check` has `goto: _end` inside for_each step `Ask`")
        .stderr_has("bad_fanout.yaml:20:11: error: approval step `Approve` is inside `for_each` `Ask` with `max_parallel` above 1")
        .stderr_has("bad_fanout.yaml:29:9: error: branch name `b/c` in step `P` may only use letters")
        .stderr_has("bad_fanout.yaml:34:13: error: `join: any` of `parallel` of step `Q` is not a join policy")
        .stderr_has("bad_fanout.yaml:35:17: error: `branches` of step `Q` must map branch names to step lists")
        .stderr_has("bad_fanout.yaml:37:24: error: step `Refs` uses `${steps.P.branches.lnt.status}`, but parallel step `P` has no branch `lnt`")
        .stderr_has("did you mean `lint`?")
        .stderr_has("bad_fanout.yaml:37:58: error: step `Refs` uses `${steps.Ask.branches}`, but step `Ask` is a for_each")
        .stderr_has("bad_fanout.yaml:37:83: error: step `Refs` uses `${steps.Check.results}`, but step `Check` is a command step")
        .stderr_has("10 problem(s) found");
}

#[test]
fn duplicate_branch_names_are_refused_at_the_second() {
    refused("duplicate_branch")
        .stderr_has("duplicate_branch.yaml:9:9: error: invalid YAML: duplicate mapping key: lint");
}

#[test]
fn task_variables_are_checked_by_name_with_a_suggestion() {
    let ws = Ws::new();
    ws.workflow(
        "steps:\n  - name: A\n    command: [cat, \"${task.pth}\"]\n  - name: B\n    command: [echo, \"${task.text.x}\", \"${task.zzzz}\"]\n",
    );
    ws.run(&["validate", "wf.yaml"])
        .code(2)
        .stderr_has(
            "wf.yaml:3:21: error: step `A` uses `${task.pth}`, which is not a task variable",
        )
        .stderr_has("did you mean `task.path`?")
        .stderr_has("uses `${task.text.x}`, but `task.text` has no fields")
        .stderr_has("task variables: task.id, task.name, task.path");
    // Every documented task variable, `${task.json.<path>}` included, is accepted, in a workflow
    // that `run` would give no task as in a role's.
    ws.workflow(
        "steps:\n  - name: A\n    command: [echo, \"${task.id} ${task.name} ${task.path} ${task.dir} ${task.attempt} ${task.text} ${task.json.a.b} ${task.json} ${task.correlation_id} ${task.role}\"]\n",
    );
    ws.run(&["validate", "wf.yaml"]).ok();
}

/// The shipped example validates as it is: the roles (each with its workflow, which takes its
/// provider from the role) and the workflows no role runs.
#[test]
fn shipped_workflows_and_roles_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let yaml_in = |dir: &str| -> Vec<PathBuf> {
        std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
            .map(|path| path.strip_prefix(root).unwrap().to_path_buf())
            .collect()
    };
    let roles = yaml_in("agents");
    let mut files: Vec<String> = roles.iter().map(|p| p.display().to_string()).collect();
    for workflow in yaml_in("workflows") {
        if !roles
            .iter()
            .any(|role| role.file_name() == workflow.file_name())
        {
            files.push(workflow.display().to_string());
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    let run = Command::new(BIN)
        .arg("--workspace")
        .arg(root)
        .arg("validate")
        .args(&files)
        .current_dir(root)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawn orchestrate");
    let run = Run::from(run, root);
    run.ok();
}

/// The demo's header gives the same command as the README's quick start.
#[test]
fn the_demo_header_and_the_readme_run_the_demo_the_same_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let command = |file: &str| -> String {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("cargo run") && l.contains("workflows/demo.yaml"))
            .unwrap_or_else(|| panic!("{file} does not say how to run the demo"));
        let start = line.find("cargo run").unwrap();
        let end = line.find("workflows/demo.yaml").unwrap() + "workflows/demo.yaml".len();
        line[start..end].to_string()
    };
    assert_eq!(command("workflows/demo.yaml"), command("README.md"));
}
