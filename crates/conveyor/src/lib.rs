//! Conveyor: background jobs for Rust, on an embedded SQLite file by default.
//!
//! ```no_run
//! use std::time::Duration;
//! use conveyor::{handler_fn, Conveyor, NewJob, Outcome, Registry, WorkerConfig};
//!
//! # async fn demo() -> conveyor::Result<()> {
//! let conveyor = Conveyor::open("sqlite://conveyor.db")?;
//! let mut registry = Registry::with_builtins();
//! registry.register(handler_fn("greet", |ctx| async move {
//!     println!("hello from job {}", ctx.id());
//!     Outcome::Complete
//! }));
//! conveyor.dispatch(NewJob::new("greet", serde_json::json!({"name": "ada"}))).await?;
//! conveyor
//!     .dispatch(NewJob::new("greet", serde_json::json!({})).run_in(Duration::from_secs(60)))
//!     .await?;
//! conveyor.serve(registry, WorkerConfig::default(), tokio::signal::ctrl_c()).await?;
//! # Ok(()) }
//! ```

mod migrate;

pub use migrate::{Migration, DEFAULT_BATCH};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use conveyor_core::*;
pub use conveyor_kafka::{Ingest, KafkaConfig, KafkaEngine};
pub use conveyor_sqlite::{SqliteConfig, SqliteEngine, Synchronous};

/// The default backend URL: a `conveyor.db` file in the current folder.
pub const DEFAULT_BACKEND: &str = "sqlite://conveyor.db";

/// A boxed future that can move between threads.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Opens the engine a backend URL names, when it has every capability
/// (`sqlite://PATH[?options]`); [`Conveyor::connect`] opens any engine.
pub fn open_backend(url: &str) -> Result<Arc<dyn Backend>> {
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(SqliteEngine::open_url(url)?));
    }
    Err(unknown_scheme(url))
}

/// Opens one engine's backend URL: the engine and the capabilities it declares.
type Opener = fn(String) -> BoxFuture<'static, Result<Opened>>;

/// The engines a backend URL can name, by scheme. Adding an engine is one line here (and the
/// engine's crate).
const ENGINES: &[(&str, Opener)] = &[("sqlite:", open_sqlite), ("kafka://", open_kafka)];

fn open_sqlite(url: String) -> BoxFuture<'static, Result<Opened>> {
    Box::pin(async move {
        let engine = tokio::task::spawn_blocking(move || SqliteEngine::open_url(&url))
            .await
            .map_err(|e| Error::Closed(format!("opening the backend: {e}")))??;
        let engine = Arc::new(engine);
        Ok(Opened {
            capabilities: engine.capabilities(),
            engine,
        })
    })
}

fn open_kafka(url: String) -> BoxFuture<'static, Result<Opened>> {
    Box::pin(async move {
        let engine = Arc::new(KafkaEngine::connect(KafkaConfig::from_url(&url)?).await?);
        Ok(Opened {
            capabilities: engine.capabilities(),
            engine,
        })
    })
}

/// Opens any backend URL through the engine its scheme names.
pub async fn open_engine(url: &str) -> Result<Opened> {
    let (_, open) = ENGINES
        .iter()
        .find(|(scheme, _)| url.starts_with(scheme))
        .ok_or_else(|| unknown_scheme(url))?;
    open(url.to_string()).await
}

fn unknown_scheme(url: &str) -> Error {
    let scheme = url.split("://").next().unwrap_or(url);
    Error::invalid(
        "backend",
        format!("unknown scheme {scheme:?} in {url:?}; use sqlite://PATH or kafka://HOST:PORT"),
    )
}

/// A handle on one backend: dispatch jobs, inspect and control them, run workers.
#[derive(Clone)]
pub struct Conveyor {
    engine: Arc<dyn Engine>,
    /// What the engine offers beyond the core; a verb it lacks fails with a clear error.
    capabilities: Capabilities,
    name: &'static str,
}

