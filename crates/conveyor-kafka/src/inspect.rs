//! Statistics and the dead-letter list on Kafka, from the broker alone (no external store).
//!
//! Per queue, from the workers' group offsets and two small scans:
//! - `available`: records of the queue's topics (all priority levels) their group has not
//!   finished (log end minus committed offset; the high topic's group is `{group}.high`);
//!   this includes jobs running now and keyed retries held in place;
//! - `retryable`: records of the retry tiers not finished yet by the retry group
//!   (`{group}.retry`), counted by their queue header;
//! - `scheduled`: records of the schedule topic not moved yet by the schedule group
//!   (`{group}.schedule`) and not due yet, by their queue header;
//! - `dead`: records of the dead-letter topic since the purge position not retried since, by
//!   queue (see dead.rs);
//! - `completed`: records of the queue's topics the group finished, minus those that went on to
//!   a retry tier (still pending), to the dead-letter topic, or to the schedule topic (parked
//!   there until due, still pending).
//!
//! - `running`: what the workers' latest presence records say they run (see presence.rs),
//!   taken out of `available`.
//!
//! Counts cover what is still in the logs: records removed by retention are not counted.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use conveyor_core::{
    DeadLetter, DeadLetterList, JobId, JobInfo, JobState, PartitionLag, QueueStats, Statistics,
    Stats,
};

use crate::control::counts::{adjust, stopped_waiting};
use crate::control::Book;
use crate::envelope::{header, payload_text};
use crate::scan::{PartitionOffsets, Scanner};
use crate::{Envelope, Error, KafkaConfig, KafkaEngine, Level, Record};

#[async_trait]
impl Statistics for KafkaEngine {
    async fn stats(&self) -> conveyor_core::Result<Stats> {
        self.control
            .wait_ready(crate::control::MARKS_PATIENCE)
            .await;
        let config = self.config().clone();
        let book = self.control.with(Book::clone);
        blocking(move || stats(&config, &book)).await
    }
}

#[async_trait]
impl DeadLetterList for KafkaEngine {
    async fn list_dead(&self, limit: usize) -> conveyor_core::Result<Vec<DeadLetter>> {
        let config = self.config().clone();
        blocking(move || list_dead(&config, limit)).await
    }
}

/// rdkafka's metadata and offset calls block: run them off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> conveyor_core::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| conveyor_core::Error::Closed(format!("inspection task failed: {e}")))?
        .map_err(Into::into)
}

/// The queue whose jobs `topic` carries: `{prefix}queue.{q}`, or an ingest topic's queue.
fn queue_of_topic(config: &KafkaConfig, topic: &str) -> Option<String> {
    if let Some(queue) = config.topics.queue_of(topic) {
        return Some(queue.to_string());
    }
    config
        .ingest
        .iter()
        .find(|i| i.topic == topic)
        .map(|i| i.decoder.queue.clone())
}

/// The queue a retry or dead record belongs to: its queue header, else that of its origin.
pub(crate) fn queue_of_record(config: &KafkaConfig, record: &Record) -> String {
    let text = |name| record.header(name).and_then(Result::ok);
    text(header::QUEUE)
        .map(str::to_string)
        .or_else(|| text(header::ORIGINAL_TOPIC).and_then(|t| queue_of_topic(config, t)))
        .unwrap_or_else(|| conveyor_core::DEFAULT_QUEUE.to_string())
}

fn stats(config: &KafkaConfig, book: &Book) -> Result<Stats, Error> {
    let scanner = Scanner::new(config, &config.group)?;
    let layout = &config.topics;
    let retry_names = layout.retry_topics();
    let schedule_name = layout.scheduled();
    let (schedule_topics, topics): (Vec<_>, Vec<_>) = scanner
        .topics()?
        .into_iter()
        .filter(|(t, _)| {
            queue_of_topic(config, t).is_some() || retry_names.contains(t) || *t == schedule_name
        })
        .partition(|(t, _)| *t == schedule_name);
    let (retry_topics, topics): (Vec<_>, Vec<_>) = topics
        .into_iter()
        .partition(|(t, _)| retry_names.contains(t));
    let (urgent_topics, topics): (Vec<_>, Vec<_>) = topics
        .into_iter()
        .partition(|(t, _)| matches!(layout.level_of(t), Some((_, Level::High))));
    let mut offsets = scanner.offsets(&topics)?;
    // The retry tiers and the high-priority topics are read by groups of their own.
    offsets.extend(offsets_in_group(
        config,
        &config.retry_group(),
        &retry_topics,
    )?);
    offsets.extend(offsets_in_group(
        config,
        &config.urgent_group(),
        &urgent_topics,
    )?);
    let mut retrying: HashMap<String, u64> = HashMap::new();
    let pending_retries = ranges(
        &offsets,
        |p| retry_names.contains(&p.topic),
        |p| p.position(),
    );
    scanner.read(&pending_retries, |_, _, _, record| {
        if !is_cancelled(book, &record) {
            *retrying
                .entry(queue_of_record(config, &record))
                .or_default() += 1;
        }
    })?;
    let scheduled = count_scheduled(config, &schedule_topics, book)?;
    let mut dead: HashMap<String, u64> = HashMap::new();
    for letter in crate::dead::letters(config, None)? {
        *dead
            .entry(queue_of_record(config, &letter.record))
            .or_default() += 1;
    }
    let waiting = stopped_waiting(&scanner, book, &offsets, |t| queue_of_topic(config, t))?;
    let queues = offsets
        .into_iter()
        .filter_map(|p| queue_of_topic(config, &p.topic).map(|q| (q, p)));
    let mut stats = count(queues, &retrying, &scheduled, &dead);
    adjust(&mut stats, book, &waiting);
    let running = crate::presence::running(config, &scanner)?;
    for queue in &mut stats.queues {
        let n = running.get(&queue.queue).copied().unwrap_or(0);
        // Running jobs are unfinished offsets of their queue's topics, counted as available
        // until here.
        queue.running = n;
        queue.available = queue.available.saturating_sub(n);
    }
    Ok(stats)
}

