//! What the consumer of one partition was actually given, offset by offset, so that the engine
//! never commits past a record it was never given and never runs a record twice because the
//! broker delivered it twice.
//!
//! A partition's offsets should arrive in order without holes. They may not: a broker that
//! answers a fetch with the wrong batch (tansu's memory storage did, under load) leaves a hole
//! (a *forward gap*), and the client may then be given a range it already had (a *backward
//! jump*). A gap is held open: the commit stops at its start, and the partition is re-fetched
//! from there. Offsets given again are not run again. Some gaps are legitimate: a transaction's
//! commit or abort marker occupies an offset that no consumer is given, and compaction removes
//! records. A gap that survives [`CONFIRMING_PASSES`] re-fetches is taken as one of those.

use std::collections::BTreeMap;

/// Re-fetches that must skip over a gap before it is taken as legitimate (markers, compaction).
pub const CONFIRMING_PASSES: u32 = 3;

/// What to do with an offset just given by the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Given for the first time: run it.
    New,
    /// Given before: it already runs or ran; do not run it again.
    Repeat,
}

/// A re-fetch under way: the partition was sought back to `from`, and is read again up to
/// `until` (the highest offset given before the seek).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pass {
    from: i64,
    until: i64,
}

/// The offsets one partition's consumer was given since it was assigned.
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    /// One past the highest offset given.
    next: Option<i64>,
    /// Offsets below `next` never given: start -> (end, re-fetches that skipped it again).
    missing: BTreeMap<i64, (i64, u32)>,
    /// The re-fetch under way, if any.
    pass: Option<Pass>,
    /// A re-fetch to ask the consumer for (the offset to seek to), not yet taken.
    wanted: Option<i64>,
    /// Re-fetches of the tail so far: the position sought and how many times.
    tail: Option<(i64, u32)>,
    /// True once the consumer gave an offset.
    given: bool,
}

impl Delivered {
    /// Where the consumer starts reading (the committed position, or the log's start): an
    /// offset given above it means the records in between were skipped.
    pub fn starting_at(position: i64) -> Self {
        Delivered {
            next: Some(position),
            ..Delivered::default()
        }
    }

    /// Records that the consumer gave `offset`, and says whether it is new.
    pub fn seen(&mut self, offset: i64) -> Seen {
        if !self.given {
            self.given = true;
            if self.next.is_some_and(|start| offset < start) {
                // The consumer did not start at the committed position: it was out of range
                // (the broker lost or deleted records) and the client reset to the log start.
                // What it reads from there is new.
                tracing::warn!(committed = ?self.next, first = offset, "the consumer started below the committed offset (reset): reading from there");
                self.next = None;
            }
        }
        let seen = match self.next {
            None => {
                self.next = Some(offset + 1);
                Seen::New
            }
            Some(next) if offset >= next => {
                if offset > next {
                    self.missing.insert(next, (offset, 0));
                }
                self.next = Some(offset + 1);
                Seen::New
            }
            Some(_) => self.fill(offset),
        };
        self.end_pass_at(offset);
        if self.pass.is_none() && self.wanted.is_none() {
            self.wanted = self.missing.keys().next().copied();
        }
        seen
    }

    /// An offset below `next`: new if it was missing (the range is split around it).
    fn fill(&mut self, offset: i64) -> Seen {
        let Some((&start, &(end, skips))) = self.missing.range(..=offset).next_back() else {
            return Seen::Repeat;
        };
        if offset >= end {
            return Seen::Repeat;
        }
        self.missing.remove(&start);
        if start < offset {
            self.missing.insert(start, (offset, skips));
        }
        if offset + 1 < end {
            self.missing.insert(offset + 1, (end, skips));
        }
        Seen::New
    }

