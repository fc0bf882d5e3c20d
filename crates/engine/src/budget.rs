//! Budgets: spending limits of a run (the workflow's and the role's `budget:`) and of the swarm
//! per UTC day (`swarm.yaml`), checked against what the run has spent, and the daily ledger the
//! role processes append each finished task's spending to.
//!
//! Owns: the arithmetic of spending (tokens, known cost, tokens of unknown price), which limit a
//! spending crosses and the message saying so, and the ledger files
//! `.orchestrate/ledger/<YYYY-MM-DD>.jsonl`; a run's spending state (`BudgetState`, shared by
//! the lanes of a fan-out) and the limits a child run inherits from its ancestors. Does not measure usage (`runtime::parse`) nor stop
//! processes (`exec`); `runner` feeds it live figures and acts on a crossing, `worker` keeps the
//! ledger and refuses claims.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::step_result::StepResult;

use orchestrate_lang::model::{Budget, SwarmConfig};

/// What has been spent: tokens, the cost of those whose price is known, and how many had none.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    /// Tokens of every kind, priced or not.
    pub tokens: u64,
    /// The cost of the priced tokens, in US dollars.
    pub cost_usd: f64,
    /// Tokens whose cost is unknown (no price for their model): not in `cost_usd`.
    pub unpriced_tokens: u64,
}

impl Spend {
    /// Spending of `tokens` costing `cost` (`None`: no price known).
    pub(crate) fn of(tokens: u64, cost: Option<f64>) -> Spend {
        match cost {
            Some(cost) => Spend {
                tokens,
                cost_usd: cost,
                unpriced_tokens: 0,
            },
            None => Spend {
                tokens,
                cost_usd: 0.0,
                unpriced_tokens: tokens,
            },
        }
    }

    /// The spending recorded in a step result (`usage`, `cost_usd`); nothing for steps that
    /// are not agents.
    pub(crate) fn of_result(result: &StepResult) -> Spend {
        let usage = result.usage.unwrap_or_default();
        Spend::of(usage.total(), result.cost())
    }

    pub(crate) fn plus(self, other: Spend) -> Spend {
        Spend {
            tokens: self.tokens.saturating_add(other.tokens),
            cost_usd: self.cost_usd + other.cost_usd,
            unpriced_tokens: self.unpriced_tokens.saturating_add(other.unpriced_tokens),
        }
    }

    /// "1200 tokens, $0.0330" with a note when part of the cost is unknown.
    pub(crate) fn describe(&self) -> String {
        let mut text = format!("{} tokens, ${:.4}", self.tokens, self.cost_usd);
        if self.unpriced_tokens > 0 {
            text.push_str(&format!(
                " (plus {} tokens of unknown cost: no price for their model, so max_cost_usd cannot count them; add one under `prices:` in runtimes.yaml)",
                self.unpriced_tokens
            ));
        }
        text
    }
}

/// Which limits apply to a run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Limits {
    /// The run's own: the stricter of the workflow's and the role's, limit by limit.
    pub(crate) run: Option<Budget>,
    /// The swarm's per UTC day, with the workspace whose ledger counts against it.
    pub(crate) day: Option<(SwarmConfig, PathBuf)>,
}

impl Limits {
    pub(crate) fn is_empty(&self) -> bool {
        self.run.is_none() && self.day.is_none()
    }

    /// Whether any limit counts tokens or cost (the live stream is only parsed then).
    pub(crate) fn counts_spending(&self) -> bool {
        self.run
            .as_ref()
            .is_some_and(|b| b.max_cost_usd.is_some() || b.max_tokens.is_some())
            || self.day.is_some()
    }

    pub(crate) fn max_wall(&self) -> Option<Duration> {
        self.run.as_ref().and_then(|b| b.max_wall)
    }

