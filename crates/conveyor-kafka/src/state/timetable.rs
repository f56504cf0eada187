//! The schedule lane's records: delayed jobs waiting in the schedule topic for their time.
//!
//! A schedule partition's records are due in any order (a job enqueued now for next week sits
//! before one enqueued a second later for in a minute), so they wait in a timetable ordered by
//! due time, not in offset order as a retry tier's do. When due, a job is moved to its queue's
//! topic (`Session`'s poll loop of the schedule lane produces it there) and its schedule
//! record is done; the queue's workers run it like any other job.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use conveyor_core::JobId;

use super::{Pending, State, Tp};

/// Delayed jobs read from the schedule topic, by due time.
#[derive(Debug, Default)]
pub(crate) struct Timetable {
    /// (due ms, partition, offset) -> the record.
    by_due: BTreeMap<(i64, Tp, i64), Pending>,
    /// Where each job waits: one record per job id (a producer's retry, or a record written
    /// twice around a crash, is done at once).
    by_id: HashMap<JobId, (i64, Tp, i64)>,
}

impl Timetable {
    /// True when no job waits.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_due.is_empty()
    }

    /// The earliest due time, if any.
    pub fn next_due(&self) -> Option<i64> {
        self.by_due.keys().next().map(|(due, _, _)| *due)
    }

    /// Takes a record in; false when its job already waits here (the record is a copy).
    fn insert(&mut self, pending: Pending) -> bool {
        if self.by_id.contains_key(&pending.envelope.id) {
            return false;
        }
        let due = pending.envelope.not_before.unwrap_or(0);
        let slot = (due, pending.tp.clone(), pending.offset);
        self.by_id.insert(pending.envelope.id, slot.clone());
        self.by_due.insert(slot, pending);
        true
    }

    /// Removes and returns the jobs due at `now_ms`.
    fn take_due(&mut self, now_ms: i64) -> Vec<Pending> {
        // Every key due later is at least this one (the smallest partition and offset).
        let first_later = (
            now_ms.saturating_add(1),
            (Arc::<str>::from(""), i32::MIN),
            i64::MIN,
        );
        let later = self.by_due.split_off(&first_later);
        let due = std::mem::replace(&mut self.by_due, later);
        due.into_values()
            .inspect(|p| {
                self.by_id.remove(&p.envelope.id);
            })
            .collect()
    }

    /// Forgets the jobs of revoked partitions (their new owner reads them again).
    fn revoke(&mut self, gone: &dyn Fn(&Tp) -> bool) {
        self.by_due.retain(|(_, tp, _), _| !gone(tp));
        self.by_id.retain(|_, (_, tp, _)| !gone(tp));
    }
}

impl State {
    /// Takes in a record of the schedule topic: it waits for its due time in the timetable.
    /// A second record of a job already waiting is done at once.
    pub(super) fn schedule(&mut self, pending: Pending) {
        let (tp, offset) = (pending.tp.clone(), pending.offset);
        if !self.timetable.insert(pending) {
            self.finish_offset(&tp, offset);
        }
    }

    /// The delayed jobs due at `now_ms`, taken out of the timetable to be moved to their
    /// queues' topics; then [`State::scheduled_moved`] or [`State::reschedule`] for each.
    pub fn take_due_scheduled(&mut self, now_ms: i64) -> Vec<Pending> {
        self.timetable.take_due(now_ms)
    }

    /// The earliest due time of the delayed jobs waiting here.
    pub fn next_scheduled(&self) -> Option<i64> {
        self.timetable.next_due()
    }

    /// A due job is in its queue's topic now: its schedule record is done.
    pub fn scheduled_moved(&mut self, pending: &Pending) {
        self.finish_offset(&pending.tp, pending.offset);
    }

    /// A due job could not be moved (the broker refused): it waits again, due at once, unless
    /// its partition was revoked meanwhile (the new owner moves it).
    pub fn reschedule(&mut self, pending: Pending) {
        if self.is_assigned(&pending.tp) {
            self.timetable.insert(pending);
        }
    }

    /// See [`Timetable::revoke`].
    pub(super) fn revoke_scheduled(&mut self, gone: &dyn Fn(&Tp) -> bool) {
        self.timetable.revoke(gone);
    }
}

#[cfg(test)]
mod tests {
    use conveyor_core::NewJob;
    use serde_json::json;

    use super::*;
    use crate::state::{Accepted, Lane};
    use crate::Envelope;

    fn schedule_tp() -> Tp {
        (Arc::from("conveyor.scheduled"), 0)
    }

    fn delayed(offset: i64, due: i64) -> Pending {
        let mut envelope = Envelope::from_new_job(&NewJob::new("noop", json!({})), "{}".into(), 0);
        envelope.not_before = Some(due);
        Pending {
            tp: schedule_tp(),
            offset,
            envelope,
        }
    }

    fn scheduling_state() -> State {
        let mut state = State::default();
        state.assign(&[schedule_tp()], Lane::Schedule);
        state
    }

    #[test]
    fn jobs_come_due_in_time_order_whatever_their_offsets() {
        let mut s = scheduling_state();
        for (offset, due) in [(0, 900), (1, 100), (2, 500)] {
            assert_eq!(s.accept(delayed(offset, due), 0), Accepted::Scheduled);
        }
        assert_eq!(s.next_scheduled(), Some(100));
        assert!(s.take_due_scheduled(99).is_empty(), "nothing early");
        let due: Vec<i64> = s.take_due_scheduled(500).iter().map(|p| p.offset).collect();
        assert_eq!(due, [1, 2]);
        assert_eq!(s.next_scheduled(), Some(900));
        assert!(
            s.take(10).is_empty(),
            "a delayed job is moved, never run from here"
        );
    }

    #[test]
    fn the_commit_passes_moved_jobs_and_stops_at_one_waiting() {
        let mut s = scheduling_state();
        s.accept(delayed(0, 900), 0);
        s.accept(delayed(1, 100), 0);
        s.accept(delayed(2, 100), 0);
        for moved in s.take_due_scheduled(100) {
            s.scheduled_moved(&moved);
        }
        assert_eq!(
            s.commits(),
            [(schedule_tp(), 0)],
            "held by the job due at 900"
        );
        for moved in s.take_due_scheduled(900) {
            s.scheduled_moved(&moved);
        }
        assert_eq!(s.commits(), [(schedule_tp(), 3)]);
    }

    #[test]
    fn a_second_record_of_a_waiting_job_is_done_at_once() {
        let mut s = scheduling_state();
        let first = delayed(0, 500);
        let mut copy = delayed(1, 500);
        copy.envelope.id = first.envelope.id;
        s.accept(first, 0);
        s.accept(copy, 0);
        let due = s.take_due_scheduled(500);
        assert_eq!(due.len(), 1, "one move per job");
        s.scheduled_moved(&due[0]);
        assert_eq!(s.commits(), [(schedule_tp(), 2)]);
    }

    #[test]
    fn a_job_whose_move_failed_waits_again_unless_its_partition_went() {
        let mut s = scheduling_state();
        s.accept(delayed(0, 100), 0);
        let due = s.take_due_scheduled(100).remove(0);
        s.reschedule(due);
        assert_eq!(s.next_scheduled(), Some(100));
        let due = s.take_due_scheduled(100).remove(0);
        s.revoke(&[schedule_tp()]);
        s.reschedule(due);
        assert!(s.timetable.is_empty(), "the new owner moves it");
    }
}
