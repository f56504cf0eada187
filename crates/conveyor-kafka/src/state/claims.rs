//! The schedule lane's side of idempotency keys (see `src/keys`): per owned schedule
//! partition, the index of the keys' winners. Only winners are moved to their queues; a
//! duplicate claim (or a copy of a job moved already) is done at once, and a `duplicate`
//! marker is written after it so a later owner drops it too.
//!
//! On assignment the index is rebuilt from the records written within the window before the
//! partition's committed position (read beside the lane, see `intake/claims.rs`); claims the
//! lane reads meanwhile wait in the timetable and are judged, in offset order, once the index
//! is there. Nothing is moved from the partition before that (it is not caught up).

use conveyor_core::JobId;

use super::{Pending, State, Tp};
use crate::keys::{Claim, Entry, KeyIndex, Verdict, MOVED};

/// A schedule partition's key index, or what its lane read while it is rebuilt.
#[derive(Debug)]
pub(crate) enum Keys {
    /// Being rebuilt by the reading numbered `generation`; the lane's entries meanwhile, in
    /// offset order.
    Rebuilding {
        generation: u64,
        read: Vec<(i64, Entry)>,
    },
    /// Rebuilt: entries are judged as they are read.
    Ready(KeyIndex),
}

/// A claim dropped here: its `duplicate` marker is to be written into its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub tp: Tp,
    pub id: JobId,
    pub key: String,
}

/// The claim a schedule record's job makes, if it has an idempotency key.
fn claim_of(pending: &Pending) -> Option<Claim> {
    let envelope = &pending.envelope;
    Some(Claim {
        key: envelope.idempotency_key.clone()?,
        id: envelope.id,
        at: envelope.enqueued_at,
    })
}

impl State {
    /// The schedule partition `tp` was assigned: its index is to be rebuilt. Returns the
    /// number of this rebuild, which [`State::keys_rebuilt`] must bring back.
    pub fn rebuild_keys(&mut self, tp: &Tp) -> u64 {
        self.key_generation += 1;
        let generation = self.key_generation;
        self.keys.insert(
            tp.clone(),
            Keys::Rebuilding {
                generation,
                read: Vec::new(),
            },
        );
        generation
    }

    /// True when `tp`'s key index is there (or it has none to build): its due jobs may move.
    pub(super) fn keys_ready(&self, tp: &Tp) -> bool {
        !matches!(self.keys.get(tp), Some(Keys::Rebuilding { .. }))
    }

    /// True while the rebuild numbered `generation` of `tp` is still wanted.
    pub fn wants_keys(&self, tp: &Tp, generation: u64) -> bool {
        matches!(self.keys.get(tp), Some(Keys::Rebuilding { generation: g, .. }) if *g == generation)
    }

    /// The rebuild numbered `generation` of `tp`'s index is done: the entries the lane read
    /// meanwhile are judged in offset order, and the index is used from now on. A rebuild of
    /// a partition revoked (or assigned again) meanwhile is dropped.
    pub fn keys_rebuilt(&mut self, tp: &Tp, generation: u64, mut index: KeyIndex) {
        if !self.wants_keys(tp, generation) {
            return;
        }
        let Some(Keys::Rebuilding { read, .. }) = self.keys.remove(tp) else {
            return;
        };
        for (offset, entry) in read {
            let claim = match &entry {
                Entry::Claim(claim) => Some(claim.clone()),
                Entry::Marker { .. } => None,
            };
            let verdict = index.observe(entry);
            if let (Some(claim), Some(verdict)) = (claim, verdict) {
                if !runs(verdict) && self.timetable.remove_at(tp, offset).is_some() {
                    self.drop_claim(tp, offset, claim);
                }
            }
        }
        tracing::debug!(topic = %tp.0, partition = tp.1, keys = index.len(), "idempotency keys of a schedule partition rebuilt");
        self.keys.insert(tp.clone(), Keys::Ready(index));
    }

    /// Judges a keyed schedule record as it is read: true when it goes into the timetable
    /// (it wins its key, or it is a copy of the winner not moved yet, or the index is not
    /// rebuilt yet), false when it was dropped (its offset is done).
    pub(super) fn judge(&mut self, pending: &Pending) -> bool {
        let Some(claim) = claim_of(pending) else {
            return true;
        };
        let verdict = match self.keys.get_mut(&pending.tp) {
            Some(Keys::Ready(index)) => index.observe(Entry::Claim(claim.clone())),
            Some(Keys::Rebuilding { read, .. }) => {
                read.push((pending.offset, Entry::Claim(claim)));
                return true;
            }
            None => return true,
        };
        match verdict {
            Some(verdict) if !runs(verdict) => {
                self.drop_claim(&pending.tp, pending.offset, claim);
                false
            }
            _ => true,
        }
    }

    /// Takes a keyed marker into `tp`'s index.
    pub(super) fn mark_key(&mut self, tp: &Tp, offset: i64, id: JobId, key: &str, what: &str) {
        let entry = Entry::Marker {
            key: key.to_string(),
            id,
            what: what.to_string(),
        };
        match self.keys.get_mut(tp) {
            Some(Keys::Ready(index)) => {
                index.observe(entry);
            }
            Some(Keys::Rebuilding { read, .. }) => read.push((offset, entry)),
            None => {}
        }
    }

    /// A keyed job was moved to its queue by this worker: a copy read before its marker comes
    /// back must not move it again.
    pub(super) fn key_moved(&mut self, pending: &Pending) {
        if let Some(key) = &pending.envelope.idempotency_key {
            let (tp, id) = (pending.tp.clone(), pending.envelope.id);
            self.mark_key(&tp, pending.offset, id, key, MOVED);
        }
    }

