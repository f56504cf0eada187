//! Cancel, purge and cleanup on Kafka, without deleting anything from a log: marks in the
//! control topic `{prefix}control` (one partition), which every engine handle reads from its
//! start and keeps reading ([`ControlTail`]).
//!
//! - `cancel`: a job with a cancel mark is not handed to a handler; a worker that reads its
//!   record finishes it as cancelled, and a running one's handler is told at the next
//!   heartbeat.
//! - `purge`: jobs of the queue enqueued before the mark that never started (attempt 0:
//!   waiting or scheduled) are finished without running; jobs waiting for a retry are kept.
//! - `cleanup`: completed and cancelled jobs that finished before the mark are gone from
//!   status lookups (their records expire with the topics' retention).
//!
//! A worker hands out nothing until its handle has read the marks written before it started,
//! so a job cancelled before a worker (re)starts never runs there.

mod admin;
pub(crate) mod counts;
mod tail;

use std::collections::{HashMap, HashSet};

use conveyor_core::JobId;
use serde::{Deserialize, Serialize};

pub(crate) use admin::MARKS_PATIENCE;
pub(crate) use tail::ControlTail;

use crate::{Envelope, Record};

/// One control mark (wire names, never renamed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mark", rename_all = "snake_case")]
pub(crate) enum Mark {
    /// Job `id` must not run (any more).
    Cancel {
        /// The job.
        id: JobId,
        /// When it was asked, ms since the epoch.
        at: i64,
        /// The job's queue (for the counts).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queue: Option<String>,
        /// True when a record of the job in a queue topic or a retry tier will be finished as
        /// cancelled (it waited, ran or retried when cancelled; a scheduled one is never
        /// moved to its queue): the counts take it from `completed`.
        #[serde(default)]
        holds_record: bool,
    },
    /// Never-started jobs of `queue` enqueued before `before` must not run.
    Purge {
        /// The queue.
        queue: String,
        /// ms since the epoch.
        before: i64,
        /// How many of them waited in the queue's topics then (for the counts).
        #[serde(default)]
        waiting: u64,
    },
    /// Completed and cancelled jobs finished before `before` are gone.
    Cleanup {
        /// ms since the epoch.
        before: i64,
    },
    /// The dead-letter list was purged: jobs that died before `before` are gone.
    PurgeDead {
        /// ms since the epoch.
        before: i64,
    },
}

impl Mark {
    /// The mark as a record of the control topic.
    pub fn to_record(&self) -> Record {
        Record {
            key: None,
            value: serde_json::to_vec(self).ok(),
            headers: Vec::new(),
        }
    }

    /// The mark a record holds; `None` for one that is not a mark.
    pub fn from_record(record: &Record) -> Option<Self> {
        serde_json::from_slice(record.value.as_deref()?).ok()
    }
}

/// Every mark read so far, as the questions workers, lookups and counts ask.
#[derive(Debug, Default, Clone)]
pub(crate) struct Book {
    /// When each cancelled job was cancelled (ms since the epoch).
    cancelled: HashMap<JobId, i64>,
    /// Per queue: jobs cancelled, and of them those holding a queue or retry record.
    cancelled_in: HashMap<String, (u64, u64)>,
    purged: HashMap<String, i64>,
    /// Per queue: jobs purged while they waited in the queue's topics.
    purged_waiting: HashMap<String, u64>,
    /// The purges taken into account, (queue, before): a handle adds its own marks when it
    /// writes them and again when its reader reads them.
    purges: HashSet<(String, i64)>,
    /// The latest cancel or purge (ms since the epoch).
    latest_stop: Option<i64>,
    cleanup_before: Option<i64>,
    dead_purged_before: Option<i64>,
}

impl Book {
    /// Takes `mark` into account.
    pub fn add(&mut self, mark: Mark) {
        match mark {
            Mark::Cancel {
                id,
                at,
                queue,
                holds_record,
            } => {
                if self.cancelled.insert(id, at).is_some() {
                    return; // a second cancel of one job counts once
                }
                let counts = self
                    .cancelled_in
                    .entry(queue.unwrap_or_default())
                    .or_default();
                counts.0 += 1;
                counts.1 += u64::from(holds_record);
                self.latest_stop = Some(self.latest_stop.unwrap_or(at).max(at));
            }
            Mark::Purge {
                queue,
                before,
                waiting,
            } => {
                if !self.purges.insert((queue.clone(), before)) {
                    return;
                }
                *self.purged_waiting.entry(queue.clone()).or_default() += waiting;
                let latest = self.purged.entry(queue).or_insert(before);
                *latest = (*latest).max(before);
                self.latest_stop = Some(self.latest_stop.unwrap_or(before).max(before));
            }
            Mark::Cleanup { before } => {
                self.cleanup_before = Some(self.cleanup_before.unwrap_or(before).max(before));
            }
            Mark::PurgeDead { before } => {
                self.dead_purged_before =
                    Some(self.dead_purged_before.unwrap_or(before).max(before));
            }
        }
    }

