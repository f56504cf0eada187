//! `job(id)` on Kafka: a job's journal entries and its record, folded into a [`JobInfo`].
//!
//! - Entries: the job's journal partition from its enqueue time (the UUIDv7's time, less
//!   [`SKEW`]) to the log end.
//! - Record: where its last `running` entry says it ran from; a job that never started is
//!   looked for in its queue topics, the schedule topic and the ingest topics from its enqueue
//!   time (less [`SKEW`]) to the log end.
//!
//! The control marks (cancel, purge, cleanup) then say what became of a job no worker
//! finished yet.

use conveyor_core::{now_ms, JobId, JobInfo, JobState};

use super::{partition_of, Entry, Step};
use crate::control::Book;
use crate::envelope::header;
use crate::scan::Scanner;
use crate::{Envelope, Error, KafkaConfig, Record};

/// How far clocks of the hosts that wrote a job's records may differ (ms).
const SKEW: i64 = 60_000;

/// One job's journal entries, in order, and its record's envelope when found.
pub(crate) struct Found {
    entries: Vec<Entry>,
    envelope: Option<Envelope>,
}

/// Reads what the logs hold about job `id`.
pub(crate) fn find(config: &KafkaConfig, scanner: &Scanner, id: JobId) -> Result<Found, Error> {
    let since = enqueued_ms(id).map(|ms| ms - SKEW);
    let entries = entries_of(config, scanner, id, since)?;
    let located = entries.iter().rev().find_map(|e| e.record.clone());
    let envelope = match located {
        Some((topic, partition, offset)) => {
            let mut found = None;
            scanner.read(
                &[(topic.clone(), partition, offset, offset + 1)],
                |_, _, _, r| {
                    found = decode(config, &topic, &r);
                },
            )?;
            found
        }
        None => None,
    };
    let envelope = match envelope {
        Some(envelope) => Some(envelope),
        None => search_record(config, scanner, id, since)?,
    };
    Ok(Found { entries, envelope })
}

/// When job `id` was made (ms since the epoch), from its UUIDv7; `None` for other ids.
fn enqueued_ms(id: JobId) -> Option<i64> {
    let (secs, nanos) = id.0.get_timestamp()?.to_unix();
    Some(secs as i64 * 1000 + i64::from(nanos / 1_000_000))
}

fn entries_of(
    config: &KafkaConfig,
    scanner: &Scanner,
    id: JobId,
    since: Option<i64>,
) -> Result<Vec<Entry>, Error> {
    let topic = config.topics.status();
    let partitions = scanner.partitions_of(&topic)?;
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let partition = partition_of(id, partitions.len());
    let offsets = scanner.watermarks(&[(topic.clone(), vec![partition])])?;
    let Some(offsets) = offsets.first() else {
        return Ok(Vec::new());
    };
    let start = match since {
        Some(ms) => {
            let found = scanner.offsets_at_time(std::slice::from_ref(offsets), ms)?;
            found
                .get(&(topic.clone(), partition))
                .copied()
                .unwrap_or(offsets.low)
        }
        None => offsets.low,
    };
    let key = id.to_string().into_bytes();
    let mut entries = Vec::new();
    scanner.read(&[(topic, partition, start, offsets.high)], |_, _, _, r| {
        if r.key.as_deref() == Some(key.as_slice()) {
            entries.extend(Entry::from_record(&r).filter(|e| e.id == id));
        }
    })?;
    Ok(entries)
}

/// The job's envelope from a record of `topic` (Conveyor's own, or an ingest topic's).
fn decode(config: &KafkaConfig, topic: &str, record: &Record) -> Option<Envelope> {
    if Envelope::is_envelope(record) {
        return Envelope::from_record(record, conveyor_core::DEFAULT_QUEUE).ok();
    }
    let ingest = config.ingest.iter().find(|i| i.topic == topic)?;
    ingest.decoder.decode(record, now_ms()).ok()
}

/// Looks for the record of a job that never started, from its enqueue time to the log end.
fn search_record(
    config: &KafkaConfig,
    scanner: &Scanner,
    id: JobId,
    since: Option<i64>,
) -> Result<Option<Envelope>, Error> {
    let layout = &config.topics;
    let schedule = layout.scheduled();
    let topics: Vec<(String, Vec<i32>)> = scanner
        .topics()?
        .into_iter()
        .filter(|(t, _)| {
            layout.queue_of(t).is_some()
                || *t == schedule
                || config.ingest.iter().any(|i| i.topic == *t)
        })
        .collect();
    let offsets = scanner.watermarks(&topics)?;
    let starts = match since {
        Some(ms) => scanner.offsets_at_time(&offsets, ms)?,
        None => offsets
            .iter()
            .map(|p| ((p.topic.clone(), p.partition), p.low))
            .collect(),
    };
    // One pass to the log end: a broker's offset for a time is a start, never an end bound
    // (see Scanner::offsets_at_time).
    let ranges: Vec<_> = offsets
        .iter()
        .map(|p| {
            let at = (p.topic.clone(), p.partition);
            let start = starts.get(&at).copied().unwrap_or(p.low);
            (p.topic.clone(), p.partition, start, p.high)
        })
        .collect();
    let wanted = id.to_string();
    let mut found = None;
    scanner.read(&ranges, |topic, _, _, r| {
        let ours = r.header(header::ID).and_then(Result::ok) == Some(wanted.as_str());
        if found.is_none() && ours {
            found = decode(config, topic, &r);
        }
    })?;
    Ok(found)
}

