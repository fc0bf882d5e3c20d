//! Spans from a run's event log.
//!
//! Owns: turning a run's `events.jsonl` into spans (one root span per start or resume of the
//! run, a child per step execution, a `for_each`'s body under the loop's span, fan-out items
//! under their fan-out step, child runs joined under their `workflow:` step), with the
//! OpenTelemetry GenAI attributes on agent steps, and span ids derived from the run so that a
//! trace sent twice stays one trace. Does not encode spans (`encode`) or send them (`export`).

use std::collections::HashMap;
use std::path::Path;

use orchestrate_engine::event::Envelope;
use orchestrate_engine::event::Event;
use orchestrate_engine::step_result::{StepError, StepResult, StepStatus};
use serde_json::Value;

/// What a swarm task's run adds to its root span.
#[derive(Debug, Clone, Default)]
pub struct TaskInfo {
    pub id: String,
    pub role: String,
    pub attempt: u64,
    pub correlation_id: String,
}

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
        let lane = Envelope::from_record(record).lane;
        let step = record["step"].as_str().unwrap_or_default();
        let dir = orchestrate_engine::state::child_root(run_root, &lane, exec, step);
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
        let lane = Envelope::from_record(record).lane;
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
                    let result = match Event::from_record(record) {
                        Event::StepFinished(finished) => *finished.result,
                        _ => StepResult::default(),
                    };
                    finish_step(&mut spans[index], &result, ts);
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
fn finish_step(span: &mut Span, result: &StepResult, finished_ts: u64) {
    let time = |text: &Option<String>| nanos(&Value::from(text.as_deref()?));
    if let Some(start) = time(&result.started_at) {
        span.start_ns = start;
    }
    span.end_ns = time(&result.finished_at)
        .unwrap_or(finished_ts)
        .max(span.start_ns);
    let status = result.status.label();
    let attrs = &mut span.attributes;
    attrs.push(str_attr("orchestrate.step.status", status));
    if let Some(d) = result.duration {
        attrs.push(("orchestrate.step.duration_s".into(), Attr::Float(d)));
    }
    if let Some(code) = result.exit_code {
        attrs.push(int_attr("orchestrate.step.exit_code", i64::from(code)));
    }
    if let Some(attempts) = result.attempts {
        attrs.push(int_attr("orchestrate.step.attempts", i64::from(attempts)));
    }
    let error_text = match &result.error {
        Some(StepError::Message(text)) => Some(text.clone()),
        Some(StepError::Classified(error)) => {
            attrs.push(str_attr("error.type", error.kind.label()));
            Some(error.message.clone())
        }
        None => None,
    };
    span.error = match result.status {
        StepStatus::Succeeded | StepStatus::Skipped => None,
        _ => Some(error_text.unwrap_or_else(|| format!("the step {status}"))),
    };
    if let Some(runtime) = result.runtime.as_deref() {
        let provider = provider(runtime);
        attrs.push(str_attr("gen_ai.operation.name", "invoke_agent"));
        attrs.push(str_attr("gen_ai.provider.name", provider));
        attrs.push(str_attr("gen_ai.system", provider));
        attrs.push(str_attr("orchestrate.runtime", runtime));
        if let Some(profile) = result.profile.as_deref() {
            attrs.push(str_attr("orchestrate.profile", profile));
        }
        let requested = result
            .requested_model
            .as_ref()
            .and_then(Option::as_deref)
            .or(result.model_name());
        if let Some(model) = requested {
            attrs.push(str_attr("gen_ai.request.model", model));
        }
        if let Some(model) = result.model_name() {
            attrs.push(str_attr("gen_ai.response.model", model));
        }
        if let Some(session) = result.session_id.as_ref().and_then(Option::as_deref) {
            attrs.push(str_attr("gen_ai.conversation.id", session));
        }
        if let Some(usage) = &result.usage {
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            // The conventions count cached input in the input tokens, with the cache share
            // given apart; orchestrate's `usage.input` leaves cache reads and writes out.
            attrs.push(int_attr(
                "gen_ai.usage.input_tokens",
                count(usage.input)
                    .saturating_add(count(usage.cache_read))
                    .saturating_add(count(usage.cache_write)),
            ));
            attrs.push(int_attr("gen_ai.usage.output_tokens", count(usage.output)));
            attrs.push(int_attr(
                "gen_ai.usage.cache_read.input_tokens",
                count(usage.cache_read),
            ));
            attrs.push(int_attr(
                "gen_ai.usage.cache_creation.input_tokens",
                count(usage.cache_write),
            ));
            attrs.push(int_attr(
                "orchestrate.usage.reasoning_tokens",
                count(usage.reasoning),
            ));
        }
        if let Some(cost) = result.cost() {
            attrs.push(("orchestrate.cost_usd".into(), Attr::Float(cost)));
        }
        if let Some(turns) = result.turns.flatten() {
            attrs.push(int_attr(
                "orchestrate.agent.turns",
                i64::try_from(turns).unwrap_or(i64::MAX),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::log;
    use super::*;
    use serde_json::json;

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
}
