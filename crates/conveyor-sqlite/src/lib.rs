//! Conveyor's embedded engine: every job in one SQLite file.
//!
//! Several processes may share the file: leases with heartbeats decide who runs a job, the
//! database enforces idempotency keys, and write transactions are `BEGIN IMMEDIATE` so they
//! queue on SQLite's lock instead of failing. The schema is applied from numbered migrations
//! on open (see `migrations/` and `docs/sqlite-schema.md`).

mod admin;
mod claim;
mod config;
mod cron;
mod engine;
mod error;
mod export;
mod listing;
mod presence;
mod replay;
mod rows;
mod schema;
mod store;

pub use config::{SqliteConfig, Synchronous};
pub use engine::SqliteEngine;
pub use error::SqliteError;
pub use schema::{MIGRATIONS, SCHEMA_VERSION};
