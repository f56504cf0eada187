//! The engine seam: a small core trait every engine implements, plus capability traits.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::{
    CronEntry, DeadLetter, Enqueued, Job, JobId, JobInfo, JobPage, JobQuery, NewJob, Report,
    Result, Stats, WorkerInfo,
};

/// What a worker asks for when it fetches.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// Identifies the worker process; leases are held in its name.
    pub owner: String,
    /// Queues to take jobs from (empty: every queue).
    pub queues: Vec<String>,
    /// Most jobs to lease in this call.
    pub limit: usize,
}

/// What a heartbeat found out about the leases it renewed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Jobs a user asked to cancel: the worker stops them and reports them cancelled.
    pub cancel: Vec<JobId>,
    /// Jobs whose lease this worker no longer holds (rescued after it expired): the worker
    /// stops them without a report, since another worker may run them now.
    pub lost: Vec<JobId>,
}

/// The core of an engine: store jobs, lease them to workers, record outcomes.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Short name for logs and benchmarks (`sqlite`, `kafka`).
    fn name(&self) -> &'static str;

    /// Stores one job. Returns once the job is durable (or was a duplicate).
    async fn enqueue(&self, job: NewJob) -> Result<Enqueued>;

    /// Stores many jobs at once; all are validated before any is stored.
    async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>>;

    /// Records finished attempts, then leases up to `fetch.limit` due jobs.
    ///
    /// A job stays leased until its report is durable; engines may do both steps in one
    /// storage transaction.
    async fn exchange(&self, reports: Vec<Report>, fetch: &Fetch) -> Result<Vec<Job>>;

    /// Keeps the leases of `running` (jobs `owner` runs or finished without a stored report)
    /// alive; says which of them a user asked to cancel and which leases were already lost.
    /// A worker calls it while idle too (`running` empty): it says the worker is connected.
    async fn heartbeat(&self, owner: &str, running: &[JobId]) -> Result<Renewal>;

    /// How often a worker must call [`Engine::heartbeat`] to keep its leases.
    fn heartbeat_interval(&self) -> Duration;

    /// How long a lease lasts without a heartbeat, for engines whose leases expire by time
    /// (`None`: they do not). A worker stops an attempt whose lease it could not renew within
    /// this time, since the engine may already have handed the job to another worker.
    fn lease(&self) -> Option<Duration> {
        None
    }

    /// Stores the progress a handler reported for a job it holds.
    async fn set_progress(&self, owner: &str, id: JobId, progress: serde_json::Value)
        -> Result<()>;

    /// Notified when this process enqueues a job, so a worker wakes without polling.
    fn waker(&self) -> Arc<Notify>;

    /// Largest payload (serialized bytes) this engine accepts.
    fn max_payload_bytes(&self) -> usize;

    /// Called once when the worker `owner` stopped, after its last outcomes were stored:
    /// engines with per-worker resources (a Kafka consumer in a group) release them here.
    async fn leave(&self, owner: &str) -> Result<()> {
        let _ = owner;
        Ok(())
    }
}

/// Reading one job by id.
#[async_trait]
pub trait Inspect: Send + Sync {
    /// One job by id.
    async fn job(&self, id: JobId) -> Result<Option<JobInfo>>;
}

/// Counting jobs per queue and state.
#[async_trait]
pub trait Statistics: Send + Sync {
    /// Counts per queue and state.
    async fn stats(&self) -> Result<Stats>;
}

/// Changing jobs from outside a worker.
#[async_trait]
pub trait Control: Send + Sync {
    /// Cancels a job that has not finished. A running job is cancelled by its worker at the
    /// next heartbeat; the returned info shows the state after the call.
    async fn cancel(&self, id: JobId) -> Result<JobInfo>;
    /// Removes every job of `queue` that waits for its first attempt (never started); returns
    /// how many. Jobs that already ran an attempt and wait for the next are kept: a purge never
    /// drops a job its user expects to be retried.
    async fn purge_queue(&self, queue: &str) -> Result<u64>;
    /// Deletes completed and cancelled jobs that finished before `before`; returns how many.
    async fn cleanup(&self, before: DateTime<Utc>) -> Result<u64>;
}

