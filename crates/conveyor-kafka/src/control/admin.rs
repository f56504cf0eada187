//! Status by id ([`Inspect`]) and cancel, purge and cleanup ([`Control`]) on Kafka.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use conveyor_core::{now_ms, Control, Inspect, JobId, JobInfo, JobState, Statistics};

use super::Mark;
use crate::inspect::blocking;
use crate::scan::Scanner;
use crate::status::{lookup, Entry, Step};
use crate::{Error, KafkaConfig, KafkaEngine};

#[async_trait]
impl Inspect for KafkaEngine {
    async fn job(&self, id: JobId) -> conveyor_core::Result<Option<JobInfo>> {
        let config = self.config().clone();
        let scanners = self.scanners.clone();
        let found = blocking(move || {
            // A client per lookup costs a connection and a metadata round: reuse idle ones.
            let idle = scanners.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let scanner = match idle {
                Some(scanner) => scanner,
                None => Scanner::new(&config, &config.group)?,
            };
            let found = lookup::find(&config, &scanner, id)?;
            scanners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(scanner);
            Ok(found)
        })
        .await?;
        Ok(self.control.with(|book| found.info(id, book)))
    }
}

#[async_trait]
impl Control for KafkaEngine {
    async fn cancel(&self, id: JobId) -> conveyor_core::Result<JobInfo> {
        let mut info = self
            .job(id)
            .await?
            .ok_or_else(|| conveyor_core::Error::NotFound {
                what: "job",
                id: id.to_string(),
            })?;
        if info.state.is_final() {
            return Err(conveyor_core::Error::WrongState {
                id: id.to_string(),
                state: info.state.to_string(),
                message: "only unfinished jobs can be cancelled".into(),
            });
        }
        let at = now_ms();
        self.mark(Mark::Cancel { id, at }).await?;
        let step = if info.state == JobState::Running {
            info.cancel_requested = true;
            Step::CancelRequested
        } else {
            info.state = JobState::Cancelled;
            info.finished_at = Some(JobInfo::time(at));
            Step::Cancelled
        };
        self.journal.write_now(Entry::new(id, step)).await;
        Ok(info)
    }

    /// Never-started jobs of `queue` (waiting or scheduled) enqueued before now never run;
    /// returns how many there were by the queue's counts.
    async fn purge_queue(&self, queue: &str) -> conveyor_core::Result<u64> {
        let before = now_ms();
        let stats = self.stats().await?;
        let count = stats
            .queue(queue)
            .map_or(0, |q| q.available.saturating_sub(q.running) + q.scheduled);
        self.mark(Mark::Purge {
            queue: queue.to_string(),
            before,
        })
        .await?;
        Ok(count)
    }

    /// Completed and cancelled jobs that finished before `before` are gone from lookups; their
    /// records expire with the topics' retention. Returns how many the journal holds.
    async fn cleanup(&self, before: DateTime<Utc>) -> conveyor_core::Result<u64> {
        let before = before.timestamp_millis();
        let config = self.config().clone();
        let cleaned = self
            .control
            .with(|book| book.cleanup_before())
            .unwrap_or(i64::MIN);
        let count = blocking(move || finished_between(&config, cleaned, before)).await?;
        self.mark(Mark::Cleanup { before }).await?;
        Ok(count)
    }
}

impl KafkaEngine {
    /// Writes `mark` to the control topic and takes it into account in this handle at once.
    pub(crate) async fn mark(&self, mark: Mark) -> Result<(), Error> {
        let topic = self.config().topics.control();
        self.producer
            .send_to(&topic, Some(0), &mark.to_record())
            .await?;
        self.control.add(mark);
        Ok(())
    }
}

/// How many jobs the journal says completed or were cancelled in `[from, until)` (ms).
fn finished_between(config: &KafkaConfig, from: i64, until: i64) -> Result<u64, Error> {
    let scanner = Scanner::new(config, &config.group)?;
    let offsets = scanner.offsets_of(&config.topics.status())?;
    let ranges: Vec<_> = offsets
        .iter()
        .map(|p| (p.topic.clone(), p.partition, p.low, p.high))
        .collect();
    let mut ids = HashSet::new();
    scanner.read(&ranges, |_, _, _, record| {
        if let Some(entry) = Entry::from_record(&record) {
            let finished = matches!(entry.step, Step::Completed | Step::Cancelled);
            if finished && entry.at >= from && entry.at < until {
                ids.insert(entry.id);
            }
        }
    })?;
    Ok(ids.len() as u64)
}
