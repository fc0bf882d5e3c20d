//! Budgets between steps: a run over a limit stops before its next step, a crossing during a
//! step stops it, and a cost limit says which models it cannot price.
//!
//! Does not count spending nor define limits (`crate::budget`), nor watch a running step
//! (`watch`).

use super::agent::cli_default_model;
use super::{Failure, RunError, Runner};
use crate::event::{self, Event};
use crate::step_result::{ClassifiedError, StepError, StepResult, StepStatus};
use orchestrate_lang::model::{Step, StepKind};
use orchestrate_runtime::parse::ErrorKind;

/// Every agent step of a step list, `for_each` bodies and `parallel` branches included.
fn agent_steps<'a>(
    steps: &'a [Step],
    out: &mut Vec<(&'a Step, &'a orchestrate_lang::model::AgentStep)>,
) {
    for step in steps {
        match &step.kind {
            StepKind::Agent(agent) => out.push((step, agent)),
            StepKind::ForEach { steps, .. } => agent_steps(steps, out),
            StepKind::Parallel { branches, .. } => {
                for branch in branches {
                    agent_steps(&branch.steps, out);
                }
            }
            _ => {}
        }
    }
}

impl Runner {
    /// Before a step: a run already over a limit fails here, without starting `step`.
    pub(super) fn over_budget_before(&mut self, step: &Step) -> Result<bool, RunError> {
        if self.budget.unlimited() {
            return Ok(false);
        }
        self.warn_unpriced()?;
        let Some(crossing) = self.budget.check(self.budget.spent.get()) else {
            return Ok(false);
        };
        let workspace = self.config.workspace.clone();
        let message = crossing.message(&workspace, Some(&step.name), false);
        self.event(
            Event::BudgetExceeded(crossing.event(&workspace, Some(&step.name), false)),
            true,
        )?;
        self.progress(&format!("✗ {message}"));
        self.failure = Some(Failure {
            exit_code: 1,
            message,
            step_exit_code: None,
        });
        self.budget.cross(crossing.limit);
        Ok(true)
    }

    /// Whether a cost limit (the run's or the swarm's per day) applies.
    fn cost_limited(&self) -> bool {
        let limits = &self.budget.limits;
        limits
            .run
            .as_ref()
            .is_some_and(|b| b.max_cost_usd.is_some())
            || limits
                .day
                .as_ref()
                .is_some_and(|(swarm, _)| swarm.max_cost_usd_per_day.is_some())
    }

    /// At start, under a cost limit: names each agent step whose model has no price (so the
    /// limit could not count its spending) and what to add to runtimes.yaml.
    pub(super) fn warn_unpriceable(&mut self, steps: &[Step]) -> Result<(), RunError> {
        if !self.cost_limited() {
            return Ok(());
        }
        let mut agents = Vec::new();
        agent_steps(steps, &mut agents);
        let mut unpriceable = Vec::new();
        for (step, agent) in agents {
            if let Some((runtime, model)) = self.unpriceable_model(agent) {
                unpriceable.push((step.name.clone(), runtime, model));
            }
        }
        for (step, runtime, model) in unpriceable {
            let message = format!(
                "budget: max_cost_usd cannot count step {step} ({runtime}, model {model}): no price for {model}; add one to runtimes.yaml: `prices: {{{model}: {{input: ..., output: ...}}}}` (USD per million tokens; also cache_read, cache_write)"
            );
            self.warn(&message);
            self.event(
                Event::BudgetUnpriced(event::BudgetUnpriced {
                    step: Some(step),
                    runtime: Some(runtime),
                    model: Some(model),
                    unpriced_tokens: None,
                    message,
                }),
                false,
            )?;
        }
        Ok(())
    }

    /// The runtime and model of an agent step whose spending will have no price, as far as can
    /// be told before it runs (claude prices its own runs; gemini left on `auto` routes to
    /// models of the built-in table; a model the engine cannot render yet is not judged).
    fn unpriceable_model(
        &self,
        agent: &orchestrate_lang::model::AgentStep,
    ) -> Option<(String, String)> {
        use orchestrate_runtime::parse::Runtime;
        let profiles = &self.config.profiles;
        let name = self.runtime_name(agent)?;
        let profile = profiles.resolve(&name);
        let runtime = Runtime::from_name(&profile.runtime)?;
        if runtime == Runtime::Claude {
            return None;
        }
        let model = match &agent.model {
            Some(t) => t.render(&self.scope(&[])).ok()?,
            None => match self
                .config
                .default_model
                .clone()
                .or_else(|| profile.model.clone())
            {
                Some(model) => model,
                None => cli_default_model(runtime, &profile, &[])?.model,
            },
        };
        profiles
            .prices
            .lookup(&model)
            .is_none()
            .then(|| (runtime.name().to_string(), model))
    }

    /// Says once that a cost limit cannot count some tokens (their model has no price).
    fn warn_unpriced(&mut self) -> Result<(), RunError> {
        if !self.cost_limited()
            || self.budget.spent.get().unpriced_tokens == 0
            || self.budget.warned_unpriced
        {
            return Ok(());
        }
        self.budget.warned_unpriced = true;
        let message = format!(
            "budget: {} tokens have no known price, so the cost limit cannot count them (token limits still apply); add a price for their model under `prices:` in runtimes.yaml",
            self.budget.spent.get().unpriced_tokens
        );
        self.warn(&message);
        self.event(
            Event::BudgetUnpriced(event::BudgetUnpriced {
                unpriced_tokens: Some(self.budget.spent.get().unpriced_tokens),
                message,
                ..event::BudgetUnpriced::default()
            }),
            false,
        )
    }

    /// A step stopped by a crossing: its result says why, the event records the figures, and
    /// the run's failure message is the crossing's.
    pub(super) fn budget_stopped(
        &mut self,
        step: &Step,
        crossing: &crate::budget::Crossing,
        result: &mut StepResult,
    ) {
        let workspace = self.config.workspace.clone();
        let message = crossing.message(&workspace, Some(&step.name), true);
        let _ = self.event(
            Event::BudgetExceeded(crossing.event(&workspace, Some(&step.name), true)),
            true,
        );
        result.status = StepStatus::Failed;
        result.exit_code = Some(1);
        result.budget_exceeded = Some(crossing.limit.to_string());
        // An agent's error keeps its shape: classified.
        result.error = Some(match &result.error {
            Some(StepError::Classified(_)) => {
                StepError::Classified(ClassifiedError::new(ErrorKind::Budget, message.clone()))
            }
            _ => StepError::Message(message.clone()),
        });
        self.budget.failure = Some(message);
        self.budget.cross(crossing.limit);
    }
}
