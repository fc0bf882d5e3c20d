//! OpenTelemetry traces of finished runs, sent over OTLP/HTTP.
//!
//! Owns: reading the exporter settings from the standard `OTEL_*` environment variables, turning
//! a run's `events.jsonl` into spans (one root span per start or resume of the run, a child per
//! step execution, with the OpenTelemetry GenAI attributes on agent steps), encoding them as
//! OTLP protobuf or JSON, and one bounded HTTP/1.1 POST per export. An export never fails a run:
//! a collector that cannot be reached costs at most the timeout and one warning.
//!
//! Spans are built from the event log, not from live instrumentation, so a run, its resume and
//! a swarm task's attempt are exported the same way, with the timestamps the log recorded.

use std::collections::HashMap;

use orchestrate_engine::runner::fanout::lane_of;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long one export may take when `OTEL_EXPORTER_OTLP_TIMEOUT` does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed export, a role process drops its traces for this long instead of waiting on
/// the collector again for every task.
const BACKOFF: Duration = Duration::from_secs(30);
/// Traces a role process holds for its background exporter before it drops new ones.
const QUEUE_LIMIT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Protobuf,
    Json,
}

/// Where and how traces are sent.
#[derive(Debug, Clone)]
pub struct Exporter {
    /// The full traces URL, as named in messages.
    pub url: String,
    host: String,
    port: u16,
    path: String,
    pub protocol: Protocol,
    headers: Vec<(String, String)>,
    pub service_name: String,
    resource: Vec<(String, String)>,
    pub timeout: Duration,
}

/// What a swarm task's run adds to its root span.
#[derive(Debug, Clone, Default)]
pub struct TaskInfo {
    pub id: String,
    pub role: String,
    pub attempt: u64,
    pub correlation_id: String,
}

impl Exporter {
    /// Reads the `OTEL_*` variables through `var`: `Ok(None)` when no endpoint is set (or the SDK
    /// is disabled), an error naming the variable when a setting cannot be honoured.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Exporter>, String> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none")
        {
            return Ok(None);
        }
        let url = if let Some(url) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            url.trim().to_string()
        } else if let Some(base) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            // The signal path is appended to the base endpoint (OTLP exporter specification).
            format!("{}/v1/traces", base.trim().trim_end_matches('/'))
        } else {
            return Ok(None);
        };
        let protocol_var = if var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        } else {
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        };
        let protocol = match var(protocol_var).as_deref().map(str::trim) {
            None | Some("http/protobuf") => Protocol::Protobuf,
            Some("http/json") => Protocol::Json,
            Some(other) => {
                return Err(format!(
                    "{protocol_var}={other} is not supported; orchestrate sends traces over \
                     OTLP/HTTP: set it to http/protobuf or http/json and point the endpoint at \
                     the collector's HTTP port (4318)"
                ));
            }
        };
        let (host, port, path) = parse_http_url(&url)?;
        let mut headers = Vec::new();
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(text) = var(name) {
                for (key, value) in parse_pairs(&text, name)? {
                    if key.is_empty()
                        || !key
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b))
                    {
                        return Err(format!("{name}: `{key}` is not a valid HTTP header name"));
                    }
                    if value.contains(['\r', '\n']) {
                        return Err(format!(
                            "{name}: the value of `{key}` contains a line break"
                        ));
                    }
                    // The traces-specific list comes second and wins.
                    headers.retain(|(k, _): &(String, String)| !k.eq_ignore_ascii_case(&key));
                    headers.push((key, value));
                }
            }
        }
        let timeout_var = if var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
        } else {
            "OTEL_EXPORTER_OTLP_TIMEOUT"
        };
        let timeout = match var(timeout_var) {
            None => DEFAULT_TIMEOUT,
            Some(ms) => match ms.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(format!(
                        "{timeout_var}={ms} is not a timeout; give milliseconds, e.g. 3000"
                    ));
                }
            },
        };
        let mut resource = match var("OTEL_RESOURCE_ATTRIBUTES") {
            Some(text) => parse_pairs(&text, "OTEL_RESOURCE_ATTRIBUTES")?,
            None => Vec::new(),
        };
        let service_name = var("OTEL_SERVICE_NAME")
            .map(|s| s.trim().to_string())
            .or_else(|| {
                resource
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| "orchestrate".into());
        resource.retain(|(k, _)| k != "service.name");
        Ok(Some(Exporter {
            url,
            host,
            port,
            path,
            protocol,
            headers,
            service_name,
            resource,
            timeout,
        }))
    }

    /// The exporter of this process's environment, read once. A setting that cannot be honoured
    /// is reported once and turns tracing off.
    pub fn from_env() -> Option<&'static Exporter> {
        static EXPORTER: OnceLock<Option<Exporter>> = OnceLock::new();
        EXPORTER
            .get_or_init(|| match Exporter::from_vars(|n| std::env::var(n).ok()) {
                Ok(exporter) => exporter,
                Err(err) => {
                    eprintln!("warning: OpenTelemetry traces are off: {err}");
                    None
                }
            })
            .as_ref()
    }

    /// Builds the request body for the spans of a run's log.
    pub fn encode(&self, spans: &[Span]) -> Vec<u8> {
        let mut resource = vec![
            (
                "service.name".to_string(),
                Attr::Str(self.service_name.clone()),
            ),
            (
                "service.version".to_string(),
                Attr::Str(env!("CARGO_PKG_VERSION").into()),
            ),
            (
                "telemetry.sdk.name".to_string(),
                Attr::Str("orchestrate".into()),
            ),
            (
                "telemetry.sdk.language".to_string(),
                Attr::Str("rust".into()),
            ),
        ];
        for (k, v) in &self.resource {
            resource.push((k.clone(), Attr::Str(v.clone())));
        }
        match self.protocol {
            Protocol::Json => encode_json(&resource, spans),
            Protocol::Protobuf => encode_protobuf(&resource, spans),
        }
    }

    /// Sends one request; `Ok` on a 2xx answer.
    pub fn send(&self, body: &[u8]) -> Result<(), String> {
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
    pub fn export(&self, events: &Path, task: Option<&TaskInfo>) -> Result<usize, String> {
        let spans = spans_of_run(events, task)?;
        if spans.is_empty() {
            return Ok(0);
        }
        self.send(&self.encode(&spans))?;
        Ok(spans.len())
    }
}

