//! Observability outputs: OTLP/HTTP traces of runs and tasks (sent to a loopback receiver in the
//! test) and the Prometheus textfile of a role process.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/runtimes");

/// codex.jsonl.success.jsonl reports these tokens; runtimes.yaml below prices them.
const INPUT: i64 = 234;
const OUTPUT: i64 = 56;
const CACHE_READ: i64 = 1000;
const PRICES: &str = "prices:\n  my-model: {input: 1, output: 2, cache_read: 0.5}\n";

fn cost_per_ask() -> f64 {
    (INPUT as f64 + OUTPUT as f64 * 2.0 + CACHE_READ as f64 * 0.5) / 1e6
}

/// A request the receiver got.
#[derive(Debug, Clone)]
struct Request {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the OTLP body is JSON")
    }
}

/// An HTTP server on 127.0.0.1 that stores every request and answers 200.
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(request) = serve(stream) {
                    store.lock().unwrap().push(request);
                }
            }
        });
        Receiver { port, requests }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_for(&self, n: usize) -> Vec<Request> {
        wait_until(
            &format!("{n} OTLP request(s)"),
            Duration::from_secs(20),
            || self.requests.lock().unwrap().len() >= n,
        );
        self.requests.lock().unwrap().clone()
    }
}

fn serve(mut stream: TcpStream) -> Option<Request> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    let _ = stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    Some(Request {
        line,
        headers,
        body,
    })
}

/// A workspace with a fake `codex` on PATH that prints the recorded success stream.
fn agent_ws() -> Ws {
    let mut ws = Ws::new();
    ws.with_bin_path();
    ws.script(
        "bin/codex",
        &format!("#!/bin/sh\ncat > /dev/null\ncat '{FIXTURES}/codex.jsonl.success.jsonl'\n"),
    );
    ws.file("runtimes.yaml", PRICES);
    ws
}

fn otel_env(ws: &mut Ws, endpoint: &str) {
    ws.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_SERVICE_NAME", "orch-test")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cret%20value");
}

