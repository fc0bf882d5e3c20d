//! Names the engine accepts and makes for tasks, roles and runs.
//!
//! Owns: the one rule for an id that becomes a file or directory name (`[A-Za-z0-9._-]`, no
//! leading dot, a length limit), shared by the queue, the workflow language (role names), runs
//! and approvals; the two generators of new ids (tasks, runs), time-ordered with random bits,
//! and the random bits themselves. Does not decide where ids live nor hash them (`hash`).

use chrono::Utc;

use crate::clock;

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

/// `N` random bytes: from the OS, else (no entropy source) from the clock's nanoseconds, which
/// is spread enough for what they are used for (ids that must not collide within a second,
/// restart jitter); none of it is a secret.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = Utc::now().timestamp_subsec_nanos().to_le_bytes();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = nanos[i % nanos.len()];
        }
    }
    bytes
}

/// A new time-ordered task id (`20261207T160309123-a1b2c3d4e5`): sortable by enqueue time,
/// unique across processes.
pub fn new_task_id() -> String {
    let bytes = random_bytes::<5>();
    let now = Utc::now();
    format!(
        "{}{:03}-{}",
        now.format("%Y%m%dT%H%M%S"),
        now.timestamp_subsec_millis(),
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A new run id: the UTC start time and 24 random bits, so ids sort by start and do not collide
/// when two runs start in the same second.
pub fn new_run_id() -> String {
    let bytes = random_bytes::<3>();
    format!(
        "{}-{:02x}{:02x}{:02x}",
        clock::compact(Utc::now()),
        bytes[0],
        bytes[1],
        bytes[2]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_valid_names_and_differ() {
        for id in [new_task_id(), new_run_id()] {
            assert_eq!(check_id(&id), Ok(()), "{id}");
        }
        assert_ne!(new_task_id(), new_task_id());
        assert_ne!(new_run_id(), new_run_id());
        let task = new_task_id();
        assert_eq!(task.len(), "20261207T160309123-a1b2c3d4e5".len(), "{task}");
        let run = new_run_id();
        assert_eq!(run.len(), "20261207T160309Z-a1b2c3".len(), "{run}");
    }
}
