//! Showing a run as it goes: the runner's progress notifications and their renderers.
//!
//! Owns: the [`Progress`] notifications the runner emits (step started/finished with usage and
//! cost, loop items, `wait_for` polls, plain messages, the event lines as they are appended), and
//! the renderers the cli chooses between: [`Plain`] lines on stderr, [`Json`] event lines on
//! stdout, and [`Live`], an indicatif display for a terminal. Does not decide anything about the
//! run: it only shows what the runner reports.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::event::Event;
use crate::step_result::StepResult;

/// One thing the runner reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A step began (not written for replays or skips). `depth` is the number of enclosing
    /// `for_each` loops. `lane`: the fan-out item it runs in (empty outside one), whose
    /// execution numbers are its own.
    StepStarted {
        /// The step's name.
        step: String,
        /// Its execution number, within its lane.
        exec: u64,
        /// The fan-out lane: `[F, I]` per enclosing fan-out item, empty outside one.
        lane: Vec<u64>,
        /// `command`, `provider`, `agent`, `for_each`, ...
        kind: String,
        /// How many `for_each` loops enclose it.
        depth: usize,
    },
    /// A step's result was recorded (skips included).
    StepFinished {
        /// The step's name.
        step: String,
        /// Its execution number, within its lane.
        exec: u64,
        /// The fan-out lane, as in `StepStarted`.
        lane: Vec<u64>,
        /// The result's status (`succeeded`, `failed`, `skipped`, ...).
        status: String,
        /// Seconds, 0 when the result has none.
        duration: f64,
        /// Tokens the step used (agent steps), input + output + cache.
        tokens: Option<u64>,
        /// What those tokens cost in US dollars, when their price is known.
        cost_usd: Option<f64>,
    },
    /// A `for_each` resolved its items; `fan_out`: they run at once (`max_parallel`, `join`),
    /// and each says when it ends.
    LoopStarted {
        /// The `for_each` step.
        step: String,
        /// How many items.
        total: usize,
        /// The items run at once and each reports its end.
        fan_out: bool,
    },
    /// A `for_each` started item `index` (0-based) of `total`.
    LoopItem {
        /// The `for_each` step.
        step: String,
        /// 0-based.
        index: usize,
        /// How many items.
        total: usize,
    },
    /// A fan-out item ended (sequential items end when the next starts).
    LoopItemFinished {
        /// The `for_each` step.
        step: String,
        /// 0-based.
        index: usize,
        /// How many items.
        total: usize,
    },
    /// A `wait_for` looked for its files once more.
    WaitPoll {
        /// The `wait_for` step.
        step: String,
        /// Looks so far, this one included.
        polls: u64,
        /// How many files match the glob now.
        found: usize,
        /// How many the step waits for (`min_count`).
        wanted: usize,
    },
    /// A plain line for a person (`✓ Build (0.52s)`), secrets already masked.
    Message(String),
    /// One line of `events.jsonl`, exactly as appended (masked, no newline).
    Event(String),
}

impl Progress {
    /// The typed notification an event stands for, when it has one; `lane` is the fan-out lane
    /// it was recorded in.
    pub(crate) fn from_event(event: &Event, lane: &[u64]) -> Option<Progress> {
        Some(match event {
            Event::StepStarted(started) => Progress::StepStarted {
                step: started.step.clone(),
                exec: started.exec,
                lane: lane.to_vec(),
                kind: started.kind.clone(),
                depth: started.iteration.len(),
            },
            Event::StepFinished(finished) => {
                let result = &finished.result;
                let tokens = result.usage.as_ref().map(tokens_of);
                Progress::StepFinished {
                    step: finished.step.clone(),
                    exec: finished.exec,
                    lane: lane.to_vec(),
                    status: result.status.label().to_string(),
                    duration: result.duration.unwrap_or(0.0),
                    tokens,
                    cost_usd: result.cost(),
                }
            }
            Event::LoopStarted(started) => Progress::LoopStarted {
                step: started.step.clone(),
                total: started.total as usize,
                fan_out: started.max_parallel.is_some(),
            },
            Event::IterationStarted(item) => Progress::LoopItem {
                step: item.step.clone(),
                index: item.index as usize,
                total: item.total as usize,
            },
            Event::IterationFinished(item) => Progress::LoopItemFinished {
                step: item.step.clone(),
                index: item.index as usize,
                total: item.total as usize,
            },
            _ => return None,
        })
    }
}

