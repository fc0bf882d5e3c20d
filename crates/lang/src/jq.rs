//! jq expressions: compiling and evaluating them with jaq over `serde_json` values.
//!
//! This module owns the bridge between the workflow engine and jaq: parsing and
//! compiling an expression (with the jaq core, std and json libraries), converting
//! `serde_json::Value` to and from jaq's value type, running the filter, and
//! turning jaq's load/compile/runtime failures into [`JqError`].
//!
//! It does not do any `${...}`-style variable substitution on the expression text,
//! and it performs no I/O of its own: `import`/`include` are refused, and named jq
//! variables are passed in as values by the caller. (jq builtins keep their usual
//! meaning, so `stderr`, `halt_error`, `env` and `now` still touch the process.)
//!
//! Every call compiles the expression afresh; there is no cache and no global state.

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, compile, data};
use jaq_json::{Num, Val};
use serde_json::{Map, Number, Value};

/// Maximum nesting depth of arrays/objects accepted as input and produced as output.
///
/// Converting values is recursive (in this module, in jaq and in serde_json), so
/// anything deeper is rejected up front instead of risking a stack overflow.
pub(crate) const MAX_DEPTH: usize = 512;

/// Maximum nesting of brackets, strings and string interpolations in an expression.
///
/// jaq's parser recurses per level; this keeps pathological expressions from
/// overflowing even the [`STACK_SIZE`] stack. Real expressions stay far below it.
pub(crate) const MAX_EXPR_NESTING: usize = 256;

/// Stack size of the thread that compiles and runs expressions (see [`with_big_stack`]).
const STACK_SIZE: usize = 64 * 1024 * 1024;

/// Errors from compiling or evaluating a jq expression.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JqError {
    /// the expression does not parse or compile; `offset` is the byte offset into
    /// the source where the problem is, when known
    #[error("invalid jq expression `{expr}`: {message}")]
    Compile {
        /// The expression as written.
        expr: String,
        /// jaq's explanation.
        message: String,
        /// Byte offset into `expr` of the problem, when jaq gives one.
        offset: Option<usize>,
    },
    /// evaluation raised an error
    #[error("jq expression `{expr}` failed: {message}")]
    Runtime {
        /// The expression as written.
        expr: String,
        /// The error the expression raised.
        message: String,
    },
}

type Data = data::JustLut<Val>;
type Filter = jaq_core::Filter<Data>;

/// Parse and compile `expr` without running it.
///
/// Variables are not declared here, so an expression using `$name` fails with
/// "undefined variable"; use [`check_with_vars`] to declare them.
pub(crate) fn check(expr: &str) -> Result<(), JqError> {
    check_with_vars(expr, &[])
}

/// Parse and compile `expr`, treating each name in `var_names` as a defined `$name`.
///
/// Names may be given with or without the leading `$`.
pub(crate) fn check_with_vars(expr: &str, var_names: &[&str]) -> Result<(), JqError> {
    with_big_stack(|| compile_filter(expr, var_names).map(|_| ()))
}

/// Evaluate `expr` on `input` and return all its outputs.
///
/// NaN and infinite numbers come out as `null`; integers beyond `u64` as the nearest
/// float. `halt` ends the outputs early without error, while `halt_error` and
/// `halt(n)` with `n != 0` are runtime errors (they never exit the process).
pub fn eval(expr: &str, input: &Value) -> Result<Vec<Value>, JqError> {
    eval_with_vars(expr, input, &[])
}

/// Evaluate `expr` on `input` with each `(name, value)` bound to `$name`, returning all outputs.
///
/// Names may be given with or without the leading `$`; if a name occurs twice, the
/// last value wins.
pub(crate) fn eval_with_vars(
    expr: &str,
    input: &Value,
    vars: &[(&str, Value)],
) -> Result<Vec<Value>, JqError> {
    with_big_stack(|| {
        let mut outputs = Vec::new();
        run(expr, input, vars, |v| {
            if exceeds_depth(&v, val_children) {
                return Err(JqError::Runtime {
                    expr: expr.to_owned(),
                    message: format!("output is nested deeper than {MAX_DEPTH} levels"),
                });
            }
            outputs.push(val_to_json(expr, &v)?);
            Ok(true)
        })?;
        Ok(outputs)
    })
}

