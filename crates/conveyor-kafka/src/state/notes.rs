//! Attempt notes in the session's bookkeeping (see `src/attempts.rs`): a queue partition's
//! keyed records wait until the notes written since its committed position are read, and a
//! keyed record with a note goes on from it: its attempt count, and its retry time, waited
//! for with its key busy, as the worker that wrote the note would have.

use std::collections::HashMap;

use super::{Accepted, Pending, State, Tp};
use crate::attempts::Note;

/// The attempt notes of one assigned queue partition.
#[derive(Debug)]
pub(super) enum Notes {
    /// Being read (read number `generation`); its keyed records wait in `stash`, in offset
    /// order.
    Loading {
        generation: u64,
        stash: Vec<Pending>,
    },
    /// Read: the notes not used yet, by offset.
    Ready(HashMap<i64, Note>),
}

impl State {
    /// `tp` was assigned to a lane that runs jobs: its keyed records wait until its notes are
    /// read. Returns the number of this read.
    pub fn load_notes(&mut self, tp: &Tp) -> u64 {
        self.notes_generation += 1;
        let generation = self.notes_generation;
        self.notes.insert(
            tp.clone(),
            Notes::Loading {
                generation,
                stash: Vec::new(),
            },
        );
        generation
    }

    /// True while read number `generation` of `tp`'s notes is still awaited.
    pub fn wants_notes(&self, tp: &Tp, generation: u64) -> bool {
        matches!(self.notes.get(tp), Some(Notes::Loading { generation: g, .. }) if *g == generation)
    }

    /// Read number `generation` of `tp`'s notes is done: the records that waited for it are
    /// taken in. Returns true when one of them is ready to run.
    pub fn notes_read(
        &mut self,
        tp: &Tp,
        generation: u64,
        notes: HashMap<i64, Note>,
        now_ms: i64,
    ) -> bool {
        if !self.wants_notes(tp, generation) {
            return false; // revoked meanwhile, or read again since
        }
        let Some(Notes::Loading { stash, .. }) = self.notes.insert(tp.clone(), Notes::Ready(notes))
        else {
            return false;
        };
        let mut ready = false;
        for pending in stash {
            ready |= self.take_in(pending, now_ms) == Accepted::Ready;
        }
        ready
    }

    /// Keeps a keyed record of a partition whose notes are being read until they are; gives
    /// any other record back.
    pub(super) fn stash_until_noted(&mut self, pending: Pending) -> Option<Pending> {
        if pending.envelope.ordering_key.is_none() {
            return Some(pending);
        }
        match self.notes.get_mut(&pending.tp) {
            Some(Notes::Loading { stash, .. }) => {
                stash.push(pending);
                None
            }
            _ => Some(pending),
        }
    }

    /// A keyed record with a note goes on from it: the attempts already made count, and a
    /// retry not due yet is held until then with its key busy (`Err` says how it was taken
    /// in). Any other record is given back as it is.
    pub(super) fn go_on_from_note(
        &mut self,
        mut pending: Pending,
        now_ms: i64,
    ) -> Result<Pending, Accepted> {
        let Some(key) = pending.envelope.ordering_key.clone() else {
            return Ok(pending);
        };
        let Some(Notes::Ready(notes)) = self.notes.get_mut(&pending.tp) else {
            return Ok(pending);
        };
        let note = match notes.remove(&pending.offset) {
            Some(note) if note.id == pending.envelope.id => note,
            _ => return Ok(pending),
        };
        if note.attempt <= pending.envelope.attempt {
            return Ok(pending);
        }
        pending.envelope.attempt = note.attempt;
        pending.envelope.not_before = Some(note.due_ms);
        if note.due_ms <= now_ms {
            return Ok(pending);
        }
        if self.busy_keys.insert(key.clone()) {
            self.held.push(pending);
            return Err(Accepted::Delayed {
                due_ms: note.due_ms,
            });
        }
        // An earlier job of the key runs again here (it finished, but its commit did not
        // reach the broker): this one goes after it, its attempts counted.
        self.waiting.entry(key).or_default().push_back(pending);
        Err(Accepted::Waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Lane;
    use crate::Envelope;
    use conveyor_core::NewJob;

    fn tp() -> Tp {
        ("conveyor.queue.default".into(), 0)
    }

    fn keyed(offset: i64, key: &str) -> Pending {
        let job = NewJob::new("fail", serde_json::json!({})).ordering_key(key);
        let envelope = Envelope::from_new_job(&job, "{}".into(), 0);
        Pending {
            tp: tp(),
            offset,
            envelope,
        }
    }

    #[test]
    fn a_keyed_record_waits_for_the_notes_and_goes_on_from_its_note() {
        let mut s = State::default();
        s.assign(&[tp()], Lane::Fresh);
        let generation = s.load_notes(&tp());
        let first = keyed(0, "acct");
        let behind = keyed(1, "acct");
        let notes = HashMap::from([(0, Note::of_attempt(&first, 2, 5_000, "failed"))]);
        assert_eq!(s.accept(first.clone(), 1_000), Accepted::Waiting);
        assert_eq!(s.accept(behind.clone(), 1_000), Accepted::Waiting);
        assert!(
            s.take(10).is_empty(),
            "nothing runs before the notes are read"
        );
        assert!(!s.notes_read(&tp(), generation, notes, 1_000));
        assert!(
            s.take(10).is_empty(),
            "the retry is not due, its key is busy"
        );
        assert_eq!(s.release_due(5_000), None);
        let taken = s.take(10);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].envelope.id, first.envelope.id);
        assert_eq!(
            taken[0].envelope.attempt, 2,
            "two attempts were made before"
        );
    }

    #[test]
    fn unkeyed_records_do_not_wait_for_the_notes_and_a_late_read_is_ignored() {
        let mut s = State::default();
        s.assign(&[tp()], Lane::Fresh);
        let stale = s.load_notes(&tp());
        let generation = s.load_notes(&tp());
        let mut plain = keyed(0, "x");
        plain.envelope.ordering_key = None;
        assert_eq!(s.accept(plain, 0), Accepted::Ready);
        assert_eq!(s.accept(keyed(1, "k"), 0), Accepted::Waiting);
        assert!(!s.notes_read(&tp(), stale, HashMap::new(), 0));
        assert!(s.notes_read(&tp(), generation, HashMap::new(), 0));
        assert_eq!(s.take(10).len(), 2);
    }
}
