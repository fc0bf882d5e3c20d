//! The swarm's queue on PostgreSQL: the connection, the schema and its migrations.
//!
//! This crate owns talking to the database: connecting from a URL (whose password is never
//! shown), and the schema, created and upgraded by numbered migrations embedded in the binary.
//! The queue operations on that schema (claim, lease, fence, complete) implement the queue
//! crate's `TaskQueue` here as they land. It does not own the filesystem queue, the task records
//! on disk or the worker loop.

pub mod connect;
pub mod migrate;

pub use connect::{Db, DbError, Target};
pub use migrate::{LATEST, Migrated, migrate, schema_version};
