//! The enqueuer's side of idempotency keys: after a keyed job's claim is acknowledged, the
//! claim's schedule partition is read up to it and the rule of [`super`] says whether it won
//! (`duplicate: false`) or which job holds the key (`duplicate: true`, that job's id).
//!
//! A process keeps what it read of each partition (the index and where reading stopped), so
//! its next keyed enqueue reads only the records written since. The first read of a partition
//! starts at the first record written within the window before now (one time lookup; the log
//! start on a broker without one). Memory: one index entry (key, id, time) per key claimed
//! within the window in the partitions this process enqueued keyed jobs to.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use conveyor_core::{now_ms, JobId};

use super::{reading_since, window_ms, Entry, KeyIndex, Verdict};
use crate::producer::Delivered;
use crate::scan::Scanner;
use crate::{Error, KafkaConfig};

/// What this process read of one schedule partition.
struct Book {
    index: KeyIndex,
    /// The next offset to read; `None` before the first read.
    next: Option<i64>,
    /// Verdicts of claims this process waits for, by offset (another enqueue may read past
    /// them first).
    verdicts: HashMap<i64, Verdict>,
    scanner: Option<Scanner>,
}

/// Resolves this process's keyed enqueues against the schedule topic.
pub(crate) struct Ledger {
    config: KafkaConfig,
    books: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<Book>>>>,
    /// Jobs whose claims this process waits to resolve.
    expected: Arc<Mutex<HashSet<JobId>>>,
}

impl Ledger {
    /// A ledger for `config`'s schedule topic and idempotency window.
    pub fn new(config: &KafkaConfig) -> Self {
        Ledger {
            config: config.clone(),
            books: Mutex::new(HashMap::new()),
            expected: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Says that the claim of job `id` is about to be produced; call before producing it.
    pub fn expect(&self, id: JobId) {
        lock(&self.expected).insert(id);
    }

    /// Forgets an expected claim that was not produced.
    pub fn forget(&self, id: JobId) {
        lock(&self.expected).remove(&id);
    }

    /// The verdict on job `id`'s claim, acknowledged at `at`.
    pub async fn verdict(&self, id: JobId, at: Delivered) -> Result<Verdict, Error> {
        let book = {
            let mut books = lock(&self.books);
            books
                .entry(at.partition)
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Mutex::new(Book {
                        index: KeyIndex::new(window_ms(&self.config)),
                        next: None,
                        verdicts: HashMap::new(),
                        scanner: None,
                    }))
                })
                .clone()
        };
        let mut book = book.lock_owned().await;
        if book.next.is_none_or(|next| next <= at.offset) {
            let (config, expected) = (self.config.clone(), self.expected.clone());
            book = tokio::task::spawn_blocking(move || {
                read_to(&config, &expected, &mut book, at).map(|()| book)
            })
            .await
            .map_err(|e| Error::Incomplete(format!("reading the idempotency keys: {e}")))??;
        }
        lock(&self.expected).remove(&id);
        book.verdicts.remove(&at.offset).ok_or_else(|| {
            Error::Incomplete(format!(
                "the claim of job {id} at offset {} of the schedule topic's partition {} was not found when read back",
                at.offset, at.partition
            ))
        })
    }
}

/// Reads `book`'s partition up to and including `at`, taking every record into its index.
fn read_to(
    config: &KafkaConfig,
    expected: &Mutex<HashSet<JobId>>,
    book: &mut Book,
    at: Delivered,
) -> Result<(), Error> {
    let topic = config.topics.scheduled();
    if book.scanner.is_none() {
        book.scanner = Some(Scanner::new(config, &config.schedule_group())?);
    }
    let Some(scanner) = book.scanner.as_ref() else {
        return Ok(());
    };
    let start = match book.next {
        Some(next) => next,
        None => scanner.offset_at_time(&topic, at.partition, reading_since(config, now_ms()))?,
    };
    let (index, verdicts) = (&mut book.index, &mut book.verdicts);
    let range = [(topic, at.partition, start, at.offset + 1)];
    scanner.read(&range, |_, _, offset, record| {
        let Some(entry) = Entry::of(&record) else {
            return;
        };
        let claimant = match &entry {
            Entry::Claim(claim) => Some(claim.id),
            Entry::Marker { .. } => None,
        };
        if let Some(verdict) = index.observe(entry) {
            if claimant.is_some_and(|id| lock(expected).contains(&id)) {
                verdicts.insert(offset, verdict);
            }
        }
    })?;
    book.next = Some(at.offset + 1);
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
