//! The swarm's commands: `init`, `agent`, `enqueue`, `tasks`, `show`, `retry`, `trace`.
//!
//! Owns: what each command prints and its exit code, on top of `queue`, `role` and `worker`.
//! Does not parse arguments (`cli`) or implement the queue protocol (`queue`).

use std::path::Path;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use orchestrate_engine::runner::exit;
use orchestrate_queue::queue::{self, Layout, TaskInfo, TaskState};

/// Prints load errors (role and workflow files) with workspace-relative paths.
fn print_load_errors(workspace: &Path, errors: &[orchestrate_lang::load::LoadError]) {
    for err in errors {
        let mut copy = orchestrate_lang::load::LoadError {
            path: err.path.clone(),
            source_text: err.source_text.clone(),
            diagnostics: err.diagnostics.clone(),
        };
        for d in &mut copy.diagnostics {
            if let Ok(rel) = d.file.strip_prefix(workspace) {
                d.file = rel.to_path_buf();
            }
        }
        eprint!("{}", copy.render());
        eprintln!();
    }
}

/// First SIGINT/SIGTERM cancels `stop` (finish in-flight work, claim nothing new); a second
/// cancels `kill` (stop everything now).
pub fn signal_pair() -> (CancellationToken, CancellationToken) {
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let (s, k) = (stop.clone(), kill.clone());
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        s.cancel();
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        k.cancel();
    });
    (stop, kill)
}

pub async fn agent(
    workspace: &Path,
    name: &str,
    options: orchestrate_swarm::worker::AgentOptions,
) -> u8 {
    let version = match orchestrate_engine::role::Version::load(workspace, name) {
        Ok(version) => version,
        Err(errors) => {
            print_load_errors(workspace, &errors);
            eprintln!("error: role `{name}` cannot start; fix the problems above");
            return exit::INVALID;
        }
    };
    if let Err(error) = orchestrate_lang::load::load_swarm(workspace) {
        print_load_errors(workspace, &[error]);
        eprintln!("error: role `{name}` cannot start; fix the problems above");
        return exit::INVALID;
    }
    let (stop, kill) = signal_pair();
    match orchestrate_swarm::worker::run_agent(workspace, version, options, stop, kill).await {
        Ok(report) => {
            eprintln!(
                "[{name}] stopped: {} processed, {} failed, {} quarantined, {} given back",
                report.processed, report.failed, report.quarantined, report.released
            );
            exit::SUCCESS
        }
        Err(message) => {
            eprintln!("error: role `{name}`: {message}");
            exit::STEP_FAILED
        }
    }
}

/// Refuses a task over the size limit (`size`: its byte count, or "more than N" for a stream).
fn too_big(size: &str, limit: u64) -> u8 {
    eprintln!(
        "error: the task is {size} bytes, over the {limit}-byte limit; put large inputs in a file under the workspace and name it in the task",
    );
    exit::INVALID
}

pub fn enqueue(
    workspace: &Path,
    role: &str,
    file: Option<&Path>,
    text: Option<&str>,
    stdin: Option<&str>,
    name: Option<&str>,
    correlation_id: Option<&str>,
) -> u8 {
    let layout = match orchestrate_engine::role::layout_of_defined(workspace, role) {
        Ok(layout) => layout,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::INVALID;
        }
    };
    // At most one byte past the limit is read: a huge file or stream is refused unread.
    let limit = queue::DEFAULT_MAX_TASK_BYTES;
    let bounded = |reader: &mut dyn std::io::Read| -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(reader, limit + 1), &mut bytes)?;
        Ok(bytes)
    };
    let content = match (file, text, stdin) {
        (Some(path), None, None) => {
            let opened = std::fs::File::open(workspace.join(path))
                .and_then(|f| Ok((f.metadata()?.len(), f)));
            match opened {
                // A file's size is known without reading it.
                Ok((size, _)) if size > limit => return too_big(&size.to_string(), limit),
                Ok((_, mut f)) => match bounded(&mut f) {
                    Ok(bytes) => bytes,
                    Err(err) => {
                        eprintln!("error: cannot read {}: {err}", path.display());
                        return exit::INVALID;
                    }
                },
                Err(err) => {
                    eprintln!("error: cannot read {}: {err}", path.display());
                    return exit::INVALID;
                }
            }
        }
        (None, Some(text), None) => text.as_bytes().to_vec(),
        (None, None, Some("-")) => match bounded(&mut std::io::stdin()) {
            Ok(bytes) => bytes,
            Err(err) => {
                eprintln!("error: cannot read standard input: {err}");
                return exit::INVALID;
            }
        },
        _ => {
            eprintln!(
                "error: give the task with exactly one of --file F, --text T or - (standard input)"
            );
            return exit::INVALID;
        }
    };
    if content.len() as u64 > limit {
        return too_big(&format!("more than {limit}"), limit);
    }
    match queue::enqueue(
        &layout,
        name,
        &content,
        correlation_id,
        "orchestrate enqueue",
    ) {
        Ok(task) => {
            println!("{}", task.file);
            exit::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            match err {
                queue::QueueError::Io { .. } => exit::STEP_FAILED,
                _ => exit::INVALID,
            }
        }
    }
}

