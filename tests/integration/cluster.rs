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