/// Evaluate `expr` on `input` and return the jq truthiness of its first output.
///
/// `false` and `null` are false, every other value is true, and no output at all is
/// false. Only the first output is computed, so later outputs cannot raise errors.
pub fn eval_bool(expr: &str, input: &Value) -> Result<bool, JqError> {
    eval_bool_with_vars(expr, input, &[])
}

/// [`eval_bool`] with named variables, as in [`eval_with_vars`].
pub(crate) fn eval_bool_with_vars(
    expr: &str,
    input: &Value,
    vars: &[(&str, Value)],
) -> Result<bool, JqError> {
    with_big_stack(|| {
        let mut truthy = false;
        run(expr, input, vars, |v| {
            truthy = !matches!(v, Val::Null | Val::Bool(false));
            // stop after the first output: the rest may be expensive or infinite
            Ok(false)
        })?;
        Ok(truthy)
    })
}

/// Run `f` on a short-lived thread with a [`STACK_SIZE`] stack and return its result.
///
/// jaq's parser, compiler and interpreter recurse once per nesting level and per
/// chained operator (`a | b | ...`, `1, 2, ...`, `. as $x | ...`); with the 2 MiB
/// stack of a test or tokio worker thread, a debug build overflows after roughly
/// 150 nested brackets or 250 chained operators, which real expressions can reach.
/// Panics are passed on to the caller unchanged.
fn with_big_stack<T: Send>(f: impl Fn() -> T + Sync) -> T {
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("jq".into())
            .stack_size(STACK_SIZE)
            .spawn_scoped(scope, &f);
        match spawned {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // no thread available: the current stack still handles ordinary expressions
            Err(_) => f(),
        }
    })
}

