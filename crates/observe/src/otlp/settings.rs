//! The exporter's settings, from the standard `OTEL_*` environment variables.
//!
//! Owns: which endpoint (and its host, port and path), protocol, headers, timeout, service name
//! and resource attributes a trace export uses, and refusing a setting that cannot be honoured
//! with an error naming the variable. Does not build spans (`spans`), encode them (`encode`) or
//! send anything (`export`, `http`).

use std::sync::{Once, OnceLock};
use std::time::Duration;

/// The target of the exporter's log events, whichever file of `otlp` logs them (the module's
/// path before it became a folder).
pub(super) const TARGET: &str = "orchestrate_observe::otlp";
/// How long one export may take when `OTEL_EXPORTER_OTLP_TIMEOUT` does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Protobuf,
    Json,
}

/// Where and how traces are sent.
#[derive(Debug, Clone)]
pub struct Exporter {
    /// The full traces URL, as named in messages.
    pub(crate) url: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) path: String,
    pub(crate) protocol: Protocol,
    pub(super) headers: Vec<(String, String)>,
    pub(crate) service_name: String,
    pub(super) resource: Vec<(String, String)>,
    pub(crate) timeout: Duration,
}

impl Exporter {
    /// Reads the `OTEL_*` variables through `var`: `Ok(None)` when no endpoint is set (or the SDK
    /// is disabled), an error naming the variable when a setting cannot be honoured.
    pub(crate) fn from_vars(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Exporter>, String> {
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
    /// is logged once (a warning) and turns tracing off.
    pub fn from_env() -> Option<&'static Exporter> {
        from_env_reporting(|err| {
            tracing::warn!(target: TARGET, "OpenTelemetry traces are off: {err}");
        })
    }
}

/// The exporter of this process's environment, read once; the first caller that finds a setting
/// that cannot be honoured reports it through `report` (once per process, whoever asks).
pub(super) fn from_env_reporting(report: impl FnOnce(&str)) -> Option<&'static Exporter> {
    static EXPORTER: OnceLock<Result<Option<Exporter>, String>> = OnceLock::new();
    static REPORTED: Once = Once::new();
    match EXPORTER.get_or_init(|| Exporter::from_vars(|n| std::env::var(n).ok())) {
        Ok(exporter) => exporter.as_ref(),
        Err(err) => {
            REPORTED.call_once(|| report(err));
            None
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
}
