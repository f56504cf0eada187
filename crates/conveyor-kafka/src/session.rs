//! One worker's consumer: reads its queue topics and the retry tiers through the consumer
//! group, hands jobs to the worker, stores outcomes (retry tier, dead letter, or done) and
//! commits the lowest unfinished offset of each partition.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use conveyor_core::{now_ms, Completion, Job, Report};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::envelope::header;
use crate::producer::{client_config, Producer};
use crate::state::{Accepted, Pending, State, Tp};
use crate::{Envelope, Error, KafkaConfig, Record};

/// Most records read and not finished: beyond it the session stops taking records from the
/// client until workers catch up (back-pressure that bounds memory by this, not the backlog).
const MAX_BUFFERED: usize = 4096;

pub(crate) struct Shared {
    state: Mutex<State>,
    producer: Arc<Producer>,
    config: KafkaConfig,
    /// Wakes the worker when jobs become ready.
    waker: Arc<Notify>,
    /// Wakes the poll loop when a new due time appears (a keyed retry held in memory).
    timer: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct SessionContext {
    shared: Arc<Shared>,
}

impl ClientContext for SessionContext {}

fn partitions(list: &TopicPartitionList) -> Vec<Tp> {
    list.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

impl ConsumerContext for SessionContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked = partitions(list);
            let commits = self.shared.state().revoke(&revoked);
            tracing::info!(
                partitions = revoked.len(),
                "partitions revoked: their unfinished jobs run again on the new owner"
            );
            if let Err(err) = commit(consumer, &commits, CommitMode::Sync) {
                tracing::warn!(error = %err, "commit before revocation failed; some jobs may run twice");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let assigned = partitions(list);
            tracing::info!(partitions = assigned.len(), "partitions assigned");
            self.shared.state().assign(&assigned);
        }
    }
}

type GroupConsumer = StreamConsumer<SessionContext>;

/// A running consumer session.
pub(crate) struct Session {
    consumer: Arc<GroupConsumer>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    poller: Mutex<Option<JoinHandle<()>>>,
}

