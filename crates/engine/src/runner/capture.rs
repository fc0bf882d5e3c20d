//! A finished process turned into a step result by its capture mode (`text`, `lines`, `json`)
//! and the spec's limits.
//!
//! Does not parse agent output (`agent`) nor decide retries (`step`).

use serde_json::Value;

use super::{JSON_LIMIT_BYTES, LINES_LIMIT, TEXT_KEEP_BYTES};
use crate::step_result::{StepError, StepResult, StepStatus};
use orchestrate_base::exec::{self, Outcome};
use orchestrate_lang::model::{Capture, Step};

/// Turns a finished process into a step result, applying the capture mode and its limits.
pub(super) fn capture(step: &Step, finished: &exec::Finished) -> StepResult {
    let code = finished.outcome.exit_code();
    let status = match finished.outcome {
        _ if finished.outcome.success() => StepStatus::Succeeded,
        // Not the step's doing: resume runs it again.
        Outcome::Cancelled => StepStatus::Interrupted,
        _ => StepStatus::Failed,
    };
    let mut result = StepResult {
        exit_code: Some(code),
        outcome: Some(finished.outcome.clone()),
        truncated: Some(false),
        ..StepResult::new(status)
    };
    let text = String::from_utf8_lossy(&finished.stdout);
    match step.capture {
        Capture::Text => {
            let (output, cut) = text_output(&text, finished.stdout_complete);
            result.output = Some(output.to_string());
            result.truncated = Some(cut);
        }
        Capture::Lines => {
            result.output_capture = Some(Capture::Lines);
            let mut lines: Vec<&str> = text.split('\n').collect();
            if lines.last() == Some(&"") {
                lines.pop();
            }
            let over_bytes = !finished.stdout_complete;
            if over_bytes {
                // The last line may be cut in the middle: drop it.
                lines.pop();
            }
            let truncated = over_bytes || lines.len() > LINES_LIMIT;
            lines.truncate(LINES_LIMIT);
            result.lines = Some(
                lines
                    .iter()
                    .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
                    .collect(),
            );
            result.truncated = Some(truncated);
        }
        Capture::Json => {
            result.output_capture = Some(Capture::Json);
            let parsed = if finished.stdout_bytes > JSON_LIMIT_BYTES as u64 {
                Err(format!(
                    "stdout is {} bytes, over the 1 MB limit for JSON capture",
                    finished.stdout_bytes
                ))
            } else {
                parse_json_limited(&finished.stdout)
            };
            match parsed {
                Ok(value) => result.json = Some(value),
                Err(message) if step.allow_parse_error => {
                    result.json = Some(Value::Null);
                    result.parse_error = Some(message);
                    let (output, cut) = text_output(&text, finished.stdout_complete);
                    result.output = Some(output.to_string());
                    result.truncated = Some(cut);
                }
                Err(message) if finished.outcome.success() => {
                    result.status = StepStatus::Failed;
                    result.exit_code = Some(2);
                    result.error = Some(StepError::Message(format!(
                        "output is not valid JSON: {message}"
                    )));
                    result.truncated = Some(finished.stdout_bytes > JSON_LIMIT_BYTES as u64);
                }
                Err(_) => {}
            }
        }
    }
    if !finished.outcome.success() && result.error.is_none() {
        result.error = Some(StepError::Message(match &finished.outcome {
            Outcome::Exited { code } => format!("exited with code {code}"),
            Outcome::Signaled { signal } => format!("killed by signal {signal}"),
            Outcome::TimedOut => {
                "timed out (timeout_sec); its process group was stopped".to_string()
            }
            Outcome::IdleTimedOut { after_ms } => idle_message(*after_ms),
            Outcome::Stopped => "stopped: the run's budget was exceeded".to_string(),
            Outcome::Cancelled => "interrupted".to_string(),
            Outcome::SpawnFailed { message } => message.clone(),
        }));
    }
    result
}

/// The error of a step stopped for silence.
pub(super) fn idle_message(after_ms: u64) -> String {
    format!(
        "no output for {} s (idle_timeout_sec); its processes were stopped",
        after_ms as f64 / 1000.0
    )
}

/// Parses JSON without letting deep nesting overflow the stack (serde_json stops at 128).
pub(super) fn parse_json_limited(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice::<Value>(bytes).map_err(|err| err.to_string())
}

fn floor_char_boundary(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let mut i = max;
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A step's text output as `${steps.X.output}` holds it, and whether it was cut: at most
/// `TEXT_KEEP_BYTES`, and, when nothing was cut, without one trailing newline (`\n` or
/// `\r\n`), as shell command substitution drops it, so that `echo yes` gives `yes`. Only one:
/// a deliberate blank line stays. The step's stdout log keeps the bytes as written.
pub(super) fn text_output(text: &str, complete: bool) -> (&str, bool) {
    let keep = floor_char_boundary(text, TEXT_KEEP_BYTES);
    if !complete || keep < text.len() {
        return (&text[..keep], true);
    }
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    (text, false)
}

/// Models often wrap JSON answers in a Markdown code fence.
pub(super) fn strip_fences(text: &str) -> &str {
    let trimmed = text.trim();
    let Some(rest) = trimmed.strip_prefix("```") else {
        return trimmed;
    };
    let rest = rest.split_once('\n').map(|(_, body)| body).unwrap_or("");
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_output_drops_one_trailing_newline_as_command_substitution_does() {
        assert_eq!(text_output("yes\n", true), ("yes", false));
        assert_eq!(text_output("yes\r\n", true), ("yes", false));
        assert_eq!(text_output("a\n\n", true), ("a\n", false));
        assert_eq!(text_output("no newline", true), ("no newline", false));
        assert_eq!(text_output("", true), ("", false));
        // Cut output keeps what it has: its end is not the command's.
        assert_eq!(text_output("partial\n", false), ("partial\n", true));
        let long = "x".repeat(TEXT_KEEP_BYTES) + "\n";
        assert_eq!(text_output(&long, true), (&long[..TEXT_KEEP_BYTES], true));
    }
}
