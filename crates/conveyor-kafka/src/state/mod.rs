//! The bookkeeping of one consumer session, without any Kafka client: which records are ready,
//! handed out, waiting behind an ordering key or for their retry time, and which offsets may be
//! committed. Kept pure so the rules are unit-tested.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use conveyor_core::JobId;

mod claims;
mod copies;
mod flow;
mod notes;
mod redelivery;
mod summary;
mod timetable;

pub(crate) use claims::Dropped;
use claims::Keys;
use copies::Finished;
pub(crate) use timetable::Marker;

use crate::delivery::Seen;
use crate::offsets::PartitionOffsets;
use crate::Envelope;

/// A topic and partition.
pub(crate) type Tp = (Arc<str>, i32);

/// Which consumer of a session reads a partition. Retry tiers and high-priority topics have a
/// consumer (and a buffer) of their own, so neither a retry storm waiting for its time nor a
/// backlog of ordinary jobs ever sits ahead of them in a client's fetch queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub(crate) enum Lane {
    /// Queue topics of normal and low priority, and ingest topics.
    #[default]
    Fresh,
    /// Retry tier topics.
    Retry,
    /// Queue topics of high priority.
    Urgent,
    /// The schedule topic: delayed jobs, moved to their queue's topic when due.
    Schedule,
}

impl Lane {
    /// Every lane.
    pub const ALL: [Lane; 4] = [Lane::Fresh, Lane::Retry, Lane::Urgent, Lane::Schedule];
}

/// A record's job, with where it was read from.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub tp: Tp,
    pub offset: i64,
    pub envelope: Envelope,
}

/// What happened to an accepted record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// The consumer gave this offset before (a broker's re-delivery): its job runs or ran
    /// already, so the record is ignored.
    Repeat,
    /// Another record of the same job (the same id) is in this session: this one waits for it
    /// and is finished with it, without running (a producer's retry, the same id on two
    /// topics, a record read again while its first copy still runs here).
    Twin,
    /// A record of a job that finished here lately (this attempt or a later one): done at once.
    Done,
    /// Ready to hand out.
    Ready,
    /// Waits behind an earlier job of its ordering key.
    Waiting,
    /// A retry tier record not due yet: held in memory until `due_ms`.
    Delayed { due_ms: i64 },
    /// A schedule topic record: waits in the timetable until due, then moves to its queue.
    Scheduled,
}

/// Which FIFO a ready job waits in: its priority, lane and queue.
type ReadyKey = (i32, Lane, String);

/// Records of one job waiting for its running (or ready, or held) record: finished with it.
type Twins = Vec<Pending>;

#[derive(Default)]
pub(crate) struct State {
    /// Ready jobs, one FIFO per priority, lane and queue: the highest priority goes first, and
    /// FIFOs of one priority are served in turns, so a burst in one queue (or a retry storm)
    /// cannot hold back the jobs of another.
    ready: HashMap<ReadyKey, VecDeque<Pending>>,
    /// The keys of `ready` that have jobs, in serving order.
    turns: VecDeque<ReadyKey>,
    /// Jobs handed out, by id. One record per job id is ever handed out at a time (the worker
    /// runtime tracks running jobs by id): other records of the job wait in `live`.
    leased: HashMap<JobId, Pending>,
    /// Every job id with a record in this session (ready, waiting, delayed, handed out or held),
    /// with the other records of the same job that arrived meanwhile.
    live: HashMap<JobId, Twins>,
    /// Handed-out jobs whose partition was revoked while they ran: the worker still runs them
    /// and reports late. Their ordering key stays busy until then, so a copy read again
    /// (the partition came back) never runs beside them.
    orphans: HashSet<JobId>,
    /// Job ids finished lately.
    finished: Finished,
    offsets: HashMap<Tp, PartitionOffsets>,
    busy_keys: HashSet<String>,
    waiting: HashMap<String, VecDeque<Pending>>,
    /// Retry tier records read before they are due, per partition, in offset order.
    delayed: HashMap<Tp, VecDeque<Pending>>,
    /// Keyed jobs waiting in memory for their retry (they keep their key and their offset).
    held: Vec<Pending>,
    /// Delayed jobs read from the schedule topic, waiting for their time.
    timetable: timetable::Timetable,
    /// Per owned schedule partition, the winners of its idempotency keys (see claims.rs).
    keys: HashMap<Tp, Keys>,
    /// Numbers the rebuilds of key indexes, so a late one of a revoked partition is dropped.
    key_generation: u64,
    /// Claims dropped as duplicates whose markers are still to be written.
    dropped: Vec<Dropped>,
    /// Per assigned queue partition, the attempt notes of its keyed jobs (see notes.rs).
    notes: HashMap<Tp, notes::Notes>,
    /// Numbers the reads of attempt notes, so a late one of a revoked partition is dropped.
    notes_generation: u64,
    /// Partitions the group assigned to this session, with the lane that reads them.
    assigned: HashMap<Tp, Lane>,
    /// Assigned partitions currently paused.
    paused: HashSet<Tp>,
    /// Partitions with a re-fetch to ask their consumer for (offsets the broker skipped).
    refetch_due: HashSet<Tp>,
    /// When each partition last gave a record (ms): only partitions with recent records are
    /// worth protecting by pausing others.
    last_read: HashMap<Tp, i64>,
}

