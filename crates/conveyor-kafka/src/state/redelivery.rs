//! The session's side of "Records the broker skips" (docs/kafka-engine.md): repeats, where a
//! partition starts, the re-fetches its consumer must make, and idle partitions.

use super::{Lane, PartitionOffsets, State, Tp};

impl State {
    /// True when the consumer gave `offset` of `tp` before: the record is ignored.
    pub fn is_repeat(&self, tp: &Tp, offset: i64) -> bool {
        self.offsets.get(tp).is_some_and(|o| o.is_repeat(offset))
    }

    /// The consumer of a newly assigned partition reads it from `position` (its committed
    /// offset): a first record above it means the broker skipped the ones in between.
    pub fn start_at(&mut self, tp: &Tp, position: i64) {
        self.offsets
            .insert(tp.clone(), PartitionOffsets::starting_at(position));
    }

    /// Partitions of `lane` whose consumer must seek back to re-fetch offsets it was never
    /// given, with the offset to seek to.
    pub fn take_refetches(&mut self, lane: Lane) -> Vec<(Tp, i64)> {
        if self.refetch_due.is_empty() {
            return Vec::new();
        }
        let mine: Vec<Tp> = self
            .refetch_due
            .iter()
            .filter(|tp| self.assigned.get(*tp) == Some(&lane))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for tp in mine {
            self.refetch_due.remove(&tp);
            if let Some(at) = self.offsets.get_mut(&tp).and_then(|o| o.take_refetch()) {
                out.push((tp, at));
            }
        }
        out
    }

    /// A seek asked for by [`State::take_refetches`] failed: it is asked for again.
    pub fn refetch_failed(&mut self, tp: &Tp, from: i64) {
        if let Some(offsets) = self.offsets.get_mut(tp) {
            offsets.refetch_failed(from);
            self.refetch_due.insert(tp.clone());
        }
    }

    /// Partitions of `lane`, not paused, that gave no record for `idle_ms`.
    pub fn idle_partitions(&self, lane: Lane, now_ms: i64, idle_ms: i64) -> Vec<Tp> {
        self.assigned
            .iter()
            .filter(|(tp, l)| **l == lane && !self.paused.contains(*tp))
            .filter(|(tp, _)| {
                self.last_read
                    .get(*tp)
                    .is_none_or(|t| now_ms - t >= idle_ms)
            })
            .filter(|(tp, _)| self.offsets.contains_key(*tp))
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// `tp` has been idle, and the broker's log end is `log_end`: where to seek, if records
    /// were skipped (see [`PartitionOffsets::idle`]).
    pub fn idle(&mut self, tp: &Tp, log_end: i64) -> Option<i64> {
        self.offsets.get_mut(tp)?.idle(log_end)
    }
}
