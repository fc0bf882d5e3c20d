//! Exit codes of `orchestrate run` and `resume` (one table, used everywhere).
//!
//! Does not choose a code for a run (`lifecycle` does, from how the run ended).

pub const SUCCESS: u8 = 0;
pub const STEP_FAILED: u8 = 1;
pub const INVALID: u8 = 2;
pub(crate) const TIMEOUT: u8 = 124;
pub const INTERRUPTED: u8 = 130;
