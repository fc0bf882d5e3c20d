//! `isolation: worktree`: each task (or run) works in a git worktree on a branch of its own,
//! while queues, records and enqueues stay in the main workspace; `orchestrate gc` cleans up.

use crate::harness::*;

use std::process::Command;
use std::time::Duration;

/// `git ARGS` in `dir` (relative to the workspace), its trimmed stdout; panics on failure.
fn git(ws: &Ws, dir: &str, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(ws.join(dir))
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes the workspace a git repository with everything in it committed on `main`.
fn commit_all(ws: &Ws) {
    if !ws.exists(".git") {
        git(ws, ".", &["init", "-q", "-b", "main"]);
        git(ws, ".", &["config", "user.email", "test@example.com"]);
        git(ws, ".", &["config", "user.name", "Test"]);
    }
    let extra = std::fs::read_to_string(ws.join(".gitignore")).unwrap_or_default();
    ws.file(
        ".gitignore",
        &format!(
            "/.orchestrate/\n/inbox/\n/running/\n/processed/\n/failed/\n/barrier/\n/go\n{extra}"
        ),
    );
    git(ws, ".", &["add", "-A"]);
    git(ws, ".", &["commit", "-q", "-m", "setup"]);
}

fn branches(ws: &Ws) -> Vec<String> {
    let text = git(ws, ".", &["branch", "--format=%(refname:short)"]);
    let mut names: Vec<String> = text.lines().map(str::to_string).collect();
    names.sort();
    names
}

/// The status.json of a role's task in `processed/` or `failed/`.
fn status(ws: &Ws, state: &str, role: &str, id: &str) -> serde_json::Value {
    let name = entries(ws, state)
        .into_iter()
        .rev()
        .find(|n| n.ends_with(&format!("_{role}_{id}")))
        .unwrap_or_else(|| panic!("no {state}/ entry for {id}: {:?}", entries(ws, state)));
    json_file(ws, &format!("{state}/{name}/status.json"))
}

/// Enqueues task `id` (text `x`) for the `dev` role.
fn enqueue(ws: &Ws, id: &str) {
    ws.run(&["enqueue", "dev", "--name", id, "--text", "x"])
        .ok();
}

/// One `agent dev --once` pass over the inbox.
fn work(ws: &Ws) -> Run {
    run_within(ws, &["agent", "dev", "--once"], Duration::from_secs(60))
}

/// The message of `dev`'s failed task `id`.
fn failed_message(ws: &Ws, id: &str) -> String {
    status(ws, "failed", "dev", id)["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message for failed task {id}"))
        .to_string()
}

/// A script (committed with the repository, so it is in every worktree) that commits a file
/// named after the task, then waits (bounded) until `want` tasks have reached that point,
/// recording where it ran.
const COMMIT_SH: &str = r#"#!/bin/sh
set -e
id="$1"; barrier="$2"; want="$3"
echo "$id" > "work-$id.txt"
git add "work-$id.txt"
git commit -q -m "work of $id"
mkdir -p "$barrier"
pwd > "$barrier/$id"
i=0
while [ "$(ls "$barrier" | wc -l)" -lt "$want" ]; do
  i=$((i+1)); [ "$i" -lt 600 ] || { echo "the other tasks never started" >&2; exit 1; }
  sleep 0.05
done
"#;

fn committing_role(ws: &Ws, concurrency: u32, want: usize, isolation: &str) {
    ws.script("commit.sh", COMMIT_SH);
    let barrier = ws.join("barrier");
    role(
        ws,
        "dev",
        &format!("concurrency: {concurrency}\n{isolation}"),
        &format!(
            r#"steps:
  - name: Work
    command: ["./commit.sh", "${{task.id}}", "{barrier}", "{want}"]
  - name: Hand
    enqueue: {{role: qa, text: "check ${{task.id}} in ${{run.workspace}}"}}
"#,
            barrier = barrier.display()
        ),
    );
    role(
        ws,
        "qa",
        "",
        "steps:\n  - name: A\n    command: [\"true\"]\n",
    );
}

