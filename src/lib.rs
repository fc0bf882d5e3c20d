//! `orchestrate`: a workflow engine for shell commands and coding-agent CLIs.
//!
//! The data flow, stage by stage (see ARCHITECTURE.md):
//! `yaml` (spanned tree) -> `load` (diagnostics, validation) -> `model` -> `runner`
//! -> `exec` (one process per step), recording into `events` (append-only) and `state`
//! (snapshots). `cli` is the command line over all of it.

#[macro_use]
pub mod fault;

pub mod approval;
pub mod breaker;
pub mod budget;
pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod control;
pub mod converge;
pub mod diag;
pub mod events;
pub mod exec;
pub mod fingerprint;
pub mod fsutil;
pub mod held_files;
pub mod jq;
pub mod load;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod otlp;
pub mod processed;
pub mod progress;
pub mod queue;
pub mod record;
pub mod role;
pub mod runner;
pub mod runtime;
pub mod state;
pub mod subflow;
pub mod supervisor;
pub mod template;
pub mod wftest;
pub mod worker;
pub mod worktree;
pub mod write_watch;
pub mod yaml;