/// Exports a finished run now (for `run` and `resume`): a failure is one warning on stderr.
pub fn export_run(run_root: &Path) {
    if let Some(exporter) = Exporter::from_env()
        && let Err(err) = exporter.export(&run_root.join("events.jsonl"), None)
    {
        warn(exporter, &err);
    }
}

fn warn(exporter: &Exporter, err: &str) {
    eprintln!(
        "warning: could not send the run's trace to {} ({err}); the run is not affected. Check \
         that an OpenTelemetry collector listens there, or unset OTEL_EXPORTER_OTLP_ENDPOINT",
        exporter.url
    );
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
                        warn(exporter, &err);
                    }
                }
            }
            if dropped > 0 {
                eprintln!(
                    "warning: {dropped} task trace(s) were not sent to {} while it was unreachable",
                    exporter.url
                );
            }
        });
        Background { tx, thread }
    });
    if background.tx.try_send((events, task)).is_err() && !DROPPED_FULL.swap(true, Ordering::SeqCst)
    {
        eprintln!(
            "warning: the trace export to {} is falling behind; traces of some tasks are dropped",
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

// ---------------------------------------------------------------------------------------------
// Spans from the event log.

#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Debug, Clone)]
pub struct SpanEvent {
    pub name: String,
    pub time_ns: u64,
    pub attributes: Vec<(String, Attr)>,
}

#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<(String, Attr)>,
    pub events: Vec<SpanEvent>,
    /// `Some(message)` for an error status.
    pub error: Option<String>,
}

/// FNV-1a, 64 bits, over `parts` separated by NUL: ids that are the same for the same run on
/// every export, so a trace sent twice stays one trace.
fn id64(parts: &[&str]) -> u64 {
    let mut hash = orchestrate_base::hash::Fnv1a::new();
    for part in parts {
        hash.write(part.as_bytes());
        hash.write(&[0]);
    }
    // A zero id is invalid in OTLP.
    hash.finish().max(1)
}

pub fn trace_id(run_id: &str) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&id64(&["trace", run_id]).to_be_bytes());
    id[8..].copy_from_slice(&id64(&["trace-low", run_id]).to_be_bytes());
    id
}

fn span_id(parts: &[&str]) -> [u8; 8] {
    id64(parts).to_be_bytes()
}

/// Nanoseconds since the Unix epoch of an RFC 3339 time.
fn nanos(value: &Value) -> Option<u64> {
    let text = value.as_str()?;
    let time = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    u64::try_from(time.timestamp_nanos_opt()?).ok()
}

/// The provider name of the GenAI semantic conventions for a runtime.
fn provider(runtime: &str) -> &str {
    match runtime {
        "claude" => "anthropic",
        "codex" => "openai",
        "gemini" => "gcp.gemini",
        other => other,
    }
}

fn str_attr(key: &str, value: impl Into<String>) -> (String, Attr) {
    (key.to_string(), Attr::Str(value.into()))
}

fn int_attr(key: &str, value: i64) -> (String, Attr) {
    (key.to_string(), Attr::Int(value))
}

/// The spans of the run recorded in `events` (its latest start or resume), with the spans of
/// the child runs its `workflow:` steps started in that session, recursively: each child's
/// spans join the parent's trace, its root span under the `workflow:` step's span.
pub fn spans_of_run(events: &Path, task: Option<&TaskInfo>) -> Result<Vec<Span>, String> {
    let file = orchestrate_engine::events::read_checked(events)?;
    let mut spans = spans_from_events(&file.records, task);
    let (Some(session), Some(run_root)) = (Session::of(&file.records), events.parent()) else {
        return Ok(spans);
    };
    for record in session.records {
        if record["event"] != "child_started" {
            continue;
        }
        let exec = record["exec"].as_u64().unwrap_or(0);
        let lane = lane_of(record);
        let step = record["step"].as_str().unwrap_or_default();
        let dir = orchestrate_engine::subflow::child_root(run_root, &lane, exec, step);
        // A child that left no readable log (it never started) has no spans to add.
        let Ok(mut child) = spans_of_run(&dir.join("events.jsonl"), None) else {
            continue;
        };
        let parent = session.step_span(&lane, exec);
        for span in &mut child {
            span.trace_id = session.trace;
            if span.parent.is_none() {
                span.parent = Some(parent);
            }
        }
        spans.extend(child);
    }
    Ok(spans)
}

