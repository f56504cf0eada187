//! One worker's consumer session: reads its queue topics (fresh lane), their high-priority
//! topics (urgent lane) and the retry tiers (retry lane), each lane in a group of its own;
//! hands jobs to the worker, stores outcomes (retry tier, dead letter, or done) and commits
//! the lowest unfinished offset of each partition.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conveyor_core::{now_ms, Completion, Job, Report};
use rdkafka::consumer::{CommitMode, Consumer};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::intake::{commit, poll_loop, provenance, subscribe, LaneConsumer, Shared};
use crate::producer::Producer;
use crate::state::{Lane, Pending};
use crate::{Error, KafkaConfig};

/// Least time between two commits while running. A crashed worker's finished-but-uncommitted
/// jobs run again: this bounds them to what it finishes in this long (revocation and shutdown
/// always commit everything finished).
const COMMIT_INTERVAL: Duration = Duration::from_millis(20);

/// The topics a session reads, per lane (a name starting with `^` is a pattern).
pub(crate) struct Subscription {
    /// Queue topics of normal and low priority, and ingest topics.
    pub fresh: Vec<String>,
    /// Retry tier topics.
    pub retry: Vec<String>,
    /// Queue topics of high priority.
    pub urgent: Vec<String>,
}

/// A running consumer session.
pub(crate) struct Session {
    lanes: Vec<(Lane, Arc<LaneConsumer>)>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    pollers: Mutex<Vec<JoinHandle<()>>>,
    last_commit: Mutex<Instant>,
}

impl Session {
    /// Joins the groups and starts reading.
    pub fn start(
        config: &KafkaConfig,
        producer: Arc<Producer>,
        waker: Arc<Notify>,
        topics: &Subscription,
    ) -> Result<Self, Error> {
        let shared = Arc::new(Shared::new(config, producer, waker));
        let groups = [
            (Lane::Fresh, config.group.clone(), &topics.fresh),
            (Lane::Urgent, config.urgent_group(), &topics.urgent),
            (Lane::Retry, config.retry_group(), &topics.retry),
        ];
        let mut lanes = Vec::new();
        // A lane with nothing to read has no consumer (a layout without retry tiers, where
        // every retry dead-letters, has no retry lane).
        for (lane, group, topics) in groups.into_iter().filter(|g| !g.2.is_empty()) {
            lanes.push((lane, Arc::new(subscribe(&shared, lane, &group, topics)?)));
        }
        let (stop, stopped) = watch::channel(false);
        let pollers = lanes
            .iter()
            .map(|(lane, consumer)| {
                tokio::spawn(poll_loop(
                    consumer.clone(),
                    shared.clone(),
                    *lane,
                    stopped.clone(),
                ))
            })
            .collect();
        Ok(Session {
            lanes,
            shared,
            stop,
            pollers: Mutex::new(pollers),
            last_commit: Mutex::new(Instant::now()),
        })
    }

    /// Stores the outcomes of finished jobs, commits, and hands out up to `limit` jobs.
    ///
    /// Outcomes are stored concurrently: in a retry storm each failed job is a produce to a
    /// retry tier, and one acknowledgement after the other would cap failures at a few hundred
    /// per second. An outcome that could not be stored keeps its lease and fails the call.
    pub async fn exchange(&self, reports: Vec<Report>, limit: usize) -> Result<Vec<Job>, Error> {
        let stored = futures::future::join_all(reports.into_iter().map(|r| self.store(r))).await;
        self.commit_now_and_then();
        stored.into_iter().collect::<Result<(), Error>>()?;
        // Finished work may have made room in the buffers: let the poll loops read again.
        self.shared.nudge();
        let taken = self.shared.state().take(limit);
        Ok(taken.into_iter().map(to_job).collect())
    }

    /// Commits finished positions, at most once per [`COMMIT_INTERVAL`]: a commit per
    /// exchange loads the broker's group coordinator as much as the jobs themselves.
    fn commit_now_and_then(&self) {
        {
            let mut last = self.last_commit.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < COMMIT_INTERVAL {
                return;
            }
            *last = Instant::now();
        }
        self.commit_all(CommitMode::Async);
    }

