//! The workflow language: spanned YAML, diagnostics, the validated model, loading and checking workflow, role and swarm files, `${...}` templates and jq. Usable on its own: it runs nothing.

pub mod branch;
pub mod diag;
pub mod jq;
pub mod load;
pub mod model;
pub mod schema;
pub mod template;
pub mod yaml;
