//! [`Import`] for the Kafka engine: the target side of `conveyor migrate`.
//!
//! A moved job keeps its id, attempts, times, keys and last error: a waiting or due job goes to
//! its queue's topic (the schedule topic when it is not due yet or has an idempotency key to
//! check, as an enqueue would), a dead one to the dead-letter topic with its error headers.
//! Each gets a status entry naming its record (`moved`, or `dead` for a dead one), so
//! `conveyor job ID` finds it at once.
//!
//! **Each id once, across interrupted moves**: before producing a batch, the importer writes
//! one record listing the batch's ids and the time to the import journal `{prefix}imports`
//! (partition 0). A move killed after that record may have produced part of the batch, and the
//! source still holds every job of it (it removes jobs only after an import returned). When a
//! later import is handed ids the journal lists, it reads the topics it writes to from the
//! time of their journal record, and produces only the ids it does not find there.

use std::collections::{HashMap, HashSet};

use conveyor_core::{now_ms, Import, Imported, JobId, JobState, Transfer};
use serde::{Deserialize, Serialize};

use crate::envelope::header;
use crate::inspect::blocking;
use crate::scan::Scanner;
use crate::status::{Entry, Step};
use crate::{Envelope, Error, KafkaConfig, KafkaEngine, Record};

/// Ids per journal record: one record stays far below a broker's default message limit (1 MB).
const IDS_PER_RECORD: usize = 5_000;

/// How much earlier than its journal record a batch's records may carry a broker time (clock
/// steps on the broker's host): reading for them starts that much before.
const SKEW_MS: i64 = 60_000;

/// One import journal record: the ids a batch was about to produce, and when.
#[derive(Debug, Serialize, Deserialize)]
struct Batch {
    /// When the batch started, ms since the epoch.
    at: i64,
    /// The jobs it produces.
    ids: Vec<JobId>,
}

/// The import journal as this handle read it: when each listed id's batch started.
pub(crate) type Listed = HashMap<JobId, i64>;

/// Reads the whole import journal (partition 0 of `{prefix}imports`).
fn read_journal(config: &KafkaConfig) -> Result<Listed, Error> {
    let scanner = Scanner::new(config, &format!("{}.imports", config.group))?;
    let topic = config.topics.imports();
    let mut listed = Listed::new();
    for p in scanner.watermarks(&[(topic.clone(), vec![0])])? {
        scanner.read(&[(topic.clone(), 0, p.low, p.high)], |_, _, _, record| {
            let batch = record
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<Batch>(v).ok());
            for (id, at) in batch
                .into_iter()
                .flat_map(|b| b.ids.into_iter().map(move |id| (id, b.at)))
            {
                listed.insert(id, at);
            }
        })?;
    }
    Ok(listed)
}

/// Where a record is: topic, partition, offset.
type Place = (String, i32, i64);

/// Which of `wanted` have a record in the topics an import writes to (queue topics, the
/// schedule and dead-letter topics), from `since_ms` to the log end, and where.
fn present(
    config: &KafkaConfig,
    wanted: &HashSet<JobId>,
    since_ms: i64,
) -> Result<HashMap<JobId, Place>, Error> {
    let scanner = Scanner::new(config, &format!("{}.imports", config.group))?;
    let layout = &config.topics;
    let (schedule, dead) = (layout.scheduled(), layout.dead());
    let topics: Vec<(String, Vec<i32>)> = scanner
        .topics()?
        .into_iter()
        .filter(|(t, _)| layout.queue_of(t).is_some() || *t == schedule || *t == dead)
        .collect();
    let offsets = scanner.watermarks(&topics)?;
    let starts = scanner.offsets_at_time(&offsets, since_ms)?;
    let ranges: Vec<_> = offsets
        .iter()
        .map(|p| {
            let start = starts
                .get(&(p.topic.clone(), p.partition))
                .copied()
                .unwrap_or(p.low);
            (p.topic.clone(), p.partition, start, p.high)
        })
        .collect();
    let mut found = HashMap::new();
    scanner.read(&ranges, |topic, partition, offset, record| {
        // Markers carry an id too; only a job's own record (with a version) counts.
        if !Envelope::is_envelope(&record) {
            return;
        }
        let id = record
            .header(header::ID)
            .and_then(Result::ok)
            .and_then(|t| t.parse().ok());
        if let Some(id) = id.filter(|id| wanted.contains(id)) {
            found
                .entry(id)
                .or_insert_with(|| (topic.to_string(), partition, offset));
        }
    })?;
    Ok(found)
}

