//! A supervised pool of long-lived worker processes (RoadRunner's `jobs.pool`): each process
//! runs one job at a time, speaking JSON lines (`crate::protocol`). Jobs wait in one queue;
//! an idle process takes the next one (back-pressure: the queue holds only jobs whose
//! handlers wait for them, at most the worker runtime's concurrency; a job given up leaves it). A process that dies, hangs past its timeout,
//! writes garbage or is abandoned by the runtime is killed and replaced, and its job counts as
//! a failed attempt; one over `max_memory_mb` is retired after its job; one that fails at
//! start-up is started again with a growing delay.

mod affinity;
mod dispatch;
mod process;
mod queue;
mod supervisor;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use conveyor_core::{now_ms, JobContext, Outcome};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::process::Spawn;
use crate::protocol::JobLine;
use crate::{CommandLine, Error, Result, Runner};
pub use affinity::CpuAffinity;
use dispatch::{Claim, Event};

/// How a pool runs.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Name in logs and stats (the configuration names it after its kinds or queue).
    pub name: String,
    /// The worker program.
    pub command: CommandLine,
    /// Environment and folder of the processes.
    pub spawn: Spawn,
    /// Processes kept running (RoadRunner's `num_workers`).
    pub workers: usize,
    /// A process whose resident memory is over this after a job is retired and replaced.
    pub max_memory_mb: Option<u64>,
    /// How long a process may take to announce itself ready, and how long a job waits for a
    /// free process before its attempt fails.
    pub allocate_timeout: Duration,
    /// How long a process may take to exit after SIGTERM before it is killed.
    pub destroy_timeout: Duration,
    /// Longest attempt of a job that sets no timeout of its own.
    pub timeout: Duration,
    /// Whether each process shares one CPU with the thread serving it (see [`CpuAffinity`]).
    pub cpu_affinity: CpuAffinity,
}

impl PoolConfig {
    /// A pool of `workers` processes running `command`, with the defaults: 60 s to allocate and
    /// destroy, 5 min per job, no memory limit, no CPU affinity.
    pub fn new(name: impl Into<String>, command: CommandLine, workers: usize) -> Self {
        PoolConfig {
            name: name.into(),
            command,
            spawn: Spawn::default(),
            workers,
            max_memory_mb: None,
            allocate_timeout: Duration::from_secs(60),
            destroy_timeout: Duration::from_secs(60),
            timeout: Duration::from_secs(300),
            cpu_affinity: CpuAffinity::None,
        }
    }
}

/// What a pool did so far (for logs and `conveyor stats`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PoolStats {
    /// The pool's name.
    pub name: String,
    /// Processes running now (idle or busy).
    pub processes: usize,
    /// Jobs that got a result from a process (complete or fail).
    pub jobs: u64,
    /// Processes replaced after they died, hung, broke the protocol, were abandoned or went
    /// over the memory limit.
    pub restarts: u64,
    /// Start-ups that failed (exit or garbage before the ready line).
    pub start_failures: u64,
}

/// A running pool. Dropping it closes its queue: idle processes are retired; [`Pool::shutdown`]
/// also waits until they stopped.
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    config: PoolConfig,
    /// Jobs waiting for an idle process.
    queue: queue::Queue,
    /// One message per process to start.
    respawn: mpsc::UnboundedSender<()>,
    closed: watch::Sender<bool>,
    /// The tasks watching each process (they end once it stopped).
    watchers: Mutex<Vec<JoinHandle<()>>>,
    live: AtomicUsize,
    jobs: AtomicU64,
    restarts: AtomicU64,
    start_failures: AtomicU64,
    last_start_error: Mutex<Option<String>>,
}

impl Pool {
    /// Starts the pool's supervisor, which starts `workers` processes in the background (a
    /// job waits for the first one). Needs a Tokio runtime.
    pub fn start(config: PoolConfig) -> Result<Arc<Pool>> {
        if config.workers == 0 {
            return Err(Error::Invalid {
                field: "workers",
                message: format!("pool {} needs at least 1 worker", config.name),
            });
        }
        let (respawn, requests) = mpsc::unbounded_channel();
        let workers = config.workers;
        let inner = Arc::new(Inner {
            config,
            queue: Arc::default(),
            respawn,
            closed: watch::channel(false).0,
            watchers: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
            jobs: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            start_failures: AtomicU64::new(0),
            last_start_error: Mutex::new(None),
        });
        for _ in 0..workers {
            let _ = inner.respawn.send(());
        }
        tokio::spawn(supervisor::supervise(inner.clone(), requests));
        Ok(Arc::new(Pool { inner }))
    }

    /// Counts so far.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        PoolStats {
            name: inner.config.name.clone(),
            processes: inner.live.load(Ordering::Relaxed),
            jobs: inner.jobs.load(Ordering::Relaxed),
            restarts: inner.restarts.load(Ordering::Relaxed),
            start_failures: inner.start_failures.load(Ordering::Relaxed),
        }
    }

    /// Stops the pool once the worker runtime has drained: no more start-ups, and each idle
    /// process gets its stdin closed and SIGTERM, then SIGKILL after `destroy_timeout`.
    pub async fn shutdown(&self) {
        self.inner.close();
        let watchers = std::mem::take(&mut *lock(&self.inner.watchers));
        // Each watcher ends within its process's destroy_timeout (and a margin) once the
        // process got SIGTERM; bounded here too, so a shutdown can never hang on one.
        let limit = self.inner.config.destroy_timeout + Duration::from_secs(10);
        for watcher in watchers {
            if tokio::time::timeout(limit, watcher).await.is_err() {
                tracing::warn!(pool = %self.inner.config.name, "a worker process did not stop in time");
            }
        }
        tracing::info!(pool = %self.inner.config.name, stats = ?self.stats(), "pool stopped");
    }
}

