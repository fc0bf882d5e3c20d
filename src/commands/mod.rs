//! Every command of the binary, one file per command or group, each a function returning
//! [`Outcome`](crate::error::Outcome): the exit code of what it has shown, or an error that
//! `cli` renders in one place.
//!
//! Owns: what each command prints (stdout for results, stderr for progress and notes) and its
//! exit code. Does not parse arguments (`cli`) nor hold the logic of the layers below (queue,
//! engine, observe, swarm), which return data the commands print.

pub mod agent;
pub mod approve;
pub mod argv;
pub mod docs;
pub mod gc;
pub mod init;
mod loading;
pub mod observe;
pub mod run;
pub mod run_args;
pub mod signals;
pub mod steer;
pub mod swarm;
pub mod tasks;
pub mod test;
pub mod validate;

pub use run_args::{AgentArgs, ContextArgs};
