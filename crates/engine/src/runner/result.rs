//! Step results read back and finished: a result's output as a person reads it, what a
//! rejection said, and its timing.
//!
//! Does not decide a step's outcome (`execute`) nor define the result (`crate::step_result`).

use std::time::Instant;

use crate::step_result::StepResult;

/// A step result's output as a person reads it: its text, its lines, or its JSON; `None` when
/// it has none (or only whitespace).
pub(super) fn shown_output(result: &StepResult) -> Option<String> {
    let text = if let Some(text) = &result.output {
        text.clone()
    } else if let Some(lines) = &result.lines {
        lines.join("\n")
    } else if let Some(json) = result.json.as_ref().filter(|j| !j.is_null()) {
        serde_json::to_string_pretty(json).ok()?
    } else if let Some(text) = &result.result {
        text.clone()
    } else {
        return None;
    };
    (!text.trim().is_empty()).then_some(text)
}

/// What a rejection says: an approval's reason, else the step's answer (an agent's final text,
/// JSON findings, or a command's output).
pub(super) fn rejection_reason(result: &StepResult) -> String {
    for text in [&result.reason, &result.result, &result.output] {
        if let Some(text) = text.as_ref().filter(|t| !t.is_empty()) {
            return text.clone();
        }
    }
    match &result.json {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(json) => json.to_string(),
    }
}

pub(super) fn with_timing(
    mut result: StepResult,
    started_at: &str,
    started: Instant,
) -> StepResult {
    result.started_at = Some(started_at.to_string());
    result.finished_at = Some(orchestrate_base::clock::now_rfc3339());
    result.duration = Some((started.elapsed().as_secs_f64() * 1e6).round() / 1e6);
    result
}
