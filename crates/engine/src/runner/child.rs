//! `workflow:` steps at run time: the child run, a [`Runner`] of its own under the parent's
//! RUN_ROOT, started, resumed or reused, with the configuration it inherits, its progress shown
//! under the parent's step, and its report turned into the step's result.
//!
//! Does not load child files (`orchestrate_lang::load` loads them with their parent) nor hold
//! the child-run records (`crate::subflow`).

use serde_json::{Map, Value, json};

use super::result::failed_result;
use super::scope::render_json;
use super::{LoopFrame, RunError, Runner};
use orchestrate_lang::model::Step;

impl Runner {
    /// A `workflow:` step: renders `with:` in this run's scope and runs the child (`subflow`),
    /// between a `child_started` and a `child_finished` event; the child's spending counts as
    /// this run's.
    pub(super) async fn sub_workflow(
        &mut self,
        step: &Step,
        exec: u64,
        sub: &orchestrate_lang::model::SubWorkflow,
        loops: &[LoopFrame],
    ) -> Result<Value, RunError> {
        let mut with = Map::new();
        for input in &sub.with {
            match render_json(&input.value, &self.scope(loops)) {
                Ok(value) => {
                    with.insert(input.key.clone(), value);
                }
                Err(e) => {
                    return Ok(failed_result(2, format!("in `with.{}`: {e}", input.key)));
                }
            }
        }
        let root = crate::subflow::child_root(&self.dir.root, &self.lane, exec, &step.name);
        self.event(
            "child_started",
            json!({"step": step.name, "exec": exec, "workflow": sub.path, "run_root": self.relative(&root)}),
            true,
        )?;
        if let Some(name) = root.file_name() {
            self.children
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(
                    name.to_string_lossy().into_owned(),
                    json!({"step": step.name, "exec": exec, "lane": self.lane, "workflow": sub.path, "run_root": self.relative(&root)}),
                );
            if self.config.resumable && self.lane.is_empty() {
                // The parent's state names its running child at once (a lane's owner does at
                // its next snapshot).
                self.snapshot()?;
            }
        }
        self.progress(&format!("▶ {} runs workflow {}", step.name, sub.path));
        let child = crate::subflow::ChildRun {
            step,
            sub,
            exec,
            lane: self.lane.clone(),
            with,
            parent_root: &self.dir.root,
            parent_run_id: &self.state.run_id,
            inherited: self.budget.handed_down(),
            secrets: self.secret_names.iter().cloned().collect(),
        };
        let outcome = crate::subflow::run(&self.config, child, step.timeout).await;
        let mut result = outcome.result;
        self.budget.count(&result);
        if result["status"] == "failed"
            && let Some(crossing) = self.budget.check(self.budget.spent.get())
        {
            // A limit of this run (or an ancestor's) stopped the child: this run stops too,
            // taking no `on` edge, and resume runs the step (continuing its child) again.
            result["budget_exceeded"] = json!(crossing.limit);
            self.budget.cross(crossing.limit);
        }
        self.event(
            "child_finished",
            json!({
                "step": step.name,
                "exec": exec,
                "workflow": sub.path,
                "run_id": outcome.run_id,
                "run_root": self.relative(&outcome.run_root),
                "resumed": outcome.resumed,
                "reused": outcome.reused,
                "status": result["status"],
                "exit_code": result["exit_code"],
            }),
            true,
        )?;
        Ok(result)
    }
}