/// The issue's test: two tasks of one role at once, each committing on its own branch in its
/// own worktree; the main checkout is untouched and the enqueues land in its inbox.
#[test]
fn two_tasks_at_once_commit_on_their_own_branches() {
    let ws = Ws::new();
    committing_role(&ws, 2, 2, "isolation: worktree\n");
    commit_all(&ws);
    let head = git(&ws, ".", &["rev-parse", "HEAD"]);
    ws.run(&["enqueue", "dev", "--name", "t1", "--text", "a"])
        .ok();
    ws.run(&["enqueue", "dev", "--name", "t2", "--text", "b"])
        .ok();
    let run = work(&ws);
    run.ok().stderr_has("2 processed, 0 failed");

    // Both ran at once (each waited for the other), each in its own worktree.
    let pwd1 = ws.read("barrier/t1");
    let pwd2 = ws.read("barrier/t2");
    assert_eq!(
        pwd1.trim(),
        ws.join(".orchestrate/worktrees/dev/t1")
            .display()
            .to_string()
    );
    assert_eq!(
        pwd2.trim(),
        ws.join(".orchestrate/worktrees/dev/t2")
            .display()
            .to_string()
    );
    for id in ["t1", "t2"] {
        let branch = format!("orchestrate/dev/{id}");
        assert_eq!(
            git(&ws, ".", &["log", "-1", "--format=%s", &branch]),
            format!("work of {id}")
        );
        assert_eq!(
            git(&ws, ".", &["rev-parse", &format!("{branch}~1")]),
            head,
            "{branch} starts from the main checkout's HEAD"
        );
        let files = git(&ws, ".", &["ls-tree", "--name-only", &branch]);
        assert!(files.contains(&format!("work-{id}.txt")), "{files}");
        let other = if id == "t1" { "t2" } else { "t1" };
        assert!(!files.contains(&format!("work-{other}.txt")), "{files}");
        // Succeeded: the worktree is gone, the branch is the result; status.json says so.
        let status = status(&ws, "processed", "dev", id);
        assert_eq!(status["worktree"]["branch"], branch.as_str());
        assert_eq!(
            status["worktree"]["path"],
            format!(".orchestrate/worktrees/dev/{id}")
        );
        assert_eq!(status["worktree"]["kept"], false);
        assert!(!ws.exists(&format!(".orchestrate/worktrees/dev/{id}")));
    }
    // The main checkout did not move and has nothing of the tasks' work.
    assert_eq!(git(&ws, ".", &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&ws, ".", &["status", "--porcelain"]), "");
    assert!(!ws.exists("work-t1.txt") && !ws.exists("work-t2.txt"));
    assert_eq!(git(&ws, ".", &["worktree", "list"]).lines().count(), 1);
    // Worktrees inside the checkout are excluded from it, .gitignore or not.
    assert!(
        ws.read(".git/info/exclude")
            .contains("\n/.orchestrate/worktrees/\n")
    );
    // The enqueues landed in the main workspace's inbox, naming the worktree they came from.
    let handed = queued(&ws, "qa");
    assert_eq!(handed.len(), 2, "{handed:?}");
    let texts: Vec<String> = handed
        .iter()
        .map(|n| ws.read(&format!("inbox/qa/{n}")))
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains(".orchestrate/worktrees/dev/t1")),
        "{texts:?}"
    );
    assert!(!ws.exists(".orchestrate/worktrees/dev/t1/inbox"));
}

/// Concurrency 4, 8 tasks started at once: creation is serialized, none fails on git's locks.
#[test]
fn many_tasks_started_at_once_do_not_race() {
    let ws = Ws::new();
    // The first four wait for each other: their worktrees are made while all four run.
    committing_role(&ws, 4, 4, "isolation: worktree\n");
    commit_all(&ws);
    // One id git would refuse in a branch name as it is.
    let ids: Vec<String> = (0..7)
        .map(|i| format!("m{i}"))
        .chain(["m..7.lock".to_string()])
        .collect();
    for id in &ids {
        enqueue(&ws, id);
    }
    let run = run_within(&ws, &["agent", "dev", "--once"], Duration::from_secs(120));
    run.ok().stderr_has("8 processed, 0 failed");
    let names = branches(&ws);
    for id in &ids {
        let branch = match id.as_str() {
            "m..7.lock" => "orchestrate/dev/m.7-lock".to_string(),
            other => format!("orchestrate/dev/{other}"),
        };
        assert!(names.contains(&branch), "{names:?}");
        assert_eq!(
            git(&ws, ".", &["log", "-1", "--format=%s", &branch]),
            format!("work of {id}")
        );
    }
    assert_eq!(git(&ws, ".", &["worktree", "list"]).lines().count(), 1);
}

