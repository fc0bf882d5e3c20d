//! The swarm: one process per role (worker), the supervisor that starts and restarts them, per-runtime circuit breakers, metrics, and steering (pause, cancel) from outside.

pub(crate) mod breaker;
pub mod control;
pub mod control_log;
pub mod guard;
pub mod metrics;
pub mod supervisor;
pub mod worker;
