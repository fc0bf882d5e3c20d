//! One step's execution: its `when`, the role's capabilities, the dispatch by step kind, and
//! what is judged on the result afterwards (`output_schema`, `rejected_when`, the progress line
//! and the run's failure message).
//!
//! Does not choose the next step (`flow`) nor run processes (`step`).

use std::time::Instant;

use super::record::iteration_of;
use super::result::{rejection_reason, with_timing};
use super::{Failure, Flow, LoopFrame, RunError, Runner};
use crate::event::{self, Event};
use crate::step_result::{ClassifiedError, StepError, StepResult, StepStatus, Violation};
use orchestrate_lang::model::{Step, StepKind};
use orchestrate_runtime::parse::ErrorKind;

/// Fails a succeeded result whose JSON does not match the step's `output_schema`, listing the
/// first violations (`violations`: `{path, message}`; routed by `on.invalid`).
fn check_schema(
    step: &Step,
    schema: &orchestrate_lang::model::OutputSchema,
    result: &mut StepResult,
) {
    let json = result.json.clone().unwrap_or_default();
    let violations: Vec<Violation> = schema
        .violations(&json, 20)
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    if violations.is_empty() {
        return;
    }
    let first: Vec<String> = violations
        .iter()
        .take(3)
        .map(|v| format!("{}: {}", v.path, v.message))
        .collect();
    let more = violations.len().saturating_sub(first.len());
    let message = format!(
        "the output does not match its output_schema ({}): {}{}",
        schema.origin,
        first.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    );
    result.status = StepStatus::Failed;
    result.exit_code = Some(2);
    result.error = Some(if matches!(step.kind, StepKind::Agent(_)) {
        StepError::Classified(ClassifiedError::new(ErrorKind::SchemaViolation, message))
    } else {
        StepError::Message(message)
    });
    result.violations = Some(violations);
}

impl Runner {
    /// Why the role may not run `step`, if it may not (see [`RunConfig::capabilities`]).
    fn refused(&self, step: &Step) -> Option<String> {
        let (role, allowed) = self.config.capabilities.as_ref()?;
        let needed = step.kind.capability()?;
        (!allowed.iter().any(|c| c == needed)).then(|| {
            format!(
                "role `{role}` may not run this step: it needs capability `{needed}` and the role has [{}]; add it to the role's `capabilities` or give the step to another role",
                allowed.join(", ")
            )
        })
    }

    /// Runs one step (execution `exec`) and records its result.
    pub(super) async fn execute(
        &mut self,
        step: &Step,
        exec: u64,
        loops: &[LoopFrame],
    ) -> Result<Flow, RunError> {
        self.state.current_step = Some(step.name.clone());
        self.last_step = Some(step.name.clone());
        let iteration: Vec<usize> = loops.iter().map(|l| l.index).collect();
        let started = Instant::now();
        let started_at = orchestrate_base::clock::now_rfc3339();

        let when = match &step.when {
            None => Ok(true),
            Some(condition) => self.condition(condition, loops),
        };
        let when = match (when, self.refused(step)) {
            (Ok(true), Some(refusal)) => Err(refusal),
            (when, _) => when,
        };
        let result = match when {
            Ok(false) => {
                let result = StepResult {
                    started_at: Some(started_at),
                    duration: Some(0.0),
                    ..StepResult::new(StepStatus::Skipped)
                };
                self.progress(&format!("- {} skipped (condition false)", step.name));
                self.record(step, exec, &iteration, result)?;
                return Ok(Flow::Skipped);
            }
            Err(message) => StepResult::failed(2, message),
            Ok(true) => {
                self.event(
                    Event::StepStarted(event::StepStarted {
                        step: step.name.clone(),
                        exec,
                        kind: step.kind.label().to_string(),
                        iteration: iteration_of(&iteration),
                    }),
                    false,
                )?;
                match self.run_kind(step, exec, loops).await? {
                    Some(result) => result,
                    None => {
                        let result = StepResult {
                            ended_run: Some(true),
                            ..StepResult::succeeded()
                        };
                        self.record(
                            step,
                            exec,
                            &iteration,
                            with_timing(result, &started_at, started),
                        )?;
                        return Ok(Flow::End);
                    }
                }
            }
        };
        let mut result = with_timing(result, &started_at, started);
        self.judge(step, &mut result);
        self.conclude(step, exec, &iteration, result)
    }

    /// Runs the step by its kind; `None` when a loop's body took `goto: _end`.
    async fn run_kind(
        &mut self,
        step: &Step,
        exec: u64,
        loops: &[LoopFrame],
    ) -> Result<Option<StepResult>, RunError> {
        Ok(Some(match &step.kind {
            StepKind::ForEach {
                items,
                var,
                steps,
                fan,
            } if fan.fans_out() => {
                self.fan_out_items(step, exec, items, var, steps, fan, loops)
                    .await?
            }
            StepKind::Parallel { branches, fan } => {
                self.fan_out_branches(step, exec, branches, fan, loops)
                    .await?
            }
            StepKind::ForEach {
                items, var, steps, ..
            } => match self.for_each(step, items, var, steps, loops).await? {
                (Flow::End, _) => return Ok(None),
                (flow, result) => {
                    let _ = flow;
                    result
                }
            },
            StepKind::WaitFor {
                glob,
                timeout,
                poll,
                min_count,
            } => {
                self.wait_for(step, glob, *timeout, *poll, *min_count, loops)
                    .await
            }
            StepKind::Command { .. } | StepKind::Provider { .. } | StepKind::Agent(_) => {
                self.process_step(step, exec, loops).await
            }
            StepKind::Approval {
                message,
                artifacts,
                timeout,
            } => {
                self.approval(step, exec, message, artifacts, *timeout, loops)
                    .await
            }
            StepKind::Enqueue {
                role,
                content,
                name,
            } => self.enqueue(step, role, content, name.as_ref(), loops),
            StepKind::Workflow(sub) => self.sub_workflow(step, exec, sub, loops).await?,
        }))
    }

