//! Coding-agent CLIs as step runtimes: argv, env and files per CLI, their structured output parsed into text, sessions, usage and cost, `runtimes.yaml` profiles and the models each pinned CLI uses by default.

pub mod adapter;
pub mod defaults;
pub(crate) mod gemini_home;
pub mod parse;
pub mod profile;
