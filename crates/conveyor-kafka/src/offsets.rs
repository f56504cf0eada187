//! Which offset of a partition may be committed when many of its records are in flight.
//!
//! Kafka's committed offset means "everything before this is done". With jobs of one partition
//! running concurrently and finishing in any order, the commit may only move up to the lowest
//! unfinished offset (the Confluent Parallel Consumer's rule); finished offsets above it wait.
//! Nor may it pass an offset the consumer was never given ([`Delivered`]): a broker that skips
//! records would otherwise have them committed without ever running.

use std::collections::BTreeSet;

use crate::delivery::{Delivered, Seen};

/// Offsets of one partition handed out and not yet finished.
#[derive(Debug, Clone, Default)]
pub struct PartitionOffsets {
    /// Offsets handed out, not finished.
    unfinished: BTreeSet<i64>,
    /// The offsets the consumer was given: gaps, repeats, and one past the highest.
    delivered: Delivered,
    /// The last position sent in a commit, to skip redundant commits; cleared when that
    /// commit fails, so the position is sent again.
    committed: Option<i64>,
}

impl PartitionOffsets {
    /// Bookkeeping for a partition the consumer reads from `position` on (its committed
    /// offset): a first record above it means the records in between were skipped.
    pub fn starting_at(position: i64) -> Self {
        PartitionOffsets {
            delivered: Delivered::starting_at(position),
            ..PartitionOffsets::default()
        }
    }

    /// Records that the consumer gave `offset` and its job is not finished. [`Seen::Repeat`]
    /// when it was given before (its job runs or ran already): then nothing is recorded and
    /// the record must be ignored.
    pub fn started(&mut self, offset: i64) -> Seen {
        let seen = self.delivered.seen(offset);
        if seen == Seen::New {
            self.unfinished.insert(offset);
        }
        seen
    }

    /// Records that the consumer gave `offset` and it needs no work (a decode error already
    /// dead-lettered, a duplicate): it counts as finished at once. [`Seen::Repeat`] when it was
    /// given before.
    pub fn skipped(&mut self, offset: i64) -> Seen {
        self.delivered.seen(offset)
    }

    /// True when offsets were skipped and the partition must be re-fetched.
    pub fn wants_refetch(&self) -> bool {
        self.delivered.wants_refetch()
    }

    /// Where to seek the partition back to, when offsets were skipped by the broker.
    pub fn take_refetch(&mut self) -> Option<i64> {
        self.delivered.take_refetch()
    }

    /// The consumer has been given nothing for a while (not paused), and the broker's log end
    /// is `log_end`: a re-fetch under way is over; returns where to seek when the tail was
    /// skipped (see [`Delivered::tail_refetch`]).
    pub fn idle(&mut self, log_end: i64) -> Option<i64> {
        self.delivered.at_end();
        self.delivered
            .tail_refetch(log_end)
            .or_else(|| self.delivered.take_refetch())
    }

    /// The seek for the re-fetch from `from` failed: it is asked for again.
    pub fn refetch_failed(&mut self, from: i64) {
        self.delivered.refetch_failed(from);
    }

    /// One past the highest offset the consumer gave, if any.
    pub fn next_given(&self) -> Option<i64> {
        self.delivered.next()
    }

    /// True when `offset` was given before (its job runs or ran: the record is ignored).
    pub fn is_repeat(&self, offset: i64) -> bool {
        self.delivered.is_repeat(offset)
    }

    /// Records that the job at `offset` finished (its outcome is durable elsewhere).
    pub fn finished(&mut self, offset: i64) {
        self.unfinished.remove(&offset);
    }

    /// How many jobs of this partition are unfinished.
    pub fn in_flight(&self) -> usize {
        self.unfinished.len()
    }

