//! A supervised pool of long-lived worker processes (RoadRunner's `jobs.pool`): each process
//! runs one job at a time, speaking JSON lines (`crate::protocol`). A process that dies, hangs
//! past its timeout, writes garbage or is abandoned by the runtime is killed and replaced, and
//! its job counts as a failed attempt; one over `max_memory_mb` is retired after its job; one
//! that fails at start-up is started again with a growing delay.

mod process;
mod supervisor;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use conveyor_core::{now_ms, JobContext, Outcome};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::process::{rss_bytes, Spawn};
use crate::protocol::JobLine;
use crate::{CommandLine, Error, Result, Runner};
use process::{Broken, Proc};

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
}

impl PoolConfig {
    /// A pool of `workers` processes running `command`, with the defaults: 60 s to allocate and
    /// destroy, 5 min per job, no memory limit.
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

/// A running pool. Dropping it kills its processes; [`Pool::shutdown`] stops them gracefully.
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    config: PoolConfig,
    idle_tx: mpsc::UnboundedSender<Proc>,
    idle_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Proc>>,
    /// One message per process to start.
    respawn: mpsc::UnboundedSender<()>,
    closed: watch::Sender<bool>,
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
        let (idle_tx, idle_rx) = mpsc::unbounded_channel();
        let (respawn, requests) = mpsc::unbounded_channel();
        let workers = config.workers;
        let inner = Arc::new(Inner {
            config,
            idle_tx,
            idle_rx: tokio::sync::Mutex::new(idle_rx),
            respawn,
            closed: watch::channel(false).0,
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
        let inner = &self.inner;
        inner.closed.send_replace(true);
        let mut idle = inner.idle_rx.lock().await;
        idle.close();
        let mut stopping = Vec::new();
        while let Ok(proc) = idle.try_recv() {
            inner.live.fetch_sub(1, Ordering::Relaxed);
            stopping.push(tokio::spawn(proc.retire(inner.config.destroy_timeout)));
        }
        for task in stopping {
            let _ = task.await;
        }
        tracing::info!(pool = %inner.config.name, stats = ?self.stats(), "pool stopped");
    }
}

impl Drop for Pool {
    /// Stops the supervisor; idle processes die with the pool's state (`kill_on_drop`).
    fn drop(&mut self) {
        self.inner.closed.send_replace(true);
    }
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
            let mut lease = match self.inner.checkout().await {
                Ok(lease) => lease,
                Err(error) => return Outcome::Retry(error),
            };
            let Some(proc) = lease.proc.as_mut() else {
                return Outcome::Retry("internal: lease without a process".into());
            };
            let pid = proc.pid;
            match tokio::time::timeout(timeout, proc.run(&line, &ctx)).await {
                Ok(Ok(outcome)) => {
                    self.inner.jobs.fetch_add(1, Ordering::Relaxed);
                    lease.give_back().await;
                    return outcome;
                }
                Ok(Err(Broken::Undelivered(message))) => {
                    let message = lease.broken(Broken::Undelivered(message)).await;
                    tracing::debug!("{message}: the job goes to another process");
                }
                Ok(Err(broken)) => return Outcome::Retry(lease.broken(broken).await),
                Err(_) => {
                    drop(lease); // kills and replaces it
                    return Outcome::Retry(format!(
                        "timed out after {timeout:?}: worker process {pid} of pool {} killed and replaced",
                        self.inner.config.name
                    ));
                }
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

impl Inner {
    /// Waits (within `allocate_timeout`) for an idle process: jobs beyond the pool's size wait
    /// here, one process per job.
    async fn checkout(self: &Arc<Self>) -> std::result::Result<Lease, String> {
        let wait = async {
            let mut idle = self.idle_rx.lock().await;
            loop {
                let mut proc = idle.recv().await?;
                if !proc.has_exited() {
                    return Some(proc);
                }
                // Died while idle (killed from outside): no job was lost; replace it.
                let message = proc.explain("while idle", Broken::Exited).await;
                tracing::warn!(pool = %self.config.name, "{message}; replacing it");
                self.replace();
            }
        };
        match tokio::time::timeout(self.config.allocate_timeout, wait).await {
            Ok(Some(proc)) => Ok(Lease {
                proc: Some(proc),
                pool: self.clone(),
            }),
            Ok(None) => Err(format!("pool {} is shut down", self.config.name)),
            Err(_) => {
                let last = self
                    .last_start_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                Err(format!(
                    "no worker process of pool {} became free within allocate_timeout ({:?}){}",
                    self.config.name,
                    self.config.allocate_timeout,
                    last.map(|e| format!("; last start-up failure: {e}"))
                        .unwrap_or_default()
                ))
            }
        }
    }

    /// Counts a lost process and asks the supervisor for a new one.
    fn replace(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.restarts.fetch_add(1, Ordering::Relaxed);
        let _ = self.respawn.send(());
    }
}

/// A process lent to one job. Dropped while it still holds the process (the runtime abandoned
/// the attempt: timeout, cancellation, lost lease, shutdown), it kills the process group at
/// once, so the job can never run twice at the same time, and asks for a replacement.
struct Lease {
    proc: Option<Proc>,
    pool: Arc<Inner>,
}

impl Lease {
    /// Returns the process to the idle set, or retires it when over the memory limit.
    async fn give_back(mut self) {
        let Some(proc) = self.proc.take() else { return };
        let pool = self.pool.clone();
        if let Some(limit) = pool.config.max_memory_mb {
            let rss_mb = rss_bytes(proc.pid).unwrap_or(0) / (1024 * 1024);
            if rss_mb > limit {
                tracing::info!(pool = %pool.config.name, pid = proc.pid, rss_mb, max_memory_mb = limit, "worker process over its memory limit: retired after its job");
                pool.replace();
                tokio::spawn(proc.retire(pool.config.destroy_timeout));
                return;
            }
        }
        if let Err(returned) = pool.idle_tx.send(proc) {
            // The pool is shutting down.
            pool.live.fetch_sub(1, Ordering::Relaxed);
            tokio::spawn(returned.0.retire(pool.config.destroy_timeout));
        }
    }

    /// Kills the broken process, asks for a replacement and returns the attempt's error.
    async fn broken(mut self, broken: Broken) -> String {
        let Some(proc) = self.proc.take() else {
            return "internal: lease without a process".into();
        };
        self.pool.replace();
        let message = proc.explain("while running the job", broken).await;
        let message = format!("pool {}: {message}", self.pool.config.name);
        tracing::warn!("{message}");
        message
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(proc) = self.proc.take() {
            crate::process::kill_group(proc.pid);
            tracing::warn!(pool = %self.pool.config.name, pid = proc.pid, "job abandoned while its worker process ran it: process killed and replaced");
            self.pool.replace();
        }
    }
}
