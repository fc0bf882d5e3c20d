//! A YAML document as a tree of spanned nodes.
//!
//! Owns: turning workflow text into [`Node`]s that remember their line and column, with limits
//! that stop alias bombs and runaway nesting. Does not know what any key means: the loader walks
//! this tree and reports every problem at once, which serde's derive (first error wins) cannot.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Budget, Spanned};

/// Line and column (both 1-based) and byte offset of a node in its source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
    pub offset: Option<usize>,
}

/// One YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys keep their own positions so "unknown field" can point at the key.
    Map(Vec<(Node, Node)>),
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The scalar as text, the way a user who wrote it unquoted meant it (`true`, `3`, `1.5`).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// The node as plain JSON (for `context:` defaults, literal `items`, provider defaults).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => i64::try_from(*i)
                .map(serde_json::Value::from)
                .or_else(|_| u64::try_from(*i).map(serde_json::Value::from))
                .unwrap_or_else(|_| serde_json::Value::String(i.to_string())),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => items.iter().map(Node::to_json).collect(),
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A YAML syntax or limit error, already positioned.
#[derive(Debug, Clone)]
pub struct ParseError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one YAML document. Limits: 64 levels of nesting, 250,000 nodes, and aliases may not
/// expand to more than ten times the anchored events (the "billion laughs" defence).
pub fn parse(text: &str) -> Result<Node, ParseError> {
    // The deserializer recurses once per nesting level with large frames in debug builds; the
    // depth budget trips at 65 levels, which needs more than a default 2 MiB thread stack.
    // Parsing on a thread of our own keeps that true on every caller's thread.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("yaml-parse".into())
            .stack_size(64 << 20)
            .spawn_scoped(scope, || parse_here(text))
            .map_err(|err| ParseError {
                pos: Pos::default(),
                message: format!("failed to start the parser thread: {err}"),
            })?
            .join()
            .unwrap_or_else(|_| {
                Err(ParseError {
                    pos: Pos::default(),
                    message: "the YAML parser panicked".into(),
                })
            })
    })
}

fn parse_here(text: &str) -> Result<Node, ParseError> {
    let mut budget = Budget::default();
    budget.max_depth = 64;
    budget.max_nodes = 250_000;
    budget.max_aliases = 10_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.with_snippet = false;
    // YAML 1.1 reads `on`, `yes` and `no` as booleans; `on:` is a workflow keyword.
    options.strict_booleans = true;
    // A workflow is small: 50,000 replayed events is far beyond any real use of anchors and
    // stops an alias bomb in milliseconds instead of seconds.
    options.alias_limits.max_total_replayed_events = 50_000;
    if text.trim().is_empty() {
        return Ok(Node {
            pos: Pos {
                line: 1,
                column: 1,
                offset: Some(0),
            },
            value: Value::Null,
        });
    }
    match serde_saphyr::from_str_with_options::<Spanned<Value>>(text, options) {
        Ok(spanned) => Ok(node_from(spanned)),
        Err(err) => {
            let pos = err.location().map(|loc| pos_from(&loc)).unwrap_or(Pos {
                line: 1,
                column: 1,
                offset: None,
            });
            Err(ParseError {
                pos,
                message: plain_message(&first_line(&err.to_string())),
            })
        }
    }
}

/// Rewrites the parser's limit messages, which name internal counters, in a user's terms.
fn plain_message(message: &str) -> String {
    if message.contains("alias replay limit") || message.contains("Alias") {
        return "aliases expand to too much data (an alias bomb?): at most 50,000 nodes may be replayed from anchors".into();
    }
    if message.contains("Depth") || message.contains("recursion limit") {
        return "the document nests deeper than 64 levels".into();
    }
    // Drop the parser's own " at line L, column C" suffix: the diagnostic carries the position.
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_string()
}

fn pos_from(loc: &serde_saphyr::Location) -> Pos {
    Pos {
        line: u32::try_from(loc.line()).unwrap_or(u32::MAX),
        column: u32::try_from(loc.column()).unwrap_or(u32::MAX),
        offset: loc
            .span()
            .byte_offset()
            .and_then(|o| usize::try_from(o).ok()),
    }
}

fn node_from(spanned: Spanned<Value>) -> Node {
    Node {
        pos: pos_from(&spanned.referenced),
        value: spanned.value,
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Value>>()? {
            items.push(node_from(item));
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Value>>()? {
            let value = map.next_value::<Spanned<Value>>()?;
            entries.push((node_from(key), node_from(value)));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_keys_and_values() {
        let node = parse("name: demo\nsteps:\n  - name: A\n    command: [echo, hi]\n").unwrap();
        let Value::Map(entries) = &node.value else {
            panic!("not a map")
        };
        assert_eq!((entries[1].0.pos.line, entries[1].0.pos.column), (2, 1));
        let Value::Seq(steps) = &entries[1].1.value else {
            panic!("not a seq")
        };
        let Value::Map(step) = &steps[0].value else {
            panic!("not a map")
        };
        assert_eq!((step[1].0.pos.line, step[1].0.pos.column), (4, 5));
        assert_eq!(step[1].1.to_json(), serde_json::json!(["echo", "hi"]));
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..9 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            text.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("alias"), "{err:?}");
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("steps:\n  - name: [unclosed\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err:?}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        assert!(parse(&format!("{}{}", "[".repeat(60), "]".repeat(60))).is_ok());
        for depth in [65, 200, 100_000] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert!(parse(&text).is_err(), "depth {depth}");
        }
    }
}
