//! The worker runtime: leases jobs from an engine, runs them with bounded concurrency, reports
//! outcomes in batches, keeps leases alive and shuts down gracefully.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::{
    now_ms, Backoff, Completion, Engine, Fetch, Job, JobContext, JobEvent, JobId, Outcome,
    Registry, Report, Result,
};

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

/// Runs jobs from one engine until shut down.
pub struct Worker {
    engine: Arc<dyn Engine>,
    registry: Arc<Registry>,
    config: WorkerConfig,
    events: broadcast::Sender<JobEvent>,
}

struct Shared {
    engine: Arc<dyn Engine>,
    registry: Arc<Registry>,
    events: broadcast::Sender<JobEvent>,
    owner: Arc<str>,
    default_timeout: Duration,
    backoff: Backoff,
}

impl Shared {
    fn emit(&self, event: impl FnOnce() -> JobEvent) {
        // Building events costs allocations: skip it when nobody listens (benchmarks).
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event());
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
        }
    }

    /// Subscribes to job lifecycle events (started, completed, failed, dead, cancelled).
    pub fn events(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// Runs until `shutdown` resolves, then stops fetching, lets running jobs finish within the
    /// grace period, gives the rest back to the engine and returns once every outcome is stored.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let shared = Arc::new(Shared {
            engine: self.engine.clone(),
            registry: self.registry.clone(),
            events: self.events.clone(),
            owner: Arc::from(self.config.owner.as_str()),
            default_timeout: self.config.default_timeout,
            backoff: self.config.backoff,
        });
        Loop {
            shared,
            config: self.config,
            running: HashMap::new(),
            pending: Vec::new(),
            done: mpsc::unbounded_channel(),
        }
        .run(shutdown)
        .await
    }
}

struct Loop {
    shared: Arc<Shared>,
    config: WorkerConfig,
    running: HashMap<JobId, (u32, JoinHandle<()>)>,
    pending: Vec<Report>,
    done: (
        mpsc::UnboundedSender<Report>,
        mpsc::UnboundedReceiver<Report>,
    ),
}

