//! Diagnostics: a problem in a user's file, with where it is and what to do about it.
//!
//! Owns: the [`Diagnostic`] value every loader stage produces and its rendering in the
//! `file:line:column` form editors jump to, with the offending line and a hint (the snippet is
//! drawn by `annotate-snippets`, which measures carets in display columns). Does not decide what
//! is wrong; the loader and validator do.

use std::path::{Path, PathBuf};

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use crate::yaml::Pos;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Severity {
    Error,
    #[expect(dead_code, reason = "no check warns yet; `render` already shows one")]
    Warning,
}

/// One problem found in a file the user wrote, with where it is and how to fix it; rendered by
/// [`Diagnostic::render`].
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub(crate) severity: Severity,
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line; 0 when the problem is the whole file (missing, unreadable).
    pub line: u32,
    /// 1-based column, in characters; 0 with line 0.
    pub column: u32,
    /// How many characters of the source line to underline (at least one).
    pub(crate) width: usize,
    /// What is wrong, as one lowercase sentence fragment.
    pub message: String,
    pub(crate) hint: Option<String>,
    /// The text of `file` when it is not the file being loaded (a problem found in a child
    /// workflow, reported with its parent's): rendering shows the line from it.
    pub(crate) source: Option<std::sync::Arc<str>>,
}

impl Diagnostic {
    /// An error at `pos` of `file`, underlining one character, with no hint.
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

    /// Adds the note that says how to fix it ("did you mean `output_capture`?").
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Underlines `width` characters (at least one) instead of one.
    pub fn with_width(mut self, width: usize) -> Self {
        self.width = width.max(1);
        self
    }

    /// Moves the position `chars` characters to the right on the same line: used to point inside
    /// a quoted scalar at the `${` that is wrong.
    pub(crate) fn shifted(mut self, chars: usize) -> Self {
        self.column = self
            .column
            .saturating_add(u32::try_from(chars).unwrap_or(0));
        self
    }

    /// `file:line:column`, the prefix every rendered problem starts with.
    pub(crate) fn location(&self) -> String {
        if self.line == 0 {
            return self.file.display().to_string();
        }
        format!("{}:{}:{}", self.file.display(), self.line, self.column)
    }

    /// Renders the problem: the `file:line:column: error: message` line editors jump to, then
    /// (through annotate-snippets) the offending source line with the span underlined by display
    /// width, so carets stay under wide characters and tabs, and the hint as a note. Plain text
    /// always: diagnostics go to logs and snapshots as often as to a terminal.
    pub(crate) fn render(&self, source: Option<&str>) -> String {
        let (level, label) = match self.severity {
            Severity::Error => (Level::ERROR, "error"),
            Severity::Warning => (Level::WARNING, "warning"),
        };
        let mut out = format!("{}: {label}: {}\n", self.location(), self.message);
        let line_text =
            source.and_then(|text| text.lines().nth((self.line as usize).checked_sub(1)?));
        let snippet = line_text.map(|line| {
            Snippet::source(line)
                .line_start(self.line as usize)
                .annotation(AnnotationKind::Primary.span(self.span_in(line)))
        });
        let hint = self
            .hint
            .as_deref()
            .map(|hint| Level::NOTE.with_name("hint").message(hint));
        let group = Group::with_level(level).elements(snippet).elements(hint);
        if !group.is_empty() {
            out.push_str(&RENDERER.render(&[group]));
            out.push('\n');
        }
        out
    }

    /// The byte range of `line` that `column` and `width` (in characters) cover, clamped to the
    /// line: a span past its end points just after the last character.
    fn span_in(&self, line: &str) -> std::ops::Range<usize> {
        let byte_at = |chars: usize| {
            line.char_indices()
                .nth(chars)
                .map_or(line.len(), |(offset, _)| offset)
        };
        let start = (self.column as usize).saturating_sub(1);
        byte_at(start)..byte_at(start + self.width.max(1))
    }
}

/// Diagnostics are never wrapped or cut: a long YAML line is shown whole.
const RENDERER: Renderer = Renderer::plain().term_width(usize::MAX / 4);

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
            "w.yaml:2:3: error: unknown field `comand`\n  |\n2 |   comand: [x]\n  |   ^^^^^^\n  |\n  = hint: did you mean `command`?\n"
        );
    }

    #[test]
    fn carets_sit_under_wide_characters_by_display_width() {
        // `日本語` and `🚀` take two columns each on a terminal: `${x}` is the 11th character
        // (column 11) but starts 14 display columns into the line.
        let d = Diagnostic::error(
            Path::new("w.yaml"),
            Pos {
                line: 1,
                column: 11,
                offset: None,
            },
            "bad",
        )
        .with_width(4);
        let text = d.render(Some("a: \"日本語 🚀 ${x}\"\n"));
        assert_eq!(
            text,
            format!(
                "w.yaml:1:11: error: bad\n  |\n1 | a: \"日本語 🚀 ${{x}}\"\n  | {}^^^^\n",
                " ".repeat(14)
            )
        );
    }

    #[test]
    fn a_span_past_the_line_points_after_it_and_tabs_line_up() {
        let at = |column, width| {
            Diagnostic::error(
                Path::new("w.yaml"),
                Pos {
                    line: 1,
                    column,
                    offset: None,
                },
                "bad",
            )
            .with_width(width)
        };
        assert_eq!(
            at(9, 3).render(Some("k: v\n")),
            "w.yaml:1:9: error: bad\n  |\n1 | k: v\n  |     ^\n"
        );
        // A tab shows as four spaces, in the line and under it alike.
        assert_eq!(
            at(3, 1).render(Some("\tk: v\n")),
            "w.yaml:1:3: error: bad\n  |\n1 |     k: v\n  |      ^\n"
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