/// The latest start or resume in a run's records: what its span ids are derived from.
struct Session<'a> {
    run_id: String,
    resumes: u64,
    trace: [u8; 16],
    /// The records from the `run_started`/`run_resumed` that began it.
    records: &'a [Value],
}

impl<'a> Session<'a> {
    fn of(records: &'a [Value]) -> Option<Session<'a>> {
        let started = records.iter().find(|r| r["event"] == "run_started")?;
        let at = records
            .iter()
            .rposition(|r| r["event"] == "run_started" || r["event"] == "run_resumed")?;
        let run_id = started["run_id"].as_str().unwrap_or_default().to_string();
        Some(Session {
            trace: trace_id(&run_id),
            resumes: records[at]["resumes"].as_u64().unwrap_or(0),
            run_id,
            records: &records[at..],
        })
    }

    fn root_span(&self) -> [u8; 8] {
        span_id(&["run", &self.run_id, &self.resumes.to_string()])
    }

    /// The span of step execution `exec` of `lane`.
    fn step_span(&self, lane: &[u64], exec: u64) -> [u8; 8] {
        span_id(&[
            "step",
            &self.run_id,
            &self.resumes.to_string(),
            &crate::observe::exec_label(lane, exec),
        ])
    }
}

/// Spans of the last start or resume recorded in `records`: a root span for the run and one
/// child per step execution (a `for_each`'s body under the loop's span). Skipped steps have no
/// span. A step with no `step_finished` (the engine died) ends with the last record.
pub fn spans_from_events(records: &[Value], task: Option<&TaskInfo>) -> Vec<Span> {
    let Some(session) = Session::of(records) else {
        return Vec::new();
    };
    let Some(started) = records.iter().find(|r| r["event"] == "run_started") else {
        return Vec::new();
    };
    let trace = session.trace;
    let root_id = session.root_span();
    let session_records = session.records;
    let last_ns = session_records
        .iter()
        .filter_map(|r| nanos(&r["ts"]))
        .max()
        .unwrap_or(0);
    let start_ns = nanos(&session_records[0]["ts"]).unwrap_or(last_ns);

    let mut spans: Vec<Span> = Vec::new();
    // (lane, exec) -> index in `spans`, for the steps started and not yet finished. Fan-out
    // items number their executions in lanes of their own (`lane` on their events).
    let mut open: HashMap<(Vec<u64>, u64), usize> = HashMap::new();
    // Per lane, the sequential `for_each` steps whose body is running, innermost last:
    // (exec, span id).
    let mut loops: HashMap<Vec<u64>, Vec<(u64, [u8; 8])>> = HashMap::new();
    let mut finished: Option<&Value> = None;
    for record in session_records {
        let exec = record["exec"].as_u64().unwrap_or(0);
        let lane = lane_of(record);
        let key = (lane.clone(), exec);
        let ts = nanos(&record["ts"]).unwrap_or(last_ns);
        match record["event"].as_str().unwrap_or_default() {
            "step_started" => {
                let kind = record["kind"].as_str().unwrap_or_default();
                let id = session.step_span(&lane, exec);
                // The innermost loop of its lane, else the fan-out step the lane belongs to.
                let parent = match (loops.get(&lane).and_then(|l| l.last()), lane.len()) {
                    (Some((_, id)), _) => *id,
                    (None, n) if n >= 2 => session.step_span(&lane[..n - 2], lane[n - 2]),
                    (None, _) => root_id,
                };
                spans.push(open_step_span(record, trace, id, parent, ts, last_ns));
                open.insert(key.clone(), spans.len() - 1);
                if kind == "for_each" {
                    loops.entry(lane.clone()).or_default().push((exec, id));
                }
            }
            "process_started" | "retry_scheduled" | "paused" | "phase_violation" => {
                if let Some(&index) = open.get(&key) {
                    spans[index].events.push(span_event(record, ts));
                }
            }
            "step_finished" => {
                if let Some(stack) = loops.get_mut(&lane)
                    && stack.last().is_some_and(|(e, _)| *e == exec)
                {
                    stack.pop();
                }
                if let Some(index) = open.remove(&key) {
                    finish_step(&mut spans[index], &record["result"], ts);
                }
            }
            "run_finished" => finished = Some(record),
            _ => {}
        }
    }

    let root = run_span(&session, started, finished, task, start_ns, last_ns);
    spans.insert(0, root);
    spans
}

/// The span of a step from its `step_started` record, open until its `step_finished` says
/// otherwise: it ends with the last record, as an error.
fn open_step_span(
    record: &Value,
    trace: [u8; 16],
    id: [u8; 8],
    parent: [u8; 8],
    start_ns: u64,
    last_ns: u64,
) -> Span {
    let step = record["step"].as_str().unwrap_or_default();
    let kind = record["kind"].as_str().unwrap_or_default();
    let exec = record["exec"].as_u64().unwrap_or(0);
    Span {
        trace_id: trace,
        span_id: id,
        parent: Some(parent),
        name: step.to_string(),
        start_ns,
        end_ns: last_ns.max(start_ns),
        attributes: vec![
            str_attr("orchestrate.step.name", step),
            str_attr("orchestrate.step.kind", kind),
            int_attr("orchestrate.step.exec", exec as i64),
            str_attr(
                "orchestrate.step.iteration",
                record["iteration"].to_string(),
            ),
        ],
        events: Vec::new(),
        error: Some("the step did not finish (no step_finished record)".into()),
    }
}

/// A span event for a record within a step (`process_started`, `retry_scheduled`, ...), with
/// the record's numeric and text fields among `attempt`, `exit_code`, `delay`, `reason`, `until`.
fn span_event(record: &Value, time_ns: u64) -> SpanEvent {
    let mut attributes = Vec::new();
    for key in ["attempt", "exit_code", "delay", "reason", "until"] {
        match &record[key] {
            Value::Number(n) if n.is_i64() => attributes.push(int_attr(
                &format!("orchestrate.{key}"),
                n.as_i64().unwrap_or(0),
            )),
            Value::Number(n) => attributes.push((
                format!("orchestrate.{key}"),
                Attr::Float(n.as_f64().unwrap_or(0.0)),
            )),
            Value::String(s) => attributes.push(str_attr(&format!("orchestrate.{key}"), s.clone())),
            _ => {}
        }
    }
    SpanEvent {
        name: record["event"].as_str().unwrap_or_default().to_string(),
        time_ns,
        attributes,
    }
}

/// The root span of a session: the run (or its resume), its status from `finished`, and the
/// swarm task it ran for.
fn run_span(
    session: &Session,
    started: &Value,
    finished: Option<&Value>,
    task: Option<&TaskInfo>,
    start_ns: u64,
    last_ns: u64,
) -> Span {
    let (trace, root_id, resumes) = (session.trace, session.root_span(), session.resumes);
    let run_id = session.run_id.clone();
    let mut root = Span {
        trace_id: trace,
        span_id: root_id,
        parent: None,
        name: format!(
            "{} {}",
            if resumes > 0 { "resume" } else { "run" },
            started["name"].as_str().unwrap_or("workflow")
        ),
        start_ns,
        end_ns: finished
            .and_then(|f| nanos(&f["ts"]))
            .unwrap_or(last_ns)
            .max(start_ns),
        attributes: vec![
            str_attr("orchestrate.run.id", run_id.clone()),
            str_attr(
                "orchestrate.workflow.name",
                started["name"].as_str().unwrap_or_default(),
            ),
            str_attr(
                "orchestrate.workflow.file",
                started["workflow"].as_str().unwrap_or_default(),
            ),
            int_attr("orchestrate.run.resumes", resumes as i64),
        ],
        events: Vec::new(),
        error: None,
    };
    match finished {
        Some(f) => {
            let status = f["status"].as_str().unwrap_or_default();
            root.attributes
                .push(str_attr("orchestrate.run.status", status));
            root.attributes.push(int_attr(
                "orchestrate.run.exit_code",
                f["exit_code"].as_i64().unwrap_or(0),
            ));
            if status != "succeeded" {
                root.error = Some(
                    f["error"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("the run {status}")),
                );
            }
        }
        None => {
            root.attributes
                .push(str_attr("orchestrate.run.status", "unfinished"));
            root.error = Some("the run has no run_finished record (it was stopped)".into());
        }
    }
    if let Some(task) = task {
        root.attributes.extend([
            str_attr("orchestrate.task.id", task.id.clone()),
            str_attr("orchestrate.task.role", task.role.clone()),
            int_attr("orchestrate.task.attempt", task.attempt as i64),
            str_attr("orchestrate.correlation_id", task.correlation_id.clone()),
        ]);
    }
    root
}

/// Sets a step span's end, status and result attributes from its `step_finished` result.
fn finish_step(span: &mut Span, result: &Value, finished_ts: u64) {
    if let Some(start) = nanos(&result["started_at"]) {
        span.start_ns = start;
    }
    span.end_ns = nanos(&result["finished_at"])
        .unwrap_or(finished_ts)
        .max(span.start_ns);
    let status = result["status"].as_str().unwrap_or_default();
    let attrs = &mut span.attributes;
    attrs.push(str_attr("orchestrate.step.status", status));
    if let Some(d) = result["duration"].as_f64() {
        attrs.push(("orchestrate.step.duration_s".into(), Attr::Float(d)));
    }
    if let Some(code) = result["exit_code"].as_i64() {
        attrs.push(int_attr("orchestrate.step.exit_code", code));
    }
    if let Some(attempts) = result["attempts"].as_i64() {
        attrs.push(int_attr("orchestrate.step.attempts", attempts));
    }
    let error_text = match &result["error"] {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => {
            if let Some(kind) = o.get("kind").and_then(Value::as_str) {
                attrs.push(str_attr("error.type", kind));
            }
            o.get("message").and_then(Value::as_str).map(str::to_string)
        }
        _ => None,
    };
    span.error = match status {
        "succeeded" | "skipped" => None,
        _ => Some(error_text.unwrap_or_else(|| format!("the step {status}"))),
    };
    if let Some(runtime) = result["runtime"].as_str() {
        let provider = provider(runtime);
        attrs.push(str_attr("gen_ai.operation.name", "invoke_agent"));
        attrs.push(str_attr("gen_ai.provider.name", provider));
        attrs.push(str_attr("gen_ai.system", provider));
        attrs.push(str_attr("orchestrate.runtime", runtime));
        if let Some(profile) = result["profile"].as_str() {
            attrs.push(str_attr("orchestrate.profile", profile));
        }
        let requested = result["requested_model"]
            .as_str()
            .or(result["model"].as_str());
        if let Some(model) = requested {
            attrs.push(str_attr("gen_ai.request.model", model));
        }
        if let Some(model) = result["model"].as_str() {
            attrs.push(str_attr("gen_ai.response.model", model));
        }
        if let Some(session) = result["session_id"].as_str() {
            attrs.push(str_attr("gen_ai.conversation.id", session));
        }
        let usage = &result["usage"];
        if usage.is_object() {
            let count = |k: &str| usage[k].as_i64().unwrap_or(0);
            // The conventions count cached input in the input tokens, with the cache share
            // given apart; orchestrate's `usage.input` leaves cache reads and writes out.
            attrs.push(int_attr(
                "gen_ai.usage.input_tokens",
                count("input") + count("cache_read") + count("cache_write"),
            ));
            attrs.push(int_attr("gen_ai.usage.output_tokens", count("output")));
            attrs.push(int_attr(
                "gen_ai.usage.cache_read.input_tokens",
                count("cache_read"),
            ));
            attrs.push(int_attr(
                "gen_ai.usage.cache_creation.input_tokens",
                count("cache_write"),
            ));
            attrs.push(int_attr(
                "orchestrate.usage.reasoning_tokens",
                count("reasoning"),
            ));
        }
        if let Some(cost) = result["cost_usd"].as_f64() {
            attrs.push(("orchestrate.cost_usd".into(), Attr::Float(cost)));
        }
        if let Some(turns) = result["turns"].as_i64() {
            attrs.push(int_attr("orchestrate.agent.turns", turns));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding: OTLP/JSON.

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn json_attrs(attrs: &[(String, Attr)]) -> Value {
    Value::Array(
        attrs
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    Attr::Str(s) => json!({"stringValue": s}),
                    // int64 is a string in OTLP/JSON (the protobuf JSON mapping).
                    Attr::Int(i) => json!({"intValue": i.to_string()}),
                    Attr::Float(f) if f.is_finite() => json!({"doubleValue": f}),
                    Attr::Float(f) => json!({"stringValue": f.to_string()}),
                    Attr::Bool(b) => json!({"boolValue": b}),
                };
                json!({"key": key, "value": value})
            })
            .collect(),
    )
}

fn encode_json(resource: &[(String, Attr)], spans: &[Span]) -> Vec<u8> {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "traceId": hex(&s.trace_id),
                "spanId": hex(&s.span_id),
                "name": s.name,
                "kind": 1,
                "startTimeUnixNano": s.start_ns.to_string(),
                "endTimeUnixNano": s.end_ns.to_string(),
                "attributes": json_attrs(&s.attributes),
                "events": s.events.iter().map(|e| json!({
                    "timeUnixNano": e.time_ns.to_string(),
                    "name": e.name,
                    "attributes": json_attrs(&e.attributes),
                })).collect::<Vec<_>>(),
                "status": match &s.error {
                    Some(message) => json!({"code": 2, "message": message}),
                    None => json!({"code": 0}),
                },
            });
            if let Some(parent) = s.parent {
                span["parentSpanId"] = json!(hex(&parent));
            }
            span
        })
        .collect();
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": json_attrs(resource)},
        "scopeSpans": [{
            "scope": {"name": "orchestrate", "version": env!("CARGO_PKG_VERSION")},
            "spans": spans,
        }],
    }]});
    serde_json::to_vec(&body).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Encoding: OTLP protobuf (opentelemetry/proto/collector/trace/v1), written by hand: the few
