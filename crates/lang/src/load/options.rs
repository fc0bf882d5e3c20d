//! How a workflow is loaded: [`LoadOptions`] and the chain of [`Link`]s (the `workflow:` steps
//! that led to a child file). Data only: loading is `pipeline`'s, the chain's checks
//! (cycles, depth) are `children`'s.

use std::path::PathBuf;

/// How a workflow is loaded: on its own (`run`, `validate`) or as a role's workflow.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The role's runtime: provider steps without `provider:` use it.
    pub default_provider: Option<String>,
    /// WORKSPACE, against which `workflow:` steps name their child files. When set, each child
    /// is loaded and checked with its parent (missing files, its own problems, cycles, declared
    /// outputs); without it those checks wait until the step runs.
    pub workspace: Option<PathBuf>,
    /// The `workflow:` steps that led to this file (a child's load), outermost first.
    pub ancestors: Vec<Link>,
}

/// One `workflow:` step on the way to a file being loaded: the file it is in and its line.
#[derive(Debug, Clone)]
pub struct Link {
    /// The file, canonicalized (cycles are found by comparing these).
    pub(crate) canonical: PathBuf,
    /// The file as loaded, for messages.
    pub(crate) file: PathBuf,
    pub(crate) line: u32,
    pub(crate) step: String,
}
