//! `orchestrate approve` and `orchestrate reject`: a person's decision on a waiting approval
//! step.
//!
//! Does not record the decision itself (`orchestrate_engine::approval` does).

use std::path::Path;
use std::process::ExitCode;

use crate::error::{Error, Outcome};

/// Records the verdict on step `step` of run `run_id`, and says where.
pub(crate) fn decide(
    workspace: &Path,
    run_id: &str,
    step: &str,
    verdict: orchestrate_engine::approval::Verdict,
    reason: Option<String>,
    note: Option<String>,
    by: Option<String>,
) -> Outcome {
    match orchestrate_engine::approval::decide(workspace, run_id, step, verdict, reason, note, by) {
        Ok(path) => {
            let word = if verdict == orchestrate_engine::approval::Verdict::Approve {
                "approved"
            } else {
                "rejected"
            };
            eprintln!(
                "{word} step `{step}` of run {run_id} ({})",
                path.strip_prefix(workspace).unwrap_or(&path).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(message) => Err(Error::invalid(message)),
    }
}
