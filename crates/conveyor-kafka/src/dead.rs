//! Dead-letter admin on the broker alone: retry and purge without DeleteRecords or log
//! compaction (tansu 0.6 has neither).
//!
//! The dead-letter topic is append-only. What is still dead is read from two places:
//! - the **purge position**: the offsets a group of its own (`{group}.dead`) committed on the
//!   dead-letter topic. `dlq purge` commits the log end there; letters before it are gone from
//!   the list and the counts (retention deletes them later);
//! - **retry marks**: `{prefix}dead.retried` holds one record per letter put back in its queue
//!   (its partition and offset). A marked letter is no longer dead. Marks before the mark
//!   topic's own purge position are ignored, and `dlq purge` moves that too.
//!
//! A retry first produces the job to its queue's topic, then writes the mark: a crash between
//! the two leaves the letter listed (retrying it again runs the job again), never a letter
//! that disappeared without its job going back.

use std::collections::HashSet;

use async_trait::async_trait;
use conveyor_core::{DeadLetters, JobId, JobInfo, JobState, Progress};
use serde::{Deserialize, Serialize};

use crate::inspect::{blocking, dead_letter, queue_of_record};
use crate::scan::{PartitionOffsets, Scanner};
use crate::status::{Entry, Step};
use crate::{Envelope, Error, KafkaConfig, KafkaEngine, Level, Record};

/// One dead letter still listed: where it is and what it holds.
pub(crate) struct Letter {
    pub partition: i32,
    pub offset: i64,
    pub record: Record,
}

/// A retry mark: the letter at `partition`/`offset` of the dead-letter topic went back.
#[derive(Debug, Serialize, Deserialize)]
struct Mark {
    partition: i32,
    offset: i64,
    id: JobId,
}

/// Where the list starts (per partition of the dead-letter and mark topics) and the letters
/// marked retried since.
struct View {
    scanner: Scanner,
    dead: Vec<PartitionOffsets>,
    marks: Vec<PartitionOffsets>,
    retried: HashSet<(i32, i64)>,
}

fn view(config: &KafkaConfig) -> Result<View, Error> {
    let scanner = Scanner::new(config, &config.dead_group())?;
    let (dead_name, marks_name) = (config.topics.dead(), config.topics.dead_retried());
    let topics: Vec<(String, Vec<i32>)> = scanner
        .topics()?
        .into_iter()
        .filter(|(t, _)| *t == dead_name || *t == marks_name)
        .collect();
    let (marks, dead): (Vec<_>, Vec<_>) = scanner
        .offsets(&topics)?
        .into_iter()
        .partition(|p| p.topic == marks_name);
    let mut retried = HashSet::new();
    let unread: Vec<_> = marks
        .iter()
        .map(|p| (p.topic.clone(), p.partition, p.position(), p.high))
        .collect();
    scanner.read(&unread, |_, _, _, record| {
        let mark = record
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice::<Mark>(v).ok());
        if let Some(mark) = mark {
            retried.insert((mark.partition, mark.offset));
        }
    })?;
    Ok(View {
        scanner,
        dead,
        marks,
        retried,
    })
}

/// The letters still dead, oldest first per partition; with `newest`, at most that many of
/// each partition (the newest), which hold the newest that many overall.
pub(crate) fn letters(config: &KafkaConfig, newest: Option<usize>) -> Result<Vec<Letter>, Error> {
    let view = view(config)?;
    let ranges: Vec<_> = view
        .dead
        .iter()
        .map(|p| {
            let marked = view
                .retried
                .iter()
                .filter(|(q, _)| *q == p.partition)
                .count();
            let from = match newest {
                Some(n) => {
                    let keep = i64::try_from(n.saturating_add(marked)).unwrap_or(i64::MAX);
                    p.position().max(p.high.saturating_sub(keep))
                }
                None => p.position(),
            };
            (p.topic.clone(), p.partition, from, p.high)
        })
        .collect();
    let mut letters = Vec::new();
    view.scanner.read(&ranges, |_, partition, offset, record| {
        if !view.retried.contains(&(partition, offset)) {
            letters.push(Letter {
                partition,
                offset,
                record,
            });
        }
    })?;
    Ok(letters)
}

/// Moves the purge position of the dead-letter and mark topics to their log ends; returns how
/// many letters were still dead.
fn purge(config: &KafkaConfig) -> Result<u64, Error> {
    let view = view(config)?;
    let unfinished: u64 = view.dead.iter().map(PartitionOffsets::unfinished).sum();
    let count = unfinished.saturating_sub(view.retried.len() as u64);
    let ends: Vec<_> = view
        .dead
        .iter()
        .chain(&view.marks)
        .map(|p| (p.topic.clone(), p.partition, p.high))
        .collect();
    view.scanner.commit(&ends)?;
    Ok(count)
}

impl KafkaEngine {
    /// The queue topic a letter's job goes back to; `None` for a letter that is not a job.
    fn queue_topic(&self, letter: &Letter) -> Option<String> {
        let config = self.config();
        let queue = queue_of_record(config, &letter.record);
        let envelope = Envelope::from_record(&letter.record, &queue).ok()?;
        Some(
            config
                .topics
                .queue_at(&envelope.queue, Level::of(envelope.priority)),
        )
    }