/// A failed task keeps its worktree (status.json names it); its retry continues there, on the
/// same branch, with what the first attempt left.
#[test]
fn a_failed_task_keeps_its_worktree_and_its_retry_continues_in_it() {
    let ws = Ws::new();
    ws.script(
        "step.sh",
        "#!/bin/sh\nif [ -f notes.txt ]; then echo second >> notes.txt; git add notes.txt; git commit -q -m done; exit 0; fi\necho first > notes.txt\nexit 3\n",
    );
    role(
        &ws,
        "dev",
        "isolation: worktree\n",
        "steps:\n  - name: Step\n    command: [\"./step.sh\"]\n",
    );
    commit_all(&ws);
    enqueue(&ws, "f1");
    work(&ws).ok().stderr_has("0 processed, 1 failed");
    let status = status(&ws, "failed", "dev", "f1");
    assert_eq!(status["worktree"]["path"], ".orchestrate/worktrees/dev/f1");
    assert_eq!(status["worktree"]["branch"], "orchestrate/dev/f1");
    assert_eq!(status["worktree"]["kept"], true);
    assert_eq!(
        ws.read(".orchestrate/worktrees/dev/f1/notes.txt"),
        "first\n"
    );
    ws.run(&["show", "f1"])
        .ok()
        .stdout_has("worktree: .orchestrate/worktrees/dev/f1 (branch orchestrate/dev/f1)");

    ws.run(&["retry", "f1"]).ok();
    work(&ws).ok().stderr_has("1 processed, 0 failed");
    assert_eq!(
        git(&ws, ".", &["show", "orchestrate/dev/f1:notes.txt"]),
        "first\nsecond"
    );
    assert!(!ws.exists(".orchestrate/worktrees/dev/f1"));
}

/// After a success the worktree goes; the branch stays when it holds commits, and goes when
/// the task committed nothing. Uncommitted changes are never thrown away.
#[test]
fn success_removes_the_worktree_and_keeps_only_branches_with_work() {
    let ws = Ws::new();
    ws.script(
        "step.sh",
        "#!/bin/sh\ncase \"$1\" in\n  work) echo x > w.txt; git add w.txt; git commit -q -m w;;\n  dirty) echo x > left.txt;;\nesac\n",
    );
    role(
        &ws,
        "dev",
        "isolation: worktree\n",
        "steps:\n  - name: Step\n    command: [\"./step.sh\", \"${task.id}\"]\n    output_file: out.txt\n",
    );
    // The step's output file is not part of the work.
    ws.file(".gitignore", "/out.txt\n");
    commit_all(&ws);
    for id in ["work", "nothing", "dirty"] {
        enqueue(&ws, id);
    }
    work(&ws).ok().stderr_has("3 processed, 0 failed");
    let names = branches(&ws);
    assert!(
        names.contains(&"orchestrate/dev/work".to_string()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"orchestrate/dev/nothing".to_string()),
        "{names:?}"
    );
    assert!(!ws.exists(".orchestrate/worktrees/dev/work"));
    assert!(!ws.exists(".orchestrate/worktrees/dev/nothing"));
    // `output_file` resolved in the worktree, not in the main checkout.
    assert!(!ws.exists("out.txt"));
    assert!(ws.exists(".orchestrate/worktrees/dev/dirty/out.txt"));
    // A success that left uncommitted files keeps them, and says so.
    assert_eq!(ws.read(".orchestrate/worktrees/dev/dirty/left.txt"), "x\n");
    let status = status(&ws, "processed", "dev", "dirty");
    assert_eq!(status["worktree"]["kept"], true);
    // Records name files where they are from the workspace.
    assert_eq!(
        status["outputs"],
        serde_json::json!([".orchestrate/worktrees/dev/dirty/out.txt"])
    );
}

