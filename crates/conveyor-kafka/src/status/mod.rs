//! Job status by id on Kafka: the status journal, `{prefix}status`.
//!
//! Every worker writes one small entry per step of a job (started, completed, failed and
//! retrying, dead-lettered, cancelled, progress), keyed by the job id, into the partition the
//! id leads to ([`partition_of`]). Enqueues write nothing: a job with no entry yet is found by
//! its record (a job id is a UUIDv7, so its enqueue time says where in the queue topics it
//! is; see `lookup.rs`). A lookup reads one partition of the journal from the job's enqueue
//! time on, so it does not depend on how many jobs other partitions hold. Entries expire with
//! the topic's retention (`status_retention`), and so does a job's status.
//!
//! Entries are written in the background ([`Journal`]): a job's run never waits for its
//! journal entry, and a step whose entry could not be written is logged, never retried at the
//! job's expense (its status then lags; its outcome is stored as always).

pub(crate) mod lookup;

use std::sync::Arc;

use conveyor_core::{now_ms, JobId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::producer::Producer;
use crate::Record;

/// Most entries the journal's writer sends at once.
const BATCH: usize = 2048;

/// What happened to a job, as a journal entry says (wire names, never renamed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Step {
    /// An attempt started.
    Running,
    /// The job completed.
    Completed,
    /// An attempt failed; the job runs again at `next_at`.
    Retryable,
    /// The job went to the dead-letter topic.
    Dead,
    /// The job was cancelled (before it ran, or its handler stopped).
    Cancelled,
    /// A user asked to cancel the job while it ran; its handler is told.
    CancelRequested,
    /// The job waits again for its first attempt of a new series (a dead letter retried).
    Available,
    /// The job was moved in from another engine (`conveyor migrate`); its record is at
    /// `record`, its last error in `error`.
    Moved,
    /// The handler reported progress (entries written before steps existed have no `step`).
    #[default]
    Progress,
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The job.
    pub id: JobId,
    /// What happened.
    #[serde(default)]
    pub step: Step,
    /// When, ms since the epoch.
    pub at: i64,
    /// The attempt it happened in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The attempt's error (retryable, dead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the job runs again (retryable), ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<i64>,
    /// The handler's progress value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<serde_json::Value>,
    /// Attempts allowed (running; a retried dead letter's new limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The job's kind (running): its status reads without its record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The job's queue (running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Where the record the attempt ran from is: `[topic, partition, offset]` (running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<(String, i32, i64)>,
}

impl Entry {
    /// An entry of `step` for job `id`, now.
    pub fn new(id: JobId, step: Step) -> Self {
        Entry {
            id,
            step,
            at: now_ms(),
            attempt: None,
            error: None,
            next_at: None,
            progress: None,
            max_attempts: None,
            kind: None,
            queue: None,
            record: None,
        }
    }

    /// The entry as a journal record (key: the job id).
    pub fn to_record(&self) -> Record {
        Record {
            key: Some(self.id.to_string().into_bytes()),
            value: serde_json::to_vec(self).ok(),
            headers: Vec::new(),
        }
    }

    /// The entry a journal record holds; `None` for one that is not an entry.
    pub fn from_record(record: &Record) -> Option<Self> {
        serde_json::from_slice(record.value.as_deref()?).ok()
    }
}

/// The journal partition of job `id` among `partitions`: a job's entries all go to one
/// partition, which a lookup reads alone. The low bits of a UUIDv7 are random, so ids spread
/// evenly.
pub(crate) fn partition_of(id: JobId, partitions: usize) -> i32 {
    let n = partitions.max(1) as u128;
    (id.0.as_u128() % n) as i32
}

/// What the journal's writer is asked to do.
enum Order {
    Write(Entry),
    /// Answer once every entry queued before this one was sent.
    Flush(oneshot::Sender<()>),
}

/// Writes journal entries in the background, in batches.
#[derive(Clone)]
pub(crate) struct Journal {
    sender: mpsc::UnboundedSender<Order>,
}

impl Journal {
    /// Starts the writer of `topic` (whose partition count it reads once).
    pub fn start(producer: Arc<Producer>, topic: String) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_entries(producer, topic, receiver));
        Journal { sender }
    }

    /// Queues `entry` for writing.
    pub fn write(&self, entry: Entry) {
        // The writer only stops when every journal handle is gone.
        let _ = self.sender.send(Order::Write(entry));
    }

    /// Writes `entry` and waits until it was sent (an admin step whose process may exit next).
    pub async fn write_now(&self, entry: Entry) {
        self.write(entry);
        self.flush().await;
    }

    /// Waits until every entry queued so far was sent (a worker's last steps before it
    /// leaves).
    pub async fn flush(&self) {
        let (done, sent) = oneshot::channel();
        if self.sender.send(Order::Flush(done)).is_ok() {
            let _ = sent.await;
        }
    }
}

async fn write_entries(
    producer: Arc<Producer>,
    topic: String,
    mut receiver: mpsc::UnboundedReceiver<Order>,
) {
    let mut partitions = None;
    let mut orders = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut orders, BATCH).await > 0 {
        let mut flushes = Vec::new();
        let mut batch = Vec::with_capacity(orders.len());
        for order in orders.drain(..) {
            match order {
                Order::Write(entry) => batch.push(entry),
                Order::Flush(done) => flushes.push(done),
            }
        }
        send_batch(&producer, &topic, &mut partitions, batch).await;
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Sends one batch of entries, each into its job's partition.
async fn send_batch(
    producer: &Producer,
    topic: &str,
    partitions: &mut Option<usize>,
    batch: Vec<Entry>,
) {
    if batch.is_empty() {
        return;
    }
    let count = match *partitions {
        Some(count) => count,
        None => match producer.partition_count(topic).await {
            Ok(count) => *partitions.insert(count),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the status topic's partitions; {} status entries are not written", batch.len());
                return;
            }
        },
    };
    let sends = batch.iter().map(|entry| {
        let partition = partition_of(entry.id, count);
        let record = entry.to_record();
        async move { producer.send_to(topic, Some(partition), &record).await }
    });
    let failed = futures::future::join_all(sends)
        .await
        .into_iter()
        .filter_map(Result::err)
        .last();
    if let Some(err) = failed {
        tracing::warn!(error = %err, "status entries were not written: those jobs' status lags");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_old_progress_records_read_as_progress() {
        let id = JobId::new();
        let mut entry = Entry::new(id, Step::Retryable);
        entry.attempt = Some(2);
        entry.error = Some("boom".into());
        entry.next_at = Some(5);
        assert_eq!(Entry::from_record(&entry.to_record()), Some(entry));
        let old = Record {
            key: None,
            value: Some(format!(r#"{{"id":"{id}","progress":{{"done":3}},"at":7}}"#).into_bytes()),
            headers: Vec::new(),
        };
        let read = Entry::from_record(&old).expect("an entry");
        assert_eq!(
            (read.step, read.progress),
            (Step::Progress, Some(serde_json::json!({"done": 3})))
        );
        let garbage = Record {
            value: Some(b"not json".to_vec()),
            ..Record::default()
        };
        assert_eq!(Entry::from_record(&garbage), None);
    }

    #[test]
    fn a_job_keeps_its_partition() {
        let id = JobId::new();
        assert_eq!(partition_of(id, 12), partition_of(id, 12));
        assert!((0..12).contains(&partition_of(id, 12)));
        assert_eq!(partition_of(id, 0), 0);
    }
}