    /// The first limit that `spent` (the run's so far, the live step's included) crosses after
    /// `wall` of the run; the day's ledger is read here when a daily limit is set.
    pub(crate) fn check(&self, spent: Spend, wall: Duration) -> Option<Crossing> {
        let crossing = |limit: &'static str, at: &str, spent_text: String, max: String| Crossing {
            limit,
            at: at.to_string(),
            spent: spent_text,
            max,
            run: spent,
            day: None,
        };
        if let Some(budget) = &self.run {
            if let Some(max) = budget.max_tokens
                && spent.tokens > max
            {
                return Some(crossing(
                    "max_tokens",
                    &budget.tokens_at,
                    format!("{} tokens", spent.tokens),
                    format!("{max} tokens"),
                ));
            }
            if let Some(max) = budget.max_cost_usd
                && spent.cost_usd > max
            {
                return Some(crossing(
                    "max_cost_usd",
                    &budget.cost_at,
                    format!("${:.4}", spent.cost_usd),
                    format!("${max}"),
                ));
            }
            if let Some(max) = budget.max_wall
                && wall > max
            {
                return Some(crossing(
                    "max_wall_sec",
                    &budget.wall_at,
                    format!("{:.1} s", wall.as_secs_f64()),
                    format!("{} s", max.as_secs_f64()),
                ));
            }
        }
        if let Some((swarm, workspace)) = &self.day {
            let today = day_total(workspace, &today());
            let total = today.plus(spent);
            let mut found = None;
            if let Some(max) = swarm.max_tokens_per_day
                && total.tokens > max
            {
                found = Some(crossing(
                    "max_tokens_per_day",
                    &swarm.tokens_at,
                    format!("{} tokens today", total.tokens),
                    format!("{max} tokens"),
                ));
            } else if let Some(max) = swarm.max_cost_usd_per_day
                && total.cost_usd > max
            {
                found = Some(crossing(
                    "max_cost_usd_per_day",
                    &swarm.cost_at,
                    format!("${:.4} today", total.cost_usd),
                    format!("${max}"),
                ));
            }
            if let Some(found) = &mut found {
                found.day = Some(today);
            }
            return found;
        }
        None
    }
}

/// A limit crossed, with the figures that crossed it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Crossing {
    /// The limit's name: `max_tokens`, `max_cost_usd`, `max_wall_sec`, `max_tokens_per_day`,
    /// `max_cost_usd_per_day`.
    pub(crate) limit: &'static str,
    /// `file:line` where the limit was set.
    pub(crate) at: String,
    pub(crate) spent: String,
    pub(crate) max: String,
    /// The run's spending so far.
    pub(crate) run: Spend,
    /// For a daily limit: what the ledger held for today before this run.
    pub(crate) day: Option<Spend>,
}

impl Crossing {
    /// The user's message: which limit, the figures, where it was hit and what to do.
    /// `workspace` is stripped from the limit's file path.
    pub(crate) fn message(&self, workspace: &Path, step: Option<&str>, stopped: bool) -> String {
        let at = relative(&self.at, workspace);
        let whose = if self.day.is_some() {
            "the swarm's daily budget"
        } else {
            "the run's budget"
        };
        let mut text = format!(
            "budget exceeded: {} ({whose}, set at {at}): spent {} against a limit of {}; the run has used {}",
            self.limit,
            self.spent,
            self.max,
            self.run.describe()
        );
        if let Some(day) = &self.day {
            text.push_str(&format!(
                ", and the swarm's other tasks {} today (UTC)",
                day.describe()
            ));
        }
        match (step, stopped) {
            (Some(step), true) => text.push_str(&format!(
                "; step `{step}` was running and its processes were stopped"
            )),
            (Some(step), false) => text.push_str(&format!("; step `{step}` was not started")),
            (None, _) => {}
        }
        text.push_str(&format!("; raise `{}` at {at} to allow more", self.limit));
        text
    }

    /// The fields of a `budget_exceeded` event.
    pub(crate) fn event(
        &self,
        workspace: &Path,
        step: Option<&str>,
        stopped: bool,
    ) -> crate::event::BudgetExceeded {
        crate::event::BudgetExceeded {
            step: step.map(str::to_string),
            limit: self.limit.to_string(),
            at: relative(&self.at, workspace),
            spent: self.spent.clone(),
            max: self.max.clone(),
            tokens: self.run.tokens,
            cost_usd: self.run.cost_usd,
            unpriced_tokens: self.run.unpriced_tokens,
            day_tokens: self.day.map(|d| d.tokens),
            day_cost_usd: self.day.map(|d| d.cost_usd),
            stopped,
            message: self.message(workspace, step, stopped),
        }
    }
}