impl Conveyor {
    /// Opens a SQLite backend URL, e.g. `sqlite://conveyor.db?synchronous=normal`.
    pub fn open(url: &str) -> Result<Self> {
        if !url.starts_with("sqlite:") {
            return Err(unknown_scheme(url));
        }
        let engine = Arc::new(SqliteEngine::open_url(url)?);
        Ok(Self::from_parts(engine.clone(), engine.capabilities()))
    }

    /// Opens any backend URL: `sqlite://PATH[?options]` or `kafka://HOST:PORT[,...][?options]`
    /// (an empty host list uses `KAFKA_BROKERS`). Kafka topics are created if missing.
    pub async fn connect(url: &str) -> Result<Self> {
        let opened = open_engine(url).await?;
        Ok(Self::from_parts(opened.engine, opened.capabilities))
    }

    /// Wraps an engine with the capabilities every [`Backend`] has; those an engine adds
    /// (job lists by state, export, import) come with [`Conveyor::from_parts`] and the
    /// engine's own `capabilities()`.
    pub fn from_backend(backend: Arc<dyn Backend>) -> Self {
        let capabilities = Capabilities::all(&backend);
        Self::from_parts(backend.as_engine(), capabilities)
    }

    /// Wraps an engine and the capabilities it offers.
    pub fn from_parts(engine: Arc<dyn Engine>, capabilities: Capabilities) -> Self {
        Conveyor {
            name: engine.name(),
            engine,
            capabilities,
        }
    }

