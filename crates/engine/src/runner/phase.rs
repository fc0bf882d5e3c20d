//! The phase check of readonly and plan agent steps: a fingerprint of the workspace before the
//! step, a rescan after it, and the engine's own writes (an `output_file`, an enqueued task, a
//! fan-out sibling's) left out of what the step is blamed for.
//!
//! Does not decide which steps are checked (`AgentRun::phase`, chosen in `agent`) nor take the
//! snapshots itself (`orchestrate_base::fingerprint`).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::Runner;
use super::agent::AgentRun;
use crate::event::{self, Event};
use crate::step_result::{ClassifiedError, StepError, StepResult, StepStatus};
use orchestrate_lang::model::Step;
use orchestrate_runtime::parse::ErrorKind;

/// Files the engine itself writes for a run's steps (an `output_file`, an enqueued task), each
/// with when it was last registered and how many writers hold it: a readonly step's check
/// leaves out what the engine wrote during the step's window (its own output file, a fan-out
/// sibling's), but still catches a change to any of them outside it. Shared by a fan-out's lanes.
#[derive(Clone, Default)]
pub(super) struct EngineWrites(Arc<std::sync::Mutex<WriteLog>>);

#[derive(Default)]
struct WriteLog {
    next: u64,
    /// Workspace-relative path (as the fingerprint names it) -> (sequence, writers).
    paths: HashMap<String, (u64, u32)>,
}

/// A readonly step's window: the sequence it opened at and what was being written then (by the
/// engine's own writers, and through descriptors the engine or its ancestors held open), and
/// who writes in the workspace meanwhile, where fanotify can tell ([`orchestrate_base::write_watch`]).
pub(super) struct WriteWindow {
    from: u64,
    open: HashSet<String>,
    held: HashSet<String>,
    watch: Option<orchestrate_base::write_watch::Watch>,
}

/// Held while the engine writes `path`; the writer count drops with it.
pub(super) struct WriteGuard {
    log: EngineWrites,
    path: String,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if let Some(entry) = self.log.lock().paths.get_mut(&self.path) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}

impl EngineWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, WriteLog> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a write of `path` (under `root`, the directory fingerprints are taken of);
    /// `None` for a path outside it, which no check sees anyway.
    pub(super) fn begin(&self, root: &Path, path: &Path) -> Option<WriteGuard> {
        let rel = path.strip_prefix(root).ok()?;
        let rel = rel.to_string_lossy().into_owned();
        let mut log = self.lock();
        let seq = log.next;
        log.next += 1;
        let entry = log.paths.entry(rel.clone()).or_insert((seq, 0));
        entry.0 = seq;
        entry.1 += 1;
        Some(WriteGuard {
            log: self.clone(),
            path: rel,
        })
    }

    /// Opens a window for a step working in `root`.
    pub(super) fn window(&self, root: &Path) -> WriteWindow {
        let watch = orchestrate_base::write_watch::Watch::start_or_explain(root);
        let held = orchestrate_base::held_files::held_for_writing(root);
        let log = self.lock();
        WriteWindow {
            watch,
            held,
            from: log.next,
            open: log
                .paths
                .iter()
                .filter(|(_, (_, writers))| *writers > 0)
                .map(|(path, _)| path.clone())
                .collect(),
        }
    }

    /// Whether the engine wrote `path` during `window`.
    fn wrote_during(&self, window: &WriteWindow, path: &str) -> bool {
        window.open.contains(path)
            || self
                .lock()
                .paths
                .get(path)
                .is_some_and(|(seq, _)| *seq >= window.from)
    }
}

impl Runner {
    /// Fingerprints the workspace before a readonly/plan agent step (`.orchestrate/`, the step's
    /// declared artifacts and git-ignored files excepted).
    pub(super) fn fingerprint(
        &self,
        run: &AgentRun,
    ) -> Result<orchestrate_base::fingerprint::Snapshot, String> {
        let mut ignore = run.artifacts.clone();
        ignore.push(".orchestrate/".into());
        if let Ok(rel) = self.dir.root.strip_prefix(self.config.code_dir())
            && !rel.as_os_str().is_empty()
        {
            ignore.push(format!("{}/", rel.display()));
        }
        ignore.push("approvals/".into());
        ignore.extend(self.config.ignore_changes.iter().cloned());
        let options = orchestrate_base::fingerprint::Options {
            ignore,
            ..orchestrate_base::fingerprint::Options::default()
        };
        orchestrate_base::fingerprint::snapshot(self.config.code_dir(), &options)
            .map_err(|e| e.to_string())
    }

    /// After a readonly/plan step: anything it changed outside its artifacts fails the step,
    /// whatever the CLI claims (plan modes leak through shell tools). `cgroup` is the step's,
    /// when it ran in one.
    pub(super) fn verify_unchanged(
        &mut self,
        step: &Step,
        run: &AgentRun,
        before: &orchestrate_base::fingerprint::Snapshot,
        mut window: WriteWindow,
        cgroup: Option<&str>,
        result: &mut StepResult,
    ) {
        // Rescanning the same snapshot (not a fresh one) re-hashes files that were recent at the
        // first scan, so a same-size rewrite within one timestamp tick is still caught.
        let after = match before.rescan() {
            Ok(after) => after,
            Err(err) => {
                result.status = StepStatus::Failed;
                result.error = Some(StepError::Classified(ClassifiedError::new(
                    ErrorKind::PhaseViolation,
                    format!("could not verify the {} phase: {err}", run.phase.label()),
                )));
                return;
            }
        };
        let mut changes = orchestrate_base::fingerprint::diff(before, &after);
        // Files the engine or a process that started it holds open for writing, when the step
        // started or now (its own stdout redirected into the workspace, a harness's log), are
        // not the step's writes: a step's processes are the engine's descendants.
        let held = orchestrate_base::held_files::held_for_writing(self.config.code_dir());
        // Stopped after the rescan, so every write the rescan saw has its event read. Only a
        // step with a cgroup of its own can be told apart from the processes outside it; a
        // removal or type change (a rename, no event under a mount mark) is always the step's.
        let seen = window
            .watch
            .take()
            .map(orchestrate_base::write_watch::Watch::finish);
        let outside = |change: &orchestrate_base::fingerprint::Change| {
            use orchestrate_base::fingerprint::ChangeKind::{Added, Modified};
            matches!(change.kind, Added | Modified)
                && seen
                    .as_ref()
                    .zip(cgroup)
                    .is_some_and(|(seen, cgroup)| seen.outside(&change.path, cgroup))
        };
        changes.retain(|change| {
            !self.engine_writes.wrote_during(&window, &change.path)
                && !window.held.contains(&change.path)
                && !held.contains(&change.path)
                && !outside(change)
        });
        if changes.is_empty() {
            return;
        }
        let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
        let shown = list.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
        let more = if list.len() > 20 {
            format!(" and {} more", list.len() - 20)
        } else {
            String::new()
        };
        let message = format!(
            "the {} phase forbids changes, but the workspace changed: {shown}{more}",
            run.phase.label()
        );
        let _ = self.event(
            Event::PhaseViolation(event::PhaseViolation {
                step: step.name.clone(),
                phase: run.phase,
                changes: changes.clone(),
            }),
            true,
        );
        result.status = StepStatus::Failed;
        result.exit_code = Some(1);
        result.changed_files = Some(changes);
        result.error = Some(StepError::Classified(ClassifiedError::new(
            ErrorKind::PhaseViolation,
            message,
        )));
    }
}
