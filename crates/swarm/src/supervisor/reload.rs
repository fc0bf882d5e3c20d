//! A reload of the roster (SIGHUP, `orchestrate swarm reload`, an edit in `agents/`): replicas
//! the roster adds are started, replicas it drops are stopped gracefully, every other running
//! replica is sent SIGHUP; and the stamp of `agents/` that notices an edit.
//!
//! Does not load role files (the caller's [`Roster`](super::spec::Roster) does) nor run the
//! loop (`actor` does).

use std::fs;

use orchestrate_base::clock;
use orchestrate_engine::role;

use super::actor::{AgentsStamp, Supervisor};
use super::event::{Record, Reloaded, SupervisorEvent};
use super::proc::signal_child;
use super::status_file::{ChildState, ChildStatus};

impl Supervisor<'_> {
    /// Whether `agents/` changed since it was last looked at, and a reload is due (only with a
    /// roster, and not while stopping).
    pub(super) fn agents_changed(&mut self) -> bool {
        let now = self.agents_stamp();
        if now != self.agents && !self.stopping && self.roster.is_some() {
            self.agents = now;
            return true;
        }
        false
    }

    /// Asks the roster again and applies it; without a roster, only tells the replicas.
    pub(super) fn reload(&mut self) {
        self.agents = self.agents_stamp();
        let Some(roster) = self.roster.clone() else {
            // Without a roster, the replicas are told alone.
            hang_up(&self.file.children);
            return;
        };
        let (specs, problems) = roster();
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for spec in specs.iter() {
            if !self.tokens.contains_key(&spec.name) {
                added.push(spec.name.clone());
                self.file.children.push(ChildStatus::new(spec));
                self.start(spec.clone());
            }
        }
        for (name, token) in &self.tokens {
            let role = name.rsplit_once('#').map_or(name.as_str(), |(r, _)| r);
            let kept =
                specs.iter().any(|s| s.name == *name) || problems.iter().any(|p| p.role == role);
            if !kept && !self.removing.contains(name) {
                removed.push(name.clone());
                self.removing.push(name.clone());
                token.cancel();
            }
        }
        hang_up(
            &self
                .file
                .children
                .iter()
                .filter(|c| !added.contains(&c.name) && !self.removing.contains(&c.name))
                .cloned()
                .collect::<Vec<_>>(),
        );
        self.records
            .record(&Record::own(SupervisorEvent::Reloaded(Reloaded {
                added,
                removed,
                problems: problems.clone(),
            })));
        self.file.problems = problems;
        self.file.reloaded_at = Some(clock::now_rfc3339());
        self.records.write(&mut self.file);
    }

    /// Names, sizes and modification times of `agents/*.yaml`: a role file added, removed or
    /// edited changes it.
    pub(super) fn agents_stamp(&self) -> AgentsStamp {
        use std::os::unix::fs::MetadataExt;
        let mut stamp: Vec<_> = fs::read_dir(role::agents_dir(self.workspace))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((e.file_name(), meta.len(), meta.mtime(), meta.mtime_nsec()))
            })
            .collect();
        stamp.sort();
        stamp
    }
}

/// SIGHUP to every replica that reported ready (before that it may not handle it yet): each
/// looks at its role's files again.
fn hang_up(children: &[ChildStatus]) {
    for child in children {
        if child.state == ChildState::Running
            && let Some((pid, _)) = child.live_process()
        {
            signal_child(pid, libc::SIGHUP);
        }
    }
}