/// True when the record is of a job a user cancelled.
fn is_cancelled(book: &Book, record: &Record) -> bool {
    record
        .header(header::ID)
        .and_then(Result::ok)
        .and_then(|id| id.parse::<JobId>().ok())
        .is_some_and(|id| book.is_cancelled(id))
}

/// Delayed jobs not due yet, by queue: the schedule topic's records past the schedule group's
/// position whose time is still ahead. (Records due already are moved, or about to be: a job
/// due tomorrow holds the position, and those moved after it are not counted again.) Each
/// count comes with how many of them were parked from a queue topic (they have an origin).
fn count_scheduled(
    config: &KafkaConfig,
    topics: &[(String, Vec<i32>)],
    book: &Book,
) -> Result<HashMap<String, (u64, u64)>, Error> {
    let mut scheduled: HashMap<String, (u64, u64)> = HashMap::new();
    if topics.is_empty() {
        return Ok(scheduled);
    }
    let scanner = Scanner::new(config, &config.schedule_group())?;
    let offsets = scanner.offsets(topics)?;
    let pending = ranges(&offsets, |_| true, |p| p.position());
    let now = conveyor_core::now_ms();
    scanner.read(&pending, |_, _, _, record| {
        let not_before = record
            .header(header::NOT_BEFORE)
            .and_then(Result::ok)
            .and_then(|t| t.parse::<i64>().ok());
        // A cancelled or purged job is never moved to its queue (the mover drops it).
        let stopped = book.latest_stop().is_some()
            && Envelope::from_record(&record, conveyor_core::DEFAULT_QUEUE)
                .is_ok_and(|e| book.stops(&e));
        if not_before.is_some_and(|at| at > now) && !stopped {
            let counts = scheduled
                .entry(queue_of_record(config, &record))
                .or_default();
            counts.0 += 1;
            counts.1 += u64::from(record.header(header::ORIGINAL_TOPIC).is_some());
        }
    })?;
    Ok(scheduled)
}

/// Where `group` stands in `topics`; no client is made when there are none (no high-priority
/// topic yet, say), since each one connects to the cluster.
fn offsets_in_group(
    config: &KafkaConfig,
    group: &str,
    topics: &[(String, Vec<i32>)],
) -> Result<Vec<PartitionOffsets>, Error> {
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    Scanner::new(config, group)?.offsets(topics)
}

/// `[from(p), high)` of every partition `keep` selects.
fn ranges(
    offsets: &[PartitionOffsets],
    keep: impl Fn(&PartitionOffsets) -> bool,
    from: impl Fn(&PartitionOffsets) -> i64,
) -> Vec<(String, i32, i64, i64)> {
    offsets
        .iter()
        .filter(|p| keep(p))
        .map(|p| (p.topic.clone(), p.partition, from(p), p.high))
        .collect()
}

/// Builds the per-queue counts from the queue topics' offsets and the scanned counts.
fn count(
    queues: impl Iterator<Item = (String, PartitionOffsets)>,
    retrying: &HashMap<String, u64>,
    scheduled: &HashMap<String, (u64, u64)>,
    dead: &HashMap<String, u64>,
) -> Stats {
    let mut by_queue: BTreeMap<String, (QueueStats, u64)> = BTreeMap::new();
    for (queue, p) in queues {
        let (stats, finished) = entry(&mut by_queue, &queue);
        stats.available += p.unfinished();
        *finished += p.finished();
        stats.partitions.push(PartitionLag {
            topic: p.topic.clone(),
            partition: p.partition,
            committed: p.position(),
            end: p.high,
            lag: p.unfinished(),
        });
    }
    for (queue, n) in retrying {
        entry(&mut by_queue, queue).0.retryable = *n;
    }
    for (queue, (n, parked)) in scheduled {
        let (stats, finished) = entry(&mut by_queue, queue);
        stats.scheduled = *n;
        // A parked job's queue record is finished, but the job has not run.
        *finished = finished.saturating_sub(*parked);
    }
    for (queue, n) in dead {
        entry(&mut by_queue, queue).0.dead = *n;
    }
    let queues = by_queue
        .into_values()
        .map(|(mut stats, finished)| {
            stats.completed = finished.saturating_sub(stats.retryable + stats.dead);
            stats
        })
        .collect();
    Stats { queues }
}