/// A workflow's `isolation` with `keep`, `base` and a branch template; the role's fields win.
#[test]
fn keep_base_and_branch_come_from_the_workflow_and_the_role() {
    let ws = Ws::new();
    ws.script(
        "step.sh",
        "#!/bin/sh\necho y > y.txt; git add y.txt; git commit -q -m y\n",
    );
    role(
        &ws,
        "dev",
        "isolation:\n  worktree:\n    keep: true\n",
        "isolation:\n  worktree:\n    base: feature\n    keep: false\n    branch: \"wt/{workflow}/{task}\"\nsteps:\n  - name: Step\n    command: [\"./step.sh\"]\n",
    );
    commit_all(&ws);
    git(&ws, ".", &["branch", "feature"]);
    git(&ws, ".", &["checkout", "-q", "feature"]);
    ws.file("feature.txt", "f\n");
    git(&ws, ".", &["add", "feature.txt"]);
    git(&ws, ".", &["commit", "-q", "-m", "feature"]);
    let feature = git(&ws, ".", &["rev-parse", "HEAD"]);
    git(&ws, ".", &["checkout", "-q", "main"]);
    enqueue(&ws, "k1");
    work(&ws).ok().stderr_has("1 processed");
    assert_eq!(git(&ws, ".", &["rev-parse", "wt/dev/k1~1"]), feature);
    // keep: true (the role's) kept it after the success.
    assert!(ws.exists(".orchestrate/worktrees/dev/k1/feature.txt"));
    let status = status(&ws, "processed", "dev", "k1");
    assert_eq!(status["worktree"]["kept"], true);
    assert_eq!(status["worktree"]["base"], "feature");
}

/// Not a git repository, or a base that does not exist: the task fails with what to do.
#[test]
fn a_workspace_without_git_or_a_missing_base_fails_the_task_clearly() {
    let ws = Ws::new();
    role(
        &ws,
        "dev",
        "isolation: worktree\n",
        "steps:\n  - name: Step\n    command: [\"touch\", \"ran\"]\n",
    );
    enqueue(&ws, "n1");
    work(&ws).ok().stderr_has("1 failed");
    let message = failed_message(&ws, "n1");
    assert!(
        message.contains("task `n1` (role `dev`)")
            && message.contains("is not in a git repository")
            && message.contains("git init")
            && message.contains("agents/dev.yaml:2"),
        "{message}"
    );
    assert!(!ws.exists("ran"));

    role(
        &ws,
        "dev",
        "isolation: {worktree: {base: nope}}\n",
        "steps:\n  - name: Step\n    command: [\"touch\", \"ran\"]\n",
    );
    commit_all(&ws);
    enqueue(&ws, "n2");
    work(&ws).ok().stderr_has("1 failed");
    let message = failed_message(&ws, "n2");
    assert!(
        message.contains("the base `nope`") && message.contains("isolation.worktree.base"),
        "{message}"
    );
}

