//! What a role process is asked to do, and what it did.
//!
//! Owns the options `agent` and the supervisor start a role process with, and its report (the
//! counts its exit code and summary come from). Does not act on them.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub replica: u32,
    /// Process what is queued, then exit (for cron and scripts).
    pub once: bool,
    /// How long in-flight tasks may run on after a stop request before they are stopped and
    /// given back to the inbox.
    pub grace: Duration,
    pub quiet: bool,
    /// Where to write the Prometheus textfile (`--metrics-dir`, `ORCHESTRATE_METRICS_DIR`).
    pub metrics_dir: Option<PathBuf>,
}

/// What the role process did, for its exit code and summary.
#[derive(Debug, Default, Clone)]
pub struct AgentReport {
    pub processed: u64,
    pub failed: u64,
    pub quarantined: u64,
    pub released: u64,
}