fn spans(body: &Value) -> Vec<Value> {
    body["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .expect("spans")
        .clone()
}

fn attr(span: &Value, key: &str) -> Value {
    span["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| a["value"].clone())
        .unwrap_or(Value::Null)
}

fn int_attr(span: &Value, key: &str) -> i64 {
    attr(span, key)["intValue"]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not an int attribute of {span:#}"))
        .parse()
        .unwrap()
}

fn str_attr(span: &Value, key: &str) -> String {
    attr(span, key)["stringValue"]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string attribute of {span:#}"))
        .to_string()
}

fn nanos(span: &Value, key: &str) -> u64 {
    span[key].as_str().unwrap().parse().unwrap()
}

fn by_name<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

#[test]
fn a_run_is_exported_as_one_trace_with_genai_attributes_on_the_agent_step() {
    let receiver = Receiver::start();
    let mut ws = agent_ws();
    otel_env(&mut ws, &receiver.endpoint());
    ws.workflow(
        r#"name: traced
steps:
  - name: Prep
    command: ["sh", "-c", "sleep 0.05"]
  - name: Ask
    runtime: codex
    model: my-model-1
    prompt: "hello"
  - name: Each
    for_each:
      items: ["a", "b"]
      steps:
        - name: Item
          command: ["true"]
"#,
    );
    let run = run_within(&ws, &["run", "wf.yaml"], Duration::from_secs(30));
    run.ok();
    let requests = receiver.wait_for(1);
    assert_eq!(requests.len(), 1, "one export per run");
    let request = &requests[0];
    assert_eq!(request.line, "POST /v1/traces HTTP/1.1");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-api-key"), Some("s3cret value"));
    let body = request.json();
    let resource = &body["resourceSpans"][0]["resource"];
    assert_eq!(str_attr(resource, "service.name"), "orch-test");

    let spans = spans(&body);
    let root = by_name(&spans, "run traced");
    assert!(root.get("parentSpanId").is_none(), "{root:#}");
    assert_eq!(str_attr(root, "orchestrate.run.id"), run.id());
    assert_eq!(str_attr(root, "orchestrate.run.status"), "succeeded");
    assert_eq!(root["status"]["code"], 0);
    let trace = root["traceId"].as_str().unwrap();
    assert_eq!(trace.len(), 32);
    // Prep, Ask, Each and two Items.
    assert_eq!(spans.len(), 6, "{spans:#?}");
    for span in &spans {
        assert_eq!(span["traceId"], trace, "one trace: {span:#}");
        assert!(nanos(span, "startTimeUnixNano") <= nanos(span, "endTimeUnixNano"));
        assert!(nanos(root, "startTimeUnixNano") <= nanos(span, "startTimeUnixNano"));
        assert!(nanos(span, "endTimeUnixNano") <= nanos(root, "endTimeUnixNano"));
    }
    let (prep, ask, each) = (
        by_name(&spans, "Prep"),
        by_name(&spans, "Ask"),
        by_name(&spans, "Each"),
    );
    for step in [prep, ask, each] {
        assert_eq!(step["parentSpanId"], root["spanId"], "{step:#}");
    }
    let items: Vec<&Value> = spans.iter().filter(|s| s["name"] == "Item").collect();
    assert_eq!(items.len(), 2);
    for item in &items {
        assert_eq!(
            item["parentSpanId"], each["spanId"],
            "loop body under the loop"
        );
    }
    // Real times from the log, in the order the steps ran.
    assert!(nanos(prep, "endTimeUnixNano") - nanos(prep, "startTimeUnixNano") >= 50_000_000);
    assert!(nanos(prep, "endTimeUnixNano") <= nanos(ask, "startTimeUnixNano"));
    assert!(nanos(ask, "endTimeUnixNano") <= nanos(each, "startTimeUnixNano"));
    assert_eq!(str_attr(prep, "orchestrate.step.kind"), "command");
    assert_eq!(int_attr(prep, "orchestrate.step.exit_code"), 0);
    assert_eq!(int_attr(prep, "orchestrate.step.attempts"), 1);

    assert_eq!(str_attr(ask, "gen_ai.operation.name"), "invoke_agent");
    assert_eq!(str_attr(ask, "gen_ai.provider.name"), "openai");
    assert_eq!(str_attr(ask, "gen_ai.request.model"), "my-model-1");
    assert_eq!(
        int_attr(ask, "gen_ai.usage.input_tokens"),
        INPUT + CACHE_READ,
        "input tokens count cache reads, as the conventions ask"
    );
    assert_eq!(int_attr(ask, "gen_ai.usage.output_tokens"), OUTPUT);
    assert_eq!(
        int_attr(ask, "gen_ai.usage.cache_read.input_tokens"),
        CACHE_READ
    );
    let cost = attr(ask, "orchestrate.cost_usd")["doubleValue"]
        .as_f64()
        .expect("cost attribute");
    assert!((cost - cost_per_ask()).abs() < 1e-12, "{cost}");
    // The step's recorded times are the span's.
    let result = run.step("Ask");
    let started = chrono::DateTime::parse_from_rfc3339(result["started_at"].as_str().unwrap())
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap() as u64;
    assert_eq!(nanos(ask, "startTimeUnixNano"), started);
}

#[test]
fn a_failed_run_and_its_resume_join_the_same_trace() {
    let receiver = Receiver::start();
    let mut ws = Ws::new();
    otel_env(&mut ws, &receiver.endpoint());
    ws.env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
    ws.workflow(
        r#"name: flaky
steps:
  - name: One
    command: ["true"]
  - name: Two
    command: ["sh", "-c", "test -f fixed || { echo broken >&2; exit 3; }"]
"#,
    );
    let run = ws.run_wf(&[]);
    run.code(1);
    let first = receiver.wait_for(1)[0].json();
    let spans1 = spans(&first);
    let root1 = by_name(&spans1, "run flaky");
    assert_eq!(root1["status"]["code"], 2, "a failed run is an error");
    let two = by_name(&spans1, "Two");
    assert_eq!(two["status"]["code"], 2);
    assert_eq!(int_attr(two, "orchestrate.step.exit_code"), 3);

    ws.file("fixed", "");
    ws.run(&["resume", run.id()]).ok();
    let second = receiver.wait_for(2)[1].json();
    let spans2 = spans(&second);
    let root2 = by_name(&spans2, "resume flaky");
    assert_eq!(root2["traceId"], root1["traceId"]);
    assert_ne!(root2["spanId"], root1["spanId"]);
    assert_eq!(int_attr(root2, "orchestrate.run.resumes"), 1);
    assert_eq!(str_attr(root2, "orchestrate.run.status"), "succeeded");
    // Only what the resume ran: `One` was replayed, not run again.
    let names: Vec<&str> = spans2.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["resume flaky", "Two"]);
}

#[test]
fn an_unreachable_or_silent_collector_warns_once_and_the_run_succeeds() {
    // Nothing listens on a port just released: connection refused.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut ws = Ws::new();
    ws.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &format!("http://127.0.0.1:{closed}"),
    );
    ws.workflow("name: w\nsteps:\n  - name: A\n    command: [\"true\"]\n");
    let run = run_within(&ws, &["run", "wf.yaml"], Duration::from_secs(10));
    run.ok();
    let warning =
        format!("warning: could not send the run's trace to http://127.0.0.1:{closed}/v1/traces");
    assert_eq!(run.stderr.matches(&warning).count(), 1, "{}", run.stderr);

    // A collector that accepts and never answers costs the timeout, not more.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    std::thread::spawn(move || {
        for stream in silent.incoming().flatten() {
            keep.lock().unwrap().push(stream);
        }
    });
    let mut ws = Ws::new();
    ws.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &format!("http://127.0.0.1:{port}"),
    )
    .env("OTEL_EXPORTER_OTLP_TIMEOUT", "500");
    ws.workflow("name: w\nsteps:\n  - name: A\n    command: [\"true\"]\n");
    // The collector never answers: without the export timeout the run would never end. A wide
    // deadline proves the timeout fired; its message says which one.
    let run = run_within(&ws, &["run", "wf.yaml"], Duration::from_secs(120));
    run.ok().stderr_has("timed out after 500ms");
    assert!(!held.lock().unwrap().is_empty(), "the exporter did connect");
}

