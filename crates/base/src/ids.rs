//! Names the engine accepts for tasks, roles and runs.
//!
//! Owns: the one rule for an id that becomes a file or directory name (`[A-Za-z0-9._-]`, no
//! leading dot, a length limit), shared by the queue, the workflow language (role names), runs
//! and approvals. Does not make ids (the queue and the runner do) nor decide where they live.

/// Longest id (a task's file name without the extension, a role, a run) (file name without the extension).
pub const MAX_ID_LEN: usize = 200;

/// Checks a task id: `[A-Za-z0-9._-]`, no leading dot, at most [`MAX_ID_LEN`] bytes.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("it is empty".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "it is {} bytes long; the limit is {MAX_ID_LEN}",
            id.len()
        ));
    }
    if id.starts_with('.') {
        return Err("it starts with a dot".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "it contains {c:?}; use letters, digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}
