//! `wait_for` steps: polling a glob in the workspace until enough files match, the timeout
//! passes or the run is cancelled.
//!
//! Does not watch the filesystem for events (polling is the spec's).

use std::time::{Duration, Instant};

use crate::step_result::StepResult;

use super::{LoopFrame, Runner};
use orchestrate_base::fsutil;
use orchestrate_lang::model::Step;
use orchestrate_lang::template::Template;

impl Runner {
    pub(super) async fn wait_for(
        &mut self,
        step: &Step,
        glob: &Template,
        timeout: Duration,
        poll: Duration,
        min_count: usize,
        loops: &[LoopFrame],
    ) -> StepResult {
        let pattern = match glob.render(&self.scope(loops)) {
            Ok(p) => p,
            Err(err) => return StepResult::failed(2, err.to_string()),
        };
        if let Err(err) = fsutil::resolve_in_workspace(self.config.code_dir(), &pattern) {
            return StepResult::failed(2, format!("`wait_for.glob`: {err}"));
        }
        let full = self.config.code_dir().join(&pattern);
        let full = full.to_string_lossy().into_owned();
        let started = Instant::now();
        let mut polls: u64 = 0;
        self.progress(&format!(
            "… {} waiting for {min_count} file(s) matching {pattern}",
            step.name
        ));
        loop {
            polls += 1;
            let files = match glob::glob(&full) {
                Ok(paths) => paths
                    .filter_map(Result::ok)
                    .filter_map(|p| {
                        p.strip_prefix(self.config.code_dir())
                            .ok()
                            .map(|r| r.display().to_string())
                    })
                    .collect::<Vec<_>>(),
                Err(err) => {
                    return StepResult::failed(2, format!("invalid glob `{pattern}`: {err}"));
                }
            };
            let waited = started.elapsed();
            self.notify(crate::progress::Progress::WaitPoll {
                step: step.name.clone(),
                polls,
                found: files.len(),
                wanted: min_count,
            });
            if files.len() >= min_count {
                return StepResult {
                    files: Some(files),
                    wait_duration: Some(waited.as_secs_f64()),
                    poll_count: Some(polls),
                    ..StepResult::succeeded()
                };
            }
            if waited >= timeout {
                let mut result = StepResult::failed(
                    124,
                    format!(
                        "timed out after {:.1}s waiting for {min_count} file(s) matching `{pattern}` (found {})",
                        timeout.as_secs_f64(),
                        files.len()
                    ),
                );
                result.files = Some(files);
                result.wait_duration = Some(waited.as_secs_f64());
                result.poll_count = Some(polls);
                return result;
            }
            let nap = poll.min(timeout.saturating_sub(waited));
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = self.config.cancel.cancelled() => {
                    let mut result = StepResult::interrupted("interrupted while waiting");
                    result.poll_count = Some(polls);
                    return result;
                }
            }
        }
    }
}
