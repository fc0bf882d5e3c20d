//! The chaos checker: what a run of the swarm did, against what it must do.
//!
//! Inputs: the ids `enqueue` acknowledged (exit 0), the ids whose enqueue failed or was killed
//! (they may or may not have been accepted), the executions log the task's workflow appends to
//! itself ([`recording_workflow`]: `start ID ATTEMPT MICROS`, the work, `end ID ATTEMPT MICROS`,
//! and `overlap ID ATTEMPT OTHER` when a step finds an earlier attempt's step of the same task
//! still alive at its start), and the terminal records (every `processed/` and `failed/`
//! directory with its `status.json`). A run passes only with nothing lost, no duplicate terminal
//! record, no concurrent executions of one task, executions per task at most its attempts, and
//! no unexpected ids. Used by the chaos tests and by `scripts/chaos-soak` (through the ignored
//! test `chaos::check_a_soaked_workspace`).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// The executions log, relative to the workspace (the step's working directory).
pub const EXEC_LOG: &str = "exec.log";

/// A one-step workflow that records its executions for the checker around `work` (bash lines,
/// run with `$id` and `$att` set; `$1.. ` are the task id and attempt). Before it starts, the
/// step looks for a live step of an earlier attempt of the same task (by the pid each start
/// records in `exec.pids/ID.ATTEMPT`, checked against that process's command line, so a reused
/// pid is not mistaken for it) and logs an `overlap` line if there is one: a start while a
/// killed attempt's step that never wrote `end` still runs is caught too. Builtins only, apart
/// from `work`: the step is cheap enough for ten thousand tasks. `work` is a template: write
/// `$${` for a shell `${`.
pub fn recording_workflow(work: &str) -> String {
    let mut script = String::from(
        r#"id=$1; att=$2
mkdir -p exec.pids
for f in exec.pids/"$id".*; do
  [ -e "$f" ] || continue
  read -r p < "$f" || continue
  read -r st < "/proc/$p/stat" 2>/dev/null || continue
  case "$st" in *") Z "*|*") X "*) continue;; esac
  mapfile -d '' args < "/proc/$p/cmdline" 2>/dev/null || continue
  if [ "$${args[4]}" = "$id" ]; then printf 'overlap %s %s %s\n' "$id" "$att" "$${f##*.}" >> exec.log; fi
done
echo $$ > "exec.pids/$id.$att"
printf 'start %s %s %s\n' "$id" "$att" "$${EPOCHREALTIME/./}" >> exec.log
"#,
    );
    script.push_str(work.trim_end());
    script.push_str(
        "\nprintf 'end %s %s %s\\n' \"$id\" \"$att\" \"$${EPOCHREALTIME/./}\" >> exec.log\n",
    );
    let indented: String = script.lines().map(|l| format!("        {l}\n")).collect();
    format!(
        "steps:\n  - name: Exec\n    command:\n      - bash\n      - -c\n      - |\n{indented}      - rec\n      - ${{task.id}}\n      - ${{task.attempt}}\n"
    )
}

/// One execution of a task's workflow, from the log.
#[derive(Debug, Clone)]
pub struct Execution {
    pub attempt: u32,
    pub start: u128,
    /// `None`: never ended (its process was killed).
    pub end: Option<u128>,
}

/// A terminal record: one `processed/` or `failed/` directory.
#[derive(Debug, Clone)]
pub struct Terminal {
    pub dir: String,
    pub success: bool,
    pub attempt: u32,
}

/// What a chaos run did, and what is wrong with it.
#[derive(Debug, Default)]
pub struct Report {
    pub accepted: usize,
    pub maybe: usize,
    pub terminal_records: usize,
    pub processed: usize,
    pub failed: usize,
    pub executions: usize,
    pub never_ended: usize,
    pub max_executions_per_id: usize,
    pub max_attempt: u32,
    /// Accepted ids with no terminal record, with where they are instead.
    pub lost: Vec<(String, String)>,
    /// Ids with more than one terminal record.
    pub duplicates: Vec<(String, Vec<String>)>,
    /// Ids executed more often than their attempts (or an attempt executed twice).
    pub over_attempts: Vec<(String, String)>,
    /// Ids with two executions at once.
    pub concurrent: Vec<(String, String)>,
    /// Terminal records or executions of ids never enqueued.
    pub unexpected: Vec<String>,
}

