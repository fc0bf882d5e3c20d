//! Finding the workspace (`--workspace`, `ORCHESTRATE_WORKSPACE`, else upward from the current
//! directory), refusing commands with none or with an undefined role, and the shipped
//! `scripts/examples/` (crontab line, systemd unit) run as written.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

const DEADLINE: Duration = Duration::from_secs(120);

/// The binary run in `cwd` with no `--workspace` and no `ORCHESTRATE_WORKSPACE`.
fn run_in(cwd: &Path, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("ORCHESTRATE_WORKSPACE")
        .stdin(Stdio::null())
        .output()
        .expect("spawn orchestrate");
    Run::from(output, cwd)
}

/// A directory with no workspace at or above it: the temp dir's `lost/` (the temp dir itself
/// must not sit below a workspace, or nothing here is "outside" one).
fn outside(ws: &Ws) -> PathBuf {
    let dir = ws.join("lost");
    std::fs::create_dir_all(&dir).unwrap();
    let above: Vec<&Path> = dir
        .ancestors()
        .filter(|d| d.join("agents").is_dir() || d.join(".orchestrate").is_dir())
        .collect();
    assert!(
        above.is_empty(),
        "{} has agents/ or .orchestrate/ above it; these tests need a temp dir outside any workspace",
        above[0].display()
    );
    dir
}

/// Every entry under `dir`, recursively, relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A workspace laid down by `orchestrate init` (roles architect, engineer, qa).
fn initialized() -> Ws {
    let ws = Ws::new();
    ws.run(&["init"]).ok();
    ws
}

#[test]
fn enqueue_outside_any_workspace_is_refused_and_creates_nothing() {
    let ws = Ws::new();
    let lost = outside(&ws);
    run_in(&lost, &["enqueue", "counter", "--text", "hi"])
        .code(2)
        .stderr_has(&format!(
            "no workspace found from {} upward (no agents/ or .orchestrate/); cd into one or pass --workspace",
            lost.display()
        ));
    // Every command that reads or writes swarm state refuses the same way.
    for args in [
        &["tasks"][..],
        &["show", "t1"],
        &["retry", "t1"],
        &["trace", "t1"],
        &["swarm", "status"],
        &["swarm", "down"],
        &["swarm", "up"],
        &["agent", "counter", "--once"],
        &["cancel", "t1"],
        &["pause", "counter"],
    ] {
        run_in(&lost, args)
            .code(2)
            .stderr_has("no workspace found from");
    }
    assert_eq!(tree(&lost), Vec::<String>::new(), "nothing is created");
    // A named directory that is not a workspace is refused too.
    run_in(
        &lost,
        &["--workspace", ".", "enqueue", "counter", "--text", "hi"],
    )
    .code(2)
    .stderr_has("is not a workspace (no agents/ or .orchestrate/)");
    assert_eq!(tree(&lost), Vec::<String>::new(), "nothing is created");
}

#[test]
fn commands_in_a_subdirectory_use_the_workspace_found_upward() {
    let ws = initialized();
    ws.file("notes/deep/task.md", "from a file below the workspace\n");
    let deep = ws.join("notes/deep");
    let before = tree(&deep);

    let out = run_in(
        &deep,
        &["enqueue", "engineer", "--text", "hi", "--name", "a"],
    );
    out.ok();
    assert_eq!(out.stdout.trim(), "inbox/engineer/a.task");
    assert_eq!(ws.read("inbox/engineer/a.task"), "hi");
    // A relative path means what it meant where it was typed.
    run_in(
        &deep,
        &["enqueue", "engineer", "--file", "task.md", "--name", "b"],
    )
    .ok();
    assert_eq!(
        ws.read("inbox/engineer/b.task"),
        "from a file below the workspace\n"
    );
    run_in(&deep, &["tasks", "engineer"])
        .ok()
        .stdout_has("inbox/engineer/a.task");
    assert_eq!(
        tree(&deep),
        before,
        "nothing is created below the workspace"
    );

    // A workflow file typed there, run with the workspace's records.
    ws.file(
        "notes/deep/flow.yaml",
        "steps:\n  - name: A\n    command: [\"true\"]\n",
    );
    let before = tree(&deep);
    run_in(&deep, &["run", "flow.yaml", "--quiet"]).ok();
    assert_eq!(entries(&ws, ".orchestrate/runs").len(), 1);
    assert_eq!(tree(&deep), before, "the run's records are the workspace's");
}

#[test]
fn reading_commands_outside_a_workspace_create_nothing() {
    let ws = Ws::new();
    let lost = outside(&ws);
    for args in [
        &["status"][..],
        &["report"],
        &["gc"],
        &["argv", "claude"],
        &["logs", "r1"],
        &["approve", "r1", "S"],
    ] {
        run_in(&lost, args);
        assert_eq!(
            tree(&lost),
            Vec::<String>::new(),
            "{args:?} wrote something"
        );
    }
}

