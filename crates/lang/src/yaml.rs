//! A YAML document as a tree of spanned nodes.
//!
//! Owns: turning workflow text into [`Node`]s that remember their line and column, with limits
//! that stop alias bombs and runaway nesting. Does not know what any key means: the loader walks
//! this tree and reports every problem at once, which serde's derive (first error wins) cannot.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Budget, Spanned};

use orchestrate_base::human::group_digits;

/// Line and column (both 1-based) and byte offset of a node in its source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub(crate) line: u32,
    pub(crate) column: u32,
    pub(crate) offset: Option<usize>,
}

/// One YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Line and column of the node's first character.
    pub pos: Pos,
    /// The node's value.
    pub value: Value,
}

/// A YAML value whose every node keeps its position.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null` or `~`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A floating-point number (`1.5`, `1e3`, `.inf`).
    Float(f64),
    /// A string, quoted or plain.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// Keys keep their own positions so "unknown field" can point at the key.
    Map(Vec<(Node, Node)>),
}

impl Value {
    pub(crate) fn kind(&self) -> &'static str {
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
    /// Where the problem is.
    pub pos: Pos,
    /// What is wrong.
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

/// The parser's limits, named once: they are enforced by the parser and quoted in its messages.
const MAX_DEPTH: usize = 64;
const MAX_NODES: usize = 250_000;
const MAX_ALIASES: usize = 10_000;
/// A workflow is small: 50,000 replayed events is far beyond any real use of anchors and stops
/// an alias bomb in milliseconds instead of seconds.
const MAX_REPLAYED: usize = 50_000;

fn parse_here(text: &str) -> Result<Node, ParseError> {
    let mut budget = Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_nodes = MAX_NODES;
    budget.max_aliases = MAX_ALIASES;
    budget.flow_nesting_limit = MAX_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget.clone());
    options.with_snippet = false;
    // YAML 1.1 reads `on`, `yes` and `no` as booleans; `on:` is a workflow keyword.
    options.strict_booleans = true;
    options.alias_limits.max_total_replayed_events = MAX_REPLAYED;
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
            if let Some(message) = limit_message(original(&err), &budget) {
                return Err(ParseError { pos, message });
            }
            let message = without_position(&first_line(&err.to_string()));
            if message.contains("recursion limit") {
                // The scanner's own nesting limit, set to the same depth as the budget's.
                let message = format!(
                    "the document nests deeper than {MAX_DEPTH} levels of lists and mappings; flatten it"
                );
                return Err(ParseError { pos, message });
            }
            let message = message
                .starts_with("unclosed")
                .then(|| unclosed_at_end(text, pos))
                .flatten()
                .unwrap_or(message);
            Err(unclosed_opening(text, pos, &message).unwrap_or(ParseError { pos, message }))
        }
    }
}

/// The error under the parser's wrappers (alias replay, snippets).
fn original(mut err: &serde_saphyr::Error) -> &serde_saphyr::Error {
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = err
    {
        err = error;
    }
    err
}

/// A refusal by one of the parser's limits, in a user's terms: which limit, its value, what to
/// do. `None` for everything else (syntax errors).
fn limit_message(err: &serde_saphyr::Error, budget: &Budget) -> Option<String> {
    use serde_saphyr::Error;
    use serde_saphyr::budget::BudgetBreach;
    const SPLIT: &str = "split the workflow into smaller files (`workflow:` steps) or keep bulk \
                         data in a file its steps read";
    const ANCHORS: &str = "write the repeated values out, or anchor less";
    let message = match err {
        Error::AliasReplayLimitExceeded {
            total_replayed_events,
            max_total_replayed_events,
            ..
        } => format!(
            "aliases expand to too much data (an alias bomb?): at most {} nodes may be replayed \
             from anchors, and this document had replayed {} when it was refused; {ANCHORS}",
            group_digits(*max_total_replayed_events as u64),
            group_digits(*total_replayed_events as u64)
        ),
        Error::AliasExpansionLimitExceeded {
            expansions,
            max_expansions_per_anchor,
            ..
        } => format!(
            "aliases expand to too much data (an alias bomb?): one anchor may be used at most \
             {} times, and this one was used {}; {ANCHORS}",
            group_digits(*max_expansions_per_anchor as u64),
            group_digits(*expansions as u64)
        ),
        Error::AliasReplayStackDepthExceeded { max_depth, .. } => format!(
            "aliases nest too deeply (an alias bomb?): at most {max_depth} anchors may be \
             replayed inside each other; {ANCHORS}"
        ),
        Error::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => format!(
                "the document nests deeper than {MAX_DEPTH} levels of lists and mappings; flatten it"
            ),
            BudgetBreach::Nodes { nodes } => format!(
                "the document has more than {} nodes (values, lists and mappings; refused at \
                 node {}); {SPLIT}",
                group_digits(budget.max_nodes as u64),
                group_digits(*nodes as u64)
            ),
            BudgetBreach::Events { events } => format!(
                "the document has more than {} YAML events (refused at event {}); {SPLIT}",
                group_digits(budget.max_events as u64),
                group_digits(*events as u64)
            ),
            BudgetBreach::Aliases { .. } => format!(
                "the document uses more than {} aliases (`*name`); {ANCHORS}",
                group_digits(budget.max_aliases as u64)
            ),
            BudgetBreach::Anchors { .. } => format!(
                "the document defines more than {} anchors (`&name`); {ANCHORS}",
                group_digits(budget.max_anchors as u64)
            ),
            BudgetBreach::AliasAnchorRatio { aliases, anchors } => format!(
                "aliases expand to too much data (an alias bomb?): {} aliases for {} anchors, \
                 more than {} per anchor; {ANCHORS}",
                group_digits(*aliases as u64),
                group_digits(*anchors as u64),
                budget.alias_anchor_ratio_multiplier
            ),
            BudgetBreach::RecordedAnchorEvents { .. }
            | BudgetBreach::RecordedAnchorBytes { .. } => {
                format!(
                    "anchored values are too large: at most {} nodes and {} bytes may be kept \
                     for aliases; {ANCHORS}",
                    group_digits(budget.max_recorded_anchor_events as u64),
                    group_digits(budget.max_recorded_anchor_bytes as u64)
                )
            }
            BudgetBreach::MergeKeys { .. } => format!(
                "the document uses more than {} merge keys (`<<`); {ANCHORS}",
                group_digits(budget.max_merge_keys as u64)
            ),
            BudgetBreach::Documents { .. } => format!(
                "the file holds more than {} YAML documents; a workflow is one document (remove \
                 the `---` separators)",
                group_digits(budget.max_documents as u64)
            ),
            BudgetBreach::ScalarBytes { .. } => format!(
                "the document's text values add up to more than {} bytes; {SPLIT}",
                group_digits(budget.max_total_scalar_bytes as u64)
            ),
            _ => format!(
                "the document is beyond what the YAML parser accepts ({}); {SPLIT}",
                breach_name(breach)
            ),
        },
        _ => return None,
    };
    Some(message)
}