impl Report {
    pub fn passes(&self) -> bool {
        self.lost.is_empty()
            && self.duplicates.is_empty()
            && self.over_attempts.is_empty()
            && self.concurrent.is_empty()
            && self.unexpected.is_empty()
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        format!(
            "accepted {} (+{} unacknowledged), terminal {} (processed {}, failed {}), executions {} ({} never ended), max executions per id {}, max attempt {}; lost {}, duplicates {}, over attempts {}, concurrent {}, unexpected {}",
            self.accepted,
            self.maybe,
            self.terminal_records,
            self.processed,
            self.failed,
            self.executions,
            self.never_ended,
            self.max_executions_per_id,
            self.max_attempt,
            self.lost.len(),
            self.duplicates.len(),
            self.over_attempts.len(),
            self.concurrent.len(),
            self.unexpected.len()
        )
    }

    /// The summary and every problem, by id (the first 50 of each kind).
    pub fn full(&self) -> String {
        let mut out = self.summary();
        let mut section = |name: &str, items: Vec<String>| {
            if !items.is_empty() {
                let _ = write!(out, "\n{name} ({}):", items.len());
                for item in items.iter().take(50) {
                    let _ = write!(out, "\n  {item}");
                }
            }
        };
        section(
            "lost",
            self.lost.iter().map(|(i, w)| format!("{i}: {w}")).collect(),
        );
        section(
            "duplicate terminal records",
            self.duplicates
                .iter()
                .map(|(i, d)| format!("{i}: {d:?}"))
                .collect(),
        );
        section(
            "executions over attempts",
            self.over_attempts
                .iter()
                .map(|(i, w)| format!("{i}: {w}"))
                .collect(),
        );
        section(
            "concurrent executions",
            self.concurrent
                .iter()
                .map(|(i, w)| format!("{i}: {w}"))
                .collect(),
        );
        section("unexpected ids", self.unexpected.clone());
        out
    }

    pub fn assert_passes(&self) {
        assert!(self.passes(), "chaos check failed: {}", self.full());
    }
}

/// Checks the workspace `ws` after a run: `accepted` were acknowledged by `enqueue`, `maybe`
/// were enqueued without an acknowledgement (failed or killed: present or not, both are fine).
pub fn check(ws: &Path, accepted: &BTreeSet<String>, maybe: &BTreeSet<String>) -> Report {
    check_many(&[ws], &ws.join(EXEC_LOG), accepted, maybe)
}