impl Found {
    /// The job as its entries, its record and the control marks tell; `None` when nothing
    /// is known of it, or (with `hide_removed`) a purge or cleanup removed it.
    pub fn info_of(&self, id: JobId, book: &Book, hide_removed: bool) -> Option<JobInfo> {
        let mut info = match (&self.envelope, self.entries.first()) {
            (Some(envelope), _) => waiting(envelope),
            (None, Some(first)) => unknown_record(id, first),
            (None, None) => return None,
        };
        for entry in &self.entries {
            apply(&mut info, entry);
        }
        let unfinished = !matches!(
            info.state,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        );
        if let (true, Some(at)) = (unfinished, book.cancelled_at(id)) {
            if info.state == JobState::Running {
                info.cancel_requested = true;
            } else {
                info.state = JobState::Cancelled;
                info.finished_at = Some(JobInfo::time(at));
            }
        }
        let never_started = self.entries.iter().all(|e| e.step != Step::Running);
        if let (Some(envelope), true) = (&self.envelope, never_started && unfinished) {
            if hide_removed && book.is_purged(envelope) && info.state != JobState::Cancelled {
                return None;
            }
        }
        let finished_at = info.finished_at.map(|at| at.timestamp_millis());
        let gone = match info.state {
            JobState::Completed | JobState::Cancelled => {
                finished_at.is_some_and(|at| book.is_cleaned(at))
            }
            JobState::Dead => finished_at.is_some_and(|at| book.is_dead_purged(at)),
            _ => false,
        };
        (!(hide_removed && gone)).then_some(info)
    }
}

/// A job as its record says, before any worker touched it.
fn waiting(e: &Envelope) -> JobInfo {
    let run_at = e.not_before.unwrap_or(e.enqueued_at);
    JobInfo {
        id: e.id,
        kind: e.kind.clone(),
        queue: e.queue.clone(),
        state: if run_at > now_ms() {
            JobState::Scheduled
        } else {
            JobState::Available
        },
        attempt: e.attempt,
        max_attempts: e.max_attempts,
        priority: e.priority,
        run_at: JobInfo::time(run_at),
        created_at: JobInfo::time(e.enqueued_at),
        finished_at: None,
        last_error: None,
        errored_at: None,
        progress: None,
        payload: serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::Null),
        idempotency_key: e.idempotency_key.clone(),
        ordering_key: e.ordering_key.clone(),
        cancel_requested: false,
        replay_of: e.replay_of,
    }
}

/// A job whose record is gone (retention) or was not found: what its entries say.
fn unknown_record(id: JobId, first: &Entry) -> JobInfo {
    JobInfo {
        id,
        kind: first.kind.clone().unwrap_or_default(),
        queue: first.queue.clone().unwrap_or_default(),
        state: JobState::Available,
        attempt: 0,
        max_attempts: first.max_attempts.unwrap_or(0),
        priority: 0,
        run_at: JobInfo::time(first.at),
        created_at: JobInfo::time(enqueued_ms(id).unwrap_or(first.at)),
        finished_at: None,
        last_error: None,
        errored_at: None,
        progress: None,
        payload: serde_json::Value::Null,
        idempotency_key: None,
        ordering_key: None,
        cancel_requested: false,
        replay_of: None,
    }
}

/// Moves `info` on by one journal entry.
fn apply(info: &mut JobInfo, entry: &Entry) {
    let at = JobInfo::time(entry.at);
    if let Some(attempt) = entry.attempt {
        info.attempt = attempt;
    }
    if let Some(max) = entry.max_attempts {
        info.max_attempts = max;
    }
    match entry.step {
        Step::Running => {
            info.state = JobState::Running;
            info.cancel_requested = false;
        }
        Step::Completed | Step::Cancelled | Step::Dead => {
            info.state = match entry.step {
                Step::Completed => JobState::Completed,
                Step::Cancelled => JobState::Cancelled,
                _ => JobState::Dead,
            };
            info.finished_at = Some(at);
        }
        Step::Retryable => {
            info.state = JobState::Retryable;
            info.run_at = entry.next_at.map_or(at, JobInfo::time);
        }
        Step::CancelRequested => info.cancel_requested = true,
        Step::Available => {
            info.state = JobState::Available;
            info.run_at = at;
            info.finished_at = None;
        }
        Step::Progress => info.progress = entry.progress.clone(),
        // A moved job that failed before waits for its next attempt, as it did where it was.
        Step::Moved if info.state == JobState::Scheduled && entry.error.is_some() => {
            info.state = JobState::Retryable;
        }
        Step::Moved => {}
    }
    if let Some(error) = &entry.error {
        info.last_error = Some(error.clone());
        info.errored_at = Some(at);
    }
}
