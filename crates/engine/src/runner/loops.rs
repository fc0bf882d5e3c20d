//! The sequential `for_each`: items from a list or a step's result, one body run per item,
//! stopping at the first failure.
//!
//! Does not run items at once (`fanout`).

use serde_json::Value;

use super::fanout;
use super::{Flow, LoopFrame, RunError, Runner};
use crate::event::{self, Event};
use crate::step_result::{ItemStatus, StepResult};
use orchestrate_lang::model::{Items, Pointer, Step};
use orchestrate_lang::template::{self};

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Runner {
    pub(super) async fn for_each(
        &mut self,
        step: &Step,
        items: &Items,
        var: &str,
        body: &[Step],
        loops: &[LoopFrame],
    ) -> Result<(Flow, StepResult), RunError> {
        let values = match items {
            Items::Literal(values) => Ok(values.clone()),
            Items::From(pointer) => self.resolve_pointer(pointer),
        };
        let values = match values {
            Ok(values) => values,
            Err(message) => return Ok((Flow::Failed, StepResult::failed(2, message))),
        };
        let total = values.len();
        self.event(
            Event::LoopStarted(event::LoopStarted {
                step: step.name.clone(),
                total: total as u64,
                max_parallel: None,
                join: None,
            }),
            false,
        )?;
        let mut completed = 0;
        let mut outcomes = Vec::with_capacity(total);
        for (index, item) in values.iter().enumerate() {
            let mut frames = loops.to_vec();
            frames.push(LoopFrame {
                var: var.to_string(),
                item: item.clone(),
                index,
                total,
            });
            self.event(
                Event::IterationStarted(event::Unit {
                    step: step.name.clone(),
                    index: index as u64,
                    total: total as u64,
                }),
                false,
            )?;
            self.last_recorded = None;
            let flow = self.run_list(body, &frames).await?;
            let status = match flow {
                Flow::End => return Ok((Flow::End, StepResult::default())),
                Flow::Succeeded | Flow::Skipped => ItemStatus::Succeeded,
                Flow::Failed | Flow::Rejected if self.config.cancel.is_cancelled() => {
                    ItemStatus::Cancelled
                }
                Flow::Failed | Flow::Rejected => ItemStatus::Failed,
            };
            outcomes.push(self.outcome(status, Some((index, item.clone()))));
            if status != ItemStatus::Succeeded {
                outcomes.extend(
                    values
                        .iter()
                        .enumerate()
                        .skip(index + 1)
                        .map(|(later, item)| fanout::not_started(later, item)),
                );
                let message = match &self.failure {
                    Some(f) => format!("iteration {index} failed: {}", f.message),
                    None => format!("iteration {index} failed"),
                };
                let code = self.failure.as_ref().map(|f| f.exit_code).unwrap_or(1);
                let mut result = StepResult::failed(code, message);
                result.iterations = Some(completed as u64);
                result.total = Some(total as u64);
                fanout::tally(&mut result, outcomes);
                return Ok((Flow::Failed, result));
            }
            completed += 1;
        }
        let mut result = StepResult {
            iterations: Some(completed as u64),
            total: Some(total as u64),
            ..StepResult::succeeded()
        };
        fanout::tally(&mut result, outcomes);
        Ok((Flow::Succeeded, result))
    }

    pub(super) fn resolve_pointer(&self, pointer: &Pointer) -> Result<Vec<Value>, String> {
        let Some(result) = self.results.get(&pointer.step) else {
            return Err(format!(
                "`items_from: {}`: step `{}` has not run yet",
                pointer.text, pointer.step
            ));
        };
        // The path walks the result as templates see it.
        match template::walk(&result.to_value(), &pointer.path) {
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(other) => Err(format!(
                "`items_from: {}` must resolve to an array, found {}",
                pointer.text,
                json_kind(other)
            )),
            None => Err(format!(
                "`items_from: {}` does not exist in the step's result",
                pointer.text
            )),
        }
    }
}
