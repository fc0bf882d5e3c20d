//! The queue's commands: `enqueue`, `tasks`, `show`, `retry`, `trace`.
//!
//! Owns: what each prints and its exit code, on top of `queue` and `role`. Does not implement
//! the queue protocol (`orchestrate_queue::queue`).

use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};

use orchestrate_queue::queue::{self, Layout, TaskInfo, TaskState};
use orchestrate_queue::record::{TaskStatus, WorktreeInfo};

use crate::error::{Error, Outcome};

/// Refuses a task over the size limit (`size`: its byte count, or "more than N" for a stream).
fn too_big(size: &str, limit: u64) -> Outcome {
    Err(Error::invalid(format!(
        "the task is {size} bytes, over the {limit}-byte limit; put large inputs in a file under the workspace and name it in the task",
    )))
}

pub(crate) fn enqueue(
    workspace: &Path,
    role: &str,
    file: Option<&Path>,
    text: Option<&str>,
    stdin: Option<&str>,
    name: Option<&str>,
    correlation_id: Option<&str>,
) -> Outcome {
    let layout = match orchestrate_engine::role::layout_of_defined(workspace, role) {
        Ok(layout) => layout,
        Err(message) => {
            return Err(Error::invalid(message));
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
                        return Err(Error::invalid(format!(
                            "cannot read {}: {err}",
                            path.display()
                        )));
                    }
                },
                Err(err) => {
                    return Err(Error::invalid(format!(
                        "cannot read {}: {err}",
                        path.display()
                    )));
                }
            }
        }
        (None, Some(text), None) => text.as_bytes().to_vec(),
        (None, None, Some("-")) => match bounded(&mut std::io::stdin()) {
            Ok(bytes) => bytes,
            Err(err) => {
                return Err(Error::invalid(format!("cannot read standard input: {err}")));
            }
        },
        _ => {
            return Err(Error::invalid(
                "give the task with exactly one of --file F, --text T or - (standard input)",
            ));
        }
    };
    if content.len() as u64 > limit {
        return too_big(&format!("more than {limit}"), limit);
    }
    // The swarm's database when it has one (spooled into the inbox while it is unreachable).
    let database =
        orchestrate_swarm::worker::open_queue(workspace, &layout).map_err(Error::invalid)?;
    let enqueued = match &database {
        Some(db) => {
            queue::TaskQueue::enqueue(db, name, &content, correlation_id, "orchestrate enqueue")
        }
        None => queue::enqueue(
            &layout,
            name,
            &content,
            correlation_id,
            "orchestrate enqueue",
        ),
    };
    match enqueued {
        Ok(task) => {
            if let Some(why) = &task.spooled {
                eprintln!(
                    "{why}; spooled into {}: it is queued once a role process on this machine reaches the database",
                    task.file
                );
            }
            println!("{}", task.file);
            Ok(ExitCode::SUCCESS)
        }
        Err(err @ (queue::QueueError::Backend { .. } | queue::QueueError::Unavailable { .. })) => {
            Err(Error::failed(err.to_string()))
        }
        Err(err @ queue::QueueError::Io { .. }) => Err(Error::failed(err.to_string())),
        Err(err) => Err(Error::invalid(err.to_string())),
    }
}

