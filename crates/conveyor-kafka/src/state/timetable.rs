//! The schedule lane's records: delayed jobs waiting in the schedule topic for their time.
//!
//! A schedule partition's records are due in any order (a job enqueued now for next week sits
//! before one enqueued a second later for in a minute), so they wait in a timetable ordered by
//! due time, not in offset order as a retry tier's do. When due, a job is moved to its queue's
//! topic and a `moved` marker is written after it in its schedule partition; the queue's
//! workers run it like any other job.
//!
//! The partition's commit stops at its oldest waiting job, so a new owner reads everything
//! after it again: the markers tell it which of those jobs were moved already, which is why
//! nothing is moved before the owner has read its partition to the end (it is *caught up*).
//! A job due far ahead that holds the commit while many records pile up behind it is
//! *carried*: written again at the partition's end, its old record then done, so that what a
//! new owner reads again stays within about twice the jobs waiting (see [`State::take_carries`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use conveyor_core::JobId;

use super::{Lane, Pending, State, Tp};

/// Records the commit may trail the partition's end by, beyond twice its waiting jobs, before
/// the jobs due far ahead that hold it are carried.
const CARRY_SLACK: i64 = 1000;

/// A job due within this long (ms) is never carried: it holds the commit only that long.
const CARRY_AHEAD_MS: i64 = 60_000;

/// Delayed jobs read from the schedule topic, by due time.
#[derive(Debug, Default)]
pub(crate) struct Timetable {
    /// (due ms, partition, offset) -> the record.
    by_due: BTreeMap<(i64, Tp, i64), Pending>,
    /// Where each job waits: one record per job id (a producer's retry, or a record written
    /// twice around a crash, is done at once).
    by_id: HashMap<JobId, (i64, Tp, i64)>,
    /// Per partition, the waiting jobs' offsets with their due times.
    by_offset: HashMap<Tp, BTreeMap<i64, i64>>,
    /// Partitions read to their end since they were assigned: their due jobs may be moved.
    caught_up: HashSet<Tp>,
}

impl Timetable {
    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.by_due.len()
    }

    /// The earliest due time of a partition that is caught up, if any.
    pub fn next_due(&self) -> Option<i64> {
        self.by_due
            .keys()
            .find(|(_, tp, _)| self.caught_up.contains(tp))
            .map(|(due, _, _)| *due)
    }

    /// Takes a record in; false when its job already waits here (the record is a copy).
    fn insert(&mut self, pending: Pending) -> bool {
        if self.by_id.contains_key(&pending.envelope.id) {
            return false;
        }
        let due = pending.envelope.not_before.unwrap_or(0);
        let slot = (due, pending.tp.clone(), pending.offset);
        self.by_id.insert(pending.envelope.id, slot.clone());
        self.by_offset
            .entry(pending.tp.clone())
            .or_default()
            .insert(pending.offset, due);
        self.by_due.insert(slot, pending);
        true
    }

    /// Removes the job waiting in `slot`.
    fn remove(&mut self, slot: &(i64, Tp, i64)) -> Option<Pending> {
        let pending = self.by_due.remove(slot)?;
        self.by_id.remove(&pending.envelope.id);
        if let Some(offsets) = self.by_offset.get_mut(&slot.1) {
            offsets.remove(&slot.2);
        }
        Some(pending)
    }

    /// Removes the job waiting at `offset` of `tp`.
    pub(super) fn remove_at(&mut self, tp: &Tp, offset: i64) -> Option<Pending> {
        let due = *self.by_offset.get(tp)?.get(&offset)?;
        self.remove(&(due, tp.clone(), offset))
    }

    /// Removes job `id`, wherever it waits.
    fn remove_id(&mut self, id: JobId) -> Option<Pending> {
        let slot = self.by_id.get(&id)?.clone();
        self.remove(&slot)
    }

    /// Removes and returns the jobs of caught-up partitions due at `now_ms`.
    fn take_due(&mut self, now_ms: i64) -> Vec<Pending> {
        let due: Vec<(i64, Tp, i64)> = self
            .by_due
            .keys()
            .take_while(|(due, _, _)| *due <= now_ms)
            .filter(|(_, tp, _)| self.caught_up.contains(tp))
            .cloned()
            .collect();
        due.iter().filter_map(|slot| self.remove(slot)).collect()
    }

    /// Forgets the jobs of revoked partitions (their new owner reads them again).
    fn revoke(&mut self, gone: &dyn Fn(&Tp) -> bool) {
        self.by_due.retain(|(_, tp, _), _| !gone(tp));
        self.by_id.retain(|_, (_, tp, _)| !gone(tp));
        self.by_offset.retain(|tp, _| !gone(tp));
        self.caught_up.retain(|tp| !gone(tp));
    }
}

