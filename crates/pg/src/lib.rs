//! The swarm's queue on PostgreSQL: the connection, the schema and its migrations.
//!
//! This crate owns talking to the database: connecting from a URL (whose password is never
//! shown), and the schema, created and upgraded by numbered migrations embedded in the binary.
//! The queue's operations on that schema (enqueue, claim with a lease and a fence, heartbeat,
//! complete, requeue of expired leases) are here as statements; the role process's use of them
//! (the queue crate's `TaskQueue`) lands next. It does not own the filesystem queue, the task records
//! on disk or the worker loop.

pub mod backend;
pub mod connect;
pub mod control;
pub mod link;
pub mod migrate;
pub mod queue;

pub use backend::PgQueue;
pub use connect::{Db, DbError, Target};
pub use link::{Link, LinkEvent};
pub use migrate::{LATEST, Migrated, migrate, schema_version};
pub use queue::{Added, Claimed, Expired};
