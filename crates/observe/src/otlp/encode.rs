//! Encoding spans as an OTLP/HTTP request body: protobuf or JSON.
//!
//! Owns: the resource attributes every export carries, the OTLP/JSON mapping, and the few
//! protobuf messages of `opentelemetry/proto/collector/trace/v1` a trace export needs, written
//! by hand. Does not build spans (`spans`) or send the body (`export`, `http`).

use serde_json::{Value, json};

use super::settings::{Exporter, Protocol};
use super::spans::{Attr, Span};

impl Exporter {
    /// Builds the request body for the spans of a run's log.
    pub(crate) fn encode(&self, spans: &[Span]) -> Vec<u8> {
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
}

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

#[cfg(test)]
mod tests {
    use super::super::spans::spans_from_events;
    use super::super::test_support::log;
    use super::*;

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
    #[test]
    fn protobuf_encoding_follows_the_trace_service_schema() {
        let spans = spans_from_events(&log(), None);
        let endpoint = |name: &str| {
            (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://c:4318".to_string())
        };
        let exporter = Exporter::from_vars(endpoint).unwrap().unwrap();
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
