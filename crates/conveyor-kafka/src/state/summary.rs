//! A one-line account of what a session holds, logged now and then, so a worker that runs
//! nothing can be asked why (a key held busy, a full buffer, a partition waiting for a gap).

use std::fmt::Write;

use super::{Lane, State};

impl State {
    /// What `lane` holds: per partition the position it would commit, one past the last
    /// offset given, and its unfinished records; then the session's jobs by where they wait.
    pub fn summary(&self, lane: Lane) -> String {
        let mut out = String::new();
        let mut partitions: Vec<_> = self
            .assigned
            .iter()
            .filter(|(_, l)| **l == lane)
            .map(|(tp, _)| tp)
            .collect();
        partitions.sort();
        for tp in partitions {
            let offsets = self.offsets.get(tp);
            let _ = write!(
                out,
                "{}/{}: commit {:?} next {:?} unfinished {}{}; ",
                tp.0,
                tp.1,
                offsets.and_then(|o| o.committable()),
                offsets.and_then(|o| o.next_given()),
                offsets.map_or(0, |o| o.in_flight()),
                if self.paused.contains(tp) {
                    " paused"
                } else {
                    ""
                },
            );
        }
        let _ = write!(
            out,
            "ready {} leased {} orphans {} waiting {} busy keys {} held {} delayed {} scheduled {} live {}",
            self.ready.values().map(|f| f.len()).sum::<usize>(),
            self.leased.len(),
            self.orphans.len(),
            self.waiting.values().map(|w| w.len()).sum::<usize>(),
            self.busy_keys.len(),
            self.held.len(),
            self.delayed.values().map(|d| d.len()).sum::<usize>(),
            self.timetable.len(),
            self.live.len(),
        );
        out
    }
}
