//! Reading what a command is given: workflow files for a run, and the diagnostics of workflow,
//! role and settings files shown with workspace-relative paths, as the user typed them.
//!
//! Does not validate anything itself (`orchestrate_lang::load` does) nor decide what a
//! problem means for a command (the command's error says that).

use std::path::Path;

use orchestrate_lang::load::{self, LoadError};
use orchestrate_lang::model::Workflow;

use crate::error::Error;

/// Prints load errors (role and workflow files) with workspace-relative paths, each followed by
/// a blank line.
pub(super) fn print_load_errors(workspace: &Path, errors: &[LoadError]) {
    for err in errors {
        eprint!("{}", relative(err, workspace).render());
        eprintln!();
    }
}

/// Renders load errors with paths relative to the workspace, as the user typed them, ending in
/// a newline.
pub(super) fn relative_render(err: &LoadError, workspace: &Path) -> String {
    let mut text = relative(err, workspace).render();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// A copy of `err` whose diagnostics name their files relative to the workspace.
fn relative(err: &LoadError, workspace: &Path) -> LoadError {
    let mut copy = LoadError {
        path: err.path.clone(),
        source_text: err.source_text.clone(),
        diagnostics: err.diagnostics.clone(),
    };
    for d in &mut copy.diagnostics {
        if let Ok(rel) = d.file.strip_prefix(workspace) {
            d.file = rel.to_path_buf();
        }
    }
    copy
}

/// Loads a workflow for running: its problems are printed, and the error says none ran.
pub(super) fn load_for_run(workspace: &Path, file: &Path) -> Result<(Workflow, String), Error> {
    let path = workspace.join(file);
    match load::load_in(workspace, &path) {
        Ok(mut workflow) => {
            workflow.path = file.to_path_buf();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            Ok((workflow, text))
        }
        Err(err) => {
            eprint!("{}", relative_render(&err, workspace));
            Err(Error::invalid(format!(
                "the workflow has {} problem(s); nothing was run",
                err.diagnostics.len()
            )))
        }
    }
}
