//! Exit codes of `orchestrate run` and `resume` (one table, used everywhere).
//!
//! Does not choose a code for a run (`lifecycle` does, from how the run ended).

/// The run succeeded.
pub const SUCCESS: u8 = 0;
/// A step failed, or the run failed for a reason with no code of its own (a loop, a budget).
pub const STEP_FAILED: u8 = 1;
/// Invalid input: the workflow, the command line, a step's rendered input, or `outputs:`.
pub const INVALID: u8 = 2;
pub(crate) const TIMEOUT: u8 = 124;
/// Interrupted by a signal or cancelled (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;
