//! Random and mutated input through the three entry points the fuzz targets cover (the workflow
//! loader, the template engine, the task-file reader), in-process and for a bounded time, so
//! every `cargo test` exercises them without cargo-fuzz. `scripts/fuzz` goes much further.
//! Seeded: `INPUTS_SEED=N` replays a failure.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::Rng;
use orchestrate_lang::template::{Lookup, Template, Undefined, VarRef, walk};
use serde_json::{Value, json};

fn seeded() -> Rng {
    let (rng, seed) = Rng::from_env("INPUTS_SEED");
    eprintln!("INPUTS_SEED={seed}");
    rng
}

/// Fragments that reach the interesting corners of YAML, templates and JSON.
const PIECES: &[&str] = &[
    "${",
    "}",
    "$${",
    ".",
    "steps.",
    "context.",
    "task.json.",
    "loop.index",
    "item",
    "&a ",
    "*a",
    "<<: *a",
    "[",
    "]",
    "{",
    "}",
    ":",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\n    ",
    "'",
    "\"",
    "#",
    "!!str ",
    "on:",
    "goto: ",
    "for_each:",
    "items: ",
    "when: ",
    "{jq: '.'}",
    "retry: ",
    "name: A",
    "command: [x]",
    "steps:",
    "é",
    "\u{0}",
    "\t",
    "0",
    "-1",
    "1e309",
    "null",
    "~",
    "|",
    ">-",
];

fn mutate(rng: &mut Rng, base: &str) -> String {
    let mut text: Vec<char> = base.chars().collect();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(text.len() + 1);
        match rng.below(3) {
            0 => {
                let piece = PIECES[rng.below(PIECES.len())];
                text.splice(at..at, piece.chars());
            }
            1 if at < text.len() => {
                let end = (at + 1 + rng.below(20)).min(text.len());
                text.drain(at..end);
            }
            _ => {
                let from = rng.below(text.len().max(1));
                let end = (from + rng.below(40)).min(text.len());
                let copy: Vec<char> = text[from..end].to_vec();
                text.splice(at..at, copy);
            }
        }
    }
    text.into_iter().collect()
}

fn pieces(rng: &mut Rng, n: usize) -> String {
    (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect()
}

#[test]
fn mutated_workflows_load_or_fail_with_diagnostics_never_panic() {
    let mut rng = seeded();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bases: Vec<String> = std::fs::read_dir(root.join("workflows"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    // At least 20 inputs however slow the machine, more while the time allows: the count is
    // the floor, the clock only adds.
    let deadline = Instant::now() + Duration::from_secs(2);
    let (mut runs, mut loaded) = (0, 0);
    while runs < 20 || Instant::now() < deadline {
        let text = if rng.below(4) == 0 {
            let n = 1 + rng.below(60);
            pieces(&mut rng, n)
        } else {
            let base = rng.below(bases.len());
            mutate(&mut rng, &bases[base])
        };
        match orchestrate_lang::load::load_str(Path::new("m.yaml"), &text) {
            Ok(_) => loaded += 1,
            Err(err) => {
                assert!(!err.diagnostics.is_empty(), "no diagnostic for {text:?}");
                let _ = err.render();
            }
        }
        runs += 1;
    }
    eprintln!("{runs} workflows ({loaded} loaded)");
}

struct Ctx(Value);

impl Lookup for Ctx {
    fn lookup(&self, var: &VarRef) -> Result<Value, Undefined> {
        walk(&self.0, &var.segments)
            .cloned()
            .ok_or_else(|| Undefined::new(var, "not here"))
    }
}

#[test]
fn random_templates_parse_and_render_or_fail_cleanly() {
    let mut rng = seeded();
    let ctx = Ctx(json!({"context": {"a": "x", "n": [1, {"b": null}]}, "item": "i"}));
    let deadline = Instant::now() + Duration::from_millis(500);
    let (mut runs, mut rendered) = (0, 0);
    while runs < 100 || Instant::now() < deadline {
        let n = 1 + rng.below(20);
        let raw = pieces(&mut rng, n);
        if let Ok(template) = Template::parse(&raw) {
            let literal = template.is_literal();
            if let Ok(text) = template.render(&ctx) {
                rendered += 1;
                if literal {
                    assert_eq!(text, raw.replace("$${", "${"), "{raw:?}");
                }
            }
            let _ = template.render_value(&ctx);
        }
        runs += 1;
    }
    eprintln!("{runs} templates ({rendered} rendered)");
}

#[test]
fn random_task_texts_give_task_json_or_none_never_overflow() {
    let mut rng = seeded();
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut runs = 0;
    while runs < 20 || Instant::now() < deadline {
        let text = match rng.below(3) {
            0 => {
                let depth = rng.below(200_000);
                let (open, close) = if rng.below(2) == 0 {
                    ("[", "]")
                } else {
                    ("{\"a\":", "}")
                };
                format!("{}0{}", open.repeat(depth), close.repeat(depth))
            }
            1 => String::from_utf8_lossy(
                &(0..rng.below(200))
                    .map(|_| rng.next() as u8)
                    .collect::<Vec<u8>>(),
            )
            .into_owned(),
            _ => mutate(&mut rng, r#"{"x": [1, {"y": "z"}], "correlation_id": "c"}"#),
        };
        if let Some(value) = orchestrate_swarm::worker::task_json(&text) {
            let task = json!({"json": value});
            for path in [&["json", "x"][..], &["json", "0", "a"], &["json"]] {
                let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
                let _ = walk(&task, &path);
            }
        }
        runs += 1;
    }
    eprintln!("{runs} task texts");
}
