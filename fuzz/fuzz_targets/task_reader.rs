//! Task file bytes -> the `${task.*}` variables: the text as the worker reads it (lossy UTF-8),
//! `${task.json}` parsed from it, and `${task.json.*}` lookups into the result. Must never panic
//! nor overflow the stack, however deep the JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrate_lang::template::{Template, to_text, walk};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Some(json) = orchestrate_swarm::worker::task_json(&text) else {
        return;
    };
    let task = serde_json::json!({"text": text, "json": json});
    for raw in ["${task.json.x}", "${task.json.0.a.1}", "${task.json}"] {
        let template = Template::parse(raw).expect("a fixed template parses");
        for var in template.vars() {
            if let Some(value) = walk(&task, &var.segments[1..]) {
                let _ = to_text(value);
            }
        }
    }
    let _ = serde_json::to_string(&task);
});
