//! One worker's consumer session: reads its queue topics (fresh lane), their high-priority
//! topics (urgent lane), the retry tiers (retry lane) and the schedule topic (schedule lane,
//! whose due jobs it moves to their queues' topics), each lane in a group of its own;
//! hands jobs to the worker, stores outcomes (retry tier, dead letter, or done) and commits
//! the lowest unfinished offset of each partition.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conveyor_core::{now_ms, Completion, Job, Report};
use rdkafka::consumer::{CommitMode, Consumer};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::attempts::Note;
pub(crate) use crate::intake::Sidecars;
use crate::intake::{
    commit, poll_loop, provenance, send_to_queue, subscribe, LaneConsumer, Shared,
};
use crate::producer::Producer;
use crate::state::{Lane, Pending};
use crate::status::{Entry, Step};
use crate::{Error, KafkaConfig};

/// Least time between two commits while running. A crashed worker's finished-but-uncommitted
/// jobs run again: this bounds them to what it finishes in this long (revocation and shutdown
/// always commit everything finished).
const COMMIT_INTERVAL: Duration = Duration::from_millis(20);

/// How often every position is sent again, whether it moved or not. librdkafka tells the
/// outcome of a manual asynchronous commit only to an `offset_commit_cb`, which rust-rdkafka
/// does not set: a refused commit cannot be told from a taken one, and sent once it would stay
/// refused (an idle partition's finished jobs then ran again after a restart). Sending the
/// positions again costs one small request per lane this often. (Synchronous commits from a
/// thread of their own, whose answers are known, were tried: with them one run of the
/// two-queue broker test saw the retry lane's rebalance stall, not understood yet.)
const RESEND_INTERVAL: Duration = Duration::from_secs(2);

/// The topics a session reads, per lane (a name starting with `^` is a pattern).
pub(crate) struct Subscription {
    /// Queue topics of normal and low priority, and ingest topics.
    pub fresh: Vec<String>,
    /// Retry tier topics.
    pub retry: Vec<String>,
    /// Queue topics of high priority.
    pub urgent: Vec<String>,
    /// The schedule topic (every worker moves due jobs to their queue, whatever it runs).
    pub schedule: Vec<String>,
    /// The queues whose jobs this worker runs (empty: every queue). Jobs of other queues read
    /// from shared topics (the retry tiers, an ingest topic, a record naming another queue)
    /// are moved to their queue's topic, for that queue's workers.
    pub queues: Vec<String>,
    /// High-priority topics of these queues existed at the start (see intake/gate.rs).
    pub high_topics_exist: bool,
}

/// A running consumer session.
pub(crate) struct Session {
    lanes: Vec<(Lane, Arc<LaneConsumer>)>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    pollers: Mutex<Vec<JoinHandle<()>>>,
    last_commit: Mutex<Instant>,
    /// When every position was last marked to be sent again (see [`RESEND_INTERVAL`]).
    last_resend: Mutex<Instant>,
    /// See [`Subscription::queues`].
    queues: Vec<String>,
}

