//! Idempotency keys on the broker alone: the schedule topic's log is the arbiter.
//!
//! A job with an idempotency key is written to the schedule topic (`{prefix}scheduled`) keyed
//! by its idempotency key, so every *claim* of one key lands in one partition, in one order
//! that every reader sees alike. The rule, applied to a partition's records in offset order:
//! a claim is a **duplicate** when an earlier claim of its key *won* with another job id and
//! was enqueued less than the window (default 24 h) before it; otherwise it wins (it is the
//! first, or the earlier winner is older than the window). A claim with the winner's own job
//! id is a **copy** (a producer's retry of the same job, or the same Go event id twice).
//!
//! Both sides apply the same rule to the same log, so they agree without talking: the
//! enqueuer reads its claim's partition up to its claim to answer `duplicate` and the winner's
//! id (see [`ledger`]); the worker that owns the partition moves only winners to their queues
//! and drops the rest (see `state/claims.rs`). The index is rebuilt by reading the partition
//! from the first record written within the window (a time lookup, else the log start).
//! Decisions are made durable with a `duplicate` marker, so an owner whose reading starts
//! later than the winner's record never turns a dropped claim into a winner.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;

use conveyor_core::JobId;

use crate::envelope::header;
use crate::Record;

pub(crate) mod ledger;

/// A record may be written this long before its enqueue time says (clock skew between its
/// producer and the broker): reading a window starts that much earlier.
const SKEW_MS: i64 = 10 * 60 * 1000;

/// The idempotency window of `config`, in ms.
pub(crate) fn window_ms(config: &crate::KafkaConfig) -> i64 {
    i64::try_from(config.idempotency_window.as_millis()).unwrap_or(i64::MAX)
}

/// Where (in time, ms) reading a partition's keys starts at `now_ms`: the window, plus the
/// clock skew allowed.
pub(crate) fn reading_since(config: &crate::KafkaConfig, now_ms: i64) -> i64 {
    now_ms
        .saturating_sub(window_ms(config))
        .saturating_sub(SKEW_MS)
}

/// The marker of a claim dropped as a duplicate (or a copy of a moved job).
pub(crate) const DUPLICATE: &str = "duplicate";

/// The marker of a job moved to its queue's topic.
pub(crate) const MOVED: &str = "moved";

/// One claim of an idempotency key: a keyed job's record in the schedule topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    /// The idempotency key.
    pub key: String,
    /// The claiming job.
    pub id: JobId,
    /// When the job was enqueued (ms since the epoch), from its envelope.
    pub at: i64,
}

/// What a schedule topic record means for the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A keyed job's record.
    Claim(Claim),
    /// A marker: job `id` of key `key` was moved (`moved`) or dropped (`duplicate`).
    Marker {
        key: String,
        id: JobId,
        what: String,
    },
}

impl Entry {
    /// The index entry of a schedule topic record, if it has one (a keyed job or a keyed
    /// marker). Unkeyed delayed jobs and their markers are none of the index's business.
    pub fn of(record: &Record) -> Option<Entry> {
        let text = |name: &str| record.header(name).and_then(Result::ok);
        let key = text(header::IDEMPOTENCY_KEY)?.to_string();
        let id = JobId::from_str(text(header::ID)?).ok()?;
        if let Some(what) = text(header::MARKER) {
            return Some(Entry::Marker {
                key,
                id,
                what: what.to_string(),
            });
        }
        let at = text(header::ENQUEUED_AT)?.trim().parse().unwrap_or(0);
        Some(Entry::Claim(Claim { key, id, at }))
    }
}

/// What the rule says of one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The key's winner: its job runs.
    Wins,
    /// Another record of the winning job (same id). `moved`: the winner's job was moved to its
    /// queue already, so this record must not move it again.
    Copy { moved: bool },
    /// Another job claimed the key within the window first: this one never runs.
    Duplicate { winner: JobId },
}

/// The winning claim of a key.
#[derive(Debug, Clone, Copy)]
struct Winner {
    id: JobId,
    at: i64,
    moved: bool,
}

/// The winners of one schedule partition's keys within the window.
#[derive(Debug)]
pub(crate) struct KeyIndex {
    window_ms: i64,
    winners: HashMap<String, Winner>,
    /// Winning claims in the order they won, to forget those older than the window.
    ages: VecDeque<(i64, String)>,
    /// The newest claim time seen: the index forgets winners two windows older than it.
    newest: i64,
}

impl KeyIndex {
    /// An empty index whose claims hold for `window_ms`.
    pub fn new(window_ms: i64) -> Self {
        KeyIndex {
            window_ms,
            winners: HashMap::new(),
            ages: VecDeque::new(),
            newest: i64::MIN,
        }
    }

    /// Keys with a winner held.
    pub fn len(&self) -> usize {
        self.winners.len()
    }

    /// Takes in the next entry of the partition (in offset order); for a claim, its verdict.
    pub fn observe(&mut self, entry: Entry) -> Option<Verdict> {
        match entry {
            Entry::Claim(claim) => Some(self.claim(claim)),
            Entry::Marker { key, id, what } => {
                self.mark(&key, id, &what);
                None
            }
        }
    }