    /// The core engine behind this handle.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The capabilities this handle's engine offers.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn need<'a, T: ?Sized>(&self, capability: &'a Option<Arc<T>>, what: &str) -> Result<&'a T> {
        capability.as_deref().ok_or_else(|| {
            Error::invalid(
                "backend",
                format!(
                    "the {} engine does not offer {what} yet; use a sqlite:// backend for {what}",
                    self.name
                ),
            )
        })
    }

    /// Enqueues a job; returns once it is durable.
    pub async fn dispatch(&self, job: NewJob) -> Result<Enqueued> {
        self.engine.enqueue(job).await
    }

    /// Enqueues many jobs in one storage transaction.
    pub async fn dispatch_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        self.engine.enqueue_batch(jobs).await
    }

    /// One job's status, attempts, last error and progress.
    pub async fn status(&self, id: JobId) -> Result<Option<JobInfo>> {
        self.need(&self.capabilities.inspect, "job status")?
            .job(id)
            .await
    }

    /// Cancels a job that has not finished.
    pub async fn cancel(&self, id: JobId) -> Result<JobInfo> {
        self.need(&self.capabilities.control, "cancel")?
            .cancel(id)
            .await
    }

    /// Counts per queue and state.
    pub async fn stats(&self) -> Result<Stats> {
        self.need(&self.capabilities.statistics, "stats")?
            .stats()
            .await
    }

    /// One page of the jobs in a state (keyset pages: pass the page's `next` as the next
    /// query's `after`).
    pub async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage> {
        self.need(&self.capabilities.list_jobs, "job lists by state")?
            .list_jobs(query)
            .await
    }

    /// The connected workers and what each runs.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        self.need(&self.capabilities.workers, "the workers list")?
            .workers()
            .await
    }

    /// The dead-letter list, most recent first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.need(&self.capabilities.dead_letter_list, "the dead-letter list")?
            .list_dead(limit)
            .await
    }

    /// Puts a dead job back with its attempts reset.
    pub async fn retry_dead(&self, id: JobId) -> Result<JobInfo> {
        self.need(&self.capabilities.dead_letters, "dead-letter retry")?
            .retry_dead(id)
            .await
    }

    /// Removes every job of `queue` that waits for its first attempt (retries are kept); returns how many.
    pub async fn purge(&self, queue: &str) -> Result<u64> {
        self.need(&self.capabilities.control, "purge")?
            .purge_queue(queue)
            .await
    }

    /// Deletes completed and cancelled jobs that finished more than `older_than` ago.
    pub async fn cleanup(&self, older_than: Duration) -> Result<u64> {
        let before = chrono::Duration::from_std(older_than)
            .ok()
            .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
            .ok_or_else(|| Error::invalid("older_than", format!("{older_than:?} is too long")))?;
        self.need(&self.capabilities.control, "cleanup")?
            .cleanup(before)
            .await
    }

    /// Puts every dead job back with attempts reset; returns how many.
    pub async fn retry_all_dead(&self) -> Result<u64> {
        self.retry_all_dead_with(&|_, _| {}).await
    }

    /// Like [`Conveyor::retry_all_dead`], telling `progress` (done, total) as jobs go back.
    pub async fn retry_all_dead_with(&self, progress: &Progress) -> Result<u64> {
        self.need(&self.capabilities.dead_letters, "dead-letter retry")?
            .retry_all_dead(progress)
            .await
    }

    /// Enqueues again, with new ids, every job of `queue` enqueued at or after `since` that
    /// came due; returns the new ids, oldest first. Each names the job it re-runs
    /// (`JobInfo::replay_of`). `progress` hears (done, total).
    pub async fn replay(
        &self,
        queue: &str,
        since: chrono::DateTime<chrono::Utc>,
        progress: &Progress,
    ) -> Result<Vec<JobId>> {
        self.need(&self.capabilities.replay, "replay")?
            .replay(queue, since, progress)
            .await
    }

    /// Deletes every dead job; returns how many.
    pub async fn purge_dead(&self) -> Result<u64> {
        self.need(&self.capabilities.dead_letters, "dead-letter purge")?
            .purge_dead()
            .await
    }

    /// Every recurring schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<CronEntry>> {
        self.need(&self.capabilities.schedules, "cron")?
            .list_cron()
            .await
    }

    /// Adds or replaces a recurring schedule.
    pub async fn schedule(&self, entry: CronEntry) -> Result<CronEntry> {
        self.need(&self.capabilities.schedules, "cron")?
            .upsert_cron(entry)
            .await
    }

    /// Removes a recurring schedule; false when there was none.
    pub async fn unschedule(&self, name: &str) -> Result<bool> {
        self.need(&self.capabilities.schedules, "cron")?
            .remove_cron(name)
            .await
    }

    /// A worker for this backend (call [`Worker::events`] before [`Worker::run`] to listen).
    pub fn worker(&self, registry: Registry, config: WorkerConfig) -> Worker {
        Worker::new(self.engine.clone(), registry, config)
    }

    /// Runs a worker and the cron scheduler until `shutdown` resolves, then drains gracefully.
    pub async fn serve(
        &self,
        registry: Registry,
        config: WorkerConfig,
        shutdown: impl Future<Output = impl Sized> + Send,
    ) -> Result<()> {
        self.serve_worker(self.worker(registry, config), shutdown)
            .await
    }

    /// Like [`Conveyor::serve`] for a worker you built (for example after subscribing to its
    /// events).
    pub async fn serve_worker(
        &self,
        worker: Worker,
        shutdown: impl Future<Output = impl Sized> + Send,
    ) -> Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // The cron scheduler runs where the engine stores schedules; an engine without them
        // (Kafka, until its part 2) serves workers only, and says so.
        let cron = match &self.capabilities.schedules {
            Some(schedules) => {
                let mut cron_stop = stop_rx.clone();
                Some(tokio::spawn(run_scheduler(
                    schedules.clone(),
                    Duration::from_secs(1),
                    async move {
                        let _ = cron_stop.wait_for(|stop| *stop).await;
                    },
                )))
            }
            None => {
                tracing::warn!(
                    engine = self.name,
                    "this engine has no cron schedules yet: serving workers only"
                );
                None
            }
        };
        let mut worker_stop = stop_rx;
        let worker = worker.run(async move {
            let _ = worker_stop.wait_for(|stop| *stop).await;
        });
        tokio::pin!(worker);
        tokio::pin!(shutdown);
        let result = tokio::select! {
            result = &mut worker => result,
            _ = &mut shutdown => {
                let _ = stop_tx.send(true);
                worker.await
            }
        };
        let _ = stop_tx.send(true);
        if let Some(cron) = cron {
            let _ = cron.await;
        }
        result
    }
}

/// Compiles the README's Rust example as a doc test, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