    /// The position that may be committed now: the lowest unfinished or never given offset,
    /// or one past the highest given when all are finished.
    pub fn committable(&self) -> Option<i64> {
        let unfinished = self.unfinished.first().copied();
        let missing = self.delivered.first_missing();
        match (unfinished, missing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b).or(self.delivered.next()),
        }
    }

    /// The position to commit if it moved since the last commit (or that commit failed);
    /// marks it sent.
    pub fn take_commit(&mut self) -> Option<i64> {
        let position = self.committable()?;
        if self.committed == Some(position) {
            return None;
        }
        self.committed = Some(position);
        Some(position)
    }

    /// The next [`PartitionOffsets::take_commit`] returns the position even if it did not
    /// move (its last commit may have been refused unseen).
    pub fn resend(&mut self) {
        self.committed = None;
    }

    /// The commit of `position` failed (the broker refused it, or never answered): unless a
    /// later position was sent since, it is sent again with the next commit. Without this an
    /// idle partition's finished jobs would stay uncommitted and run again after a restart.
    pub fn commit_failed(&mut self, position: i64) {
        if self.committed == Some(position) {
            self.committed = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_never_passes_an_unfinished_offset() {
        let mut p = PartitionOffsets::default();
        for o in 10..15 {
            p.started(o);
        }
        p.finished(11);
        p.finished(12);
        assert_eq!(p.take_commit(), Some(10), "10 is still running");
        p.finished(10);
        assert_eq!(p.take_commit(), Some(13));
        assert_eq!(p.take_commit(), None, "nothing moved");
        p.finished(14);
        p.finished(13);
        assert_eq!(p.take_commit(), Some(15));
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn the_commit_never_passes_an_offset_not_given_and_repeats_run_nothing() {
        let mut p = PartitionOffsets::starting_at(0);
        assert_eq!(p.started(0), Seen::New);
        p.finished(0);
        assert_eq!(
            p.started(3),
            Seen::New,
            "1 and 2 were skipped by the broker"
        );
        p.finished(3);
        assert_eq!(p.committable(), Some(1));
        assert_eq!(p.take_refetch(), Some(1));
        assert_eq!(p.started(1), Seen::New);
        assert_eq!(p.skipped(2), Seen::New);
        assert_eq!(p.started(3), Seen::Repeat, "3 ran already");
        assert_eq!(p.committable(), Some(1), "1 still runs");
        p.finished(1);
        assert_eq!(p.committable(), Some(4));
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn a_failed_commit_is_sent_again_unless_a_later_one_went_out() {
        let mut p = PartitionOffsets::default();
        p.started(0);
        p.finished(0);
        assert_eq!(p.take_commit(), Some(1));
        p.commit_failed(1);
        assert_eq!(p.take_commit(), Some(1), "sent again");
        p.started(1);
        p.finished(1);
        assert_eq!(p.take_commit(), Some(2));
        p.commit_failed(1);
        assert_eq!(p.take_commit(), None, "position 2 went out after it");
    }

    #[test]
    fn skipped_records_do_not_hold_the_commit() {
        let mut p = PartitionOffsets::default();
        p.skipped(0);
        p.started(1);
        p.skipped(2);
        assert_eq!(p.committable(), Some(1));
        p.finished(1);
        assert_eq!(p.committable(), Some(3));
    }

    /// Whatever the order jobs finish in, the committed position is exactly the lowest
    /// unfinished offset, and never moves backwards.
    #[test]
    fn any_finish_order_commits_only_finished_prefixes() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200 {
            let mut p = PartitionOffsets::default();
            let n = 50;
            for o in 0..n {
                p.started(o);
            }
            let mut order: Vec<i64> = (0..n).collect();
            for i in (1..order.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                order.swap(i, (seed % (i as u64 + 1)) as usize);
            }
            let mut done = vec![false; n as usize];
            let mut last = 0;
            for o in order {
                p.finished(o);
                done[o as usize] = true;
                let expect = done.iter().position(|d| !d).map_or(n, |i| i as i64);
                let got = p.committable().expect("position");
                assert_eq!(got, expect);
                assert!(got >= last, "commit moved backwards");
                last = got;
            }
        }
    }
}
