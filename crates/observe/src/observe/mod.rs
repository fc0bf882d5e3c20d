//! Reading runs back: reports, graphs, status and logs, for people and for tools.
//!
//! Owns: turning a run's records (`events.jsonl`, `state.json`, `logs/`, the saved
//! `workflow.yaml`) into answers to "what happened, in which order, at what cost", for one run
//! or many (task runs under `processed/` and `failed/` included); drawing a workflow's graph
//! (Mermaid or Graphviz DOT) with the path a run took laid over it; the status of a run in
//! flight; and printing (or following) a run's step logs in execution order.
//!
//! Reads nothing through a run directory or record file that leads outside the workspace (a
//! symbolic link or `..`): such a run is refused by name and left out of listings.
//!
//! Does not write anything: every function here only reads, so it is safe to call while a run is
//! going (records are append-only or atomically replaced). Does not know the swarm's processes
//! (`supervisor`) or parse arguments (`cli`). The record formats are the runner's; this module
//! follows `docs/events.md` and skips what it does not know instead of failing.
//!
//! Each view is plain data with `Serialize` (for `--json`) and a `render()` for humans.
//!
//! This file only declares the submodules and re-exports the public surface; each submodule
//! owns one step of the reading, lowest first: `error`; `locate` (finding runs) and `load`
//! (reading their records); `fold` (what the events say) and `children` (child runs); `graph`
//! (the workflow's graph model) and `draw` (Mermaid and DOT); `report_data`, `analyze` (one
//! run), `many` (many runs), `report` (the entry point) and `report_text` (rendering); `format`
//! (text helpers); `status`; `logs`. No submodule imports one above it.

mod analyze;
mod children;
mod draw;
mod error;
mod fold;
mod format;
mod graph;
mod load;
mod locate;
mod logs;
mod many;
mod report;
mod report_data;
mod report_text;
mod status;
#[cfg(test)]
mod test_support;

pub use draw::{GraphFormat, graph, graph_of_run};
pub(crate) use fold::exec_label;
pub use logs::logs;
pub use report::{Report, RunSelector, report};
pub use status::{StatusView, status};
