//! Prometheus metrics of a role process, as a textfile for node_exporter's textfile collector.
//!
//! Owns: the figures a role process keeps since it started (tasks processed, failed,
//! quarantined, released; tasks running; step durations; tokens and cost by runtime and model;
//! the last task's finish time), the text exposition format with HELP/TYPE lines and escaped
//! labels, and writing `DIR/orchestrate_<role>_<replica>.prom` atomically (temp file, rename)
//! after each task and on a timer. Step figures come from each finished task's `events.jsonl`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orchestrate_engine::event::{Event, StepFinished};
use orchestrate_engine::step_result::StepStatus;
use orchestrate_queue::queue::Layout;

/// The file is rewritten this often even when no task finishes (queue depth changes).
pub(crate) const WRITE_EVERY: Duration = Duration::from_secs(10);
/// A finished task's figures reach the file within this long: tasks mark the figures changed
/// and the writer thread writes at most this often, so a role finishing hundreds of tasks a
/// second does not rewrite the file (and list its inbox for the depth) for each one.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Upper bounds (seconds) of the step duration histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations at or under each bound (not cumulative here; summed when rendered).
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| value <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += value;
    }
}

#[derive(Debug, Default)]
struct Figures {
    processed: u64,
    failed: u64,
    quarantined: u64,
    released: u64,
    running: u64,
    last_finish: Option<f64>,
    /// By step name.
    steps: BTreeMap<String, Histogram>,
    /// By (runtime, model, token type).
    tokens: BTreeMap<(String, String, &'static str), u64>,
    /// By (runtime, model).
    cost: BTreeMap<(String, String), f64>,
}

/// A role process's metrics and the file they are written to.
pub(crate) struct Recorder {
    path: PathBuf,
    role: String,
    replica: String,
    layout: Layout,
    started: f64,
    figures: Mutex<Figures>,
    /// Figures changed since the file was last written.
    dirty: std::sync::atomic::AtomicBool,
    /// Held while writing, so two writers never share the temp file.
    writing: Mutex<()>,
}

impl Drop for Recorder {
    /// The role process is ending: its last figures go to the file.
    fn drop(&mut self) {
        if self.dirty.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.write();
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The metrics directory from `--metrics-dir` or `ORCHESTRATE_METRICS_DIR`.
pub fn dir_from(flag: Option<PathBuf>, workspace: &Path) -> Option<PathBuf> {
    let dir = flag.or_else(|| {
        std::env::var_os("ORCHESTRATE_METRICS_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })?;
    Some(workspace.join(dir))
}

/// A file-name-safe form of a role name.
fn file_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Recorder {
    /// Creates the directory and writes a first file; then rewrites it every [`WRITE_EVERY`]
    /// from a thread that ends when the recorder is dropped.
    pub(crate) fn start(
        dir: &Path,
        layout: &Layout,
        replica: u32,
    ) -> Result<Arc<Recorder>, String> {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create the metrics directory {}: {e}; choose another with --metrics-dir",
                dir.display()
            )
        })?;
        let path = dir.join(format!(
            "orchestrate_{}_{replica}.prom",
            file_part(&layout.role)
        ));
        let recorder = Arc::new(Recorder {
            path,
            role: layout.role.clone(),
            replica: replica.to_string(),
            layout: layout.clone(),
            started: unix_now(),
            figures: Mutex::new(Figures::default()),
            dirty: std::sync::atomic::AtomicBool::new(false),
            writing: Mutex::new(()),
        });
        recorder.write().map_err(|e| {
            format!(
                "cannot write metrics to {}: {e}; check that the directory is writable",
                recorder.path.display()
            )
        })?;
        let weak: Weak<Recorder> = Arc::downgrade(&recorder);
        std::thread::spawn(move || {
            let mut last = std::time::Instant::now();
            // Said once per run of failures, not every flush.
            let mut failing = false;
            loop {
                std::thread::sleep(FLUSH_EVERY);
                let Some(recorder) = weak.upgrade() else {
                    break;
                };
                if recorder.dirty.load(std::sync::atomic::Ordering::SeqCst)
                    || last.elapsed() >= WRITE_EVERY
                {
                    match recorder.write() {
                        Ok(()) => failing = false,
                        Err(err) => {
                            if !failing {
                                tracing::warn!(
                                    path = %recorder.path.display(),
                                    "failed to write the metrics file {}: {err}",
                                    recorder.path.display()
                                );
                            }
                            failing = true;
                        }
                    }
                    last = std::time::Instant::now();
                }
            }
        });
        Ok(recorder)
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn figures(&self) -> std::sync::MutexGuard<'_, Figures> {
        self.figures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A task was claimed and its workflow starts.
    pub(crate) fn claimed(&self) {
        self.figures().running += 1;
    }

    /// A task's file was quarantined at claim time.
    pub(crate) fn quarantined(&self) {
        self.figures().quarantined += 1;
        self.changed();
    }

    /// A claimed task ended: `outcome` is `processed`, `failed` or `released`; `events` is its
    /// event log at its final place, when it has one.
    pub(crate) fn finished(&self, outcome: &str, events: Option<&Path>) {
        let records = events
            .and_then(|p| orchestrate_engine::events::read_checked(p).ok())
            .map(|f| f.records)
            .unwrap_or_default();
        {
            let mut f = self.figures();
            f.running = f.running.saturating_sub(1);
            match outcome {
                "processed" => f.processed += 1,
                "released" => f.released += 1,
                _ => f.failed += 1,
            }
            f.last_finish = Some(unix_now());
            for record in &records {
                if let Event::StepFinished(finished) = Event::from_record(record) {
                    add_step(&mut f, &finished);
                }
            }
        }
        self.changed();
    }

    fn changed(&self) {
        self.dirty.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Writes the file: temp file in the same directory, then rename.
    pub(crate) fn write(&self) -> std::io::Result<()> {
        // Render under the lock too: two tasks finishing at once must not write their figures
        // in the opposite order and leave the older ones on disk.
        let _guard = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.dirty.store(false, std::sync::atomic::Ordering::SeqCst);
        let text = self.render();
        orchestrate_base::fsutil::replace(&self.path, text.as_bytes())
    }

    /// The exposition text: one family after another, each with its HELP and TYPE lines.
    pub(crate) fn render(&self) -> String {
        let depth = orchestrate_queue::queue::depth(&self.layout) as u64;
        let f = self.figures();
        let base = [
            ("role", self.role.as_str()),
            ("replica", self.replica.as_str()),
        ];
        let mut out = String::new();
        render_counts(&mut out, &base, depth, &f);
        render_step_histogram(&mut out, &base, &f);
        render_spending(&mut out, &base, &f);
        render_times(&mut out, &base, f.last_finish, self.started);
        out
    }
}

/// The `# HELP` and `# TYPE` lines of a family; returns its name.
fn family(out: &mut String, name: &str, kind: &str, help: &str) -> String {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    name.to_string()
}

/// One sample line, without its newline.
fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> String {
    format!("{name}{} {}", render_labels(labels), number(value))
}

/// Queue depth, tasks running, and the task counters.
fn render_counts(out: &mut String, base: &[(&str, &str); 2], depth: u64, f: &Figures) {
    let mut lines: Vec<String> = Vec::new();
    let name = family(
        out,
        "orchestrate_queue_depth",
        "gauge",
        "Tasks waiting in the role's inbox.",
    );
    lines.push(sample(&name, base, depth as f64));
    out.push_str(&take(&mut lines));

    let name = family(
        out,
        "orchestrate_tasks_running",
        "gauge",
        "Tasks whose workflow this process is running.",
    );
    lines.push(sample(&name, base, f.running as f64));
    out.push_str(&take(&mut lines));

    for (name, help, value) in [
        (
            "orchestrate_tasks_processed_total",
            "Tasks that succeeded, since the process started.",
            f.processed,
        ),
        (
            "orchestrate_tasks_failed_total",
            "Task attempts that failed, since the process started.",
            f.failed,
        ),
        (
            "orchestrate_tasks_quarantined_total",
            "Task files refused at claim time and moved to failed/, since the process started.",
            f.quarantined,
        ),
        (
            "orchestrate_tasks_released_total",
            "Tasks given back to the inbox by a shutdown, since the process started.",
            f.released,
        ),
    ] {
        let name = family(out, name, "counter", help);
        lines.push(sample(&name, base, value as f64));
        out.push_str(&take(&mut lines));
    }
}

/// The step duration histogram, by step.
fn render_step_histogram(out: &mut String, base: &[(&str, &str); 2], f: &Figures) {
    let mut lines: Vec<String> = Vec::new();
    let name = family(
        out,
        "orchestrate_step_duration_seconds",
        "histogram",
        "Duration of the steps of finished tasks, by step.",
    );
    for (step, h) in &f.steps {
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(h.counts) {
            cumulative += count;
            let le = number(*bound);
            let labels = [base[0], base[1], ("step", step.as_str()), ("le", &le)];
            lines.push(sample(
                &format!("{name}_bucket"),
                &labels,
                cumulative as f64,
            ));
        }
        let labels = [base[0], base[1], ("step", step.as_str()), ("le", "+Inf")];
        lines.push(sample(&format!("{name}_bucket"), &labels, h.count as f64));
        let labels = [base[0], base[1], ("step", step.as_str())];
        lines.push(sample(&format!("{name}_sum"), &labels, h.sum));
        lines.push(sample(&format!("{name}_count"), &labels, h.count as f64));
    }
    out.push_str(&take(&mut lines));
}

/// Tokens and cost of agent steps, by runtime and model.
fn render_spending(out: &mut String, base: &[(&str, &str); 2], f: &Figures) {
    let mut lines: Vec<String> = Vec::new();
    let name = family(
        out,
        "orchestrate_tokens_total",
        "counter",
        "Tokens used by agent steps, by runtime, model and type (input excludes cache reads and writes).",
    );
    for ((runtime, model, kind), count) in &f.tokens {
        let labels = [
            base[0],
            base[1],
            ("runtime", runtime.as_str()),
            ("model", model.as_str()),
            ("type", kind),
        ];
        lines.push(sample(&name, &labels, *count as f64));
    }
    out.push_str(&take(&mut lines));

    let name = family(
        out,
        "orchestrate_cost_usd_total",
        "counter",
        "Cost in USD of agent steps with a known price, by runtime and model.",
    );
    for ((runtime, model), cost) in &f.cost {
        let labels = [
            base[0],
            base[1],
            ("runtime", runtime.as_str()),
            ("model", model.as_str()),
        ];
        lines.push(sample(&name, &labels, *cost));
    }
    out.push_str(&take(&mut lines));
}

/// When the last task finished, and when this process started.
fn render_times(
    out: &mut String,
    base: &[(&str, &str); 2],
    last_finish: Option<f64>,
    started: f64,
) {
    let mut lines: Vec<String> = Vec::new();
    if let Some(at) = last_finish {
        let name = family(
            out,
            "orchestrate_last_task_finish_timestamp_seconds",
            "gauge",
            "When the last task finished (Unix time).",
        );
        lines.push(sample(&name, base, at));
        out.push_str(&take(&mut lines));
    }
    let name = family(
        out,
        "orchestrate_process_start_time_seconds",
        "gauge",
        "When this role process started (Unix time); counters count from here.",
    );
    lines.push(sample(&name, base, started));
    out.push_str(&take(&mut lines));
}

fn take(lines: &mut Vec<String>) -> String {
    let mut text = String::new();
    for line in lines.drain(..) {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// Adds one `step_finished` record's duration, tokens and cost.
fn add_step(f: &mut Figures, finished: &StepFinished) {
    let result = &finished.result;
    let step = finished.step.as_str();
    if result.status == StepStatus::Skipped {
        return;
    }
    // A for_each's duration includes its body's steps, which are counted on their own; it is
    // still its own histogram.
    if let Some(d) = result.duration {
        f.steps.entry(step.to_string()).or_default().observe(d);
    }
    let Some(runtime) = result.runtime.as_deref() else {
        return;
    };
    let model = result.model_name().unwrap_or("unknown").to_string();
    if let Some(usage) = &result.usage {
        for (kind, n) in [
            ("input", usage.input),
            ("output", usage.output),
            ("cache_read", usage.cache_read),
            ("cache_write", usage.cache_write),
            ("reasoning", usage.reasoning),
        ] {
            *f.tokens
                .entry((runtime.to_string(), model.clone(), kind))
                .or_default() += n;
        }
    }
    if let Some(cost) = result.cost() {
        *f.cost.entry((runtime.to_string(), model)).or_default() += cost;
    }
}

/// `{a="x",b="y"}` with `\`, `"` and newlines escaped as the text format requires.
fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let escaped = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A sample value: integers without a fraction, others as Rust prints them; non-finite values
/// in the format's spelling.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layout(dir: &Path, role: &str) -> Layout {
        let layout = Layout::new(dir, role, &dir.join("inbox").join(role));
        std::fs::create_dir_all(&layout.inbox).unwrap();
        layout
    }

    #[test]
    fn a_stopping_role_writes_its_last_figures_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let layout = layout(dir.path(), "qa");
        let recorder = Recorder::start(&dir.path().join("metrics"), &layout, 1).unwrap();
        let path = recorder.path().to_path_buf();
        let started = std::time::Instant::now();
        recorder.claimed();
        recorder.finished("processed", None);
        let before = std::fs::read_to_string(&path).unwrap();
        // Not yet written by the thread (unless this machine stalled for a whole FLUSH_EVERY,
        // in which case the check below proves nothing new but still holds).
        if started.elapsed() < FLUSH_EVERY / 2 {
            assert!(
                before.contains("orchestrate_tasks_processed_total{role=\"qa\",replica=\"1\"} 0"),
                "{before}"
            );
        }
        drop(recorder);
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(
            after.contains("orchestrate_tasks_processed_total{role=\"qa\",replica=\"1\"} 1"),
            "{after}"
        );
    }

    #[test]
    fn renders_counters_histogram_and_escaped_labels() {
        let dir = tempfile::tempdir().unwrap();
        let layout = layout(dir.path(), "qa");
        std::fs::write(layout.inbox.join("a.task"), "x").unwrap();
        std::fs::write(layout.inbox.join(".hidden.task"), "x").unwrap();
        let metrics = dir.path().join("metrics");
        let recorder = Recorder::start(&metrics, &layout, 2).unwrap();
        assert_eq!(
            recorder.path(),
            metrics.join("orchestrate_qa_2.prom").as_path()
        );
        let events = dir.path().join("events.jsonl");
        let lines = [
            json!({"event": "step_finished", "step": "Ask", "result": {"status": "succeeded",
                "duration": 0.7, "runtime": "codex", "model": "m\"1",
                "usage": {"input": 10, "output": 5, "cache_read": 100, "cache_write": 0},
                "cost_usd": 0.25}}),
            json!({"event": "step_finished", "step": "Ask", "result": {"status": "skipped", "duration": 0.0}}),
            json!({"event": "step_finished", "step": "Build", "result": {"status": "failed", "duration": 42.0}}),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&events, text).unwrap();
        recorder.claimed();
        recorder.claimed();
        recorder.finished("processed", Some(&events));
        recorder.finished("failed", None);
        recorder.quarantined();
        let base = "role=\"qa\",replica=\"2\"";
        // Finishing marks the figures changed; the writer thread writes them within
        // FLUSH_EVERY.
        let deadline = std::time::Instant::now() + FLUSH_EVERY * 10;
        let text = loop {
            let text = std::fs::read_to_string(recorder.path()).unwrap();
            if text.contains(&format!("orchestrate_tasks_quarantined_total{{{base}}} 1")) {
                break text;
            }
            assert!(std::time::Instant::now() < deadline, "not flushed:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        for expected in [
            "# TYPE orchestrate_queue_depth gauge".to_string(),
            format!("orchestrate_queue_depth{{{base}}} 1"),
            format!("orchestrate_tasks_running{{{base}}} 0"),
            format!("orchestrate_tasks_processed_total{{{base}}} 1"),
            format!("orchestrate_tasks_failed_total{{{base}}} 1"),
            format!("orchestrate_tasks_quarantined_total{{{base}}} 1"),
            "# TYPE orchestrate_step_duration_seconds histogram".to_string(),
            format!("orchestrate_step_duration_seconds_bucket{{{base},step=\"Ask\",le=\"0.5\"}} 0"),
            format!("orchestrate_step_duration_seconds_bucket{{{base},step=\"Ask\",le=\"1\"}} 1"),
            format!(
                "orchestrate_step_duration_seconds_bucket{{{base},step=\"Build\",le=\"30\"}} 0"
            ),
            format!(
                "orchestrate_step_duration_seconds_bucket{{{base},step=\"Build\",le=\"60\"}} 1"
            ),
            format!(
                "orchestrate_step_duration_seconds_bucket{{{base},step=\"Build\",le=\"+Inf\"}} 1"
            ),
            format!("orchestrate_step_duration_seconds_count{{{base},step=\"Ask\"}} 1"),
            format!("orchestrate_step_duration_seconds_sum{{{base},step=\"Build\"}} 42"),
            format!(
                "orchestrate_tokens_total{{{base},runtime=\"codex\",model=\"m\\\"1\",type=\"cache_read\"}} 100"
            ),
            format!("orchestrate_cost_usd_total{{{base},runtime=\"codex\",model=\"m\\\"1\"}} 0.25"),
            "# TYPE orchestrate_last_task_finish_timestamp_seconds gauge".to_string(),
        ] {
            assert!(
                text.lines().any(|l| l == expected),
                "missing {expected:?} in\n{text}"
            );
        }
        // No temp file is left beside it for the collector to trip on.
        let names: Vec<String> = std::fs::read_dir(&metrics)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["orchestrate_qa_2.prom".to_string()]);
    }

    #[test]
    fn numbers_and_labels_follow_the_text_format() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(
            render_labels(&[("a", "x\\y\n\"z\"")]),
            "{a=\"x\\\\y\\n\\\"z\\\"\"}"
        );
        assert_eq!(file_part("my role/x"), "my_role_x");
    }
}
