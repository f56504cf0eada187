//! Reading records into a session: one group consumer per [`Lane`], its rebalance callbacks,
//! and the poll loop that decodes records into jobs (or dead-letters what is not a job).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use conveyor_core::now_ms;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{watch, Notify};

mod claims;
mod gate;
mod notes;
mod records;
mod refetch;
mod schedule;

use gate::StartGate;
use records::dead_letter_poison;
pub use records::record_of;
pub(crate) use records::{decode, origin, poison_letter, provenance, read_message};
use refetch::{check_idle, refetch, starting_positions, IDLE_MS};
pub(crate) use schedule::send_to_queue;

use crate::control::ControlTail;
use crate::producer::{client_config, Producer};
use crate::state::{Accepted, Lane, Pending, State, Tp};
use crate::status::Journal;
use crate::{Error, KafkaConfig, Level};

/// Most records one lane holds read and not finished: beyond it the lane pauses its partitions
/// until workers catch up (back-pressure that bounds memory by this, not the backlog), and
/// goes on polling the client, which serves rebalances.
const MAX_BUFFERED: usize = 4096;

/// How often each lane logs what it holds (target `conveyor_kafka::summary`, debug level).
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// What a session's lanes and its exchanges share.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub producer: Arc<Producer>,
    pub config: KafkaConfig,
    /// Wakes the worker when jobs become ready.
    pub waker: Arc<Notify>,
    /// Wakes each lane's poll loop (indexed by [`Lane`]): buffer room, or a new due time.
    timers: [Notify; Lane::ALL.len()],
    /// Wakes the schedule lane's mover: a delayed job was read (maybe due sooner than any).
    schedule_wake: Notify,
    /// The engine handle's status journal and control marks.
    pub sidecars: Sidecars,
    /// Holds hand-outs until the urgent lane read the high topics (see gate.rs).
    pub start_gate: StartGate,
}

/// What a session shares with its engine handle: the status journal it writes each job's
/// steps to (src/status) and the control marks it obeys (src/control).
#[derive(Clone)]
pub(crate) struct Sidecars {
    /// Writes status entries.
    pub journal: Journal,
    /// Cancel, purge and cleanup marks.
    pub control: Arc<ControlTail>,
}

impl Shared {
    pub fn new(
        config: &KafkaConfig,
        producer: Arc<Producer>,
        waker: Arc<Notify>,
        sidecars: Sidecars,
        high_topics_exist: bool,
    ) -> Self {
        Shared {
            state: Mutex::new(State::default()),
            producer,
            config: config.clone(),
            waker,
            timers: std::array::from_fn(|_| Notify::new()),
            schedule_wake: Notify::new(),
            sidecars,
            start_gate: StartGate::new(high_topics_exist),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets every lane look again: room in its buffer, or a new due time.
    pub fn nudge(&self) {
        for timer in &self.timers {
            timer.notify_one();
        }
    }
}

/// Rebalance callbacks of one lane's consumer.
pub(crate) struct LaneContext {
    shared: Arc<Shared>,
    lane: Lane,
}

impl ClientContext for LaneContext {
    /// librdkafka reports a subscribed pattern that matches no topic as an error; for a lane
    /// that is the normal state until a producer creates the first topic of its kind (say, the
    /// first high-priority job), so it is not worth an error line at every start.
    fn error(&self, error: KafkaError, reason: &str) {
        // Only for a pattern (`^...`): a topic subscribed by name that is gone stays an error.
        if is_no_topic_yet(&error) && reason.contains('^') {
            tracing::debug!(%error, reason, lane = ?self.lane, "no topic matches the lane's subscription yet");
        } else {
            tracing::error!(%error, reason, lane = ?self.lane, "librdkafka error");
        }
    }
}

/// The error librdkafka gives for a subscription with no topic (yet).
fn is_no_topic_yet(error: &KafkaError) -> bool {
    error.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition)
}

fn partitions(list: &TopicPartitionList) -> Vec<Tp> {
    list.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

impl ConsumerContext for LaneContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked = partitions(list);
            let commits = self.shared.state().revoke(&revoked);
            if consumer.assignment_lost() {
                // The group went on without this worker (it was silent past its session, e.g.
                // paused or cut off): another may own these partitions now, and a commit from
                // here could move its position. What finished here since the last commit runs
                // again there.
                tracing::warn!(
                    partitions = revoked.len(),
                    lane = ?self.lane,
                    uncommitted = commits.len(),
                    "partitions lost: not committing; their unfinished and uncommitted jobs run again on the new owner"
                );
                return;
            }
            tracing::info!(
                partitions = revoked.len(),
                lane = ?self.lane,
                "partitions revoked: their unfinished jobs run again on the new owner"
            );
            if let Err(err) = commit(consumer, &commits, CommitMode::Sync) {
                tracing::warn!(error = %err, "commit before revocation failed; some jobs may run twice");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let assigned = partitions(list);
            tracing::info!(partitions = assigned.len(), lane = ?self.lane, "partitions assigned");
            let positions = starting_positions(consumer, list);
            if self.lane == Lane::Urgent {
                self.shared.start_gate.urgent_joined();
            }
            let mut state = self.shared.state();
            state.assign(&assigned, self.lane);
            for (tp, position) in &positions {
                state.start_at(tp, *position);
            }
            let mut wants_notes = Vec::new();
            for tp in assigned {
                let position = positions.iter().find(|(p, _)| *p == tp).map(|(_, at)| *at);
                match self.lane {
                    Lane::Schedule => {
                        let generation = state.rebuild_keys(&tp);
                        claims::rebuild(self.shared.clone(), tp, generation, position);
                    }
                    // Keyed jobs retry in place, never through a retry tier: only queue and
                    // ingest topics can hold a record with attempt notes.
                    Lane::Retry => {}
                    Lane::Fresh | Lane::Urgent => {
                        let generation = state.load_notes(&tp);
                        // Without a committed position the lane reads from the log start.
                        wants_notes.push((tp, generation, position.unwrap_or(0)));
                    }
                }
            }
            notes::load(self.shared.clone(), wants_notes);
        }
    }
}

