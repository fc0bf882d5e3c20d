//! The swarm on PostgreSQL: several "machines" (workspaces with the same roles, each its own
//! `ORCHESTRATE_MACHINE`) sharing one private database that the suite starts itself. Role
//! processes take in the files dropped into their own inbox, claim from the database, keep
//! their records in their own `processed/` and `failed/`, and a lost lease stops an attempt.

#[allow(unused_imports)]
use crate::harness::*;
use crate::postgres::{PgServer, migrate, server, text};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A role whose step appends `<task id> <machine>` to `log` (outside every workspace: one log for
/// the whole cluster) and sleeps `sleep` seconds first. At its start it notes its pid beside the
/// log and appends `OVERLAP <id>` should an earlier attempt's step of the task still be alive.
fn recording_role(ws: &Ws, log: &Path, sleep: &str, settings: &str) {
    let pids = log.with_extension("pids");
    std::fs::create_dir_all(&pids).unwrap();
    role(
        ws,
        "w",
        settings,
        &format!(
            r#"
steps:
  - name: Record
    command:
      - bash
      - -c
      - 'for f in {pids}/$1.*; do [ -e "$f" ] || continue; st=$(cut -d" " -f3 /proc/$(cat "$f")/stat 2>/dev/null); if [ -n "$st" ] && [ "$st" != Z ]; then echo "OVERLAP $1" >> {log}; fi; done; echo $$ > {pids}/$1.$ORCHESTRATE_MACHINE.$$; sleep {sleep}; echo "$1 $ORCHESTRATE_MACHINE" >> {log}'
      - record
      - ${{task.id}}
"#,
            log = log.display(),
            pids = pids.display()
        ),
    );
}

/// A machine: a workspace whose commands name `url` as the queue and `name` as the machine.
fn machine(url: &str, name: &str) -> Ws {
    let mut ws = Ws::new();
    ws.env("ORCHESTRATE_QUEUE_URL", url)
        .env("ORCHESTRATE_MACHINE", name);
    ws
}

/// How many times each task ran, from the cluster's log.
fn runs(log: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let mut parts = line.split_whitespace();
        if let (Some(id), Some(machine)) = (parts.next(), parts.next()) {
            assert_ne!(id, "OVERLAP", "two attempts of `{machine}` ran at once");
            out.entry(id.to_string())
                .or_default()
                .push(machine.to_string());
        }
    }
    out
}

/// The `processed/` records of a workspace, by task id.
fn processed(ws: &Ws) -> Vec<String> {
    let mut ids: Vec<String> = entries(ws, "processed")
        .iter()
        .filter_map(|name| name.split_once("_w_").map(|(_, id)| id.to_string()))
        .collect();
    ids.sort();
    ids
}

fn shared_log() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("cluster.log");
    (dir, log)
}

fn migrated(pg: &PgServer) -> Ws {
    let ws = Ws::new();
    let out = migrate(&ws, &pg.url());
    assert!(out.status.success(), "{}", text(&out.stderr));
    ws
}

