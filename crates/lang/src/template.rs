//! `${...}` templates: parsing at load time, substitution at run time.
//!
//! Owns: the template grammar (`${ns.path}`, `$${` for a literal `${`), turning a value into the
//! text that replaces a variable, and the "undefined variable" error. Does not know where values
//! come from: the runner hands in a [`Lookup`]. File contents never pass through here.

use serde_json::Value;

/// A string with `${...}` references, parsed once when the workflow loads.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub(crate) raw: String,
    pub(crate) parts: Vec<Part>,
    /// Line and column of the scalar in its workflow file (0, 0 when made by the engine).
    pub at: (u32, u32),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Part {
    Lit(String),
    Var(VarRef),
}

/// A reference such as `steps.Build.json.files` split at the dots.
#[derive(Debug, Clone, PartialEq)]
pub struct VarRef {
    /// The text between `${` and `}`.
    pub(crate) text: String,
    /// The reference split at the dots (`["steps", "Build", "json", "files"]`).
    pub segments: Vec<String>,
    /// Character offset of the `${` in the raw string, for diagnostics.
    pub(crate) offset: usize,
}

impl VarRef {
    /// The first segment: which document the variable reads (`steps`, `context`, `run`, ...).
    pub fn root(&self) -> &str {
        &self.segments[0]
    }
}

/// A `${...}` that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// What is wrong with it.
    pub message: String,
    /// Character offset in the raw string.
    pub(crate) offset: usize,
}

impl Template {
    /// A template with no variables (used for values the engine itself supplies).
    pub fn literal(text: impl Into<String>) -> Template {
        let raw: String = text.into();
        Template {
            parts: vec![Part::Lit(raw.clone())],
            raw,
            at: (0, 0),
        }
    }

    /// Splits `raw` into literal text and `${...}` references.
    pub fn parse(raw: &str) -> Result<Template, SyntaxError> {
        let chars: Vec<char> = raw.chars().collect();
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut i = 0;
        while i < chars.len() {
            if chars[i] == '$' && chars.get(i + 1) == Some(&'$') && chars.get(i + 2) == Some(&'{') {
                lit.push_str("${");
                i += 3;
                continue;
            }
            if chars[i] == '$' && chars.get(i + 1) == Some(&'{') {
                let start = i;
                let Some(len) = chars[i + 2..].iter().position(|&c| c == '}') else {
                    return Err(SyntaxError {
                        message: "unterminated `${`: add the closing `}` (write `$${` for a literal `${`)".into(),
                        offset: start,
                    });
                };
                let text: String = chars[i + 2..i + 2 + len].iter().collect();
                let var = parse_var(&text, start)?;
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(Part::Var(var));
                i += 3 + len;
                continue;
            }
            lit.push(chars[i]);
            i += 1;
        }
        if !lit.is_empty() || parts.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template {
            raw: raw.to_string(),
            parts,
            at: (0, 0),
        })
    }

    pub(crate) fn vars(&self) -> impl Iterator<Item = &VarRef> {
        self.parts.iter().filter_map(|part| match part {
            Part::Var(var) => Some(var),
            Part::Lit(_) => None,
        })
    }

    /// Whether it holds no `${...}` at all.
    pub fn is_literal(&self) -> bool {
        self.vars().next().is_none()
    }

    /// Substitutes every variable. The result is one string whatever the values contain: an
    /// argv element stays one argv element.
    pub fn render(&self, lookup: &dyn Lookup) -> Result<String, Undefined> {
        let mut out = String::with_capacity(self.raw.len());
        for part in &self.parts {
            match part {
                Part::Lit(text) => out.push_str(text),
                Part::Var(var) => out.push_str(&to_text(&lookup.lookup(var)?)),
            }
        }
        Ok(out)
    }

    /// Like [`Template::render`], but a template that is exactly one `${...}` keeps the value's
    /// JSON type (used for `items:` and jq inputs).
    pub fn render_value(&self, lookup: &dyn Lookup) -> Result<Value, Undefined> {
        match self.parts.as_slice() {
            [Part::Var(var)] => lookup.lookup(var),
            _ => self.render(lookup).map(Value::String),
        }
    }
}

