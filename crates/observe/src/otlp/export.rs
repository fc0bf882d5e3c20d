//! Sending a run's trace: one export now (`run`, `resume`), or in the background (a role process).
//!
//! Owns: an export of the run recorded in an `events.jsonl` (spans, body, one request, a 2xx
//! answer), the warning a failed export gives, and the background queue of a role process with
//! its back-off and its flush at exit. Does not speak HTTP itself (`http`), read settings
//! (`settings`) or build and encode spans (`spans`, `encode`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use super::http::post;
use super::settings::{Exporter, Protocol, TARGET, from_env_reporting};
use super::spans::{TaskInfo, spans_of_run};

/// After a failed export, a role process drops its traces for this long instead of waiting on
/// the collector again for every task.
const BACKOFF: Duration = Duration::from_secs(30);
/// Traces a role process holds for its background exporter before it drops new ones.
const QUEUE_LIMIT: usize = 256;

impl Exporter {
    /// Sends one request; `Ok` on a 2xx answer.
    pub(crate) fn send(&self, body: &[u8]) -> Result<(), String> {
        let content_type = match self.protocol {
            Protocol::Json => "application/json",
            Protocol::Protobuf => "application/x-protobuf",
        };
        let status = post(self, content_type, body)?;
        if (200..300).contains(&status.0) {
            Ok(())
        } else {
            Err(format!(
                "the collector answered HTTP {}{}",
                status.0, status.1
            ))
        }
    }

    /// Exports the run recorded in `events` (the latest start or resume of it). Returns the
    /// number of spans sent.
    pub(crate) fn export(&self, events: &Path, task: Option<&TaskInfo>) -> Result<usize, String> {
        let spans = spans_of_run(events, task)?;
        if spans.is_empty() {
            return Ok(0);
        }
        self.send(&self.encode(&spans))?;
        Ok(spans.len())
    }
}

/// Exports a finished run now (for `run` and `resume`): a failure is one warning on stderr,
/// printed for the person at the terminal (a display, not a log event), as is a setting that
/// cannot be honoured.
pub fn export_run(run_root: &Path) {
    let exporter = from_env_reporting(|err| {
        eprintln!("warning: OpenTelemetry traces are off: {err}");
    });
    if let Some(exporter) = exporter
        && let Err(err) = exporter.export(&run_root.join("events.jsonl"), None)
    {
        eprintln!("warning: {}", unsent(exporter, &err));
    }
}

/// What a failed export says, after `warning: ` on a terminal or as a log event's message.
fn unsent(exporter: &Exporter, err: &str) -> String {
    format!(
        "could not send the run's trace to {} ({err}); the run is not affected. Check \
         that an OpenTelemetry collector listens there, or unset OTEL_EXPORTER_OTLP_ENDPOINT",
        exporter.url
    )
}

/// Exports swarm tasks' runs on a background thread, so that a slow collector never holds up a
/// task: after a failure it warns once and drops traces for a while; [`flush`] waits for the
/// queue at the role process's exit.
struct Background {
    tx: mpsc::SyncSender<(PathBuf, TaskInfo)>,
    thread: std::thread::JoinHandle<()>,
}

static BACKGROUND: Mutex<Option<Background>> = Mutex::new(None);
static DROPPED_FULL: AtomicBool = AtomicBool::new(false);

/// Queues the export of a finished task's run (its `events.jsonl` at its final place).
pub fn submit_task(events: PathBuf, task: TaskInfo) {
    let Some(exporter) = Exporter::from_env() else {
        return;
    };
    let mut guard = BACKGROUND.lock().unwrap_or_else(|e| e.into_inner());
    let background = guard.get_or_insert_with(|| {
        let (tx, rx) = mpsc::sync_channel::<(PathBuf, TaskInfo)>(QUEUE_LIMIT);
        let thread = std::thread::spawn(move || {
            let mut down_until: Option<Instant> = None;
            let mut warned = false;
            let mut dropped = 0u64;
            for (events, task) in rx {
                if down_until.is_some_and(|t| Instant::now() < t) {
                    dropped += 1;
                    continue;
                }
                if let Err(err) = exporter.export(&events, Some(&task)) {
                    down_until = Some(Instant::now() + BACKOFF);
                    if !warned {
                        warned = true;
                        tracing::warn!(target: TARGET, url = %exporter.url, "{}", unsent(exporter, &err));
                    }
                }
            }
            if dropped > 0 {
                tracing::warn!(
                    target: TARGET,
                    url = %exporter.url,
                    dropped,
                    "{dropped} task trace(s) were not sent to {} while it was unreachable",
                    exporter.url
                );
            }
        });
        Background { tx, thread }
    });
    if background.tx.try_send((events, task)).is_err() && !DROPPED_FULL.swap(true, Ordering::SeqCst)
    {
        tracing::warn!(
            target: TARGET,
            url = %exporter.url,
            "the trace export to {} is falling behind; traces of some tasks are dropped",
            exporter.url
        );
    }
}

/// Waits for the queued task exports (each bounded by the timeout, skipped while the collector
/// is known to be down). Called when a role process ends.
pub fn flush() {
    let background = BACKGROUND.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(Background { tx, thread }) = background {
        drop(tx);
        let _ = thread.join();
    }
}
