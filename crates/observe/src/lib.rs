//! Reading runs back: status, logs, reports, graphs, and OpenTelemetry traces of finished runs.

#![warn(missing_docs, unreachable_pub)]

pub mod observe;
pub mod otlp;
