//! A task's `${task.*}` variables.
//!
//! Owns: what `${task.*}` holds for a claimed task (where it is, its name, attempt, text, its
//! JSON, the correlation id, the role), shared with `orchestrate test` and checked against what
//! `validate` documents. Does not read the task (the claim did) or run anything.

use serde_json::{Value, json};

use orchestrate_queue::queue::Claim;

use super::shared::Shared;

/// `${task.text}` holds at most this much of the task.
pub(super) const TASK_TEXT_LIMIT: u64 = 1024 * 1024;

/// `${task.json}` of a task's text: the text parsed as JSON, or none when it is not JSON (or
/// nests deeper than serde_json's limit of 128 levels, so no later walk can overflow the stack).
pub fn task_json(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok()
}

/// The `${task.*}` variables of a claimed task.
pub(super) fn task_vars(shared: &Shared, claim: &Claim) -> (Value, String) {
    // The bytes read at claim time, not the file again: what ran is what the record keeps.
    let text = if claim.content.len() as u64 > TASK_TEXT_LIMIT {
        String::new()
    } else {
        String::from_utf8_lossy(&claim.content).into_owned()
    };
    task_variables(TaskFacts {
        path: orchestrate_base::fsutil::relative(&shared.workspace, &claim.task_path),
        dir: orchestrate_base::fsutil::relative(&shared.workspace, &claim.dir),
        name: format!("{}{}", claim.id, shared.layout.extension),
        id: &claim.id,
        attempt: claim.attempt,
        text,
        correlation_id: claim.meta.correlation_id.clone(),
        role: &shared.role.name,
    })
}

/// What `${task.*}` is made of: where the task is, its name, attempt, content and role.
pub struct TaskFacts<'a> {
    /// `${task.path}`: the task file, relative to the workspace.
    pub path: String,
    /// `${task.dir}`: the directory it runs from, relative to the workspace.
    pub dir: String,
    /// `${task.name}`: its file name, extension included.
    pub name: String,
    /// `${task.id}`: its file name without the extension.
    pub id: &'a str,
    /// `${task.attempt}`: which claim this is, from 1.
    pub attempt: u32,
    /// `${task.text}`: its content (empty when larger than 1 MiB); parsed for `${task.json}`.
    pub text: String,
    /// From the task's sidecar (set by whoever enqueued it), if any.
    pub correlation_id: Option<String>,
    /// `${task.role}`: the role whose inbox held it.
    pub role: &'a str,
}

/// The `${task.*}` variables and the correlation id (the sidecar's, else a JSON task's own
/// `correlation_id`, else the task id). `orchestrate test` builds a task case's with it too.
pub fn task_variables(facts: TaskFacts<'_>) -> (Value, String) {
    let parsed = task_json(&facts.text);
    let correlation_id = facts
        .correlation_id
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|j| j["correlation_id"].as_str().map(str::to_string))
        })
        .unwrap_or_else(|| facts.id.to_string());
    let mut vars = json!({
        "path": facts.path,
        "dir": facts.dir,
        "name": facts.name,
        "id": facts.id,
        "attempt": facts.attempt,
        "text": facts.text,
        "correlation_id": correlation_id,
        "role": facts.role,
    });
    if let Some(json) = parsed {
        vars["json"] = json;
    }
    (vars, correlation_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `validate` checks `${task.*}` against the names a role process really sets.
    #[test]
    pub(super) fn task_fields_are_what_a_role_process_sets() {
        let (vars, _) = task_variables(TaskFacts {
            path: "inbox/r/t.task".into(),
            dir: "running/r/t".into(),
            name: "t.task".into(),
            id: "t",
            attempt: 1,
            text: "{}".into(),
            correlation_id: None,
            role: "r",
        });
        let mut set: Vec<&str> = vars
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut documented = orchestrate_lang::load::TASK_FIELDS.to_vec();
        set.sort_unstable();
        documented.sort_unstable();
        assert_eq!(set, documented);
    }
}
