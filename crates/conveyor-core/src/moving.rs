//! Moving jobs between engines (`conveyor migrate`): an engine that can hand its jobs over
//! implements [`Export`], one that can take them in implements [`Import`].

use std::time::Duration;

use async_trait::async_trait;

use crate::{Backoff, JobId, JobInfo, Result};

/// A job as it stands in one engine, with everything another engine needs to go on with it:
/// its id, state, attempts so far, last error and settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// The job as [`crate::Inspect`] shows it; `state` is `scheduled`, `available`,
    /// `retryable` or `dead` (running and finished jobs do not move).
    pub info: JobInfo,
    /// Per-attempt timeout, when the job has its own.
    pub timeout: Option<Duration>,
    /// Backoff between attempts, when the job has its own.
    pub backoff: Option<Backoff>,
}

/// What an [`Import`] call stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    /// Jobs stored by this call.
    pub stored: u64,
    /// Jobs the engine held already (an earlier, interrupted move stored them): not stored
    /// again.
    pub already: u64,
}

/// Handing jobs over to another engine.
#[async_trait]
pub trait Export: Send + Sync {
    /// Up to `limit` jobs that can move, oldest first (enqueue order, so jobs sharing an
    /// ordering key keep their order): waiting, scheduled, retrying and dead ones. Running and
    /// finished jobs are not listed.
    async fn export(&self, limit: usize) -> Result<Vec<Transfer>>;

    /// How many jobs live workers are running now: a move refuses to start while workers hold
    /// jobs, since a running job could finish on both sides. Jobs left running by a worker
    /// that died are not counted (engines with expiring leases put them back first).
    async fn running(&self) -> Result<u64>;

    /// Removes jobs another engine has stored (they must never run here too). Returns the ids
    /// it could not remove because they are no longer movable (a worker of this engine took
    /// them meanwhile: they may run on both sides). Ids no longer here are ignored.
    async fn remove_moved(&self, ids: &[JobId]) -> Result<Vec<JobId>>;
}

/// Taking in jobs another engine handed over.
#[async_trait]
pub trait Import: Send + Sync {
    /// Stores `jobs` with their ids, states, attempts and errors; returns once they are
    /// durable. Idempotent by id: a job this engine already holds (stored by a move that was
    /// interrupted before the source removed it) is not stored again, so a move run twice
    /// runs each job once.
    async fn import(&self, jobs: Vec<Transfer>) -> Result<Imported>;
}
