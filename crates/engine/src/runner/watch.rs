//! The live watch of a running step: an agent's stdout parsed as it streams, the run's limits
//! checked after each usage update and at the wall-clock deadline, and claude stopped at its
//! first authentication failure.
//!
//! Does not spawn the process (`orchestrate_base::exec`) nor say what a crossing means
//! (`budget`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Runner;
use super::agent::AgentRun;
use orchestrate_base::exec::{self};

impl Runner {
    /// Runs a step's process while watching the run's limits: an agent's stdout is parsed as it
    /// streams, and the run's spending plus the step's live spending is checked after each usage
    /// update (and `max_wall_sec` on its deadline). A crossing stops the process group at once,
    /// and so does claude's first authentication failure (it would retry a rejected key for
    /// minutes; the result then says `auth`, see `parse::StreamParser::auth_failure`).
    pub(super) async fn run_watched(
        &self,
        mut spec: exec::Spec,
        agent: Option<&AgentRun>,
    ) -> (exec::Finished, Option<crate::budget::Crossing>) {
        use crate::budget::Spend;
        use orchestrate_runtime::parse::{self, StreamParser, Usage};
        let cancel = self.config.cancel.clone();
        let budget = &self.budget;
        let runtime = agent.and_then(|a| a.runtime);
        let watch_auth = runtime == Some(parse::Runtime::Claude);
        if budget.unlimited() && !watch_auth {
            return (exec::run(spec, cancel).await, None);
        }
        let stop = CancellationToken::new();
        spec.stop = Some(stop.clone());
        let mut lines = None;
        if (budget.counts_spending() || watch_auth)
            && let Some(runtime) = runtime
        {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
            spec.stdout_lines = Some(tx);
            lines = Some((StreamParser::new(runtime), rx));
        }
        let spent = self.budget.spent.get();
        let prices = &self.config.profiles.prices;
        let model = agent.and_then(|a| {
            a.model
                .clone()
                .or_else(|| a.cli_default.as_ref().map(|guess| guess.model.clone()))
        });
        let previous = agent.and_then(|a| a.previous_session);
        let wall_deadline = budget.wall_deadline();
        let monitor = async move {
            let mut last = Usage::default();
            loop {
                let line = async {
                    match &mut lines {
                        Some((_, rx)) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let wall = async {
                    match wall_deadline {
                        // Just past the limit, so that the check (strictly over) sees it crossed.
                        Some(at) => {
                            tokio::time::sleep_until((at + Duration::from_millis(1)).into()).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    line = line => {
                        let Some(line) = line else {
                            // The process closed stdout: only the wall clock is left to watch.
                            lines = None;
                            continue;
                        };
                        let Some((parser, _)) = &mut lines else { continue };
                        parser.line(&String::from_utf8_lossy(&line));
                        if parser.auth_failure().is_some() {
                            return None;
                        }
                        let own = parser.step_share_so_far(previous.as_ref());
                        let usage = own.usage;
                        if usage == last {
                            continue;
                        }
                        last = usage;
                        let cost = own.cost_usd.or_else(|| {
                            let model = parser.model_so_far().map(str::to_string).or_else(|| model.clone())?;
                            prices.cost(&model, &usage)
                        });
                        let live = spent.plus(Spend::of(usage.total(), cost));
                        if let Some(crossing) = budget.check(live) {
                            return Some(crossing);
                        }
                    }
                    () = wall => {
                        if let Some(crossing) = budget.check(spent) {
                            return Some(crossing);
                        }
                        // Only a wall limit can fire here; without a crossing it cannot repeat.
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let run = exec::run(spec, cancel);
        tokio::pin!(run);
        tokio::pin!(monitor);
        // `Some(None)`: stopped at an authentication failure, no limit crossed.
        let mut stopped: Option<Option<crate::budget::Crossing>> = None;
        let finished = loop {
            tokio::select! {
                finished = &mut run => break finished,
                found = &mut monitor, if stopped.is_none() => {
                    stopped = Some(found);
                    stop.cancel();
                }
            }
        };
        (finished, stopped.flatten())
    }
}