    /// What is judged on a finished step's result: a limit crossed in its body, its
    /// `output_schema`, its `rejected_when`.
    fn judge(&self, step: &Step, result: &mut StepResult) {
        if result.status == StepStatus::Failed
            && result.budget_exceeded.is_none()
            && let Some(limit) = self.budget.crossed()
        {
            // A crossing in its body (a loop's item): stopped, not finished; resume reruns it.
            result.budget_exceeded = Some(limit.to_string());
        }
        if result.status == StepStatus::Succeeded
            && let Some(schema) = &step.output_schema
        {
            check_schema(step, schema, result);
        }
        if result.status == StepStatus::Succeeded
            && let Some(expr) = &step.rejected_when
        {
            // jq reads the result as templates do.
            match orchestrate_lang::jq::eval_bool(expr, &result.to_value()) {
                Ok(true) => {
                    result.status = StepStatus::Rejected;
                    result.rejected_by = Some("rejected_when".into());
                }
                Ok(false) => {}
                Err(err) => {
                    result.status = StepStatus::Failed;
                    result.exit_code = Some(2);
                    result.error = Some(StepError::Message(format!("in `rejected_when`: {err}")));
                }
            }
        }
    }

    /// Shows and records a judged result; a failure becomes the run's to report.
    fn conclude(
        &mut self,
        step: &Step,
        exec: u64,
        iteration: &[usize],
        result: StepResult,
    ) -> Result<Flow, RunError> {
        if result.status == StepStatus::Rejected {
            self.progress(&format!(
                "↩ {} rejected: {}",
                step.name,
                rejection_reason(&result)
            ));
            self.record(step, exec, iteration, result)?;
            return Ok(Flow::Rejected);
        }
        let ok = result.status == StepStatus::Succeeded;
        let mark = if ok { "✓" } else { "✗" };
        let mut line = format!(
            "{mark} {} ({:.2}s{})",
            step.name,
            result.duration.unwrap_or(0.0),
            crate::progress::spend_suffix(&result)
        );
        if !ok && let Some(err) = result.error_text() {
            line.push_str(&format!(": {err}"));
        }
        if !self.replaying() {
            self.progress(&line);
        }
        if !ok && !self.config.cancel.is_cancelled() {
            let exit_code = result.exit_code.unwrap_or(1);
            let detail = result
                .error_text()
                .unwrap_or_else(|| format!("exit code {exit_code}"));
            let message = match self.budget.failure.take() {
                Some(budget) => Some(budget),
                // A crossing inside this step's body already said what stopped the run.
                None if self.budget.is_crossed() && self.failure.is_some() => None,
                None => Some(self.step_failed(step, &detail, &result)),
            };
            if let Some(message) = message {
                self.failure = Some(Failure {
                    exit_code,
                    message,
                    step_exit_code: Some(exit_code),
                });
            }
        }
        self.record(step, exec, iteration, result)?;
        Ok(if ok { Flow::Succeeded } else { Flow::Failed })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;
    use tokio_util::sync::CancellationToken;

    use crate::runner::{RunConfig, Runner};
    use crate::state::RunStatus;

    /// The loader refuses a role's workflow with a step the role may not run; the runner
    /// refuses it again when the step is reached (a workflow changed after loading, a caller
    /// that skipped the loader).
    #[tokio::test]
    async fn a_step_the_role_may_not_run_is_refused_when_reached() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().canonicalize().unwrap();
        let file = ws.join("wf.yaml");
        std::fs::write(
            &file,
            "name: coord\nsteps:\n  - name: Hand\n    enqueue: {role: dev, text: go}\n  - name: Build\n    command: [touch, built]\n",
        )
        .unwrap();
        let workflow = orchestrate_lang::load::load_file(&file).unwrap();
        let mut config = RunConfig::new(ws.clone(), Map::new(), CancellationToken::new());
        config.capabilities = Some(("coord".into(), vec!["enqueue".into()]));
        let runner = Runner::create(workflow, "", config).unwrap();
        let report = runner.run().await.unwrap();
        assert_eq!(report.status, RunStatus::Failed);
        let error = report.error.unwrap();
        assert!(
            error.contains("role `coord` may not run this step: it needs capability `command`"),
            "{error}"
        );
        // The allowed step ran; the refused one never started a process.
        let queued: Vec<_> = std::fs::read_dir(ws.join("inbox/dev")).unwrap().collect();
        assert_eq!(queued.len(), 1);
        assert!(!ws.join("built").exists());
    }
}