/// The envelope of a moved job.
fn envelope_of(job: &Transfer, max_payload_bytes: usize) -> Result<Envelope, conveyor_core::Error> {
    let info = &job.info;
    let payload = serde_json::to_string(&info.payload)
        .map_err(|e| conveyor_core::Error::invalid("payload", e.to_string()))?;
    if payload.len() > max_payload_bytes {
        return Err(conveyor_core::Error::invalid(
            "payload",
            format!(
                "job {} has a payload of {} bytes; this engine takes at most {max_payload_bytes}",
                info.id,
                payload.len()
            ),
        ));
    }
    let now = now_ms();
    let run_at = info.run_at.timestamp_millis();
    Ok(Envelope {
        id: info.id,
        kind: info.kind.clone(),
        queue: info.queue.clone(),
        payload,
        attempt: info.attempt,
        max_attempts: info.max_attempts,
        priority: info.priority,
        not_before: (info.state != JobState::Dead && run_at > now).then_some(run_at),
        enqueued_at: info.created_at.timestamp_millis(),
        timeout: job.timeout,
        backoff: job.backoff,
        idempotency_key: info.idempotency_key.clone(),
        ordering_key: info.ordering_key.clone(),
        traceparent: None,
        key_checked: false,
        replay_of: info.replay_of,
        attempt_budget: None,
    })
}

