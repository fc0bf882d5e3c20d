//! The `swarm status` table: a header about the supervisor, one row per replica and per idle
//! role, a held role in its STATE cell, and notes under the table (pauses, refused edits, open
//! breakers, inbox entries that wait or are ignored).
//!
//! Does not gather anything (`status` does).

use chrono::{DateTime, Utc};

use orchestrate_base::human;

use super::status::{RoleLoad, SwarmState, SwarmStatus};
use super::status_file::{ChildState, ChildStatus};

/// One row of the table: ROLE, REPLICA, PID, STATE, RESTARTS, SINCE, QUEUED, RUNNING, LAST EXIT.
type Row = [String; 9];

/// A readable table of the swarm: one row per replica (and per role without one).
pub fn render_status(status: &SwarmStatus) -> String {
    let now = chrono::Utc::now();
    let mut out = header(status, now);
    let mut rows = rows(status, now);
    if rows.len() == 1 {
        out.push_str("no roles (add agents/<role>.yaml)\n");
        return out;
    }
    mark_held(status, &mut rows);
    let (head, body) = rows.split_first().expect("the header row");
    let headers: Vec<&str> = head.iter().map(String::as_str).collect();
    out.push_str(&human::table(&headers, "lllllllll", body));
    for note in notes(status, now) {
        out.push_str(&note);
        out.push('\n');
    }
    out
}

/// How long before `now` the RFC 3339 time `when` was; `-` when it cannot tell.
fn ago(now: DateTime<Utc>, when: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(when)
        .ok()
        .and_then(|t| now.signed_duration_since(t).to_std().ok())
        .map_or_else(|| "-".to_string(), human::duration)
}

fn load_of<'a>(status: &'a SwarmStatus, role: &str) -> Option<&'a RoleLoad> {
    status.roles.iter().find(|l| l.role == role)
}

/// The lines above the table: the supervisor and its replica counts, or that none runs.
fn header(status: &SwarmStatus, now: DateTime<Utc>) -> String {
    let Some(sup) = &status.supervisor else {
        let mut out = format!("no supervisor is running in {}\n", status.workspace);
        if !status.children.is_empty() {
            out.push_str("role processes no supervisor runs (orphaned: their supervisor died, they stop once their tasks finish and the next `swarm up` stops any left; unsupervised: started with `orchestrate agent`):\n");
        }
        return out;
    };
    let count = |state: ChildState| status.children.iter().filter(|c| c.state == state).count();
    let what = if status.state == SwarmState::Stopping {
        "stopping"
    } else {
        "running"
    };
    format!(
        "supervisor pid {} {what}, up {} (since {}), in {}\n{} of {} replicas running, {} failed\n",
        sup.pid,
        ago(now, &sup.started_at),
        sup.started_at,
        status.workspace,
        count(ChildState::Running),
        status.children.len(),
        count(ChildState::Failed)
    )
}