impl Loop {
    async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let engine = self.shared.engine.clone();
        let waker = engine.waker();
        let mut heartbeat = tokio::time::interval(engine.heartbeat_interval());
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fetch = Fetch {
            owner: self.config.owner.clone(),
            queues: self.config.queues.clone(),
            limit: 0,
        };
        tokio::pin!(shutdown);
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut error_delay = Duration::from_millis(50);
        loop {
            self.collect_done();
            fetch.limit = match deadline {
                Some(_) => 0,
                None => self.config.concurrency.saturating_sub(self.running.len()),
            };
            // Registered before the fetch so an enqueue during the fetch is not missed.
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if fetch.limit > 0 || !self.pending.is_empty() {
                let reports = std::mem::take(&mut self.pending);
                match engine.exchange(reports.clone(), &fetch).await {
                    Ok(jobs) => {
                        tracing::trace!(reported = reports.len(), fetched = jobs.len(), "exchange");
                        error_delay = Duration::from_millis(50);
                        for job in jobs {
                            self.start(job);
                        }
                    }
                    Err(err) => {
                        self.pending = reports;
                        if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                            return Err(err);
                        }
                        tracing::warn!(error = %err, retry_in = ?error_delay, "fetch failed");
                        tokio::time::sleep(error_delay).await;
                        error_delay = (error_delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            if deadline.is_some() && self.running.is_empty() && self.pending.is_empty() {
                return engine.leave(&self.config.owner).await;
            }
            let idle = deadline.is_none() && self.running.len() < self.config.concurrency;
            tokio::select! {
                biased;
                Some(report) = self.done.1.recv() => self.finished(report),
                _ = &mut shutdown, if deadline.is_none() => {
                    tracing::info!(running = self.running.len(), "shutting down: no new jobs");
                    deadline = Some(tokio::time::Instant::now() + self.config.shutdown_grace);
                }
                _ = heartbeat.tick() => self.heartbeat().await,
                _ = &mut notified, if idle => {}
                _ = tokio::time::sleep(self.config.poll_interval), if idle => {}
                _ = sleep_until_opt(deadline) => {
                    tracing::warn!(abandoned = self.running.len(), "grace period over: releasing unfinished jobs");
                    let ids: Vec<JobId> = self.running.keys().copied().collect();
                    self.stop(&ids, Completion::Released).await;
                }
            }
        }
    }

    fn collect_done(&mut self) {
        while let Ok(report) = self.done.1.try_recv() {
            self.finished(report);
        }
    }

    fn finished(&mut self, report: Report) {
        self.running.remove(&report.id);
        self.pending.push(report);
    }

    fn start(&mut self, job: Job) {
        let Some(handler) = self.shared.registry.get(&job.kind).cloned() else {
            let error = format!(
                "no handler registered for kind {:?} (this worker serves: {})",
                job.kind,
                self.shared.registry.kinds().join(", ")
            );
            tracing::error!(job = %job.id, %error, "unknown kind: dead-lettered");
            self.shared.emit(|| JobEvent::Dead {
                id: job.id,
                kind: job.kind.clone(),
                error: error.clone(),
            });
            self.pending.push(Report {
                id: job.id,
                attempt: job.attempt,
                completion: Completion::Dead { error },
            });
            return;
        };
        let (id, attempt) = (job.id, job.attempt);
        let shared = self.shared.clone();
        let done = self.done.0.clone();
        let task = tokio::spawn(async move {
            let report = run_attempt(&shared, handler, Arc::new(job)).await;
            let _ = done.send(report);
        });
        self.running.insert(id, (attempt, task));
    }

    async fn heartbeat(&mut self) {
        let ids: Vec<JobId> = self.running.keys().copied().collect();
        match self.shared.engine.heartbeat(&self.config.owner, &ids).await {
            Ok(cancelled) if !cancelled.is_empty() => {
                tracing::info!(count = cancelled.len(), "cancelling jobs on request");
                self.stop(&cancelled, Completion::Cancelled).await;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "heartbeat failed; leases may expire"),
        }
    }

    /// Aborts the given running jobs; those that did not report first get `completion`.
    async fn stop(&mut self, ids: &[JobId], completion: Completion) {
        let mut stopped = Vec::new();
        for id in ids {
            if let Some((attempt, task)) = self.running.remove(id) {
                task.abort();
                // Waiting for the aborted task guarantees it can no longer report.
                let _ = task.await;
                stopped.push((*id, attempt));
            }
        }
        let mut reported = Vec::new();
        while let Ok(report) = self.done.1.try_recv() {
            reported.push(report.id);
            self.finished(report);
        }
        for (id, attempt) in stopped {
            if !reported.contains(&id) {
                self.pending.push(Report {
                    id,
                    attempt,
                    completion: completion.clone(),
                });
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn run_attempt(shared: &Shared, handler: Arc<dyn crate::Handler>, job: Arc<Job>) -> Report {
    shared.emit(|| JobEvent::Started {
        id: job.id,
        kind: job.kind.clone(),
        attempt: job.attempt,
    });
    let started = Instant::now();
    let timeout = job.timeout.unwrap_or(shared.default_timeout);
    let ctx = JobContext::new(job.clone(), shared.engine.clone(), shared.owner.clone());
    let attempt = AssertUnwindSafe(handler.handle(ctx)).catch_unwind();
    let outcome = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => Outcome::Retry(format!("handler panicked: {}", panic_message(&panic))),
        Err(_) => Outcome::Retry(format!("timed out after {}", humanize(timeout))),
    };
    let backoff = job.backoff.unwrap_or(shared.backoff);
    let completion = decide(&job, outcome, &backoff);
    shared.emit(|| event_for(&job, &completion, started.elapsed()));
    Report {
        id: job.id,
        attempt: job.attempt,
        completion,
    }
}

/// Maps a handler's outcome to the job's next state under its attempt limit and backoff.
fn decide(job: &Job, outcome: Outcome, backoff: &Backoff) -> Completion {
    let (delay, error) = match outcome {
        Outcome::Complete => return Completion::Completed,
        Outcome::Discard(error) => return Completion::Dead { error },
        Outcome::Retry(error) => (backoff.delay(job.attempt), error),
        Outcome::RetryAfter { delay, error } => (delay, error),
    };
    if job.attempt >= job.max_attempts {
        Completion::Dead { error }
    } else {
        Completion::Retry {
            at_ms: now_ms().saturating_add(delay.as_millis() as i64),
            error,
        }
    }
}

fn event_for(job: &Job, completion: &Completion, took: Duration) -> JobEvent {
    let (id, kind) = (job.id, job.kind.clone());
    match completion {
        Completion::Completed => JobEvent::Completed { id, kind, took },
        Completion::Retry { error, .. } => JobEvent::Failed {
            id,
            kind,
            attempt: job.attempt,
            error: error.clone(),
        },
        Completion::Dead { error } => JobEvent::Dead {
            id,
            kind,
            error: error.clone(),
        },
        Completion::Cancelled | Completion::Released => JobEvent::Cancelled { id, kind },
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(attempt: u32, max: u32) -> Job {
        Job {
            id: JobId::new(),
            kind: "k".into(),
            queue: "q".into(),
            payload: "{}".into(),
            attempt,
            max_attempts: max,
            timeout: None,
            backoff: None,
        }
    }

    #[test]
    fn outcomes_map_to_states() {
        let b = Backoff::default();
        assert_eq!(
            decide(&job(1, 3), Outcome::Complete, &b),
            Completion::Completed
        );
        assert!(matches!(
            decide(&job(1, 3), Outcome::Retry("x".into()), &b),
            Completion::Retry { .. }
        ));
        assert!(matches!(
            decide(&job(3, 3), Outcome::Retry("x".into()), &b),
            Completion::Dead { .. }
        ));
        assert!(matches!(
            decide(&job(1, 3), Outcome::Discard("x".into()), &b),
            Completion::Dead { .. }
        ));
    }

    #[test]
    fn retry_after_uses_the_given_delay() {
        let before = now_ms();
        let c = decide(
            &job(1, 3),
            Outcome::RetryAfter {
                delay: Duration::from_secs(60),
                error: "later".into(),
            },
            &Backoff::default(),
        );
        let Completion::Retry { at_ms, .. } = c else {
            panic!("expected retry, got {c:?}")
        };
        assert!(at_ms >= before + 60_000 && at_ms <= now_ms() + 60_000);
    }
}