    /// True when a user cancelled job `id`.
    pub fn is_cancelled(&self, id: JobId) -> bool {
        self.cancelled.contains_key(&id)
    }

    /// When a user cancelled job `id` (ms since the epoch).
    pub fn cancelled_at(&self, id: JobId) -> Option<i64> {
        self.cancelled.get(&id).copied()
    }

    /// True when a purge of its queue removed the job: it never started and was enqueued
    /// before the purge.
    pub fn is_purged(&self, envelope: &Envelope) -> bool {
        envelope.attempt == 0
            && self
                .purged
                .get(&envelope.queue)
                .is_some_and(|before| envelope.enqueued_at < *before)
    }

    /// True when the job must not run: cancelled, or purged.
    pub fn stops(&self, envelope: &Envelope) -> bool {
        self.is_cancelled(envelope.id) || self.is_purged(envelope)
    }

    /// When the latest cancel or purge was written (ms since the epoch): no record written
    /// after it can be stopped.
    pub fn latest_stop(&self) -> Option<i64> {
        self.latest_stop
    }

    /// Per queue, (jobs cancelled, of them those holding a queue or retry record).
    pub fn cancelled_in(&self) -> &HashMap<String, (u64, u64)> {
        &self.cancelled_in
    }

    /// Per queue, the jobs purges found waiting in the queue's topics.
    pub fn purged_waiting(&self) -> &HashMap<String, u64> {
        &self.purged_waiting
    }

    /// The latest cleanup's time (ms since the epoch), if any.
    pub fn cleanup_before(&self) -> Option<i64> {
        self.cleanup_before
    }

    /// True when a cleanup removed a job that finished at `finished_at`.
    pub fn is_cleaned(&self, finished_at: i64) -> bool {
        self.cleanup_before
            .is_some_and(|before| finished_at < before)
    }

    /// True when a dead-letter purge removed a job that died at `died_at`.
    pub fn is_dead_purged(&self, died_at: i64) -> bool {
        self.dead_purged_before
            .is_some_and(|before| died_at < before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_core::NewJob;

    fn envelope(queue: &str, enqueued_at: i64, attempt: u32) -> Envelope {
        let job = NewJob::new("noop", serde_json::json!({})).queue(queue);
        let mut e = Envelope::from_new_job(&job, "{}".into(), enqueued_at);
        e.attempt = attempt;
        e
    }

    #[test]
    fn marks_round_trip_with_stable_names() {
        let id = JobId::new();
        let mark = Mark::Cancel {
            id,
            at: 5,
            queue: Some("q".into()),
            holds_record: true,
        };
        let record = mark.to_record();
        let text = String::from_utf8(record.value.clone().unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            text,
            format!(r#"{{"mark":"cancel","id":"{id}","at":5,"queue":"q","holds_record":true}}"#)
        );
        // A mark written without the count fields reads as holding nothing.
        let bare = Record {
            value: Some(format!(r#"{{"mark":"cancel","id":"{id}","at":5}}"#).into_bytes()),
            ..Record::default()
        };
        assert!(matches!(
            Mark::from_record(&bare),
            Some(Mark::Cancel {
                queue: None,
                holds_record: false,
                ..
            })
        ));
        assert_eq!(Mark::from_record(&record), Some(mark));
        let purge = Mark::Purge {
            queue: "q".into(),
            before: 9,
            waiting: 2,
        };
        assert_eq!(Mark::from_record(&purge.to_record()), Some(purge));
        assert_eq!(Mark::from_record(&Record::default()), None);
    }

    #[test]
    fn a_purge_stops_only_never_started_jobs_enqueued_before_it() {
        let mut book = Book::default();
        let purge = Mark::Purge {
            queue: "q".into(),
            before: 100,
            waiting: 1,
        };
        book.add(purge.clone());
        book.add(purge);
        assert_eq!(book.purged_waiting().get("q"), Some(&1), "counted once");
        assert_eq!(book.latest_stop(), Some(100));
        assert!(book.stops(&envelope("q", 99, 0)));
        assert!(!book.stops(&envelope("q", 100, 0)), "enqueued after");
        assert!(!book.stops(&envelope("q", 50, 1)), "waits for a retry");
        assert!(!book.stops(&envelope("other", 50, 0)), "another queue");
    }

    #[test]
    fn cancels_and_cleanups_are_remembered() {
        let mut book = Book::default();
        let e = envelope("q", 1, 0);
        assert!(!book.stops(&e));
        let cancel = Mark::Cancel {
            id: e.id,
            at: 2,
            queue: Some("q".into()),
            holds_record: true,
        };
        book.add(cancel.clone());
        book.add(cancel);
        assert!(book.stops(&e));
        assert_eq!(book.cancelled_in().get("q"), Some(&(1, 1)), "counted once");
        book.add(Mark::Cleanup { before: 10 });
        book.add(Mark::Cleanup { before: 5 });
        assert!(book.is_cleaned(9));
        assert!(!book.is_cleaned(10));
    }
}
