//! Spans from a run's event log.
//!
//! Owns: turning a run's `events.jsonl` into spans (one root span per start or resume of the
//! run, a child per step execution, a `for_each`'s body under the loop's span, fan-out items
//! under their fan-out step, child runs joined under their `workflow:` step), with the
//! OpenTelemetry GenAI attributes on agent steps, and span ids derived from the run so that a
//! trace sent twice stays one trace. Does not encode spans (`encode`) or send them (`export`).

use std::collections::HashMap;
use std::path::Path;

use orchestrate_engine::event::{Envelope, Event, RunFinished, RunStarted, StepStarted};
use orchestrate_engine::state::RunStatus;
use orchestrate_engine::step_result::{StepError, StepResult, StepStatus};
use serde_json::Value;

/// What a swarm task's run adds to its root span.
#[derive(Debug, Clone, Default)]
pub struct TaskInfo {
    /// The task's id (its file name without `.task`), as `orchestrate.task.id`.
    pub id: String,
    /// The role whose inbox held the task, as `orchestrate.task.role`.
    pub role: String,
    /// Which claim of the task this run was (1 for the first), as `orchestrate.task.attempt`.
    pub attempt: u64,
    /// The task's correlation id (empty when it has none), as `orchestrate.correlation_id`.
    pub correlation_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Attr {
    Str(String),
    Int(i64),
    Float(f64),
}

#[derive(Debug, Clone)]
pub(crate) struct SpanEvent {
    pub(crate) name: String,
    pub(crate) time_ns: u64,
    pub(crate) attributes: Vec<(String, Attr)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) parent: Option<[u8; 8]>,
    pub(crate) name: String,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    pub(crate) attributes: Vec<(String, Attr)>,
    pub(crate) events: Vec<SpanEvent>,
    /// `Some(message)` for an error status.
    pub(crate) error: Option<String>,
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

pub(crate) fn trace_id(run_id: &str) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&id64(&["trace", run_id]).to_be_bytes());
    id[8..].copy_from_slice(&id64(&["trace-low", run_id]).to_be_bytes());
    id
}

fn span_id(parts: &[&str]) -> [u8; 8] {
    id64(parts).to_be_bytes()
}

/// Nanoseconds since the Unix epoch of an RFC 3339 time.
fn nanos(text: &str) -> Option<u64> {
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

/// One line of `events.jsonl` read through the engine's types.
struct Record {
    envelope: Envelope,
    event: Event,
}

impl Record {
    fn all(records: &[Value]) -> Vec<Record> {
        records
            .iter()
            .map(|record| Record {
                envelope: Envelope::from_record(record),
                event: Event::from_record(record),
            })
            .collect()
    }

    fn ns(&self) -> Option<u64> {
        nanos(&self.envelope.ts)
    }
}

/// The spans of the run recorded in `events` (its latest start or resume), with the spans of
/// the child runs its `workflow:` steps started in that session, recursively: each child's
/// spans join the parent's trace, its root span under the `workflow:` step's span.
pub(crate) fn spans_of_run(events: &Path, task: Option<&TaskInfo>) -> Result<Vec<Span>, String> {
    let file = orchestrate_engine::events::read_checked(events)?;
    let records = Record::all(&file.records);
    let mut spans = spans_of_records(&records, task);
    let (Some(session), Some(run_root)) = (Session::of(&records), events.parent()) else {
        return Ok(spans);
    };
    for record in session.records {
        let Event::ChildStarted(child) = &record.event else {
            continue;
        };
        let lane = &record.envelope.lane;
        let dir = orchestrate_engine::state::child_root(run_root, lane, child.exec, &child.step);
        // A child that left no readable log (it never started) has no spans to add.
        let Ok(mut child_spans) = spans_of_run(&dir.join("events.jsonl"), None) else {
            continue;
        };
        let parent = session.step_span(lane, child.exec);
        for span in &mut child_spans {
            span.trace_id = session.trace;
            if span.parent.is_none() {
                span.parent = Some(parent);
            }
        }
        spans.extend(child_spans);
    }
    Ok(spans)
}

/// The latest start or resume in a run's records: what its span ids are derived from.
struct Session<'a> {
    started: &'a RunStarted,
    resumes: u64,
    trace: [u8; 16],
    /// The records from the `run_started`/`run_resumed` that began it.
    records: &'a [Record],
}