#[test]
fn two_machines_drain_one_database_and_each_task_runs_once_where_it_was_claimed() {
    let Some(pg) = server() else { return };
    migrated(&pg);
    let (_dir, log) = shared_log();
    let a = machine(&pg.url(), "alpha");
    let b = machine(&pg.url(), "beta");
    recording_role(&a, &log, "0", "concurrency: 2\n");
    recording_role(&b, &log, "0", "concurrency: 2\n");
    // Queued from machine alpha straight into the database, and dropped by hand into beta's
    // inbox while no role process runs: both kinds are tasks of the cluster.
    for i in 0..20 {
        let name = format!("e{i:02}");
        let out = a
            .cmd(&["enqueue", "w", "--name", &name, "--text", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    assert!(queued(&a, "w").is_empty(), "enqueue wrote rows, not files");
    for i in 0..20 {
        b.file(&format!("inbox/w/d{i:02}.task"), "dropped");
    }
    let mut agents_a = Agents::new(&a);
    let mut agents_b = Agents::new(&b);
    agents_a.start(&a, "w", &["--once"]);
    agents_b.start(&b, "w", &["--once"]);
    let (sa, sb) = (
        agents_a.wait(0, patient(Duration::from_secs(60))),
        agents_b.wait(0, patient(Duration::from_secs(60))),
    );
    assert!(
        sa.success() && sb.success(),
        "{}\n{}",
        agents_a.logs(),
        agents_b.logs()
    );
    let ran = runs(&log);
    assert_eq!(ran.len(), 40, "every task ran: {ran:?}");
    for (id, machines) in &ran {
        assert_eq!(machines.len(), 1, "`{id}` ran once: {machines:?}");
    }
    // Each machine holds the records of what it ran, and only those.
    let (pa, pb) = (processed(&a), processed(&b));
    assert_eq!(pa.len() + pb.len(), 40, "alpha {pa:?}, beta {pb:?}");
    for id in &pa {
        assert_eq!(ran[id], vec!["alpha".to_string()], "{id}");
    }
    for id in &pb {
        assert_eq!(ran[id], vec!["beta".to_string()], "{id}");
    }
    assert!(queued(&b, "w").is_empty(), "beta's inbox was taken in");
    let counts = pg.psql("SELECT state, count(*) FROM orchestrate_tasks GROUP BY state");
    assert_eq!(counts, "processed|40");
    let status = pg
        .psql("SELECT status->>'task', status->>'success' FROM orchestrate_tasks WHERE id = 'd05'");
    assert_eq!(status, "d05|true");
}

#[test]
fn a_role_with_machine_labels_runs_only_where_they_are_and_is_taken_in_everywhere() {
    let Some(pg) = server() else { return };
    migrated(&pg);
    let (_dir, log) = shared_log();
    let gpu = machine(&pg.url(), "gpu-box");
    let laptop = machine(&pg.url(), "laptop");
    gpu.file("swarm.yaml", "machine_labels: [gpu, big]\n");
    recording_role(&gpu, &log, "0", "machines: [gpu]\n");
    recording_role(&laptop, &log, "0", "machines: [gpu]\n");
    for i in 0..10 {
        laptop.file(&format!("inbox/w/t{i}.task"), "dropped on the laptop");
    }
    // The laptop takes its dropped files into the queue and runs none of them.
    let out = laptop.cmd(&["agent", "w", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not running `w` tasks here")
            && text(&out.stderr).contains("machine label(s) gpu")
            && text(&out.stderr).contains("this machine has no labels"),
        "{}",
        text(&out.stderr)
    );
    assert!(queued(&laptop, "w").is_empty(), "taken in");
    assert!(processed(&laptop).is_empty());
    assert_eq!(
        pg.psql("SELECT state, count(*) FROM orchestrate_tasks GROUP BY state"),
        "queued|10"
    );
    // The environment (as `swarm up --labels` sets it) overrides swarm.yaml: no labels, no runs.
    let out = gpu
        .cmd(&["agent", "w", "--once"])
        .env("ORCHESTRATE_MACHINE_LABELS", "big")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("this machine has labels big"),
        "{}",
        text(&out.stderr)
    );
    assert!(processed(&gpu).is_empty());
    // The machine with the label runs them all.
    let out = gpu.cmd(&["agent", "w", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(processed(&gpu).len(), 10, "{}", text(&out.stderr));
    assert!(
        runs(&log)
            .values()
            .all(|m| m == &vec!["gpu-box".to_string()])
    );
    // A label that is not one is refused before anything starts.
    let out = gpu
        .cmd(&["swarm", "up", "--labels", "gpu,no way"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("`no way` (--labels) is not a valid machine label"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn without_a_database_a_role_this_machine_lacks_the_labels_for_leaves_its_tasks_queued() {
    let ws = Ws::new();
    role(
        &ws,
        "w",
        "machines: [gpu]\n",
        "steps:\n  - name: S\n    command: [\"true\"]\n",
    );
    ws.file("inbox/w/t.task", "x");
    let out = ws.cmd(&["agent", "w", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("its tasks wait in the inbox"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(queued(&ws, "w"), vec!["t.task".to_string()]);
    // `--labels`-style environment with the label: it runs.
    let out = ws
        .cmd(&["agent", "w", "--once"])
        .env("ORCHESTRATE_MACHINE_LABELS", "gpu")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(queued(&ws, "w").is_empty());
    assert_eq!(entries(&ws, "processed").len(), 1);
}

#[test]
fn hand_offs_are_rows_for_any_machine_and_a_spooled_task_keeps_its_correlation_id() {
    let Some(pg) = server() else { return };
    migrated(&pg);
    let a = machine(&pg.url(), "alpha");
    let b = machine(&pg.url(), "beta");
    for ws in [&a, &b] {
        role(
            ws,
            "first",
            "",
            "steps:\n  - name: Hand\n    enqueue:\n      role: second\n      name: ${task.id}-next\n      text: from ${task.id}\n",
        );
        role(
            ws,
            "second",
            "",
            "steps:\n  - name: Take\n    command: [echo, \"${task.text}\"]\n",
        );
    }
    // Spooled: enqueued while the database cannot be reached (a port nobody listens on), with
    // a correlation id of its own.
    let nowhere = "postgres://orchestrate@127.0.0.1:9/orchestrate?connect_timeout=2";
    let out = a
        .cmd(&[
            "enqueue",
            "first",
            "--name",
            "t1",
            "--text",
            "go",
            "--correlation-id",
            "chain-7",
        ])
        .env("ORCHESTRATE_QUEUE_URL", nowhere)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("spooled into"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(queued(&a, "first"), vec!["t1.task".to_string()]);
    // Alpha runs `first` only: its hand-off becomes a row, not a file in alpha's inbox.
    let out = a.cmd(&["agent", "first", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(queued(&a, "second").is_empty(), "no file in alpha's inbox");
    assert_eq!(
        pg.psql("SELECT id, correlation_id, state FROM orchestrate_tasks WHERE role = 'second'"),
        "t1-next|chain-7|queued"
    );
    assert_eq!(
        pg.psql("SELECT correlation_id FROM orchestrate_tasks WHERE role = 'first'"),
        "chain-7"
    );
    // Beta, which never saw the first task, runs the second.
    let out = b.cmd(&["agent", "second", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let done = entries(&b, "processed");
    assert_eq!(done.len(), 1, "{done:?}");
    let status = json_file(&b, &format!("processed/{}/status.json", done[0]));
    assert_eq!(status["correlation_id"], "chain-7", "{status}");
    assert_eq!(status["task"], "t1-next", "{status}");
    // Traced from alpha: its own record, and beta's through the database.
    let out = a.cmd(&["trace", "chain-7"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let traced = text(&out.stdout);
    assert!(
        traced.contains("t1") && traced.contains("t1-next") && traced.contains("(on machine beta)"),
        "{traced}"
    );
}

/// `git ARGS` in `dir`, which must succeed; its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

#[test]
fn a_branch_pushed_by_one_machine_is_where_the_next_role_starts_on_another() {
    let Some(pg) = server() else { return };
    migrated(&pg);
    let remote = tempfile::tempdir().unwrap();
    git(remote.path(), &["init", "-q", "--bare", "-b", "main"]);
    let url = remote.path().display().to_string();
    let mut a = machine(&pg.url(), "alpha");
    let mut b = machine(&pg.url(), "beta");
    for ws in [&mut a, &mut b] {
        ws.env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com");
        git(ws.path(), &["init", "-q", "-b", "main"]);
        git(ws.path(), &["remote", "add", "origin", &url]);
    }
    a.file("README", "shared\n");
    git(a.path(), &["add", "README"]);
    git(a.path(), &["commit", "-qm", "init"]);
    git(a.path(), &["push", "-q", "origin", "main"]);
    git(b.path(), &["fetch", "-q", "origin"]);
    git(b.path(), &["checkout", "-q", "-b", "main", "origin/main"]);
    // The remote already has a `t2` branch of its own: pushing over it would lose a commit.
    git(
        a.path(),
        &["push", "-q", "origin", "main:refs/heads/orchestrate/dev/t2"],
    );
    a.file("other", "x");
    git(a.path(), &["add", "other"]);
    git(a.path(), &["commit", "-qm", "elsewhere"]);
    git(
        a.path(),
        &[
            "push",
            "-q",
            "origin",
            "HEAD:refs/heads/orchestrate/dev/t2",
            "--force",
        ],
    );
    git(a.path(), &["reset", "-q", "--hard", "HEAD~1"]);
    for ws in [&a, &b] {
        role(
            ws,
            "dev",
            "",
            "isolation:\n  worktree:\n    remote: origin\nsteps:\n  - name: Work\n    command: [bash, -c, \"echo from-dev > dev.txt && git add dev.txt && git commit -qm dev\"]\n  - name: Hand\n    enqueue:\n      role: review\n      name: ${task.id}-review\n      json: {branch: \"${run.branch}\"}\n",
        );
        role(
            ws,
            "review",
            "",
            "isolation:\n  worktree:\n    remote: origin\nsteps:\n  - name: Check\n    command: [bash, -c, \"test \\\"$(cat dev.txt)\\\" = from-dev && echo ok > review.txt && git add review.txt && git commit -qm review\"]\n",
        );
    }
    for name in ["t1", "t2"] {
        let out = a
            .cmd(&["enqueue", "dev", "--name", name, "--text", "go"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = a.cmd(&["agent", "dev", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // t2's push is refused (never forced): failed, its worktree kept, the remote unchanged.
    let failed = entries(&a, "failed");
    assert_eq!(failed.len(), 1, "{failed:?}\n{}", text(&out.stderr));
    let record = json_file(&a, &format!("failed/{}/status.json", failed[0]));
    assert!(
        record["message"]
            .as_str()
            .unwrap_or_default()
            .contains("never forced"),
        "{record}"
    );
    assert_eq!(
        git(remote.path(), &["log", "--format=%s", "orchestrate/dev/t2"]),
        "elsewhere\ninit"
    );
    // Beta, which never had t1's branch, starts `review` from it, fetched from the remote.
    let out = b.cmd(&["agent", "review", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(entries(&b, "processed").len(), 1, "{}", text(&out.stderr));
    assert_eq!(
        git(
            remote.path(),
            &["log", "--format=%s", "orchestrate/review/t1-review"]
        ),
        "review\ndev\ninit"
    );
}

#[test]
fn pause_cancel_tasks_show_and_status_reach_every_machine_through_the_database() {
    let Some(pg) = server() else { return };
    migrated(&pg);
    let a = machine(&pg.url(), "alpha");
    let b = machine(&pg.url(), "beta");
    for ws in [&a, &b] {
        role(
            ws,
            "w",
            "",
            "steps:\n  - name: Long\n    command: [sleep, \"60\"]\n",
        );
    }
    let ok = |ws: &Ws, args: &[&str]| {
        let out = ws.cmd(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout) + &text(&out.stderr)
    };
    // Paused from alpha: beta's role process follows (its own pause file appears).
    assert!(ok(&a, &["pause", "w"]).contains("on every machine"));
    let mut agents = Agents::new(&b);
    agents.spawn(&b, "w", &[], &[]);
    wait_until("beta to mirror the pause", Duration::from_secs(30), || {
        b.join(".orchestrate/control/w/paused.json").exists()
    });
    ok(&a, &["enqueue", "w", "--name", "held", "--text", "x"]);
    ok(&a, &["enqueue", "w", "--name", "long", "--text", "x"]);
    // A queued task is cancelled from any machine, before it runs.
    let said = ok(&a, &["cancel", "held"]);
    assert!(said.contains("before it ran"), "{said}");
    let listed = ok(&a, &["tasks"]);
    assert!(
        listed.contains("MACHINE")
            && listed
                .lines()
                .any(|l| l.contains("long") && l.contains("queued")),
        "{listed}"
    );
    assert_eq!(
        pg.psql("SELECT state FROM orchestrate_tasks WHERE id IN ('held', 'long') ORDER BY id"),
        "failed\nqueued",
        "{}",
        agents.logs()
    );
    // Resumed from alpha: beta takes the task.
    assert!(ok(&a, &["resume", "w"]).contains("on every machine"));
    wait_until("beta to run `long`", Duration::from_secs(60), || {
        pg.psql(
            "SELECT state || ' ' || coalesce(machine, '') FROM orchestrate_tasks WHERE id = 'long'",
        ) == "running beta"
    });
    let status = ok(&a, &["swarm", "status"]);
    assert!(
        status.contains("cluster (the queue database)")
            && status
                .lines()
                .any(|l| l.contains("beta") && l.contains(" w ") && l.contains("tasks")),
        "{status}"
    );
    // Cancelled from alpha while it runs on beta: beta stops it, its record in beta's failed/.
    let said = ok(&a, &["cancel", "long", "--timeout", "60"]);
    assert!(
        said.contains("cancelled task `long`"),
        "{said}\n{}",
        agents.logs()
    );
    let failed = entries(&b, "failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    let record = json_file(&b, &format!("failed/{}/status.json", failed[0]));
    assert!(
        record["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cancel"),
        "{record}"
    );
    // `show` on alpha, which has no record of it, tells where it ran.
    let shown = ok(&a, &["show", "long"]);
    assert!(
        shown.contains("machine:     beta") && shown.contains("failed/ on machine beta"),
        "{shown}"
    );
    // Retried from alpha, which has no record of it: queued again from its row, and run.
    let said = ok(&a, &["retry", "long"]);
    assert!(said.contains("queued again"), "{said}");
    assert_eq!(
        pg.psql("SELECT state FROM orchestrate_tasks_history WHERE id = 'long'"),
        "failed"
    );
    wait_until("beta to run `long` again", Duration::from_secs(60), || {
        pg.psql("SELECT state || ' ' || attempt FROM orchestrate_tasks WHERE id = 'long'")
            == "running 1"
    });
}

#[test]
fn a_breaker_opened_on_one_machine_stops_claims_on_the_others() {
    let Some(pg) = server() else { return };
    migrated(&pg);
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/runtimes");
    let mut a = machine(&pg.url(), "alpha");
    let mut b = machine(&pg.url(), "beta");
    for ws in [&mut a, &mut b] {
        ws.with_bin_path();
        ws.script(
            "bin/claude",
            &format!(
                "#!/bin/sh\ncat > /dev/null\ncat \"{fixtures}/claude.stream-json.rate-limit-429.jsonl\"\nexit 1\n"
            ),
        );
        ws.file(
            "runtimes.yaml",
            "profiles:\n  fast: {runtime: claude, breaker: {failures: 1, cooldown_sec: 600}}\n",
        );
        role(
            ws,
            "coder",
            "runtime: fast\n",
            "name: coder\nsteps:\n  - name: Ask\n    prompt: \"do it\"\n    phase: write\n    retry: {max_attempts: 1}\n",
        );
    }
    let out = a
        .cmd(&["enqueue", "coder", "--name", "t1", "--text", "x"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Alpha's claude hits its rate limit: alpha's breaker opens, and goes to the database.
    let mut on_a = Agents::new(&a);
    on_a.spawn(&a, "coder", &[], &[]);
    wait_until(
        "alpha's breaker in the database",
        Duration::from_secs(60),
        || {
            pg.psql("SELECT count(*) FROM orchestrate_breakers WHERE runtime = 'fast' AND machine = 'alpha' AND state LIKE '%\"open\"%'")
            == "1"
        },
    );
    drop(on_a);
    // Beta never ran a task of it, yet follows it: its task waits.
    let mut on_b = Agents::new(&b);
    on_b.spawn(&b, "coder", &[], &[]);
    wait_until(
        "beta to take alpha's breaker",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(b.join(".orchestrate/breakers/fast.json"))
                .is_ok_and(|t| t.contains("\"open\""))
        },
    );
    let out = b
        .cmd(&["enqueue", "coder", "--name", "t2", "--text", "x"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until(
        "beta to say why it does not claim",
        Duration::from_secs(30),
        || on_b.logs().contains("not claiming: breaker open for fast"),
    );
    assert_eq!(
        pg.psql("SELECT state FROM orchestrate_tasks WHERE id = 't2'"),
        "queued"
    );
}

#[test]
fn the_daily_budget_counts_what_every_machine_spent() {
    let Some(pg) = server() else { return };
    migrated(&pg);
    let b = machine(&pg.url(), "beta");
    role(
        &b,
        "w",
        "",
        "steps:\n  - name: S\n    command: [\"true\"]\n",
    );
    b.file("swarm.yaml", "budget:\n  max_tokens_per_day: 1000\n");
    // Alpha's attempts spent 1,500 tokens today (as its role processes note them).
    pg.psql(
        "INSERT INTO orchestrate_spending (day, machine, run_id, role, task, attempt, tokens, cost_usd)
         VALUES ((now() AT TIME ZONE 'UTC')::date, 'alpha', 'r1', 'w', 't', 1, 1500, 0.5)",
    );
    let mut agents = Agents::new(&b);
    agents.spawn(&b, "w", &[], &[]);
    wait_until(
        "beta to note alpha's spending",
        Duration::from_secs(30),
        || {
            std::fs::read_dir(b.join(".orchestrate/ledger"))
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(".elsewhere.json"))
                })
                .unwrap_or(false)
        },
    );
    let out = b
        .cmd(&["enqueue", "w", "--name", "t1", "--text", "x"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("beta to refuse claims", Duration::from_secs(30), || {
        agents
            .logs()
            .contains("not claiming new tasks: budget exceeded: the swarm spent 1500 tokens")
    });
    assert_eq!(
        pg.psql("SELECT state FROM orchestrate_tasks WHERE id = 't1'"),
        "queued"
    );
    // `report` on beta shows what every machine spent.
    let out = b.cmd(&["report"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains("spending across the cluster")
            && report
                .lines()
                .any(|l| l.contains("alpha") && l.contains("1500")),
        "{report}"
    );
}

#[test]
fn a_transaction_held_open_elsewhere_in_the_database_does_not_stall_the_queue() {
    let Some(pg) = server() else { return };
    migrated(&pg);
    let (_dir, log) = shared_log();
    let a = machine(&pg.url(), "alpha");
    recording_role(&a, &log, "0", "concurrency: 2\n");
    // Another application's transaction, holding a snapshot (and so the horizon below which
    // dead rows could be vacuumed) for the whole drain.
    let mut holder = pg.psql_background(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM orchestrate_tasks; \
         SELECT pg_sleep(600);",
    );
    wait_until(
        "the other transaction to hold its snapshot",
        Duration::from_secs(30),
        || {
            pg.psql("SELECT count(*) FROM pg_stat_activity WHERE backend_xmin IS NOT NULL AND query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()")
            == "1"
        },
    );
    for i in 0..300 {
        a.file(&format!("inbox/w/t{i:03}.task"), "x");
    }
    let out = a.cmd(&["agent", "w", "--once", "-q"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(processed(&a).len(), 300, "{}", text(&out.stderr));
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND state = 'active' AND pid <> pg_backend_pid()"),
        "1",
        "the other transaction was still open throughout"
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn a_name_dropped_while_its_task_lives_is_refused_into_failed_with_a_status_saying_so() {
    let Some(pg) = server() else { return };
    migrated(&pg);
    let (_dir, log) = shared_log();
    let a = machine(&pg.url(), "alpha");
    recording_role(&a, &log, "0", "");
    let out = a
        .cmd(&["enqueue", "w", "--name", "same", "--text", "first"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Enqueued again by name: refused at once, the first kept.
    let again = a
        .cmd(&["enqueue", "w", "--name", "same", "--text", "second"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already queued or running"),
        "{}",
        text(&again.stderr)
    );
    // Dropped by hand with that name (and SQL in its name's neighbour and its payload): the
    // file goes to failed/ with a status.json that says why; nothing is lost.
    a.file("inbox/w/same.task", "third");
    a.file(
        "inbox/w/q'x;DROP.task",
        "'); DROP TABLE orchestrate_tasks; --",
    );
    let mut agents = Agents::new(&a);
    agents.start(&a, "w", &["--once"]);
    let status = agents.wait(0, patient(Duration::from_secs(60)));
    assert!(status.success(), "{}", agents.logs());
    let failed = entries(&a, "failed");
    assert_eq!(failed.len(), 2, "{failed:?}\n{}", agents.logs());
    let refused = failed
        .iter()
        .find(|n| n.ends_with("_w_same"))
        .expect("same refused");
    let record = json_file(&a, &format!("failed/{refused}/status.json"));
    let message = record["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("already queued")
            || message.contains("already running")
            || message.contains("already processed"),
        "{record}"
    );
    assert_eq!(a.read(&format!("failed/{refused}/task")), "third");
    // The metacharacters' name is not a valid task name (quarantined as before); the database
    // is intact and the first `same` ran with its own payload.
    assert_eq!(
        runs(&log).keys().cloned().collect::<Vec<_>>(),
        vec!["same".to_string()]
    );
    assert_eq!(
        pg.psql("SELECT convert_from(payload, 'UTF8') FROM orchestrate_tasks WHERE id = 'same'"),
        "first"
    );
}

#[test]
fn bad_files_dropped_on_a_database_machine_are_quarantined_and_never_queued() {
    use std::os::unix::ffi::OsStrExt;
    let Some(pg) = server() else { return };
    migrated(&pg);
    let (_dir, log) = shared_log();
    let a = machine(&pg.url(), "alpha");
    recording_role(&a, &log, "0", "");
    let big = "x".repeat(orchestrate_queue::queue::DEFAULT_MAX_TASK_BYTES as usize + 1);
    a.file("inbox/w/big.task", &big);
    std::fs::create_dir_all(a.join("inbox/w")).unwrap();
    std::fs::write(
        a.join("inbox/w")
            .join(std::ffi::OsStr::from_bytes(b"bad\xff.task")),
        "x",
    )
    .unwrap();
    a.file("inbox/w/good.task", "fine");
    // The same cap for `enqueue`, refused before anything is written.
    let out = a
        .cmd(&[
            "enqueue",
            "w",
            "--name",
            "big2",
            "--file",
            "inbox/w/big.task",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("over the"),
        "{}",
        text(&out.stderr)
    );
    let out = a.cmd(&["agent", "w", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let failed = entries(&a, "failed");
    assert_eq!(failed.len(), 2, "{failed:?}\n{}", text(&out.stderr));
    let messages: Vec<String> = failed
        .iter()
        .map(|d| json_file(&a, &format!("failed/{d}/status.json"))["message"].to_string())
        .collect();
    assert!(messages.iter().any(|m| m.contains("bytes")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("UTF-8")), "{messages:?}");
    assert_eq!(
        pg.psql("SELECT string_agg(id, ',') FROM orchestrate_tasks"),
        "good"
    );
    assert_eq!(processed(&a), vec!["good".to_string()]);
}

#[test]
fn an_unmigrated_database_is_refused_with_the_command_that_fixes_it() {
    let Some(pg) = server() else { return };
    let (_dir, log) = shared_log();
    let a = machine(&pg.url(), "alpha");
    recording_role(&a, &log, "0", "");
    let out = a.cmd(&["enqueue", "w", "--text", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("orchestrate db migrate"),
        "{}",
        text(&out.stderr)
    );
    let mut agents = Agents::new(&a);
    agents.start(&a, "w", &["--once"]);
    let status = agents.wait(0, patient(Duration::from_secs(30)));
    assert!(!status.success());
    assert!(
        agents.log(0).contains("orchestrate db migrate"),
        "{}",
        agents.logs()
    );
    // `swarm up` refuses before starting anything.
    let out = a.cmd(&["swarm", "up"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("orchestrate db migrate"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !a.exists(".orchestrate/swarm/status.json"),
        "nothing started"
    );
}

#[test]
fn a_stopped_worker_loses_its_task_to_another_machine_and_its_late_result_is_refused() {
    let Some(pg) = server() else { return };
    migrated(&pg);
    let (_dir, log) = shared_log();
    let a = machine(&pg.url(), "alpha");
    let b = machine(&pg.url(), "beta");
    // Leases of 4 s; the step takes 6 s.
    recording_role(&a, &log, "6", "hung_after_sec: 4\n");
    recording_role(&b, &log, "0", "hung_after_sec: 4\n");
    let out = a
        .cmd(&["enqueue", "w", "--name", "t1", "--text", "t1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut agents_a = Agents::new(&a);
    agents_a.start(&a, "w", &[]);
    wait_until("alpha claims t1", patient(Duration::from_secs(20)), || {
        a.exists("running/w/t1/lease.json")
    });
    // alpha's role process stops, past its lease (its step, a process of its own, does not).
    let alpha = agents_a.pid(0).to_string();
    signal_quiet("-STOP", &alpha);
    let mut agents_b = Agents::new(&b);
    agents_b.start(&b, "w", &[]);
    wait_until(
        "beta runs t1 again",
        patient(Duration::from_secs(40)),
        || {
            runs(&log)
                .get("t1")
                .is_some_and(|m| m.contains(&"beta".to_string()))
        },
    );
    signal_quiet("-CONT", &alpha);
    // Its lease guard stopped alpha's step before the lease ran out, so it never recorded
    // anything; alpha wakes up to a lost lease and gives the attempt up.
    wait_until(
        "alpha gives its attempt up",
        patient(Duration::from_secs(30)),
        || agents_a.log(0).contains("gave up attempt 1 of `t1`"),
    );
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        runs(&log)["t1"],
        vec!["beta".to_string()],
        "{}",
        agents_a.logs()
    );
    assert!(processed(&a).is_empty(), "{:?}", entries(&a, "processed"));
    assert_eq!(processed(&b), vec!["t1".to_string()]);
    assert!(
        a.exists(".orchestrate/queue/w/t1.attempt-1"),
        "alpha's files are kept aside"
    );
    assert_eq!(
        pg.psql("SELECT state, attempt FROM orchestrate_tasks WHERE id = 't1'"),
        "processed|2"
    );
}

/// Live processes working in `dir` (supervisor, role processes, steps, lease guards), with their
/// command lines.
fn procs_in(dir: &Path) -> Vec<(u32, String)> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && pid_alive(pid))
        .filter(|&pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == dir))
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            (pid, cmdline)
        })
        .collect()
}

/// The parent of `pid`, from `/proc/PID/stat` (the field after the state, which follows the
/// command name in parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
}

/// Kills everything still working in the machines' workspaces when dropped (also on failure).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for _ in 0..3 {
            for dir in &self.0 {
                for (pid, _) in procs_in(dir) {
                    signal_quiet("-KILL", &pid.to_string());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The `message` of every record in the machines' `failed/`, for failure messages.
fn failed_messages(machines: &[Ws]) -> Vec<String> {
    machines
        .iter()
        .flat_map(|m| {
            entries(m, "failed")
                .into_iter()
                .map(|d| {
                    format!(
                        "{d}: {}",
                        json_file(m, &format!("failed/{d}/status.json"))["message"]
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Tasks that ended, in the hot table or already archived.
const ENDED: &str =
    "SELECT (SELECT count(*) FROM orchestrate_tasks WHERE state IN ('processed', 'failed'))
                          + (SELECT count(*) FROM orchestrate_tasks_history)";

/// How many tasks of each of the two roles the kill -9 run drains (`ORCHESTRATE_CLUSTER_TASKS`).
fn cluster_tasks() -> usize {
    std::env::var("ORCHESTRATE_CLUSTER_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000)
}

#[test]
fn kill_9_of_role_processes_and_supervisors_on_three_machines_loses_nothing() {
    use crate::checker::{check_many, recording_workflow};
    let Some(pg) = server() else { return };
    migrated(&pg);
    let per_role = cluster_tasks();
    let shared = tempfile::tempdir().unwrap();
    let exec_log = shared.path().join("exec.log");
    std::fs::create_dir_all(shared.path().join("exec.pids")).unwrap();
    let names = ["m1", "m2", "m3"];
    let machines: Vec<Ws> = names.iter().map(|n| machine(&pg.url(), n)).collect();
    let _cleanup = Cleanup(machines.iter().map(|m| m.path().to_path_buf()).collect());
    for m in &machines {
        // One executions log and one pid directory for the cluster (every machine's steps
        // append to it, and look there for a live earlier attempt).
        std::os::unix::fs::symlink(&exec_log, m.join("exec.log")).unwrap();
        std::os::unix::fs::symlink(shared.path().join("exec.pids"), m.join("exec.pids")).unwrap();
        for r in ["a", "b"] {
            role(
                m,
                r,
                "concurrency: 2\nhung_after_sec: 3\nmax_attempts: 100\n",
                &recording_workflow(""),
            );
        }
    }
    let mut accepted = std::collections::BTreeSet::new();
    for r in ["a", "b"] {
        pg.psql(&format!(
            "INSERT INTO orchestrate_tasks (role, id, payload, source)
             SELECT '{r}', '{r}' || lpad(i::text, 5, '0'), 'x'::bytea, 'test'
               FROM generate_series(1, {per_role}) i"
        ));
        for i in 1..=per_role {
            accepted.insert(format!("{r}{i:05}"));
        }
    }
    let mut supervisors: Vec<Option<Started>> = machines
        .iter()
        .map(|m| Some(Started::new(m, &["swarm", "up"])))
        .collect();
    let done = || pg.psql(ENDED).parse::<usize>().unwrap_or(0);
    let (mut rng, seed) = Rng::from_env("ORCHESTRATE_CHAOS_SEED");
    let mut kills = (0, 0);
    // Kill while the first half drains: role processes (their supervisor restarts them) and
    // supervisors (started again a moment later; their role processes notice and stop).
    while done() < per_role && kills.0 + kills.1 < 40 {
        std::thread::sleep(Duration::from_millis(200 + rng.below(400) as u64));
        let m = rng.below(machines.len());
        if rng.below(4) == 0 {
            drop(supervisors[m].take()); // SIGKILL, then reaped.
            std::thread::sleep(Duration::from_millis(300));
            supervisors[m] = Some(Started::new(&machines[m], &["swarm", "up"]));
            kills.1 += 1;
        } else {
            // Role processes: children of a supervisor (a step between its clone and its exec
            // still shows its parent's command line).
            let procs = procs_in(machines[m].path());
            let agents: Vec<u32> = procs
                .iter()
                .filter(|(pid, cmd)| {
                    cmd.contains(" agent ")
                        && procs
                            .iter()
                            .any(|(p, c)| Some(*p) == parent_of(*pid) && c.contains("swarm up"))
                })
                .map(|(pid, _)| *pid)
                .collect();
            if !agents.is_empty() {
                signal_quiet("-KILL", &agents[rng.below(agents.len())].to_string());
                kills.0 += 1;
            }
        }
    }
    let total = 2 * per_role;
    wait_until(
        "every task to end",
        patient(Duration::from_secs(600)),
        || done() >= total,
    );
    drop(supervisors);
    let dirs: Vec<&Path> = machines.iter().map(|m| m.path()).collect();
    // The killed attempts' steps are gone (their guards stopped them).
    let report = check_many(&dirs, &exec_log, &accepted, &Default::default());
    eprintln!(
        "cluster kill -9 (seed {seed}): {} role processes and {} supervisors killed; {}",
        kills.0,
        kills.1,
        report.summary()
    );
    report.assert_passes();
    assert_eq!(report.terminal_records, total, "{}", report.full());
    assert_eq!(report.failed, 0, "{:?}", failed_messages(&machines));
    assert_eq!(
        pg.psql(
            "SELECT (SELECT count(*) FROM orchestrate_tasks WHERE state <> 'processed')
                  + (SELECT count(*) FROM orchestrate_tasks_history WHERE state <> 'processed')"
        ),
        "0"
    );
}

#[test]
fn the_database_restarted_twice_and_away_past_a_lease_loses_nothing_and_runs_nothing_twice_at_once()
{
    use crate::checker::{check_many, recording_workflow};
    let Some(pg) = server() else { return };
    migrated(&pg);
    let per_machine = 400;
    let shared = tempfile::tempdir().unwrap();
    let exec_log = shared.path().join("exec.log");
    std::fs::create_dir_all(shared.path().join("exec.pids")).unwrap();
    let machines: Vec<Ws> = ["m1", "m2"].iter().map(|n| machine(&pg.url(), n)).collect();
    let _cleanup = Cleanup(machines.iter().map(|m| m.path().to_path_buf()).collect());
    for m in &machines {
        std::os::unix::fs::symlink(&exec_log, m.join("exec.log")).unwrap();
        std::os::unix::fs::symlink(shared.path().join("exec.pids"), m.join("exec.pids")).unwrap();
        // Steps of 20 ms, leases of 3 s.
        role(
            m,
            "w",
            "concurrency: 2\nhung_after_sec: 3\nmax_attempts: 100\n",
            &recording_workflow("read -rt 0.02 <> <(:) || true"),
        );
    }
    let mut accepted = std::collections::BTreeSet::new();
    pg.psql(&format!(
        "INSERT INTO orchestrate_tasks (role, id, payload, source)
         SELECT 'w', 'q' || lpad(i::text, 5, '0'), 'x'::bytea, 'test'
           FROM generate_series(1, {per_machine}) i"
    ));
    accepted.extend((1..=per_machine).map(|i| format!("q{i:05}")));
    let mut agents: Vec<Agents> = machines.iter().map(Agents::new).collect();
    for (a, m) in agents.iter_mut().zip(&machines) {
        a.spawn(m, "w", &[], &[]);
    }
    let done = || pg.psql(ENDED).parse::<usize>().unwrap_or(0);
    let processed_files = || {
        machines
            .iter()
            .map(|m| entries(m, "processed").len())
            .sum::<usize>()
    };
    wait_until(
        "a first few tasks",
        patient(Duration::from_secs(30)),
        || done() >= 20,
    );
    pg.restart_immediately();
    wait_until(
        "more tasks after a restart",
        patient(Duration::from_secs(60)),
        || done() >= 120,
    );
    pg.restart_immediately();
    wait_until(
        "more tasks after a second restart",
        patient(Duration::from_secs(60)),
        || done() >= 220,
    );
    // Away for longer than a lease. Files dropped meanwhile wait in the inboxes.
    pg.stop_immediately();
    let before = processed_files();
    for (i, m) in machines.iter().enumerate() {
        for j in 0..10 {
            m.file(
                &format!("inbox/w/drop{i}-{j}.task"),
                "dropped while the database was down",
            );
            accepted.insert(format!("drop{i}-{j}"));
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    pg.start_again().unwrap();
    let total = per_machine + 20;
    wait_until(
        "every task to end",
        patient(Duration::from_secs(300)),
        || pg.psql(ENDED).parse::<usize>().unwrap_or(0) >= total,
    );
    for (n, a) in agents.iter_mut().enumerate() {
        a.signal(0, "TERM");
        let status = a.wait(0, patient(Duration::from_secs(60)));
        assert!(status.success(), "machine {n}: {}", a.logs());
    }
    let dirs: Vec<&Path> = machines.iter().map(|m| m.path()).collect();
    let report = check_many(&dirs, &exec_log, &accepted, &Default::default());
    eprintln!(
        "database restarted twice and away 5 s ({before} processed before): {}",
        report.summary()
    );
    if !report.passes() || report.failed > 0 {
        let failed: Vec<String> = machines
            .iter()
            .flat_map(|m| {
                entries(m, "failed")
                    .into_iter()
                    .take(3)
                    .map(|d| {
                        json_file(m, &format!("failed/{d}/status.json"))["message"].to_string()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let logs: String = agents.iter().map(Agents::logs).collect();
        panic!("{}\nfailed: {failed:?}\n{logs}", report.full());
    }
    assert_eq!(report.terminal_records, total, "{}", report.full());
    let logs: String = agents.iter().map(Agents::logs).collect();
    assert!(logs.contains("lost the queue database"), "{logs}");
    assert!(logs.contains("the queue database is back after"), "{logs}");
    assert!(!logs.contains("password"), "a password in the logs: {logs}");
}

#[test]
fn a_worker_cut_off_from_the_database_stops_its_step_before_the_lease_runs_out() {
    use crate::checker::{check_many, recording_workflow};
    let Some(pg) = server() else { return };
    migrated(&pg);
    let m = machine(&pg.url(), "m1");
    let _cleanup = Cleanup(vec![m.path().to_path_buf()]);
    // Leases of 4 s; the first attempt's step would take 30 s.
    role(
        &m,
        "w",
        "hung_after_sec: 4\n",
        &recording_workflow("if [ \"$att\" = 1 ]; then read -rt 30 <> <(:) || true; fi"),
    );
    let out = m
        .cmd(&["enqueue", "w", "--name", "t", "--text", "t"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut agents = Agents::new(&m);
    agents.spawn(&m, "w", &[], &[]);
    wait_until(
        "the step to start",
        patient(Duration::from_secs(20)),
        || {
            lines(&m, "exec.log")
                .iter()
                .any(|l| l.starts_with("start t 1"))
        },
    );
    pg.stop_immediately();
    // Half a lease without renewal: the role process kills the step and gives the attempt up.
    wait_until(
        "the attempt given up",
        patient(Duration::from_secs(20)),
        || agents.log(0).contains("gave up attempt 1 of `t`"),
    );
    assert!(
        m.exists(".orchestrate/queue/w/t.attempt-1"),
        "{}",
        agents.logs()
    );
    std::thread::sleep(Duration::from_secs(5));
    pg.start_again().unwrap();
    wait_until(
        "the task to run again",
        patient(Duration::from_secs(60)),
        || entries(&m, "processed").len() == 1,
    );
    agents.signal(0, "TERM");
    agents.wait(0, patient(Duration::from_secs(30)));
    let accepted = std::iter::once("t".to_string()).collect();
    let report = check_many(
        &[m.path()],
        &m.join("exec.log"),
        &accepted,
        &Default::default(),
    );
    report.assert_passes();
    assert_eq!(report.executions, 2, "{}", report.full());
    let processed = entries(&m, "processed");
    let status = json_file(&m, &format!("processed/{}/status.json", processed[0]));
    assert_eq!(status["attempt"], 2, "{status}");
    let log = agents.log(0);
    assert!(log.contains("lost the queue database"), "{log}");
    assert!(log.contains("the queue database is back after"), "{log}");
}
