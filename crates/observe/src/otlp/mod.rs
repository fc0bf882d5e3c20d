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
//!
//! Warnings: `run` and `resume` print theirs on stderr as `warning: ...` lines (a display for
//! the person at the terminal); a role process logs its own as `tracing` events (target
//! `orchestrate_observe::otlp`).
//!
//! This file only declares the submodules and re-exports what the worker and the binary use;
//! lowest first: `settings` (the `OTEL_*` variables), `spans` (from the event log), `encode`
//! (protobuf and JSON), `http` (the bounded POST), `export` (one export now, or a role process's
//! background queue). No submodule imports one above it.

mod encode;
mod export;
mod http;
mod settings;
mod spans;
#[cfg(test)]
mod test_support;

pub use export::{export_run, flush, submit_task};
pub use settings::Exporter;
pub use spans::TaskInfo;