/// A partition that gave no record for this long does not make others pause: an idle queue
/// must not slow a busy one down.
const ACTIVE_MS: i64 = 30_000;

impl State {
    /// True when the partition is currently assigned to this session.
    pub fn is_assigned(&self, tp: &Tp) -> bool {
        self.assigned.contains_key(tp)
    }

    /// The partitions `lane`'s consumer is assigned.
    pub fn assigned_of(&self, lane: Lane) -> HashSet<Tp> {
        self.assigned
            .iter()
            .filter(|(_, l)| **l == lane)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// True when flow control paused the partition (see [`State::flow`]).
    pub fn is_flow_paused(&self, tp: &Tp) -> bool {
        self.paused.contains(tp)
    }

    /// Records partitions newly assigned to `lane`'s consumer.
    pub fn assign(&mut self, partitions: &[Tp], lane: Lane) {
        self.assigned
            .extend(partitions.iter().map(|tp| (tp.clone(), lane)));
    }

    /// The lane that reads `tp`, while it is assigned.
    pub fn lane_of(&self, tp: &Tp) -> Option<Lane> {
        self.assigned.get(tp).copied()
    }

    fn lane(&self, tp: &Tp) -> Lane {
        self.assigned.get(tp).copied().unwrap_or_default()
    }

    /// Takes in a record's job.
    pub fn accept(&mut self, pending: Pending, now_ms: i64) -> Accepted {
        self.last_read.insert(pending.tp.clone(), now_ms);
        let offsets = self.offsets.entry(pending.tp.clone()).or_default();
        let done = self.finished.covers(&pending.envelope);
        let seen = if done {
            offsets.skipped(pending.offset)
        } else {
            offsets.started(pending.offset)
        };
        if offsets.wants_refetch() {
            self.refetch_due.insert(pending.tp.clone());
        }
        if seen == Seen::Repeat {
            return Accepted::Repeat;
        }
        if done {
            return Accepted::Done;
        }
        // Not a run of the job: the record that runs is the one moved to the queue's topic
        // when due, which must not wait for this one as its twin.
        if self.lane(&pending.tp) == Lane::Schedule {
            self.schedule(pending);
            return Accepted::Scheduled;
        }
        match self.stash_until_noted(pending) {
            Some(pending) => self.take_in(pending, now_ms),
            None => Accepted::Waiting,
        }
    }

    /// Takes in a record's job that is to run here.
    fn take_in(&mut self, pending: Pending, now_ms: i64) -> Accepted {
        if let Some(twins) = self.live.get_mut(&pending.envelope.id) {
            twins.push(pending);
            return Accepted::Twin;
        }
        self.live.insert(pending.envelope.id, Vec::new());
        let pending = match self.go_on_from_note(pending, now_ms) {
            Ok(pending) => pending,
            Err(accepted) => return accepted,
        };
        if let Some(queue) = self.delayed.get_mut(&pending.tp).filter(|q| !q.is_empty()) {
            let due_ms = queue
                .front()
                .and_then(|p| p.envelope.not_before)
                .unwrap_or(now_ms);
            queue.push_back(pending);
            return Accepted::Delayed { due_ms };
        }
        if let Some(due_ms) = pending.envelope.not_before.filter(|t| *t > now_ms) {
            self.delayed
                .entry(pending.tp.clone())
                .or_default()
                .push_back(pending);
            return Accepted::Delayed { due_ms };
        }
        self.admit(pending)
    }

    /// Records whose offset is done without running (dead-lettered at decode).
    pub fn skip(&mut self, tp: &Tp, offset: i64) {
        let offsets = self.offsets.entry(tp.clone()).or_default();
        let _ = offsets.skipped(offset);
        if offsets.wants_refetch() {
            self.refetch_due.insert(tp.clone());
        }
    }

    fn admit(&mut self, pending: Pending) -> Accepted {
        if let Some(key) = pending.envelope.ordering_key.clone() {
            if !self.busy_keys.insert(key.clone()) {
                self.waiting.entry(key).or_default().push_back(pending);
                return Accepted::Waiting;
            }
        }
        self.push_ready(pending, false);
        Accepted::Ready
    }

    /// Queues a ready job in its priority, lane and queue's FIFO (at the front: it goes next
    /// there).
    fn push_ready(&mut self, pending: Pending, front: bool) {
        let key = (
            pending.envelope.priority,
            self.lane(&pending.tp),
            pending.envelope.queue.clone(),
        );
        let fifo = self.ready.entry(key.clone()).or_default();
        if fifo.is_empty() {
            self.turns.push_back(key);
        }
        if front {
            fifo.push_front(pending);
        } else {
            fifo.push_back(pending);
        }
    }

    /// Moves due delayed and held jobs to the ready queue. Returns the next due time, if any.
    pub fn release_due(&mut self, now_ms: i64) -> Option<i64> {
        let mut next: Option<i64> = None;
        let mut due = Vec::new();
        for queue in self.delayed.values_mut() {
            while queue
                .front()
                .is_some_and(|p| p.envelope.not_before.unwrap_or(0) <= now_ms)
            {
                due.extend(queue.pop_front());
            }
            if let Some(head) = queue.front() {
                next = min_opt(next, head.envelope.not_before);
            }
        }
        self.delayed.retain(|_, q| !q.is_empty());
        for pending in due {
            self.admit(pending);
        }
        let (now_due, later): (Vec<Pending>, Vec<Pending>) = self
            .held
            .drain(..)
            .partition(|p| p.envelope.not_before.unwrap_or(0) <= now_ms);
        self.held = later;
        for p in &self.held {
            next = min_opt(next, p.envelope.not_before);
        }
        // A held job is the head of its key already (the key stayed busy): it goes first.
        for pending in now_due.into_iter().rev() {
            self.push_ready(pending, true);
        }
        next
    }

    /// Hands out up to `limit` ready jobs: highest priority first, and within a priority one
    /// per lane and queue in turn.
    #[cfg(test)]
    pub fn take(&mut self, limit: usize) -> Vec<Pending> {
        self.take_where(limit, |_| true)
    }

    /// Hands out up to `limit` ready jobs of the queues `wanted` accepts: highest priority
    /// first, and within a priority one per lane and queue in turn.
    pub fn take_where(&mut self, limit: usize, wanted: impl Fn(&str) -> bool) -> Vec<Pending> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(key) = self.next_turn(&wanted) else {
                break;
            };
            let Some(fifo) = self.ready.get_mut(&key) else {
                continue;
            };
            let Some(pending) = fifo.pop_front() else {
                self.ready.remove(&key);
                continue;
            };
            if fifo.is_empty() {
                self.ready.remove(&key);
            } else {
                self.turns.push_back(key);
            }
            self.leased.insert(pending.envelope.id, pending.clone());
            out.push(pending);
        }
        out
    }

    /// The next FIFO to serve among the wanted queues': the first in turn among those of the
    /// highest priority.
    fn next_turn(&mut self, wanted: impl Fn(&str) -> bool) -> Option<ReadyKey> {
        let best = self
            .turns
            .iter()
            .filter(|key| wanted(&key.2))
            .map(|key| key.0)
            .max()?;
        let at = self
            .turns
            .iter()
            .position(|key| key.0 == best && wanted(&key.2))?;
        self.turns.remove(at)
    }

    /// The lease of a handed-out job, removed (None when unknown, e.g. revoked meanwhile).
    pub fn unlease(&mut self, id: JobId) -> Option<Pending> {
        self.leased.remove(&id)
    }

    /// Puts back a lease taken with [`State::unlease`] (its outcome could not be stored yet).
    pub fn relet(&mut self, pending: Pending) {
        self.leased.insert(pending.envelope.id, pending);
    }

    fn finish_offset(&mut self, tp: &Tp, offset: i64) {
        if let Some(offsets) = self.offsets.get_mut(tp) {
            offsets.finished(offset);
        }
    }

    /// The key's active job finished: its next waiting job goes, or the key is free.
    fn next_of_key(&mut self, key: &str) {
        match self.waiting.get_mut(key).and_then(VecDeque::pop_front) {
            Some(next) => self.push_ready(next, false),
            None => {
                self.busy_keys.remove(key);
                self.waiting.remove(key);
            }
        }
    }

    /// A job that was taken and could not be dealt with (forwarding it failed): ready again,
    /// first of its FIFO.
    pub fn requeue(&mut self, pending: Pending) {
        self.leased.remove(&pending.envelope.id);
        self.push_ready(pending, true);
    }

    /// Keeps a keyed job in memory until its retry time (its key stays busy, so the jobs
    /// behind it keep waiting, and its offset stays uncommitted).
    pub fn hold(&mut self, pending: Pending) {
        self.held.push(pending);
    }

    /// Positions that moved since their last commit.
    #[cfg(test)]
    pub fn commits(&mut self) -> Vec<(Tp, i64)> {
        self.offsets
            .iter_mut()
            .filter_map(|(tp, o)| o.take_commit().map(|pos| (tp.clone(), pos)))
            .collect()
    }

    /// Positions of `lane`'s partitions that moved since their last commit.
    pub fn commits_of(&mut self, lane: Lane) -> Vec<(Tp, i64)> {
        let assigned = &self.assigned;
        self.offsets
            .iter_mut()
            .filter(|(tp, _)| assigned.get(*tp).copied().unwrap_or_default() == lane)
            .filter_map(|(tp, o)| o.take_commit().map(|pos| (tp.clone(), pos)))
            .collect()
    }

    /// Marks every position to be sent with the next commit, moved or not (see
    /// `session::RESEND_INTERVAL`).
    pub fn resend_commits(&mut self) {
        for offsets in self.offsets.values_mut() {
            offsets.resend();
        }
    }

    /// Commits that failed: their positions are sent again with the next commit (a partition
    /// revoked meanwhile is not this session's to commit any more).
    pub fn commit_failed(&mut self, failed: &[(Tp, i64)]) {
        for (tp, position) in failed {
            if let Some(offsets) = self.offsets.get_mut(tp) {
                offsets.commit_failed(*position);
            }
        }
    }

    /// Forgets revoked partitions: their jobs run again on the new owner. Returns the last
    /// positions to commit for them.
    ///
    /// A job handed out from a revoked partition is still running in this worker: it stays
    /// leased as an orphan, and its ordering key stays busy until it reports, so a copy read
    /// again (the partition came back) neither runs beside it nor lets the key's next job go.
    pub fn revoke(&mut self, revoked: &[Tp]) -> Vec<(Tp, i64)> {
        let gone: HashSet<&Tp> = revoked.iter().collect();
        let commits = revoked
            .iter()
            .filter_map(|tp| {
                self.offsets
                    .get_mut(tp)
                    .and_then(|o| o.take_commit())
                    .map(|p| (tp.clone(), p))
            })
            .collect();
        let mut dropped = Vec::new();
        let mut keep = |p: &Pending| {
            let keep = !gone.contains(&p.tp);
            if !keep {
                dropped.push((p.envelope.id, p.envelope.ordering_key.clone()));
            }
            keep
        };
        for fifo in self.ready.values_mut() {
            fifo.retain(&mut keep);
        }
        self.ready.retain(|_, fifo| !fifo.is_empty());
        let ready = &self.ready;
        self.turns.retain(|key| ready.contains_key(key));
        self.held.retain(&mut keep);
        for queue in self.waiting.values_mut() {
            queue.retain(&mut keep);
        }
        self.revoke_scheduled(&|tp| gone.contains(tp));
        for tp in revoked {
            for p in self.delayed.remove(tp).unwrap_or_default() {
                keep(&p);
            }
            self.offsets.remove(tp);
            self.notes.remove(tp);
            self.refetch_due.remove(tp);
            self.assigned.remove(tp);
            self.paused.remove(tp);
            self.last_read.remove(tp);
        }
        self.orphans.extend(
            self.leased
                .values()
                .filter(|p| gone.contains(&p.tp))
                .map(|p| p.envelope.id),
        );
        for twins in self.live.values_mut() {
            twins.retain(|t| !gone.contains(&t.tp));
        }
        let mut dropped_keys = Vec::new();
        for (id, key) in dropped {
            self.drop_live(id);
            dropped_keys.extend(key);
        }
        // A key whose active job was revoked goes on with its next job still here (the same
        // key may be used in another topic), or is free again.
        for key in dropped_keys {
            if !self.key_is_active(&key) {
                self.next_of_key(&key);
            }
        }
        commits
    }

    /// A job's record went with its partition (it runs on the new owner): copies of the job
    /// read from other partitions are finished without running, since the record that went is
    /// uncommitted and runs there.
    fn drop_live(&mut self, id: JobId) {
        for twin in self.live.remove(&id).unwrap_or_default() {
            self.finish_offset(&twin.tp, twin.offset);
        }
    }

    /// True when a job of `key` is ready, handed out or held for its retry.
    fn key_is_active(&self, key: &str) -> bool {
        let has_key = |p: &Pending| p.envelope.ordering_key.as_deref() == Some(key);
        self.leased.values().any(has_key)
            || self.held.iter().any(has_key)
            || self.ready.values().flatten().any(has_key)
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