/// The kind of a limit the messages above do not name, in words (its debug name split).
fn breach_name(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    let debug = format!("{breach:?}");
    let name = debug.split([' ', '{', '(']).next().unwrap_or_default();
    let mut words = String::new();
    for c in name.chars() {
        if c.is_uppercase() && !words.is_empty() {
            words.push(' ');
        }
        words.extend(c.to_lowercase());
    }
    format!("limit: {words}")
}

/// Drops the parser's own " at line L, column C" suffix: the diagnostic carries the position.
fn without_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The parser's own "unclosed" errors (it reached the end of the file) point at the opening
/// already; they say so in the same words as [`unclosed_opening`].
fn unclosed_at_end(text: &str, pos: Pos) -> Option<String> {
    let at = offset_of(text, (pos.line as usize, pos.column as usize))?;
    let (what, close) = match text[at..].chars().next()? {
        '[' => ("flow list", ']'),
        '{' => ("flow mapping", '}'),
        '"' => ("string", '"'),
        '\'' => ("string", '\''),
        _ => return None,
    };
    let open = &text[at..=at];
    Some(format!(
        "unclosed `{open}`: the {what} opened here is never closed; close it with `{close}`"
    ))
}

/// An opening bracket or quote: where it is and which character.
type Opening = (serde_saphyr::granit_parser::Marker, char);

/// The flow collections still open before `stopped` (line, column), innermost last, and the
/// quoted string that is the last token before it (its opening and its end), if one is.
fn openings(text: &str, stopped: (usize, usize)) -> (Vec<Opening>, Option<(Opening, Opening)>) {
    use serde_saphyr::granit_parser::{ScalarStyle, Scanner, StrInput, TokenType};
    let mut open = Vec::new();
    let mut quoted = None;
    for token in Scanner::new(StrInput::new(text)) {
        let Ok(token) = token else { break };
        let (span, kind) = token.into_parts();
        if (span.start.line(), span.start.col() + 1) >= stopped {
            break;
        }
        quoted = None;
        match kind {
            TokenType::FlowSequenceStart => open.push((span.start, '[')),
            TokenType::FlowMappingStart => open.push((span.start, '{')),
            TokenType::FlowSequenceEnd | TokenType::FlowMappingEnd => {
                open.pop();
            }
            TokenType::Scalar(ScalarStyle::DoubleQuoted, _) => {
                quoted = Some(((span.start, '"'), (span.end, '"')));
            }
            TokenType::Scalar(ScalarStyle::SingleQuoted, _) => {
                quoted = Some(((span.start, '\''), (span.end, '\'')));
            }
            _ => {}
        }
    }
    (open, quoted)
}

/// The byte offset of a 1-based line and column (in characters) of `text`.
fn offset_of(text: &str, (line, column): (usize, usize)) -> Option<usize> {
    let mut start = 0;
    for _ in 1..line {
        start += text[start..].find('\n')? + 1;
    }
    let rest = &text[start..];
    let within = rest
        .char_indices()
        .nth(column.checked_sub(1)?)
        .map_or(rest.len(), |(i, _)| i);
    Some(start + within)
}

