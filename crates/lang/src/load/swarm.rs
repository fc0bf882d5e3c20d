//! The swarm settings file (`WORKSPACE/swarm.yaml`): swarm-wide daily limits and the queue's
//! database. Does not enforce the limits (the swarm does) or connect (`orchestrate-pg` does).

use std::path::Path;

use crate::model::SwarmConfig;
use crate::yaml::Value;

use super::source::{LoadError, failed, read_source, start};

pub(super) const SWARM_FIELDS: &[&str] = &["budget", "queue", "machine_labels"];
pub(super) const SWARM_BUDGET_FIELDS: &[&str] = &["max_cost_usd_per_day", "max_tokens_per_day"];

/// Where a workspace's swarm settings live, relative to WORKSPACE.
pub const SWARM_FILE: &str = "swarm.yaml";

/// Loads `WORKSPACE/swarm.yaml`; no file means no swarm-wide limits.
pub fn load_swarm(workspace: &Path) -> Result<SwarmConfig, LoadError> {
    let path = workspace.join(SWARM_FILE);
    if !path.exists() {
        return Ok(SwarmConfig::default());
    }
    load_swarm_file(&path)
}

/// Loads a swarm settings file (`budget: {max_cost_usd_per_day, max_tokens_per_day}`,
/// `queue: postgres://…`).
pub fn load_swarm_file(path: &Path) -> Result<SwarmConfig, LoadError> {
    let text = read_source(path)?;
    let fail = |diagnostics| failed(path, &text, diagnostics);
    let (root, mut loader) = start(path, &text)?;
    let mut config = SwarmConfig::default();
    let fields = if root.value == Value::Null {
        None
    } else {
        loader.fields(&root, SWARM_FIELDS, "swarm.yaml")
    };
    if let Some(fields) = &fields
        && let Some(node) = fields.value("queue")
    {
        config.queue_url = loader
            .string(node, "`queue` of swarm.yaml")
            .filter(|url| !url.trim().is_empty());
    }
    if let Some(fields) = &fields
        && let Some(node) = fields.value("machine_labels")
    {
        config.machine_labels = loader
            .labels(node, "`machine_labels` of swarm.yaml")
            .unwrap_or_default();
    }
    if let Some(fields) = &fields
        && let Some(node) = fields.value("budget")
        && let Some(budget) = loader.fields(node, SWARM_BUDGET_FIELDS, "`budget` of swarm.yaml")
    {
        if let Some(n) = budget.value("max_cost_usd_per_day") {
            config.max_cost_usd_per_day = loader.positive(n, "`budget.max_cost_usd_per_day`", 1e9);
            config.cost_at = loader.at_line(n);
        }
        if let Some(n) = budget.value("max_tokens_per_day") {
            config.max_tokens_per_day = loader
                .count(n, "`budget.max_tokens_per_day`", 1, u32::MAX)
                .map(u64::from);
            config.tokens_at = loader.at_line(n);
        }
    }
    if loader.diags.is_empty() {
        Ok(config)
    } else {
        let mut diags = loader.diags;
        diags.sort_by_key(|d| (d.line, d.column));
        Err(fail(diags))
    }
}