#[test]
fn orchestrate_workspace_names_the_workspace_from_anywhere() {
    let ws = initialized();
    let other = Ws::new();
    let lost = outside(&other);
    let output = Command::new(BIN)
        .args(["enqueue", "qa", "--text", "check", "--name", "e1"])
        .current_dir(&lost)
        .env("ORCHESTRATE_WORKSPACE", ws.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run::from(output, &lost).ok();
    assert_eq!(ws.read("inbox/qa/e1.task"), "check");
    // --workspace wins over the variable.
    let output = Command::new(BIN)
        .args(["--workspace"])
        .arg(ws.path())
        .args(["enqueue", "qa", "--text", "x", "--name", "e2"])
        .current_dir(&lost)
        .env("ORCHESTRATE_WORKSPACE", &lost)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run::from(output, &lost).ok();
    assert!(ws.exists("inbox/qa/e2.task"));
    assert_eq!(tree(&lost), Vec::<String>::new());
}

#[test]
fn an_undefined_role_is_refused_with_the_nearest_name() {
    let ws = initialized();
    ws.run(&["enqueue", "enginer", "--text", "hi"])
        .code(2)
        .stderr_has(
            "there is no role `enginer` (no agents/enginer.yaml); did you mean `engineer`?",
        );
    assert!(!ws.exists("inbox/enginer"));

    let out = ws.run(&["agent", "enginer", "--once"]);
    out.code(2).stderr_has(
        "there is no role `enginer` (no agents/enginer.yaml); did you mean `engineer`?",
    );
    assert!(
        !out.stderr.contains("workflow file"),
        "the role file is missing, not a workflow: {}",
        out.stderr
    );
    ws.run(&["pause", "enginer"])
        .code(2)
        .stderr_has("did you mean `engineer`?");

    // A workspace that has records but no roles (a run was made there) takes no tasks either.
    let runs = Ws::new();
    runs.workflow("steps:\n  - name: A\n    command: [\"true\"]\n");
    runs.run_wf(&[]).ok();
    run_in(runs.path(), &["enqueue", "counter", "--text", "hi"])
        .code(2)
        .stderr_has("there is no role `counter` (no agents/counter.yaml)")
        .stderr_has("has no agents/ directory");
    assert!(!runs.exists("inbox"));
}

#[test]
fn run_outside_any_workspace_keeps_its_records_in_the_current_directory() {
    let ws = Ws::new();
    let lost = outside(&ws);
    std::fs::write(
        lost.join("wf.yaml"),
        "steps:\n  - name: A\n    command: [\"true\"]\n",
    )
    .unwrap();
    run_in(&lost, &["run", "wf.yaml", "--quiet"]).ok();
    assert!(lost.join(".orchestrate/runs").is_dir());
    // From then on it is a workspace: a subdirectory finds its runs.
    std::fs::create_dir_all(lost.join("sub")).unwrap();
    run_in(&lost.join("sub"), &["status"])
        .ok()
        .stdout_has("succeeded");
}

#[test]
fn orchestrate_run_by_a_step_works_on_the_run_s_workspace_from_another_checkout() {
    // A step whose cwd has an agents/ of its own (as a task's git worktree does) still hands
    // its task to the run's workspace.
    let ws = Ws::new();
    role(
        &ws,
        "qa",
        "",
        "steps:\n  - name: A\n    command: [\"true\"]\n",
    );
    ws.workflow(&format!(
        "steps:\n  - name: Hand\n    command: [sh, -c, 'mkdir -p checkout/agents && cd checkout && exec \"$0\" enqueue qa --text x --name handed', '{BIN}']\n"
    ));
    ws.run_wf(&["--quiet"]).ok();
    assert!(ws.exists("inbox/qa/handed.task"));
    assert!(!ws.exists("checkout/inbox"));
}

#[test]
fn init_lays_down_here_even_below_a_workspace() {
    let ws = initialized();
    std::fs::create_dir_all(ws.join("nested")).unwrap();
    run_in(&ws.join("nested"), &["init"]).ok();
    assert!(ws.exists("nested/agents/engineer.yaml"));
}

// ---------------------------------------------------------------------------------------------
// scripts/examples

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The example's text with its placeholders (binary, workspace) made real.
fn localized(text: &str, ws: &Path) -> String {
    text.replace("/usr/local/bin/orchestrate", BIN)
        .replace("/srv/orchestrate", &ws.display().to_string())
}

/// The command of the crontab's one job line (after the five schedule fields).
fn cron_command(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(lines.len(), 1, "one job line: {lines:?}");
    let mut rest = lines[0];
    for _ in 0..5 {
        let (_, tail) = rest
            .trim_start()
            .split_once(char::is_whitespace)
            .expect("five schedule fields");
        rest = tail;
    }
    assert!(!rest.contains('%'), "`%` means newline to cron: {rest}");
    rest.trim().to_string()
}

/// Runs a crontab command as cron does: `/bin/sh -c`, in HOME, with cron's bare environment.
fn as_cron(command: &str, home: &Path) -> std::process::ExitStatus {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .current_dir(home)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .env("SHELL", "/bin/sh")
        .env("LOGNAME", "cron")
        .stdin(Stdio::null())
        .status()
        .unwrap()
}

#[test]
fn crontab_example_enqueues_into_its_workspace_from_cron_s_environment() {
    let ws = initialized();
    let home = Ws::new();
    let lost = outside(&home);
    let command = cron_command(&localized(&example("crontab"), ws.path()));
    // Cron starts in HOME, not in the workspace.
    assert!(as_cron(&command, &lost).success(), "{command}");
    let queued = queued(&ws, "engineer");
    assert_eq!(queued.len(), 1, "{queued:?}");
    let log = std::fs::read_to_string(lost.join("orchestrate-cron.log")).unwrap();
    assert!(
        log.contains("inbox/engineer/"),
        "the log names the task: {log}"
    );

    // Pointed at the wrong directory, it enqueues nothing and the log says why.
    let wrong = ws.join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    let command = cron_command(&localized(&example("crontab"), &wrong));
    assert_eq!(as_cron(&command, &lost).code(), Some(2));
    let log = std::fs::read_to_string(lost.join("orchestrate-cron.log")).unwrap();
    assert!(log.contains("is not a workspace"), "{log}");
    assert_eq!(tree(&wrong), Vec::<String>::new());
}

/// `KEY=VALUE` of a unit file's `[Service]` section.
fn service_value(unit: &str, key: &str) -> String {
    unit.lines()
        .filter_map(|l| l.trim().split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("the unit sets no {key}="))
}

#[test]
fn systemd_unit_example_runs_the_supervisor_in_the_foreground_and_stops_on_sigterm() {
    let ws = initialized();
    let unit = localized(&example("orchestrate-swarm.service"), ws.path());
    assert_eq!(
        Path::new(&service_value(&unit, "WorkingDirectory")),
        ws.path()
    );
    assert_eq!(service_value(&unit, "Type"), "simple");
    assert_eq!(service_value(&unit, "KillMode"), "mixed");
    assert_eq!(service_value(&unit, "Restart"), "on-failure");
    assert!(service_value(&unit, "ExecReload").ends_with("kill -HUP $MAINPID"));
    let exec: Vec<String> = service_value(&unit, "ExecStart")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(exec[0], BIN);
    assert!(
        !exec.iter().any(|a| a == "-d" || a == "--detach"),
        "systemd's Type=simple needs the foreground: {exec:?}"
    );
    // systemd's stop waits longer than the supervisor's grace for tasks in flight.
    let grace: f64 = exec
        .iter()
        .position(|a| a == "--grace")
        .map(|i| exec[i + 1].parse().unwrap())
        .expect("ExecStart sets --grace");
    let stop: f64 = service_value(&unit, "TimeoutStopSec").parse().unwrap();
    assert!(stop > grace, "TimeoutStopSec {stop} <= --grace {grace}");

    // systemd's own checker, where it is installed.
    let file = ws.join("orchestrate-swarm.service");
    std::fs::write(&file, &unit).unwrap();
    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(err) => eprintln!("systemd-analyze not available ({err}): unit checked by hand only"),
    }
    std::fs::remove_file(&file).unwrap();

    // ExecStart as systemd runs it (in WorkingDirectory): in the foreground until SIGTERM.
    let mut child = Command::new(&exec[0])
        .args(&exec[1..])
        .current_dir(ws.path())
        .env_remove("ORCHESTRATE_WORKSPACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the swarm to run every role", DEADLINE, || {
        let status = ws.run(&["swarm", "status", "--json"]);
        let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap_or_default();
        json["state"] == "running"
            && json["children"].as_array().is_some_and(|children| {
                children.len() >= 3 && children.iter().all(|c| c["state"] == "running")
            })
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "still in the foreground"
    );
    assert!(signal_quiet("-TERM", &child.id().to_string()));
    let status = exit_within(&mut child, DEADLINE).expect("the supervisor stops on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        working_in(ws.path()).is_empty(),
        "no role process outlives the supervisor"
    );
}