fn relative(at: &str, workspace: &Path) -> String {
    let prefix = format!("{}/", workspace.display());
    at.strip_prefix(&prefix).unwrap_or(at).to_string()
}

/// Today's date in UTC, as ledger files are named.
pub(crate) fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// `.orchestrate/ledger/<day>.jsonl`.
pub(crate) fn ledger_path(workspace: &Path, day: &str) -> PathBuf {
    workspace
        .join(".orchestrate/ledger")
        .join(format!("{day}.jsonl"))
}

/// Appends one finished task's spending to today's ledger: one line, one `O_APPEND` write, so
/// role processes appending at once never interleave.
pub fn append(workspace: &Path, entry: &Value) -> std::io::Result<PathBuf> {
    let path = ledger_path(workspace, &today());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut line = serde_json::to_vec(entry).unwrap_or_default();
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)?;
    file.write_all(&line)?;
    Ok(path)
}

/// `.orchestrate/ledger/<day>.elsewhere.json`: what the other machines of a swarm on a shared
/// database spent that day, as the database last said (`{"tokens": N, "cost_usd": X}`).
fn elsewhere_path(workspace: &Path, day: &str) -> PathBuf {
    workspace
        .join(".orchestrate/ledger")
        .join(format!("{day}.elsewhere.json"))
}

/// Notes what the other machines spent today (a role process on a shared database does, every
/// few seconds): the daily budget counts it with this machine's ledger. The error names the file.
pub fn note_elsewhere(workspace: &Path, tokens: u64, cost_usd: f64) -> Result<(), String> {
    let path = elsewhere_path(workspace, &today());
    let text = serde_json::json!({"tokens": tokens, "cost_usd": cost_usd}).to_string();
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    path.parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| orchestrate_base::fsutil::atomic_write(&path, text.as_bytes()))
        .map_err(|err| format!("cannot write {}: {err}", path.display()))
}

/// The sum of a day's ledger (lines that do not parse are skipped: a crash mid-write leaves at
/// most a partial last line), and what other machines spent that day, when noted.
pub(crate) fn day_total(workspace: &Path, day: &str) -> Spend {
    let text = std::fs::read_to_string(ledger_path(workspace, day)).unwrap_or_default();
    let elsewhere = std::fs::read(elsewhere_path(workspace, day))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .map(|entry| Spend {
            tokens: entry["tokens"].as_u64().unwrap_or(0),
            cost_usd: entry["cost_usd"].as_f64().unwrap_or(0.0),
            unpriced_tokens: 0,
        })
        .unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|entry| Spend {
            tokens: entry["tokens"].as_u64().unwrap_or(0),
            cost_usd: entry["cost_usd"].as_f64().unwrap_or(0.0),
            unpriced_tokens: entry["unpriced_tokens"].as_u64().unwrap_or(0),
        })
        .fold(elsewhere, Spend::plus)
}

/// Why the swarm may not claim another task today, if it may not: the day's total has reached
/// a daily limit.
pub fn day_exhausted(workspace: &Path, swarm: &SwarmConfig) -> Option<String> {
    if swarm.max_tokens_per_day.is_none() && swarm.max_cost_usd_per_day.is_none() {
        return None;
    }
    let day = today();
    let total = day_total(workspace, &day);
    let (limit, at, spent, max) = if let Some(max) = swarm.max_tokens_per_day
        && total.tokens >= max
    {
        (
            "max_tokens_per_day",
            &swarm.tokens_at,
            format!("{} tokens", total.tokens),
            format!("{max} tokens"),
        )
    } else if let Some(max) = swarm.max_cost_usd_per_day
        && total.cost_usd >= max
    {
        (
            "max_cost_usd_per_day",
            &swarm.cost_at,
            format!("${:.4}", total.cost_usd),
            format!("${max}"),
        )
    } else {
        return None;
    };
    let at = relative(at, workspace);
    Some(format!(
        "budget exceeded: the swarm spent {spent} today ({day} UTC), at or over {limit} {max} (set at {at}); tasks stay queued until the next UTC day or until the limit is raised at {at} (restart the role to pick up the change)"
    ))
}

/// The limits of a run above a child run, and what had been spent against them before it.
#[derive(Debug, Clone)]
pub(crate) struct InheritedLimits {
    pub(crate) limits: Limits,
    pub(crate) base: Spend,
    /// When that run started (its `max_wall_sec` counts from here).
    pub(crate) started: Instant,
}