    /// Once a re-fetch has read past everything given before it, the gaps it went over and did
    /// not fill were skipped again: after enough passes they are taken as legitimate.
    fn end_pass_at(&mut self, offset: i64) {
        let Some(pass) = self.pass.filter(|p| offset >= p.until) else {
            return;
        };
        self.pass = None;
        let skipped: Vec<i64> = self
            .missing
            .range(pass.from..pass.until)
            .map(|(start, _)| *start)
            .collect();
        for start in skipped {
            if let Some((end, skips)) = self.missing.get_mut(&start) {
                *skips += 1;
                if *skips >= CONFIRMING_PASSES {
                    tracing::info!(from = start, to = *end, "offsets never given after {CONFIRMING_PASSES} re-fetches: taken as transaction markers or compacted records");
                    self.missing.remove(&start);
                }
            }
        }
    }

    /// The broker's log end, while the consumer has been given nothing for a while (and the
    /// partition is not paused): records between the last one given and the log end were
    /// skipped, at the tail where no later record reveals the hole. Returns where to seek to
    /// read them again, a few times per position (a transaction marker at the tail holds an
    /// offset no record will ever fill). The commit never passes them meanwhile: it stops at
    /// one past the last offset given.
    pub fn tail_refetch(&mut self, log_end: i64) -> Option<i64> {
        let next = self.next.filter(|n| log_end > *n && self.pass.is_none())?;
        let tries = match self.tail {
            Some((at, tries)) if at == next => tries,
            _ => 0,
        };
        if tries >= CONFIRMING_PASSES {
            return None;
        }
        self.tail = Some((next, tries + 1));
        Some(next)
    }

    /// The consumer was given nothing more for a while during a re-fetch (it read everything
    /// there was): the re-fetch is over, and the gaps it went over were skipped again.
    pub fn at_end(&mut self) {
        if let Some(pass) = self.pass {
            self.end_pass_at(pass.until);
            if self.wanted.is_none() {
                self.wanted = self.missing.keys().next().copied();
            }
        }
    }

    /// True when `offset` was given before (below the highest given, and not missing).
    pub fn is_repeat(&self, offset: i64) -> bool {
        let missing = |offset: i64| {
            self.missing
                .range(..=offset)
                .next_back()
                .is_some_and(|(_, (end, _))| offset < *end)
        };
        self.next.is_some_and(|next| offset < next) && !missing(offset)
    }

    /// The seek for the re-fetch from `from` failed: it is asked for again, and the gaps it
    /// was to go over do not count as skipped.
    pub fn refetch_failed(&mut self, from: i64) {
        self.pass = None;
        self.wanted = Some(from);
    }

    /// True when a re-fetch waits to be taken by [`Delivered::take_refetch`].
    pub fn wants_refetch(&self) -> bool {
        self.wanted.is_some()
    }

    /// The offset to seek the partition back to, once per re-fetch; the caller must seek.
    pub fn take_refetch(&mut self) -> Option<i64> {
        let from = self.wanted.take()?;
        let until = self.next? - 1;
        self.pass = Some(Pass { from, until });
        Some(from)
    }

    /// The lowest offset that was never given (the commit must not pass it).
    pub fn first_missing(&self) -> Option<i64> {
        self.missing.keys().next().copied()
    }

