//! Reloading the role between claims (and on SIGHUP), and the process's record.
//!
//! Owns: noticing edits of the role's files (its role file, workflow and sub-workflows), loading
//! them, keeping the previous version when an edit does not load (said once), refusing a changed
//! inbox, and the record `swarm status` reads (`role::ProcRecord`), removed at exit. Does not
//! decide when to look (the loop in `agent` does).

use super::options::AgentOptions;
use std::path::PathBuf;
use std::sync::Arc;

use orchestrate_queue::queue::Owner;

use super::log::{Log, say};
use super::shared::Shared;

/// Notices edits of the role's files (its role file, workflow and sub-workflows) between tasks
/// and loads them; a version that does not load is reported and the previous one kept. Keeps
/// the process's record (`role::ProcRecord`) current, and removes it when dropped.
pub(super) struct Reload {
    pub(super) record: orchestrate_engine::role::ProcRecord,
    /// The files as the running version saw them.
    pub(super) stamp: orchestrate_engine::role::Stamp,
    /// The files as they were when an edit failed to load: reported once, looked at again when
    /// they change.
    pub(super) broken: Option<orchestrate_engine::role::Stamp>,
    pub(super) workspace: PathBuf,
    pub(super) said_write_error: bool,
}

impl Reload {
    pub(super) fn new(
        shared: &Shared,
        stamp: orchestrate_engine::role::Stamp,
        options: &AgentOptions,
        supervisor: Option<u32>,
        log: &Log,
    ) -> Reload {
        let replica = options.replica;
        let me = Owner::current();
        let now = orchestrate_base::clock::now_rfc3339();
        let mut reload = Reload {
            record: orchestrate_engine::role::ProcRecord {
                format_version: 1,
                role: shared.role.name.clone(),
                replica,
                pid: me.pid,
                pid_start: me.pid_start,
                boot_id: me.boot_id,
                supervisor_pid: supervisor,
                started_at: now.clone(),
                grace_ms: u64::try_from(options.grace.as_millis()).ok(),
                workflow_hash: shared.workflow_hash.clone(),
                loaded_at: now.clone(),
                checked_at: now,
                reload: orchestrate_engine::role::ReloadOutcome::Started,
            },
            stamp,
            broken: None,
            workspace: shared.workspace.clone(),
            said_write_error: false,
        };
        reload.save(log);
        reload
    }

    pub(super) fn save(&mut self, log: &Log) {
        if let Err(err) = self.record.write(&self.workspace) {
            if !self.said_write_error {
                say!(
                    log,
                    ERROR,
                    "cannot write {}: {err}; `swarm status` will not see this process's version",
                    orchestrate_engine::role::ProcRecord::path(
                        &self.workspace,
                        &self.record.role,
                        self.record.replica
                    )
                    .display()
                );
            }
            self.said_write_error = true;
        }
    }

    /// The new version when the files changed and load (or, `force`d, whenever they load and
    /// differ); `None` to keep running the current one.
    pub(super) fn check(&mut self, shared: &Shared, force: bool, log: &Log) -> Option<Arc<Shared>> {
        use orchestrate_engine::role::ReloadOutcome;
        let now = self.stamp.now();
        let changed = now != self.stamp;
        if !force && (!changed || self.broken.as_ref() == Some(&now)) {
            return None;
        }
        self.record.checked_at = orchestrate_base::clock::now_rfc3339();
        if !changed && self.broken.is_none() {
            self.record.reload = ReloadOutcome::Unchanged;
            say!(
                log,
                INFO,
                "role files unchanged; running workflow {}",
                short(&shared.workflow_hash)
            );
            self.save(log);
            return None;
        }
        let name = &shared.role.name;
        let loaded = orchestrate_engine::role::Version::load(&shared.workspace, name)
            .map_err(|errors| orchestrate_engine::role::describe_errors(&shared.workspace, &errors))
            .and_then(|version| {
                if version.role.inbox == shared.role.inbox {
                    Ok(version)
                } else {
                    let error = format!(
                        "agents/{name}.yaml: `inbox` changed from `{}` to `{}`: a running role process keeps its inbox; restart the role (`orchestrate swarm down`, then `orchestrate swarm up`)",
                        shared.role.inbox, version.role.inbox
                    );
                    Err((error.clone(), error))
                }
            });
        let next = match loaded {
            Err((error, errors)) => {
                say!(
                    log,
                    ERROR,
                    "the edited role does not load; new tasks keep running the previous version (workflow {}) until it is fixed:\n{errors}",
                    short(&shared.workflow_hash)
                );
                self.broken = Some(now);
                self.record.reload = ReloadOutcome::Kept { error, errors };
                None
            }
            Ok(version) => {
                self.broken = None;
                let previous = shared.workflow_hash.clone();
                say!(
                    log,
                    INFO,
                    "reloaded agents/{name}.yaml: workflow {} -> {}; new tasks run on it (tasks in flight finish on the version they started with)",
                    short(&previous),
                    version.short_hash()
                );
                self.stamp = version.stamp.clone();
                self.record.workflow_hash = version.hash.clone();
                self.record.loaded_at = self.record.checked_at.clone();
                self.record.reload = ReloadOutcome::Reloaded {
                    previous_hash: previous,
                };
                Some(Arc::new(shared.with_version(version)))
            }
        };
        self.save(log);
        next
    }
}

impl Drop for Reload {
    fn drop(&mut self) {
        let path = orchestrate_engine::role::ProcRecord::path(
            &self.workspace,
            &self.record.role,
            self.record.replica,
        );
        // Only our own: a later process of the same replica may have written its own meanwhile.
        let ours = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<orchestrate_engine::role::ProcRecord>(&b).ok())
            .is_some_and(|r| r.pid == self.record.pid && r.pid_start == self.record.pid_start);
        if ours {
            let _ = std::fs::remove_file(&path);
        }
    }
}

pub(super) fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
