//! What an inbox holds besides tasks ready to be taken: task files still open for writing (never
//! claimed until every writer closed them, and their record holds exactly the bytes the workflow
//! was given), and files no role process takes (listed by `tasks` and `swarm status` with why).

#[allow(unused_imports)]
use crate::harness::*;

use std::process::{Child, Command};
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// A step that keeps what it was given: `${task.text}` in `seen/<id>.text`, the file at
/// `${task.path}` in `seen/<id>`, and its id appended to `seen.log` once both are written.
const RECORDING_WORKFLOW: &str = r#"
steps:
  - name: Record
    command:
      - bash
      - -c
      - 'mkdir -p seen && printf %s "$1" > "seen/$2.text" && cat "$3" > "seen/$2" && echo "$2" >> seen.log'
      - record
      - ${task.text}
      - ${task.id}
      - ${task.path}
"#;

/// Drops a task the documented way (write `<id>.tmp`, rename to `<id>.task`) and waits until
/// the role has run it.
fn drop_and_wait(ws: &Ws, agents: &Agents, id: &str) {
    let tmp = ws.join(&format!("inbox/r/{id}.tmp"));
    std::fs::write(&tmp, format!("{id}\n")).unwrap();
    std::fs::rename(&tmp, ws.join(&format!("inbox/r/{id}.task"))).unwrap();
    let deadline = std::time::Instant::now() + patient(Duration::from_secs(30));
    while !seen(ws, id) {
        assert!(
            std::time::Instant::now() < deadline,
            "`{id}` was not processed\n{}",
            agents.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The one `processed/` entry of task `id` of role `r`.
fn processed(ws: &Ws, id: &str) -> String {
    let found: Vec<String> = entries(ws, "processed")
        .into_iter()
        .filter(|n| n.ends_with(&format!("_r_{id}")))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "processed/ holds {:?}",
        entries(ws, "processed")
    );
    format!("processed/{}", found[0])
}

/// `sh` holding `inbox/r/<name>` open for writing on descriptor 3: it writes `a`, waits for the
/// file `go` (the test's signal), writes `b` and exits, closing it.
fn slow_writer(ws: &Ws, name: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec 3>inbox/r/{name}; echo a >&3; while [ ! -e go ]; do sleep 0.05; done; echo b >&3"
        ))
        .current_dir(ws.path())
        .spawn()
        .unwrap()
}