    /// One past the highest offset given.
    pub fn next(&self) -> Option<i64> {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_offsets_are_new_and_leave_no_gap() {
        let mut d = Delivered::starting_at(10);
        for o in 10..20 {
            assert_eq!(d.seen(o), Seen::New);
        }
        assert_eq!(d.first_missing(), None);
        assert_eq!(d.take_refetch(), None);
        assert_eq!(d.next(), Some(20));
    }

    #[test]
    fn a_gap_holds_the_commit_and_is_refetched_then_filled() {
        let mut d = Delivered::starting_at(0);
        for o in [0, 1, 2, 6, 7] {
            assert_eq!(d.seen(o), Seen::New);
        }
        assert_eq!(d.first_missing(), Some(3));
        assert_eq!(d.take_refetch(), Some(3));
        assert_eq!(d.take_refetch(), None, "one re-fetch at a time");
        for o in 3..6 {
            assert_eq!(d.seen(o), Seen::New, "the gap is filled");
        }
        assert_eq!(d.seen(6), Seen::Repeat);
        assert_eq!(d.seen(7), Seen::Repeat);
        assert_eq!(d.first_missing(), None);
        assert_eq!(d.seen(8), Seen::New);
    }

    #[test]
    fn a_gap_skipped_by_every_refetch_is_taken_as_legitimate() {
        let mut d = Delivered::starting_at(0);
        d.seen(0);
        d.seen(2); // offset 1: a transaction marker, say
        for _ in 0..CONFIRMING_PASSES {
            assert_eq!(d.first_missing(), Some(1));
            assert_eq!(d.take_refetch(), Some(1));
            assert_eq!(d.seen(2), Seen::Repeat);
        }
        assert_eq!(d.first_missing(), None);
        assert_eq!(d.take_refetch(), None);
    }

    #[test]
    fn a_consumer_reset_below_the_committed_offset_runs_what_it_reads() {
        let mut d = Delivered::starting_at(500);
        assert_eq!(
            d.seen(0),
            Seen::New,
            "the log was reset: offset 0 is a new record"
        );
        assert_eq!(d.seen(1), Seen::New);
        assert_eq!(d.first_missing(), None);
        assert_eq!(d.next(), Some(2));
    }

    #[test]
    fn a_skipped_start_is_a_gap() {
        let mut d = Delivered::starting_at(100);
        assert_eq!(d.seen(104), Seen::New);
        assert_eq!(d.first_missing(), Some(100));
    }

    #[test]
    fn a_backward_jump_runs_nothing_twice() {
        let mut d = Delivered::default();
        for o in 0..10 {
            d.seen(o);
        }
        for o in 4..10 {
            assert_eq!(d.seen(o), Seen::Repeat);
        }
        assert_eq!(d.seen(10), Seen::New);
        assert_eq!(d.first_missing(), None);
    }

    /// A broker that, on first reads, sometimes skips records or jumps back; re-fetches read
    /// correctly; some offsets hold no record at all (markers). Every record is run exactly
    /// once, and the commit position never passes a record that was not given.
    #[test]
    fn a_faulty_broker_loses_nothing_and_runs_nothing_twice() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut seeks = 0;
        for _ in 0..300 {
            let len = 40 + rand(60) as i64;
            let marker = |o: i64| o % 17 == 16;
            let mut d = Delivered::starting_at(0);
            let mut ran = vec![0u32; len as usize];
            let (mut position, mut furthest) = (0i64, 0i64);
            let mut steps = 0;
            let mut log: Vec<String> = Vec::new();
            while steps < 10_000 {
                steps += 1;
                if let Some(from) = d.take_refetch() {
                    log.push(format!("seek {from}"));
                    seeks += 1;
                    position = from;
                    continue;
                }
                if position >= len {
                    // Caught up: idle, the consumer compares with the log end, and stops
                    // when nothing is left to re-fetch.
                    d.at_end();
                    let refetch = d.tail_refetch(len).or_else(|| d.take_refetch());
                    match refetch {
                        Some(from) => {
                            log.push(format!("at the end: seek {from}"));
                            seeks += 1;
                            position = from;
                        }
                        None => break,
                    }
                    continue;
                }
                let first_read = position >= furthest;
                if first_read && rand(10) == 0 {
                    position += 1 + rand(5) as i64; // skipped records
                    furthest = furthest.max(position);
                    continue;
                }
                if first_read && rand(15) == 0 {
                    position = (position - 1 - rand(6) as i64).max(0); // a jump back
                }
                let offset = position;
                position += 1;
                furthest = furthest.max(position);
                if marker(offset) {
                    continue;
                }
                log.push(format!("{offset}"));
                if d.seen(offset) == Seen::New {
                    ran[offset as usize] += 1;
                }
                let commit = d.first_missing().or(d.next()).unwrap_or(0);
                for o in 0..commit {
                    assert!(
                        marker(o) || ran[o as usize] == 1,
                        "commit {commit} passed {o}"
                    );
                }
            }
            for (o, runs) in ran.iter().enumerate() {
                let expected = u32::from(!marker(o as i64));
                assert_eq!(
                    *runs, expected,
                    "offset {o} ran {runs} times: {log:?} {d:?}"
                );
            }
        }
        assert!(
            seeks > 300,
            "the faults were too rare to test anything: {seeks} re-fetches"
        );
    }
}
