//! The binary's one error type and its one renderer.
//!
//! Owns: what a command's failure carries (the exit code of its kind, from the exit-code table
//! `orchestrate_engine::runner::exit`, and the message) and how it reads on stderr
//! (`error: MESSAGE`). Does not decide which failures are errors: a command whose failure it has
//! already shown (a failed run's summary, `validate`'s diagnostics) returns `Ok` with the code.

use std::process::ExitCode;

use orchestrate_engine::runner::exit;

/// A command that could not do what it was asked. Messages read after "error: ", with their
/// hints (what to run or fix) in the message itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// What the user gave is wrong or does not exist: arguments, files, ids, the workspace.
    /// Exit 2.
    #[error("{0}")]
    Invalid(String),
    /// The command was valid but its work failed: I/O, a process, a timeout. Exit 1.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }

    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }

    /// The exit code this kind maps to.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Error::Invalid(_) => exit::INVALID,
            Error::Failed(_) => exit::STEP_FAILED,
        }
    }
}

/// What every command returns: the exit code of an outcome it has shown, or an error to render.
pub(crate) type Outcome = Result<ExitCode, Error>;

/// The one place an error is shown: `error: MESSAGE` on stderr; returns its exit code.
pub(crate) fn render(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_input_exits_2_and_a_failed_work_1() {
        assert_eq!(Error::invalid("x").exit_code(), exit::INVALID);
        assert_eq!(Error::failed("x").exit_code(), exit::STEP_FAILED);
    }

    #[test]
    fn the_message_is_shown_as_given() {
        assert_eq!(Error::invalid("no task `t1`").to_string(), "no task `t1`");
    }
}