// message types a trace export needs.

struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }
    fn bytes(&mut self, field: u32, data: &[u8]) {
        self.key(field, 2);
        self.varint(data.len() as u64);
        self.0.extend_from_slice(data);
    }
    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }
    fn message(&mut self, field: u32, build: impl FnOnce(&mut Pb)) {
        let mut inner = Pb(Vec::new());
        build(&mut inner);
        self.bytes(field, &inner.0);
    }
    fn uint(&mut self, field: u32, v: u64) {
        self.key(field, 0);
        self.varint(v);
    }
    fn fixed64(&mut self, field: u32, v: u64) {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn double(&mut self, field: u32, v: f64) {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// KeyValue { key = 1; AnyValue value = 2 }
    fn attrs(&mut self, field: u32, attrs: &[(String, Attr)]) {
        for (key, value) in attrs {
            self.message(field, |kv| {
                kv.string(1, key);
                // AnyValue { string_value = 1; bool_value = 2; int_value = 3; double_value = 4 }
                kv.message(2, |any| match value {
                    Attr::Str(s) => any.string(1, s),
                    Attr::Bool(b) => any.uint(2, u64::from(*b)),
                    Attr::Int(i) => any.uint(3, *i as u64),
                    Attr::Float(f) => any.double(4, *f),
                });
            });
        }
    }
}

fn encode_protobuf(resource: &[(String, Attr)], spans: &[Span]) -> Vec<u8> {
    let mut request = Pb(Vec::new());
    // ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1 }
    request.message(1, |rs| {
        // ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2 }
        rs.message(1, |r| r.attrs(1, resource));
        rs.message(2, |ss| {
            // ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2 }
            ss.message(1, |scope| {
                scope.string(1, "orchestrate");
                scope.string(2, env!("CARGO_PKG_VERSION"));
            });
            for s in spans {
                ss.message(2, |p| {
                    p.bytes(1, &s.trace_id);
                    p.bytes(2, &s.span_id);
                    if let Some(parent) = s.parent {
                        p.bytes(4, &parent);
                    }
                    p.string(5, &s.name);
                    p.uint(6, 1); // SPAN_KIND_INTERNAL
                    p.fixed64(7, s.start_ns);
                    p.fixed64(8, s.end_ns);
                    p.attrs(9, &s.attributes);
                    for e in &s.events {
                        // Span.Event { fixed64 time_unix_nano = 1; name = 2; attributes = 3 }
                        p.message(11, |ev| {
                            ev.fixed64(1, e.time_ns);
                            ev.string(2, &e.name);
                            ev.attrs(3, &e.attributes);
                        });
                    }
                    // Status { string message = 2; StatusCode code = 3 }
                    if let Some(message) = &s.error {
                        p.message(15, |st| {
                            st.string(2, message);
                            st.uint(3, 2);
                        });
                    }
                });
            }
        });
    });
    request.0
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// `http://host[:port]/path` -> (host, port, path). TLS is not built in.
fn parse_http_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") {
        return Err(format!(
            "the endpoint {url} uses https, which orchestrate's built-in exporter does not \
             speak; send to a local OpenTelemetry collector over http:// (e.g. \
             http://localhost:4318) and let it forward over TLS"
        ));
    } else {
        return Err(format!(
            "the endpoint `{url}` is not an http:// URL; set OTEL_EXPORTER_OTLP_ENDPOINT to \
             something like http://localhost:4318"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let end = bracketed
            .find(']')
            .ok_or_else(|| format!("the endpoint {url} has an unclosed `[`"))?;
        let port = bracketed[end + 1..].strip_prefix(':');
        (bracketed[..end].to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None | Some("") => 80,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("the endpoint {url} has an invalid port `{p}`"))?,
    };
    if host.is_empty() {
        return Err(format!("the endpoint {url} names no host"));
    }
    Ok((host, port, path))
}

/// `k1=v1,k2=v2` with percent-encoded values (the W3C baggage form the OTel variables use).
fn parse_pairs(text: &str, name: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = item.split_once('=').ok_or_else(|| {
            format!("{name}: `{item}` is not key=value; write key1=value1,key2=value2")
        })?;
        out.push((percent_decode(key.trim()), percent_decode(value.trim())));
    }
    Ok(out)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One POST with `Connection: close`, all of it within the exporter's timeout. Returns the
/// status code and, for an error answer, a bit of the body.
fn post(exporter: &Exporter, content_type: &str, body: &[u8]) -> Result<(u16, String), String> {
    let deadline = Instant::now() + exporter.timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("timed out after {:?}", exporter.timeout))
    };
    let addrs: Vec<_> = (exporter.host.as_str(), exporter.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", exporter.host))?
        .collect();
    let mut last_err = format!("{} resolves to no address", exporter.host);
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_err)?;
    let host = if exporter.host.contains(':') {
        format!("[{}]:{}", exporter.host, exporter.port)
    } else {
        format!("{}:{}", exporter.host, exporter.port)
    };
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: orchestrate/{}\r\n",
        exporter.path,
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in &exporter.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let io = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            format!("timed out after {:?}", exporter.timeout)
        } else {
            format!("the connection failed: {e}")
        }
    };
    stream.set_write_timeout(Some(left()?)).map_err(io)?;
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(body).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        stream.set_read_timeout(Some(left()?)).map_err(io)?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                // The status and a little of an error body are all that is needed.
                if response.len() > 64 * 1024 {
                    break;
                }
                if let Some(status) = complete_status(&response)
                    && (200..300).contains(&status)
                {
                    return Ok((status, String::new()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                if complete_status(&response).is_some() {
                    break;
                }
                return Err(io(e));
            }
        }
    }
    let status = complete_status(&response)
        .ok_or_else(|| "the collector closed the connection without an HTTP answer".to_string())?;
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim())
        .unwrap_or_default();
    let snippet: String = body.chars().take(200).collect();
    Ok((
        status,
        if snippet.is_empty() {
            String::new()
        } else {
            format!(": {snippet}")
        },
    ))
}