/// A schedule topic marker as read: what became of job `id`, with its idempotency key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marker<'a> {
    pub id: JobId,
    pub key: Option<&'a str>,
    pub what: &'a str,
}

impl State {
    /// Takes in a record of the schedule topic: it waits for its due time in the timetable.
    /// A second record of a job already waiting is done at once.
    /// A keyed job's record that its idempotency key rules out is done at once too.
    pub(super) fn schedule(&mut self, pending: Pending) {
        let (tp, offset) = (pending.tp.clone(), pending.offset);
        if !self.judge(&pending) {
            return;
        }
        if !self.timetable.insert(pending) {
            self.finish_offset(&tp, offset);
        }
    }

    /// Takes in a marker of the schedule topic: delayed job `id` was moved or dropped as a
    /// duplicate (by an earlier owner of the partition, or by this one), so it does not wait
    /// any more; a keyed job's marker also goes into the key index. The marker's own offset is
    /// done at once. (It counts as a record read at `now_ms`: a partition giving markers is
    /// not idle.)
    pub fn schedule_marker(&mut self, tp: &Tp, offset: i64, marker: Marker<'_>, now_ms: i64) {
        let id = marker.id;
        self.last_read.insert(tp.clone(), now_ms);
        self.skip(tp, offset);
        if let Some(key) = marker.key {
            self.mark_key(tp, offset, id, key, marker.what);
        }
        if let Some(moved) = self.timetable.remove_id(id) {
            self.finish_offset(&moved.tp, moved.offset);
        }
    }

    /// The schedule lane's partitions not read to their end yet, with where their reading
    /// stands (one past the last offset given, or the committed position; `None`: neither
    /// yet).
    pub fn catching_up(&self) -> Vec<(Tp, Option<i64>)> {
        self.assigned
            .iter()
            .filter(|(tp, lane)| {
                **lane == Lane::Schedule && !self.timetable.caught_up.contains(*tp)
            })
            .map(|(tp, _)| {
                (
                    tp.clone(),
                    self.offsets.get(tp).and_then(|o| o.next_given()),
                )
            })
            .collect()
    }

