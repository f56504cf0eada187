//! Cron on the broker alone: entries live in `{prefix}cron`, and each tick fires once across
//! the fleet through the idempotency keys of the schedule topic (see `src/keys`).
//!
//! - **Entries**: one record per change, keyed by the entry's name, with the whole entry as
//!   JSON (or `{"removed": NAME}`). The latest record of a name is the entry; as the name picks
//!   the partition, its records stay in order. Each handle keeps the entries in memory and reads
//!   only the records written since its last look, so the scheduler's once-a-second look costs
//!   one small fetch (no compaction needed: the topic grows by one record per fired tick and
//!   per change, and a handle reads it whole only once).
//! - **Firing**: every `serve` process fires every due tick: the job carries the idempotency
//!   key `cron:{name}:{tick}`, so the first enqueue of a tick wins and the others are answered
//!   `duplicate` (a process killed at a tick boundary leaves the tick to the others). The
//!   winner writes the entry with its next tick; the others move their own copy on, and a
//!   record that moves an entry's tick backwards (a late writer) never does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use conveyor_core::{next_fire_after, CronEntry, Engine, JobId, NewJob, Schedules};
use serde::{Deserialize, Serialize};

use crate::inspect::blocking;
use crate::scan::Scanner;
use crate::{Error, KafkaConfig, KafkaEngine, Record};

/// One record of the cron topic.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Change {
    Removed { removed: String },
    Saved(CronEntry),
}

/// A handle's copy of the cron topic: the entries and how far it was read.
#[derive(Default)]
pub(crate) struct CronBook {
    entries: BTreeMap<String, CronEntry>,
    read_to: HashMap<i32, i64>,
    scanner: Option<Scanner>,
}

impl CronBook {
    /// Reads the records written since the last look.
    fn refresh(&mut self, config: &KafkaConfig) -> Result<(), Error> {
        if self.scanner.is_none() {
            self.scanner = Some(Scanner::new(config, &config.group)?);
        }
        let Some(scanner) = &self.scanner else {
            return Ok(());
        };
        let topic = config.topics.cron();
        let ranges: Vec<_> = scanner
            .offsets_of(&topic)?
            .into_iter()
            .map(|p| {
                let from = self.read_to.get(&p.partition).copied().unwrap_or(p.low);
                (topic.clone(), p.partition, from.max(p.low), p.high)
            })
            .collect();
        let mut changes = Vec::new();
        scanner.read(&ranges, |_, _, _, record| changes.push(record))?;
        for (_, partition, _, high) in &ranges {
            self.read_to.insert(*partition, *high);
        }
        for record in changes {
            self.apply(&record);
        }
        Ok(())
    }

    fn apply(&mut self, record: &Record) {
        let change = record
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice::<Change>(v).ok());
        match change {
            Some(Change::Removed { removed }) => {
                self.entries.remove(&removed);
            }
            Some(Change::Saved(entry)) => self.save(entry),
            None => tracing::warn!("a record of the cron topic is not an entry: ignored"),
        }
    }

    /// Keeps `entry`; with the same expression as the one kept, its ticks never go backwards.
    fn save(&mut self, mut entry: CronEntry) {
        if let Some(kept) = self.entries.get(&entry.name) {
            if kept.expr == entry.expr {
                entry.next_run_at = entry.next_run_at.max(kept.next_run_at);
                entry.last_run_at = entry.last_run_at.max(kept.last_run_at);
            }
        }
        self.entries.insert(entry.name.clone(), entry);
    }
}

impl KafkaEngine {
    /// The entries as of now (the records written since the last look read first).
    async fn cron_entries(&self) -> conveyor_core::Result<BTreeMap<String, CronEntry>> {
        let (book, config) = (self.cron.clone(), self.config().clone());
        blocking(move || {
            let mut book = lock(&book);
            book.refresh(&config)?;
            Ok(book.entries.clone())
        })
        .await
    }

    /// Writes a change and keeps it in this handle's copy.
    async fn write_cron(&self, name: &str, change: Change) -> conveyor_core::Result<()> {
        let value = serde_json::to_vec(&change).map_err(|e| Error::invalid("cron", e))?;
        let record = Record {
            key: Some(name.as_bytes().to_vec()),
            value: Some(value),
            headers: Vec::new(),
        };
        self.producer
            .send(&self.config().topics.cron(), &record)
            .await?;
        lock(&self.cron).apply(&record);
        Ok(())
    }