/// Reading the dead-letter list.
#[async_trait]
pub trait DeadLetterList: Send + Sync {
    /// Dead jobs, most recent first.
    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>>;
}

/// Hears how far a long operation got: (done, total).
pub type Progress = dyn Fn(u64, u64) + Send + Sync;

/// Changing the dead-letter list: retry and purge.
#[async_trait]
pub trait DeadLetters: DeadLetterList {
    /// Puts a dead job back with a fresh set of attempts (as many as it was enqueued with).
    /// Attempt numbers go on from the last one, so a late report of an earlier attempt can
    /// never match the new lease.
    async fn retry_dead(&self, id: JobId) -> Result<JobInfo>;
    /// Puts every dead job back; returns how many. `progress` hears (done, total) as the jobs
    /// go back, for a progress bar over large lists.
    async fn retry_all_dead(&self, progress: &Progress) -> Result<u64>;
    /// Deletes every dead job; returns how many.
    async fn purge_dead(&self) -> Result<u64>;
}

/// Recurring (cron) schedules.
#[async_trait]
pub trait Schedules: Send + Sync {
    /// Every entry, by name.
    async fn list_cron(&self) -> Result<Vec<CronEntry>>;
    /// Adds or replaces an entry.
    async fn upsert_cron(&self, entry: CronEntry) -> Result<CronEntry>;
    /// Removes an entry; false when there was none.
    async fn remove_cron(&self, name: &str) -> Result<bool>;
    /// Enqueues one job for every entry due at `now` and moves it to its next tick. Several
    /// processes may call this at once: each tick fires exactly once.
    async fn fire_due_cron(&self, now: DateTime<Utc>) -> Result<Vec<JobId>>;
}

/// Running a queue's jobs again (`conveyor replay`).
#[async_trait]
pub trait Replay: Send + Sync {
    /// Enqueues again, with new ids, every job of `queue` enqueued at or after `since` that
    /// came due (whatever became of it: completed, dead, cancelled or still waiting), oldest
    /// first; returns the new ids in that order. Each new job names the job it re-runs
    /// (`replay_of`) and keeps its kind, payload, priority, attempts allowed, timeout, backoff
    /// and ordering key, but not its idempotency key (a replay is a new run on purpose).
    /// `progress` hears (done, total).
    async fn replay(
        &self,
        queue: &str,
        since: DateTime<Utc>,
        progress: &Progress,
    ) -> Result<Vec<JobId>>;
}

/// The workers connected to the storage: who is there and what each runs (the dashboard's
/// Workers page, `GET /v1/workers`). A worker is there from its first heartbeat until it
/// leaves, or until it missed a few heartbeats (killed without leaving).
#[async_trait]
pub trait Workers: Send + Sync {
    /// Every connected worker, sorted by owner.
    async fn workers(&self) -> Result<Vec<WorkerInfo>>;
}

/// Jobs listed by state, a page at a time (the dashboard's Jobs page, `GET /v1/jobs`).
#[async_trait]
pub trait ListJobs: Send + Sync {
    /// One page of the jobs `query` asks for; a cursor this engine did not write is an
    /// invalid-input error naming `after`.
    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage>;
}

/// Everything a full engine offers; what the CLI, the HTTP API and the conformance suite use.
pub trait Backend:
    Engine + Inspect + Statistics + Control + DeadLetters + Schedules + Replay + Workers
{
    /// Upcasts to the core trait, for the worker runtime.
    fn as_engine(self: Arc<Self>) -> Arc<dyn Engine>;
    /// Upcasts to the cron capability, for the scheduler.
    fn as_schedules(self: Arc<Self>) -> Arc<dyn Schedules>;
    /// Upcasts to the replay capability.
    fn as_replay(self: Arc<Self>) -> Arc<dyn Replay>;
}

impl<T> Backend for T
where
    T: Engine + Inspect + Statistics + Control + DeadLetters + Schedules + Replay + Workers,
{
    fn as_engine(self: Arc<Self>) -> Arc<dyn Engine> {
        self
    }
    fn as_schedules(self: Arc<Self>) -> Arc<dyn Schedules> {
        self
    }
    fn as_replay(self: Arc<Self>) -> Arc<dyn Replay> {
        self
    }
}
