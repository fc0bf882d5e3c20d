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
    /// A task was queued for the role in the database (a queue that pulls).
    Queued,
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

/// The inbox watch: a task of the async runtime reading an inotify descriptor. Stopped when
/// dropped.
pub(super) struct InboxWatch(tokio::task::JoinHandle<()>);

impl Drop for InboxWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the inotify watch of `dir`; events become hints on `tx`. Only the events that can
/// announce a task are asked for (created, closed after writing, renamed in): the role's own
/// opens and moves of the entries it claims wake nothing.
pub(super) fn watch(dir: &Path, tx: mpsc::UnboundedSender<Hint>) -> std::io::Result<InboxWatch> {
    use futures_util::StreamExt;
    use inotify::{EventMask, Inotify, WatchMask};
    let inotify = Inotify::init()?;
    inotify.watches().add(
        dir,
        WatchMask::CREATE | WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::ONLYDIR,
    )?;
    let mut events = inotify.into_event_stream(vec![0u8; 64 * 1024])?;
    let task = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let hint = match event {
                // A failed read: list the inbox, and read again only later, so that an error
                // that repeats costs nothing while the idle listing stands in.
                Err(_) => {
                    if tx.send(Hint::Rescan).is_err() {
                        return;
                    }
                    tokio::time::sleep(IDLE_RESCAN).await;
                    continue;
                }
                // An overflow (events were lost), or the inbox itself gone: the listing is the
                // truth.
                Ok(event) if event.mask.contains(EventMask::Q_OVERFLOW) => Hint::Rescan,
                Ok(event) => match event.name {
                    Some(name) => {
                        let complete = event
                            .mask
                            .intersects(EventMask::CLOSE_WRITE | EventMask::MOVED_TO);
                        Hint::Names(vec![(name.to_string_lossy().into_owned(), complete)])
                    }
                    None => Hint::Rescan,
                },
            };
            if tx.send(hint).is_err() {
                return;
            }
        }
    });
    Ok(InboxWatch(task))
}
