//! `approval` steps: writing the request (kept across a resume), then waiting for the decision
//! file, its timeout or the run's cancellation.
//!
//! Does not define the request and decision files (`crate::approval`).

use std::time::{Duration, Instant};

use crate::step_result::{StepResult, StepStatus};

use super::{LoopFrame, Runner};
use crate::approval::{self, Verdict};
use crate::event::{self, Event};
use orchestrate_lang::model::Step;
use orchestrate_lang::template::Template;

impl Runner {
    /// An `approval` step: writes the request, then waits for a decision file.
    pub(super) async fn approval(
        &mut self,
        step: &Step,
        exec: u64,
        message: &Template,
        artifacts: &[Template],
        timeout: Option<Duration>,
        loops: &[LoopFrame],
    ) -> StepResult {
        let (message, files) = match self.approval_text(message, artifacts, loops) {
            Ok(parts) => parts,
            Err(message) => return StepResult::failed(2, message),
        };
        let request = self.approval_request(step, exec, &message, &files);
        let request_path =
            approval::request_path(&self.config.workspace, &self.state.run_id, &step.name);
        if let Err(result) = self.write_request(step, exec, &request) {
            return *result;
        }
        let written = std::fs::metadata(&request_path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| std::time::SystemTime::now());
        let requested = event::ApprovalRequested {
            step: step.name.clone(),
            request: self.relative(&request_path),
            message: message.clone(),
            artifacts: files,
        };
        let _ = self.event(Event::ApprovalRequested(requested), true);
        let run_id = &request.run_id;
        self.progress(&format!(
            "⏸ {} waits for approval: {message}\n   orchestrate approve {run_id} {}   |   orchestrate reject {run_id} {} --reason ...",
            step.name, step.name, step.name
        ));
        self.await_decision(step, &request, written, timeout).await
    }

    /// The request's message and artifacts, rendered; the artifacts named where the approver
    /// looks from.
    fn approval_text(
        &self,
        message: &Template,
        artifacts: &[Template],
        loops: &[LoopFrame],
    ) -> Result<(String, Vec<String>), String> {
        let scope = self.scope(loops);
        let message = match message.render(&scope) {
            Ok(m) => m,
            Err(e) => return Err(format!("in `approval.message`: {e}")),
        };
        let mut files = Vec::new();
        for t in artifacts {
            match t.render(&scope) {
                // Named where the approver looks from: the workspace (a worktree's files by
                // their path in it).
                Ok(f) => files.push(match &self.config.checkout {
                    Some(dir) => {
                        orchestrate_base::fsutil::relative(&self.config.workspace, &dir.join(&f))
                    }
                    None => f,
                }),
                Err(e) => return Err(format!("in `approval.artifacts`: {e}")),
            }
        }
        Ok((message, files))
    }

    /// The request of execution `exec` of `step`.
    fn approval_request(
        &self,
        step: &Step,
        exec: u64,
        message: &str,
        files: &[String],
    ) -> approval::Request {
        let ws = &self.config.workspace;
        let run_id = self.state.run_id.clone();
        let decision_path = approval::decision_path(ws, &run_id, &step.name);
        approval::Request {
            format_version: 1,
            // Execution numbers repeat on resume, so a decision given while the engine was down
            // still answers the same request.
            request_id: format!("{run_id}-{}{exec}", crate::state::log_prefix(&self.lane)),
            run_id: run_id.clone(),
            step: step.name.clone(),
            message: message.to_string(),
            artifacts: files.to_vec(),
            requested_at: orchestrate_base::clock::now_rfc3339(),
            how: vec![
                format!("orchestrate approve {run_id} {} [--note TEXT]", step.name),
                format!("orchestrate reject {run_id} {} --reason TEXT", step.name),
                format!(
                    "or write {} atomically: {{\"decision\": \"approve\"}}",
                    self.relative(&decision_path)
                ),
            ],
        }
    }

    /// Writes the request, unless the same one is already there; `Err` is the step's result.
    fn write_request(
        &self,
        step: &Step,
        exec: u64,
        request: &approval::Request,
    ) -> Result<(), Box<StepResult>> {
        let ws = &self.config.workspace;
        let run_id = &request.run_id;
        let request_path = approval::request_path(ws, run_id, &step.name);
        let decision_path = approval::decision_path(ws, run_id, &step.name);
        // The same request already written (a resumed run waiting again): keep it, so that a
        // decision given while the engine was down, with or without a request id, still counts.
        let same_request = std::fs::read(&request_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<approval::Request>(&b).ok())
            .is_some_and(|r| r.request_id == request.request_id);
        if !same_request {
            // A decision left from an earlier visit of this step answers another request: keep
            // it, under another name, and wait for a new one.
            if std::fs::metadata(&decision_path).is_ok() {
                let _ = std::fs::rename(
                    &decision_path,
                    approval::dir(ws, run_id).join(format!("{}.decision.{}.json", step.name, exec)),
                );
            }
            let bytes = serde_json::to_vec_pretty(request).unwrap_or_default();
            if let Err(e) = std::fs::create_dir_all(approval::dir(ws, run_id))
                .and_then(|()| orchestrate_base::fsutil::atomic_write(&request_path, &bytes))
            {
                return Err(Box::new(StepResult::failed(
                    1,
                    format!(
                        "failed to write the approval request {}: {e}",
                        request_path.display()
                    ),
                )));
            }
        }
        Ok(())
    }

    /// Polls for the decision on `request` (written at `written`) until it comes, `timeout`
    /// passes or the run is cancelled.
    async fn await_decision(
        &mut self,
        step: &Step,
        request: &approval::Request,
        written: std::time::SystemTime,
        timeout: Option<Duration>,
    ) -> StepResult {
        let decision_path =
            approval::decision_path(&self.config.workspace, &request.run_id, &step.name);
        let started = Instant::now();
        let mut complained = false;
        loop {
            match approval::read_decision(&decision_path, request, written) {
                Ok(Some(decision)) => {
                    let _ = self.event(
                        Event::ApprovalDecided(event::ApprovalDecided {
                            step: step.name.clone(),
                            decision: decision.clone(),
                        }),
                        true,
                    );
                    let status = if decision.decision == Verdict::Approve {
                        StepStatus::Succeeded
                    } else {
                        StepStatus::Rejected
                    };
                    return StepResult {
                        status,
                        exit_code: Some(0),
                        decision: Some(decision.decision),
                        reason: Some(decision.reason.unwrap_or_default()),
                        note: Some(decision.note.unwrap_or_default()),
                        by: Some(decision.by),
                        at: Some(decision.at),
                        waited: Some(started.elapsed().as_secs_f64()),
                        ..StepResult::default()
                    };
                }
                Ok(None) => {}
                Err(message) => {
                    if !complained {
                        complained = true;
                        let _ = self.event(
                            Event::ApprovalUnreadable(event::ApprovalUnreadable {
                                step: step.name.clone(),
                                error: message.clone(),
                            }),
                            false,
                        );
                        self.warn(&format!("{}: {message}", step.name));
                    }
                }
            }
            if let Some(limit) = timeout
                && started.elapsed() >= limit
            {
                return StepResult::failed(
                    124,
                    format!(
                        "no decision within {:.0}s (approval.timeout_sec)",
                        limit.as_secs_f64()
                    ),
                );
            }
            tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                            _ = self.config.cancel.cancelled() => {
            return StepResult::interrupted("interrupted while waiting for approval");
                            }
                        }
        }
    }
}