#[test]
fn task_held_open_for_writing_is_not_claimed_until_closed_and_its_record_holds_what_ran() {
    let ws = Ws::new();
    role(&ws, "r", "settle_ms: 50\n", RECORDING_WORKFLOW);
    let mut agents = Agents::new(&ws);
    agents.start(&ws, "r", &[]);
    std::fs::create_dir_all(ws.join("inbox/r")).unwrap();
    // Once the probe is processed, the role's watch is registered (it watches, then lists).
    drop_and_wait(&ws, &agents, "probe");

    let mut writer = slow_writer(&ws, "y.task");
    wait_until("the writer's first line", Duration::from_secs(30), || {
        std::fs::read_to_string(ws.join("inbox/r/y.task")).is_ok_and(|t| t == "a\n")
    });
    // Still for an hour as far as its mtime goes: far past any settle window. Setting it opens
    // the file for writing and closes it again, so the role is told to look at it now.
    std::fs::File::options()
        .write(true)
        .open(ws.join("inbox/r/y.task"))
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    // Tasks dropped after it are taken while it stays: the role has looked at the inbox since.
    for id in ["z1", "z2"] {
        drop_and_wait(&ws, &agents, id);
    }
    assert!(
        ws.exists("inbox/r/y.task") && !seen(&ws, "y") && !ws.exists("running/r/y"),
        "y.task was claimed while its writer still had it open\n{}",
        agents.logs()
    );
    // `tasks` says why it waits.
    let listed = ws.run(&["tasks", "r", "--json"]);
    listed.ok();
    let tasks: Vec<Value> = serde_json::from_str(&listed.stdout).unwrap();
    let y = tasks.iter().find(|t| t["id"] == "y").expect("y is listed");
    assert_eq!(y["state"], "queued");
    let reason = y["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("being written: ") && reason.contains(&writer.id().to_string()),
        "{reason:?}"
    );
    ws.run(&["tasks", "r"])
        .ok()
        .stdout_has("inbox/r/y.task\n    being written: ");
    ws.run(&["swarm", "status"])
        .ok()
        .stdout_has("role r: inbox/r/y.task: being written: ");

    // The writer finishes and closes it: taken whole.
    ws.file("go", "");
    assert!(writer.wait().unwrap().success());
    wait_until("y to be processed", Duration::from_secs(30), || {
        seen(&ws, "y")
    });
    assert_eq!(ws.read("seen/y.text"), "a\nb\n", "${{task.text}}");
    assert_eq!(ws.read("seen/y"), "a\nb\n", "the file at ${{task.path}}");
    wait_until("y's record", Duration::from_secs(30), || {
        entries(&ws, "processed")
            .iter()
            .any(|n| n.ends_with("_r_y"))
    });
    let record = processed(&ws, "y");
    assert_eq!(ws.read(&format!("{record}/task")), "a\nb\n");
    let status = json_file(&ws, &format!("{record}/status.json"));
    assert_eq!(status["metrics"]["task_bytes"], 4, "{status:#}");
    assert!(status.get("task_changed").is_none(), "{status:#}");
    assert_eq!(
        lines(&ws, "seen.log"),
        ["probe", "z1", "z2", "y"],
        "{}",
        agents.logs()
    );
}

#[test]
fn task_file_changed_after_its_claim_is_put_back_in_the_record_with_the_change_kept_beside() {
    let ws = Ws::new();
    // The step writes to its own task file, as a writer that opened it just before the claim
    // would: the record must still hold what the workflow was given.
    role(
        &ws,
        "r",
        "settle_ms: 50\n",
        r#"
steps:
  - name: Scribble
    command: [sh, -c, 'printf %s "$1" > given; echo scribbled >> "$2"', scribble, "${task.text}", "${task.path}"]
"#,
    );
    ws.file("inbox/r/t.task", "original\n");
    let mut agents = Agents::new(&ws);
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(60));
    assert!(status.success(), "{}", agents.logs());
    assert_eq!(ws.read("given"), "original\n");
    let record = processed(&ws, "t");
    assert_eq!(ws.read(&format!("{record}/task")), "original\n");
    assert_eq!(
        ws.read(&format!("{record}/task.changed")),
        "original\nscribbled\n"
    );
    let status = json_file(&ws, &format!("{record}/status.json"));
    assert_eq!(status["metrics"]["task_bytes"], 9, "{status:#}");
    let note = status["task_changed"].as_str().unwrap_or_default();
    assert!(
        note.contains("given 9 bytes") && note.contains("task.changed"),
        "{status:#}"
    );
}

#[test]
fn agent_once_leaves_a_task_still_being_written_and_says_so() {
    let ws = Ws::new();
    role(&ws, "r", "settle_ms: 50\n", RECORDING_WORKFLOW);
    std::fs::create_dir_all(ws.join("inbox/r")).unwrap();
    let mut writer = slow_writer(&ws, "y.task");
    wait_until("the writer's first line", Duration::from_secs(30), || {
        std::fs::read_to_string(ws.join("inbox/r/y.task")).is_ok_and(|t| t == "a\n")
    });
    ws.file("inbox/r/ready.task", "ready\n");
    // Without `-q`: its log says what it left.
    let mut agents = Agents::new(&ws);
    let first = agents.spawn(&ws, "r", &["--once"], &[]);
    assert!(
        agents.wait(first, Duration::from_secs(60)).success(),
        "{}",
        agents.logs()
    );
    assert!(seen(&ws, "ready"), "{}", agents.logs());
    assert!(
        !seen(&ws, "y") && ws.exists("inbox/r/y.task"),
        "{}",
        agents.logs()
    );
    assert!(
        agents
            .log(0)
            .contains("leaving `y.task`: a process still has it open for writing"),
        "{}",
        agents.logs()
    );
    ws.file("go", "");
    assert!(writer.wait().unwrap().success());
    let status = agents.run(&ws, "r", &["--once"], Duration::from_secs(60));
    assert!(status.success(), "{}", agents.logs());
    assert_eq!(ws.read("seen/y.text"), "a\nb\n");
}

