//! Integration tests: the real `orchestrate` binary against real processes and files in temp dirs.
//! One test binary (fast to link); each module covers one area.

// A test crate has no public API: its helpers are `pub` so that every module can use them.
#![allow(unreachable_pub)]

mod harness;

mod acceptance;
mod agents;
mod architecture;
mod budgets;
mod cgroup;
mod chaos;
mod checker;
mod cli_defaults;
mod cluster;
mod codex_args;
mod durability;
mod engine_records;
mod fanout;
mod flags;
mod gemini_homes;
mod inbox;
mod inputs;
mod json_schemas;
mod language;
mod logging;
mod old_runs;
mod postgres;
mod pricing;
mod progress;
mod records;
mod reload;
mod schema;
mod steer;
mod subflow;
mod supervise;
mod swarm;
mod telemetry;
mod validate;
mod wftest;
mod workspace;
mod worktree;
