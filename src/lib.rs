//! `orchestrate`: a workflow engine for shell commands and coding-agent CLIs.
//!
//! This crate is the command line: every command, one renderer of errors. The layers below it
//! are crates of their own (see ARCHITECTURE.md): `orchestrate-base` (processes and files),
//! `orchestrate-lang` (the workflow language), `orchestrate-runtime` (agent CLIs),
//! `orchestrate-queue` (the task queue), `orchestrate-engine` (the runner), `orchestrate-observe`
//! (reading runs back) and `orchestrate-swarm` (role processes and their supervisor).

pub mod cli;
mod commands;
mod error;
mod flags;
mod logging;
mod wftest;
