//! The one `tracing` subscriber of the binary: which log events are shown, and how.
//!
//! Owns `--log-level`, `--log-format`, `RUST_LOG` and how they combine, and handing the flags on
//! to the processes this one starts (a supervisor's role processes log as it does). Does not
//! decide what is logged (the crates' `tracing` events do) nor touch what a command displays:
//! `run`'s progress, a command's result and its `error: ...` lines are written by the commands,
//! not through here.
//!
//! Which events pass: `--log-level` when given (or inherited, see [`LEVEL_ENV`]); else `RUST_LOG`
//! when set (an `EnvFilter`: `warn`, `orchestrate_swarm::worker=debug,info`, ...); else `info`.
//! A flag typed on the command line beats the environment, as flags do elsewhere; `RUST_LOG` is
//! the way to pick levels per target. `ORCHESTRATE_DEBUG=1` shows, on top of that, the debug
//! events of `orchestrate_base` ([`DEBUG_ENV`]): how the machine is used.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// Set for the processes this one starts when `--log-level` was given: role processes started by
/// `swarm up --log-level debug` log at debug too. A flag given to them directly wins.
pub(crate) const LEVEL_ENV: &str = "ORCHESTRATE_LOG_LEVEL";
/// As [`LEVEL_ENV`], for `--log-format`.
pub(crate) const FORMAT_ENV: &str = "ORCHESTRATE_LOG_FORMAT";

/// Set (to anything but `0`): the debug events of the OS layer (`orchestrate_base`) are shown
/// whatever the level: whether steps run in cgroups, whether readonly checks attribute writes
/// per process, and why not. For people and tests; the lines are not a format.
pub(crate) const DEBUG_ENV: &str = "ORCHESTRATE_DEBUG";

/// `--log-level`: the least severe events shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

/// `--log-format`: how each event is written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One line per event: time, level, target, message, then the fields as `key=value`.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields` with `message`), for
    /// log collectors.
    Json,
}

/// Installs the subscriber; events go to stderr. A flag not given is taken from the
/// environment its parent process set ([`LEVEL_ENV`], [`FORMAT_ENV`]). Call once, before any
/// thread is started: it also sets those variables for the processes this one starts.
pub(crate) fn install(level: Option<LogLevel>, format: Option<LogFormat>) {
    let level = level.or_else(|| inherited(LEVEL_ENV));
    let format = format.or_else(|| inherited(FORMAT_ENV));
    for (name, value) in [
        (LEVEL_ENV, level.map(|l| name_of(&l))),
        (FORMAT_ENV, format.map(|f| name_of(&f))),
    ] {
        if let Some(value) = value {
            // SAFETY: called from `cli::main` before the async runtime (or any thread) starts.
            unsafe { std::env::set_var(name, value) };
        }
    }
    let mut filter = match level {
        Some(level) => EnvFilter::default().add_directive(level.filter().into()),
        None => EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            .from_env_lossy(),
    };
    if std::env::var_os(DEBUG_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        filter = filter.add_directive("orchestrate_base=debug".parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    // A second install (tests calling `cli::main` twice in one process) keeps the first.
    let _ = match format.unwrap_or_default() {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

fn inherited<T: clap::ValueEnum>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    T::from_str(&value, true).ok()
}

fn name_of<T: clap::ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_formats_are_named_as_the_flags_take_them() {
        assert_eq!(name_of(&LogLevel::Warn), "warn");
        assert_eq!(name_of(&LogFormat::Json), "json");
        assert_eq!(
            <LogLevel as clap::ValueEnum>::from_str("debug", true),
            Ok(LogLevel::Debug)
        );
    }
}