/// One lane's consumer.
pub(crate) type LaneConsumer = StreamConsumer<LaneContext>;

/// Joins `group` and subscribes to `topics` (a name starting with `^` is a pattern).
pub(crate) fn subscribe(
    shared: &Arc<Shared>,
    lane: Lane,
    group: &str,
    topics: &[String],
) -> Result<LaneConsumer, Error> {
    let config = &shared.config;
    let client = client_config(config, |c| {
        c.set("group.id", group)
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
    let consumer: LaneConsumer = client.create_with_context(LaneContext {
        shared: shared.clone(),
        lane,
    })?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    Ok(consumer)
}

/// Commits positions through `consumer` (the one whose group owns those partitions).
pub(crate) fn commit<C: Consumer<LaneContext>>(
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

/// Reads `lane`'s records into the session until `stop`.
pub(crate) async fn poll_loop(
    consumer: Arc<LaneConsumer>,
    shared: Arc<Shared>,
    lane: Lane,
    mut stop: watch::Receiver<bool>,
) {
    let timer = &shared.timers[lane as usize];
    let mut next_due: Option<i64> = None;
    let mut idle_check = tokio::time::interval(Duration::from_millis(IDLE_MS as u64 / 2));
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Partitions paused because the lane's buffer is full.
    let mut held: HashSet<Tp> = HashSet::new();
    let mut last_summary = std::time::Instant::now();
    if lane == Lane::Schedule {
        // Moving due jobs waits for the broker's acknowledgements: done beside the reading,
        // never holding it up (a loop that did both fell seconds behind the markers).
        tokio::spawn(schedule::mover(
            consumer.clone(),
            shared.clone(),
            stop.clone(),
        ));
    }
    loop {
        // The schedule lane never holds back: its records wait for their time in any order,
        // so one due soon may come after thousands due later (see state/timetable.rs).
        if lane != Lane::Schedule && shared.state().buffered(lane) >= MAX_BUFFERED {
            hold_back(&consumer, &shared, lane, &mut held);
        } else if !held.is_empty() {
            release(&consumer, &shared, &mut held);
        }
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
            _ = timer.notified() => {}
            _ = idle_check.tick() => {
                check_idle(consumer.as_ref(), &shared, lane, &held);
                if last_summary.elapsed() >= SUMMARY_EVERY {
                    last_summary = std::time::Instant::now();
                    let summary = shared.state().summary(lane);
                    tracing::debug!(target: "conveyor_kafka::summary", ?lane, held = held.len(), "{summary}");
                }
            }
            // Always polled, also while the buffer is full (its partitions are paused then):
            // rebalance callbacks run only inside a poll, and a group waits for them.
            message = consumer.recv() => match message {
                Ok(message) => {
                    let tp: Tp = (Arc::from(message.topic()), message.partition());
                    take_in(&shared, &message).await;
                    // A record of a held partition: it was assigned again since it was
                    // paused (an assignment starts unpaused), so it is paused again.
                    if held.contains(&tp) {
                        set_paused(consumer.as_ref(), &[tp], true);
                    }
                }
                Err(err) if is_no_topic_yet(&err) => {
                    tracing::debug!(error = %err, ?lane, "no topic matches the lane's subscription yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, ?lane, "consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
        let refetches = shared.state().take_refetches(lane);
        for (tp, from) in refetches {
            refetch(consumer.as_ref(), &shared, &tp, from);
        }
        next_due = shared.state().release_due(now_ms());
        shared.waker.notify_waiters();
        let layout = &shared.config.topics;
        let is_low = |topic: &str| matches!(layout.level_of(topic), Some((_, Level::Low)));
        let (pause, resume) = shared
            .state()
            .flow(lane, shared.config.pause_at, now_ms(), is_low);
        // While the lane holds back, its partitions stay paused: flow control's decisions
        // are in its paused set, which `release` follows.
        let free =
            |tps: Vec<Tp>| -> Vec<Tp> { tps.into_iter().filter(|tp| !held.contains(tp)).collect() };
        set_paused(consumer.as_ref(), &free(pause), true);
        set_paused(consumer.as_ref(), &free(resume), false);
    }
}

/// Back-pressure: the lane's buffer is full, so every partition of the lane is paused (the
/// client stops fetching; what it had fetched it drops and fetches again on resume) while the
/// poll loop goes on polling. Partitions assigned meanwhile are paused too.
fn hold_back(consumer: &LaneConsumer, shared: &Shared, lane: Lane, held: &mut HashSet<Tp>) {
    let assigned = shared.state().assigned_of(lane);
    if assigned == *held {
        return;
    }
    let all: Vec<Tp> = assigned.iter().cloned().collect();
    set_paused(consumer, &all, true);
    *held = assigned;
}

/// The lane's buffer has room again: resumes the partitions [`hold_back`] paused, except those
/// flow control keeps paused and those revoked meanwhile.
fn release(consumer: &LaneConsumer, shared: &Shared, held: &mut HashSet<Tp>) {
    let back: Vec<Tp> = {
        let state = shared.state();
        held.drain()
            .filter(|tp| state.is_assigned(tp) && !state.is_flow_paused(tp))
            .collect()
    };
    set_paused(consumer, &back, false);
}

/// Pauses (stops fetching) or resumes partitions. A failure is logged: the partition was
/// revoked meanwhile, or it keeps flowing and the lane's buffer limit still bounds memory.
fn set_paused(consumer: &LaneConsumer, partitions: &[Tp], paused: bool) {
    if partitions.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition(topic, *partition);
    }
    let done = if paused {
        consumer.pause(&list)
    } else {
        consumer.resume(&list)
    };
    match done {
        Ok(()) => tracing::debug!(partitions = partitions.len(), paused, "flow control"),
        Err(err) => tracing::warn!(error = %err, paused, "cannot pause or resume partitions"),
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
    if shared.state().is_repeat(&tp, offset) {
        // Given before (the broker sent it twice, or a re-fetch read it again): it runs or ran.
        tracing::debug!(topic = %tp.0, partition = tp.1, offset, "record given again: ignored");
        return;
    }
    let (record, unreadable) = read_message(message);
    if schedule::take_marker(shared, &tp, offset, &record) {
        return;
    }
    let decoded = match unreadable {
        Some(err) => Err(err),
        None => decode(&shared.config, message.topic(), &record, now_ms()),
    };
    let envelope = match decoded {
        Ok(envelope) => envelope,
        Err(err) => {
            let letter = poison_letter(record, &tp, offset, &err);
            dead_letter_poison(shared, &tp, offset, &letter, &err).await;
            shared.state().skip(&tp, offset);
            return;
        }
    };
    let pending = Pending {
        tp: tp.clone(),
        offset,
        envelope,
    };
    let Some(pending) = schedule::park_if_not_due(shared, pending).await else {
        return;
    };
    let accepted = shared.state().accept(pending, now_ms());
    match accepted {
        Accepted::Ready => shared.waker.notify_waiters(),
        Accepted::Scheduled => shared.schedule_wake.notify_one(),
        _ => {}
    }
}
