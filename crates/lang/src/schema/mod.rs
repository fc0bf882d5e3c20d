//! JSON Schemas of the files users write: a workflow, a role (`agents/<role>.yaml`) and the
//! swarm settings (`swarm.yaml`), for editors (`# yaml-language-server: $schema=...`) and
//! other tools. The loader reads a spanned YAML tree, not serde types, so these are schema-only
//! types that mirror the YAML as users write it; their doc comments become the schemas'
//! descriptions.
//!
//! Owns: those types and the rendering of each schema (`render`). Does not load or validate a
//! file (`load` does, with diagnostics the schema cannot give); a file the schema accepts may
//! still fail to load (a `goto` to a missing step, a bad template). The tests in
//! `load::schema_fields` keep these types and the loader's field tables in step.

#![expect(
    dead_code,
    reason = "the types exist to derive JSON Schemas from: nothing builds or reads their values"
)]

mod blocks;
mod render;
mod role;
mod scalar;
mod step;
mod workflow;

pub use render::{SCHEMAS, render};