pub fn tasks(workspace: &Path, role: Option<&str>, state: Option<TaskState>, as_json: bool) -> u8 {
    let layouts = match role {
        Some(name) => match orchestrate_engine::role::layout_for(workspace, name) {
            Ok(layout) => vec![layout],
            Err(message) => {
                eprintln!("error: {message}");
                return exit::INVALID;
            }
        },
        None => orchestrate_engine::role::known_layouts(workspace),
    };
    // A failed record that was retried is shown through the entry that superseded it.
    let list: Vec<TaskInfo> = layouts
        .iter()
        .flat_map(|layout| with_inbox_extras(layout, queue::list(layout)))
        .filter(|t| !t.retried)
        .filter(|t| state.is_none_or(|s| t.state == s))
        .collect();
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return exit::SUCCESS;
    }
    if list.is_empty() {
        eprintln!("no tasks");
        return exit::SUCCESS;
    }
    println!(
        "{:<12} {:<10} {:<8} {:<40} PATH",
        "ROLE", "STATE", "ATTEMPT", "TASK"
    );
    for t in &list {
        let attempt = t
            .attempt
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<12} {:<10} {:<8} {:<40} {}",
            t.role, t.state, attempt, t.id, t.path
        );
        for note in notes(t) {
            println!("    {note}");
        }
    }
    exit::SUCCESS
}

/// What `tasks` and `show` say under a task besides its row: a dead holder, a refused entry,
/// the failed records it was retried from, why an inbox entry is ignored or still waits.
fn notes(t: &TaskInfo) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(reason) = &t.reason {
        out.push(if t.state == TaskState::Ignored {
            format!("ignored: {reason}")
        } else {
            reason.clone()
        });
    }
    if let Some(note) = &t.holder_dead {
        out.push(format!("holder dead: {note}"));
    }
    if let Some(reason) = &t.refused {
        out.push(format!(
            "refused: {reason}; its records are not read (move or remove the entry)"
        ));
    }
    if t.retried {
        out.push("retried: `orchestrate retry` queued this failed record again".into());
    }
    for record in &t.earlier {
        out.push(format!("retried after the failed record {record}"));
    }
    out
}

/// A role's tasks as `queue::list` has them, plus what else its inbox holds: each queued task
/// still being written says so, and the entries no role process takes follow the queued tasks
/// as `ignored`, with the reason.
fn with_inbox_extras(layout: &Layout, mut list: Vec<TaskInfo>) -> Vec<TaskInfo> {
    let extras = queue::inbox_extras(layout);
    for entry in extras.being_written {
        if let Some(task) = list
            .iter_mut()
            .find(|t| t.state == TaskState::Queued && t.path == entry.path)
        {
            task.reason = Some(entry.reason);
        }
    }
    let queued = list.iter().filter(|t| t.state == TaskState::Queued).count();
    list.splice(
        queued..queued,
        extras.ignored.into_iter().map(|entry| {
            let mut info = TaskInfo::new(
                layout,
                &entry.name,
                TaskState::Ignored,
                &layout.inbox.join(&entry.name),
            );
            info.reason = Some(entry.reason);
            info
        }),
    );
    list
}