impl Session {
    /// Joins the group and starts reading `topics` (a name starting with `^` is a pattern).
    pub fn start(
        config: &KafkaConfig,
        producer: Arc<Producer>,
        waker: Arc<Notify>,
        topics: &[String],
    ) -> Result<Self, Error> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            producer,
            config: config.clone(),
            waker,
            timer: Notify::new(),
        });
        let client = client_config(config, |c| {
            c.set("group.id", &config.group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("partition.assignment.strategy", "cooperative-sticky")
                .set(
                    "session.timeout.ms",
                    config.session_timeout.as_millis().to_string(),
                )
                .set("topic.metadata.refresh.interval.ms", "5000")
                // A fetch waits at most this long for new records. Brokers that do not answer
                // a waiting fetch when a record arrives (tansu 0.6) otherwise add the default
                // 500 ms to every enqueue -> start on an idle queue.
                .set("fetch.wait.max.ms", "10")
                // The poll loop stops taking records while the buffer is full; it only ever
                // waits on workers, so allow it as long as a slow batch of jobs may take.
                .set("max.poll.interval.ms", "1800000");
        });
        let consumer: GroupConsumer = client.create_with_context(SessionContext {
            shared: shared.clone(),
        })?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        let consumer = Arc::new(consumer);
        let (stop, stopped) = watch::channel(false);
        let poller = tokio::spawn(poll_loop(consumer.clone(), shared.clone(), stopped));
        Ok(Session {
            consumer,
            shared,
            stop,
            poller: Mutex::new(Some(poller)),
        })
    }

    /// Stores the outcomes of finished jobs, commits, and hands out up to `limit` jobs.
    pub async fn exchange(&self, reports: Vec<Report>, limit: usize) -> Result<Vec<Job>, Error> {
        for report in reports {
            self.store(report).await?;
        }
        let commits = self.shared.state().commits();
        if let Err(err) = commit(self.consumer.as_ref(), &commits, CommitMode::Async) {
            tracing::warn!(error = %err, "commit failed; will commit a later position");
        }
        // Finished work may have made room in the buffer: let the poll loop read again.
        self.shared.timer.notify_one();
        let taken = self.shared.state().take(limit);
        Ok(taken.into_iter().map(to_job).collect())
    }

    async fn store(&self, report: Report) -> Result<(), Error> {
        let Some(mut pending) = self.shared.state().unlease(report.id) else {
            return Ok(()); // revoked meanwhile: the new owner runs it again
        };
        let sent = match &report.completion {
            Completion::Completed | Completion::Cancelled => Ok(()),
            Completion::Released => return Ok(()), // left uncommitted: the next owner runs it
            Completion::Retry { at_ms, error } if pending.envelope.ordering_key.is_some() => {
                pending.envelope.attempt = report.attempt;
                pending.envelope.not_before = Some(*at_ms);
                tracing::debug!(job = %report.id, %error, "keyed job retries in place");
                self.shared.state().hold(pending);
                self.shared.timer.notify_one();
                return Ok(());
            }
            Completion::Retry { at_ms, error } => {
                self.forward(&pending, report.attempt, Some(*at_ms), error)
                    .await
            }
            Completion::Dead { error } => self.forward(&pending, report.attempt, None, error).await,
        };
        match sent {
            Ok(()) => {
                self.shared.state().finish(&pending);
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

    /// Stops reading, commits what is finished and leaves the group.
    pub async fn close(&self) {
        let _ = self.stop.send(true);
        let poller = self.poller.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(poller) = poller {
            let _ = poller.await;
        }
        let commits = self.shared.state().commits();
        if let Err(err) = commit(self.consumer.as_ref(), &commits, CommitMode::Sync) {
            tracing::warn!(error = %err, "final commit failed; finished jobs may run again");
        }
        self.consumer.unsubscribe();
    }
}

impl Drop for Session {
    /// A session dropped without `close` (its engine handle is gone: the process is going
    /// down) stops polling without committing, like a crash: unfinished jobs run again.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Adds the seeds' provenance headers.
fn provenance(record: &mut Record, (topic, partition): &Tp, offset: i64, error: &str) {
    let mut put = |name: &str, value: String| {
        record.headers.retain(|(n, _)| n != name);
        record.headers.push((name.to_string(), value.into_bytes()));
    };
    put(header::ORIGINAL_TOPIC, topic.to_string());
    put(header::ORIGINAL_PARTITION, partition.to_string());
    put(header::ORIGINAL_OFFSET, offset.to_string());
    put(header::ERROR_MESSAGE, error.to_string());
    put(header::ERROR_TIMESTAMP, now_ms().to_string());
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

fn commit<C: Consumer<SessionContext>>(
    consumer: &C,
    commits: &[(Tp, i64)],
    mode: CommitMode,
) -> Result<(), Error> {
    if commits.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), position) in commits {
        list.add_partition_offset(topic, *partition, Offset::Offset(*position))?;
    }
    consumer.commit(&list, mode)?;
    Ok(())
}

async fn poll_loop(
    consumer: Arc<GroupConsumer>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next_due: Option<i64> = None;
    loop {
        let sleep = async {
            match next_due {
                Some(at) => {
                    tokio::time::sleep(Duration::from_millis((at - now_ms()).max(0) as u64)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = sleep => {}
            _ = shared.timer.notified() => {}
            // Back-pressure: while the buffer is full, records stay in the client. The loop
            // keeps running (and librdkafka keeps the group membership alive in its own thread).
            message = consumer.recv(), if shared.state().buffered() < MAX_BUFFERED => match message {
                Ok(message) => take_in(&shared, &message).await,
                Err(err) => {
                    tracing::warn!(error = %err, "consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
        next_due = shared.state().release_due(now_ms());
        shared.waker.notify_waiters();
    }
}

/// Takes in one record: ready, waiting behind its key, or (a retry not due yet) held in memory
/// until due.
async fn take_in(shared: &Shared, message: &BorrowedMessage<'_>) {
    let tp: Tp = (Arc::from(message.topic()), message.partition());
    if !shared.state().is_assigned(&tp) {
        // Fetched before its partition was revoked: the new owner reads it again. Taking it
        // here could commit a position in a partition this worker no longer owns.
        return;
    }
    let offset = message.offset();
    let record = record_of(message);
    let queue = queue_of(&shared.config, message.topic());
    let ingest = shared
        .config
        .ingest
        .iter()
        .find(|i| i.topic == message.topic());
    let decoded = match ingest {
        Some(ingest) => ingest.decoder.decode(&record, now_ms()),
        None => Envelope::from_record(&record, &queue),
    };
    let envelope = match decoded {
        Ok(envelope) => envelope,
        Err(err) => {
            dead_letter_poison(shared, &tp, offset, record, &err).await;
            shared.state().skip(&tp, offset);
            return;
        }
    };
    let accepted = shared.state().accept(
        Pending {
            tp: tp.clone(),
            offset,
            envelope,
        },
        now_ms(),
    );
    if let Accepted::Ready = accepted {
        shared.waker.notify_waiters();
    }
}

/// A record that is not a job goes to the dead-letter topic with the decode error; retried
/// until the broker takes it, so a poison record is never silently dropped.
async fn dead_letter_poison(
    shared: &Shared,
    tp: &Tp,
    offset: i64,
    mut record: Record,
    err: &Error,
) {
    provenance(
        &mut record,
        tp,
        offset,
        &format!("undecodable record: {err}"),
    );
    let dead = shared.config.topics.dead();
    let mut delay = Duration::from_millis(100);
    loop {
        match shared.producer.send(&dead, &record).await {
            Ok(_) => {
                tracing::warn!(topic = %tp.0, partition = tp.1, offset, error = %err, "undecodable record dead-lettered");
                return;
            }
            Err(send_err) => {
                tracing::error!(error = %send_err, "cannot dead-letter a poison record yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A consumed message as a [`Record`].
pub fn record_of<M: Message>(message: &M) -> Record {
    let headers = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    Record {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
    }
}

fn queue_of(config: &KafkaConfig, topic: &str) -> String {
    topic
        .strip_prefix(&format!("{}queue.", config.topics.prefix))
        .unwrap_or(conveyor_core::DEFAULT_QUEUE)
        .to_string()
}
