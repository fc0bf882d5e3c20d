//! Coding-agent CLIs (Claude Code, Codex, Gemini CLI) as step runtimes.
//!
//! `parse` turns one run's raw stdout, stderr and exit code into a normalized
//! [`parse::Outcome`]; it spawns nothing and builds no argv.

pub mod adapter;
pub mod defaults;
pub mod gemini_home;
pub mod parse;
pub mod profile;