impl Session {
    /// Joins the groups and starts reading.
    pub fn start(
        config: &KafkaConfig,
        producer: Arc<Producer>,
        waker: Arc<Notify>,
        topics: &Subscription,
        sidecars: Sidecars,
    ) -> Result<Self, Error> {
        let shared = Arc::new(Shared::new(
            config,
            producer,
            waker,
            sidecars,
            topics.high_topics_exist,
        ));
        let groups = [
            (Lane::Fresh, config.group.clone(), &topics.fresh),
            (Lane::Urgent, config.urgent_group(), &topics.urgent),
            (Lane::Retry, config.retry_group(), &topics.retry),
            (Lane::Schedule, config.schedule_group(), &topics.schedule),
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
            last_resend: Mutex::new(Instant::now()),
            queues: topics.queues.clone(),
        })
    }

    /// Stores the outcomes of finished jobs, commits, and hands out up to `limit` jobs.
    ///
    /// Outcomes are stored concurrently: in a retry storm each failed job is a produce to a
    /// retry tier, and one acknowledgement after the other would cap failures at a few hundred
    /// per second. An outcome that could not be stored keeps its lease and fails the call.
    pub async fn exchange(&self, reports: Vec<Report>, limit: usize) -> Result<Vec<Job>, Error> {
        let stored = futures::future::join_all(reports.into_iter().map(|r| self.store(r))).await;
        self.move_foreign().await;
        self.commit_now_and_then();
        stored.into_iter().collect::<Result<(), Error>>()?;
        // Finished work may have made room in the buffers: let the poll loops read again.
        self.shared.nudge();
        let urgent = self
            .lanes
            .iter()
            .find(|(lane, _)| *lane == Lane::Urgent)
            .map(|(_, consumer)| consumer.as_ref());
        if !self.shared.start_gate.is_open(urgent) {
            return Ok(Vec::new()); // high-priority jobs may still be on their way
        }
        let control = &self.shared.sidecars.control;
        if !control.is_ready() {
            // Marks written before this handle started are not all read: a job cancelled then
            // must not start here.
            return Ok(Vec::new());
        }
        let taken = self.shared.state().take_where(limit, |q| self.serves(q));
        let (stopped, runnable): (Vec<_>, Vec<_>) =
            control.with(|book| taken.into_iter().partition(|p| book.stops(&p.envelope)));
        self.finish_stopped(stopped).await?;
        let journal = &self.shared.sidecars.journal;
        for pending in &runnable {
            journal.write(running_entry(pending));
        }
        Ok(runnable.into_iter().map(to_job).collect())
    }

    /// Finishes jobs a user cancelled or purged without running them. A cancelled one gets
    /// its `cancelled` status entry; a purged one none (it is gone, as a purged row is).
    async fn finish_stopped(&self, stopped: Vec<Pending>) -> Result<(), Error> {
        let (cancelled, purged): (Vec<_>, Vec<_>) = self.shared.sidecars.control.with(|book| {
            stopped
                .into_iter()
                .partition(|p| book.is_cancelled(p.envelope.id))
        });
        for pending in purged {
            let mut state = self.shared.state();
            if let Some(pending) = state.unlease(pending.envelope.id) {
                state.finish(&pending, u32::MAX);
            }
        }
        let reports = cancelled.into_iter().map(|pending| Report {
            id: pending.envelope.id,
            attempt: pending.envelope.attempt.saturating_add(1),
            completion: Completion::Cancelled,
        });
        let stored = futures::future::join_all(reports.map(|r| self.store(r))).await;
        self.shared.nudge();
        stored.into_iter().collect()
    }

    /// True when this worker runs jobs of `queue`.
    fn serves(&self, queue: &str) -> bool {
        self.queues.is_empty() || self.queues.iter().any(|q| q == queue)
    }

    /// Moves ready jobs of queues this worker does not run to their queue's topic (at their
    /// priority level), where that queue's workers read them; their records here are then
    /// done. Such jobs come from topics every worker reads: a retry tier, an ingest topic, or
    /// a record that names another queue. A job that cannot be moved yet stays ready.
    async fn move_foreign(&self) {
        if self.queues.is_empty() {
            return;
        }
        let foreign = self
            .shared
            .state()
            .take_where(usize::MAX, |q| !self.serves(q));
        let moves = foreign.into_iter().map(|pending| async move {
            let sent = send_to_queue(&self.shared, &pending).await;
            let mut state = self.shared.state();
            let placed = match sent {
                // A later attempt of the job (its retry) is not a copy of this record.
                Ok(()) => state.finish(&pending, pending.envelope.attempt + 1),
                Err(err) => {
                    tracing::warn!(error = %err, job = %pending.envelope.id, "cannot move a job to its queue yet");
                    state.requeue(pending);
                    false
                }
            };
            drop(state);
            if placed {
                self.shared.nudge(); // a later attempt read meanwhile is held now
            }
        });
        futures::future::join_all(moves).await;
    }

    /// Commits finished positions, at most once per [`COMMIT_INTERVAL`]: a commit per
    /// exchange loads the broker's group coordinator as much as the jobs themselves. Every
    /// [`RESEND_INTERVAL`] the positions are sent again even if they did not move.
    fn commit_now_and_then(&self) {
        {
            let mut last = self.last_commit.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < COMMIT_INTERVAL {
                return;
            }
            *last = Instant::now();
        }
        {
            let mut last = self.last_resend.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= RESEND_INTERVAL {
                *last = Instant::now();
                self.shared.state().resend_commits();
            }
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
                tracing::warn!(error = %err, ?lane, "commit failed; it is sent again");
                self.shared.state().commit_failed(&commits);
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
                // The note first: whoever reads the record next (this worker restarted, or
                // the partition's next owner) goes on from it.
                if let Err(err) = self
                    .note_attempt(&pending, report.attempt, *at_ms, error)
                    .await
                {
                    self.shared.state().relet(pending);
                    return Err(err);
                }
                self.shared
                    .sidecars
                    .journal
                    .write(outcome_entry(&report, &pending));
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
            Completion::Dead { error } => {
                // Records of this attempt and earlier ones are done; a `dlq retry` puts the job
                // back with its attempt count (numbered on), which must run here too.
                done_below = report.attempt;
                self.forward(&pending, report.attempt, None, error).await
            }
        };
        match sent {
            Ok(()) => {
                self.shared
                    .sidecars
                    .journal
                    .write(outcome_entry(&report, &pending));
                if self.shared.state().finish(&pending, done_below) {
                    // A retry-tier record read before this outcome was stored is held now: its
                    // lane must look at its due time.
                    self.shared.nudge();
                }
                Ok(())
            }
            Err(err) => {
                self.shared.state().relet(pending);
                Err(err)
            }
        }
    }

    /// Writes the attempt note of a keyed job that retries in place (see `src/attempts.rs`).
    async fn note_attempt(
        &self,
        pending: &Pending,
        attempt: u32,
        due_ms: i64,
        error: &str,
    ) -> Result<(), Error> {
        let note = Note::of_attempt(pending, attempt, due_ms, error);
        let topic = self.shared.config.topics.attempts();
        self.shared
            .producer
            .send(&topic, &note.to_record()?)
            .await
            .map(|_| ())
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

/// The job a worker gets for a handed-out record: on its next attempt.
/// The status entry of a job handed to a handler: where its record is, so a lookup reads it.
fn running_entry(pending: &Pending) -> Entry {
    let e = &pending.envelope;
    let mut entry = Entry::new(e.id, Step::Running);
    entry.attempt = Some(e.attempt.saturating_add(1));
    entry.max_attempts = Some(e.max_attempts);
    entry.kind = Some(e.kind.clone());
    entry.queue = Some(e.queue.clone());
    entry.record = Some((pending.tp.0.to_string(), pending.tp.1, pending.offset));
    entry
}

/// The status entry of a stored outcome.
fn outcome_entry(report: &Report, pending: &Pending) -> Entry {
    let (step, error, next_at) = match &report.completion {
        Completion::Completed => (Step::Completed, None, None),
        Completion::Cancelled => (Step::Cancelled, None, None),
        Completion::Retry { at_ms, error } => (Step::Retryable, Some(error.clone()), Some(*at_ms)),
        Completion::Dead { error } => (Step::Dead, Some(error.clone()), None),
        // Left for the next owner: its start writes the next entry.
        Completion::Released => (Step::Available, None, None),
    };
    let mut entry = Entry::new(pending.envelope.id, step);
    entry.attempt = Some(report.attempt);
    entry.error = error;
    entry.next_at = next_at;
    entry
}

pub(crate) fn to_job(pending: Pending) -> Job {
    let e = pending.envelope;
    Job {
        id: e.id,
        kind: e.kind,
        queue: e.queue,
        payload: e.payload,
        // A record may claim any number of attempts made: `+ 1` on u32::MAX panicked in the
        // worker's exchange (debug builds) or started over at attempt 0 (release). At the limit
        // the job runs once more and dead-letters if it fails, as past `max_attempts`.
        attempt: e.attempt.saturating_add(1),
        max_attempts: e.max_attempts,
        timeout: e.timeout,
        backoff: e.backoff,
        traceparent: e.traceparent,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use conveyor_core::{Completion, NewJob, Report};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    use serde_json::json;
    use tokio::sync::Notify;

    use super::{Session, Sidecars, Subscription};
    use crate::producer::Producer;
    use crate::{Envelope, KafkaConfig};

    /// The group's committed offset of partition 0 of `topic` (-1 for none).
    fn committed(config: &KafkaConfig, topic: &str) -> i64 {
        let reader: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .create()
            .expect("reader");
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, 0);
        let got = reader
            .committed_offsets(list, Duration::from_secs(5))
            .expect("committed");
        match got.find_partition(topic, 0).map(|e| e.offset()) {
            Some(Offset::Offset(at)) => at,
            _ => -1,
        }
    }

    /// Exchanges as an idle worker does (nothing to report, `limit` free slots) every 50 ms
    /// until the group's committed offset of `topic` is `position`, for at most 10 s; returns
    /// the last committed offset read.
    async fn exchange_until_committed(
        session: &Session,
        config: &KafkaConfig,
        topic: &str,
        limit: usize,
        position: i64,
    ) -> i64 {
        let mut committed_now = -1;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            session.exchange(vec![], limit).await.expect("exchange");
            committed_now = tokio::task::block_in_place(|| committed(config, topic));
            if committed_now == position {
                break;
            }
        }
        committed_now
    }

    /// A broker that refuses one commit (librdkafka's mock cluster, which can inject an error
    /// into the next OffsetCommit answer): the position is sent again by a later exchange of
    /// the idle worker, and the group's committed offset reaches the log end. (Before: the
    /// refused position counted as committed and nothing sent it again.) A real broker that
    /// is down does not show it: librdkafka holds the commit until the coordinator is back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_commit_is_sent_again() {
        let mock = MockCluster::new(1).expect("mock cluster");
        let mut config = KafkaConfig::new(mock.bootstrap_servers());
        config.group = format!("g{}", uuid::Uuid::now_v7().simple());
        config.session_timeout = Duration::from_secs(6);
        let topic = config.topics.queue("default");
        mock.create_topic(&topic, 1, 1).expect("topic");
        let producer = Arc::new(Producer::new(&config).expect("producer"));
        let job = NewJob::new("noop", json!({}));
        let record = Envelope::from_new_job(&job, "{}".into(), 0).to_record();
        producer.send(&topic, &record).await.expect("produce");
        let topics = Subscription {
            fresh: vec![topic.clone()],
            retry: vec![],
            urgent: vec![],
            schedule: vec![],
            queues: vec![],
            high_topics_exist: false,
        };
        mock.create_topic(&config.topics.control(), 1, 1)
            .expect("topic");
        mock.create_topic(&config.topics.status(), 1, 1)
            .expect("topic");
        let sidecars = Sidecars {
            journal: crate::status::Journal::start(producer.clone(), config.topics.status()),
            control: Arc::new(crate::control::ControlTail::start(&config).expect("control")),
        };
        let session = Session::start(
            &config,
            producer,
            Arc::new(Notify::new()),
            &topics,
            sidecars,
        )
        .expect("session");
        let mut taken = Vec::new();
        for _ in 0..600 {
            taken = session.exchange(vec![], 1).await.expect("exchange");
            if !taken.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(taken.len(), 1, "the job was never handed out");
        // The commit of the position before the job (0) went through first: the refusal
        // below is for the job's own.
        let position = exchange_until_committed(&session, &config, &topic, 0, 0).await;
        assert_eq!(position, 0, "the first commit never went through");
        mock.request_errors(
            RDKafkaApiKey::OffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_COMMIT_OFFSET_SIZE],
        );
        // Past the commit interval: this exchange commits, and the broker refuses it.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let done = Report {
            id: taken[0].id,
            attempt: 1,
            completion: Completion::Completed,
        };
        session.exchange(vec![done], 1).await.expect("report");
        // The idle worker goes on exchanging, as the runtime does every poll interval.
        let position = exchange_until_committed(&session, &config, &topic, 1, 1).await;
        session.close().await;
        assert_eq!(position, 1, "the refused commit was never sent again");
    }
}
