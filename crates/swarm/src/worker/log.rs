//! How a role process logs: `tracing` events about its role and replica.
//!
//! Owns the `say!` macro every file of the worker logs through, the fields it adds (`role`,
//! `replica`), `--quiet`, and the events' target. Does not decide what is logged, nor install a
//! subscriber (the binary's `logging` does).

/// The target of a role process's events, whichever file of `worker` logs them: the module's
/// path before it became a folder, which `RUST_LOG` filters and the docs name.
pub(super) const TARGET: &str = "orchestrate_swarm::worker";

/// Whom a role process's log events are about: each carries the `role` and `replica` fields
/// (the `role#replica` label of the lines before `tracing`). `--quiet` drops them, except the
/// few logged with `always`.
#[derive(Debug, Clone)]
pub(super) struct Log {
    pub(super) role: String,
    pub(super) replica: u32,
    pub(super) quiet: bool,
}

/// A `tracing` event of this role process at `$level` (`INFO`, `WARN`, `ERROR`), with its role
/// and replica; then fields and the message as `tracing::event!` takes them. Nothing under
/// `--quiet` unless `always`.
macro_rules! say {
    (always $log:expr, $level:ident, $($rest:tt)+) => {{
        let log: &$crate::worker::log::Log = $log;
        tracing::event!(target: $crate::worker::log::TARGET, tracing::Level::$level, role = %log.role, replica = log.replica, $($rest)+);
    }};
    ($log:expr, $level:ident, $($rest:tt)+) => {{
        let log: &$crate::worker::log::Log = $log;
        if !log.quiet {
            say!(always log, $level, $($rest)+);
        }
    }};
}
pub(super) use say;