/// A role whose workflow asks codex, then fails when the task says so.
fn priced_role(ws: &Ws) {
    role(
        ws,
        "rev",
        // Two at a time: other tasks' records move through the queue directories while a
        // task's readonly step runs, which its check must not count as the step's changes.
        "concurrency: 2\nmax_attempts: 1\n",
        r#"
steps:
  - name: Ask
    runtime: codex
    model: my-model-1
    prompt: "review ${task.text}"
  - name: Check
    command: ["sh", "-c", "case \"$1\" in *fail*) exit 1;; esac", "check", "${task.text}"]
"#,
    );
}

#[test]
fn a_role_writes_prometheus_metrics_and_exports_each_task_as_a_trace() {
    let receiver = Receiver::start();
    let mut ws = agent_ws();
    otel_env(&mut ws, &receiver.endpoint());
    priced_role(&ws);
    for text in ["one", "two", "three", "please fail"] {
        ws.run(&["enqueue", "rev", "--text", text]).ok();
    }
    let run = run_within(
        &ws,
        &[
            "agent",
            "rev",
            "--once",
            "--replica",
            "3",
            "--metrics-dir",
            "metrics",
        ],
        Duration::from_secs(60),
    );
    run.ok();

    let text = ws.read("metrics/orchestrate_rev_3.prom");
    let samples = parse_prom(&text);
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in\n{text}"))
    };
    let base = [("role", "rev"), ("replica", "3")];
    assert_eq!(value("orchestrate_tasks_processed_total", &base), 3.0);
    assert_eq!(value("orchestrate_tasks_failed_total", &base), 1.0);
    assert_eq!(value("orchestrate_tasks_quarantined_total", &base), 0.0);
    assert_eq!(value("orchestrate_queue_depth", &base), 0.0);
    assert_eq!(value("orchestrate_tasks_running", &base), 0.0);
    let model = [
        ("role", "rev"),
        ("runtime", "codex"),
        ("model", "my-model-1"),
    ];
    let cost = value("orchestrate_cost_usd_total", &model);
    assert!((cost - 4.0 * cost_per_ask()).abs() < 1e-12, "{cost}");
    let mut input = model.to_vec();
    input.push(("type", "input"));
    assert_eq!(
        value("orchestrate_tokens_total", &input),
        4.0 * INPUT as f64
    );
    assert_eq!(
        value(
            "orchestrate_step_duration_seconds_count",
            &[("role", "rev"), ("step", "Check")]
        ),
        4.0
    );
    assert_eq!(
        value(
            "orchestrate_step_duration_seconds_bucket",
            &[("step", "Ask"), ("le", "+Inf")]
        ),
        4.0
    );
    let finished = value("orchestrate_last_task_finish_timestamp_seconds", &base);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(finished <= now && finished > now - 120.0, "{finished}");
    for family in [
        "orchestrate_queue_depth gauge",
        "orchestrate_tasks_processed_total counter",
        "orchestrate_step_duration_seconds histogram",
        "orchestrate_cost_usd_total counter",
    ] {
        assert!(text.contains(&format!("# TYPE {family}\n")), "{text}");
    }
    assert_eq!(entries(&ws, "metrics"), vec!["orchestrate_rev_3.prom"]);

    // One trace per task, its root naming the task.
    let requests = receiver.wait_for(4);
    assert_eq!(requests.len(), 4);
    let mut texts = Vec::new();
    let mut traces = std::collections::HashSet::new();
    for request in &requests {
        let spans = spans(&request.json());
        let root = &spans[0];
        assert!(root.get("parentSpanId").is_none());
        assert_eq!(str_attr(root, "orchestrate.task.role"), "rev");
        assert_eq!(int_attr(root, "orchestrate.task.attempt"), 1);
        assert!(!str_attr(root, "orchestrate.correlation_id").is_empty());
        traces.insert(root["traceId"].as_str().unwrap().to_string());
        let ask = by_name(&spans, "Ask");
        assert_eq!(ask["parentSpanId"], root["spanId"]);
        assert_eq!(int_attr(ask, "gen_ai.usage.output_tokens"), OUTPUT);
        texts.push(str_attr(root, "orchestrate.run.status"));
    }
    assert_eq!(traces.len(), 4, "each task's run is its own trace");
    texts.sort();
    assert_eq!(texts, vec!["failed", "succeeded", "succeeded", "succeeded"]);
}