impl Drop for Pool {
    /// Stops the supervisor and closes the queue: idle processes are retired in the
    /// background (and die with the runtime if it ends first: `kill_on_drop`).
    fn drop(&mut self) {
        self.inner.close();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl Runner for Pool {
    async fn run(&self, ctx: JobContext) -> Outcome {
        let timeout = ctx.job().timeout.unwrap_or(self.inner.config.timeout);
        let deadline_ms = now_ms().saturating_add(timeout.as_millis() as i64);
        let line = JobLine::new(ctx.job(), deadline_ms).encode();
        // A process that died while idle cannot take the job; the job never reached it, so it
        // goes to the next process without costing an attempt (bounded: one try per process
        // and one more).
        for _ in 0..=self.inner.config.workers {
            match self.inner.run_once(line.clone(), &ctx, timeout).await {
                Ran::Outcome(outcome) => return outcome,
                Ran::Undelivered(message) => tracing::debug!("{message}"),
            }
        }
        Outcome::Retry(format!(
            "pool {}: no live worker process took the job",
            self.inner.config.name
        ))
    }

    fn describe(&self) -> String {
        format!(
            "pool {:?} ({} x {})",
            self.inner.config.name, self.inner.config.workers, self.inner.config.command.display
        )
    }
}

/// How one dispatch of a job ended.
enum Ran {
    /// The attempt's outcome.
    Outcome(Outcome),
    /// The job never reached a process: dispatch it again.
    Undelivered(String),
}

impl Inner {
    /// Queues the job for the next idle process (waiting within `allocate_timeout` for one to
    /// take it), then waits within `timeout` for its answer.
    async fn run_once(&self, line: Vec<u8>, ctx: &JobContext, timeout: Duration) -> Ran {
        let name = &self.config.name;
        let (job, claim, mut events) =
            dispatch::dispatch(line, ctx.id().to_string(), name, &self.queue);
        if self.queue.push(job).is_err() {
            return Ran::Outcome(Outcome::Retry(format!("pool {name} is shut down")));
        }
        let pid = match tokio::time::timeout(self.config.allocate_timeout, taken(&mut events)).await
        {
            Ok(Some(pid)) => pid,
            Ok(None) => return Ran::Outcome(Outcome::Retry(format!("pool {name} is shut down"))),
            Err(_) if claim.withdraw() => return Ran::Outcome(Outcome::Retry(self.no_process())),
            // Taken just as the wait ran out: its events follow.
            Err(_) => match taken(&mut events).await {
                Some(pid) => pid,
                None => return Ran::Outcome(Outcome::Retry(format!("pool {name} is shut down"))),
            },
        };
        match tokio::time::timeout(timeout, answer(&mut events, ctx)).await {
            Ok(Some(Event::Done(outcome))) => {
                self.jobs.fetch_add(1, Ordering::Relaxed);
                Ran::Outcome(outcome)
            }
            Ok(Some(Event::Undelivered(message))) => Ran::Undelivered(message),
            Ok(Some(Event::Broken(message))) => Ran::Outcome(Outcome::Retry(message)),
            Ok(_) => Ran::Outcome(Outcome::Retry(format!(
                "pool {name}: worker process {pid} ended without answering"
            ))),
            Err(_) => {
                abandon(claim);
                Ran::Outcome(Outcome::Retry(format!(
                    "timed out after {timeout:?}: worker process {pid} of pool {name} killed and replaced"
                )))
            }
        }
    }

    /// Why a job waited in vain, with the last start-up failure if there was one.
    fn no_process(&self) -> String {
        let last = lock(&self.last_start_error).clone();
        format!(
            "no worker process of pool {} became free within allocate_timeout ({:?}){}",
            self.config.name,
            self.config.allocate_timeout,
            last.map(|e| format!("; last start-up failure: {e}"))
                .unwrap_or_default()
        )
    }

    /// Counts a lost process and asks the supervisor for a new one.
    fn replace(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        let _ = self.respawn.send(());
    }

    /// No more start-ups or jobs: idle processes' threads see the queue closed and retire.
    fn close(&self) {
        self.closed.send_replace(true);
        self.queue.close();
    }
}

/// Kills the job's process (the watching task replaces it) without the abandonment warning:
/// the caller reports why.
fn abandon(claim: Claim) {
    claim.abandon();
}

/// Waits until a process took the job; None when the dispatch was dropped (pool closed).
async fn taken(events: &mut mpsc::UnboundedReceiver<Event>) -> Option<u32> {
    match events.recv().await? {
        Event::Taken(pid) => Some(pid),
        _ => None,
    }
}

/// Stores progress lines until the job's final event (None if the process's thread ended
/// without one).
async fn answer(events: &mut mpsc::UnboundedReceiver<Event>, ctx: &JobContext) -> Option<Event> {
    loop {
        match events.recv().await? {
            Event::Progress(progress) => {
                if let Err(e) = ctx.progress(progress).await {
                    tracing::warn!(job = %ctx.id(), error = %e, "progress not stored");
                }
            }
            Event::Taken(_) => continue,
            event => return Some(event),
        }
    }
}