/// [`check`] over several workspaces (the machines of a cluster) whose steps append to one
/// executions log, `exec_log`: terminal records are counted across all of them.
pub fn check_many(
    workspaces: &[&Path],
    exec_log: &Path,
    accepted: &BTreeSet<String>,
    maybe: &BTreeSet<String>,
) -> Report {
    let mut report = Report {
        accepted: accepted.len(),
        maybe: maybe.difference(accepted).count(),
        ..Report::default()
    };
    // Terminal records.
    let mut terminal: BTreeMap<String, Vec<Terminal>> = BTreeMap::new();
    for (parent, ws) in workspaces
        .iter()
        .flat_map(|ws| [("processed", *ws), ("failed", *ws)])
    {
        for entry in std::fs::read_dir(ws.join(parent))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let status: Value = std::fs::read(entry.path().join("status.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            let id = status["task"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| {
                    // `<time>_<role>_<id>`: without a status, the id is what follows the role.
                    name.splitn(3, '_').nth(2).unwrap_or(&name).to_string()
                });
            let record = Terminal {
                dir: if workspaces.len() > 1 {
                    format!("{}/{parent}/{name}", ws.display())
                } else {
                    format!("{parent}/{name}")
                },
                success: parent == "processed",
                attempt: status["attempt"].as_u64().unwrap_or(0) as u32,
            };
            if record.success {
                report.processed += 1;
            } else {
                report.failed += 1;
            }
            report.terminal_records += 1;
            terminal.entry(id).or_default().push(record);
        }
    }
    // Executions.
    let log = std::fs::read_to_string(exec_log).unwrap_or_default();
    let mut executions: BTreeMap<String, Vec<Execution>> = BTreeMap::new();
    let mut overlaps: Vec<(String, String)> = Vec::new();
    for line in log.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [kind, id, attempt, value] = parts[..] else {
            continue;
        };
        let attempt: u32 = attempt.parse().unwrap_or(0);
        match kind {
            "start" => executions
                .entry(id.to_string())
                .or_default()
                .push(Execution {
                    attempt,
                    start: value.parse().unwrap_or(0),
                    end: None,
                }),
            "end" => {
                if let Some(e) = executions.get_mut(id).and_then(|list| {
                    list.iter_mut()
                        .rev()
                        .find(|e| e.attempt == attempt && e.end.is_none())
                }) {
                    e.end = value.parse().ok();
                }
            }
            "overlap" => overlaps.push((
                id.to_string(),
                format!("attempt {attempt} started while attempt {value}'s step still ran"),
            )),
            _ => {}
        }
    }
    report.concurrent.extend(overlaps);
    // Lost and duplicates.
    for id in accepted {
        if !terminal.contains_key(id) {
            let places: Vec<String> = workspaces.iter().map(|ws| whereabouts(ws, id)).collect();
            report.lost.push((id.clone(), places.join("; ")));
        }
    }
    for (id, records) in &terminal {
        if records.len() > 1 {
            report
                .duplicates
                .push((id.clone(), records.iter().map(|r| r.dir.clone()).collect()));
        }
        if !accepted.contains(id) && !maybe.contains(id) {
            report.unexpected.push(id.clone());
        }
    }
    for (id, list) in &executions {
        report.executions += list.len();
        report.never_ended += list.iter().filter(|e| e.end.is_none()).count();
        report.max_executions_per_id = report.max_executions_per_id.max(list.len());
        if !terminal.contains_key(id) && !accepted.contains(id) && !maybe.contains(id) {
            report
                .unexpected
                .push(format!("{id} (executed, never enqueued)"));
        }
        // Attempts: the terminal record's count, and every attempt number the log saw.
        let attempts = terminal
            .get(id)
            .map(|r| r.iter().map(|t| t.attempt).max().unwrap_or(0))
            .unwrap_or(0);
        report.max_attempt = report.max_attempt.max(attempts);
        let numbers: Vec<u32> = list.iter().map(|e| e.attempt).collect();
        let distinct: BTreeSet<u32> = numbers.iter().copied().collect();
        if terminal.contains_key(id)
            && (list.len() > attempts as usize || numbers.iter().any(|&a| a > attempts))
        {
            report.over_attempts.push((
                id.clone(),
                format!(
                    "{} executions (attempts {numbers:?}), terminal attempt {attempts}",
                    list.len()
                ),
            ));
        } else if distinct.len() < numbers.len() {
            report.over_attempts.push((
                id.clone(),
                format!("an attempt executed twice: {numbers:?}"),
            ));
        }
        // Overlapping intervals; a never-ended execution is the instant of its start (whether
        // it still ran when a later one started is what its `overlap` line says).
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                let (a_end, b_end) = (a.end.unwrap_or(a.start), b.end.unwrap_or(b.start));
                if a.start < b_end && b.start < a_end {
                    report.concurrent.push((
                        id.clone(),
                        format!(
                            "attempt {} [{}, {}] and attempt {} [{}, {}] overlap",
                            a.attempt,
                            a.start,
                            a.end.map_or("never ended".into(), |e| e.to_string()),
                            b.attempt,
                            b.start,
                            b.end.map_or("never ended".into(), |e| e.to_string())
                        ),
                    ));
                }
            }
        }
    }
    report
}

/// Where a task that has no terminal record is: queued, running, or nowhere.
fn whereabouts(ws: &Path, id: &str) -> String {
    let mut found = Vec::new();
    for top in ["inbox", "running"] {
        for role in std::fs::read_dir(ws.join(top))
            .into_iter()
            .flatten()
            .flatten()
        {
            for candidate in [format!("{id}.task"), id.to_string(), format!("{id}.tmp")] {
                let path = role.path().join(&candidate);
                if path.exists() {
                    found.push(format!(
                        "{top}/{}/{candidate}",
                        role.file_name().to_string_lossy()
                    ));
                }
            }
        }
    }
    if found.is_empty() {
        "nowhere".into()
    } else {
        found.join(", ")
    }
}

/// Ids printed by `orchestrate enqueue` (it prints the task's path, `inbox/ROLE/ID.task`).
pub fn enqueued_id(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .filter_map(|l| l.trim().rsplit('/').next())
        .find_map(|name| name.strip_suffix(".task"))
        .map(str::to_string)
}
