//! Step results as values: building a failed one, adding its timing, and reading one back (its
//! error as a line, its output as a person reads it, what a rejection said).
//!
//! Does not decide a step's outcome (`execute`).

use std::time::Instant;

use serde_json::{Value, json};

/// A step result's output as a person reads it: its text, its lines, or its JSON; `None` when
/// it has none (or only whitespace).
pub(super) fn shown_output(result: &Value) -> Option<String> {
    let text = if let Some(text) = result["output"].as_str() {
        text.to_string()
    } else if let Some(lines) = result["lines"].as_array() {
        lines
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    } else if result.get("json").is_some_and(|j| !j.is_null()) {
        serde_json::to_string_pretty(&result["json"]).ok()?
    } else if let Some(text) = result["result"].as_str() {
        text.to_string()
    } else {
        return None;
    };
    (!text.trim().is_empty()).then_some(text)
}

/// A failed result's error as one line: command steps record a string, agent steps an object
/// with a class (`{"kind": "auth", "message": ...}`).
pub fn error_text(result: &Value) -> Option<String> {
    match &result["error"] {
        Value::String(text) => Some(text.clone()),
        Value::Object(error) => {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("failed");
            Some(match error.get("kind").and_then(Value::as_str) {
                Some(kind) => format!("{kind}: {message}"),
                None => message.to_string(),
            })
        }
        _ => None,
    }
}

/// What a rejection says: an approval's reason, else the step's answer (an agent's final text,
/// JSON findings, or a command's output).
pub(super) fn rejection_reason(result: &Value) -> String {
    for key in ["reason", "result", "output"] {
        if let Some(text) = result[key].as_str().filter(|t| !t.is_empty()) {
            return text.to_string();
        }
    }
    match &result["json"] {
        Value::Null => String::new(),
        json => json.to_string(),
    }
}

pub(super) fn failed_result(exit_code: i32, message: String) -> Value {
    json!({"status": "failed", "exit_code": exit_code, "error": message})
}

pub(super) fn with_timing(mut result: Value, started_at: &str, started: Instant) -> Value {
    result["started_at"] = json!(started_at);
    result["finished_at"] = json!(orchestrate_base::clock::now_rfc3339());
    result["duration"] = json!((started.elapsed().as_secs_f64() * 1e6).round() / 1e6);
    result
}