/// `gc` removes the worktrees of finished tasks (failed ones once old enough, dirty ones only
/// with --force), never a running task's, and leaves the user's branches alone.
#[test]
fn gc_removes_stale_worktrees_and_not_a_running_one() {
    let ws = Ws::new();
    let go = ws.join("go");
    ws.script(
        "step.sh",
        &format!(
            "#!/bin/sh\ncase \"$1\" in\n  done1) echo d > d.txt; git add d.txt; git commit -q -m d;;\n  fail1) echo f > f.txt; exit 1;;\n  run1) touch started; i=0; while [ ! -f {go} ]; do i=$((i+1)); [ $i -lt 1200 ] || exit 1; sleep 0.05; done;;\nesac\n",
            go = go.display()
        ),
    );
    role(
        &ws,
        "dev",
        "concurrency: 3\nisolation: {worktree: {keep: true}}\n",
        "steps:\n  - name: Step\n    command: [\"./step.sh\", \"${task.id}\"]\n",
    );
    commit_all(&ws);
    git(&ws, ".", &["branch", "mine"]);
    for id in ["done1", "fail1", "run1"] {
        enqueue(&ws, id);
    }
    let mut agent = ws
        .cmd(&["agent", "dev", "--once", "--quiet"])
        .spawn()
        .expect("start the role");
    wait_until(
        "done1 and fail1 to finish and run1 to start",
        Duration::from_secs(60),
        || {
            entries(&ws, "processed")
                .iter()
                .any(|n| n.ends_with("_done1"))
                && entries(&ws, "failed").iter().any(|n| n.ends_with("_fail1"))
                && ws.exists(".orchestrate/worktrees/dev/run1/started")
        },
    );

    let dry = ws.run(&["gc", "--dry-run"]);
    dry.ok()
        .stdout_has("would remove .orchestrate/worktrees/dev/done1")
        .stdout_has("kept .orchestrate/worktrees/dev/fail1")
        .stdout_has("failed less than 7d ago")
        .stdout_has("kept .orchestrate/worktrees/dev/run1")
        .stdout_has("the task is running");
    assert!(ws.exists(".orchestrate/worktrees/dev/done1"));

    // fail1 is old enough now, but has uncommitted changes: kept without --force, which is
    // no error, and a dry run says the same as the real one.
    let dry = ws.run(&["gc", "--older-than", "0s", "--dry-run"]);
    dry.ok()
        .stdout_has("would remove .orchestrate/worktrees/dev/done1")
        .stdout_has("kept .orchestrate/worktrees/dev/fail1 (task `fail1` of role `dev`): the task failed more than 0s ago, but it has uncommitted changes (1 file(s))")
        .stdout_has("1 worktree(s) would be removed, 2 kept");
    let gc = ws.run(&["gc", "--older-than", "0s"]);
    gc.ok()
        .stdout_has("removed worktree .orchestrate/worktrees/dev/done1")
        .stdout_has("kept .orchestrate/worktrees/dev/fail1 (task `fail1` of role `dev`): the task failed more than 0s ago, but it has uncommitted changes (1 file(s))")
        .stdout_has("1 worktree(s) removed, 2 kept");
    assert!(!gc.stderr.contains("could not be removed"), "{}", gc.stderr);
    assert!(!ws.exists(".orchestrate/worktrees/dev/done1"));
    assert!(ws.exists(".orchestrate/worktrees/dev/fail1/f.txt"));
    let gc = ws.run(&["gc", "--older-than", "0s", "--force"]);
    gc.ok()
        .stdout_has("removed worktree .orchestrate/worktrees/dev/fail1")
        .stdout_has("kept .orchestrate/worktrees/dev/run1");
    assert!(!ws.exists(".orchestrate/worktrees/dev/fail1"));
    // fail1 committed nothing: its branch went with it; done1's keeps the work; run1 untouched.
    let names = branches(&ws);
    assert!(
        names.contains(&"orchestrate/dev/done1".to_string()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"orchestrate/dev/fail1".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"mine".to_string()), "{names:?}");
    assert!(ws.exists(".orchestrate/worktrees/dev/run1/started"));

    std::fs::write(&go, "").unwrap();
    let status = agent.wait().expect("wait for the role");
    assert!(status.success());
    assert!(ws.exists(".orchestrate/worktrees/dev/run1"), "keep: true");
    ws.run(&["gc", "--force"])
        .ok()
        .stdout_has("removed worktree .orchestrate/worktrees/dev/run1");
    assert_eq!(git(&ws, ".", &["worktree", "list"]).lines().count(), 1);
}

