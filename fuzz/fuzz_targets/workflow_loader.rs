//! Workflow YAML bytes -> load and validate. Must never panic: every input is either a workflow
//! or a list of diagnostics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match orchestrate_lang::load::load_str(Path::new("fuzz.yaml"), text) {
        Ok(workflow) => {
            let _ = format!("{workflow:?}");
        }
        Err(err) => {
            assert!(!err.diagnostics.is_empty(), "an error without a diagnostic");
            let _ = err.render();
        }
    }
});