#[test]
fn files_the_inbox_ignores_are_listed_with_the_reason() {
    let ws = Ws::new();
    role(&ws, "r", "", RECORDING_WORKFLOW);
    ws.file("inbox/r/a.task", "a\n")
        .file("inbox/r/notes.txt", "notes\n")
        .file("inbox/r/UPPER.TASK", "upper\n")
        .file("inbox/r/draft.tmp", "draft\n")
        .file("inbox/r/.hidden", "editor state\n")
        .file("inbox/r/sub/x.task", "nested\n");

    let listed = ws.run(&["tasks", "--json"]);
    listed.ok();
    let tasks: Vec<Value> = serde_json::from_str(&listed.stdout).unwrap();
    let row = |id: &str| -> (String, String) {
        let t = tasks
            .iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("`{id}` is not listed: {tasks:#?}"));
        (
            t["state"].as_str().unwrap_or_default().to_string(),
            t["reason"].as_str().unwrap_or_default().to_string(),
        )
    };
    assert_eq!(row("a"), ("queued".into(), String::new()));
    assert_eq!(
        row("notes.txt"),
        (
            "ignored".into(),
            "not a `.task` file (extension `.txt`)".into()
        )
    );
    assert_eq!(
        row("UPPER.TASK"),
        (
            "ignored".into(),
            "the extension is case-sensitive: rename it to `UPPER.task`".into()
        )
    );
    assert_eq!(
        row("draft.tmp"),
        (
            "ignored".into(),
            "a temporary file: rename it to `draft.task` once it is complete".into()
        )
    );
    assert_eq!(
        row("sub"),
        (
            "ignored".into(),
            "a directory: tasks are `<id>.task` files directly in the inbox".into()
        )
    );
    assert!(
        !tasks.iter().any(|t| t["id"] == ".hidden"),
        "hidden files are not listed: {tasks:#?}"
    );
    // The filter knows the state.
    let ignored = ws.run(&["tasks", "--state", "ignored", "--json"]);
    ignored.ok();
    let ignored: Vec<Value> = serde_json::from_str(&ignored.stdout).unwrap();
    assert_eq!(ignored.len(), 4, "{ignored:#?}");

    ws.run(&["tasks"])
        .ok()
        .stdout_has("inbox/r/notes.txt\n    ignored: not a `.task` file (extension `.txt`)")
        .stdout_has("inbox/r/UPPER.TASK\n    ignored: the extension is case-sensitive: rename it to `UPPER.task`");

    ws.run(&["swarm", "status"])
        .ok()
        .stdout_has("role r: inbox/r/UPPER.TASK: ignored: the extension is case-sensitive: rename it to `UPPER.task`")
        .stdout_has("role r: inbox/r/notes.txt: ignored: not a `.task` file (extension `.txt`)");
    let status = ws.run(&["swarm", "status", "--json"]);
    status.ok();
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    let load = &status["roles"][0];
    assert_eq!(load["role"], "r");
    assert_eq!(load["queued"], 1);
    let names: Vec<&str> = load["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["UPPER.TASK", "draft.tmp", "notes.txt", "sub"]);
    assert_eq!(load["being_written"], serde_json::json!([]));
}