/// `orchestrate run` of an isolated workflow: a run-id branch; a failed run keeps its worktree
/// and `resume` continues there; the success removes it and keeps the branch.
#[test]
fn a_standalone_run_works_in_its_own_worktree_and_resumes_there() {
    let ws = Ws::new();
    let go = ws.join("go");
    ws.workflow(&format!(
        "isolation: worktree\nsteps:\n  - name: Commit\n    command: [\"sh\", \"-c\", \"echo c >> c.txt && git add c.txt && git commit -q -m c\"]\n  - name: Gate\n    command: [\"test\", \"-f\", \"{}\"]\n",
        go.display()
    ));
    commit_all(&ws);
    let run = ws.run(&["run", "wf.yaml"]);
    run.code(1);
    let id = run.id().to_string();
    let branch = format!("orchestrate/run/{id}");
    let path = format!(".orchestrate/worktrees/_runs/{id}");
    assert!(ws.exists(&format!("{path}/c.txt")), "{}", run.stderr);
    assert!(branches(&ws).contains(&branch));
    ws.run(&["status", &id]).ok().stdout_has(&format!(
        "steps work in the worktree {}",
        ws.join(&path).display()
    ));
    ws.run(&["gc"])
        .ok()
        .stdout_has("the run ended less than 7d ago and may be resumed");
    std::fs::write(&go, "").unwrap();
    ws.run(&["resume", &id]).ok();
    assert!(!ws.exists(&path));
    // Commit ran once: resume continued in the same worktree, on the same branch.
    assert_eq!(git(&ws, ".", &["show", &format!("{branch}:c.txt")]), "c");
    assert_eq!(git(&ws, ".", &["status", "--porcelain"]), "");
}

/// The readonly check looks at the worktree the agent ran in: a readonly agent that writes
/// there fails the step, and the main checkout never saw the file.
#[test]
fn a_readonly_agent_is_checked_in_its_worktree() {
    let mut ws = Ws::new();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/runtimes/claude.stream-json.tool-success.jsonl");
    ws.script(
        "bin/claude",
        &format!(
            "#!/bin/sh\ncat > /dev/null\necho sneaky > stray.txt\ncat '{}'\n",
            fixture.display()
        ),
    );
    ws.with_bin_path();
    ws.workflow(
        "isolation: worktree\nsteps:\n  - name: Ask\n    runtime: claude\n    prompt: \"hello\"\n    phase: readonly\n    retry: {max_attempts: 1}\n",
    );
    ws.file(".gitignore", "/bin/\n");
    commit_all(&ws);
    let run = ws.run(&["run", "wf.yaml"]);
    run.code(1);
    let ask = run.step("Ask");
    assert_eq!(ask["error"]["kind"], "phase_violation", "{ask:#}");
    let changed = ask["changed_files"].as_array().expect("changed_files");
    assert!(
        changed.iter().any(|c| c["path"] == "stray.txt"),
        "{changed:?}"
    );
    assert!(!ws.exists("stray.txt"));
    assert!(ws.exists(&format!(
        ".orchestrate/worktrees/_runs/{}/stray.txt",
        run.id()
    )));
}

/// Two role processes (replicas) of one repository create worktrees at the same time: the lock
/// in the repository's git directory serializes them across processes.
#[test]
fn two_replicas_create_worktrees_at_once() {
    let ws = Ws::new();
    committing_role(&ws, 2, 1, "isolation: worktree\n");
    commit_all(&ws);
    for i in 0..6 {
        enqueue(&ws, &format!("r{i}"));
    }
    let mut replicas: Vec<std::process::Child> = (0..2)
        .map(|n| {
            ws.cmd(&[
                "agent",
                "dev",
                "--once",
                "--quiet",
                "--replica",
                &n.to_string(),
            ])
            .spawn()
            .expect("start a replica")
        })
        .collect();
    for child in &mut replicas {
        assert!(child.wait().expect("wait for a replica").success());
    }
    let processed = entries(&ws, "processed");
    assert_eq!(
        processed.len(),
        6,
        "{processed:?} failed: {:?}",
        entries(&ws, "failed")
    );
    let names = branches(&ws);
    for i in 0..6 {
        assert!(
            names.contains(&format!("orchestrate/dev/r{i}")),
            "{names:?}"
        );
    }
    assert_eq!(git(&ws, ".", &["worktree", "list"]).lines().count(), 1);
}

