//! Child runs (a `workflow:` step's) as a parent's events name them, each with its own recorded
//! run id.
//!
//! Does not read the child's own events: `status` follows a running child further.

use orchestrate_engine::event::Event;
use serde::Serialize;
use serde_json::Value;
use std::path::Path;

/// A child run (a `workflow:` step's), as its parent's status lists it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChildView {
    pub(crate) step: String,
    pub(crate) exec: u64,
    pub(crate) workflow: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) run_id: Option<String>,
    /// Its RUN_ROOT, relative to the workspace.
    pub(crate) path: String,
    /// `running`, `succeeded`, `failed`, `interrupted`, or `stopped` (unfinished, engine gone).
    pub(crate) status: String,
    /// While it runs (in `status`): the step it is at, its own running child's included
    /// (`Build › Test`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) now: Option<String>,
}

/// The child runs a run's events name (`child_started`, `child_finished`), with each child's
/// own record for its run id and, while unfinished, its status. A child is known by its
/// directory: fan-out items number their executions each from 1, so `exec` alone repeats.
pub(super) fn children_of(workspace: &Path, events: &[Value], running: bool) -> Vec<ChildView> {
    let mut out: Vec<ChildView> = Vec::new();
    for e in events {
        match Event::from_record(e) {
            Event::ChildStarted(started) => {
                let path = started.run_root;
                out.retain(|c| c.path != path);
                out.push(ChildView {
                    step: started.step,
                    exec: started.exec,
                    workflow: started.workflow,
                    run_id: None,
                    path,
                    status: if running { "running" } else { "stopped" }.to_string(),
                    now: None,
                });
            }
            Event::ChildFinished(finished) => {
                if let Some(child) = out.iter_mut().find(|c| c.path == finished.run_root) {
                    child.run_id = finished.run_id;
                    child.status = finished.status.unwrap_or_else(|| "unknown".into());
                }
            }
            _ => {}
        }
    }
    for child in &mut out {
        if child.run_id.is_none() {
            child.run_id = orchestrate_engine::runs::recorded_run_id(&workspace.join(&child.path));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn children_of_fan_out_items_with_the_same_exec_are_both_listed() {
        let child = |event: &str, lane: u64| {
            json!({"event": event, "step": "Sub", "exec": 1, "lane": [1, lane], "workflow": "c.yaml",
                "run_root": format!(".orchestrate/runs/R/children/0001.{lane:04}.0001-Sub"),
                "run_id": format!("C{lane}"), "status": "succeeded"})
        };
        let events = [
            child("child_started", 0),
            child("child_started", 1),
            child("child_finished", 1),
            child("child_finished", 0),
        ];
        let children = children_of(Path::new("/nowhere"), &events, false);
        let ids: Vec<Option<&str>> = children.iter().map(|c| c.run_id.as_deref()).collect();
        assert_eq!(ids, [Some("C0"), Some("C1")]);
    }
}