    /// The schedule partition `tp` was read to its end: its due jobs may be moved now, once its
    /// key index is rebuilt.
    pub fn caught_up(&mut self, tp: &Tp) {
        if self.is_assigned(tp) && self.keys_ready(tp) {
            self.timetable.caught_up.insert(tp.clone());
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
        self.key_moved(pending);
        self.finish_offset(&pending.tp, pending.offset);
    }

    /// A job due far ahead was written again at its partition's end: this record is done (the
    /// new one waits).
    pub fn scheduled_carried(&mut self, pending: &Pending) {
        self.finish_offset(&pending.tp, pending.offset);
    }

    /// A job could not be moved or carried (the broker refused): it waits again, unless its
    /// partition was revoked meanwhile (the new owner takes it from there).
    pub fn reschedule(&mut self, pending: Pending) {
        if self.is_assigned(&pending.tp) {
            self.timetable.insert(pending);
        }
    }

    /// Jobs to carry to their partition's end, taken out of the timetable; then
    /// [`State::scheduled_carried`] or [`State::reschedule`] for each.
    ///
    /// A partition whose commit trails its end by more than twice its waiting jobs plus
    /// [`CARRY_SLACK`] carries its jobs due more than [`CARRY_AHEAD_MS`] ahead that sit
    /// before its last `CARRY_SLACK / 2` records. The next carry then comes only after about
    /// as many new records as jobs waiting: at most one carry per record written, on average,
    /// and a new owner reads at most about twice the waiting jobs plus the slack again.
    pub fn take_carries(&mut self, now_ms: i64) -> Vec<Pending> {
        let mut carry = Vec::new();
        for (tp, waiting) in &self.timetable.by_offset {
            let (Some((&oldest, _)), Some(next)) = (
                waiting.first_key_value(),
                self.offsets.get(tp).and_then(|o| o.next_given()),
            ) else {
                continue;
            };
            let n = waiting.len() as i64;
            if next - oldest <= 2 * n + CARRY_SLACK {
                continue;
            }
            let before = next - CARRY_SLACK / 2;
            carry.extend(
                waiting
                    .range(..before)
                    .filter(|(_, due)| **due > now_ms + CARRY_AHEAD_MS)
                    .map(|(offset, due)| (*due, tp.clone(), *offset)),
            );
        }
        carry
            .iter()
            .filter_map(|slot| self.timetable.remove(slot))
            .collect()
    }

    /// See [`Timetable::revoke`].
    pub(super) fn revoke_scheduled(&mut self, gone: &dyn Fn(&Tp) -> bool) {
        self.timetable.revoke(gone);
        self.revoke_keys(gone);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use conveyor_core::NewJob;
    use serde_json::json;

    use super::*;
    use crate::state::Accepted;
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

    /// A state that owns the schedule partition and has read it to its end.
    fn scheduling_state() -> State {
        let mut state = State::default();
        state.assign(&[schedule_tp()], Lane::Schedule);
        state.caught_up(&schedule_tp());
        state
    }

    #[test]
    fn nothing_is_moved_before_the_partition_was_read_to_its_end() {
        let mut s = State::default();
        s.assign(&[schedule_tp()], Lane::Schedule);
        s.accept(delayed(0, 100), 0);
        assert!(s.take_due_scheduled(500).is_empty(), "a marker may follow");
        assert_eq!(s.next_scheduled(), None);
        s.caught_up(&schedule_tp());
        assert_eq!(s.take_due_scheduled(500).len(), 1);
    }

    #[test]
    fn a_moved_marker_ends_the_wait_of_its_job() {
        let mut s = scheduling_state();
        let job = delayed(0, 100);
        let id = job.envelope.id;
        s.accept(job, 0);
        s.accept(delayed(1, 900), 0);
        let marker = Marker {
            id,
            key: None,
            what: "moved",
        };
        s.schedule_marker(&schedule_tp(), 2, marker, 0);
        let due: Vec<i64> = s
            .take_due_scheduled(1000)
            .iter()
            .map(|p| p.offset)
            .collect();
        assert_eq!(due, [1], "the job moved before is not moved again");
    }

    #[test]
    fn a_job_due_far_ahead_is_carried_once_records_pile_up_behind_it() {
        let mut s = scheduling_state();
        let day = 24 * 3600 * 1000;
        s.accept(delayed(0, day), 0);
        s.accept(delayed(1, 30_000), 0); // due soon: never carried
        assert!(s.take_carries(0).is_empty(), "nothing behind them yet");
        for offset in 2..2000 {
            s.accept(delayed(offset, 10), 0);
        }
        for moved in s.take_due_scheduled(10) {
            s.scheduled_moved(&moved);
        }
        let carried: Vec<i64> = s.take_carries(0).iter().map(|p| p.offset).collect();
        assert_eq!(carried, [0]);
        assert!(s.take_carries(0).is_empty(), "carried once");
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
        assert!(s.timetable.by_due.is_empty(), "the new owner moves it");
    }
}
