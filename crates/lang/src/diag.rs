//! Diagnostics: a problem in a user's file, with where it is and what to do about it.
//!
//! Owns: the [`Diagnostic`] value every loader stage produces and its rendering in the
//! `file:line:column` form editors jump to, with the offending line and a hint. Does not decide
//! what is wrong; the loader and validator do.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::yaml::Pos;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
    /// How many characters of the source line to underline (at least one).
    pub width: usize,
    pub message: String,
    pub hint: Option<String>,
    /// The text of `file` when it is not the file being loaded (a problem found in a child
    /// workflow, reported with its parent's): rendering shows the line from it.
    pub source: Option<std::sync::Arc<str>>,
}

impl Diagnostic {
    pub fn error(file: &Path, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            // Line 0 means the problem is about the whole file (missing, unreadable).
            line: pos.line,
            column: if pos.line == 0 { 0 } else { pos.column.max(1) },
            width: 1,
            message: message.into(),
            hint: None,
            source: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_width(mut self, width: usize) -> Self {
        self.width = width.max(1);
        self
    }

    /// Moves the position `chars` characters to the right on the same line: used to point inside
    /// a quoted scalar at the `${` that is wrong.
    pub fn shifted(mut self, chars: usize) -> Self {
        self.column = self
            .column
            .saturating_add(u32::try_from(chars).unwrap_or(0));
        self
    }

    /// `file:line:column`, the prefix every rendered problem starts with.
    pub fn location(&self) -> String {
        if self.line == 0 {
            return self.file.display().to_string();
        }
        format!("{}:{}:{}", self.file.display(), self.line, self.column)
    }

    /// Renders the problem with the offending source line (when `source` is the file's text).
    pub fn render(&self, source: Option<&str>) -> String {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = format!("{}: {label}: {}\n", self.location(), self.message);
        let line_text =
            source.and_then(|text| text.lines().nth((self.line as usize).checked_sub(1)?));
        if let Some(line_text) = line_text {
            let number = self.line.to_string();
            let pad = " ".repeat(number.len());
            let caret_pad: String = line_text
                .chars()
                .take(self.column as usize - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{number} | {line_text}");
            let _ = writeln!(out, "{pad} | {caret_pad}{}", "^".repeat(self.width));
            if let Some(hint) = &self.hint {
                let _ = writeln!(out, "{pad} = hint: {hint}");
            }
        } else if let Some(hint) = &self.hint {
            let _ = writeln!(out, "  = hint: {hint}");
        }
        out
    }
}

/// The closest of `candidates` to `word`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_line_and_hint() {
        let d = Diagnostic::error(
            Path::new("w.yaml"),
            Pos {
                line: 2,
                column: 3,
                offset: None,
            },
            "unknown field `comand`",
        )
        .with_width(6)
        .with_hint("did you mean `command`?");
        let text = d.render(Some("steps:\n  comand: [x]\n"));
        assert_eq!(
            text,
            "w.yaml:2:3: error: unknown field `comand`\n  |\n2 |   comand: [x]\n  |   ^^^^^^\n  = hint: did you mean `command`?\n"
        );
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("outptu_capture", ["output_capture", "output_file"]),
            Some("output_capture")
        );
        assert_eq!(did_you_mean("zzz", ["output_capture", "command"]), None);
    }
}
