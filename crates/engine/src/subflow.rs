//! Sub-workflow records: what a child run of a `workflow:` step is given ([`ChildRun`]) and what
//! became of it ([`ChildOutcome`]), loading a child file its parent did not load, and what a
//! finished child spent according to its events.
//!
//! Does not run the child (`runner::child` builds its `Runner` and configuration), load child
//! files with their parent (`load`: containment, cycles, `with:` keys) nor lay out its
//! directory (`state::child_root`, re-exported here for readers that name it by this module).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::event::Event;
use crate::state::RunDir;
use orchestrate_lang::load::LoadOptions;
use orchestrate_lang::model::{LoadedChild, Step, SubWorkflow};

/// What a child run needs from its parent, besides the parent's configuration.
pub(crate) struct ChildRun<'a> {
    pub(crate) step: &'a Step,
    pub(crate) sub: &'a SubWorkflow,
    /// Execution ordinal of the step in the parent (names the child's directory; replays the
    /// same on resume).
    pub(crate) exec: u64,
    /// The parent's fan-out lane (empty for the run's own step list): items of a fan-out
    /// number their executions each from 1, so it keeps their children's directories apart.
    pub(crate) lane: Vec<u64>,
    /// `with:` rendered in the parent's scope.
    pub(crate) with: Map<String, Value>,
    pub(crate) parent_root: &'a Path,
    pub(crate) parent_run_id: &'a str,
    /// The parent's budget state handed down: limits of every ancestor with what was spent
    /// against each before this child started.
    pub(crate) inherited: Vec<crate::budget::InheritedLimits>,
    /// Every secret name the parent knows (its own and its ancestors').
    pub(crate) secrets: Vec<String>,
}

/// What happened to a child run, for the parent's events and the step's result.
pub(crate) struct ChildOutcome {
    pub(crate) result: crate::step_result::StepResult,
    pub(crate) run_id: Option<String>,
    pub(crate) run_root: PathBuf,
    /// Whether the child was resumed (`true`) or found finished (`reused`) rather than started.
    pub(crate) resumed: bool,
    pub(crate) reused: bool,
}

/// Loads a child workflow file on its own (its children included), for a step whose child was
/// not loaded with the parent.
pub(crate) fn load_child(workspace: &Path, rel: &str) -> Result<Arc<LoadedChild>, String> {
    let path = orchestrate_base::fsutil::resolve_in_workspace(workspace, rel)
        .map_err(|e| format!("`workflow: {rel}`: {e}"))?;
    let options = LoadOptions {
        workspace: Some(workspace.to_path_buf()),
        ..LoadOptions::default()
    };
    let loaded = orchestrate_lang::load::load_with_text(&path, &options).map_err(|e| {
        format!(
            "workflow `{rel}` does not load ({} problem(s)); fix it and resume:\n{}",
            e.diagnostics.len(),
            e.render()
        )
    })?;
    Ok(Arc::new(loaded))
}

/// What a finished child spent: every `step_finished` result in its event log (every visit
/// and attempt, its own children's totals included).
pub(crate) fn spend_of_events(
    dir: &RunDir,
) -> (crate::budget::Spend, orchestrate_runtime::parse::Usage) {
    // Counted as a run counts its own steps' results.
    let spent = crate::budget::SharedSpend::default();
    for record in crate::events::read(&dir.events()).unwrap_or_default() {
        if let Event::StepFinished(finished) = Event::from_record(&record) {
            spent.count(&finished.result);
        }
    }
    (spent.get(), spent.usage())
}
