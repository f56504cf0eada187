//! The worker runtime: leases jobs from an engine, runs them with bounded concurrency, reports
//! outcomes in batches, keeps leases alive and shuts down gracefully.

mod attempt;
mod run_loop;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::{Backoff, Engine, JobEvent, Registry, Result};
use run_loop::Loop;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to serve (empty: all).
    pub queues: Vec<String>,
    /// Most jobs running at once.
    pub concurrency: usize,
    /// How often to look for due jobs when nothing in this process woke the worker (jobs
    /// enqueued by other processes, scheduled jobs coming due).
    pub poll_interval: Duration,
    /// How long running jobs may take to finish after shutdown was asked for.
    pub shutdown_grace: Duration,
    /// Timeout of an attempt whose job sets none.
    pub default_timeout: Duration,
    /// Backoff of jobs that set none.
    pub backoff: Backoff,
    /// The name leases are held in; unique per worker.
    pub owner: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            queues: Vec::new(),
            concurrency: 16,
            poll_interval: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(10),
            default_timeout: Duration::from_secs(300),
            backoff: Backoff::default(),
            owner: format!(
                "worker-{}-{}",
                std::process::id(),
                uuid::Uuid::now_v7().simple()
            ),
        }
    }
}

/// A function told of every job event, inline (see [`Worker::observe`]).
pub type EventObserver = Arc<dyn Fn(&JobEvent) + Send + Sync>;

/// Runs jobs from one engine until shut down.
pub struct Worker {
    engine: Arc<dyn Engine>,
    registry: Arc<Registry>,
    config: WorkerConfig,
    events: broadcast::Sender<JobEvent>,
    observers: Vec<EventObserver>,
}

struct Shared {
    engine: Arc<dyn Engine>,
    registry: Arc<Registry>,
    events: broadcast::Sender<JobEvent>,
    observers: Vec<EventObserver>,
    owner: Arc<str>,
    default_timeout: Duration,
    backoff: Backoff,
}

impl Shared {
    fn emit(&self, event: impl FnOnce() -> JobEvent) {
        // Building events costs allocations: skip it when nobody listens (benchmarks).
        if self.observers.is_empty() && self.events.receiver_count() == 0 {
            return;
        }
        let event = event();
        for observer in &self.observers {
            observer(&event);
        }
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event);
        }
    }
}

impl Worker {
    /// A worker for `engine` serving the kinds in `registry`.
    pub fn new(engine: Arc<dyn Engine>, registry: Registry, config: WorkerConfig) -> Self {
        let (events, _) = broadcast::channel(4096);
        Worker {
            engine,
            registry: Arc::new(registry),
            config,
            events,
            observers: Vec::new(),
        }
    }

    /// Subscribes to job lifecycle events (started, completed, failed, dead, cancelled). A
    /// subscriber that falls more than 4096 events behind loses the oldest (the receiver says
    /// how many); use [`Worker::observe`] where every event matters.
    pub fn events(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// Calls `observer` with every job event, on the task that produced it, before the event is
    /// broadcast: nothing is ever skipped, so it must be quick and must not block (a log line,
    /// a counter).
    pub fn observe(&mut self, observer: impl Fn(&JobEvent) + Send + Sync + 'static) {
        self.observers.push(Arc::new(observer));
    }

    /// Runs until `shutdown` resolves, then stops fetching, lets running jobs finish within the
    /// grace period, gives the rest back to the engine and returns once every outcome is stored.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let shared = Arc::new(Shared {
            engine: self.engine.clone(),
            registry: self.registry.clone(),
            events: self.events.clone(),
            observers: self.observers.clone(),
            owner: Arc::from(self.config.owner.as_str()),
            default_timeout: self.config.default_timeout,
            backoff: self.config.backoff,
        });
        Loop::new(shared, self.config).run(shutdown).await
    }
}