/// Compile `expr` and feed its outputs to `sink` until it returns `Ok(false)`.
fn run(
    expr: &str,
    input: &Value,
    vars: &[(&str, Value)],
    mut sink: impl FnMut(Val) -> Result<bool, JqError>,
) -> Result<(), JqError> {
    let runtime = |message: String| JqError::Runtime {
        expr: expr.to_owned(),
        message,
    };

    let names: Vec<&str> = vars.iter().map(|(name, _)| *name).collect();
    let filter = compile_filter(expr, &names)?;

    if exceeds_depth(input, json_children) {
        return Err(runtime(format!(
            "input is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let mut values = Vec::with_capacity(vars.len());
    for (name, value) in vars {
        if exceeds_depth(value, json_children) {
            let name = name.trim_start_matches('$');
            return Err(runtime(format!(
                "variable `${name}` is nested deeper than {MAX_DEPTH} levels"
            )));
        }
        values.push(json_to_val(value));
    }

    let ctx = Ctx::<Data>::new(&filter.lut, Vars::new(values));
    for out in filter.id.run((ctx, json_to_val(input))) {
        let v = match out {
            Ok(v) => v,
            // not `jaq_core::unwrap_valr`: that exits the whole process on `halt`
            Err(exn) => match exn.get_err() {
                Ok(err) => return Err(runtime(error_message(err))),
                Err(exn) => match exn.get_halt() {
                    // `halt` is a successful early stop, like jq exiting with status 0
                    Ok(0) => return Ok(()),
                    Ok(code) => return Err(runtime(format!("halted with exit code {code}"))),
                    Err(_) => return Err(runtime("unexpected control flow escaped".into())),
                },
            },
        };
        if !sink(v)? {
            break;
        }
    }
    Ok(())
}

/// Parse and compile `expr` with the core, std and json jq libraries.
fn compile_filter(expr: &str, var_names: &[&str]) -> Result<Filter, JqError> {
    let compile_err = |message: String, offset: Option<usize>| JqError::Compile {
        expr: expr.to_owned(),
        message,
        offset,
    };

    if let Some(offset) = nesting_overflow(expr) {
        let message = format!("expression is nested deeper than {MAX_EXPR_NESTING} levels");
        return Err(compile_err(message, Some(offset)));
    }

    // jaq wants variable names with their `$`, borrowed for as long as the source
    let names: Vec<String> = var_names
        .iter()
        .map(|n| format!("${}", n.trim_start_matches('$')))
        .collect();

    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs::<Data>()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());

    let arena = Arena::default();
    let program = File {
        code: expr,
        path: (),
    };
    // the default loader refuses `import`/`include`, which keeps this module free of I/O
    let modules = Loader::new(defs).load(&arena, program).map_err(|errs| {
        let (message, offset) = load_errors(expr, errs);
        compile_err(message, offset)
    })?;

    Compiler::default()
        .with_funs(funs)
        .with_global_vars(names.iter().map(String::as_str))
        .compile(modules)
        .map_err(|errs| {
            let (message, offset) = compile_errors(expr, errs);
            compile_err(message, offset)
        })
}

/// Byte offset of the first opening delimiter nested deeper than [`MAX_EXPR_NESTING`].
///
/// A light scan of jq's lexical structure: brackets, string literals with their
/// escapes, `\(...)` interpolations and `#` comments. Anything it gets wrong on
/// malformed input is left for the parser to report.
fn nesting_overflow(expr: &str) -> Option<usize> {
    let bytes = expr.as_bytes();
    // open delimiters: `(`, `[`, `{`, or `"` while inside a string literal
    let mut open = Vec::new();
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if open.last() == Some(&b'"') {
            match (c, bytes.get(i + 1)) {
                (b'\\', Some(b'(')) => {
                    open.push(b'(');
                    i += 1;
                }
                // skip the escaped character, which may be a quote
                (b'\\', _) => i += 1,
                (b'"', _) => {
                    open.pop();
                }
                _ => {}
            }
        } else {
            match c {
                b'"' | b'(' | b'[' | b'{' => open.push(c),
                b')' | b']' | b'}' => {
                    open.pop();
                }
                b'#' => {
                    while bytes.get(i + 1).is_some_and(|&c| c != b'\n') {
                        i += 1;
                    }
                }
                _ => {}
            }
        }
        if open.len() > MAX_EXPR_NESTING {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Byte offset of `part` inside `whole`, if `part` really is a slice of `whole`.
///
/// jaq reports error locations as slices of the source (like `load::span`, which
/// jaq's CLI uses); this is the same computation but never underflows when an
/// error points into some other text, such as the prelude definitions.
fn offset_in(whole: &str, part: &str) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (start + part.len() <= whole.len()).then_some(start)
}

/// Show the first few characters of a found token, or say that the input ended.
fn found_text(found: &str) -> String {
    if found.is_empty() {
        return "unexpected end of input".into();
    }
    // blocks like `(...)` are reported whole; their start is enough to locate them
    const SHOWN: usize = 20;
    match found.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("`{}...`", &found[..end]),
        None => format!("`{found}`"),
    }
}

/// Collect all messages into one line; the offset is the first one jaq gives.
fn join_errors(errs: impl IntoIterator<Item = (String, Option<usize>)>) -> (String, Option<usize>) {
    // an unclosed `((((` yields one identical error per level; show each once, and only a few
    const SHOWN: usize = 3;
    let mut messages: Vec<String> = Vec::new();
    let mut offset = None;
    for (message, off) in errs {
        if !messages.contains(&message) {
            messages.push(message);
        }
        offset = offset.or(off);
    }
    let hidden = messages.len().saturating_sub(SHOWN);
    messages.truncate(SHOWN);
    if hidden > 0 {
        messages.push(format!("and {hidden} more"));
    }
    if messages.is_empty() {
        messages.push("unknown error".into());
    }
    (messages.join("; "), offset)
}

fn load_errors(expr: &str, errs: load::Errors<&str, ()>) -> (String, Option<usize>) {
    let errs = errs.into_iter().flat_map(|(_file, err)| -> Vec<_> {
        match err {
            load::Error::Io(errs) => errs
                .into_iter()
                .map(|(path, e)| {
                    let msg = format!("could not load module `{path}`: {e}");
                    (msg, offset_in(expr, path))
                })
                .collect(),
            load::Error::Lex(errs) => errs
                .into_iter()
                .map(|(expected, found)| {
                    // the lexer hands over the whole rest of the input; its first character is the culprit
                    let end = found.char_indices().nth(1).map_or(found.len(), |(i, _)| i);
                    let found = &found[..end];
                    let msg = match &expected {
                        load::lex::Expect::Delim(open) => {
                            let at = offset_in(expr, open)
                                .map_or(String::new(), |o| format!(" opened at byte {o}"));
                            format!(
                                "expected {} for `{open}`{at}, found {}",
                                expected.as_str(),
                                found_text(found)
                            )
                        }
                        _ => format!(
                            "expected {}, found {}",
                            expected.as_str(),
                            found_text(found)
                        ),
                    };
                    (msg, offset_in(expr, found))
                })
                .collect(),
            load::Error::Parse(errs) => errs
                .into_iter()
                .map(|(expected, found)| {
                    let msg = format!(
                        "expected {}, found {}",
                        expected.as_str(),
                        found_text(found)
                    );
                    (msg, offset_in(expr, found))
                })
                .collect(),
        }
    });
    join_errors(errs)
}

fn compile_errors(expr: &str, errs: compile::Errors<&str, ()>) -> (String, Option<usize>) {
    use compile::Undefined;
    let errs = errs
        .into_iter()
        .flat_map(|(_file, errs)| errs)
        .map(|(found, undefined)| {
            let wrong_args =
                |expected| format!("wrong number of arguments to `{found}` (expected {expected})");
            let msg = match (found, &undefined) {
                // jaq parses these as filter calls, so "undefined filter" would mislead
                ("reduce", Undefined::Filter(_)) => wrong_args("2"),
                ("foreach", Undefined::Filter(_)) => wrong_args("2 or 3"),
                (_, Undefined::Filter(arity)) => format!("undefined filter `{found}/{arity}`"),
                (_, undefined) => format!("undefined {} `{found}`", undefined.as_str()),
            };
            (msg, offset_in(expr, found))
        });
    join_errors(errs)
}

/// Message of a runtime error: raw text for `error("text")`, JSON for anything else.
fn error_message(err: jaq_core::Error<Val>) -> String {
    match err.into_val() {
        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(&b).into_owned(),
        v => v.to_string(),
    }
}

/// Whether `root` has arrays/objects nested more than [`MAX_DEPTH`] levels deep.
///
/// Iterative on purpose: the inputs this guards against would overflow the stack
/// of a recursive walk.
fn exceeds_depth<'a, T>(
    root: &'a T,
    children: impl Fn(&'a T) -> Option<Box<dyn Iterator<Item = &'a T> + 'a>>,
) -> bool {
    // each entry is a container together with its nesting level (1 = outermost)
    let mut stack = Vec::new();
    if let Some(c) = children(root) {
        stack.push((c, 1));
    }
    while let Some((iter, level)) = stack.last_mut() {
        let level = *level;
        match iter.next() {
            Some(child) => {
                if let Some(c) = children(child) {
                    if level >= MAX_DEPTH {
                        return true;
                    }
                    stack.push((c, level + 1));
                }
            }
            None => {
                stack.pop();
            }
        }
    }
    false
}

fn json_children(v: &Value) -> Option<Box<dyn Iterator<Item = &Value> + '_>> {
    match v {
        Value::Array(a) => Some(Box::new(a.iter())),
        Value::Object(o) => Some(Box::new(o.values())),
        _ => None,
    }
}

fn val_children(v: &Val) -> Option<Box<dyn Iterator<Item = &Val> + '_>> {
    match v {
        Val::Arr(a) => Some(Box::new(a.iter())),
        Val::Obj(o) => Some(Box::new(o.values())),
        _ => None,
    }
}

/// Convert a JSON value to a jaq value; callers bound the depth first.
fn json_to_val(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(json_num(n)),
        Value::String(s) => Val::from(s.clone()),
        Value::Array(a) => a.iter().map(json_to_val).collect(),
        Value::Object(o) => Val::obj(
            o.iter()
                .map(|(k, v)| (Val::from(k.clone()), json_to_val(v)))
                .collect(),
        ),
    }
}

