//! One job id, one run: records of a job already in the session (a producer's retry, the same
//! id on two topics, a range read again) wait for its record and are finished with it; a job's
//! later attempt read meanwhile still runs; finished ids are remembered for a while.

use std::collections::{HashMap, VecDeque};

use conveyor_core::JobId;

use super::{Pending, State, Twins};
use crate::Envelope;

/// How many finished job ids a session remembers to tell a late copy of a record from a new
/// job: a record delivered again after its job finished (a producer's retry that arrives
/// late, a re-fetched range) is skipped while its id is among the last this many finished.
const REMEMBERED: usize = 65_536;

/// Job ids that finished lately, each with the attempt below which its records are done:
/// every record of a finished job, or those before its retry-tier record for a job that went
/// there (the tier record itself still runs).
#[derive(Default)]
pub(super) struct Finished {
    below: HashMap<JobId, u32>,
    order: VecDeque<JobId>,
}

impl Finished {
    /// Remembers that `id`'s records of attempts below `below` are done.
    pub(super) fn remember(&mut self, id: JobId, below: u32) {
        match self.below.get_mut(&id) {
            Some(old) => *old = (*old).max(below),
            None => {
                self.below.insert(id, below);
                self.order.push_back(id);
            }
        }
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.below.remove(&old);
            }
        }
    }

    /// True when `envelope` is a record of a job remembered done at its attempt.
    pub(super) fn covers(&self, envelope: &Envelope) -> bool {
        self.below
            .get(&envelope.id)
            .is_some_and(|below| envelope.attempt < *below)
    }
}

impl State {
    /// True when the job was handed out before its partition was revoked (it reports late).
    pub fn is_orphan(&self, id: JobId) -> bool {
        self.orphans.contains(&id)
    }

    /// Marks a job's record finished, and its copies with it (records of attempts below
    /// `done_below`: all of them once the job completed or died, those before its retry-tier
    /// record when it went there), and remembers them done. Lets the next job of its key go.
    /// Returns true when a record of the job's next attempt, read meanwhile, was placed.
    pub fn finish(&mut self, pending: &Pending, done_below: u32) -> bool {
        let id = pending.envelope.id;
        // An orphan's record belongs to an assignment that is over: a copy read again since
        // (the same offset, maybe) is one of its twins.
        if !self.orphans.remove(&id) {
            self.finish_offset(&pending.tp, pending.offset);
        }
        let (done, next): (Twins, Twins) = self
            .live
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .partition(|twin| twin.envelope.attempt < done_below);
        for twin in done {
            self.finish_offset(&twin.tp, twin.offset);
        }
        self.finished.remember(id, done_below);
        if let Some(key) = &pending.envelope.ordering_key {
            self.next_of_key(key);
        }
        // The job's next record (its retry-tier record, read before this outcome was stored)
        // is no copy: it runs, and copies of it wait for it.
        let mut next = next.into_iter();
        let Some(heir) = next.next() else {
            return false;
        };
        self.live.insert(id, next.collect());
        self.place(heir);
        true
    }

    /// Places a record of the job's next attempt that waited as a twin: held until its retry
    /// time (in offset order among its partition's held records), or ready.
    fn place(&mut self, pending: Pending) {
        if pending.envelope.not_before.is_none() {
            let _ = self.admit(pending);
            return;
        }
        let queue = self.delayed.entry(pending.tp.clone()).or_default();
        let at = queue
            .iter()
            .position(|p| p.offset > pending.offset)
            .unwrap_or(queue.len());
        queue.insert(at, pending);
    }

    /// Gives up a revoked job that reported late without an outcome to store (released, or a
    /// keyed retry whose record another assignment owns now). A copy of it read again since
    /// takes its place, with its attempts (`retry`: attempt and due time) so the job goes on
    /// here; without one, its key goes to the next job.
    pub fn give_up(&mut self, pending: &Pending, retry: Option<(u32, i64)>) {
        let id = pending.envelope.id;
        self.orphans.remove(&id);
        let mut twins = self.live.remove(&id).unwrap_or_default();
        if twins.is_empty() {
            if let Some(key) = &pending.envelope.ordering_key {
                self.next_of_key(key);
            }
            return;
        }
        let mut heir = twins.remove(0);
        self.live.insert(id, twins);
        // The heir's key (if any) is the orphan's and stays busy: it goes first.
        match retry {
            Some((attempt, at_ms)) => {
                heir.envelope.attempt = attempt;
                heir.envelope.not_before = Some(at_ms);
                self.held.push(heir);
            }
            None => self.push_ready(heir, true),
        }
    }
}