/// What the run has spent against which limits.
pub(crate) struct BudgetState {
    pub(crate) limits: Limits,
    /// A child run's ancestors' limits (see `RunConfig::inherited`).
    pub(crate) inherited: Vec<InheritedLimits>,
    /// Every agent attempt so far and its tokens by kind (replayed results included; a child
    /// run's spending counts in its `workflow:` step's result), shared by a fan-out's lanes.
    pub(crate) spent: SharedSpend,
    /// When this process started the run (`max_wall_sec` counts from here).
    pub(crate) started: Instant,
    /// The failure message of a crossing, which replaces the step's generic one.
    pub(crate) failure: Option<String>,
    /// A cost limit was set but some tokens had no price: said once.
    pub(crate) warned_unpriced: bool,
    /// A limit was crossed: the run stops where it is, taking no `on` edge (shared by a
    /// fan-out's lanes, so that the step that forked them stops too).
    pub(crate) crossed: Arc<std::sync::OnceLock<String>>,
}

/// What a run has spent (and the tokens behind it, by kind), shared by every lane of the run
/// so that concurrent items count against one budget.
#[derive(Clone, Default)]
pub(crate) struct SharedSpend(Arc<std::sync::Mutex<(Spend, orchestrate_runtime::parse::Usage)>>);

impl SharedSpend {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Spend, orchestrate_runtime::parse::Usage)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn get(&self) -> Spend {
        self.lock().0
    }

    pub(crate) fn usage(&self) -> orchestrate_runtime::parse::Usage {
        self.lock().1
    }

    /// Counts what a step result spent (an agent's usage, a child run's total).
    pub(crate) fn count(&self, result: &StepResult) {
        let mut spent = self.lock();
        spent.0 = spent.0.plus(Spend::of_result(result));
        if let Some(usage) = &result.usage {
            spent.1.add(usage);
        }
    }
}

impl BudgetState {
    /// Counts what a step result spent (an agent's usage, a child run's total).
    pub(crate) fn count(&self, result: &StepResult) {
        self.spent.count(result);
    }

    /// Marks the run as stopped by a crossing of `limit`.
    pub(crate) fn cross(&self, limit: &str) {
        let _ = self.crossed.set(limit.to_string());
    }

    /// The limit whose crossing stopped the run (in this runner or one of its lanes).
    pub(crate) fn crossed(&self) -> Option<&str> {
        self.crossed.get().map(String::as_str)
    }

    pub(crate) fn is_crossed(&self) -> bool {
        self.crossed.get().is_some()
    }

    /// No limit applies to this run, its own or an ancestor's.
    pub(crate) fn unlimited(&self) -> bool {
        self.limits.is_empty() && self.inherited.iter().all(|i| i.limits.is_empty())
    }

    pub(crate) fn counts_spending(&self) -> bool {
        self.limits.counts_spending() || self.inherited.iter().any(|i| i.limits.counts_spending())
    }

    /// When the earliest `max_wall_sec` (this run's or an ancestor's) runs out.
    pub(crate) fn wall_deadline(&self) -> Option<Instant> {
        let own = self.limits.max_wall().map(|max| self.started + max);
        self.inherited
            .iter()
            .filter_map(|i| i.limits.max_wall().map(|max| i.started + max))
            .chain(own)
            .min()
    }

    /// The first limit crossed by `live` (this run's spending so far, a running step's
    /// included): this run's own, then each ancestor's with what it spent before this run.
    pub(crate) fn check(&self, live: Spend) -> Option<Crossing> {
        self.limits.check(live, self.started.elapsed()).or_else(|| {
            self.inherited
                .iter()
                .find_map(|i| i.limits.check(i.base.plus(live), i.started.elapsed()))
        })
    }

