//! The supervisor's commands: `swarm up`, `swarm down`, `swarm status`, `swarm reload`.
//!
//! Owns: what each prints and its exit code. Does not supervise anything itself
//! (`orchestrate_swarm::supervisor` does).

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use orchestrate_engine::runner::exit;
use orchestrate_queue::queue;

use super::loading::print_load_errors;
use super::signals::signal_pair;
use crate::error::{Error, Outcome};

/// `swarm up`: every role file is validated first; any problem stops it before anything starts.
pub(crate) async fn swarm_up(
    workspace: &Path,
    detach: bool,
    grace: std::time::Duration,
) -> Outcome {
    use orchestrate_swarm::supervisor::{self, ChildSpec, Policy};
    let roles = load_roles(workspace)?;
    check_database(workspace)?;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe.display().to_string(),
        Err(err) => {
            return Err(Error::failed(format!(
                "cannot find the orchestrate executable: {err}"
            )));
        }
    };
    let ws = workspace.display().to_string();
    if detach {
        return up_detached(workspace, exe, grace).await;
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
            Ok(ExitCode::SUCCESS)
        }
        Err(err @ supervisor::SupervisorError::AlreadyRunning { .. }) => {
            Err(Error::invalid(err.to_string()))
        }
        Err(err) => Err(Error::failed(err.to_string())),
    }
}

/// On a queue database: refuses to start on one never migrated (or newer than this binary), with
/// the command that fixes it; says so and starts when it cannot be reached (the role processes
/// wait for it).
fn check_database(workspace: &Path) -> Result<(), Error> {
    let Some(url) = super::cluster::url(workspace) else {
        return Ok(());
    };
    let found = super::cluster::with_db(
        &url,
        Box::new(|db| Box::pin(async move { orchestrate_pg::schema_version(db).await })),
    );
    let target = orchestrate_pg::Target::of_url(&url);
    match found {
        Ok(Some(version)) if version == orchestrate_pg::LATEST => Ok(()),
        Ok(found) if found.unwrap_or(0) < orchestrate_pg::LATEST => Err(Error::invalid(
            orchestrate_pg::DbError::NotMigrated {
                target,
                found: found.unwrap_or(0),
                needed: orchestrate_pg::LATEST,
            }
            .to_string(),
        )),
        Ok(found) => Err(Error::invalid(
            orchestrate_pg::DbError::TooNew {
                target,
                found: found.unwrap_or(0),
                known: orchestrate_pg::LATEST,
            }
            .to_string(),
        )),
        Err(err) => {
            eprintln!(
                "warning: {err}; starting all the same: the role processes wait for it, and files dropped meanwhile wait in the inboxes"
            );
            Ok(())
        }
    }
}

/// Every role and the swarm settings, checked: their problems are printed and stop `swarm up`.
fn load_roles(
    workspace: &Path,
) -> Result<
    Vec<(
        orchestrate_lang::model::Role,
        orchestrate_lang::model::Workflow,
    )>,
    Error,
> {
    let roles = match orchestrate_engine::role::load_all(workspace) {
        Ok(roles) if roles.is_empty() => {
            return Err(Error::invalid(format!(
                "no roles in {}; add agents/<role>.yaml or run `orchestrate init`",
                orchestrate_engine::role::agents_dir(workspace).display()
            )));
        }
        Ok(roles) => roles,
        Err(errors) => {
            print_load_errors(workspace, &errors);
            return Err(Error::invalid(
                "the swarm was not started: fix the problems above",
            ));
        }
    };
    if let Err(error) = orchestrate_lang::load::load_swarm(workspace) {
        print_load_errors(workspace, &[error]);
        return Err(Error::invalid(
            "the swarm was not started: fix the problems above",
        ));
    }
    Ok(roles)
}