/// A queue's counts and its finished-record total, created empty on first use.
fn entry<'a>(
    by_queue: &'a mut BTreeMap<String, (QueueStats, u64)>,
    queue: &str,
) -> &'a mut (QueueStats, u64) {
    by_queue.entry(queue.to_string()).or_insert_with(|| {
        let stats = QueueStats {
            queue: queue.to_string(),
            ..QueueStats::default()
        };
        (stats, 0)
    })
}

fn list_dead(config: &KafkaConfig, limit: usize) -> Result<Vec<DeadLetter>, Error> {
    let mut letters: Vec<(i32, i64, DeadLetter)> = crate::dead::letters(config, Some(limit))?
        .into_iter()
        .map(|l| (l.partition, l.offset, dead_letter(config, &l.record)))
        .collect();
    letters.sort_by(|a, b| {
        let time = |l: &DeadLetter| l.job.errored_at;
        time(&b.2)
            .cmp(&time(&a.2))
            .then(b.1.cmp(&a.1))
            .then(b.0.cmp(&a.0))
    });
    letters.truncate(limit);
    Ok(letters.into_iter().map(|(_, _, letter)| letter).collect())
}

/// A dead-letter record as an entry of the list. Records that never decoded (poison) are
/// listed too, with what their headers and value tell.
pub(crate) fn dead_letter(config: &KafkaConfig, record: &Record) -> DeadLetter {
    let text = |name| record.header(name).and_then(Result::ok);
    let number = |name| text(name).and_then(|v| v.trim().parse::<i64>().ok());
    let origin_topic = text(header::ORIGINAL_TOPIC).map(str::to_string);
    let origin_partition = number(header::ORIGINAL_PARTITION).and_then(|p| i32::try_from(p).ok());
    let origin_offset = number(header::ORIGINAL_OFFSET);
    let errored_at = number(header::ERROR_TIMESTAMP).map(JobInfo::time);
    let last_error = text(header::ERROR_MESSAGE).map(str::to_string);
    let queue = queue_of_record(config, record);
    let job = match Envelope::from_record(record, &queue) {
        Ok(e) => JobInfo {
            id: e.id,
            kind: e.kind,
            queue: e.queue,
            state: JobState::Dead,
            attempt: e.attempt,
            max_attempts: e.max_attempts,
            priority: e.priority,
            run_at: JobInfo::time(e.not_before.unwrap_or(e.enqueued_at)),
            created_at: JobInfo::time(e.enqueued_at),
            finished_at: errored_at,
            last_error,
            errored_at,
            progress: None,
            payload: serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::Null),
            idempotency_key: e.idempotency_key,
            ordering_key: e.ordering_key,
            cancel_requested: false,
            replay_of: e.replay_of,
        },
        Err(_) => {
            let origin = format!(
                "{}/{}/{}",
                origin_topic.as_deref().unwrap_or("?"),
                origin_partition.unwrap_or(-1),
                origin_offset.unwrap_or(-1)
            );
            JobInfo {
                last_error,
                errored_at,
                finished_at: errored_at,
                ..poison_info(record, queue, &origin, errored_at.unwrap_or_default())
            }
        }
    };
    DeadLetter {
        original_queue: job.queue.clone(),
        original_topic: origin_topic,
        original_partition: origin_partition,
        original_offset: origin_offset,
        job,
    }
}

/// What can be said of a record that is not a job, read from `origin` (topic/partition/offset)
/// and dead-lettered `at`: an id derived from its origin, its kind if a header names one, its
/// value as JSON (or as text). The caller adds the error.
fn poison_info(record: &Record, queue: String, origin: &str, at: DateTime<Utc>) -> JobInfo {
    let text = |name| record.header(name).and_then(Result::ok);
    let payload = match payload_text(record) {
        Ok(json) => serde_json::from_str(&json).unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::Value::String(
            String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned(),
        ),
    };
    JobInfo {
        id: crate::ingest::job_id(text(header::ID).unwrap_or(origin)),
        kind: text(header::KIND).unwrap_or("unknown").to_string(),
        queue,
        state: JobState::Dead,
        attempt: 0,
        max_attempts: 0,
        priority: 0,
        run_at: at,
        created_at: at,
        finished_at: None,
        last_error: None,
        errored_at: None,
        progress: None,
        payload,
        idempotency_key: None,
        ordering_key: None,
        cancel_requested: false,
        replay_of: None,
    }
}
