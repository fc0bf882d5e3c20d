//! A recorded run's event log shared by the unit tests of the submodules.
//!
//! Compiled only for tests; nothing outside `#[cfg(test)]` may use it.

use serde_json::{Value, json};

/// A run with one agent step that failed with a rate limit, then the run's end.
pub(super) fn log() -> Vec<Value> {
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