pub(crate) fn tasks(
    workspace: &Path,
    role: Option<&str>,
    state: Option<TaskState>,
    as_json: bool,
) -> Outcome {
    let layouts = match role {
        Some(name) => match orchestrate_engine::role::layout_for(workspace, name) {
            Ok(layout) => vec![layout],
            Err(message) => {
                return Err(Error::invalid(message));
            }
        },
        None => orchestrate_engine::role::known_layouts(workspace),
    };
    // A failed record that was retried is shown through the entry that superseded it.
    let mut list: Vec<TaskInfo> = layouts
        .iter()
        .flat_map(|layout| with_inbox_extras(layout, queue::list(layout)))
        .filter(|t| !t.retried)
        .filter(|t| state.is_none_or(|s| t.state == s))
        .collect();
    if let Some(url) = super::cluster::url(workspace) {
        add_cluster_rows(&url, &mut list, role, state);
    }
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        eprintln!("no tasks");
        return Ok(ExitCode::SUCCESS);
    }
    let cluster = list.iter().any(|t| t.machine.is_some());
    if cluster {
        println!(
            "{:<12} {:<10} {:<8} {:<14} {:<40} PATH",
            "ROLE", "STATE", "ATTEMPT", "MACHINE", "TASK"
        );
    } else {
        println!(
            "{:<12} {:<10} {:<8} {:<40} PATH",
            "ROLE", "STATE", "ATTEMPT", "TASK"
        );
    }
    for t in &list {
        let attempt = t
            .attempt
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        if cluster {
            println!(
                "{:<12} {:<10} {:<8} {:<14} {:<40} {}",
                t.role,
                t.state,
                attempt,
                t.machine.as_deref().unwrap_or("-"),
                t.id,
                t.path
            );
        } else {
            println!(
                "{:<12} {:<10} {:<8} {:<40} {}",
                t.role, t.state, attempt, t.id, t.path
            );
        }
        for note in notes(t) {
            println!("    {note}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The most rows of the queue database `tasks` lists (newest first).
const CLUSTER_ROWS: i64 = 10_000;

/// Adds to this machine's `list` what the queue database knows that it does not show: tasks
/// queued in the database, running or finished on other machines (and names the machine of
/// this machine's own). Unreachable: said, and this machine's tasks are listed alone.
fn add_cluster_rows(
    url: &str,
    list: &mut Vec<TaskInfo>,
    role: Option<&str>,
    state: Option<TaskState>,
) {
    let (r, s) = (
        role.map(str::to_string),
        state.map(|s| s.name().to_string()),
    );
    let rows = match super::cluster::with_db(
        url,
        Box::new(move |db| {
            Box::pin(async move {
                orchestrate_pg::control::tasks(db, r.as_deref(), s.as_deref(), None, CLUSTER_ROWS)
                    .await
            })
        }),
    ) {
        Ok(rows) => rows,
        Err(err) => {
            eprintln!("{err}: listing this machine's tasks only");
            return;
        }
    };
    let here = orchestrate_swarm::worker::machine();
    for t in list.iter_mut() {
        if matches!(
            t.state,
            TaskState::Running | TaskState::Processed | TaskState::Failed
        ) {
            t.machine = Some(here.clone());
        }
    }
    let mut extra = Vec::new();
    for row in rows.into_iter().rev() {
        // The database's states are the first four (its CHECK constraint).
        let state = TaskState::of_name(&row.state).unwrap_or(TaskState::Failed);
        let machine = row.machine.clone();
        if machine.as_deref() == Some(here.as_str())
            && list
                .iter()
                .any(|t| t.role == row.role && t.id == row.id && t.state == state)
        {
            continue;
        }
        let path = match (&machine, state) {
            (_, TaskState::Queued) => "(queued in the database)".to_string(),
            (Some(m), TaskState::Running) => format!("(running on {m})"),
            (Some(m), _) => format!("({} on {m})", state.name()),
            (None, _) => format!("({} before it ran)", state.name()),
        };
        extra.push(TaskInfo {
            role: row.role.clone(),
            id: row.id.clone(),
            state,
            path,
            attempt: u32::try_from(row.attempt).ok().filter(|a| *a > 0),
            finished: row.finished_at.clone(),
            holder_dead: None,
            refused: None,
            earlier: Vec::new(),
            retried: false,
            reason: row.holder.as_ref().map(|h| format!("held by {h}")),
            machine: Some(machine.unwrap_or_else(|| "-".into())),
        });
    }
    list.extend(extra);
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

pub(crate) fn show(workspace: &Path, needle: &str, as_json: bool) -> Outcome {
    let matches = orchestrate_engine::role::find_tasks(workspace, needle);
    if matches.is_empty()
        && let Some(url) = super::cluster::url(workspace)
    {
        return show_from_cluster(&url, needle, as_json);
    }
    if matches.is_empty() {
        return Err(Error::invalid(format!(
            "no task `{needle}` in any inbox, running/, processed/ or failed/; list them with `orchestrate tasks`"
        )));
    }
    let shown: Vec<Shown> = matches.iter().map(|t| gather(workspace, t)).collect();
    if as_json {
        let out: Vec<&Value> = shown.iter().map(|s| &s.json).collect();
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    for (entry, info) in shown.iter().zip(&matches) {
        print_entry(entry, info);
    }
    Ok(ExitCode::SUCCESS)
}

/// `show` of a task this machine has no record of, from the queue database: its rows (the
/// current one and archived ones), which machine ran it, and its status.
fn show_from_cluster(url: &str, needle: &str, as_json: bool) -> Outcome {
    let id = needle.to_string();
    let rows = super::cluster::with_db(
        url,
        Box::new(move |db| {
            Box::pin(
                async move { orchestrate_pg::control::tasks(db, None, None, Some(&id), 50).await },
            )
        }),
    )
    .map_err(|e| {
        Error::failed(format!(
            "no task `{needle}` on this machine, and the queue database cannot tell of others: {e}"
        ))
    })?;
    if rows.is_empty() {
        return Err(Error::invalid(format!(
            "no task `{needle}` on this machine or in the queue database; list them with `orchestrate tasks`"
        )));
    }
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for row in &rows {
        println!("task {} of role {}: {}", row.id, row.role, row.state);
        let machine = row.machine.as_deref().unwrap_or("-");
        println!("  attempt:     {}", row.attempt);
        println!("  machine:     {machine}");
        if let Some(holder) = &row.holder {
            println!("  held by:     {holder}");
        }
        if let Some(c) = &row.correlation_id {
            println!("  correlation: {c}");
        }
        println!("  queued:      {}", row.enqueued_at);
        if let Some(at) = &row.claimed_at {
            println!("  claimed:     {at}");
        }
        if let Some(at) = &row.finished_at {
            println!("  finished:    {at}");
        }
        if let Some(status) = &row.status
            && let Some(message) = status["message"].as_str()
        {
            println!("  message:     {message}");
        }
        match row.state.as_str() {
            "processed" | "failed" if row.machine.is_some() => println!(
                "  records:     {}/ on machine {machine} (`orchestrate show {}` there)",
                row.state, row.id
            ),
            "running" => println!(
                "  records:     running/{}/{} on machine {machine}",
                row.role, row.id
            ),
            _ => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `show` knows of one entry of a task: its record, lease, queue sidecar, logs and
/// worktree, read through their types for the text, and as found on disk for `show --json`.
struct Shown {
    /// `{task, status, lease, queue, logs, worktree}`: the files as they are, so that `--json`
    /// shows a record that this version cannot read as well.
    json: Value,
    status: Option<TaskStatus>,
    lease: Option<queue::Lease>,
    meta: Option<queue::Meta>,
    logs: Vec<String>,
    worktree: Option<WorktreeInfo>,
}

fn gather(workspace: &Path, t: &TaskInfo) -> Shown {
    let path = workspace.join(&t.path);
    // Nothing is read through an entry that leads outside the workspace.
    let dir = (t.refused.is_none() && path.is_dir()).then(|| path.clone());
    let read = |name: &str| -> Option<Vec<u8>> {
        orchestrate_base::fsutil::read_inside(workspace, &dir.as_ref()?.join(name))
    };
    let status_bytes = read("status.json");
    let lease_bytes = read("lease.json");
    let meta_bytes = orchestrate_base::fsutil::read_inside(
        workspace,
        &workspace
            .join(".orchestrate/queue")
            .join(&t.role)
            .join(format!("{}.json", t.id)),
    );
    let raw = |bytes: &Option<Vec<u8>>| -> Option<Value> {
        serde_json::from_slice(bytes.as_deref()?).ok()
    };
    let (status_json, lease_json, meta_json) =
        (raw(&status_bytes), raw(&lease_bytes), raw(&meta_bytes));
    let status = status_bytes.as_deref().and_then(TaskStatus::from_bytes);
    let lease = lease_bytes
        .as_deref()
        .and_then(|b| serde_json::from_slice::<queue::Lease>(b).ok());
    let meta = meta_bytes
        .as_deref()
        .and_then(|b| serde_json::from_slice::<queue::Meta>(b).ok());
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
        .and_then(|s| s.worktree.clone())
        .or_else(|| {
            let owner = orchestrate_engine::worktree::Owner::Task {
                role: t.role.clone(),
                task: t.id.clone(),
            };
            orchestrate_engine::worktree::record_of(workspace, &owner)
                .filter(|r| r.path.is_dir())
                .map(|r| r.status(workspace, true))
        });
    Shown {
        json: json!({"task": t, "status": status_json, "lease": lease_json, "queue": meta_json, "logs": logs, "worktree": worktree}),
        status,
        lease,
        meta,
        logs,
        worktree,
    }
}

/// One entry of a task as `show` prints it.
fn print_entry(entry: &Shown, info: &TaskInfo) {
    println!(
        "task {} (role {}): {}",
        info.id,
        info.role,
        info.state.name()
    );
    println!("  path: {}", info.path);
    for note in notes(info) {
        println!("  {note}");
    }
    if let Some(w) = &entry.worktree {
        println!(
            "  worktree: {} (branch {}{})",
            w.path,
            w.branch,
            if !w.kept {
                "; removed after the success"
            } else {
                ""
            }
        );
    }
    if let Some(status) = &entry.status {
        println!(
            "  result: {} (exit {})",
            if status.success { "success" } else { "failure" },
            status.exit_code
        );
        // A failed step's message carries its stderr's last lines.
        let fields = [
            ("message", Some(status.message.clone())),
            ("correlation_id", status.correlation_id.clone()),
            ("run_id", status.run_id.clone()),
            ("attempt", status.attempt.map(|a| a.to_string())),
            ("step", status.step.clone()),
            (
                "step_exit_code",
                status.step_exit_code.map(|c| c.to_string()),
            ),
        ];
        for (key, value) in fields {
            if let Some(text) = value {
                println!("  {key}: {}", text.replace('\n', "\n    "));
            }
        }
        for action in &status.next_actions {
            println!("  next: {} {}", action.agent, action.file);
        }
    }
    if let Some(lease) = entry
        .lease
        .as_ref()
        .filter(|_| info.state == TaskState::Running)
    {
        let dead = if info.holder_dead.is_some() {
            " (dead)"
        } else {
            ""
        };
        println!(
            "  held by pid {}{dead} since {} (attempt {})",
            lease.pid, lease.claimed_at, lease.attempt
        );
    }
    // A finished task's history is in its record; a queued or running one's in the sidecar.
    let history = match (&entry.status, &entry.meta) {
        (Some(status), _) => status.history.as_slice(),
        (None, Some(meta)) => meta.history.as_slice(),
        (None, None) => &[],
    };
    for h in history {
        let link = match (&h.record, &h.run_id) {
            (Some(record), Some(run)) => format!(" (record {record}, run {run})"),
            (Some(record), None) => format!(" (record {record})"),
            _ => String::new(),
        };
        println!(
            "  earlier attempt {}{link}: {}",
            h.attempt,
            h.reason.replace('\n', "\n    ")
        );
    }
    for log in &entry.logs {
        println!("  log: {log}");
    }
}

pub(crate) fn retry(workspace: &Path, needle: &str) -> Outcome {
    let found = orchestrate_engine::role::find_tasks(workspace, needle);
    let failed: Vec<&TaskInfo> = found
        .iter()
        .filter(|t| t.state == TaskState::Failed && !t.retried)
        .collect();
    if failed.is_empty()
        && let Some(url) = super::cluster::url(workspace)
    {
        return retry_in_cluster(&url, needle);
    }
    let Some(task) = failed.last() else {
        return Err(Error::invalid(match found.iter().find(|t| t.retried) {
            Some(t) => format!(
                "the failed record {} of `{needle}` was retried already; \
                 `orchestrate show {needle}` says where the task is now",
                t.path
            ),
            None => {
                format!("no failed task `{needle}`; `orchestrate tasks --state failed` lists them")
            }
        }));
    };
    let layout = match orchestrate_engine::role::layout_for(workspace, &task.role) {
        Ok(layout) => layout,
        Err(message) => {
            return Err(Error::invalid(message));
        }
    };
    match queue::retry(&layout, &workspace.join(&task.path)) {
        Ok(queued) => {
            println!("{}", queued.file);
            eprintln!(
                "`{}` is queued again for {} (attempts reset); its failed record stays in {}",
                queued.id, queued.role, task.path
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => Err(Error::failed(err.to_string())),
    }
}

/// Adds to a trace what the queue database knows of correlation id (or task) `id` that this
/// machine has no record of: tasks queued, running or ended on other machines.
fn trace_cluster(url: &str, id: &str, events: &mut Vec<Traced>) {
    let needle = id.to_string();
    let rows = match super::cluster::with_db(
        url,
        Box::new(move |db| {
            Box::pin(async move {
                orchestrate_pg::control::tasks(db, None, None, Some(&needle), CLUSTER_ROWS).await
            })
        }),
    ) {
        Ok(rows) => rows,
        Err(err) => {
            eprintln!("{err}: tracing this machine's records only");
            return;
        }
    };
    let here = orchestrate_swarm::worker::machine();
    for row in rows {
        // The database's states are the first four (its CHECK constraint).
        let state = TaskState::of_name(&row.state).unwrap_or(TaskState::Failed);
        if events
            .iter()
            .any(|e| e.role == row.role && e.task == row.id && e.state == state)
        {
            continue;
        }
        let machine = row.machine.clone().unwrap_or_else(|| "-".into());
        if machine == here && matches!(state, TaskState::Processed | TaskState::Failed) {
            continue;
        }
        let next = row
            .status
            .as_ref()
            .and_then(|s| s["next_actions"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|n| Some(format!("{}/{}", n["agent"].as_str()?, n["task"].as_str()?)))
            .collect();
        events.push(Traced {
            when: row
                .finished_at
                .clone()
                .or(row.claimed_at.clone())
                .unwrap_or(row.enqueued_at.clone()),
            path: match state {
                TaskState::Queued => "(queued in the database)".into(),
                _ => format!("(on machine {machine})"),
            },
            role: row.role,
            task: row.id,
            state,
            detail: row.status.unwrap_or(Value::Null),
            next,
        });
    }
}

/// `retry` of a task that failed on another machine: queued again from its row in the database.
fn retry_in_cluster(url: &str, needle: &str) -> Outcome {
    let (id, source) = (
        needle.to_string(),
        format!("orchestrate retry:{}", super::cluster::who()),
    );
    let answer = super::cluster::with_db(
        url,
        Box::new(move |db| {
            Box::pin(async move { orchestrate_pg::control::retry(db, &id, &source).await })
        }),
    )
    .map_err(|e| {
        Error::failed(format!(
            "retrying `{needle}` through the queue database: {e}"
        ))
    })?;
    match answer {
        orchestrate_pg::control::Retry::Queued(role) => {
            eprintln!(
                "`{needle}` is queued again for {role} in the queue database (attempts reset); its failed record stays where it ran"
            );
            Ok(ExitCode::SUCCESS)
        }
        orchestrate_pg::control::Retry::NotFailed(state) => Err(Error::invalid(format!(
            "task `{needle}` is {state} in the queue database, not failed; `orchestrate show {needle}` says more"
        ))),
        orchestrate_pg::control::Retry::NotFound => Err(Error::invalid(format!(
            "no failed task `{needle}` on this machine or in the queue database; `orchestrate tasks --state failed` lists them"
        ))),
    }
}

/// One task entry on a correlation id's timeline. The fields are in the order `trace --json`
/// has always printed them (alphabetical).
#[derive(serde::Serialize)]
struct Traced {
    /// The record or queue sidecar as found.
    detail: Value,
    path: String,
    role: String,
    state: TaskState,
    task: String,
    /// When its record was written (finished) or the task enqueued (queued, running).
    when: String,
    /// The tasks it handed on (a finished task's `next_actions`), as `role/task`.
    #[serde(skip)]
    next: Vec<String>,
}

pub(crate) fn trace(workspace: &Path, id: &str, as_json: bool) -> Outcome {
    let mut events: Vec<Traced> = Vec::new();
    for layout in orchestrate_engine::role::known_layouts(workspace) {
        for t in queue::list(&layout) {
            let path = workspace.join(&t.path);
            let bytes = match t.state {
                // Nothing is read through an entry that leads outside the workspace.
                _ if t.refused.is_some() => continue,
                TaskState::Processed | TaskState::Failed => {
                    orchestrate_base::fsutil::read_inside(workspace, &path.join("status.json"))
                }
                _ => std::fs::read(layout.meta.join(format!("{}.json", t.id))).ok(),
            };
            let detail: Value = bytes
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            let (correlation, when, next) = match t.state {
                TaskState::Processed | TaskState::Failed => {
                    let status = bytes
                        .as_deref()
                        .and_then(TaskStatus::from_bytes)
                        .unwrap_or_default();
                    let next = status
                        .next_actions
                        .iter()
                        .map(|n| format!("{}/{}", n.agent, n.task))
                        .collect();
                    (status.correlation_id, status.timestamp, next)
                }
                _ => {
                    let meta = bytes
                        .as_deref()
                        .and_then(|b| serde_json::from_slice::<queue::Meta>(b).ok())
                        .unwrap_or_default();
                    (
                        meta.correlation_id,
                        meta.enqueued_at.unwrap_or_default(),
                        Vec::new(),
                    )
                }
            };
            if correlation.as_deref() == Some(id) || t.id == id {
                events.push(Traced {
                    when,
                    role: t.role,
                    task: t.id,
                    state: t.state,
                    path: t.path,
                    detail,
                    next,
                });
            }
        }
    }
    if let Some(url) = super::cluster::url(workspace) {
        trace_cluster(&url, id, &mut events);
    }
    events.sort_by(|a, b| a.when.cmp(&b.when));
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&events).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if events.is_empty() {
        return Err(Error::invalid(format!(
            "nothing carries correlation id `{id}`"
        )));
    }
    for e in &events {
        let next = if e.next.is_empty() {
            String::new()
        } else {
            format!(" -> {}", e.next.join(", "))
        };
        println!(
            "{}  {:<10} {:<10} {}{next}",
            e.when,
            e.role,
            e.state.name(),
            e.path
        );
    }
    Ok(ExitCode::SUCCESS)
}
