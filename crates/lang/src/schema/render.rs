//! Renders the schemas of the files users write as the JSON checked in under `docs/schema/`.
//! Does not write files (the drift test and `init` do).

use schemars::JsonSchema;

use super::role::{RoleFile, SwarmFile};
use super::workflow::WorkflowFile;

/// The schemas this crate publishes, by name: `docs/schema/<name>.schema.json`.
pub const SCHEMAS: &[&str] = &["workflow", "role", "swarm"];

/// The schema `name` (one of [`SCHEMAS`]) as pretty JSON with a final newline; `None` for a
/// name not in [`SCHEMAS`].
pub fn render(name: &str) -> Option<String> {
    match name {
        "workflow" => Some(pretty::<WorkflowFile>()),
        "role" => Some(pretty::<RoleFile>()),
        "swarm" => Some(pretty::<SwarmFile>()),
        _ => None,
    }
}

fn pretty<T: JsonSchema>() -> String {
    let schema = schemars::schema_for!(T);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
