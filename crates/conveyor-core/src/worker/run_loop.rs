//! The worker's loop: exchange reports for new jobs, renew leases, stop what must stop.
//!
//! Two rules keep a job from running twice at once and from being lost:
//! - an attempt is trusted only while its lease is known to be alive: when the engine could not
//!   renew it before it may have expired (storage busy, disk full), the attempt stops itself
//!   (`attempt::run_guarded`), because the engine may already have handed the job to another
//!   worker;
//! - a finished attempt's report is kept until the engine stored it: failed exchanges are
//!   retried (while heartbeats and shutdown go on), at shutdown too, for as long as the leases
//!   of those jobs could still be held.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::attempt::run_guarded;
use super::{Shared, WorkerConfig};
use crate::{Completion, Error, Fetch, Job, JobEvent, JobId, Report, Result};

/// First pause after a failed exchange; doubled per failure up to [`MAX_ERROR_DELAY`].
const FIRST_ERROR_DELAY: Duration = Duration::from_millis(50);
const MAX_ERROR_DELAY: Duration = Duration::from_secs(5);

/// One attempt: a job's id *and* attempt number. After a lease was lost the engine may hand
/// the same job out again, to this worker too, and the two attempts must not be confused.
type AttemptKey = (JobId, u32);

struct Running {
    task: JoinHandle<()>,
    /// Until when the attempt may run without a renewal (engines whose leases expire).
    trust: Option<watch::Sender<Instant>>,
}

pub(super) struct Loop {
    shared: Arc<Shared>,
    config: WorkerConfig,
    /// How long past its last renewal an attempt is trusted (`None`: leases do not expire).
    trust: Option<Duration>,
    running: HashMap<AttemptKey, Running>,
    /// Outcomes not yet stored by the engine.
    pending: Vec<Report>,
    done_tx: mpsc::UnboundedSender<Report>,
    done_rx: mpsc::UnboundedReceiver<Report>,
    next_heartbeat: Instant,
    /// Set at shutdown: when the grace period of running jobs ends.
    deadline: Option<Instant>,
    /// True once the jobs still running at the end of the grace period were given back.
    released: bool,
    /// After a failed exchange: not before this time again.
    retry_at: Option<Instant>,
    error_delay: Duration,
}

impl Loop {
    pub(super) fn new(shared: Arc<Shared>, config: WorkerConfig) -> Self {
        let engine = &shared.engine;
        // Stop half a heartbeat before the lease could expire, so the attempt has ended before
        // the engine may rescue the job for another worker.
        let trust = engine
            .lease()
            .map(|lease| lease.saturating_sub(engine.heartbeat_interval() / 2));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Loop {
            shared,
            config,
            trust,
            running: HashMap::new(),
            pending: Vec::new(),
            done_tx,
            done_rx,
            next_heartbeat: Instant::now(),
            deadline: None,
            released: false,
            retry_at: None,
            error_delay: FIRST_ERROR_DELAY,
        }
    }