/// (name, labels, value) of each sample line.
fn parse_prom(text: &str) -> Vec<(String, std::collections::HashMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name {name}"
        );
        let mut map = std::collections::HashMap::new();
        // Label values here hold no commas or quotes.
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').expect("label=value");
            map.insert(k.to_string(), v.trim_matches('"').to_string());
        }
        out.push((name.to_string(), map, value));
    }
    out
}

/// A child run's steps are in its parent's trace: the child's root span hangs under the
/// `workflow:` step's span, its steps under it, one trace id throughout (nested children too).
#[test]
fn a_child_runs_spans_join_the_parents_trace_under_its_workflow_step() {
    let receiver = Receiver::start();
    let mut ws = agent_ws();
    otel_env(&mut ws, &receiver.endpoint());
    ws.file(
        "flows/inner.yaml",
        "name: inner\nsteps:\n  - name: Deep\n    command: [\"true\"]\n",
    );
    ws.file(
        "flows/child.yaml",
        r#"name: child
steps:
  - name: Say
    command: ["echo", "hi"]
  - name: Nested
    workflow: flows/inner.yaml
"#,
    );
    ws.workflow(
        r#"name: parent
steps:
  - name: Before
    command: ["true"]
  - name: Sub
    workflow: flows/child.yaml
"#,
    );
    run_within(&ws, &["run", "wf.yaml"], Duration::from_secs(30)).ok();
    let requests = receiver.wait_for(1);
    assert_eq!(requests.len(), 1, "one export per run, children included");
    let spans = spans(&requests[0].json());
    let names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(spans.len(), 8, "{names:?}");
    let root = by_name(&spans, "run parent");
    for span in &spans {
        assert_eq!(span["traceId"], root["traceId"], "{span:#}");
    }
    let sub = by_name(&spans, "Sub");
    let child = by_name(&spans, "run child");
    let nested = by_name(&spans, "Nested");
    let inner = by_name(&spans, "run inner");
    assert_eq!(sub["parentSpanId"], root["spanId"]);
    assert_eq!(child["parentSpanId"], sub["spanId"]);
    assert_eq!(by_name(&spans, "Say")["parentSpanId"], child["spanId"]);
    assert_eq!(nested["parentSpanId"], child["spanId"]);
    assert_eq!(inner["parentSpanId"], nested["spanId"]);
    assert_eq!(by_name(&spans, "Deep")["parentSpanId"], inner["spanId"]);
    assert!(nanos(sub, "startTimeUnixNano") <= nanos(child, "startTimeUnixNano"));
    assert!(nanos(child, "endTimeUnixNano") <= nanos(sub, "endTimeUnixNano"));
}