pub fn show(workspace: &Path, needle: &str, as_json: bool) -> u8 {
    let matches = orchestrate_engine::role::find_tasks(workspace, needle);
    if matches.is_empty() {
        eprintln!(
            "error: no task `{needle}` in any inbox, running/, processed/ or failed/; list them with `orchestrate tasks`"
        );
        return exit::INVALID;
    }
    let mut out = Vec::new();
    for t in &matches {
        let path = workspace.join(&t.path);
        // Nothing is read through an entry that leads outside the workspace.
        let dir = (t.refused.is_none() && path.is_dir()).then(|| path.clone());
        let read = |name: &str| -> Option<Value> {
            let bytes =
                orchestrate_base::fsutil::read_inside(workspace, &dir.as_ref()?.join(name))?;
            serde_json::from_slice(&bytes).ok()
        };
        let status = read("status.json");
        let lease = read("lease.json");
        let meta: Option<Value> = orchestrate_base::fsutil::read_inside(
            workspace,
            &workspace
                .join(".orchestrate/queue")
                .join(&t.role)
                .join(format!("{}.json", t.id)),
        )
        .and_then(|b| serde_json::from_slice(&b).ok());
        let logs: Vec<String> = dir
            .as_ref()
            .map(|d| d.join("logs"))
            .filter(|l| orchestrate_base::fsutil::check_inside(workspace, l).is_ok())
            .and_then(|l| std::fs::read_dir(&l).ok())
            .map(|entries| {
                let mut names: Vec<String> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| orchestrate_base::fsutil::check_inside(workspace, p).is_ok())
                    .map(|p| orchestrate_base::fsutil::relative(workspace, &p))
                    .collect();
                names.sort();
                names
            })
            .unwrap_or_default();
        // Under `isolation: worktree`: the finished attempt's, else the one in use (or kept).
        let worktree = status
            .as_ref()
            .and_then(|s| s.get("worktree").cloned())
            .or_else(|| {
                let owner = orchestrate_engine::worktree::Owner::Task {
                    role: t.role.clone(),
                    task: t.id.clone(),
                };
                orchestrate_engine::worktree::record_of(workspace, &owner)
                    .filter(|r| r.path.is_dir())
                    .map(|r| r.status(workspace, true))
            });
        out.push(json!({"task": t, "status": status, "lease": lease, "queue": meta, "logs": logs, "worktree": worktree}));
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return exit::SUCCESS;
    }
    for (entry, info) in out.iter().zip(&matches) {
        let t = &entry["task"];
        println!(
            "task {} (role {}): {}",
            t["id"].as_str().unwrap_or(""),
            t["role"].as_str().unwrap_or(""),
            t["state"].as_str().unwrap_or("")
        );
        println!("  path: {}", t["path"].as_str().unwrap_or(""));
        for note in notes(info) {
            println!("  {note}");
        }
        if let Some(w) = entry["worktree"].as_object() {
            println!(
                "  worktree: {} (branch {}{})",
                w.get("path").and_then(Value::as_str).unwrap_or(""),
                w.get("branch").and_then(Value::as_str).unwrap_or(""),
                if w.get("kept") == Some(&Value::Bool(false)) {
                    "; removed after the success"
                } else {
                    ""
                }
            );
        }
        if let Some(status) = entry["status"].as_object() {
            let ok = status
                .get("success")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            println!(
                "  result: {} (exit {})",
                if ok { "success" } else { "failure" },
                status.get("exit_code").cloned().unwrap_or(Value::Null)
            );
            for key in [
                "message",
                "correlation_id",
                "run_id",
                "attempt",
                "step",
                "step_exit_code",
            ] {
                if let Some(v) = status.get(key).filter(|v| !v.is_null()) {
                    // A failed step's message carries its stderr's last lines.
                    let text = orchestrate_lang::template::to_text(v).replace('\n', "\n    ");
                    println!("  {key}: {text}");
                }
            }
            if let Some(next) = status
                .get("next_actions")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
            {
                for action in next {
                    println!(
                        "  next: {} {}",
                        action["agent"].as_str().unwrap_or(""),
                        action["file"].as_str().unwrap_or("")
                    );
                }
            }
        }
        if let Some(lease) = entry["lease"]
            .as_object()
            .filter(|_| t["state"] == "running")
        {
            let dead = if t["holder_dead"].is_string() {
                " (dead)"
            } else {
                ""
            };
            println!(
                "  held by pid {}{dead} since {} (attempt {})",
                lease.get("pid").cloned().unwrap_or(Value::Null),
                lease
                    .get("claimed_at")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                lease.get("attempt").cloned().unwrap_or(Value::Null)
            );
        }
        // A finished task's history is in its record; a queued or running one's in the sidecar.
        let history = entry["status"]["history"]
            .as_array()
            .or_else(|| entry["queue"]["history"].as_array());
        for h in history.into_iter().flatten() {
            let link = match (h["record"].as_str(), h["run_id"].as_str()) {
                (Some(record), Some(run)) => format!(" (record {record}, run {run})"),
                (Some(record), None) => format!(" (record {record})"),
                _ => String::new(),
            };
            println!(
                "  earlier attempt {}{link}: {}",
                h["attempt"],
                h["reason"].as_str().unwrap_or("").replace('\n', "\n    ")
            );
        }
        for log in entry["logs"].as_array().into_iter().flatten() {
            println!("  log: {}", log.as_str().unwrap_or(""));
        }
    }
    exit::SUCCESS
}

