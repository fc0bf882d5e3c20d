//! Loading and validating workflow, role and swarm files.
//!
//! Owns: the public entry points (`load_in`, `load_file`, `load_str`, `load_role_file`,
//! `load_swarm`, ...) and the paths other crates use (`orchestrate_lang::load::...`), re-exported
//! from the modules that hold the logic. Does not hold logic itself, and runs nothing (`subflow`
//! runs child runs).
//!
//! The modules, in the order a workflow file goes through them: `source` (read one file, parse
//! its YAML, the error a failed load returns), `fields` (the `Loader`: unknown-field diagnostics
//! and typed field readers), `workflow`, `steps` and `kinds` (walking the spanned YAML tree into
//! [`crate::model`] types; `blocks` for what workflows and roles share), `children` (the child
//! files of `workflow:` steps, loaded with their parent), `checks` and `refs` (whole-workflow
//! checks); `pipeline` strings them together for one file. `roles` and `swarm` load the other
//! kinds of file. All problems are collected, not just the first.

mod blocks;
mod checks;
mod children;
mod fields;
mod kinds;
mod options;
mod pipeline;
mod refs;
mod roles;
#[cfg(test)]
mod schema_fields;
mod source;
mod steps;
mod swarm;
mod vars;
mod workflow;

use std::path::Path;

use crate::model::Workflow;

pub use options::LoadOptions;
use pipeline::load_str_with;
pub use pipeline::{load_file_with, load_with_text};
pub use roles::load_role_file;
pub use source::LoadError;
pub use swarm::{SWARM_FILE, load_swarm, load_swarm_file};
pub use vars::TASK_FIELDS;
pub use workflow::fingerprint;

/// Loads a workflow of `workspace`, its child workflows (`workflow:` steps) included.
pub fn load_in(workspace: &Path, path: &Path) -> Result<Workflow, LoadError> {
    load_file_with(
        path,
        &LoadOptions {
            workspace: Some(workspace.to_path_buf()),
            ..LoadOptions::default()
        },
    )
}

/// Loads and validates the workflow at `path` with the default options (no workspace: children load
/// when they run).
pub fn load_file(path: &Path) -> Result<Workflow, LoadError> {
    load_file_with(path, &LoadOptions::default())
}

/// Loads and validates `text` as if it were the file at `path` (used for messages and relative
/// paths).
pub fn load_str(path: &Path, text: &str) -> Result<Workflow, LoadError> {
    load_str_with(path, text, &LoadOptions::default())
}