impl KafkaEngine {
    /// The import journal, read once per handle.
    async fn listed(&self) -> conveyor_core::Result<std::sync::MutexGuard<'_, Option<Listed>>> {
        let loaded = self
            .imports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if !loaded {
            let config = self.config().clone();
            let listed = blocking(move || read_journal(&config)).await?;
            let mut slot = self.imports.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(listed);
        }
        Ok(self.imports.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The ids of `jobs` an earlier, interrupted import produced already, and where.
    async fn already_there(
        &self,
        jobs: &[Transfer],
    ) -> conveyor_core::Result<HashMap<JobId, Place>> {
        let (wanted, since) = {
            let listed = self.listed().await?;
            let listed = listed.as_ref();
            let mut since = i64::MAX;
            let wanted: HashSet<JobId> = jobs
                .iter()
                .filter_map(|j| {
                    let at = listed.and_then(|l| l.get(&j.info.id))?;
                    since = since.min(*at);
                    Some(j.info.id)
                })
                .collect();
            (wanted, since)
        };
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let config = self.config().clone();
        blocking(move || present(&config, &wanted, since.saturating_sub(SKEW_MS))).await
    }

    /// Writes the journal records of a batch about to be produced, and waits for them.
    async fn list_batch(&self, ids: &[JobId]) -> conveyor_core::Result<()> {
        let topic = self.config().topics.imports();
        let at = now_ms();
        for chunk in ids.chunks(IDS_PER_RECORD) {
            let batch = Batch {
                at,
                ids: chunk.to_vec(),
            };
            let record = Record {
                key: None,
                value: Some(serde_json::to_vec(&batch).map_err(|e| Error::invalid("imports", e))?),
                headers: Vec::new(),
            };
            self.producer.send_to(&topic, Some(0), &record).await?;
        }
        let mut listed = self.listed().await?;
        let listed = listed.get_or_insert_with(Listed::new);
        listed.extend(ids.iter().map(|id| (*id, at)));
        Ok(())
    }

    /// The topic a moved job goes to at `now`.
    fn moved_topic(&self, job: &Transfer, envelope: &Envelope, now: i64) -> String {
        match job.info.state {
            JobState::Dead => self.config().topics.dead(),
            _ => self.topic_of(envelope, now),
        }
    }

    /// Produces one moved job to `topic` and queues its status entry.
    async fn produce_moved(
        &self,
        job: &Transfer,
        envelope: &Envelope,
        topic: String,
    ) -> conveyor_core::Result<()> {
        let record = if job.info.state == JobState::Dead {
            dead_record(job, envelope)
        } else if topic == self.config().topics.scheduled() {
            envelope.to_schedule_record()
        } else {
            envelope.to_record()
        };
        let delivered = self.producer.send(&topic, &record).await?;
        self.write_moved_entry(
            job,
            envelope,
            (topic, delivered.partition, delivered.offset),
        );
        Ok(())
    }

    /// Queues the status entry of a moved job whose record is at `place`.
    fn write_moved_entry(&self, job: &Transfer, envelope: &Envelope, place: Place) {
        // A dead job's entry says so: its record in the dead-letter topic reads as waiting.
        let step = match job.info.state {
            JobState::Dead => Step::Dead,
            _ => Step::Moved,
        };
        let mut entry = Entry::new(envelope.id, step);
        entry.attempt = Some(envelope.attempt);
        entry.max_attempts = Some(envelope.max_attempts);
        entry.kind = Some(envelope.kind.clone());
        entry.queue = Some(envelope.queue.clone());
        entry.error = job.info.last_error.clone();
        entry.record = Some(place);
        if let Some(at) = job.info.errored_at {
            entry.at = at.timestamp_millis();
        }
        self.journal.write(entry);
    }
}

/// A dead job's record in the dead-letter topic: its envelope with the error headers a dead
/// letter carries (no origin: it never had a record on this broker).
fn dead_record(job: &Transfer, envelope: &Envelope) -> Record {
    let mut record = envelope.to_record();
    let error = job
        .info
        .last_error
        .clone()
        .unwrap_or_else(|| "dead (moved from another engine)".into());
    let at = job
        .info
        .errored_at
        .or(job.info.finished_at)
        .map_or_else(now_ms, |t| t.timestamp_millis());
    record
        .headers
        .push((header::ERROR_MESSAGE.to_string(), error.into_bytes()));
    record.headers.push((
        header::ERROR_TIMESTAMP.to_string(),
        at.to_string().into_bytes(),
    ));
    record
}

#[async_trait::async_trait]
impl Import for KafkaEngine {
    async fn import(&self, jobs: Vec<Transfer>) -> conveyor_core::Result<Imported> {
        let max = self.config().max_payload_bytes;
        let envelopes = jobs
            .iter()
            .map(|j| envelope_of(j, max))
            .collect::<conveyor_core::Result<Vec<_>>>()?;
        let mut there = self.already_there(&jobs).await?;
        let mut sends = Vec::new();
        for (job, envelope) in jobs.iter().zip(&envelopes) {
            match there.remove(&job.info.id) {
                // Its entry may have been lost with the interrupted run: written again.
                Some(place) => self.write_moved_entry(job, envelope, place),
                None => sends.push((job, envelope)),
            }
        }
        let already = (jobs.len() - sends.len()) as u64;
        let ids: Vec<JobId> = sends.iter().map(|(j, _)| j.info.id).collect();
        self.list_batch(&ids).await?;
        // One time for the whole batch: each job goes where the created topics say.
        let now = now_ms();
        let targets: Vec<String> = sends
            .iter()
            .map(|(j, e)| self.moved_topic(j, e, now))
            .collect();
        let mut topics = targets.clone();
        topics.sort_unstable();
        topics.dedup();
        self.producer.ensure_topics(&topics).await?;
        // Produced together, in order: jobs of one ordering key bound for one topic land in
        // one partition in the order the source listed them.
        let produced = futures::future::join_all(
            sends
                .iter()
                .zip(targets)
                .map(|((j, e), topic)| self.produce_moved(j, e, topic)),
        )
        .await;
        produced
            .into_iter()
            .collect::<conveyor_core::Result<Vec<()>>>()?;
        self.journal.flush().await;
        Ok(Imported {
            stored: ids.len() as u64,
            already,
        })
    }
}