pub fn retry(workspace: &Path, needle: &str) -> u8 {
    let found = orchestrate_engine::role::find_tasks(workspace, needle);
    let failed: Vec<&TaskInfo> = found
        .iter()
        .filter(|t| t.state == TaskState::Failed && !t.retried)
        .collect();
    let Some(task) = failed.last() else {
        match found.iter().find(|t| t.retried) {
            Some(t) => eprintln!(
                "error: the failed record {} of `{needle}` was retried already; \
                 `orchestrate show {needle}` says where the task is now",
                t.path
            ),
            None => eprintln!(
                "error: no failed task `{needle}`; `orchestrate tasks --state failed` lists them"
            ),
        }
        return exit::INVALID;
    };
    let layout = match orchestrate_engine::role::layout_for(workspace, &task.role) {
        Ok(layout) => layout,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::INVALID;
        }
    };
    match queue::retry(&layout, &workspace.join(&task.path)) {
        Ok(queued) => {
            println!("{}", queued.file);
            eprintln!(
                "`{}` is queued again for {} (attempts reset); its failed record stays in {}",
                queued.id, queued.role, task.path
            );
            exit::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            exit::STEP_FAILED
        }
    }
}

pub fn trace(workspace: &Path, id: &str, as_json: bool) -> u8 {
    let mut events: Vec<Value> = Vec::new();
    for layout in orchestrate_engine::role::known_layouts(workspace) {
        for t in queue::list(&layout) {
            let path = workspace.join(&t.path);
            let (correlation, when, detail) = match t.state {
                // Nothing is read through an entry that leads outside the workspace.
                _ if t.refused.is_some() => continue,
                TaskState::Processed | TaskState::Failed => {
                    let status: Value =
                        orchestrate_base::fsutil::read_inside(workspace, &path.join("status.json"))
                            .and_then(|b| serde_json::from_slice(&b).ok())
                            .unwrap_or(Value::Null);
                    (
                        status["correlation_id"].as_str().map(str::to_string),
                        status["timestamp"].as_str().unwrap_or("").to_string(),
                        status,
                    )
                }
                _ => {
                    let meta: Value = std::fs::read(layout.meta.join(format!("{}.json", t.id)))
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or(Value::Null);
                    (
                        meta["correlation_id"].as_str().map(str::to_string),
                        meta["enqueued_at"].as_str().unwrap_or("").to_string(),
                        meta,
                    )
                }
            };
            if correlation.as_deref() == Some(id) || t.id == id {
                events.push(json!({"when": when, "role": t.role, "task": t.id, "state": t.state, "path": t.path, "detail": detail}));
            }
        }
    }
    events.sort_by(|a, b| a["when"].as_str().cmp(&b["when"].as_str()));
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&events).unwrap_or_default()
        );
        return exit::SUCCESS;
    }
    if events.is_empty() {
        eprintln!("error: nothing carries correlation id `{id}`");
        return exit::INVALID;
    }
    for e in &events {
        let next: Vec<String> = e["detail"]["next_actions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| {
                        format!(
                            "{}/{}",
                            n["agent"].as_str().unwrap_or(""),
                            n["task"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let next = if next.is_empty() {
            String::new()
        } else {
            format!(" -> {}", next.join(", "))
        };
        println!(
            "{}  {:<10} {:<10} {}{next}",
            e["when"].as_str().unwrap_or(""),
            e["role"].as_str().unwrap_or(""),
            e["state"].as_str().unwrap_or(""),
            e["path"].as_str().unwrap_or("")
        );
    }
    exit::SUCCESS
}

/// What `init` lays down: the template's skeleton plus the shipped example roles.
const INIT_FILES: &[(&str, &str, bool)] = &[
    (
        "README.md",
        include_str!("../workspace-template/README.md"),
        false,
    ),
    (
        "agents/architect.yaml",
        include_str!("../agents/architect.yaml"),
        false,
    ),
    (
        "agents/engineer.yaml",
        include_str!("../agents/engineer.yaml"),
        false,
    ),
    ("agents/qa.yaml", include_str!("../agents/qa.yaml"), false),
    (
        "workflows/architect.yaml",
        include_str!("../workflows/architect.yaml"),
        false,
    ),
    (
        "workflows/engineer.yaml",
        include_str!("../workflows/engineer.yaml"),
        false,
    ),
    (
        "workflows/qa.yaml",
        include_str!("../workflows/qa.yaml"),
        false,
    ),
    (
        "workflows/demo.yaml",
        include_str!("../workflows/demo.yaml"),
        false,
    ),
    (
        "prompts/architect.md",
        include_str!("../prompts/architect.md"),
        false,
    ),
    (
        "prompts/engineer.md",
        include_str!("../prompts/engineer.md"),
        false,
    ),
    ("prompts/qa.md", include_str!("../prompts/qa.md"), false),
    (
        "scripts/stand-in-agent",
        include_str!("../scripts/stand-in-agent"),
        true,
    ),
];

const INIT_DIRS: &[&str] = &[
    "inbox/architect",
    "inbox/engineer",
    "inbox/qa",
    "processed",
    "failed",
    "artifacts",
    "running",
];

pub fn init(workspace: &Path, dir: Option<&Path>) -> u8 {
    use std::os::unix::fs::PermissionsExt;
    let root = match dir {
        Some(d) => workspace.join(d),
        None => workspace.to_path_buf(),
    };
    let mut written = 0;
    let mut kept = 0;
    for d in INIT_DIRS {
        if let Err(err) = std::fs::create_dir_all(root.join(d)) {
            eprintln!("error: cannot create {}: {err}", root.join(d).display());
            return exit::STEP_FAILED;
        }
    }
    for (rel, content, executable) in INIT_FILES {
        let path = root.join(rel);
        if path.exists() {
            // Never overwrite what a user has.
            kept += 1;
            continue;
        }
        let result = std::fs::create_dir_all(path.parent().unwrap_or(&root))
            .and_then(|()| std::fs::write(&path, content))
            .and_then(|()| {
                if *executable {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                } else {
                    Ok(())
                }
            });
        if let Err(err) = result {
            eprintln!("error: cannot write {}: {err}", path.display());
            return exit::STEP_FAILED;
        }
        written += 1;
    }
    eprintln!(
        "initialized {} ({written} files written, {kept} already there and kept)\nnext: cd {} && orchestrate enqueue architect --text \"Design a rate limiter\" && orchestrate swarm up",
        root.display(),
        root.display()
    );
    exit::SUCCESS
}

/// `swarm up`: every role file is validated first; any problem stops it before anything starts.
pub async fn swarm_up(workspace: &Path, detach: bool, grace: std::time::Duration) -> u8 {
    use orchestrate_swarm::supervisor::{self, ChildSpec, Policy};
    let roles = match orchestrate_engine::role::load_all(workspace) {
        Ok(roles) if roles.is_empty() => {
            eprintln!(
                "error: no roles in {}; add agents/<role>.yaml or run `orchestrate init`",
                orchestrate_engine::role::agents_dir(workspace).display()
            );
            return exit::INVALID;
        }
        Ok(roles) => roles,
        Err(errors) => {
            print_load_errors(workspace, &errors);
            eprintln!("error: the swarm was not started: fix the problems above");
            return exit::INVALID;
        }
    };
    if let Err(error) = orchestrate_lang::load::load_swarm(workspace) {
        print_load_errors(workspace, &[error]);
        eprintln!("error: the swarm was not started: fix the problems above");
        return exit::INVALID;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe.display().to_string(),
        Err(err) => {
            eprintln!("error: cannot find the orchestrate executable: {err}");
            return exit::STEP_FAILED;
        }
    };
    let ws = workspace.display().to_string();
    if detach {
        // Refuse here, naming the running one, rather than detaching a second that fails.
        if let Ok(status) = supervisor::status(workspace)
            && let Some(running) = &status.supervisor
            && status.state != supervisor::SwarmState::Down
        {
            eprintln!(
                "error: failed to start the supervisor: another one (pid {}) is running in {}; see `orchestrate swarm status`, or stop it with `orchestrate swarm down`",
                running.pid,
                workspace.display()
            );
            return exit::INVALID;
        }
        let log = supervisor::swarm_dir(workspace).join("supervisor.log");
        if let Err(err) = std::fs::create_dir_all(supervisor::swarm_dir(workspace)) {
            eprintln!(
                "error: cannot create {}: {err}",
                supervisor::swarm_dir(workspace).display()
            );
            return exit::STEP_FAILED;
        }
        let argv = vec![
            exe,
            "--workspace".into(),
            ws,
            "swarm".into(),
            "up".into(),
            "--grace".into(),
            grace.as_secs_f64().to_string(),
        ];
        let pid = match supervisor::detach(&argv, &log) {
            Ok(pid) => pid,
            Err(err) => {
                eprintln!("error: failed to start the supervisor in the background: {err}");
                return exit::STEP_FAILED;
            }
        };
        return match tokio::task::spawn_blocking({
            let workspace = workspace.to_path_buf();
            move || supervisor::wait_up(&workspace, pid, std::time::Duration::from_secs(60))
        })
        .await
        {
            Ok(Ok(status)) => {
                print!("{}", supervisor::render_status(&status));
                eprintln!(
                    "supervisor running in the background (pid {pid}); log: {}",
                    orchestrate_base::fsutil::relative(workspace, &log)
                );
                exit::SUCCESS
            }
            Ok(Err(err)) => {
                eprintln!("error: {err}\n  see the log: {}", log.display());
                exit::STEP_FAILED
            }
            Err(err) => {
                eprintln!("error: {err}");
                exit::STEP_FAILED
            }
        };
    }
    let specs = move |role: &orchestrate_lang::model::Role| -> Vec<ChildSpec> {
        (1..=role.replicas)
            .map(|replica| ChildSpec {
                name: format!("{}#{replica}", role.name),
                role: role.name.clone(),
                replica,
                argv: vec![
                    exe.clone(),
                    "--workspace".into(),
                    ws.clone(),
                    "agent".into(),
                    role.name.clone(),
                    "--replica".into(),
                    replica.to_string(),
                    "--grace".into(),
                    grace.as_secs_f64().to_string(),
                ],
                // The role process stops when it outlives its supervisor (see worker).
                env: vec![(
                    orchestrate_swarm::worker::SUPERVISOR_PID_ENV.to_string(),
                    std::process::id().to_string(),
                )],
            })
            .collect()
    };
    let children: Vec<ChildSpec> = roles.iter().flat_map(|(role, _)| specs(role)).collect();
    // On a reload: every role file as it is now, each on its own (one broken file does not
    // stop the others).
    let roster: supervisor::Roster = {
        let workspace = workspace.to_path_buf();
        std::sync::Arc::new(move || {
            let mut children = Vec::new();
            let mut problems = Vec::new();
            for name in orchestrate_engine::role::names(&workspace) {
                match orchestrate_engine::role::load_one(&workspace, &name) {
                    Ok((role, _)) => children.extend(specs(&role)),
                    Err(errors) => problems.push(supervisor::RoleProblem {
                        message: orchestrate_engine::role::describe_errors(&workspace, &errors).0,
                        role: name,
                    }),
                }
            }
            (children, problems)
        })
    };
    let policy = Policy {
        grace: grace + std::time::Duration::from_secs(5),
        ..Policy::default()
    };
    // A role process that died while holding a task was (probably) killed by that task: the
    // task's attempts pay for it, not the role's restart budget.
    let ws_path = workspace.to_path_buf();
    let charge: supervisor::ChargeToTask = std::sync::Arc::new(move |role: &str, pid: u32| {
        let running = ws_path.join("running").join(role);
        std::fs::read_dir(running)
            .map(|entries| {
                entries.flatten().any(|e| {
                    std::fs::read(e.path().join("lease.json"))
                        .ok()
                        .and_then(|b| serde_json::from_slice::<queue::Lease>(&b).ok())
                        .is_some_and(|lease| lease.pid == pid)
                })
            })
            .unwrap_or(false)
    });
    let (stop, kill) = signal_pair();
    eprintln!(
        "starting {} role process(es); Ctrl-C stops them gracefully, a second Ctrl-C at once",
        children.len()
    );
    match supervisor::supervise_with(
        workspace,
        children,
        policy,
        charge,
        (stop, kill),
        Some(roster),
    )
    .await
    {
        Ok(report) => {
            eprintln!(
                "swarm stopped{}",
                if report.killed { " (killed)" } else { "" }
            );
            exit::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            match err {
                supervisor::SupervisorError::AlreadyRunning { .. } => exit::INVALID,
                _ => exit::STEP_FAILED,
            }
        }
    }
}

/// Tasks claimed right now, with their leases: what a graceful `swarm down` waits for.
fn in_flight(workspace: &Path) -> Vec<queue::Lease> {
    let mut leases: Vec<queue::Lease> = orchestrate_engine::role::known_layouts(workspace)
        .iter()
        .flat_map(|layout| {
            std::fs::read_dir(&layout.running)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    serde_json::from_slice(&std::fs::read(e.path().join("lease.json")).ok()?).ok()
                })
                .collect::<Vec<queue::Lease>>()
        })
        .collect();
    leases.sort_by(|a, b| (&a.role, &a.id).cmp(&(&b.role, &b.id)));
    leases
}

