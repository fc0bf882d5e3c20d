//! One file's text: reading it with the checks every loaded YAML file gets (a regular file,
//! size, UTF-8), parsing its YAML and starting a [`Loader`] over it, and [`LoadError`], what a
//! failed load returns. Does not know what kind of file it reads (workflow, role, swarm
//! settings): the callers walk the tree.

use std::path::{Path, PathBuf};

use crate::diag::Diagnostic;
use crate::yaml::{self, Node, Pos};

use super::fields::Loader;

/// A workflow that failed to load, with every problem found.
#[derive(Debug, thiserror::Error)]
#[error("failed to load workflow {}: {} problem(s)", path.display(), diagnostics.len())]
pub struct LoadError {
    /// The workflow file that failed.
    pub path: PathBuf,
    /// The file's text when it could be read, for rendering the offending lines.
    pub source_text: Option<String>,
    /// Every problem found, in file order; at least one.
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadError {
    /// Every diagnostic rendered with its source line, one after another, for a terminal or a log.
    pub fn render(&self) -> String {
        self.diagnostics
            .iter()
            .map(|d| d.render(d.source.as_deref().or(self.source_text.as_deref())))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Workflow files over this size are refused before parsing.
pub(crate) const MAX_WORKFLOW_BYTES: u64 = 8 << 20;

/// Reads a YAML file we are about to load, with the checks every such file gets.
pub(super) fn read_source(path: &Path) -> Result<String, LoadError> {
    let fail = |message: String, hint: &str| LoadError {
        path: path.to_path_buf(),
        source_text: None,
        diagnostics: vec![Diagnostic::error(path, Pos::default(), message).with_hint(hint)],
    };
    let meta = std::fs::metadata(path).map_err(|err| {
        fail(
            format!("cannot read the workflow file: {err}"),
            "check the path",
        )
    })?;
    if !meta.is_file() {
        return Err(fail(
            "not a regular file".into(),
            "give the path of a workflow YAML file",
        ));
    }
    if meta.len() > MAX_WORKFLOW_BYTES {
        return Err(fail(
            format!(
                "the file is {} bytes; workflows are limited to {MAX_WORKFLOW_BYTES}",
                meta.len()
            ),
            "split the workflow",
        ));
    }
    let bytes = std::fs::read(path).map_err(|err| {
        fail(
            format!("cannot read the workflow file: {err}"),
            "check permissions",
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|err| {
        let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        let text = String::from_utf8_lossy(valid);
        let line = text.matches('\n').count() + 1;
        let column = text
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        let pos = Pos {
            line: line as u32,
            column: column as u32,
            offset: Some(valid.len()),
        };
        LoadError {
            path: path.to_path_buf(),
            source_text: None,
            diagnostics: vec![
                Diagnostic::error(
                    path,
                    pos,
                    "the file is not UTF-8: this byte starts no valid character",
                )
                .with_hint("save the workflow as UTF-8"),
            ],
        }
    })?;
    Ok(text)
}

/// A load of `path` (whose text is `text`) that failed with `diagnostics`.
pub(super) fn failed(path: &Path, text: &str, diagnostics: Vec<Diagnostic>) -> LoadError {
    LoadError {
        path: path.to_path_buf(),
        source_text: Some(text.to_string()),
        diagnostics,
    }
}

/// Parses a file's YAML and starts a loader over it: what every kind of file (workflow, role,
/// swarm settings) begins with. A YAML error is the whole answer.
pub(super) fn start(path: &Path, text: &str) -> Result<(Node, Loader), LoadError> {
    let root = yaml::parse(text).map_err(|err| {
        failed(
            path,
            text,
            vec![Diagnostic::error(
                path,
                err.pos,
                format!("invalid YAML: {}", err.message),
            )],
        )
    })?;
    let loader = Loader {
        file: path.to_path_buf(),
        diags: Vec::new(),
        lines: text.lines().map(str::to_string).collect(),
    };
    Ok((root, loader))
}
