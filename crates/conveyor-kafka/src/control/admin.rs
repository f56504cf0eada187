//! Status by id ([`Inspect`]) and cancel, purge and cleanup ([`Control`]) on Kafka.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use conveyor_core::{now_ms, Control, Inspect, JobId, JobInfo, JobState};

use super::Mark;
use crate::envelope::header;
use crate::inspect::blocking;
use crate::scan::Scanner;
use crate::status::{lookup, Entry, Step};
use crate::{Envelope, Error, KafkaConfig, KafkaEngine, Level};

/// How long a lookup or an admin step waits for the marks written before its handle started
/// (the control reader gives up on them after 30 s and says so in the log).
pub(crate) const MARKS_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

impl KafkaEngine {
    /// The state of job `id` as its journal and record say, also when a cleanup or purge
    /// hides it from lookups (what a duplicate enqueue answers); `None` if nothing is known.
    pub(crate) async fn state_of(&self, id: JobId) -> Option<JobState> {
        let found = self.find(id).await.ok()?;
        self.control
            .with(|book| found.info_of(id, book, false))
            .map(|info| info.state)
    }

    async fn find(&self, id: JobId) -> conveyor_core::Result<lookup::Found> {
        self.control.wait_ready(MARKS_PATIENCE).await;
        let config = self.config().clone();
        let scanners = self.scanners.clone();
        blocking(move || {
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
        .await
    }
}

#[async_trait]
impl Inspect for KafkaEngine {
    async fn job(&self, id: JobId) -> conveyor_core::Result<Option<JobInfo>> {
        let found = self.find(id).await?;
        Ok(self.control.with(|book| found.info_of(id, book, true)))
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
        let holds_record = matches!(
            info.state,
            JobState::Available | JobState::Running | JobState::Retryable
        );
        self.mark(Mark::Cancel {
            id,
            at,
            queue: Some(info.queue.clone()),
            holds_record,
        })
        .await?;
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
    /// returns how many there were.
    async fn purge_queue(&self, queue: &str) -> conveyor_core::Result<u64> {
        self.control.wait_ready(MARKS_PATIENCE).await;
        let before = now_ms();
        let config = self.config().clone();
        let control = self.control.clone();
        let queue_name = queue.to_string();
        let (count, waiting) = blocking(move || {
            let found = never_started(&config, &queue_name, before)?;
            Ok(control.with(|book| {
                let live = || found.iter().filter(|(e, _)| !book.stops(e));
                let all: HashSet<JobId> = live().map(|(e, _)| e.id).collect();
                let waiting: HashSet<JobId> = live()
                    .filter(|(_, queued)| *queued)
                    .map(|(e, _)| e.id)
                    .collect();
                (all.len() as u64, waiting.len() as u64)
            }))
        })
        .await?;
        self.mark(Mark::Purge {
            queue: queue.to_string(),
            before,
            waiting,
        })
        .await?;
        Ok(count)
    }

    /// Completed and cancelled jobs that finished before `before` are gone from lookups; their
    /// records expire with the topics' retention. Returns how many the journal holds.
    async fn cleanup(&self, before: DateTime<Utc>) -> conveyor_core::Result<u64> {
        self.control.wait_ready(MARKS_PATIENCE).await;
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

/// The never-started jobs (attempt 0) of `queue` enqueued before `before` that no worker
/// finished: past its groups' positions in the queue's topics and the schedule topic (jobs
/// whose key lost, marked `duplicate` there, left out); each with whether it is in a queue
/// topic (else the schedule topic).
fn never_started(
    config: &KafkaConfig,
    queue: &str,
    before: i64,
) -> Result<Vec<(Envelope, bool)>, Error> {
    let layout = &config.topics;
    let mut places: Vec<(String, String)> = Level::ALL
        .iter()
        .map(|level| {
            let group = match level {
                Level::High => config.urgent_group(),
                _ => config.group.clone(),
            };
            (layout.queue_at(queue, *level), group)
        })
        .collect();
    let schedule = layout.scheduled();
    places.push((schedule.clone(), config.schedule_group()));
    let mut found = Vec::new();
    let mut duplicates = HashSet::new();
    for (topic, group) in places {
        let scanner = Scanner::new(config, &group)?;
        let ranges: Vec<_> = scanner
            .offsets_of(&topic)?
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.position(), p.high))
            .collect();
        let queued = topic != schedule;
        scanner.read(&ranges, |_, _, _, record| {
            if record.header(header::MARKER).and_then(Result::ok) == Some("duplicate") {
                duplicates.extend(
                    record
                        .header(header::ID)
                        .and_then(Result::ok)
                        .and_then(|id| id.parse::<JobId>().ok()),
                );
                return;
            }
            if !Envelope::is_envelope(&record) {
                return;
            }
            if let Ok(e) = Envelope::from_record(&record, conveyor_core::DEFAULT_QUEUE) {
                if e.queue == queue && e.attempt == 0 && e.enqueued_at < before {
                    found.push((e, queued));
                }
            }
        })?;
    }
    found.retain(|(e, _)| !duplicates.contains(&e.id));
    Ok(found)
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