    fn drop_claim(&mut self, tp: &Tp, offset: i64, claim: Claim) {
        tracing::debug!(job = %claim.id, key = %claim.key, topic = %tp.0, partition = tp.1, offset, "idempotency key names another job: dropped");
        self.finish_offset(tp, offset);
        self.dropped.push(Dropped {
            tp: tp.clone(),
            id: claim.id,
            key: claim.key,
        });
    }

    /// Claims dropped since the last call: their `duplicate` markers are to be written.
    pub fn take_dropped(&mut self) -> Vec<Dropped> {
        std::mem::take(&mut self.dropped)
    }

    /// Forgets the key indexes of revoked partitions.
    pub(super) fn revoke_keys(&mut self, gone: &dyn Fn(&Tp) -> bool) {
        self.keys.retain(|tp, _| !gone(tp));
        self.dropped.retain(|d| !gone(&d.tp));
    }
}

/// True when a claim with this verdict runs (it stays in the timetable).
fn runs(verdict: Verdict) -> bool {
    matches!(verdict, Verdict::Wins | Verdict::Copy { moved: false })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use conveyor_core::NewJob;
    use serde_json::json;

    use super::*;
    use crate::state::Lane;
    use crate::Envelope;

    fn tp() -> Tp {
        (Arc::from("conveyor.scheduled"), 0)
    }

    fn claim(offset: i64, key: &str) -> Pending {
        let job = NewJob::new("noop", json!({})).idempotency_key(key);
        Pending {
            tp: tp(),
            offset,
            envelope: Envelope::from_new_job(&job, "{}".into(), 1000),
        }
    }

    /// Owns the schedule partition, its index rebuilt (empty) and its reading at the end.
    fn owner() -> State {
        let mut s = State::default();
        s.assign(&[tp()], Lane::Schedule);
        let generation = s.rebuild_keys(&tp());
        s.keys_rebuilt(&tp(), generation, KeyIndex::new(60_000));
        s.caught_up(&tp());
        s
    }

    fn moved_ids(s: &mut State) -> Vec<JobId> {
        let due = s.take_due_scheduled(i64::MAX);
        for p in &due {
            s.scheduled_moved(p);
        }
        due.iter().map(|p| p.envelope.id).collect()
    }

    #[test]
    fn only_the_first_claim_of_a_key_is_moved_and_the_rest_are_marked() {
        let mut s = owner();
        let (first, second) = (claim(0, "k"), claim(1, "k"));
        let (winner, loser) = (first.envelope.id, second.envelope.id);
        s.accept(first, 0);
        s.accept(second, 0);
        assert_eq!(moved_ids(&mut s), [winner]);
        let dropped = s.take_dropped();
        assert_eq!(dropped.len(), 1);
        assert_eq!((dropped[0].id, dropped[0].key.as_str()), (loser, "k"));
        assert_eq!(s.commits(), [(tp(), 2)], "both records are done");
    }

    #[test]
    fn claims_read_while_the_index_is_rebuilt_are_judged_once_it_is_there() {
        let mut s = State::default();
        s.assign(&[tp()], Lane::Schedule);
        let generation = s.rebuild_keys(&tp());
        let earlier = claim(0, "k"); // before the committed position: read by the rebuild
        let later = claim(5, "k");
        let loser = later.envelope.id;
        s.start_at(&tp(), 5);
        s.accept(later, 0);
        s.caught_up(&tp());
        assert!(
            s.take_due_scheduled(i64::MAX).is_empty(),
            "nothing moves before the index"
        );
        let mut index = KeyIndex::new(60_000);
        index.observe(Entry::Claim(claim_of(&earlier).expect("keyed")));
        s.keys_rebuilt(&tp(), generation, index);
        s.caught_up(&tp());
        assert!(
            moved_ids(&mut s).is_empty(),
            "the later claim is a duplicate"
        );
        assert_eq!(s.take_dropped()[0].id, loser);
        assert_eq!(s.commits(), [(tp(), 6)]);
    }

    #[test]
    fn a_copy_of_a_moved_job_is_dropped_but_a_carried_one_waits() {
        let mut s = owner();
        let first = claim(0, "k");
        let mut copy = claim(1, "k");
        copy.envelope = first.envelope.clone();
        let mut carried = claim(2, "other");
        s.accept(first, 0);
        assert_eq!(moved_ids(&mut s).len(), 1);
        s.accept(copy, 0);
        assert!(moved_ids(&mut s).is_empty(), "a copy read after the move");
        carried.envelope.not_before = Some(i64::MAX - 1);
        let id = carried.envelope.id;
        s.accept(carried.clone(), 0);
        let carry = s.timetable.remove_at(&tp(), 2).expect("waits");
        s.scheduled_carried(&carry);
        carried.offset = 3;
        s.accept(carried, 0);
        assert_eq!(
            s.next_scheduled(),
            Some(i64::MAX - 1),
            "the carried record waits"
        );
        assert!(s.take_dropped().iter().all(|d| d.id != id));
    }

    #[test]
    fn a_late_rebuild_of_a_revoked_partition_is_ignored() {
        let mut s = State::default();
        s.assign(&[tp()], Lane::Schedule);
        let generation = s.rebuild_keys(&tp());
        s.revoke(&[tp()]);
        assert!(!s.wants_keys(&tp(), generation));
        s.keys_rebuilt(&tp(), generation, KeyIndex::new(1));
        assert!(s.keys.is_empty());
    }
}