    /// The limits a child run started now inherits: every ancestor's and this run's, each with
    /// what had been spent against it so far.
    pub(crate) fn handed_down(&self) -> Vec<InheritedLimits> {
        let mut out: Vec<InheritedLimits> = self
            .inherited
            .iter()
            .map(|i| InheritedLimits {
                limits: i.limits.clone(),
                base: i.base.plus(self.spent.get()),
                started: i.started,
            })
            .collect();
        if !self.limits.is_empty() {
            out.push(InheritedLimits {
                limits: self.limits.clone(),
                base: self.spent.get(),
                started: self.started,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn budget(tokens: Option<u64>, cost: Option<f64>, wall: Option<u64>) -> Budget {
        Budget {
            max_tokens: tokens,
            max_cost_usd: cost,
            max_wall: wall.map(Duration::from_secs),
            tokens_at: "/ws/wf.yaml:3".into(),
            cost_at: "/ws/wf.yaml:4".into(),
            wall_at: "/ws/wf.yaml:5".into(),
        }
    }

    #[test]
    fn the_first_crossed_limit_is_named_with_its_figures() {
        let limits = Limits {
            run: Some(budget(Some(1000), Some(0.5), Some(60))),
            day: None,
        };
        let wall = Duration::from_secs(1);
        assert_eq!(limits.check(Spend::of(1000, Some(0.5)), wall), None);
        let crossing = limits.check(Spend::of(1001, Some(0.1)), wall).unwrap();
        assert_eq!(crossing.limit, "max_tokens");
        let message = crossing.message(Path::new("/ws"), Some("Impl"), true);
        assert!(message.starts_with("budget exceeded: max_tokens (the run's budget, set at wf.yaml:3): spent 1001 tokens against a limit of 1000 tokens; the run has used 1001 tokens, $0.1000; step `Impl` was running"), "{message}");
        let crossing = limits.check(Spend::of(10, Some(0.51)), wall).unwrap();
        assert_eq!(
            (crossing.limit, crossing.spent.as_str()),
            ("max_cost_usd", "$0.5100")
        );
        let crossing = limits
            .check(Spend::default(), Duration::from_secs(61))
            .unwrap();
        assert_eq!(crossing.limit, "max_wall_sec");
        // Tokens of unknown price count against max_tokens, never against max_cost_usd, and
        // the message says so.
        let unpriced = Spend::of(900, None);
        assert_eq!(limits.check(unpriced, wall), None);
        let crossing = limits.check(Spend::of(2000, None), wall).unwrap();
        assert!(
            crossing
                .message(Path::new("/ws"), None, false)
                .contains("2000 tokens of unknown cost")
        );
    }

    #[test]
    fn stricter_keeps_the_lower_of_each_limit() {
        let a = budget(Some(1000), None, Some(60));
        let mut b = budget(Some(500), Some(2.0), Some(120));
        b.tokens_at = "agents/r.yaml:4".into();
        let merged = Budget::stricter(Some(&a), Some(&b)).unwrap();
        assert_eq!(merged.max_tokens, Some(500));
        assert_eq!(merged.tokens_at, "agents/r.yaml:4");
        assert_eq!(merged.max_cost_usd, Some(2.0));
        assert_eq!(merged.max_wall, Some(Duration::from_secs(60)));
        assert_eq!(Budget::stricter(None, None), None);
    }

    #[test]
    fn the_ledger_sums_the_day_and_stops_claims_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        let swarm = SwarmConfig {
            max_tokens_per_day: Some(1000),
            tokens_at: format!("{}/swarm.yaml:2", ws.display()),
            ..SwarmConfig::default()
        };
        assert_eq!(day_exhausted(ws, &swarm), None);
        append(ws, &json!({"tokens": 600, "cost_usd": 0.01})).unwrap();
        assert_eq!(day_exhausted(ws, &swarm), None);
        append(
            ws,
            &json!({"tokens": 400, "cost_usd": null, "unpriced_tokens": 400}),
        )
        .unwrap();
        let total = day_total(ws, &today());
        assert_eq!((total.tokens, total.unpriced_tokens), (1000, 400));
        let why = day_exhausted(ws, &swarm).unwrap();
        assert!(why.contains("spent 1000 tokens today"), "{why}");
        assert!(why.contains("set at swarm.yaml:2"), "{why}");
        // A running task is stopped once the day plus its own spending goes over.
        let limits = Limits {
            run: None,
            day: Some((swarm, ws.to_path_buf())),
        };
        let crossing = limits
            .check(Spend::of(1, Some(0.0)), Duration::ZERO)
            .unwrap();
        assert_eq!(crossing.limit, "max_tokens_per_day");
        assert_eq!(crossing.day.unwrap().tokens, 1000);
    }
}