/// "2m3s" since an RFC 3339 time.
fn since(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .and_then(|t| chrono::Utc::now().signed_duration_since(t).to_std().ok())
        .map_or_else(|| "?".to_string(), |d| format!("{}s", d.as_secs()))
}

pub fn swarm_down(workspace: &Path, force: bool, timeout: std::time::Duration) -> u8 {
    use orchestrate_swarm::supervisor::SwarmState;
    let status = orchestrate_swarm::supervisor::status(workspace).ok();
    if let Some(status) = status.as_ref().filter(|s| s.state == SwarmState::Down) {
        // Role processes a dead supervisor left (they stop on their own once they notice; this
        // is sooner). Those started by hand (`orchestrate agent`) are not the swarm's to stop.
        let stopped = orchestrate_swarm::supervisor::stop_orphans(status, force);
        if stopped.is_empty() {
            eprintln!(
                "no swarm is running in {}; nothing to stop",
                workspace.display()
            );
            return exit::SUCCESS;
        }
        eprintln!(
            "no supervisor is running in {}, but {} role process(es) it left were: stopping them ({})",
            workspace.display(),
            stopped.len(),
            if force {
                "SIGKILL, with their steps"
            } else {
                "SIGTERM: they finish or hand back their tasks; --force kills them now"
            }
        );
        for (name, pid) in stopped {
            eprintln!("  {name} (pid {pid})");
        }
        return exit::SUCCESS;
    }
    let stopping = status
        .as_ref()
        .is_some_and(|s| s.state == SwarmState::Stopping);
    let tasks = in_flight(workspace);
    if !force && !stopping && !tasks.is_empty() {
        // The longest grace any role process was given (`swarm up --grace`).
        let grace = orchestrate_engine::role::ProcRecord::read_all(workspace)
            .iter()
            .filter_map(|r| r.grace_ms)
            .max()
            .map_or_else(
                || "its grace period".to_string(),
                |ms| format!("at most {}s", ms.div_ceil(1000)),
            );
        eprintln!(
            "stopping the swarm: no new claims; waiting for {} task(s) in flight to finish ({grace}, then they are stopped and go back to the inbox):",
            tasks.len()
        );
        for lease in &tasks {
            eprintln!(
                "  role {} task `{}` (attempt {}, role process pid {}, running for {})",
                lease.role,
                lease.id,
                lease.attempt,
                lease.pid,
                since(&lease.claimed_at)
            );
        }
        eprintln!("`orchestrate swarm down --force` stops them now (they go back to the inbox)");
    } else if stopping && !force {
        eprintln!(
            "the swarm is already stopping: killing it now (a second `swarm down` is --force)"
        );
    }
    match orchestrate_swarm::supervisor::down(workspace, timeout, force) {
        Ok(report) if report.exited => {
            eprintln!(
                "supervisor (pid {}) stopped after {} ms ({})",
                report.pid, report.waited_ms, report.signal
            );
            exit::SUCCESS
        }
        Ok(report) => {
            eprintln!(
                "supervisor (pid {}) is still stopping after {} ms (tasks in flight get their grace); run `orchestrate swarm down` again or add --force to kill it now",
                report.pid, report.waited_ms
            );
            exit::STEP_FAILED
        }
        Err(orchestrate_swarm::supervisor::SupervisorError::NotRunning { .. }) => {
            eprintln!(
                "no swarm is running in {}; nothing to stop",
                workspace.display()
            );
            exit::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            exit::STEP_FAILED
        }
    }
}