fn parse_var(text: &str, offset: usize) -> Result<VarRef, SyntaxError> {
    if text.trim().is_empty() {
        return Err(SyntaxError {
            message: "empty `${}`: name a variable, e.g. `${context.name}`".into(),
            offset,
        });
    }
    let segments: Vec<String> = text.split('.').map(str::to_string).collect();
    for segment in &segments {
        let ok = !segment.is_empty()
            && segment
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(SyntaxError {
                message: format!(
                    "`${{{text}}}` is not a variable reference: use dot-separated names of letters, digits, `_` and `-` (jq expressions go in `when: {{jq: ...}}`)"
                ),
                offset,
            });
        }
    }
    Ok(VarRef {
        text: text.to_string(),
        segments,
        offset,
    })
}

/// How a value reads when substituted into a string: strings as they are, everything else as
/// compact JSON (`3`, `true`, `null`, `["a","b"]`).
pub fn to_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A variable that has no value where it is used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("undefined variable `${{{var}}}`{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
pub struct Undefined {
    pub(crate) var: String,
    pub(crate) reason: Option<String>,
}

impl Undefined {
    /// `var` has no value, for `reason`.
    pub fn new(var: &VarRef, reason: impl Into<String>) -> Undefined {
        Undefined {
            var: var.text.clone(),
            reason: Some(reason.into()),
        }
    }
}

/// Where variable values come from.
pub trait Lookup {
    /// The value of `var`, or why it has none.
    fn lookup(&self, var: &VarRef) -> Result<Value, Undefined>;
}

/// Walks `path` into `value`: object keys by name, array elements by index.
pub fn walk<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |current, key| match current {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed(Value);
    impl Lookup for Fixed {
        fn lookup(&self, var: &VarRef) -> Result<Value, Undefined> {
            walk(&self.0, &var.segments)
                .cloned()
                .ok_or_else(|| Undefined {
                    var: var.text.clone(),
                    reason: None,
                })
        }
    }

    fn render(raw: &str, vars: Value) -> Result<String, Undefined> {
        Template::parse(raw).unwrap().render(&Fixed(vars))
    }

    #[test]
    fn plain_text() {
        assert_eq!(render("hello", json!({})).unwrap(), "hello");
    }
    #[test]
    fn one_var() {
        assert_eq!(
            render("a ${context.x} b", json!({"context": {"x": "1 2"}})).unwrap(),
            "a 1 2 b"
        );
    }
    #[test]
    fn escape() {
        assert_eq!(render("$${context.x}", json!({})).unwrap(), "${context.x}");
    }
    #[test]
    fn lone_dollar() {
        assert_eq!(render("cost $5 $", json!({})).unwrap(), "cost $5 $");
    }
    #[test]
    fn json_values() {
        assert_eq!(
            render("${a}|${b}|${c}", json!({"a": 3, "b": [1, "x"], "c": null})).unwrap(),
            "3|[1,\"x\"]|null"
        );
    }
    #[test]
    fn array_index() {
        assert_eq!(
            render("${s.lines.1}", json!({"s": {"lines": ["a", "b"]}})).unwrap(),
            "b"
        );
    }
    #[test]
    fn undefined_is_error() {
        assert!(render("${context.nope}", json!({"context": {}})).is_err());
    }
    #[test]
    fn unterminated() {
        assert_eq!(Template::parse("x ${context.a").unwrap_err().offset, 2);
    }
    #[test]
    fn empty_var() {
        assert!(Template::parse("${}").is_err());
    }
    #[test]
    fn bad_chars() {
        assert!(Template::parse("${steps.X | length}").is_err());
    }
    #[test]
    fn value_keeps_type() {
        assert_eq!(
            Template::parse("${a}")
                .unwrap()
                .render_value(&Fixed(json!({"a": [1]})))
                .unwrap(),
            json!([1])
        );
    }
    #[test]
    fn unicode_offsets() {
        assert_eq!(Template::parse("héllo ${").unwrap_err().offset, 6);
    }
    #[test]
    fn value_with_injection_stays_one_string() {
        assert_eq!(
            render("${a}", json!({"a": "x; rm -rf / $(id) ${context.b}"})).unwrap(),
            "x; rm -rf / $(id) ${context.b}"
        );
    }
}