    /// Commits every lane's finished positions through the lane's own consumer (group).
    fn commit_all(&self, mode: CommitMode) {
        for (lane, consumer) in &self.lanes {
            if consumer.assignment_lost() {
                continue; // see LaneContext::pre_rebalance: the new owner's position rules
            }
            let commits = self.shared.state().commits_of(*lane);
            if let Err(err) = commit(consumer.as_ref(), &commits, mode) {
                tracing::warn!(error = %err, ?lane, "commit failed; finished jobs may run again");
            }
        }
    }
    /// Stores one job's outcome. A job revoked while it ran (an orphan) reports late: its
    /// outcome still counts for the copies of it read again since.
    async fn store(&self, report: Report) -> Result<(), Error> {
        let Some(mut pending) = self.shared.state().unlease(report.id) else {
            return Ok(()); // unknown: the new owner runs it again
        };
        let orphan = self.shared.state().is_orphan(report.id);
        // Records of the job with an attempt below this are done once the outcome is stored.
        let mut done_below = u32::MAX;
        let sent = match &report.completion {
            Completion::Completed | Completion::Cancelled => Ok(()),
            Completion::Released if orphan => {
                self.shared.state().give_up(&pending, None);
                self.shared.nudge();
                return Ok(());
            }
            Completion::Released => return Ok(()), // left uncommitted: the next owner runs it
            Completion::Retry { at_ms, .. }
                if orphan && pending.envelope.ordering_key.is_some() =>
            {
                // Its record is another assignment's now: a copy read again here (if any)
                // retries in its place.
                let retry = Some((report.attempt, *at_ms));
                self.shared.state().give_up(&pending, retry);
                self.shared.nudge();
                return Ok(());
            }
            Completion::Retry { at_ms, error } if pending.envelope.ordering_key.is_some() => {
                pending.envelope.attempt = report.attempt;
                pending.envelope.not_before = Some(*at_ms);
                tracing::debug!(job = %report.id, %error, "keyed job retries in place");
                self.shared.state().hold(pending);
                self.shared.nudge();
                return Ok(());
            }
            Completion::Retry { at_ms, error } => {
                // The tier record carries `report.attempt`: it is the job's next record.
                done_below = report.attempt;
                self.forward(&pending, report.attempt, Some(*at_ms), error)
                    .await
            }
            Completion::Dead { error } => self.forward(&pending, report.attempt, None, error).await,
        };
        match sent {
            Ok(()) => {
                self.shared.state().finish(&pending, done_below);
                Ok(())
            }
            Err(err) => {
                self.shared.state().relet(pending);
                Err(err)
            }
        }
    }

    /// Produces a failed job to its retry tier (`retry_at`) or to the dead-letter topic.
    async fn forward(
        &self,
        pending: &Pending,
        attempt: u32,
        retry_at: Option<i64>,
        error: &str,
    ) -> Result<(), Error> {
        let mut envelope = pending.envelope.clone();
        envelope.attempt = attempt;
        envelope.not_before = retry_at;
        let layout = &self.shared.config.topics;
        let topic = match retry_at {
            Some(at) => {
                let delay = Duration::from_millis((at - now_ms()).max(0) as u64);
                layout
                    .retry(layout.tier_for(delay))
                    .unwrap_or_else(|| layout.dead())
            }
            None => layout.dead(),
        };
        let mut record = envelope.to_record();
        provenance(&mut record, &pending.tp, pending.offset, error);
        self.shared.producer.send(&topic, &record).await.map(|_| ())
    }

    /// Stops reading, commits what is finished and leaves the groups.
    pub async fn close(&self) {
        let _ = self.stop.send(true);
        let pollers = std::mem::take(&mut *self.pollers.lock().unwrap_or_else(|e| e.into_inner()));
        for poller in pollers {
            let _ = poller.await;
        }
        self.commit_all(CommitMode::Sync);
        for (_, consumer) in &self.lanes {
            consumer.unsubscribe();
        }
    }
}

impl Drop for Session {
    /// A session dropped without `close` (its engine handle is gone: the process is going
    /// down) stops polling without committing, like a crash: unfinished jobs run again.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn to_job(pending: Pending) -> Job {
    let e = pending.envelope;
    Job {
        id: e.id,
        kind: e.kind,
        queue: e.queue,
        payload: e.payload,
        attempt: e.attempt + 1,
        max_attempts: e.max_attempts,
        timeout: e.timeout,
        backoff: e.backoff,
    }
}
