//! Reading runs back: status, logs, reports, graphs, and OpenTelemetry traces of finished runs.

pub mod observe;
pub mod otlp;
