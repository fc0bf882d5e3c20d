//! The control log, `.orchestrate/control/events.jsonl`: an account of who steered what (pauses,
//! cancels, breakers opening and closing), appended by every process that does.
//!
//! Owns: the file and its line format. Does not act on anything it records (`control`,
//! `breaker` and the role processes do).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// `.orchestrate/control/events.jsonl`.
pub fn path(workspace: &Path) -> PathBuf {
    workspace
        .join(".orchestrate")
        .join("control")
        .join("events.jsonl")
}

/// Appends one record to `.orchestrate/control/events.jsonl` (one `write` per line; several
/// processes append, so records carry no `seq`: order by `ts`). Failures are ignored: the log
/// is an account, not a protocol.
pub fn log_event(workspace: &Path, event: &str, fields: Value) {
    let mut record = json!({"v": 1, "ts": orchestrate_base::clock::now_rfc3339(), "event": event});
    if let (Some(out), Value::Object(fields)) = (record.as_object_mut(), fields) {
        out.extend(fields);
    }
    let mut line = record.to_string();
    line.push('\n');
    let path = path(workspace);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

/// Reads the control log (for tests and `status`); unreadable lines are skipped.
pub fn read_log(workspace: &Path) -> Vec<Value> {
    std::fs::read_to_string(path(workspace))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
