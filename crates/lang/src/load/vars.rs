//! The variables a workflow may name: the reserved roots, the fields of `${steps.X.*}`,
//! `${run.*}` and `${task.*}`, the `items_from` pointer grammar, and a walk over the strings of
//! a JSON value (where templates hide in `with:` and `enqueue.json`). Tables and pure
//! functions: does not check a workflow (`refs` does).

use serde_json::Value as Json;

use crate::model::Pointer;

/// Calls `f` on every string inside a JSON value.
pub(crate) fn visit_strings(value: &Json, f: &mut dyn FnMut(&str)) {
    match value {
        Json::String(s) => f(s),
        Json::Array(items) => items.iter().for_each(|v| visit_strings(v, f)),
        Json::Object(map) => map.values().for_each(|v| visit_strings(v, f)),
        _ => {}
    }
}

/// The variable roots every workflow may use; `as:` names may not shadow them.
pub(crate) const RESERVED_ROOTS: &[&str] =
    &["run", "loop", "steps", "context", "env", "task", "feedback"];

/// The fields `${steps.<name>.<field>}` may name.
pub(crate) const STEP_RESULT_FIELDS: &[&str] = &[
    "exit_code",
    "output",
    "lines",
    "json",
    "duration",
    "status",
    "truncated",
    "attempts",
    "error",
    "output_file",
    "stdout_log",
    "stderr_log",
    "started_at",
    "finished_at",
    "files",
    "wait_duration",
    "poll_count",
    "iterations",
    // for_each and parallel steps
    "total",
    "results",
    "succeeded",
    "failed",
    "cancelled",
    "branches",
    // agent steps
    "result",
    "session_id",
    "usage",
    "cost_usd",
    "turns",
    "denials",
    "runtime",
    "profile",
    "model",
    "phase",
    "changed_files",
    // approval steps
    "decision",
    "reason",
    "note",
    "by",
    // enqueue steps
    "task",
    // workflow steps
    "outputs",
    "run_id",
    "run_root",
];

/// Result fields that hold objects or arrays, so a path may follow them.
pub(super) const STRUCTURED_FIELDS: &[&str] = &[
    "json",
    "lines",
    "files",
    "iterations",
    "results",
    "branches",
    "usage",
    "error",
    "denials",
    "changed_files",
    "task",
    "outputs",
];

pub(crate) const RUN_FIELDS: &[&str] = &["timestamp_utc", "id", "workspace", "workflow", "branch"];

/// The `${task.*}` variables a role process sets for each task (`worker::task_variables`, as
/// docs/swarm.md lists them); `json` is followed by a path into the task's JSON.
pub const TASK_FIELDS: &[&str] = &[
    "id",
    "name",
    "path",
    "dir",
    "attempt",
    "text",
    "json",
    "correlation_id",
    "role",
];

/// Parses the `items_from` pointer grammar.
pub(crate) fn parse_pointer(text: &str) -> Result<Pointer, String> {
    let segments: Vec<&str> = text.split('.').collect();
    if segments.first() != Some(&"steps") || segments.len() < 3 {
        return Err("a pointer starts with `steps.<Step>.`".into());
    }
    if segments.iter().any(|s| s.is_empty()) {
        return Err("empty path segment".into());
    }
    if segments
        .iter()
        .any(|s| s.contains(['*', '[', ']', '|', '(', ')', ' ', '$']))
    {
        return Err("pointers take plain dot paths: no wildcards, brackets or expressions".into());
    }
    match segments[2] {
        "lines" if segments.len() == 3 => {}
        "lines" => return Err("`lines` is already the array; nothing may follow it".into()),
        "json" => {}
        other => return Err(format!("`{other}` is not iterable; use `lines` or `json`")),
    }
    Ok(Pointer {
        text: text.to_string(),
        step: segments[1].to_string(),
        path: segments[2..].iter().map(|s| s.to_string()).collect(),
    })
}
