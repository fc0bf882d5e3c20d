//! Control flow over one step list: sequence, `on` gotos and `_end`, bounded visits (loop
//! detection), `${feedback}` along rejection and `invalid` edges, and `converge:` stalls.
//!
//! Does not run a step (`execute`) nor replay one (`replay`).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::result::rejection_reason;
use super::{Failure, Flow, LoopFrame, RunError, Runner};
use crate::event::{self, Event};
use crate::step_result::StepResult;
use orchestrate_lang::model::{Step, Target};

/// What `converge:` says after a visit.
enum Converged {
    Going,
    /// The loop stopped: go to `on_stall`, or (`None`) fail the run.
    Stalled(Option<String>),
}

/// The steps between the previous visit of `name` and now: the cycle a loop went round.
fn loop_cycle(trail: &[&str], name: &str) -> String {
    let last = trail.len().saturating_sub(1);
    let start = trail[..last].iter().rposition(|s| *s == name).unwrap_or(0);
    trail[start..].join(" -> ")
}

/// The `on` edge a step's outcome takes, if it has one: `success`, `failure` (`invalid` first for
/// an output that failed its schema), `rejected` (then `failure`), each falling back to `always`.
/// The live run and the replay of a resume both route through it.
pub(super) fn edge<'a>(
    step: &'a Step,
    flow: Flow,
    result: Option<&StepResult>,
) -> Option<&'a Target> {
    let on = &step.on;
    let invalid = result.is_some_and(|r| r.violations.is_some());
    match flow {
        Flow::Succeeded => on.success.as_ref(),
        Flow::Failed if invalid && on.invalid.is_some() => on.invalid.as_ref(),
        Flow::Failed => on.failure.as_ref(),
        Flow::Rejected => on.rejected.as_ref().or(on.failure.as_ref()),
        Flow::End | Flow::Skipped => return None,
    }
    .or(on.always.as_ref())
}

