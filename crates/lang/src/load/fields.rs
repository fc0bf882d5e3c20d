//! The [`Loader`] every file is walked with, and its typed field readers: a mapping's fields
//! checked against a table (unknown-field diagnostics with a "did you mean"), strings,
//! templates, argv lists, booleans, numbers, counts and seconds, each reporting a wrong value
//! at its position. Does not know any particular file's fields: the field tables live with
//! the code that reads them.

use std::path::PathBuf;
use std::time::Duration;

use crate::diag::{Diagnostic, did_you_mean};
use crate::template::Template;
use crate::yaml::{Node, Pos, Value};

pub(super) struct Loader {
    pub(super) file: PathBuf,
    pub(super) diags: Vec<Diagnostic>,
    /// Source lines, to tell quoted scalars (whose position is the quote) from plain ones.
    pub(super) lines: Vec<String>,
}

/// A mapping whose keys have been checked against the fields its type allows.
pub(super) struct Fields<'a> {
    pub(super) entries: &'a [(Node, Node)],
}

impl<'a> Fields<'a> {
    pub(super) fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
            .map(|(_, v)| v)
    }

    /// A present key whose value is YAML null counts as absent (`retry:` with nothing after it).
    pub(super) fn value(&self, key: &str) -> Option<&'a Node> {
        self.get(key).filter(|node| node.value != Value::Null)
    }

    pub(super) fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
            .map(|(k, _)| k.pos)
    }
}

pub(super) fn map_entries(node: &Node) -> &[(Node, Node)] {
    match &node.value {
        Value::Map(entries) => entries,
        _ => &[],
    }
}

impl Loader {
    pub(super) fn error(&mut self, pos: Pos, message: impl Into<String>) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(&self.file, pos, message));
        self.diags.last_mut().expect("just pushed")
    }

    /// Checks that `node` is a mapping with only `allowed` keys; reports each unknown key.
    pub(super) fn fields<'a>(
        &mut self,
        node: &'a Node,
        allowed: &[&str],
        what: &str,
    ) -> Option<Fields<'a>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                format!("{what} must be a mapping, found {}", node.value.kind()),
            );
            return None;
        };
        for (key, _) in entries {
            match &key.value {
                Value::Str(name) if allowed.contains(&name.as_str()) => {}
                Value::Str(name) => {
                    let suggestion = did_you_mean(name, allowed.iter().copied());
                    let hint = match suggestion {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("allowed fields: {}", allowed.join(", ")),
                    };
                    let width = name.chars().count();
                    self.error(key.pos, format!("unknown field `{name}` in {what}"))
                        .width = width;
                    self.diags.last_mut().expect("just pushed").hint = Some(hint);
                }
                other => {
                    self.error(
                        key.pos,
                        format!("{what} has a key that is {}, not a name", other.kind()),
                    );
                }
            }
        }
        Some(Fields { entries })
    }

    pub(super) fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(_) | Value::Int(_) | Value::Float(_) => node.scalar_text(),
            other => {
                self.error(
                    node.pos,
                    format!("{what} must be a string, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// Column of a scalar's first character: one past the quote for quoted scalars.
    pub(super) fn content_column(&self, pos: Pos) -> u32 {
        let quoted = self
            .lines
            .get(pos.line as usize - 1)
            .and_then(|line| line.chars().nth(pos.column as usize - 1))
            .is_some_and(|c| c == '"' || c == '\'');
        if quoted { pos.column + 1 } else { pos.column }
    }

    pub(super) fn template(&mut self, node: &Node, what: &str) -> Option<Template> {
        let raw = self.string(node, what)?;
        let column = self.content_column(node.pos);
        match Template::parse(&raw) {
            Ok(mut template) => {
                template.at = (node.pos.line, column);
                Some(template)
            }
            Err(err) => {
                let pos = Pos { column, ..node.pos };
                self.diags.push(
                    Diagnostic::error(&self.file, pos, format!("in {what}: {}", err.message))
                        .shifted(err.offset),
                );
                None
            }
        }
    }

    pub(super) fn templates(&mut self, node: &Node, what: &str) -> Option<Vec<Template>> {
        let Value::Seq(items) = &node.value else {
            let hint = "write an argv list such as [\"echo\", \"hello\"]; use [\"bash\", \"-c\", \"...\"] for shell syntax";
            self.error(
                node.pos,
                format!(
                    "{what} must be a list of arguments, found {}",
                    node.value.kind()
                ),
            )
            .hint = Some(hint.into());
            return None;
        };
        if items.is_empty() {
            self.error(
                node.pos,
                format!("{what} is empty: give at least the program to run"),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.template(item, what) {
                Some(t) => out.push(t),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(super) fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) if s == "true" || s == "false" => Some(s == "true"),
            other => {
                self.error(
                    node.pos,
                    format!("{what} must be true or false, found {}", other.kind()),
                );
                None
            }
        }
    }

    pub(super) fn number(&mut self, node: &Node, what: &str, min: f64, max: f64) -> Option<f64> {
        let value = match &node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Str(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match value {
            Some(v) if v.is_finite() && v >= min && v <= max => Some(v),
            _ => {
                self.out_of_range(
                    node,
                    &format!("{what} must be a number from {min} to {max}"),
                );
                None
            }
        }
    }

    /// Reports that `node` is not what `expected` says (`timeout_sec must be a number from 0 to
    /// 86400`), quoting the value as written.
    fn out_of_range(&mut self, node: &Node, expected: &str) {
        let text = node
            .scalar_text()
            .unwrap_or_else(|| node.value.kind().to_string());
        self.error(node.pos, format!("{expected}, found `{text}`"));
    }

    pub(super) fn count(&mut self, node: &Node, what: &str, min: u32, max: u32) -> Option<u32> {
        match &node.value {
            Value::Int(i) if *i >= i128::from(min) && *i <= i128::from(max) => {
                u32::try_from(*i).ok()
            }
            _ => {
                self.out_of_range(
                    node,
                    &format!("{what} must be a whole number from {min} to {max}"),
                );
                None
            }
        }
    }

    pub(super) fn seconds(&mut self, node: &Node, what: &str) -> Option<Duration> {
        self.number(node, what, 0.0, 31_536_000.0)
            .map(Duration::from_secs_f64)
    }

    /// Seconds above zero (a zero limit would stop everything at once).
    pub(super) fn positive_seconds(&mut self, node: &Node, what: &str) -> Option<Duration> {
        self.positive(node, what, 31_536_000.0)
            .map(Duration::from_secs_f64)
    }

    /// A number above zero and at most `max`.
    pub(super) fn positive(&mut self, node: &Node, what: &str, max: f64) -> Option<f64> {
        let value = match &node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        };
        match value {
            Some(v) if v.is_finite() && v > 0.0 && v <= max => Some(v),
            _ => {
                self.out_of_range(
                    node,
                    &format!("{what} must be a number above 0 and at most {max}"),
                );
                None
            }
        }
    }

    /// `file:line` of a node, for messages of the run that name where a limit came from.
    pub(super) fn at_line(&self, node: &Node) -> String {
        format!("{}:{}", self.file.display(), node.pos.line)
    }

    pub(super) fn string_map(
        &mut self,
        node: &Node,
        what: &str,
    ) -> Option<Vec<(String, Template)>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                format!("{what} must be a mapping, found {}", node.value.kind()),
            );
            return None;
        };
        let mut out = Vec::new();
        for (key, value) in entries {
            let key = self.string(key, what)?;
            if let Some(t) = self.template(value, &format!("{what}.{key}")) {
                out.push((key, t));
            }
        }
        Some(out)
    }
}
