//! What a role process is asked to do, and what it did.
//!
//! Owns the options `agent` and the supervisor start a role process with, and its report (the
//! counts its exit code and summary come from). Does not act on them.

use std::path::PathBuf;
use std::time::Duration;

/// How a role process runs (`orchestrate agent ROLE`, or a replica the supervisor starts).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Which replica of the role this is, from 1: its log label and metrics say it.
    pub replica: u32,
    /// Process what is queued, then exit (for cron and scripts).
    pub once: bool,
    /// How long in-flight tasks may run on after a stop request before they are stopped and
    /// given back to the inbox.
    pub grace: Duration,
    /// Print only the few lines logged always (`--quiet`).
    pub quiet: bool,
    /// Where to write the Prometheus textfile (`--metrics-dir`, `ORCHESTRATE_METRICS_DIR`).
    pub metrics_dir: Option<PathBuf>,
}

/// What the role process did, for its exit code and summary.
#[derive(Debug, Default, Clone)]
pub struct AgentReport {
    /// Tasks that finished successfully (moved to `processed/`).
    pub processed: u64,
    /// Tasks whose workflow failed (moved to `failed/`), or whose finish failed.
    pub failed: u64,
    /// Task files quarantined as bad input (moved to `failed/` without running).
    pub quarantined: u64,
    /// Tasks handed back to the inbox uncharged because this process was stopping.
    pub released: u64,
}
