//! Discovery: which inbox entries to look at, and when.
//!
//! Owns: the inotify watch (notify events as hints: created, renamed in, closed after writing;
//! a rescan when events were lost), directory listings as the truth, and the candidate entries,
//! deduplicated in discovery order, some waiting for a later time. Does not claim (`dispatch`
//! and the queue do).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use orchestrate_queue::queue::{self, Layout};

/// Listing the inbox again when idle, in case an event was lost.
pub(super) const IDLE_RESCAN: Duration = Duration::from_secs(2);

/// A busy entry (another replica is claiming it) is looked at again after this.
pub(super) const BUSY_RETRY: Duration = Duration::from_millis(100);

/// An entry some process has open for writing is looked at again when a writer closes it (the
/// watcher's close-write hint), and after this in case that hint was lost.
pub(super) const WRITING_RECHECK: Duration = Duration::from_secs(1);

/// Hints from the watcher thread.
pub(super) enum Hint {
    /// File names that appeared; `true` when the file is complete (renamed in, or closed after
    /// writing), `false` when it may still be being written. Only where open writers cannot be
    /// seen does this decide anything (a `false` one waits for `settle_ms`); otherwise a name is
    /// a hint to look, and the claim checks for writers itself.
    Names(Vec<(String, bool)>),
    Rescan,
}

/// Candidate inbox entries, deduplicated, in discovery order; some wait for a later time.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) queue: VecDeque<(String, bool)>,
    pub(super) seen: HashSet<String>,
    pub(super) later: BTreeMap<Instant, Vec<(String, bool)>>,
    /// The names in `later`: one wait per name, however many times it is looked at meanwhile.
    pub(super) waiting: HashSet<String>,
}

impl Pending {
    pub(super) fn push(&mut self, name: String, complete: bool) {
        if self.seen.insert(name.clone()) {
            self.queue.push_back((name, complete));
        } else if complete {
            // A close-write or rename for a file we already hold as "maybe incomplete".
            if let Some(entry) = self.queue.iter_mut().find(|(n, _)| *n == name) {
                entry.1 = true;
            }
        }
    }

    pub(super) fn pop(&mut self) -> Option<(String, bool)> {
        let (name, complete) = self.queue.pop_front()?;
        self.seen.remove(&name);
        Some((name, complete))
    }

    pub(super) fn later(&mut self, name: String, complete: bool, after: Duration) {
        if !self.waiting.insert(name.clone()) {
            return;
        }
        self.later
            .entry(Instant::now() + after)
            .or_default()
            .push((name, complete));
    }

    pub(super) fn next_due(&self) -> Option<Instant> {
        self.later.keys().next().copied()
    }

    pub(super) fn promote_due(&mut self) {
        let now = Instant::now();
        let due: Vec<Instant> = self.later.range(..=now).map(|(at, _)| *at).collect();
        for at in due {
            for (name, complete) in self.later.remove(&at).unwrap_or_default() {
                self.waiting.remove(&name);
                self.push(name, complete);
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.later.is_empty()
    }

    /// Adds every task file of the inbox (sorted: time-ordered ids come out oldest first).
    pub(super) fn list(&mut self, layout: &Layout) {
        let Ok(entries) = std::fs::read_dir(&layout.inbox) else {
            return;
        };
        let mut names: Vec<String> = Vec::new();
        for entry in entries.flatten() {
            match entry.file_name().into_string() {
                Ok(name) if layout.task_id(&name).is_some() => names.push(name),
                Ok(_) => {}
                // A task file whose name is not UTF-8 can never be claimed by name: quarantine it.
                Err(raw)
                    if raw
                        .as_encoded_bytes()
                        .ends_with(layout.extension.as_bytes())
                        && !raw.as_encoded_bytes().starts_with(b".") =>
                {
                    let _ = queue::quarantine_invalid_name(layout, &raw);
                }
                Err(_) => {}
            }
        }
        names.sort();
        for name in names {
            self.push(name, false);
        }
    }
}

/// Starts the inotify watch; events become hints on `tx`.
pub(super) fn watch(
    dir: &Path,
    tx: mpsc::UnboundedSender<Hint>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let event = match event {
            Ok(event) => event,
            Err(_) => {
                let _ = tx.send(Hint::Rescan);
                return;
            }
        };
        // Check the flag before the paths: an overflow event has none.
        if event.need_rescan() {
            let _ = tx.send(Hint::Rescan);
            return;
        }
        let complete = match event.kind {
            EventKind::Create(_) => false,
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any)) => true,
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                let names = event
                    .paths
                    .get(1)
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned());
                if let Some(name) = names {
                    let _ = tx.send(Hint::Names(vec![(name, true)]));
                }
                return;
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            _ => return,
        };
        let names: Vec<(String, bool)> = event
            .paths
            .iter()
            .filter_map(|p| {
                p.file_name()
                    .map(|n| (n.to_string_lossy().into_owned(), complete))
            })
            .collect();
        if !names.is_empty() {
            let _ = tx.send(Hint::Names(names));
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
