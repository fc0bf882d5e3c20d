//! One workflow file to a checked [`Workflow`]: read it, parse it, walk it into the model,
//! attach its children (with a workspace), then run the whole-workflow checks and put the
//! diagnostics in order. Does not hold any of those steps itself.

use std::path::Path;

use crate::model::{LoadedChild, Workflow};

use super::checks::Checker;
use super::children;
use super::options::LoadOptions;
use super::source::{LoadError, failed, read_source, start};

/// Reads the workflow at `path` and loads it with `options`.
pub fn load_file_with(path: &Path, options: &LoadOptions) -> Result<Workflow, LoadError> {
    let text = read_source(path)?;
    load_str_with(path, &text, options)
}

pub(crate) fn load_str_with(
    path: &Path,
    text: &str,
    options: &LoadOptions,
) -> Result<Workflow, LoadError> {
    let fail = |diagnostics| failed(path, text, diagnostics);
    let (root, mut loader) = start(path, text)?;
    let workflow = loader.workflow(&root, text);
    let Some(mut workflow) = workflow else {
        return Err(fail(loader.diags));
    };
    // Children load before the checks, which look up their declared outputs; their own
    // problems are listed after the parent's, each rendered from the child's text.
    let children = match &options.workspace {
        Some(workspace) => children::attach(
            &mut workflow,
            workspace,
            options,
            &mut loader.diags,
            load_with_text,
        ),
        None => Vec::new(),
    };
    Checker::new(&mut loader, &workflow, options).check();
    if loader.diags.is_empty() && children.is_empty() {
        Ok(workflow)
    } else {
        let mut diags = loader.diags;
        diags.sort_by_key(|d| (d.line, d.column));
        diags.extend(children);
        Err(fail(diags))
    }
}

/// [`load_file_with`], keeping the text: a child run saves it in its RUN_ROOT,
/// and `with:` keys are checked against it.
pub fn load_with_text(path: &Path, options: &LoadOptions) -> Result<LoadedChild, LoadError> {
    let text = read_source(path)?;
    let workflow = load_str_with(path, &text, options)?;
    Ok(LoadedChild { workflow, text })
}