/// The header row, one row per replica, then one per role that has none.
fn rows(status: &SwarmStatus, now: DateTime<Utc>) -> Vec<Row> {
    let mut rows: Vec<Row> = vec![
        [
            "ROLE",
            "REPLICA",
            "PID",
            "STATE",
            "RESTARTS",
            "SINCE",
            "QUEUED",
            "RUNNING",
            "LAST EXIT",
        ]
        .map(String::from),
    ];
    for child in &status.children {
        let (queued, running) = load_of(status, &child.role)
            .map_or(("-".to_string(), "-".to_string()), |l| {
                (l.queued.to_string(), l.running.to_string())
            });
        rows.push([
            child.role.clone(),
            child.replica.to_string(),
            child.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            state_cell(child, now),
            child.restarts.to_string(),
            ago(now, &child.since),
            queued,
            running,
            child
                .last_exit
                .as_ref()
                .map_or_else(|| "-".to_string(), ToString::to_string),
        ]);
    }
    for load in &status.roles {
        if status.children.iter().any(|c| c.role == load.role) {
            continue;
        }
        let dash = || "-".to_string();
        rows.push([
            load.role.clone(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            load.queued.to_string(),
            load.running.to_string(),
            dash(),
        ]);
    }
    rows
}

/// A replica's STATE cell: its state, with the time left in a backoff.
fn state_cell(child: &ChildStatus, now: DateTime<Utc>) -> String {
    if let Some(at) = child.next_restart_at.as_deref()
        && child.state == ChildState::Backoff
    {
        let left = chrono::DateTime::parse_from_rfc3339(at)
            .ok()
            .and_then(|t| t.signed_duration_since(now).to_std().ok())
            .unwrap_or_default();
        return format!("backoff (restart in {})", human::duration(left));
    }
    child.state.as_str().to_string()
}

/// A held role says so in its STATE cell (`paused`, or `held` by an open breaker); the reason
/// follows the table.
fn mark_held(status: &SwarmStatus, rows: &mut [Row]) {
    for row in rows.iter_mut().skip(1) {
        if let Some(load) = load_of(status, &row[0]) {
            let held = if load.paused.is_some() {
                Some("paused")
            } else if load
                .breakers
                .iter()
                .any(|b| b.state == crate::breaker::Phase::Open)
            {
                Some("held")
            } else {
                None
            };
            if let Some(held) = held {
                row[3] = if row[3] == "-" {
                    held.to_string()
                } else {
                    format!("{}, {held}", row[3])
                };
            }
        }
    }
}

/// The lines under the table, role by role: a pause, a refused edit, a role without a process,
/// open breakers (each once), inbox entries that wait or are ignored.
fn notes(status: &SwarmStatus, now: DateTime<Utc>) -> Vec<String> {
    let mut notes: Vec<String> = Vec::new();
    for load in &status.roles {
        if let Some(p) = &load.paused {
            notes.push(format!(
                "role {} paused since {} ({} ago) by {}: claims nothing new; `orchestrate resume {}` lifts it",
                load.role,
                p.since,
                ago(now, &p.since),
                p.by,
                load.role
            ));
        }
        if let Some(error) = &load.reload_error {
            let running = load
                .workflow_hashes
                .iter()
                .map(|h| &h[..h.len().min(12)])
                .collect::<Vec<_>>()
                .join(", ");
            notes.push(format!(
                "role {}: an edit was refused, its processes keep running the previous version (workflow {running}): {error}; fix the file (it is picked up before the next claim, or at `orchestrate swarm reload`)",
                load.role
            ));
        }
        if let Some(why) = &load.not_started {
            notes.push(format!("role {} has no role process: {why}", load.role));
        }
        for b in &load.breakers {
            let note = format!("{} (roles using it do not claim)", b.message);
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        notes.extend(inbox_notes(load));
    }
    notes
}

/// At most this many inbox entries are named per role and kind under `swarm status`'s table.
const INBOX_NOTES: usize = 5;

/// Lines under the table for a role's inbox entries that wait or are ignored, and why.
fn inbox_notes(load: &RoleLoad) -> Vec<String> {
    let mut notes = Vec::new();
    for (what, entries) in [("", &load.being_written), ("ignored: ", &load.ignored)] {
        for entry in entries.iter().take(INBOX_NOTES) {
            notes.push(format!(
                "role {}: {}: {what}{}",
                load.role, entry.path, entry.reason
            ));
        }
        if entries.len() > INBOX_NOTES {
            let state = if what.is_empty() { "queued" } else { "ignored" };
            notes.push(format!(
                "role {}: {} more (`orchestrate tasks {} --state {state}` lists them)",
                load.role,
                entries.len() - INBOX_NOTES,
                load.role
            ));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::super::exit::ExitReason;
    use super::super::status_file::{ChildStatus, SupervisorInfo, SupervisorState};
    use super::super::tests::child;
    use super::*;
    use orchestrate_base::clock;
    use orchestrate_queue::queue;

    #[test]
    fn inbox_notes_name_a_few_entries_per_kind_and_count_the_rest() {
        let entry = |n: usize| queue::InboxEntry {
            name: format!("n{n}.txt"),
            path: format!("inbox/r/n{n}.txt"),
            reason: "not a `.task` file (extension `.txt`)".into(),
        };
        let load = RoleLoad {
            role: "r".into(),
            queued: 1,
            running: 0,
            paused: None,
            breakers: Vec::new(),
            workflow_hashes: Vec::new(),
            reload_error: None,
            not_started: None,
            ignored: (0..INBOX_NOTES + 2).map(entry).collect(),
            being_written: vec![queue::InboxEntry {
                name: "y.task".into(),
                path: "inbox/r/y.task".into(),
                reason: "being written: pid 7 has it open for writing; it is taken once closed"
                    .into(),
            }],
        };
        let notes = inbox_notes(&load);
        assert_eq!(notes.len(), 1 + INBOX_NOTES + 1, "{notes:#?}");
        assert_eq!(
            notes[0],
            "role r: inbox/r/y.task: being written: pid 7 has it open for writing; it is taken once closed"
        );
        assert_eq!(
            notes[1],
            "role r: inbox/r/n0.txt: ignored: not a `.task` file (extension `.txt`)"
        );
        assert_eq!(
            notes[INBOX_NOTES + 1],
            "role r: 2 more (`orchestrate tasks r --state ignored` lists them)"
        );
    }

    #[test]
    fn render_shows_one_row_per_replica_and_idle_roles() {
        let now = clock::now_rfc3339();
        let mut running = ChildStatus::new(&child("engineer", 1, ""));
        running.state = ChildState::Running;
        running.pid = Some(4242);
        let mut failed = ChildStatus::new(&child("engineer", 2, ""));
        failed.state = ChildState::Failed;
        failed.restarts = 5;
        failed.last_exit = Some(ExitReason::Signaled {
            signal: libc::SIGSEGV,
        });
        let status = SwarmStatus {
            workspace: "/ws".into(),
            state: SwarmState::Running,
            supervisor: Some(SupervisorInfo {
                pid: 7,
                pid_start: 1,
                boot_id: "b".into(),
                state: SupervisorState::Running,
                started_at: now.clone(),
                updated_at: now,
            }),
            children: vec![running, failed],
            roles: vec![
                RoleLoad {
                    role: "engineer".into(),
                    queued: 3,
                    running: 1,
                    paused: None,
                    breakers: Vec::new(),
                    workflow_hashes: Vec::new(),
                    reload_error: None,
                    not_started: None,
                    ignored: Vec::new(),
                    being_written: Vec::new(),
                },
                RoleLoad {
                    role: "qa".into(),
                    queued: 0,
                    running: 0,
                    paused: None,
                    breakers: Vec::new(),
                    workflow_hashes: Vec::new(),
                    reload_error: None,
                    not_started: None,
                    ignored: Vec::new(),
                    being_written: Vec::new(),
                },
            ],
        };
        let text = render_status(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("supervisor pid 7 running, up "),
            "{text}"
        );
        assert_eq!(lines[1], "1 of 2 replicas running, 1 failed");
        let cells = |line: &str| {
            line.split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cells(lines[2]),
            [
                "ROLE", "REPLICA", "PID", "STATE", "RESTARTS", "SINCE", "QUEUED", "RUNNING",
                "LAST", "EXIT"
            ]
        );
        assert_eq!(
            cells(lines[3]),
            ["engineer", "1", "4242", "running", "0", "0s", "3", "1", "-"]
        );
        assert_eq!(
            cells(lines[4]),
            [
                "engineer", "2", "-", "failed", "5", "0s", "3", "1", "SIGSEGV"
            ]
        );
        assert_eq!(
            cells(lines[5]),
            ["qa", "-", "-", "-", "-", "-", "0", "0", "-"]
        );
    }
}
