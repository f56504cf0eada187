//! [`Replay`] on the broker alone: a queue's jobs are still in its topics' logs (the seeds'
//! "durable and replayable"), so replaying reads them again from a point in time and enqueues
//! each as a new job naming the one it re-runs (header `conveyor-replay-of`).

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use conveyor_core::{Engine, JobId, NewJob, Progress, Replay};

use crate::inspect::blocking;
use crate::scan::Scanner;
use crate::{Envelope, Error, KafkaConfig, KafkaEngine};

/// Jobs enqueued per batch.
const BATCH: usize = 1_000;

/// The jobs of `queue` enqueued at or after `since_ms`, oldest first, each once: the records of
/// its queue topics (every priority level) and of the ingest topics feeding it.
fn replayable(config: &KafkaConfig, queue: &str, since_ms: i64) -> Result<Vec<Envelope>, Error> {
    let scanner = Scanner::new(config, &format!("{}.replay", config.group))?;
    let feeds = |topic: &str| {
        config.topics.queue_of(topic) == Some(queue)
            || config
                .ingest
                .iter()
                .any(|i| i.topic == topic && i.decoder.queue == queue)
    };
    let topics: Vec<(String, Vec<i32>)> = scanner
        .topics()?
        .into_iter()
        .filter(|(t, _)| feeds(t))
        .collect();
    let offsets = scanner.watermarks(&topics)?;
    let starts = scanner.offsets_at_time(&offsets, since_ms)?;
    let mut ranges = Vec::with_capacity(offsets.len());
    for p in &offsets {
        let mut start = starts
            .get(&(p.topic.clone(), p.partition))
            .copied()
            .unwrap_or(p.low);
        // A broker without a record after the time may answer the log start (tansu 0.6 does):
        // a start whose record is older than the time means nothing to replay there.
        if start < p.high
            && scanner
                .timestamp_at(&p.topic, p.partition, start)?
                .is_some_and(|at| at < since_ms)
        {
            start = p.high;
        }
        ranges.push((p.topic.clone(), p.partition, start, p.high));
    }
    let mut seen = HashSet::new();
    let mut jobs = Vec::new();
    scanner.read(&ranges, |topic, _, _, record| {
        let envelope = match Envelope::is_envelope(&record) {
            true => Envelope::from_record(&record, queue).ok(),
            false => config
                .ingest
                .iter()
                .find(|i| i.topic == topic)
                .and_then(|i| i.decoder.decode(&record, conveyor_core::now_ms()).ok()),
        };
        // The first record of an id is the job as enqueued (a dead letter put back is its
        // record again, with more attempts allowed).
        if let Some(e) = envelope.filter(|e| e.enqueued_at >= since_ms && e.queue == queue) {
            if seen.insert(e.id) {
                jobs.push(e);
            }
        }
    })?;
    // Stable: jobs of one ordering key share a partition, read in order.
    jobs.sort_by_key(|e| e.enqueued_at);
    Ok(jobs)
}

/// The new job that re-runs `old`: same work, new id, no idempotency key.
fn replay_of(old: &Envelope) -> NewJob {
    let payload = serde_json::from_str(&old.payload).unwrap_or(serde_json::Value::Null);
    NewJob {
        queue: old.queue.clone(),
        priority: old.priority,
        max_attempts: old.max_attempts,
        // Every replayed job came due: it runs now.
        run_at: None,
        timeout: old.timeout,
        backoff: old.backoff,
        ordering_key: old.ordering_key.clone(),
        replay_of: Some(old.id),
        ..NewJob::new(old.kind.clone(), payload)
    }
}

#[async_trait]
impl Replay for KafkaEngine {
    async fn replay(
        &self,
        queue: &str,
        since: DateTime<Utc>,
        progress: &Progress,
    ) -> conveyor_core::Result<Vec<JobId>> {
        let config = self.config().clone();
        let (queue, since) = (queue.to_string(), since.timestamp_millis());
        let old = blocking(move || replayable(&config, &queue, since)).await?;
        let total = old.len() as u64;
        progress(0, total);
        let mut ids = Vec::with_capacity(old.len());
        for batch in old.chunks(BATCH) {
            let jobs: Vec<NewJob> = batch.iter().map(replay_of).collect();
            ids.extend(self.enqueue_batch(jobs).await?.into_iter().map(|e| e.id));
            progress(ids.len() as u64, total);
        }
        Ok(ids)
    }
}