impl Runner {
    /// Runs one list of steps (the workflow's, or a `for_each` body) from its first step.
    pub(super) fn run_list<'a>(
        &'a mut self,
        steps: &'a [Step],
        loops: &'a [LoopFrame],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Flow, RunError>> + Send + 'a>>
    {
        Box::pin(async move {
            let index_of: HashMap<&str, usize> = steps
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.as_str(), i))
                .collect();
            let mut visits: HashMap<&str, u32> = HashMap::new();
            let mut converging: HashMap<&str, crate::converge::Track> = HashMap::new();
            let mut trail: Vec<&str> = Vec::new();
            let mut failed = false;
            let mut i = 0;
            while i < steps.len() {
                if self.config.cancel.is_cancelled() {
                    return Ok(Flow::Failed);
                }
                let step = &steps[i];
                let count = visits.entry(step.name.as_str()).or_default();
                *count += 1;
                let count = *count;
                trail.push(step.name.as_str());
                if self.loop_detected(step, count, &trail)? {
                    return Ok(Flow::Failed);
                }
                if self.over_budget_before(step)? {
                    return Ok(Flow::Failed);
                }
                let flow = self.run_step(step, loops).await?;
                if self.config.cancel.is_cancelled() || self.budget.is_crossed() {
                    // A crossing is not the step's failure to route: no `on` edge is taken.
                    return Ok(Flow::Failed);
                }
                if let Some(converge) = &step.converge
                    && matches!(flow, Flow::Succeeded | Flow::Rejected)
                {
                    let track = converging.entry(step.name.as_str()).or_default();
                    match self.converge_check(step, converge, track, loops)? {
                        Converged::Going => {}
                        Converged::Stalled(Some(target)) => {
                            // A new start: the step it leads back to is judged afresh.
                            converging.remove(step.name.as_str());
                            self.event(goto(step, target.clone()), false)?;
                            i = index_of
                                .get(target.as_str())
                                .copied()
                                .unwrap_or(steps.len());
                            continue;
                        }
                        Converged::Stalled(None) => return Ok(Flow::Failed),
                    }
                }
                let target = match flow {
                    Flow::End => return Ok(Flow::End),
                    Flow::Skipped => {
                        i += 1;
                        continue;
                    }
                    flow => edge(step, flow, self.results.get(&step.name)),
                };
                self.carry_feedback(step, flow, target);
                match target {
                    Some(Target::End) => {
                        self.event(goto(step, "_end".to_string()), false)?;
                        return Ok(Flow::End);
                    }
                    Some(Target::Step(name)) => {
                        self.event(goto(step, name.clone()), false)?;
                        // The loader checked that every target is in this list.
                        i = index_of.get(name.as_str()).copied().unwrap_or(steps.len());
                    }
                    None if flow == Flow::Succeeded => i += 1,
                    None if flow == Flow::Rejected => {
                        self.failure = Some(self.unrouted_rejection(step));
                        return Ok(Flow::Failed);
                    }
                    None => {
                        if self.workflow.strict_flow {
                            return Ok(Flow::Failed);
                        }
                        failed = true;
                        i += 1;
                    }
                }
            }
            Ok(if failed {
                Flow::Failed
            } else {
                Flow::Succeeded
            })
        })
    }

    /// Whether `step`, entered for the `count`th time, went past its `max_visits`: then the
    /// run fails, naming the cycle it went round (`trail`: the steps entered so far).
    fn loop_detected(&mut self, step: &Step, count: u32, trail: &[&str]) -> Result<bool, RunError> {
        let limit = step.max_visits.unwrap_or(self.workflow.max_visits);
        if count <= limit {
            return Ok(false);
        }
        let cycle = loop_cycle(trail, &step.name);
        let message = format!(
            "loop detected: step `{}` (line {}) was entered {} times, more than max_visits {limit}; cycle: {cycle}",
            step.name, step.line, count
        );
        self.progress(&format!("✗ {message}"));
        self.event(
            Event::LoopDetected(event::LoopDetected {
                step: step.name.clone(),
                visits: count,
                max_visits: limit,
                cycle,
            }),
            true,
        )?;
        self.failure = Some(Failure {
            exit_code: 1,
            message,
            step_exit_code: None,
        });
        Ok(true)
    }

    /// What a failure with schema violations or a rejection said travels along its edge to
    /// the step it leads to: `${feedback}`.
    fn carry_feedback(&mut self, step: &Step, flow: Flow, target: Option<&Target>) {
        if flow == Flow::Failed
            && step.on.invalid.is_some()
            && let Some(result) = self.results.get(&step.name)
            && let Some(violations) = &result.violations
        {
            // The violations travel to the repair step: `${feedback}`.
            let reason = result.error_text().unwrap_or_default();
            let to = match target {
                Some(Target::Step(name)) => name.clone(),
                _ => String::new(),
            };
            self.feedback =
                json!({"reason": reason, "from": step.name, "to": to, "violations": violations});
        }
        if flow == Flow::Rejected {
            // What the rejection said travels to the step it leads to: `${feedback}`.
            let reason = self
                .results
                .get(&step.name)
                .map(rejection_reason)
                .unwrap_or_default();
            let to = match target {
                Some(Target::Step(name)) => name.clone(),
                _ => String::new(),
            };
            self.feedback = json!({"reason": reason, "from": step.name, "to": to});
        }
    }

    /// The failure of a rejected step with nowhere to go.
    fn unrouted_rejection(&self, step: &Step) -> Failure {
        Failure {
            exit_code: 1,
            message: format!(
                "step `{}` (line {}) was rejected and has no `on.rejected` edge: {}",
                step.name,
                step.line,
                self.feedback["reason"].as_str().unwrap_or("")
            ),
            step_exit_code: None,
        }
    }

    /// Evaluates `converge.findings` on this visit of `step` and stops the loop when the findings
    /// stopped shrinking or came back unchanged: to `on_stall`, or failing the run.
    fn converge_check(
        &mut self,
        step: &Step,
        converge: &orchestrate_lang::model::Converge,
        track: &mut crate::converge::Track,
        loops: &[LoopFrame],
    ) -> Result<Converged, RunError> {
        use crate::converge::Stall;
        // jq reads the result as templates do.
        let result = self
            .results
            .get(&step.name)
            .map(StepResult::to_value)
            .unwrap_or(Value::Null);
        let findings = match &converge.findings {
            orchestrate_lang::model::Findings::Jq(expr) => {
                orchestrate_lang::jq::eval(expr, &result)
                    .map(|mut values| match values.len() {
                        0 => Value::Null,
                        1 => values.remove(0),
                        _ => Value::Array(values),
                    })
                    .map_err(|e| e.to_string())
            }
            orchestrate_lang::model::Findings::Pointer(t) => t
                .render_value(&self.scope(loops))
                .map_err(|e| e.to_string()),
        };
        let file = self.workflow.path.display().to_string();
        let at = format!("step `{}` ({file} line {})", step.name, step.line);
        let stall = match findings.and_then(|f| track.visit(&f, converge.rounds)) {
            Ok(None) => return Ok(Converged::Going),
            Ok(Some(stall)) => stall,
            Err(err) => {
                let message = format!(
                    "{at}: `converge.findings` could not be counted: {err}; make it yield an array or a number"
                );
                self.progress(&format!("✗ {message}"));
                self.failure = Some(Failure {
                    exit_code: 2,
                    message,
                    step_exit_code: None,
                });
                return Ok(Converged::Stalled(None));
            }
        };
        let rounds = converge.rounds;
        let (reason, what) = match &stall {
            Stall::NotShrinking { counts } => (
                "not_shrinking",
                format!(
                    "{at} found {} findings in its last {} rounds: no fewer than {} for {rounds} round{} in a row (`converge.rounds: {rounds}`)",
                    counts
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    counts.len(),
                    counts[0],
                    if rounds == 1 { "" } else { "s" }
                ),
            ),
            Stall::Repeated {
                first,
                round,
                count,
            } => (
                "repeated",
                format!(
                    "{at} returned the same {count} finding{} in round {round} as in round {first}",
                    if *count == 1 { "" } else { "s" }
                ),
            ),
        };
        self.event(
            Event::LoopNotConverging(event::LoopNotConverging {
                step: step.name.clone(),
                reason: reason.to_string(),
                rounds,
                counts: track.counts.clone(),
                fingerprints: track.fingerprints.clone(),
                on_stall: converge.on_stall.clone(),
            }),
            true,
        )?;
        match &converge.on_stall {
            Some(target) => {
                self.progress(&format!(
                    "↪ not converging: {what}; going to `{target}` (converge.on_stall)"
                ));
                Ok(Converged::Stalled(Some(target.clone())))
            }
            None => {
                let message = format!(
                    "not converging: {what}; fix what keeps the findings coming, raise `converge.rounds`, or set `converge.on_stall` to a step that asks a person"
                );
                self.progress(&format!("✗ {message}"));
                self.failure = Some(Failure {
                    exit_code: 1,
                    message,
                    step_exit_code: None,
                });
                Ok(Converged::Stalled(None))
            }
        }
    }
}

/// An `on` edge taken from `step` to `to` (a step, or `_end`).
fn goto(step: &Step, to: String) -> Event {
    Event::Goto(event::Goto {
        from: step.name.clone(),
        to,
    })
}