pub fn swarm_status(workspace: &Path, as_json: bool) -> u8 {
    match orchestrate_swarm::supervisor::status(workspace) {
        Ok(status) => {
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
            } else {
                print!("{}", orchestrate_swarm::supervisor::render_status(&status));
            }
            exit::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            exit::STEP_FAILED
        }
    }
}

/// `swarm reload`: SIGHUP to the supervisor (which starts added roles, stops removed ones and
/// passes the signal on to every role process), or, with no supervisor, to each live role
/// process; then waits for their answers and reports them per role process.
pub fn swarm_reload(workspace: &Path, timeout: std::time::Duration) -> u8 {
    use orchestrate_engine::role::{ProcRecord, ReloadOutcome};
    let status = match orchestrate_swarm::supervisor::status(workspace) {
        Ok(status) => status,
        Err(err) => {
            eprintln!("error: {err}");
            return exit::STEP_FAILED;
        }
    };
    let asked_at = chrono::Utc::now();
    let after = |at: &str| chrono::DateTime::parse_from_rfc3339(at).is_ok_and(|t| t >= asked_at);
    let hang_up = |pid: u32| -> bool {
        // Verified live by `status` (pid and start time) just before.
        orchestrate_base::process::kill(pid, libc::SIGHUP).is_ok()
    };
    let supervisor = status.supervisor.as_ref().map(|s| s.pid);
    let live = |status: &orchestrate_swarm::supervisor::SwarmStatus| -> Vec<u32> {
        status.children.iter().filter_map(|c| c.pid).collect()
    };
    match supervisor {
        Some(pid) => {
            if !hang_up(pid) {
                eprintln!(
                    "error: failed to signal the supervisor (pid {pid}); is it still running? see `orchestrate swarm status`"
                );
                return exit::STEP_FAILED;
            }
        }
        None => {
            let pids = live(&status);
            if pids.is_empty() {
                eprintln!(
                    "no swarm is running in {}; nothing to reload (role processes load their files when they start)",
                    workspace.display()
                );
                return exit::SUCCESS;
            }
            for pid in pids {
                hang_up(pid);
            }
        }
    }
    // Done when the supervisor has reloaded and every role process it runs has answered.
    let deadline = std::time::Instant::now() + timeout;
    let (records, status) = loop {
        let status = orchestrate_swarm::supervisor::status(workspace).ok();
        let file: Option<Value> =
            std::fs::read(orchestrate_swarm::supervisor::status_path(workspace))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
        let supervisor_done = supervisor.is_none()
            || file
                .as_ref()
                .and_then(|f| f["reloaded_at"].as_str())
                .is_some_and(after);
        let records: Vec<ProcRecord> = ProcRecord::read_all(workspace);
        let pids = status.as_ref().map(&live).unwrap_or_default();
        let answered = status.as_ref().is_some_and(|s| {
            s.children
                .iter()
                .filter(|c| {
                    c.state == orchestrate_swarm::supervisor::ChildState::Running
                        || supervisor.is_none()
                })
                .all(|c| {
                    records
                        .iter()
                        .any(|r| Some(r.pid) == c.pid && after(&r.checked_at))
                })
        });
        if (supervisor_done && answered) || std::time::Instant::now() >= deadline {
            let records = records
                .into_iter()
                .filter(|r| pids.contains(&r.pid))
                .collect::<Vec<_>>();
            break (records, status);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut refused = false;
    let short = |h: &str| h[..h.len().min(12)].to_string();
    for record in &records {
        let name = format!("{}#{}", record.role, record.replica);
        let line = if !after(&record.checked_at) {
            format!(
                "{name}: no answer within {}s (pid {})",
                timeout.as_secs(),
                record.pid
            )
        } else {
            match &record.reload {
                ReloadOutcome::Started => {
                    format!(
                        "{name}: started on workflow {}",
                        short(&record.workflow_hash)
                    )
                }
                ReloadOutcome::Unchanged => {
                    format!(
                        "{name}: unchanged (workflow {})",
                        short(&record.workflow_hash)
                    )
                }
                ReloadOutcome::Reloaded { previous_hash } => format!(
                    "{name}: reloaded, workflow {} -> {}; new tasks run on it",
                    short(previous_hash),
                    short(&record.workflow_hash)
                ),
                ReloadOutcome::Kept { error, .. } => {
                    refused = true;
                    format!(
                        "{name}: edit refused, keeps running workflow {}: {error}",
                        short(&record.workflow_hash)
                    )
                }
            }
        };
        println!("{line}");
    }
    if let Some(status) = &status {
        for child in &status.children {
            if child.state == orchestrate_swarm::supervisor::ChildState::Stopping {
                println!(
                    "{}: stopping (its role file is gone); finishes its task first",
                    child.name
                );
            } else if child.state == orchestrate_swarm::supervisor::ChildState::Starting {
                println!("{}: starting (new role file)", child.name);
            }
        }
        for load in &status.roles {
            if let Some(why) = &load.not_started {
                refused = true;
                println!("role {}: not started: {why}", load.role);
            }
        }
    }
    if refused {
        eprintln!(
            "error: some edits were refused; the roles named above keep running their previous version"
        );
        exit::INVALID
    } else {
        exit::SUCCESS
    }
}
