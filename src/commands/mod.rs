//! Every command of the binary, one file per command or group, each a function returning
//! [`Outcome`](crate::error::Outcome): the exit code of what it has shown, or an error that
//! `cli` renders in one place.
//!
//! Owns: what each command prints (stdout for results, stderr for progress and notes) and its
//! exit code. Does not parse arguments (`cli`) nor hold the logic of the layers below (queue,
//! engine, observe, swarm), which return data the commands print.

pub(crate) mod agent;
pub(crate) mod approve;
pub(crate) mod argv;
pub(crate) mod cluster;
pub(crate) mod db;
pub(crate) mod docs;
pub(crate) mod gc;
pub(crate) mod init;
mod loading;
pub(crate) mod observe;
pub(crate) mod run;
pub(crate) mod run_args;
pub(crate) mod signals;
pub(crate) mod steer;
pub(crate) mod swarm;
pub(crate) mod tasks;
pub(crate) mod test;
pub(crate) mod validate;

pub(crate) use run_args::{AgentArgs, ContextArgs};