/// Creation waits for the repository's worktree lock (held here by another process), and is
/// retried while git reports one of its own lock files taken (the new branch's ref lock, left
/// for a moment by "another git").
#[test]
fn creation_waits_for_the_lock_and_retries_on_git_s_lock_files() {
    let ws = Ws::new();
    let released = ws.join("released");
    role(
        &ws,
        "dev",
        "isolation: worktree\n",
        &format!(
            "steps:\n  - name: Step\n    command: [\"test\", \"-f\", \"{}\"]\n",
            released.display()
        ),
    );
    ws.file(".gitignore", "/released\n");
    commit_all(&ws);
    // Another orchestrate process holds the lock; it marks its release just before letting go.
    std::fs::create_dir_all(ws.join(".orchestrate")).unwrap();
    let mut holder = Command::new("flock")
        .arg(ws.join(".git/orchestrate-worktrees.lock"))
        .args(["sh", "-c", "touch held; sleep 2; touch released"])
        .current_dir(ws.path())
        .spawn()
        .expect("flock");
    wait_until(
        "the holder to hold the lock",
        Duration::from_secs(10),
        || ws.exists("held"),
    );
    enqueue(&ws, "w1");
    work(&ws).ok().stderr_has("1 processed");
    assert!(holder.wait().unwrap().success());

    // git's own lock on the ref the task's branch will be: taken, then let go.
    std::fs::create_dir_all(ws.join(".git/refs/heads/orchestrate/dev")).unwrap();
    let ref_lock = ws.join(".git/refs/heads/orchestrate/dev/w2.lock");
    std::fs::write(&ref_lock, "").unwrap();
    enqueue(&ws, "w2");
    let agent = ws
        .cmd(&["agent", "dev", "--once"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the role");
    // Claimed: its first `git worktree add` fails on the lock file soon after.
    wait_until("w2 to be claimed", Duration::from_secs(20), || {
        ws.exists("running/dev/w2")
    });
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&ref_lock).unwrap();
    let out = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 processed"), "{stderr}");
    let status = status(&ws, "processed", "dev", "w2");
    assert_eq!(status["worktree"]["branch"], "orchestrate/dev/w2");
}

/// A worker killed in the middle of a task: the next attempt continues in the same worktree.
/// A worktree whose making never finished (no record) is made again, not trusted.
#[test]
fn after_a_crash_the_next_attempt_continues_and_a_half_made_worktree_is_redone() {
    let ws = Ws::new();
    ws.script(
        "step.sh",
        "#!/bin/sh\nif [ -f mark ]; then git add mark; git commit -q -m after-crash; exit 0; fi\ntouch mark\nkill -9 $PPID\nexit 1\n",
    );
    role(
        &ws,
        "dev",
        "isolation: worktree\n",
        "steps:\n  - name: Step\n    command: [\"./step.sh\"]\n",
    );
    commit_all(&ws);
    enqueue(&ws, "c1");
    let killed = work(&ws);
    assert_ne!(killed.code, 0, "{}", killed.stderr);
    assert!(ws.exists(".orchestrate/worktrees/dev/c1/mark"));
    work(&ws).ok().stderr_has("1 processed");
    let status = status(&ws, "processed", "dev", "c1");
    assert_eq!(status["attempt"], 2);
    assert_eq!(
        git(
            &ws,
            ".",
            &["log", "-1", "--format=%s", "orchestrate/dev/c1"]
        ),
        "after-crash"
    );

    // A worktree at the task's place, on its branch, that orchestrate never recorded.
    git(&ws, ".", &["branch", "orchestrate/dev/c2"]);
    git(
        &ws,
        ".",
        &[
            "worktree",
            "add",
            ".orchestrate/worktrees/dev/c2",
            "orchestrate/dev/c2",
        ],
    );
    ws.file(".orchestrate/worktrees/dev/c2/mark", "half-made\n");
    enqueue(&ws, "c2");
    let killed = work(&ws);
    assert_ne!(
        killed.code, 0,
        "the step found the leftover file instead of a fresh checkout: {}",
        killed.stderr
    );
}