/// Where a syntax error really began, when the parser noticed it later: a flow collection
/// (`[` or `{`) still open when the parser stopped on a later line indented no deeper than the
/// line that opened it (a block entry where a `]` was missing), or a quoted string that ran on
/// from an earlier line to the place it stopped (a missing closing quote). The parser reports
/// where it gave up; the user needs the opening that was never closed.
fn unclosed_opening(text: &str, error: Pos, found: &str) -> Option<ParseError> {
    use serde_saphyr::granit_parser::Marker;
    let stopped = (error.line as usize, error.column as usize);
    // Only what precedes the error is scanned: at its end the scanner hands over the tokens it
    // holds back while it decides whether a scalar is a key, so the last one is seen too. Inside
    // a flow collection it does so only once the collection is closed: a second scan closes them.
    let before = error
        .offset
        .or_else(|| offset_of(text, stopped))
        .and_then(|end| text.get(..end))
        .unwrap_or(text);
    let (open, mut quoted) = openings(before, stopped);
    if quoted.is_none() && !open.is_empty() {
        let closers: String = open
            .iter()
            .rev()
            .map(|(_, c)| if *c == '[' { ']' } else { '}' })
            .collect();
        quoted = openings(&format!("{before}{closers}"), stopped).1;
    }
    let at = |m: &Marker| Pos {
        line: u32::try_from(m.line()).unwrap_or(u32::MAX),
        column: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
        offset: m.byte_offset(),
    };
    if let Some(((start, quote), (end, _))) = quoted
        && start.line() < stopped.0
        && end.line() == stopped.0
    {
        return Some(ParseError {
            pos: at(&start),
            message: format!(
                "the string opened by this `{quote}` runs on to line {}, where the parser stopped \
                 ({found}): close it with `{quote}` on this line",
                stopped.0
            ),
        });
    }
    let (start, bracket) = open.last()?;
    let indent = |line: usize| {
        let text = text.lines().nth(line.checked_sub(1)?)?;
        Some(text.len() - text.trim_start_matches(' ').len())
    };
    if start.line() >= stopped.0 || indent(stopped.0)? > indent(start.line())? {
        return None;
    }
    let (what, close) = match bracket {
        '[' => ("list", ']'),
        _ => ("mapping", '}'),
    };
    Some(ParseError {
        pos: at(start),
        message: format!(
            "unclosed `{bracket}`: the flow {what} opened here is still open at line {}, where the \
             parser stopped ({found}); close it with `{close}`",
            stopped.0
        ),
    })
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

    fn error_at(text: &str) -> (u32, u32, String) {
        let err = parse(text).unwrap_err();
        (err.pos.line, err.pos.column, err.message)
    }

    #[test]
    fn an_unclosed_bracket_is_reported_at_the_bracket() {
        let head = "name: x\nsteps:\n  - name: A\n";
        let (line, column, message) = error_at(&format!(
            "{head}    command: [echo, hi,\n  - name: B\n    command: [c]\n"
        ));
        assert_eq!((line, column), (4, 14), "{message}");
        assert!(message.starts_with("unclosed `[`"), "{message}");
        assert!(message.contains("close it with `]`"), "{message}");
        let (line, column, message) = error_at(&format!("{head}    env: {{A: b,\n  - name: B\n"));
        assert_eq!((line, column), (4, 10), "{message}");
        assert!(message.starts_with("unclosed `{`"), "{message}");
        let (line, column, message) = error_at("steps: [\n");
        assert_eq!((line, column), (1, 8), "{message}");
        assert!(message.starts_with("unclosed `[`"), "{message}");
    }

    #[test]
    fn a_string_that_runs_on_is_reported_at_its_opening_quote() {
        let (line, column, message) =
            error_at("steps:\n  - name: A\n    command: [\"echo, hi]\n  - name: \"B\"\n");
        assert_eq!((line, column), (3, 15), "{message}");
        assert!(message.contains("string opened by this `\"`"), "{message}");
        let (line, column, message) = error_at("steps:\n  - name: 'A\n  - name: 'B'\n");
        assert_eq!((line, column), (2, 11), "{message}");
        assert!(message.contains("close it with `'`"), "{message}");
    }

    #[test]
    fn a_mistake_inside_a_closed_flow_list_stays_where_it_is() {
        let (line, column, _) = error_at("a: [\n    b,\n    c: d: e\n  ]\n");
        assert_eq!(line, 3);
        assert!(column > 4);
    }

    #[test]
    fn limits_are_named_in_words_with_their_values() {
        let text = format!("items:\n{}", "  - x\n".repeat(MAX_NODES + 10));
        let (_, _, message) = error_at(&text);
        assert!(
            message.starts_with("the document has more than 250,000 nodes"),
            "{message}"
        );
        assert!(message.contains("refused at node 250,001"), "{message}");
        let (_, _, message) = error_at(&format!("a: {}{}", "[".repeat(70), "]".repeat(70)));
        assert!(message.contains("deeper than 64 levels"), "{message}");
        assert!(!message.contains('{'), "{message}");
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
