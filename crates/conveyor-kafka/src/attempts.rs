//! Attempt notes: what keeps a keyed job's retry on the broker.
//!
//! A job with an ordering key retries in place: its record stays uncommitted and its key busy,
//! so the jobs behind it wait (a retry tier would let them overtake it). The attempt count
//! and the retry time of such a job would otherwise live only in the worker's memory: after a
//! crash or a partition move, the new owner read the record again as attempt 1 and ran it at
//! once, and a job that always fails was never dead-lettered. So before a keyed job waits for
//! its retry, the worker writes an attempt note to the attempts topic: the record's topic,
//! partition and offset, the job id, the attempt that failed and when the next one is due.
//! A worker given a queue partition reads the notes written since the record at its committed
//! position was written (the note of a record is written after the record), and a keyed record
//! it reads there goes on from its note: attempt count and due time.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use conveyor_core::JobId;

use crate::scan::Scanner;
use crate::state::{Pending, Tp};
use crate::{Error, KafkaConfig, Record};

/// Notes are read from this long before the record at the committed position was written:
/// the clocks of the workers that write notes may be behind the broker's.
const SKEW_MS: i64 = 10 * 60 * 1000;

/// One failed attempt of a keyed job that retries in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Note {
    /// The topic of the job's record.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The job.
    pub id: JobId,
    /// The attempt that failed (the next one is `attempt + 1`).
    pub attempt: u32,
    /// When the next attempt is due (ms since the epoch).
    pub due_ms: i64,
    /// The error of the failed attempt.
    pub error: String,
}

impl Note {
    /// The note of `pending`'s record: attempt `attempt` failed with `error`, the next one is
    /// due at `due_ms`.
    pub fn of_attempt(pending: &Pending, attempt: u32, due_ms: i64, error: &str) -> Note {
        Note {
            topic: pending.tp.0.to_string(),
            partition: pending.tp.1,
            offset: pending.offset,
            id: pending.envelope.id,
            attempt,
            due_ms,
            error: error.to_string(),
        }
    }

    /// The note as a record of the attempts topic, keyed by its partition (so the notes of one
    /// partition stay in order in one partition of the attempts topic).
    pub fn to_record(&self) -> Result<Record, Error> {
        let value = serde_json::to_vec(self).map_err(|e| Error::invalid("note", e.to_string()))?;
        Ok(Record {
            key: Some(partition_key(&self.topic, self.partition).into_bytes()),
            value: Some(value),
            headers: Vec::new(),
        })
    }

    /// The note a record of the attempts topic holds; `None` for anything else.
    pub fn of(record: &Record) -> Option<Note> {
        serde_json::from_slice(record.value.as_deref()?).ok()
    }
}

fn partition_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// The latest note of each record of the `wanted` partitions from their offset on (a
/// partition and the first offset that matters), by partition and offset. One read of the
/// attempts topic serves them all, from the oldest of their records less the clock skew; none
/// when the attempts topic is empty.
pub(crate) fn read(
    scanner: &Scanner,
    config: &KafkaConfig,
    wanted: &[(Tp, i64)],
) -> Result<HashMap<Tp, HashMap<i64, Note>>, Error> {
    let mut by_tp: HashMap<Tp, HashMap<i64, Note>> = HashMap::new();
    let topic = config.topics.attempts();
    let offsets = scanner.offsets_of(&topic)?;
    if offsets.iter().all(|p| p.high <= p.low) {
        return Ok(by_tp); // no keyed job ever retried here (or retention removed its notes)
    }
    let mut oldest: Option<i64> = None;
    for (tp, from) in wanted {
        if let Some(written) = scanner.timestamp_at(&tp.0, tp.1, *from)? {
            oldest = Some(oldest.map_or(written, |o| o.min(written)));
        }
    }
    let Some(oldest) = oldest else {
        return Ok(by_tp); // none of them has a record to run
    };
    let since = oldest.saturating_sub(SKEW_MS);
    let mut ranges = Vec::new();
    for p in offsets {
        let start = scanner.offset_at_time(&topic, p.partition, since)?;
        ranges.push((topic.clone(), p.partition, start, p.high));
    }
    let from_of: HashMap<Vec<u8>, (&Tp, i64)> = wanted
        .iter()
        .map(|(tp, from)| (partition_key(&tp.0, tp.1).into_bytes(), (tp, *from)))
        .collect();
    scanner.read(&ranges, |_, _, _, record| {
        let Some((tp, from)) = record.key.as_deref().and_then(|k| from_of.get(k)) else {
            return;
        };
        let Some(note) = Note::of(&record).filter(|n| n.offset >= *from) else {
            return;
        };
        let notes = by_tp.entry((*tp).clone()).or_default();
        let later = notes
            .get(&note.offset)
            .is_none_or(|kept: &Note| kept.attempt < note.attempt);
        if later {
            notes.insert(note.offset, note);
        }
    })?;
    Ok(by_tp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(attempt: u32) -> Note {
        Note {
            topic: "conveyor.q.default".into(),
            partition: 2,
            offset: 41,
            id: JobId::new(),
            attempt,
            due_ms: 1_700_000_000_000,
            error: "always fails".into(),
        }
    }

    #[test]
    fn a_note_reads_back_as_written_keyed_by_its_partition() {
        let written = note(3);
        let record = written.to_record().expect("record");
        assert_eq!(record.key.as_deref(), Some(&b"conveyor.q.default/2"[..]));
        assert_eq!(Note::of(&record), Some(written));
    }

    /// The wire form documented in docs/kafka-wire-format.md, "Attempt notes": notes written
    /// by older workers must stay readable.
    #[test]
    fn the_documented_note_reads() {
        let value = br#"{"topic":"conveyor.queue.default","partition":2,"offset":41,
            "id":"0190c3f2-6b1e-7a3c-9d4e-5f6a7b8c9d0e","attempt":3,"due_ms":1764700000000,
            "error":"connection refused"}"#;
        let record = Record {
            key: Some(b"conveyor.queue.default/2".to_vec()),
            value: Some(value.to_vec()),
            headers: Vec::new(),
        };
        let note = Note::of(&record).expect("a note");
        assert_eq!(
            (note.offset, note.attempt, note.due_ms),
            (41, 3, 1_764_700_000_000)
        );
        assert_eq!(note.id.to_string(), "0190c3f2-6b1e-7a3c-9d4e-5f6a7b8c9d0e");
    }

    #[test]
    fn a_record_that_is_no_note_is_ignored() {
        let record = Record {
            key: None,
            value: Some(b"{\"progress\": 1}".to_vec()),
            headers: Vec::new(),
        };
        assert_eq!(Note::of(&record), None);
    }
}