/// Receives the runner's notifications. Implementations must be cheap: they are called inline.
pub trait Reporter: Send + Sync {
    /// Shows one notification.
    fn report(&self, progress: &Progress);
    /// The run is over: clear anything live before the final lines are printed.
    fn finish(&self) {}
}

/// How `run` and `resume` show a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing but the run id and the outcome (`--quiet`).
    Quiet,
    /// One line per step on stderr (stderr is not a terminal).
    Plain,
    /// The live display (stderr is a terminal).
    Live,
    /// The event lines on stdout (`--json`).
    Json,
}

impl Mode {
    /// `--json` wins over `--quiet`; otherwise a terminal gets the live display.
    pub fn choose(quiet: bool, json: bool) -> Mode {
        if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() && std::env::var("TERM").as_deref() != Ok("dumb")
        {
            Mode::Live
        } else {
            Mode::Plain
        }
    }

    /// The renderer for this mode (`None`: show nothing).
    pub fn reporter(self) -> Option<Arc<dyn Reporter>> {
        match self {
            Mode::Quiet => None,
            Mode::Plain => Some(Arc::new(Plain)),
            Mode::Json => Some(Arc::new(Json)),
            Mode::Live => Some(Arc::new(Live::new())),
        }
    }
}

/// Plain lines on stderr, one per message.
pub(crate) struct Plain;

impl Reporter for Plain {
    fn report(&self, progress: &Progress) {
        if let Progress::Message(text) = progress {
            eprintln!("{text}");
        }
    }
}

/// The event lines on stdout, as they are appended, so that a script can follow a run.
pub(crate) struct Json;

impl Reporter for Json {
    fn report(&self, progress: &Progress) {
        if let Progress::Event(line) = progress {
            let mut out = std::io::stdout().lock();
            // A closed pipe must not stop the run; the records are on disk either way.
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    }
}

/// Totals and live bars of the terminal display.
#[derive(Default)]
struct LiveState {
    header: Option<ProgressBar>,
    /// Bars of the steps running now, by lane and execution number (fan-out items run at once,
    /// each numbering its own executions).
    bars: HashMap<(Vec<u64>, u64), ProgressBar>,
    /// The running `for_each` bar of each loop step, with its items' counts.
    loops: HashMap<String, ((Vec<u64>, u64), Items)>,
    /// The running execution of each step, for `wait_for` polls.
    running: HashMap<String, (Vec<u64>, u64)>,
    steps_done: u64,
    tokens: u64,
    cost_usd: f64,
    cost_known: bool,
}

/// How far a loop's items are: a fan-out's run at once, so its bar counts those done and says
/// how many run; a sequential loop's bar shows which item runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Items {
    total: usize,
    started: usize,
    done: usize,
    fan_out: bool,
}

impl Items {
    /// `items: 1 done, 2 running of 3`.
    fn describe(&self) -> String {
        format!(
            "items: {} done, {} running of {}",
            self.done,
            self.started.saturating_sub(self.done),
            self.total
        )
    }
}

/// The terminal display: a header with the run's elapsed time, steps done, tokens and cost so
/// far; under it one line per running step (a spinner with its elapsed time, a bar `i/n` for a
/// `for_each`, the poll count of a `wait_for`). Messages, such as the line each finished step
/// leaves, are printed above it and stay.
pub(crate) struct Live {
    multi: MultiProgress,
    state: Mutex<LiveState>,
}

const TICK: Duration = Duration::from_millis(120);

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}{spinner:.cyan} {msg} {elapsed:.dim}")
        .expect("a valid template")
}

fn fan_out_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix}{spinner:.cyan} {msg} [{bar:24.cyan/blue}] {elapsed:.dim}",
    )
    .expect("a valid template")
    .progress_chars("=> ")
}

fn loop_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix}{spinner:.cyan} {msg} [{bar:24.cyan/blue}] item {pos}/{len} {elapsed:.dim}",
    )
    .expect("a valid template")
    .progress_chars("=> ")
}

impl Live {
    pub(crate) fn new() -> Live {
        Live::with_target(ProgressDrawTarget::stderr())
    }