    pub(super) async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let engine = self.shared.engine.clone();
        let waker = engine.waker();
        tokio::pin!(shutdown);
        loop {
            self.collect_done();
            // Deadlines are checked here, not only in the select below: under load a report is
            // almost always waiting there, and it must not starve them.
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) && !self.released {
                self.release_all().await;
            }
            if self.retry_at.is_some_and(|t| now >= t) {
                self.retry_at = None;
            }
            if now >= self.next_heartbeat {
                self.heartbeat().await;
            }
            // Registered before the fetch so an enqueue during the fetch is not missed.
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.retry_at.is_none() {
                if let Err(err) = self.exchange().await {
                    self.abandon_all().await;
                    return Err(err);
                }
            }
            if self.deadline.is_some() && self.running.is_empty() && self.pending.is_empty() {
                return engine.leave(&self.config.owner).await;
            }
            let idle = self.deadline.is_none()
                && self.retry_at.is_none()
                && self.running.len() < self.config.concurrency;
            let (retry_at, deadline) = (self.retry_at, self.deadline.filter(|_| !self.released));
            tokio::select! {
                biased;
                _ = &mut shutdown, if self.deadline.is_none() => {
                    tracing::info!(running = self.running.len(), "shutting down: no new jobs");
                    self.deadline = Some(Instant::now() + self.config.shutdown_grace);
                }
                Some(report) = self.done_rx.recv() => self.finished(report),
                _ = sleep_until_opt(deadline) => {}
                _ = tokio::time::sleep_until(self.next_heartbeat) => {}
                _ = sleep_until_opt(retry_at) => {}
                _ = &mut notified, if idle => {}
                _ = tokio::time::sleep(self.config.poll_interval), if idle => {}
            }
        }
    }

    /// Stores pending reports and leases new jobs (none during shutdown). A failure keeps the
    /// reports and schedules the next try; it is returned only when the worker gives up.
    async fn exchange(&mut self) -> Result<()> {
        let limit = match self.deadline {
            Some(_) => 0,
            None => self.config.concurrency.saturating_sub(self.running.len()),
        };
        if limit == 0 && self.pending.is_empty() {
            return Ok(());
        }
        let fetch = Fetch {
            owner: self.config.owner.clone(),
            queues: self.config.queues.clone(),
            limit,
        };
        let reports = std::mem::take(&mut self.pending);
        let asked = Instant::now();
        match self.shared.engine.exchange(reports.clone(), &fetch).await {
            Ok(jobs) => {
                tracing::trace!(reported = reports.len(), fetched = jobs.len(), "exchange");
                self.error_delay = FIRST_ERROR_DELAY;
                for job in jobs {
                    self.start(job, asked).await;
                }
                Ok(())
            }
            Err(err) if limit > 0 && !reports.is_empty() => {
                // The fetch may be what fails (say, a row no build can read): store the
                // reports on their own, so a failing fetch never holds finished work back.
                tracing::warn!(error = %err, "exchange failed: storing the reports alone");
                self.retry_at = Some(Instant::now() + self.error_delay);
                self.error_delay = (self.error_delay * 2).min(MAX_ERROR_DELAY);
                let reports_only = Fetch { limit: 0, ..fetch };
                match self
                    .shared
                    .engine
                    .exchange(reports.clone(), &reports_only)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(_) => {
                        self.pending.extend(reports);
                        Ok(())
                    }
                }
            }
            Err(err) => {
                self.pending.extend(reports);
                if self.must_give_up() {
                    return Err(Error::OutcomesNotStored {
                        count: self.pending.len(),
                        source: Box::new(err),
                    });
                }
                tracing::warn!(error = %err, retry_in = ?self.error_delay, unstored = self.pending.len(), "exchange failed");
                self.retry_at = Some(Instant::now() + self.error_delay);
                self.error_delay = (self.error_delay * 2).min(MAX_ERROR_DELAY);
                Ok(())
            }
        }
    }

    /// At shutdown, outcomes are retried for as long as their leases could be held: after
    /// that the engine gives those jobs to other workers anyway, and waiting longer helps no one.
    fn must_give_up(&self) -> bool {
        let engine = &self.shared.engine;
        let patience = engine
            .lease()
            .unwrap_or_else(|| engine.heartbeat_interval() * 3);
        self.deadline
            .is_some_and(|d| Instant::now() >= d + patience)
    }

    fn collect_done(&mut self) {
        while let Ok(report) = self.done_rx.try_recv() {
            self.finished(report);
        }
    }

    fn finished(&mut self, report: Report) {
        self.running.remove(&(report.id, report.attempt));
        self.pending.push(report);
    }

    async fn start(&mut self, job: Job, leased_at: Instant) {
        if self.running.contains_key(&(job.id, job.attempt)) {
            // An engine must never lease one attempt twice; running it again would double it.
            tracing::error!(job = %job.id, attempt = job.attempt, "the engine handed out an attempt that already runs here: ignored");
            return;
        }
        // The engine handed out a new attempt of a job this worker still runs: the old
        // attempt's lease is gone (it was rescued), so it must stop before the new one runs.
        let superseded: Vec<AttemptKey> = self
            .running
            .keys()
            .filter(|(id, attempt)| *id == job.id && *attempt < job.attempt)
            .copied()
            .collect();
        if !superseded.is_empty() {
            tracing::warn!(job = %job.id, attempt = job.attempt, "job handed out again while an older attempt still ran here: stopping the older one");
            self.stop(&superseded, None).await;
        }
        let Some(handler) = self.shared.registry.handler_for(&job).cloned() else {
            self.unknown_kind(job);
            return;
        };
        let key = (job.id, job.attempt);
        let shared = self.shared.clone();
        let done = self.done_tx.clone();
        let (trust, trusted) = match self.trust {
            Some(trust) => {
                let (tx, rx) = watch::channel(leased_at + trust);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let task = tokio::spawn(async move {
            let report = run_guarded(shared, handler, Arc::new(job), trusted).await;
            let _ = done.send(report);
        });
        self.running.insert(key, Running { task, trust });
    }

    fn unknown_kind(&mut self, job: Job) {
        let error = format!(
            "no handler registered for kind {:?} (this worker serves: {})",
            job.kind,
            self.shared.registry.kinds().join(", ")
        );
        tracing::error!(job = %job.id, %error, "unknown kind: dead-lettered");
        self.shared.emit(|| JobEvent::Dead {
            id: job.id,
            kind: job.kind.clone(),
            queue: job.queue.clone(),
            error: error.clone(),
        });
        self.pending.push(Report {
            id: job.id,
            attempt: job.attempt,
            completion: Completion::Dead { error },
        });
    }

    /// The jobs whose lease this worker holds: running ones and finished ones not yet stored.
    fn leased_ids(&self) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self.running.keys().map(|(id, _)| *id).collect();
        ids.extend(self.pending.iter().map(|r| r.id));
        ids.sort_unstable_by_key(|id| id.0);
        ids.dedup();
        ids
    }

    async fn heartbeat(&mut self) {
        self.next_heartbeat = Instant::now() + self.shared.engine.heartbeat_interval();
        // Also while idle: a heartbeat is how a worker says it is connected (`Workers`).
        let ids = self.leased_ids();
        let asked = Instant::now();
        let renewal = match self.shared.engine.heartbeat(&self.config.owner, &ids).await {
            Ok(renewal) => renewal,
            Err(err) if ids.is_empty() => {
                tracing::debug!(error = %err, "heartbeat failed while idle");
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "heartbeat failed: jobs whose lease cannot be renewed in time will be stopped");
                return;
            }
        };
        if let Some(trust) = self.trust {
            for (key, running) in &self.running {
                if let Some(tx) = running
                    .trust
                    .as_ref()
                    .filter(|_| !renewal.lost.contains(&key.0))
                {
                    tx.send_replace(asked + trust);
                }
            }
        }
        let lost = self.attempts_of(&renewal.lost);
        if !lost.is_empty() {
            tracing::warn!(
                count = lost.len(),
                "leases lost (the jobs were rescued for another worker): stopping them here"
            );
            self.stop(&lost, None).await;
        }
        let cancelled = self.attempts_of(&renewal.cancel);
        if !cancelled.is_empty() {
            tracing::info!(count = cancelled.len(), "cancelling jobs on request");
            self.stop(&cancelled, Some(Completion::Cancelled)).await;
        }
    }

    fn attempts_of(&self, ids: &[JobId]) -> Vec<AttemptKey> {
        self.running
            .keys()
            .filter(|(id, _)| ids.contains(id))
            .copied()
            .collect()
    }

    /// The worker gives up (outcomes it cannot store): nothing it started may go on running.
    async fn abandon_all(&mut self) {
        let keys: Vec<AttemptKey> = self.running.keys().copied().collect();
        self.stop(&keys, None).await;
    }

    async fn release_all(&mut self) {
        tracing::warn!(
            abandoned = self.running.len(),
            "grace period over: releasing unfinished jobs"
        );
        let keys: Vec<AttemptKey> = self.running.keys().copied().collect();
        self.stop(&keys, Some(Completion::Released)).await;
        self.released = true;
    }

    /// Aborts the given attempts; those that did not report first get `completion` (none: the
    /// lease is gone and no report would be accepted).
    async fn stop(&mut self, keys: &[AttemptKey], completion: Option<Completion>) {
        let mut stopped = Vec::new();
        for key in keys {
            if let Some(running) = self.running.remove(key) {
                running.task.abort();
                // Waiting for the aborted task guarantees it can no longer report.
                let _ = running.task.await;
                stopped.push(*key);
            }
        }
        let mut reported = Vec::new();
        while let Ok(report) = self.done_rx.try_recv() {
            reported.push((report.id, report.attempt));
            self.finished(report);
        }
        let Some(completion) = completion else { return };
        for (id, attempt) in stopped {
            if !reported.contains(&(id, attempt)) {
                self.pending.push(Report {
                    id,
                    attempt,
                    completion: completion.clone(),
                });
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