    /// Puts one letter's job back in its queue with a fresh set of attempts, numbered on, then
    /// marks the letter retried.
    async fn requeue(&self, letter: &Letter) -> conveyor_core::Result<JobInfo> {
        let config = self.config();
        let queue = queue_of_record(config, &letter.record);
        let listed = dead_letter(config, &letter.record).job;
        let mut envelope = Envelope::from_record(&letter.record, &queue).map_err(|e| {
            conveyor_core::Error::invalid(
                "id",
                format!(
                    "dead letter {} is not a Conveyor job ({e}; it died with: {}): it cannot be retried; `dlq purge` removes it",
                    listed.id,
                    listed.last_error.as_deref().unwrap_or("no error recorded")
                ),
            )
        })?;
        // A fresh set of the attempts it was enqueued with, however often it was retried.
        let budget = envelope
            .attempt_budget
            .unwrap_or(envelope.max_attempts)
            .max(1);
        envelope.attempt_budget = Some(budget);
        envelope.max_attempts = envelope.attempt.saturating_add(budget);
        envelope.not_before = None;
        // It won its idempotency key when it was first enqueued.
        envelope.key_checked = true;
        let topic = config
            .topics
            .queue_at(&envelope.queue, Level::of(envelope.priority));
        self.producer
            .ensure_topics(std::slice::from_ref(&topic))
            .await?;
        self.producer.send(&topic, &envelope.to_record()).await?;
        let mark = Mark {
            partition: letter.partition,
            offset: letter.offset,
            id: envelope.id,
        };
        let value = serde_json::to_vec(&mark).map_err(|e| Error::invalid("mark", e))?;
        let record = Record {
            key: Some(envelope.id.to_string().into_bytes()),
            value: Some(value),
            headers: Vec::new(),
        };
        self.producer
            .send(&config.topics.dead_retried(), &record)
            .await?;
        let mut entry = Entry::new(envelope.id, Step::Available);
        entry.attempt = Some(envelope.attempt);
        entry.max_attempts = Some(envelope.max_attempts);
        self.journal.write(entry);
        Ok(JobInfo {
            state: JobState::Available,
            attempt: envelope.attempt,
            max_attempts: envelope.max_attempts,
            run_at: chrono::Utc::now(),
            finished_at: None,
            ..listed
        })
    }
}

/// Letters `retry_all_dead` puts back at once: their records are produced together.
const RETRY_TOGETHER: usize = 256;

impl KafkaEngine {
    /// Puts the newest letter of job `id` back (see [`KafkaEngine::requeue`]).
    async fn retry_one_dead(&self, id: JobId) -> conveyor_core::Result<JobInfo> {
        let config = self.config().clone();
        let letters = blocking(move || letters(&config, None)).await?;
        // The newest letter of the job, if it died more than once.
        let letter = letters
            .iter()
            .filter(|l| dead_letter(self.config(), &l.record).job.id == id)
            .max_by_key(|l| (l.offset, l.partition))
            .ok_or_else(|| conveyor_core::Error::NotFound {
                what: "dead letter",
                id: id.to_string(),
            })?;
        self.requeue(letter).await
    }
}

#[async_trait]
impl DeadLetters for KafkaEngine {
    async fn retry_dead(&self, id: JobId) -> conveyor_core::Result<JobInfo> {
        let info = self.retry_one_dead(id).await;
        // The status entry is written before the answer: the process may exit next.
        self.journal.flush().await;
        info
    }

    /// [`RETRY_TOGETHER`] letters at a time; `progress` hears after each group.
    async fn retry_all_dead(&self, progress: &Progress) -> conveyor_core::Result<u64> {
        let config = self.config().clone();
        let letters = blocking(move || letters(&config, None)).await?;
        // A record that is not a job stays listed until purged.
        let jobs: Vec<&Letter> = letters
            .iter()
            .filter(|l| Envelope::from_record(&l.record, "default").is_ok())
            .collect();
        let total = jobs.len() as u64;
        progress(0, total);
        let mut retried = 0;
        for group in jobs.chunks(RETRY_TOGETHER) {
            // Topics first, once: each requeue then produces at its first poll, in list order,
            // so letters of one ordering key go back oldest first.
            let mut topics: Vec<String> =
                group.iter().filter_map(|l| self.queue_topic(l)).collect();
            topics.sort_unstable();
            topics.dedup();
            self.producer.ensure_topics(&topics).await?;
            let requeued = futures::future::join_all(group.iter().map(|l| self.requeue(l))).await;
            let failed = requeued.into_iter().find_map(Result::err);
            retried += group.len() as u64;
            if let Some(err) = failed {
                // The entries of the letters that did go back are written before the answer.
                self.journal.flush().await;
                return Err(err);
            }
            progress(retried, total);
        }
        self.journal.flush().await;
        Ok(retried)
    }

    async fn purge_dead(&self) -> conveyor_core::Result<u64> {
        let before = conveyor_core::now_ms();
        let config = self.config().clone();
        let purged = blocking(move || purge(&config)).await?;
        // Status lookups drop the jobs that died before the purge.
        self.mark(crate::control::Mark::PurgeDead { before })
            .await?;
        Ok(purged)
    }
}