impl<'a> Session<'a> {
    fn of(records: &'a [Record]) -> Option<Session<'a>> {
        let started = records.iter().find_map(|r| match &r.event {
            Event::RunStarted(started) => Some(started),
            _ => None,
        })?;
        let at = records
            .iter()
            .rposition(|r| matches!(r.event, Event::RunStarted(_) | Event::RunResumed(_)))?;
        let resumes = match &records[at].event {
            Event::RunResumed(resumed) => u64::from(resumed.resumes),
            _ => 0,
        };
        Some(Session {
            trace: trace_id(&started.run_id),
            resumes,
            started,
            records: &records[at..],
        })
    }

    fn root_span(&self) -> [u8; 8] {
        span_id(&["run", &self.started.run_id, &self.resumes.to_string()])
    }

    /// The span of step execution `exec` of `lane`.
    fn step_span(&self, lane: &[u64], exec: u64) -> [u8; 8] {
        span_id(&[
            "step",
            &self.started.run_id,
            &self.resumes.to_string(),
            &crate::observe::exec_label(lane, exec),
        ])
    }
}

/// [`spans_of_records`] of records as read from `events.jsonl` (tests only).
#[cfg(test)]
pub(crate) fn spans_from_events(records: &[Value], task: Option<&TaskInfo>) -> Vec<Span> {
    spans_of_records(&Record::all(records), task)
}

/// Spans of the last start or resume recorded in `records`: a root span for the run and one
/// child per step execution (a `for_each`'s body under the loop's span). Skipped steps have no
/// span. A step with no `step_finished` (the engine died) ends with the last record.
fn spans_of_records(records: &[Record], task: Option<&TaskInfo>) -> Vec<Span> {
    let Some(session) = Session::of(records) else {
        return Vec::new();
    };
    let trace = session.trace;
    let root_id = session.root_span();
    let session_records = session.records;
    let last_ns = session_records
        .iter()
        .filter_map(Record::ns)
        .max()
        .unwrap_or(0);
    let start_ns = session_records[0].ns().unwrap_or(last_ns);

    let mut spans: Vec<Span> = Vec::new();
    // (lane, exec) -> index in `spans`, for the steps started and not yet finished. Fan-out
    // items number their executions in lanes of their own (`lane` on their events).
    let mut open: HashMap<(Vec<u64>, u64), usize> = HashMap::new();
    // Per lane, the sequential `for_each` steps whose body is running, innermost last:
    // (exec, span id).
    let mut loops: HashMap<Vec<u64>, Vec<(u64, [u8; 8])>> = HashMap::new();
    let mut finished: Option<(&RunFinished, u64)> = None;
    for record in session_records {
        let lane = &record.envelope.lane;
        let ts = record.ns().unwrap_or(last_ns);
        match &record.event {
            Event::StepStarted(started) => {
                let id = session.step_span(lane, started.exec);
                // The innermost loop of its lane, else the fan-out step the lane belongs to.
                let parent = match (loops.get(lane).and_then(|l| l.last()), lane.len()) {
                    (Some((_, id)), _) => *id,
                    (None, n) if n >= 2 => session.step_span(&lane[..n - 2], lane[n - 2]),
                    (None, _) => root_id,
                };
                spans.push(open_step_span(started, trace, id, parent, ts, last_ns));
                open.insert((lane.clone(), started.exec), spans.len() - 1);
                if started.kind == "for_each" {
                    loops
                        .entry(lane.clone())
                        .or_default()
                        .push((started.exec, id));
                }
            }
            Event::ProcessStarted(_)
            | Event::RetryScheduled(_)
            | Event::Paused(_)
            | Event::PhaseViolation(_) => {
                let Some(event) = span_event(&record.event, ts) else {
                    continue;
                };
                if let Some(&index) = open.get(&(lane.clone(), event.0)) {
                    spans[index].events.push(event.1);
                }
            }
            Event::StepFinished(step) => {
                if let Some(stack) = loops.get_mut(lane)
                    && stack.last().is_some_and(|(e, _)| *e == step.exec)
                {
                    stack.pop();
                }
                if let Some(index) = open.remove(&(lane.clone(), step.exec)) {
                    finish_step(&mut spans[index], &step.result, ts);
                }
            }
            Event::RunFinished(run) => finished = Some((run, ts)),
            _ => {}
        }
    }

    let root = run_span(&session, finished, task, start_ns, last_ns);
    spans.insert(0, root);
    spans
}

/// The span of a step from its `step_started` record, open until its `step_finished` says
/// otherwise: it ends with the last record, as an error.
fn open_step_span(
    started: &StepStarted,
    trace: [u8; 16],
    id: [u8; 8],
    parent: [u8; 8],
    start_ns: u64,
    last_ns: u64,
) -> Span {
    Span {
        trace_id: trace,
        span_id: id,
        parent: Some(parent),
        name: started.step.clone(),
        start_ns,
        end_ns: last_ns.max(start_ns),
        attributes: vec![
            str_attr("orchestrate.step.name", started.step.clone()),
            str_attr("orchestrate.step.kind", started.kind.clone()),
            int_attr("orchestrate.step.exec", started.exec as i64),
            str_attr(
                "orchestrate.step.iteration",
                serde_json::to_string(&started.iteration).unwrap_or_default(),
            ),
        ],
        events: Vec::new(),
        error: Some("the step did not finish (no step_finished record)".into()),
    }
}

/// A span event for a record within a step (`process_started`, `retry_scheduled`, `paused`,
/// `phase_violation`), with its step's execution number: the attempt, exit code, delay, reason
/// and resume time the record carries, in that order.
fn span_event(event: &Event, time_ns: u64) -> Option<(u64, SpanEvent)> {
    let attempt = |n: u32| int_attr("orchestrate.attempt", i64::from(n));
    let (exec, name, attributes) = match event {
        Event::ProcessStarted(e) => (e.exec, "process_started", vec![attempt(e.attempt)]),
        Event::RetryScheduled(e) => (
            e.exec,
            "retry_scheduled",
            vec![
                attempt(e.attempt),
                int_attr("orchestrate.exit_code", e.exit_code),
                ("orchestrate.delay".into(), Attr::Float(e.delay)),
            ],
        ),
        Event::Paused(e) => (
            e.exec,
            "paused",
            vec![
                str_attr("orchestrate.reason", e.reason.clone()),
                str_attr("orchestrate.until", e.until.clone()),
            ],
        ),
        // Its step is the one in flight, whose number the event does not carry.
        Event::PhaseViolation(_) => return None,
        _ => return None,
    };
    Some((
        exec,
        SpanEvent {
            name: name.to_string(),
            time_ns,
            attributes,
        },
    ))
}

/// The root span of a session: the run (or its resume), its status from `finished` (the
/// `run_finished` and when it was written), and the swarm task it ran for.
fn run_span(
    session: &Session,
    finished: Option<(&RunFinished, u64)>,
    task: Option<&TaskInfo>,
    start_ns: u64,
    last_ns: u64,
) -> Span {
    let (trace, root_id, resumes) = (session.trace, session.root_span(), session.resumes);
    let started = session.started;
    let run_id = started.run_id.clone();
    let name = if started.name.is_empty() {
        "workflow"
    } else {
        started.name.as_str()
    };
    let mut root = Span {
        trace_id: trace,
        span_id: root_id,
        parent: None,
        name: format!("{} {name}", if resumes > 0 { "resume" } else { "run" },),
        start_ns,
        end_ns: finished.map_or(last_ns, |(_, ts)| ts).max(start_ns),
        attributes: vec![
            str_attr("orchestrate.run.id", run_id.clone()),
            str_attr("orchestrate.workflow.name", started.name.clone()),
            str_attr("orchestrate.workflow.file", started.workflow.clone()),
            int_attr("orchestrate.run.resumes", resumes as i64),
        ],
        events: Vec::new(),
        error: None,
    };
    match finished {
        Some((f, _)) => {
            let status = f.status.label();
            root.attributes
                .push(str_attr("orchestrate.run.status", status));
            root.attributes.push(int_attr(
                "orchestrate.run.exit_code",
                i64::from(f.exit_code),
            ));
            if f.status != RunStatus::Succeeded {
                root.error = Some(
                    f.error
                        .clone()
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
    let time = |text: &Option<String>| nanos(text.as_deref()?);
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

    /// A step's retries and pause are events of its span, with their attempt, exit code, delay,
    /// reason and resume time; a run's resume counts from its `run_resumed`.
    #[test]
    fn a_steps_retries_and_pause_are_events_of_its_span() {
        let ts = |s: u32| format!("2026-01-01T00:00:{s:02}.000000Z");
        let records = vec![
            json!({"event": "run_started", "seq": 1, "ts": ts(0), "run_id": "R2", "name": "wf",
                   "workflow": "wf.yaml", "fingerprint": "f", "context": {}, "timestamp_utc": "x", "pid": 1}),
            json!({"event": "run_resumed", "seq": 2, "ts": ts(1), "resumes": 2, "journal": 1}),
            json!({"event": "step_started", "seq": 3, "ts": ts(2), "step": "Build", "exec": 1,
                   "kind": "command", "iteration": [1, 0]}),
            json!({"event": "process_started", "seq": 4, "ts": ts(3), "step": "Build", "exec": 1,
                   "attempt": 1, "argv": ["make"]}),
            json!({"event": "retry_scheduled", "seq": 5, "ts": ts(4), "step": "Build", "exec": 1,
                   "attempt": 1, "exit_code": 2, "delay": 1.5}),
            json!({"event": "paused", "seq": 6, "ts": ts(5), "step": "Build", "exec": 1,
                   "reason": "rate limited", "until": ts(9)}),
            json!({"event": "step_finished", "seq": 7, "ts": ts(6), "step": "Build", "exec": 1,
                   "iteration": [1, 0], "result": {"status": "succeeded", "exit_code": 0}}),
            json!({"event": "run_finished", "seq": 8, "ts": ts(7), "status": "succeeded", "exit_code": 0}),
        ];
        let spans = spans_from_events(&records, None);
        assert_eq!(spans.len(), 2);
        let (root, build) = (&spans[0], &spans[1]);
        assert_eq!(root.name, "resume wf");
        assert!(
            root.attributes
                .contains(&int_attr("orchestrate.run.resumes", 2))
        );
        assert!(root.error.is_none());
        assert!(
            build
                .attributes
                .contains(&str_attr("orchestrate.step.iteration", "[1,0]"))
        );
        let events: Vec<(&str, &[(String, Attr)])> = build
            .events
            .iter()
            .map(|e| (e.name.as_str(), e.attributes.as_slice()))
            .collect();
        assert_eq!(
            events,
            [
                ("process_started", &[int_attr("orchestrate.attempt", 1)][..]),
                (
                    "retry_scheduled",
                    &[
                        int_attr("orchestrate.attempt", 1),
                        int_attr("orchestrate.exit_code", 2),
                        ("orchestrate.delay".to_string(), Attr::Float(1.5)),
                    ][..]
                ),
                (
                    "paused",
                    &[
                        str_attr("orchestrate.reason", "rate limited"),
                        str_attr("orchestrate.until", ts(9)),
                    ][..]
                ),
            ]
        );
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
}
