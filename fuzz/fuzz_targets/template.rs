//! Arbitrary template text -> parse, then render against a fixed context. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrate_lang::template::{Lookup, Template, Undefined, VarRef, walk};
use serde_json::{Value, json};

struct Ctx(Value);

impl Lookup for Ctx {
    fn lookup(&self, var: &VarRef) -> Result<Value, Undefined> {
        walk(&self.0, &var.segments)
            .cloned()
            .ok_or_else(|| Undefined::new(var, "not in the fuzz context"))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = Ctx(json!({
        "context": {"name": "x", "n": 3, "list": [1, "two", {"three": null}]},
        "steps": {"A": {"output": "out", "json": {"files": ["a", "b"]}, "lines": ["l1"]}},
        "item": "it",
        "loop": {"index": 0},
    }));
    if let Ok(template) = Template::parse(text) {
        let _ = template.vars().count();
        let _ = template.render(&ctx);
        let _ = template.render_value(&ctx);
    }
});