/// `swarm up --detach`: the supervisor started in the background, and its first status once
/// every role is running.
async fn up_detached(workspace: &Path, exe: String, grace: std::time::Duration) -> Outcome {
    use orchestrate_swarm::supervisor;
    let ws = workspace.display().to_string();
    // Refuse here, naming the running one, rather than detaching a second that fails.
    if let Ok(status) = supervisor::status(workspace)
        && let Some(running) = &status.supervisor
        && status.state != supervisor::SwarmState::Down
    {
        return Err(Error::invalid(format!(
            "failed to start the supervisor: another one (pid {}) is running in {}; see `orchestrate swarm status`, or stop it with `orchestrate swarm down`",
            running.pid,
            workspace.display()
        )));
    }
    let log = supervisor::swarm_dir(workspace).join("supervisor.log");
    if let Err(err) = std::fs::create_dir_all(supervisor::swarm_dir(workspace)) {
        return Err(Error::failed(format!(
            "cannot create {}: {err}",
            supervisor::swarm_dir(workspace).display()
        )));
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
            return Err(Error::failed(format!(
                "failed to start the supervisor in the background: {err}"
            )));
        }
    };
    match tokio::task::spawn_blocking({
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
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(err)) => Err(Error::failed(format!(
            "{err}\n  see the log: {}",
            log.display()
        ))),
        Err(err) => Err(Error::failed(err.to_string())),
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

/// The time since an RFC 3339 time, for people (`12.4s`, `5m03s`); `?` when it cannot be read.
fn since(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .and_then(|t| chrono::Utc::now().signed_duration_since(t).to_std().ok())
        .map_or_else(|| "?".to_string(), orchestrate_base::human::duration)
}

pub(crate) fn swarm_down(workspace: &Path, force: bool, timeout: std::time::Duration) -> Outcome {
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
            return Ok(ExitCode::SUCCESS);
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
        return Ok(ExitCode::SUCCESS);
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
            Ok(ExitCode::SUCCESS)
        }
        Ok(report) => {
            eprintln!(
                "supervisor (pid {}) is still stopping after {} ms (tasks in flight get their grace); run `orchestrate swarm down` again or add --force to kill it now",
                report.pid, report.waited_ms
            );
            Ok(ExitCode::from(exit::STEP_FAILED))
        }
        Err(orchestrate_swarm::supervisor::SupervisorError::NotRunning { .. }) => {
            eprintln!(
                "no swarm is running in {}; nothing to stop",
                workspace.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => Err(Error::failed(err.to_string())),
    }
}

pub(crate) fn swarm_status(workspace: &Path, as_json: bool) -> Outcome {
    let status = orchestrate_swarm::supervisor::status(workspace)
        .map_err(|err| Error::failed(err.to_string()))?;
    let cluster = super::cluster::url(workspace).map(|url| cluster_status(&url));
    if as_json {
        let mut value = serde_json::to_value(&status).unwrap_or_default();
        if let Some(cluster) = cluster {
            value["cluster"] = match cluster {
                Ok(c) => serde_json::json!({
                    "machines_heard_within_sec": HEARD_WITHIN_SEC,
                    "role_processes": c.workers,
                    "roles": c.depths,
                    "paused": c.pauses.iter().map(|(role, p)| serde_json::json!({"role": role, "by": p.by, "since": p.since})).collect::<Vec<_>>(),
                }),
                Err(err) => serde_json::json!({"error": err}),
            };
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print!("{}", orchestrate_swarm::supervisor::render_status(&status));
        match cluster {
            Some(Ok(c)) => print!("{}", render_cluster(&c)),
            Some(Err(err)) => println!("\ncluster: {err}"),
            None => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Role processes not heard of for this long are not listed (they say so every 5 s).
const HEARD_WITHIN_SEC: f64 = 30.0;

/// What the queue database says of the whole cluster.
struct Cluster {
    workers: Vec<orchestrate_pg::control::Worker>,
    depths: Vec<orchestrate_pg::control::Depth>,
    pauses: Vec<(String, orchestrate_pg::control::Asked)>,
}

fn cluster_status(url: &str) -> Result<Cluster, String> {
    super::cluster::with_db(
        url,
        Box::new(|db| {
            Box::pin(async move {
                Ok(Cluster {
                    workers: orchestrate_pg::control::workers(db, HEARD_WITHIN_SEC).await?,
                    depths: orchestrate_pg::control::depths(db).await?,
                    pauses: orchestrate_pg::control::pauses(db).await?,
                })
            })
        }),
    )
    .map_err(|e| e.to_string())
}

fn render_cluster(c: &Cluster) -> String {
    let mut out = String::from("\ncluster (the queue database):\n");
    out.push_str(&format!(
        "  {:<12} {:>7} {:>8} {:>16} {:>13}  PAUSED\n",
        "ROLE", "QUEUED", "RUNNING", "PROCESSED TODAY", "FAILED TODAY"
    ));
    for d in &c.depths {
        let paused = c
            .pauses
            .iter()
            .find(|(role, _)| role == &d.role)
            .map(|(_, p)| format!("since {} by {}", p.since, p.by))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "  {:<12} {:>7} {:>8} {:>16} {:>13}  {paused}\n",
            d.role, d.queued, d.running, d.processed_today, d.failed_today
        ));
    }
    out.push_str(&format!(
        "  {:<14} {:<14} {:>7} {:>8} {:>8}  {:<10} LABELS\n",
        "MACHINE", "ROLE", "REPLICA", "PID", "HOLDING", "RUNS"
    ));
    for w in &c.workers {
        out.push_str(&format!(
            "  {:<14} {:<14} {:>7} {:>8} {:>8}  {:<10} {}\n",
            w.machine,
            w.role,
            w.replica,
            w.pid,
            w.holding,
            if w.runs { "tasks" } else { "take-in" },
            if w.labels.is_empty() {
                "-".to_string()
            } else {
                w.labels.join(",")
            }
        ));
    }
    if c.workers.is_empty() {
        out.push_str(&format!(
            "  no role process heard of in the last {HEARD_WITHIN_SEC:.0} s\n"
        ));
    }
    out
}

/// `swarm reload`: SIGHUP to the supervisor (which starts added roles, stops removed ones and
/// passes the signal on to every role process), or, with no supervisor, to each live role
/// process; then waits for their answers and reports them per role process.
pub(crate) fn swarm_reload(workspace: &Path, timeout: std::time::Duration) -> Outcome {
    use orchestrate_engine::role::ProcRecord;
    let status = match orchestrate_swarm::supervisor::status(workspace) {
        Ok(status) => status,
        Err(err) => {
            return Err(Error::failed(err.to_string()));
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
                return Err(Error::failed(format!(
                    "failed to signal the supervisor (pid {pid}); is it still running? see `orchestrate swarm status`"
                )));
            }
        }
        None => {
            let pids = live(&status);
            if pids.is_empty() {
                eprintln!(
                    "no swarm is running in {}; nothing to reload (role processes load their files when they start)",
                    workspace.display()
                );
                return Ok(ExitCode::SUCCESS);
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
    let refused = print_answers(&records, status.as_ref(), timeout, asked_at);
    if refused {
        Err(Error::invalid(
            "some edits were refused; the roles named above keep running their previous version",
        ))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// One line per role process about its answer to the reload (and per role the supervisor did
/// not start); whether an edit was refused.
fn print_answers(
    records: &[orchestrate_engine::role::ProcRecord],
    status: Option<&orchestrate_swarm::supervisor::SwarmStatus>,
    timeout: std::time::Duration,
    asked_at: chrono::DateTime<chrono::Utc>,
) -> bool {
    use orchestrate_engine::role::ReloadOutcome;
    let after = |at: &str| chrono::DateTime::parse_from_rfc3339(at).is_ok_and(|t| t >= asked_at);
    let mut refused = false;
    let short = |h: &str| h[..h.len().min(12)].to_string();
    for record in records {
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
    if let Some(status) = status {
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
    refused
}