/// A setting that cannot be honoured is a `warning:` line for the person who typed `run`, and a
/// log event of `orchestrate_observe::otlp` in a role process; each said once.
#[test]
fn a_setting_that_cannot_be_honoured_is_a_warning_line_for_run_and_a_log_event_for_a_role() {
    let mut ws = Ws::new();
    ws.env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    ws.workflow("name: w\nsteps:\n  - name: A\n    command: [\"true\"]\n");
    let run = run_within(&ws, &["run", "wf.yaml"], Duration::from_secs(30));
    run.ok();
    let off = "OpenTelemetry traces are off: OTEL_EXPORTER_OTLP_PROTOCOL=grpc";
    let line = format!("warning: {off}");
    assert_eq!(run.stderr.matches(&line).count(), 1, "{}", run.stderr);

    role(
        &ws,
        "r",
        "",
        "steps:\n  - name: A\n    command: [\"true\"]\n",
    );
    for text in ["one", "two"] {
        ws.run(&["enqueue", "r", "--text", text]).ok();
    }
    let agent = run_within(&ws, &["agent", "r", "--once"], Duration::from_secs(60));
    agent.ok();
    let event = format!("WARN orchestrate_observe::otlp: {off}");
    assert_eq!(agent.stderr.matches(&event).count(), 1, "{}", agent.stderr);
    assert!(!agent.stderr.contains(&line), "{}", agent.stderr);
}

/// A role process's failed export is a log event (it warns once, then drops traces for a while
/// and says how many at exit), not a `warning:` line.
#[test]
fn a_role_process_logs_a_failed_export_once_and_the_traces_it_dropped() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut ws = Ws::new();
    ws.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &format!("http://127.0.0.1:{closed}"),
    );
    role(
        &ws,
        "r",
        "",
        "steps:\n  - name: A\n    command: [\"true\"]\n",
    );
    for text in ["one", "two"] {
        ws.run(&["enqueue", "r", "--text", text]).ok();
    }
    let agent = run_within(&ws, &["agent", "r", "--once"], Duration::from_secs(60));
    agent.ok();
    let url = format!("http://127.0.0.1:{closed}/v1/traces");
    let failed = format!("WARN orchestrate_observe::otlp: could not send the run's trace to {url}");
    assert_eq!(agent.stderr.matches(&failed).count(), 1, "{}", agent.stderr);
    let dropped = format!(
        "WARN orchestrate_observe::otlp: 1 task trace(s) were not sent to {url} while it was unreachable"
    );
    assert!(agent.stderr.contains(&dropped), "{}", agent.stderr);
    assert!(!agent.stderr.contains("warning:"), "{}", agent.stderr);
}