/// The status code once the whole header block has arrived.
fn complete_status(response: &[u8]) -> Option<u16> {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..end]).ok()?;
    let line = head.lines().next()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Result<Option<Exporter>, String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Exporter::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn settings_follow_the_otlp_exporter_variables() {
        assert!(vars(&[]).unwrap().is_none());
        let e = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(e.url, "http://collector:4318/v1/traces");
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("collector", 4318, "/v1/traces")
        );
        assert_eq!(
            e.protocol,
            Protocol::Protobuf,
            "http/protobuf is the default"
        );
        assert_eq!(e.service_name, "orchestrate");
        assert_eq!(e.timeout, DEFAULT_TIMEOUT);
        let e = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:1"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://[::1]:9000/custom",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "a=1,Authorization=Bearer%20xyz",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "A=2"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "250"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=svc,deployment.environment=ci",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("::1", 9000, "/custom")
        );
        assert_eq!(e.protocol, Protocol::Json);
        assert_eq!(
            e.headers,
            vec![
                ("Authorization".to_string(), "Bearer xyz".to_string()),
                ("A".to_string(), "2".to_string())
            ]
        );
        assert_eq!(e.timeout, Duration::from_millis(250));
        assert_eq!(e.service_name, "svc");
        assert_eq!(
            e.resource,
            vec![("deployment.environment".into(), "ci".into())]
        );
        let err = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap_err();
        assert!(
            err.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc") && err.contains("http/protobuf"),
            "{err}"
        );
        let err = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")]).unwrap_err();
        assert!(err.contains("https") && err.contains("collector"), "{err}");
        let err = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x=a%0d%0aInjected: 1"),
        ])
        .unwrap_err();
        assert!(err.contains("line break"), "{err}");
        assert!(
            vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "true")
            ])
            .unwrap()
            .is_none()
        );
    }

    /// A protobuf field: number and value (varint, fixed64 or bytes).
    #[derive(Debug)]
    enum Wire {
        Varint(u64),
        Fixed64(u64),
        Bytes(Vec<u8>),
    }

    fn decode(mut data: &[u8]) -> Vec<(u32, Wire)> {
        fn varint(data: &mut &[u8]) -> u64 {
            let mut value = 0u64;
            let mut shift = 0;
            loop {
                let byte = data[0];
                *data = &data[1..];
                value |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return value;
                }
                shift += 7;
            }
        }
        let mut out = Vec::new();
        while !data.is_empty() {
            let key = varint(&mut data);
            let field = (key >> 3) as u32;
            let value = match key & 7 {
                0 => Wire::Varint(varint(&mut data)),
                1 => {
                    let v = u64::from_le_bytes(data[..8].try_into().unwrap());
                    data = &data[8..];
                    Wire::Fixed64(v)
                }
                2 => {
                    let len = varint(&mut data) as usize;
                    let v = data[..len].to_vec();
                    data = &data[len..];
                    Wire::Bytes(v)
                }
                other => panic!("unexpected wire type {other}"),
            };
            out.push((field, value));
        }
        out
    }

    fn field(fields: &[(u32, Wire)], number: u32) -> Vec<&Wire> {
        fields
            .iter()
            .filter(|(n, _)| *n == number)
            .map(|(_, w)| w)
            .collect()
    }

    fn bytes(wire: &Wire) -> &[u8] {
        match wire {
            Wire::Bytes(b) => b,
            other => panic!("not bytes: {other:?}"),
        }
    }

    fn log() -> Vec<Value> {
        [
            json!({"event": "run_started", "ts": "2026-01-01T00:00:00Z", "run_id": "R1", "name": "wf", "workflow": "wf.yaml"}),
            json!({"event": "step_started", "ts": "2026-01-01T00:00:01Z", "step": "Ask", "exec": 1, "kind": "agent", "iteration": []}),
            json!({"event": "process_started", "ts": "2026-01-01T00:00:01.5Z", "step": "Ask", "exec": 1, "attempt": 1}),
            json!({"event": "step_finished", "ts": "2026-01-01T00:00:03Z", "step": "Ask", "exec": 1, "result": {
                "status": "failed", "started_at": "2026-01-01T00:00:01Z", "finished_at": "2026-01-01T00:00:02.5Z",
                "duration": 1.5, "exit_code": 1, "runtime": "claude", "model": "opus", "requested_model": "sonnet",
                "usage": {"input": 7, "output": 3, "cache_read": 10, "cache_write": 2},
                "cost_usd": 0.5, "error": {"kind": "rate_limit", "message": "slow down"}}}),
            json!({"event": "run_finished", "ts": "2026-01-01T00:00:04Z", "status": "failed", "exit_code": 1, "error": "step `Ask` failed"}),
        ]
        .to_vec()
    }

    #[test]
    fn spans_come_from_the_log_with_its_times_and_genai_attributes() {
        let spans = spans_from_events(&log(), None);
        assert_eq!(spans.len(), 2);
        let (root, ask) = (&spans[0], &spans[1]);
        assert_eq!(root.name, "run wf");
        assert_eq!(root.start_ns, 1_767_225_600_000_000_000);
        assert_eq!(root.end_ns, root.start_ns + 4_000_000_000);
        assert_eq!(root.error.as_deref(), Some("step `Ask` failed"));
        assert_eq!(ask.parent, Some(root.span_id));
        assert_eq!(ask.trace_id, trace_id("R1"));
        assert_eq!(ask.start_ns, root.start_ns + 1_000_000_000);
        assert_eq!(ask.end_ns, root.start_ns + 2_500_000_000);
        assert_eq!(ask.error.as_deref(), Some("slow down"));
        assert_eq!(ask.events.len(), 1);
        let get = |k: &str| {
            ask.attributes
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("gen_ai.provider.name"),
            Some(Attr::Str("anthropic".into()))
        );
        assert_eq!(
            get("gen_ai.request.model"),
            Some(Attr::Str("sonnet".into()))
        );
        assert_eq!(get("gen_ai.response.model"), Some(Attr::Str("opus".into())));
        assert_eq!(get("gen_ai.usage.input_tokens"), Some(Attr::Int(19)));
        assert_eq!(get("gen_ai.usage.output_tokens"), Some(Attr::Int(3)));
        assert_eq!(get("error.type"), Some(Attr::Str("rate_limit".into())));
        assert_eq!(get("orchestrate.cost_usd"), Some(Attr::Float(0.5)));
        // The same log gives the same ids: a trace sent again stays one trace.
        assert_eq!(spans_from_events(&log(), None)[1].span_id, ask.span_id);
    }

    #[test]
    fn fan_out_items_are_spans_under_their_fan_out_step_even_with_the_same_numbers() {
        let ok = json!({"status": "succeeded", "duration": 1.0});
        let log = [
            json!({"event": "run_started", "ts": "2026-01-01T00:00:00Z", "run_id": "R1", "name": "wf"}),
            json!({"event": "step_started", "ts": "2026-01-01T00:00:01Z", "step": "P", "exec": 1, "kind": "parallel"}),
            json!({"event": "step_started", "ts": "2026-01-01T00:00:01Z", "step": "A", "exec": 1, "kind": "command", "lane": [1, 0]}),
            json!({"event": "step_started", "ts": "2026-01-01T00:00:01Z", "step": "B", "exec": 1, "kind": "command", "lane": [1, 1]}),
            json!({"event": "step_finished", "ts": "2026-01-01T00:00:02Z", "step": "B", "exec": 1, "lane": [1, 1], "result": ok}),
            json!({"event": "step_finished", "ts": "2026-01-01T00:00:03Z", "step": "A", "exec": 1, "lane": [1, 0], "result": ok}),
            json!({"event": "step_finished", "ts": "2026-01-01T00:00:03Z", "step": "P", "exec": 1, "result": ok}),
            json!({"event": "run_finished", "ts": "2026-01-01T00:00:04Z", "status": "succeeded"}),
        ];
        let spans = spans_from_events(&log, None);
        let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
        let (p, a, b) = (by_name("P"), by_name("A"), by_name("B"));
        assert_eq!(a.parent, Some(p.span_id));
        assert_eq!(b.parent, Some(p.span_id));
        assert_ne!(a.span_id, b.span_id);
        assert!(a.error.is_none() && b.error.is_none(), "both finished");
    }

    #[test]
    fn protobuf_encoding_follows_the_trace_service_schema() {
        let spans = spans_from_events(&log(), None);
        let exporter = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])
            .unwrap()
            .unwrap();
        let body = exporter.encode(&spans);
        let request = decode(&body);
        let resource_spans = decode(bytes(field(&request, 1)[0]));
        let resource = decode(bytes(field(&resource_spans, 1)[0]));
        let first_attr = decode(bytes(field(&resource, 1)[0]));
        assert_eq!(bytes(field(&first_attr, 1)[0]), b"service.name");
        let value = decode(bytes(field(&first_attr, 2)[0]));
        assert_eq!(bytes(field(&value, 1)[0]), b"orchestrate");
        let scope_spans = decode(bytes(field(&resource_spans, 2)[0]));
        let encoded = field(&scope_spans, 2);
        assert_eq!(encoded.len(), 2);
        let ask = decode(bytes(encoded[1]));
        assert_eq!(bytes(field(&ask, 1)[0]), &spans[1].trace_id);
        assert_eq!(bytes(field(&ask, 2)[0]), &spans[1].span_id);
        assert_eq!(bytes(field(&ask, 4)[0]), &spans[0].span_id);
        assert_eq!(bytes(field(&ask, 5)[0]), b"Ask");
        assert!(matches!(field(&ask, 6)[0], Wire::Varint(1)));
        assert!(matches!(field(&ask, 7)[0], Wire::Fixed64(t) if *t == spans[1].start_ns));
        assert!(matches!(field(&ask, 8)[0], Wire::Fixed64(t) if *t == spans[1].end_ns));
        let input = field(&ask, 9)
            .into_iter()
            .map(|w| decode(bytes(w)))
            .find(|kv| bytes(field(kv, 1)[0]) == b"gen_ai.usage.input_tokens")
            .expect("input tokens attribute");
        let any = decode(bytes(field(&input, 2)[0]));
        assert!(matches!(field(&any, 3)[0], Wire::Varint(19)));
        let status = decode(bytes(field(&ask, 15)[0]));
        assert_eq!(bytes(field(&status, 2)[0]), b"slow down");
        assert!(matches!(field(&status, 3)[0], Wire::Varint(2)));
        assert_eq!(field(&ask, 11).len(), 1, "the process_started event");
    }
}