    /// Enqueues `entry`'s job for `tick`; true when this call stored it (not a duplicate).
    async fn fire(
        &self,
        entry: &CronEntry,
        tick: DateTime<Utc>,
    ) -> conveyor_core::Result<Option<JobId>> {
        let job = NewJob::new(entry.kind.clone(), entry.payload.clone())
            .queue(entry.queue.clone())
            .idempotency_key(format!("cron:{}:{}", entry.name, tick.timestamp_millis()));
        let enqueued = self.enqueue(job).await?;
        Ok((!enqueued.duplicate).then_some(enqueued.id))
    }
}

fn lock(book: &Mutex<CronBook>) -> std::sync::MutexGuard<'_, CronBook> {
    book.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh, empty copy of the cron topic for a new handle.
pub(crate) fn book() -> Arc<Mutex<CronBook>> {
    Arc::new(Mutex::new(CronBook::default()))
}

#[async_trait]
impl Schedules for KafkaEngine {
    async fn list_cron(&self) -> conveyor_core::Result<Vec<CronEntry>> {
        Ok(self.cron_entries().await?.into_values().collect())
    }

    async fn upsert_cron(&self, mut entry: CronEntry) -> conveyor_core::Result<CronEntry> {
        let next = entry.validate(Utc::now())?;
        let kept = self.cron_entries().await?.remove(&entry.name);
        // Re-saving an entry with the same expression (as `serve` does at every start) keeps
        // its ticks, so a tick missed while nothing ran still fires once.
        match kept.filter(|k| k.expr == entry.expr) {
            Some(kept) => {
                entry.next_run_at = kept.next_run_at;
                entry.last_run_at = kept.last_run_at;
            }
            None => {
                entry.next_run_at = Some(next);
                entry.last_run_at = None;
            }
        }
        let name = entry.name.clone();
        self.write_cron(&name, Change::Saved(entry.clone())).await?;
        Ok(entry)
    }

    async fn remove_cron(&self, name: &str) -> conveyor_core::Result<bool> {
        if !self.cron_entries().await?.contains_key(name) {
            return Ok(false);
        }
        let change = Change::Removed {
            removed: name.to_string(),
        };
        self.write_cron(name, change).await?;
        Ok(true)
    }

    async fn fire_due_cron(&self, now: DateTime<Utc>) -> conveyor_core::Result<Vec<JobId>> {
        let mut fired = Vec::new();
        for mut entry in self.cron_entries().await?.into_values() {
            let Some(tick) = entry.next_run_at.filter(|t| *t <= now) else {
                continue;
            };
            let won = self.fire(&entry, tick).await?;
            // Missed ticks (nobody was serving) fire once, not as a burst.
            entry.next_run_at = Some(next_fire_after(&entry.expr, now)?);
            entry.last_run_at = Some(tick);
            let name = entry.name.clone();
            match won {
                Some(id) => {
                    fired.push(id);
                    self.write_cron(&name, Change::Saved(entry)).await?;
                }
                // The winner writes the next tick; this copy moves on meanwhile.
                None => lock(&self.cron).save(entry),
            }
        }
        Ok(fired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn saved(entry: &CronEntry) -> Record {
        Record {
            key: Some(entry.name.clone().into_bytes()),
            value: Some(serde_json::to_vec(&Change::Saved(entry.clone())).expect("json")),
            headers: Vec::new(),
        }
    }

    #[test]
    fn the_latest_record_of_a_name_wins_and_ticks_never_go_back() {
        let mut book = CronBook::default();
        let at = |s| Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, s).unwrap());
        let mut entry = CronEntry::new("tick", "* * * * * *", "noop", serde_json::json!({}));
        entry.next_run_at = at(5);
        book.apply(&saved(&entry));
        entry.next_run_at = at(3); // a late writer
        book.apply(&saved(&entry));
        assert_eq!(book.entries["tick"].next_run_at, at(5));
        entry.expr = "*/2 * * * * *".into();
        book.apply(&saved(&entry));
        assert_eq!(
            book.entries["tick"].next_run_at,
            at(3),
            "a new expression starts over"
        );
        let removed = Record {
            key: None,
            value: Some(br#"{"removed":"tick"}"#.to_vec()),
            headers: Vec::new(),
        };
        book.apply(&removed);
        assert!(book.entries.is_empty());
    }
}
