//! `enqueue` steps: rendering a task and writing it durably into a role's inbox.
//!
//! Does not own the queue (`orchestrate_queue::queue`).

use super::scope::render_json;
use super::{LoopFrame, Runner};
use crate::event::{self, Event};
use crate::events::{self};
use crate::step_result::StepResult;
use orchestrate_base::fsutil;
use orchestrate_lang::model::Step;
use orchestrate_lang::template::Template;

impl Runner {
    /// An `enqueue` step: writes a task into a role's inbox durably, carrying the correlation id.
    pub(super) fn enqueue(
        &mut self,
        step: &Step,
        role: &Template,
        content: &orchestrate_lang::model::EnqueueContent,
        name: Option<&Template>,
        loops: &[LoopFrame],
    ) -> StepResult {
        use orchestrate_lang::model::EnqueueContent;
        let scope = self.scope(loops);
        let rendered = (|| -> Result<(String, Vec<u8>, Option<String>), String> {
            let role = role
                .render(&scope)
                .map_err(|e| format!("in `enqueue.role`: {e}"))?;
            let bytes = match content {
                EnqueueContent::Text(t) => t
                    .render(&scope)
                    .map_err(|e| format!("in `enqueue.text`: {e}"))?
                    .into_bytes(),
                EnqueueContent::File(t) => {
                    let rel = t
                        .render(&scope)
                        .map_err(|e| format!("in `enqueue.file`: {e}"))?;
                    let path = fsutil::resolve_in_workspace(self.config.code_dir(), &rel)
                        .map_err(|e| format!("`enqueue.file`: {e}"))?;
                    std::fs::read(&path)
                        .map_err(|e| format!("cannot read `enqueue.file` {rel}: {e}"))?
                }
                EnqueueContent::Json(value) => {
                    let rendered = render_json(value, &scope)
                        .map_err(|e| format!("in `enqueue.json`: {e}"))?;
                    serde_json::to_vec_pretty(&rendered).unwrap_or_default()
                }
            };
            let name = match name {
                Some(t) => Some(
                    t.render(&scope)
                        .map_err(|e| format!("in `enqueue.name`: {e}"))?,
                ),
                None => None,
            };
            Ok((role, bytes, name))
        })();
        let (role, bytes, name) = match rendered {
            Ok(parts) => parts,
            Err(message) => return StepResult::failed(2, message),
        };
        // A task outlives the run in inbox/ and processed/: no secret value goes into one, even
        // through a file a step wrote.
        let bytes = events::mask_bytes(&bytes, &self.secret_values);
        let layout = match crate::role::layout_for(&self.config.workspace, &role) {
            Ok(layout) => layout,
            Err(message) => return StepResult::failed(2, message),
        };
        let correlation = self
            .config
            .correlation_id
            .clone()
            .unwrap_or_else(|| self.state.run_id.clone());
        let source = format!("run {} step {}", self.state.run_id, step.name);
        let enqueued = match &self.config.enqueuer {
            Some(enqueuer) => enqueuer(
                &layout,
                name.as_deref(),
                &bytes,
                Some(&correlation),
                &source,
            ),
            None => orchestrate_queue::queue::enqueue(
                &layout,
                name.as_deref(),
                &bytes,
                Some(&correlation),
                &source,
            ),
        };
        match enqueued {
            Ok(task) => {
                // Written (unless it went into a database): a readonly sibling running now must
                // not count it as its change.
                if self.config.enqueuer.is_none() || task.spooled.is_some() {
                    drop(self.engine_writes.begin(
                        self.config.code_dir(),
                        &self.config.workspace.join(&task.file),
                    ));
                }
                self.progress(&format!(
                    "→ {} handed task {} to {}",
                    step.name, task.id, task.role
                ));
                let result = StepResult {
                    task: Some(task.clone()),
                    ..StepResult::succeeded()
                };
                let _ = self.event(
                    Event::Enqueued(event::Enqueued {
                        step: step.name.clone(),
                        task: task.clone(),
                    }),
                    false,
                );
                self.enqueued.push(task);
                result
            }
            Err(err) => {
                StepResult::failed(1, format!("failed to enqueue for role `{role}`: {err}"))
            }
        }
    }
}