    fn claim(&mut self, claim: Claim) -> Verdict {
        self.newest = self.newest.max(claim.at);
        // Claim times are the producers' clocks, not in log order: a winner is forgotten only
        // two windows behind the newest claim, which no sane clock skew reaches.
        self.forget_before(self.newest.saturating_sub(2 * self.window_ms));
        if let Some(winner) = self.winners.get(&claim.key) {
            if claim.at.saturating_sub(winner.at) < self.window_ms {
                return if winner.id == claim.id {
                    Verdict::Copy {
                        moved: winner.moved,
                    }
                } else {
                    Verdict::Duplicate { winner: winner.id }
                };
            }
        }
        self.ages.push_back((claim.at, claim.key.clone()));
        self.winners.insert(
            claim.key,
            Winner {
                id: claim.id,
                at: claim.at,
                moved: false,
            },
        );
        Verdict::Wins
    }

    /// A marker: `moved` tells that the winner's job is in its queue (a later copy must not
    /// move it again); `duplicate` of a claim the index took as winner (its reading started
    /// after the true winner) takes it back, so the key goes on naming no job rather than one
    /// that never ran.
    fn mark(&mut self, key: &str, id: JobId, what: &str) {
        let Some(winner) = self.winners.get_mut(key).filter(|w| w.id == id) else {
            return;
        };
        match what {
            MOVED => winner.moved = true,
            DUPLICATE if !winner.moved => {
                self.winners.remove(key);
            }
            _ => {}
        }
    }

    /// Forgets winners enqueued before `cutoff` (they no longer make anything a duplicate).
    fn forget_before(&mut self, cutoff: i64) {
        while let Some((at, _)) = self.ages.front() {
            if *at >= cutoff {
                break;
            }
            let Some((at, key)) = self.ages.pop_front() else {
                break;
            };
            if self.winners.get(&key).is_some_and(|w| w.at == at) {
                self.winners.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn claim(key: &str, id: JobId, at: i64) -> Entry {
        Entry::Claim(Claim {
            key: key.into(),
            id,
            at,
        })
    }

    #[test]
    fn the_first_claim_wins_and_later_ones_within_the_window_are_duplicates() {
        let mut index = KeyIndex::new(24 * HOUR);
        let (a, b) = (JobId::new(), JobId::new());
        assert_eq!(index.observe(claim("k", a, 0)), Some(Verdict::Wins));
        assert_eq!(
            index.observe(claim("k", b, 23 * HOUR)),
            Some(Verdict::Duplicate { winner: a })
        );
        assert_eq!(
            index.observe(claim("other", b, 23 * HOUR)),
            Some(Verdict::Wins)
        );
    }

    #[test]
    fn a_claim_a_window_after_the_winner_wins_again() {
        let mut index = KeyIndex::new(24 * HOUR);
        let (a, b) = (JobId::new(), JobId::new());
        index.observe(claim("k", a, 0));
        assert_eq!(index.observe(claim("k", b, 24 * HOUR)), Some(Verdict::Wins));
        index.observe(claim("other", a, 73 * HOUR));
        assert_eq!(index.len(), 1, "winners two windows old are forgotten");
    }

    #[test]
    fn a_copy_of_a_moved_winner_is_known_as_moved() {
        let mut index = KeyIndex::new(HOUR);
        let a = JobId::new();
        index.observe(claim("k", a, 0));
        assert_eq!(
            index.observe(claim("k", a, 1)),
            Some(Verdict::Copy { moved: false })
        );
        index.observe(Entry::Marker {
            key: "k".into(),
            id: a,
            what: MOVED.into(),
        });
        assert_eq!(
            index.observe(claim("k", a, 2)),
            Some(Verdict::Copy { moved: true })
        );
    }

    #[test]
    fn a_duplicate_marker_takes_back_a_claim_taken_as_winner() {
        let mut index = KeyIndex::new(HOUR);
        let (b, c) = (JobId::new(), JobId::new());
        index.observe(claim("k", b, 10)); // its true winner was before the reading started
        index.observe(Entry::Marker {
            key: "k".into(),
            id: b,
            what: DUPLICATE.into(),
        });
        assert_eq!(index.observe(claim("k", c, 20)), Some(Verdict::Wins));
    }

    #[test]
    fn entries_are_read_from_headers() {
        let id = JobId::new();
        let record = Record {
            key: None,
            value: Some(b"{}".to_vec()),
            headers: vec![
                (header::ID.into(), id.to_string().into_bytes()),
                (header::IDEMPOTENCY_KEY.into(), b"order-1".to_vec()),
                (header::ENQUEUED_AT.into(), b"42".to_vec()),
            ],
        };
        assert_eq!(
            Entry::of(&record),
            Some(Entry::Claim(Claim {
                key: "order-1".into(),
                id,
                at: 42
            }))
        );
        let unkeyed = Record {
            headers: vec![(header::ID.into(), id.to_string().into_bytes())],
            ..record
        };
        assert_eq!(Entry::of(&unkeyed), None);
    }
}
