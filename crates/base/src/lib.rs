//! The lowest layer: processes and files (spawning a step in its own group and cgroup, the one OS layer for processes in `process`, durable writes, versioned JSON records, workspace paths, snapshots of a workspace), clocks, ids and their hash, and figures for people. Knows nothing of workflows or queues.

pub mod cgroup;
pub mod clock;
pub mod exec;
pub mod fingerprint;
pub mod fsutil;
pub mod hash;
pub mod held_files;
pub mod human;
pub mod ids;
pub mod io_err;
pub mod json_file;
pub mod process;
pub(crate) mod spawn;
pub mod write_watch;