    fn with_target(target: ProgressDrawTarget) -> Live {
        Live {
            multi: MultiProgress::with_draw_target(target),
            state: Mutex::new(LiveState::default()),
        }
    }

    /// The header line, made on the first notification (so that the lines the cli prints
    /// before the run starts are not drawn over).
    fn header(&self, state: &mut LiveState) -> ProgressBar {
        state
            .header
            .get_or_insert_with(|| {
                let header = self.multi.add(
                    ProgressBar::new_spinner()
                        .with_style(
                            ProgressStyle::with_template("{spinner:.green} run {elapsed} · {msg}")
                                .expect("a valid template"),
                        )
                        .with_message("0 steps done"),
                );
                header.enable_steady_tick(TICK);
                header
            })
            .clone()
    }

    fn totals(state: &LiveState) -> String {
        let mut text = format!(
            "{} step{} done",
            state.steps_done,
            if state.steps_done == 1 { "" } else { "s" }
        );
        if state.tokens > 0 {
            text.push_str(&format!(" · {} tokens", group_digits(state.tokens)));
        }
        if state.cost_known {
            text.push_str(&format!(" · ${:.4}", state.cost_usd));
        }
        text
    }
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}

impl Live {
    /// A spinner for a step that started, under its parent's.
    fn step_started(
        &self,
        state: &mut LiveState,
        step: &str,
        exec: u64,
        lane: &[u64],
        kind: &str,
        depth: usize,
    ) {
        // A fan-out item says which one it is; items of a `parallel` step have no loop
        // index, so the lane gives their depth too.
        let item = match lane.last() {
            Some(index) => format!(" · item {index}"),
            None => String::new(),
        };
        let depth = depth.max(lane.len() / 2);
        let bar = self.multi.add(
            ProgressBar::new_spinner()
                .with_style(spinner_style())
                .with_prefix("  ".repeat(depth + 1))
                .with_message(format!("{step} ({kind}){item}")),
        );
        bar.enable_steady_tick(TICK);
        let key = (lane.to_vec(), exec);
        state.bars.insert(key.clone(), bar);
        state.running.insert(step.to_string(), key);
    }

    /// A loop's spinner becomes a bar of its items.
    fn loop_started(state: &mut LiveState, step: &str, total: usize, fan_out: bool) {
        let items = Items {
            total,
            fan_out,
            ..Items::default()
        };
        if let Some(bar) = state.running.get(step).and_then(|e| state.bars.get(e)) {
            bar.set_style(if fan_out {
                fan_out_style()
            } else {
                loop_style()
            });
            bar.set_length(total as u64);
            bar.set_position(0);
            bar.set_message(if fan_out {
                format!("{step} · {}", items.describe())
            } else {
                step.to_string()
            });
        }
        if let Some(key) = state.running.get(step).cloned() {
            state.loops.insert(step.to_string(), (key, items));
        }
    }

    /// A finished step's bar goes and its spending joins the totals.
    fn step_finished(
        multi: &MultiProgress,
        state: &mut LiveState,
        step: &str,
        exec: u64,
        lane: &[u64],
        tokens: Option<u64>,
        cost_usd: Option<f64>,
    ) {
        let key = (lane.to_vec(), exec);
        if let Some(bar) = state.bars.remove(&key) {
            bar.finish_and_clear();
            multi.remove(&bar);
        }
        if state.running.get(step) == Some(&key) {
            state.running.remove(step);
        }
        if state.loops.get(step).map(|(k, _)| k) == Some(&key) {
            state.loops.remove(step);
        }
        state.steps_done += 1;
        state.tokens += tokens.unwrap_or(0);
        if let Some(cost) = cost_usd {
            state.cost_usd += cost;
            state.cost_known = true;
        }
    }
}