fn json_num(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::from_integral(i)
    } else if let Some(u) = n.as_u64() {
        Num::from_integral(u)
    } else if let Some(big) = (!n.is_f64())
        .then(|| Num::from_str_radix(&n.to_string(), 10))
        .flatten()
    {
        // only reachable if serde_json's `arbitrary_precision` is enabled somewhere
        big
    } else {
        Num::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Convert a jaq value to JSON; callers bound the depth first.
fn val_to_json(expr: &str, v: &Val) -> Result<Value, JqError> {
    Ok(match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => num_to_json(n),
        // jaq strings may hold invalid UTF-8 (e.g. from `@base64d`); JSON cannot
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(a) => Value::Array(
            a.iter()
                .map(|x| val_to_json(expr, x))
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(o) => {
            let mut map = Map::with_capacity(o.len());
            for (k, x) in o.iter() {
                let key = match k {
                    Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                    other => {
                        return Err(JqError::Runtime {
                            expr: expr.to_owned(),
                            message: format!("object key {other} is not a string"),
                        });
                    }
                };
                map.insert(key, val_to_json(expr, x)?);
            }
            Value::Object(map)
        }
    })
}

fn num_to_json(n: &Num) -> Value {
    match n {
        Num::Int(i) => match i64::try_from(*i) {
            Ok(i) => Value::from(i),
            Err(_) => float_to_json(*i as f64),
        },
        Num::BigInt(b) => int_str_to_json(&b.to_string()),
        Num::Float(f) => float_to_json(*f),
        // decimal literals from the expression text, e.g. `1.5`
        Num::Dec(s) => s.parse::<f64>().map_or(Value::Null, float_to_json),
    }
}

/// Integers beyond i64/u64 fall back to the nearest float, as jq does.
fn int_str_to_json(s: &str) -> Value {
    if let Ok(i) = s.parse::<i64>() {
        Value::from(i)
    } else if let Ok(u) = s.parse::<u64>() {
        Value::from(u)
    } else {
        s.parse::<f64>().map_or(Value::Null, float_to_json)
    }
}

/// JSON has no NaN or infinity; map them to null like jq does.
fn float_to_json(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
#[rustfmt::skip]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(expr: &str, input: Value) -> Value {
        let mut out = eval(expr, &input).unwrap();
        assert_eq!(out.len(), 1, "{expr} gave {out:?}");
        out.remove(0)
    }

    fn compile_offset(expr: &str) -> Option<usize> {
        match check(expr) {
            Err(JqError::Compile { offset, .. }) => offset,
            other => panic!("expected compile error for {expr}, got {other:?}"),
        }
    }

    fn runtime_message(expr: &str, input: &Value) -> String {
        match eval(expr, input) {
            Err(JqError::Runtime { message, .. }) => message,
            other => panic!("expected runtime error for {expr}, got {other:?}"),
        }
    }

    fn nested(depth: usize) -> Value {
        let mut v = json!(0);
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    /// Drop without recursion: serde_json's own drop is recursive.
    fn drop_flat(mut v: Value) {
        while let Value::Array(mut a) = v {
            v = a.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn eq_true() { assert!(eval_bool(".a == 1", &json!({"a": 1})).unwrap()) }
    #[test]
    fn eq_false() { assert!(!eval_bool(".a == 1", &json!({"a": 2})).unwrap()) }
    #[test]
    fn length_gt() { assert!(eval_bool(".x | length > 2", &json!({"x": [1, 2, 3]})).unwrap()) }
    #[test]
    fn length_not_gt() { assert!(!eval_bool(".x | length > 2", &json!({"x": "ab"})).unwrap()) }
    #[test]
    fn select_collect() { assert_eq!(one("[.[] | select(. > 1)]", json!([0, 1, 2, 3])), json!([2, 3])) }
    #[test]
    fn many_outputs() { assert_eq!(eval(".[]", &json!([1, "a", null])).unwrap(), vec![json!(1), json!("a"), json!(null)]) }
    #[test]
    fn missing_field_null() { assert_eq!(one(".missing", json!({})), json!(null)) }
    #[test]
    fn missing_field_false() { assert!(!eval_bool(".missing", &json!({})).unwrap()) }
    #[test]
    fn truthy_values() { assert!(eval_bool(".", &json!(0)).unwrap() && eval_bool(".", &json!("")).unwrap() && eval_bool(".", &json!([])).unwrap()) }
    #[test]
    fn false_value() { assert!(!eval_bool(".", &json!(false)).unwrap()) }
    #[test]
    fn first_output_decides() { assert!(eval_bool("true, false", &json!(null)).unwrap()) }
    #[test]
    fn bool_stops_after_first() { assert!(eval_bool("1, error(\"never\")", &json!(null)).unwrap()) }
    #[test]
    fn bool_infinite_stream() { assert!(eval_bool("repeat(1)", &json!(null)).unwrap()) }
    #[test]
    fn empty_output() { assert_eq!(eval("empty", &json!(1)).unwrap(), Vec::<Value>::new()) }
    #[test]
    fn empty_output_false() { assert!(!eval_bool("empty", &json!(1)).unwrap()) }
    #[test]
    fn std_defs() { assert_eq!(one("map(. * 2) | add", json!([1, 2, 3])), json!(12)) }
    #[test]
    fn std_funs() { assert_eq!(one("[.[] | ascii_downcase] | join(\",\")", json!(["A", "B"])), json!("a,b")) }
    #[test]
    fn json_funs() { assert_eq!(one("tojson | fromjson", json!({"a": [1, 2.5]})), json!({"a": [1, 2.5]})) }
    #[test]
    fn regex_funs() { assert!(eval_bool("test(\"^ab+c$\")", &json!("abbbc")).unwrap()) }

    #[test]
    fn check_ok() { assert_eq!(check(".a | map(select(.b)) | length"), Ok(())) }
    #[test]
    fn parse_error_offset() { assert_eq!(compile_offset(".a | | .b"), Some(5)) }
    #[test]
    fn parse_error_message() { assert!(matches!(check(".a | | .b"), Err(JqError::Compile { message, .. }) if message.contains("expected term, found `|`"))) }
    #[test]
    fn end_of_input_offset() { assert_eq!(compile_offset(".a |"), Some(4)) }
    #[test]
    fn lex_error_offset() { assert_eq!(compile_offset(".a + §"), Some(5)) }
    #[test]
    fn unclosed_offset() { assert_eq!(compile_offset("[1, 2"), Some(5)) }
    #[test]
    fn undefined_filter_offset() { assert_eq!(compile_offset(".a | nosuchfn(1)"), Some(5)) }
    #[test]
    fn undefined_filter_message() { assert!(matches!(check("nosuchfn(1)"), Err(JqError::Compile { message, .. }) if message == "undefined filter `nosuchfn/1`")) }
    #[test]
    fn undefined_var_offset() { assert_eq!(compile_offset(". + $nope"), Some(4)) }
    #[test]
    fn import_refused() { assert!(matches!(check("include \"x\"; ."), Err(JqError::Compile { .. }))) }
    #[test]
    fn compile_error_display() { assert_eq!(check(". |").unwrap_err().to_string(), "invalid jq expression `. |`: expected term, found unexpected end of input") }
    #[test]
    fn compile_error_on_eval() { assert!(matches!(eval(".a | | .b", &json!(null)), Err(JqError::Compile { offset: Some(5), .. }))) }

    #[test]
    fn runtime_error() { assert_eq!(runtime_message("error(\"boom\")", &json!(null)), "boom") }
    #[test]
    fn runtime_error_display() { assert_eq!(eval("error(\"boom\")", &json!(null)).unwrap_err().to_string(), "jq expression `error(\"boom\")` failed: boom") }
    #[test]
    fn runtime_error_value() { assert_eq!(runtime_message("error({a: 1})", &json!(null)), "{\"a\":1}") }
    #[test]
    fn runtime_type_error() { assert!(runtime_message(".a", &json!([1])).starts_with("cannot index")) }
    #[test]
    fn runtime_error_bool() { assert!(matches!(eval_bool("error(\"boom\")", &json!(null)), Err(JqError::Runtime { .. }))) }
    #[test]
    fn try_catch() { assert_eq!(one("try error(\"boom\") catch .", json!(null)), json!("boom")) }
    #[test]
    fn halt_nonzero() { assert_eq!(runtime_message("halt_error(3)", &json!("x")), "halted with exit code 3") }
    #[test]
    fn halt_zero() { assert_eq!(eval("1, halt, 2", &json!(null)).unwrap(), vec![json!(1)]) }

    #[test]
    fn variable() { assert_eq!(eval_with_vars("$n + 1", &json!(null), &[("n", json!(41))]).unwrap(), vec![json!(42)]) }
    #[test]
    fn variable_dollar_name() { assert_eq!(eval_with_vars("$n", &json!(null), &[("$n", json!("x"))]).unwrap(), vec![json!("x")]) }
    #[test]
    fn variables_many() { assert_eq!(eval_with_vars("[$a, $b, .]", &json!(3), &[("a", json!(1)), ("b", json!({"c": 2}))]).unwrap(), vec![json!([1, {"c": 2}, 3])]) }
    #[test]
    fn variable_last_wins() { assert_eq!(eval_with_vars("$a", &json!(null), &[("a", json!(1)), ("a", json!(2))]).unwrap(), vec![json!(2)]) }
    #[test]
    fn variable_bool() { assert!(eval_bool_with_vars(".x == $want", &json!({"x": "ok"}), &[("want", json!("ok"))]).unwrap()) }
    #[test]
    fn variable_undefined_in_check() { assert!(check("$n").is_err() && check_with_vars("$n", &["n"]).is_ok()) }
    #[test]
    fn variable_unused() { assert_eq!(eval_with_vars(".", &json!(1), &[("n", json!(2))]).unwrap(), vec![json!(1)]) }
    #[test]
    fn variable_shadowed() { assert_eq!(eval_with_vars("2 as $n | $n", &json!(null), &[("n", json!(1))]).unwrap(), vec![json!(2)]) }

    #[test]
    fn big_int_roundtrip() { assert_eq!(one(".", json!(9007199254740993u64)), json!(9007199254740993u64)) }
    #[test]
    fn big_int_arith() { assert_eq!(one(". + 1", json!(9007199254740993u64)), json!(9007199254740994u64)) }
    #[test]
    fn big_int_compare() { assert!(eval_bool(". == 9007199254740993", &json!(9007199254740993u64)).unwrap()) }
    #[test]
    fn i64_extremes() { assert_eq!(one(".", json!([i64::MIN, i64::MAX])), json!([i64::MIN, i64::MAX])) }
    #[test]
    fn u64_max() { assert_eq!(one(".", json!(u64::MAX)), json!(u64::MAX)) }
    #[test]
    fn u64_max_arith() { assert_eq!(one(". - 1", json!(u64::MAX)), json!(u64::MAX - 1)) }
    #[test]
    fn beyond_u64_is_float() { assert_eq!(one(". * 2", json!(u64::MAX)), json!(u64::MAX as f64 * 2.0)) }
    #[test]
    fn int_stays_int() { assert!(one(". + 1", json!(1)).is_i64()) }
    #[test]
    fn floats() { assert_eq!(one(".", json!([0.1, -2.5, 1e300])), json!([0.1, -2.5, 1e300])) }
    #[test]
    fn float_literal() { assert_eq!(one("1.5", json!(null)), json!(1.5)) }
    #[test]
    fn nan_is_null() { assert_eq!(one("nan", json!(null)), json!(null)) }
    #[test]
    fn infinite_is_null() { assert_eq!(one("[infinite, -infinite]", json!(null)), json!([null, null])) }
    #[test]
    fn scalars_roundtrip() { assert_eq!(one(".", json!([null, true, false, "s", 0, -1])), json!([null, true, false, "s", 0, -1])) }

    #[test]
    fn object_key_order_kept() { assert_eq!(one("{z: 1, a: 2, m: 3} | keys_unsorted", json!(null)), json!(["z", "a", "m"])) }
    #[test]
    fn object_key_order_input() {
        let input = json!({"z": 1, "a": 2, "m": 3});
        let keys: Vec<Value> = input.as_object().unwrap().keys().map(|k| json!(k)).collect();
        assert_eq!(one("keys_unsorted", input), Value::Array(keys));
    }
    #[test]
    fn object_output() { assert_eq!(one("{z: .a, a: .b}", json!({"a": 1, "b": [2]})), json!({"z": 1, "a": [2]})) }
    #[test]
    fn non_string_key() { assert_eq!(runtime_message("{(1): 2}", &json!(null)), "object key 1 is not a string") }

    #[test]
    fn unicode_roundtrip() { assert_eq!(one(".", json!("héllo wörld ✓ 🦀")), json!("héllo wörld ✓ 🦀")) }
    #[test]
    fn unicode_length() { assert_eq!(one("length", json!("🦀é")), json!(2)) }
    #[test]
    fn unicode_keys() { assert_eq!(one(".\"ключ\"", json!({"ключ": "значение"})), json!("значение")) }
    #[test]
    fn unicode_in_expr_offset() { assert_eq!(compile_offset("\"é\" | | ."), Some(7)) }

    #[test]
    fn depth_limit_ok() { assert_eq!(eval("length", &nested(MAX_DEPTH)).unwrap(), vec![json!(1)]) }
    #[test]
    fn depth_limit_exceeded() { assert!(runtime_message(".", &nested(MAX_DEPTH + 1)).contains("nested deeper")) }
    #[test]
    fn deep_input_rejected() {
        let deep = nested(100_000);
        assert!(matches!(eval(".", &deep), Err(JqError::Runtime { .. })));
        assert!(matches!(eval_bool(".", &deep), Err(JqError::Runtime { .. })));
        drop_flat(deep);
    }
    #[test]
    fn deep_object_rejected() {
        let mut v = json!(0);
        for _ in 0..(MAX_DEPTH + 1) { v = json!({"a": v}); }
        assert!(matches!(eval(".", &v), Err(JqError::Runtime { .. })));
    }
    #[test]
    fn deep_var_rejected() { assert!(runtime_message_vars("$v", &[("v", nested(MAX_DEPTH + 1))]).contains("`$v`")) }
    #[test]
    fn deep_output_rejected() { assert!(runtime_message("reduce range(600) as $i (0; [.])", &json!(null)).contains("output is nested")) }
    #[test]
    fn deep_expr_rejected() { assert_eq!(compile_offset(&format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000))), Some(MAX_EXPR_NESTING)) }
    #[test]
    fn deep_expr_limit_ok() { assert_eq!(one(&format!("{}1{} | flatten", "[".repeat(MAX_EXPR_NESTING), "]".repeat(MAX_EXPR_NESTING)), json!(null)), json!([1])) }
    #[test]
    fn deep_expr_limit_exceeded() { assert!(check(&format!("{}1{}", "[".repeat(MAX_EXPR_NESTING + 1), "]".repeat(MAX_EXPR_NESTING + 1))).is_err()) }
    #[test]
    fn deep_interpolation_rejected() { assert!(check(&format!("{}1{}", "\"\\(".repeat(200), ")\"".repeat(200))).is_err()) }
    #[test]
    fn brackets_in_strings_ignored() { assert_eq!(check(&format!(".a | test(\"{}\\\"\")", "(".repeat(1000))), Ok(())) }
    #[test]
    fn brackets_in_comments_ignored() { assert_eq!(one(&format!("# {}\n1", "[".repeat(1000)), json!(null)), json!(1)) }
    #[test]
    fn long_array_literal() { assert_eq!(one(&format!("[{}] | length", vec!["1"; 3000].join(", ")), json!(null)), json!(3000)) }
    #[test]
    fn long_pipe_chain() { assert_eq!(one(&vec![". + 1"; 3000].join(" | "), json!(0)), json!(3000)) }
    #[test]
    fn long_binding_chain() { assert_eq!(one(&((0..2000).map(|i| format!("{i} as $x{i} | ")).collect::<String>() + "$x1999"), json!(null)), json!(1999)) }
    #[test]
    fn deep_output_bool_ok() { assert!(eval_bool("reduce range(600) as $i (0; [.])", &json!(null)).unwrap()) }
    #[test]
    fn wide_input_ok() { assert_eq!(one("length", Value::Array(vec![json!([1]); 100_000])), json!(100_000)) }

    fn runtime_message_vars(expr: &str, vars: &[(&str, Value)]) -> String {
        match eval_with_vars(expr, &json!(null), vars) {
            Err(JqError::Runtime { message, .. }) => message,
            other => panic!("expected runtime error for {expr}, got {other:?}"),
        }
    }
}
