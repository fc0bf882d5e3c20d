//! `orchestrate gc`: removes the worktrees and branches that finished tasks and runs no longer
//! need, one line per worktree on stdout, then the counts.
//!
//! Does not decide what goes (`orchestrate_engine::worktree::gc` does); it prints what that did.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use orchestrate_engine::worktree::{self, GcOptions};

use crate::error::{Error, Outcome};

pub(crate) fn gc(workspace: &Path, dry_run: bool, older_than: Duration, force: bool) -> Outcome {
    let options = GcOptions {
        dry_run,
        older_than,
        force,
    };
    let run_status = |run_id: &str| {
        orchestrate_observe::observe::status(workspace, Some(run_id))
            .ok()
            .and_then(|view| view.status)
    };
    let report = worktree::gc(workspace, &options, &run_status, &mut |line| {
        println!("{}", line.text);
    })
    .map_err(|err| Error::failed(err.to_string()))?;
    if let Some(err) = report.prune_error {
        // Shown before the counts; gc's outcome is the error below.
        crate::error::render(Err(Error::Failed(err)));
    }
    let what = if dry_run {
        "would be removed"
    } else {
        "removed"
    };
    println!(
        "{} worktree(s) {what}, {} kept",
        report.removed, report.kept
    );
    if report.failed > 0 {
        return Err(Error::failed(format!(
            "{} worktree(s) could not be removed (see above)",
            report.failed
        )));
    }
    Ok(ExitCode::SUCCESS)
}