impl Reporter for Live {
    fn report(&self, progress: &Progress) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let header = self.header(&mut state);
        match progress {
            Progress::Message(text) => {
                let _ = self.multi.println(text);
            }
            Progress::Event(_) => {}
            Progress::StepStarted {
                step,
                exec,
                lane,
                kind,
                depth,
            } => self.step_started(&mut state, step, *exec, lane, kind, *depth),
            Progress::LoopStarted {
                step,
                total,
                fan_out,
            } => Self::loop_started(&mut state, step, *total, *fan_out),
            Progress::LoopItem { step, total, .. }
            | Progress::LoopItemFinished { step, total, .. } => {
                let finished = matches!(progress, Progress::LoopItemFinished { .. });
                let Some((key, items)) = state.loops.get_mut(step) else {
                    return;
                };
                items.total = *total;
                if finished {
                    items.done += 1;
                } else {
                    items.started += 1;
                }
                let (key, items) = (key.clone(), *items);
                if let Some(bar) = state.bars.get(&key) {
                    bar.set_length(*total as u64);
                    if items.fan_out {
                        bar.set_position(items.done as u64);
                        bar.set_message(format!("{step} · {}", items.describe()));
                    } else {
                        bar.set_position(items.started as u64);
                    }
                }
            }
            Progress::WaitPoll {
                step,
                polls,
                found,
                wanted,
            } => {
                if let Some(bar) = state.running.get(step).and_then(|e| state.bars.get(e)) {
                    bar.set_message(format!(
                        "{step} (wait_for) poll {polls}, {found}/{wanted} file(s)"
                    ));
                }
            }
            Progress::StepFinished {
                step,
                exec,
                lane,
                tokens,
                cost_usd,
                ..
            } => {
                Self::step_finished(
                    &self.multi,
                    &mut state,
                    step,
                    *exec,
                    lane,
                    *tokens,
                    *cost_usd,
                );
                header.set_message(Live::totals(&state));
            }
        }
    }

    fn finish(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (_, bar) in state.bars.drain() {
            bar.finish_and_clear();
        }
        if let Some(header) = state.header.take() {
            header.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

use orchestrate_base::human::group_digits;

/// The part of a finished step's line about what it spent: ` · 1,234 tokens · $0.0123`.
pub(crate) fn spend_suffix(result: &StepResult) -> String {
    let mut text = String::new();
    let mut tokens = 0;
    if let Some(usage) = &result.usage {
        tokens = tokens_of(usage);
        text.push_str(&format!(", {} tokens", group_digits(tokens)));
    }
    if let Some(cost) = result.cost() {
        text.push_str(&format!(", ${cost:.4}"));
    } else if tokens > 0 {
        text.push_str(&format!(", {}", cost_unknown(result.model_name())));
    }
    text
}

/// The tokens a step's line counts: all but `reasoning` (a part of `output`).
fn tokens_of(usage: &orchestrate_runtime::parse::Usage) -> u64 {
    usage.total()
}

/// Why a step that spent tokens has no cost: "cost unknown: no price for model X in
/// runtimes.yaml" (the run's line and `report` say the same).
pub fn cost_unknown(model: Option<&str>) -> String {
    match model {
        Some(model) => format!("cost unknown: no price for model {model} in runtimes.yaml"),
        None => "cost unknown: the CLI named no model (set `model:` on the step to price it)"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The notification of the event `name` with `fields` (and their `lane`), as read back.
    fn from_event(name: &str, fields: &Value) -> Option<Progress> {
        let mut record = fields.clone();
        record["event"] = json!(name);
        let lane = crate::event::Envelope::from_record(&record).lane;
        Progress::from_event(&Event::from_record(&record), &lane)
    }

    #[test]
    fn events_map_to_notifications() {
        let started = from_event(
            "step_started",
            &json!({"step": "Fix", "exec": 4, "kind": "command", "iteration": [1, 0]}),
        );
        assert_eq!(
            started,
            Some(Progress::StepStarted {
                step: "Fix".into(),
                exec: 4,
                lane: Vec::new(),
                kind: "command".into(),
                depth: 2
            })
        );
        let finished = from_event(
            "step_finished",
            &json!({"step": "Ask", "exec": 5, "result": {"status": "succeeded", "duration": 1.5,
                "usage": {"input": 100, "output": 20, "cache_read": 5, "cache_write": 0, "reasoning": 10},
                "cost_usd": 0.25}}),
        );
        assert_eq!(
            finished,
            Some(Progress::StepFinished {
                step: "Ask".into(),
                exec: 5,
                lane: Vec::new(),
                status: "succeeded".into(),
                duration: 1.5,
                tokens: Some(125),
                cost_usd: Some(0.25)
            })
        );
        assert_eq!(from_event("goto", &json!({})), None);
    }

    fn spend(result: Value) -> String {
        spend_suffix(&serde_json::from_value(result).unwrap())
    }

    #[test]
    fn spend_and_digits() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1234567), "1,234,567");
        assert_eq!(
            spend(json!({"usage": {"input": 1000, "output": 234}, "cost_usd": 0.01})),
            ", 1,234 tokens, $0.0100"
        );
        assert_eq!(spend(json!({"status": "succeeded"})), "");
        assert_eq!(
            spend(
                json!({"usage": {"input": 1000, "output": 234}, "cost_usd": null, "model": "m-1"})
            ),
            ", 1,234 tokens, cost unknown: no price for model m-1 in runtimes.yaml"
        );
    }

    #[test]
    fn live_totals_follow_finished_steps() {
        let live = Live::with_target(ProgressDrawTarget::hidden());
        live.report(&Progress::StepStarted {
            step: "A".into(),
            exec: 1,
            lane: Vec::new(),
            kind: "agent".into(),
            depth: 0,
        });
        assert_eq!(live.state.lock().unwrap().bars.len(), 1);
        live.report(&Progress::StepFinished {
            step: "A".into(),
            exec: 1,
            lane: Vec::new(),
            status: "succeeded".into(),
            duration: 0.1,
            tokens: Some(1500),
            cost_usd: Some(0.5),
        });
        let state = live.state.lock().unwrap();
        assert!(state.bars.is_empty());
        assert_eq!(Live::totals(&state), "1 step done · 1,500 tokens · $0.5000");
    }

    /// A `max_parallel: 3` fan-out whose three items have started: none is done yet.
    #[test]
    fn a_fan_out_bar_counts_items_done_and_running() {
        let live = Live::with_target(ProgressDrawTarget::hidden());
        let event = |name: &str, fields: Value| {
            live.report(&from_event(name, &fields).expect("a notification"));
        };
        event(
            "step_started",
            json!({"step": "Each", "exec": 2, "kind": "for_each", "iteration": []}),
        );
        event(
            "loop_started",
            json!({"step": "Each", "total": 3, "max_parallel": 3, "join": "all_success"}),
        );
        for index in 0..3 {
            event(
                "iteration_started",
                json!({"step": "Each", "index": index, "total": 3}),
            );
        }
        let message = |live: &Live| {
            let state = live.state.lock().unwrap();
            let bar = &state.bars[&(Vec::new(), 2)];
            (bar.message(), bar.position())
        };
        assert_eq!(
            message(&live),
            ("Each · items: 0 done, 3 running of 3".to_string(), 0)
        );
        event(
            "iteration_finished",
            json!({"step": "Each", "index": 1, "total": 3, "status": "succeeded"}),
        );
        assert_eq!(
            message(&live),
            ("Each · items: 1 done, 2 running of 3".to_string(), 1)
        );

        // A sequential loop's bar shows the item that runs.
        event(
            "step_started",
            json!({"step": "Seq", "exec": 9, "kind": "for_each", "iteration": []}),
        );
        event("loop_started", json!({"step": "Seq", "total": 4}));
        event(
            "iteration_started",
            json!({"step": "Seq", "index": 0, "total": 4}),
        );
        event(
            "iteration_started",
            json!({"step": "Seq", "index": 1, "total": 4}),
        );
        let state = live.state.lock().unwrap();
        assert_eq!(state.bars[&(Vec::new(), 9)].position(), 2);
    }

    #[test]
    fn live_bars_of_fan_out_items_with_the_same_numbers_are_kept_apart() {
        let live = Live::with_target(ProgressDrawTarget::hidden());
        let started = |lane: Vec<u64>| Progress::StepStarted {
            step: "Work".into(),
            exec: 1,
            lane,
            kind: "command".into(),
            depth: 1,
        };
        live.report(&started(vec![2, 0]));
        live.report(&started(vec![2, 1]));
        assert_eq!(live.state.lock().unwrap().bars.len(), 2);
        live.report(&Progress::StepFinished {
            step: "Work".into(),
            exec: 1,
            lane: vec![2, 1],
            status: "succeeded".into(),
            duration: 0.1,
            tokens: None,
            cost_usd: None,
        });
        let state = live.state.lock().unwrap();
        assert_eq!(state.bars.len(), 1, "item 0 still runs");
        assert!(state.bars.contains_key(&(vec![2, 0], 1)));
    }
}
