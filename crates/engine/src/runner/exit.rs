//! Exit codes of `orchestrate run` and `resume` (one table, used everywhere).
//!
//! Does not choose a code for a run (`lifecycle` does, from how the run ended).

/// The run succeeded.
pub const SUCCESS: u8 = 0;
/// A step failed, or a limit (loop, budget) stopped the run.
pub const STEP_FAILED: u8 = 1;
/// The workflow, its inputs or the command line are invalid.
pub const INVALID: u8 = 2;
pub(crate) const TIMEOUT: u8 = 124;
/// Interrupted by a signal or cancelled (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;
