//! Property tests of the session bookkeeping: random interleavings of reading, handing out,
//! finishing, keyed retries, revocations and records of one job read twice never commit past
//! unfinished work, never hand a job out twice (nor again once it finished), never run two
//! jobs of one key at once (jobs handed out before their partition was revoked included: they
//! still run), and lose no job.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use conveyor_core::{JobId, NewJob};
use proptest::prelude::*;
use serde_json::json;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// Read the next record of partition `p`, with ordering key `key`.
    Read { p: i32, key: Option<u8> },
    /// Partition `p` gets another record of the `i`-th job written so far (a producer's
    /// retry, the same id on two partitions).
    Copy { p: i32, i: usize },
    /// Hand out up to `n` jobs.
    Take { n: usize },
    /// Finish the `i`-th handed-out job (modulo how many there are).
    Finish { i: usize },
    /// The `i`-th handed-out keyed job fails and retries in place after `delay` ms.
    RetryKeyed { i: usize, delay: i64 },
    /// Time passes.
    Tick { ms: i64 },
    /// Partition `p` is revoked, then assigned again from its committed position.
    Revoke { p: i32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3i32, proptest::option::of(0..3u8)).prop_map(|(p, key)| Op::Read { p, key }),
        1 => (0..3i32, any::<usize>()).prop_map(|(p, i)| Op::Copy { p, i }),
        3 => (1..5usize).prop_map(|n| Op::Take { n }),
        3 => any::<usize>().prop_map(|i| Op::Finish { i }),
        1 => (any::<usize>(), 1..50i64).prop_map(|(i, delay)| Op::RetryKeyed { i, delay }),
        1 => (1..30i64).prop_map(|ms| Op::Tick { ms }),
        1 => (0..3i32).prop_map(|p| Op::Revoke { p }),
    ]
}

fn tp(p: i32) -> Tp {
    (Arc::from("conveyor.queue.default"), p)
}

/// The model: what the broker holds and what the session was given.
#[derive(Default)]
struct World {
    state: State,
    now: i64,
    /// Per partition: the records (offset -> key and job id) in the log.
    log: BTreeMap<i32, Vec<(Option<u8>, JobId)>>,
    /// Every job written, in order.
    jobs: Vec<(Option<u8>, JobId)>,
    /// Jobs finished in this session.
    done: HashSet<JobId>,
    /// Per partition: the next offset the consumer reads.
    position: HashMap<i32, i64>,
    /// Per partition: the last committed offset.
    committed: HashMap<i32, i64>,
    /// Offsets finished in the current assignment of each partition.
    finished: HashSet<(i32, i64)>,
    /// Jobs handed out and not finished (those of a revoked partition too: they still run).
    out: Vec<Pending>,
    /// Per partition: the committed position when it was last reassigned (done before).
    base: HashMap<i32, i64>,
}

impl World {
    fn read(&mut self, p: i32, key: Option<u8>) {
        let id = JobId::new();
        self.jobs.push((key, id));
        self.write(p, (key, id));
    }

    fn copy(&mut self, p: i32, i: usize) {
        if let Some(job) = self.jobs.get(i % self.jobs.len().max(1)).copied() {
            self.write(p, job);
        }
    }

    fn write(&mut self, p: i32, record: (Option<u8>, JobId)) {
        self.log.entry(p).or_default().push(record);
        self.read_to_end(p);
    }

    /// The consumer reads everything up to the log end, in order.
    fn read_to_end(&mut self, p: i32) {
        let log = self.log.get(&p).cloned().unwrap_or_default();
        let offset = *self.position.entry(p).or_insert(0);
        for o in offset..log.len() as i64 {
            let (key, id) = log[o as usize];
            let mut job = NewJob::new("noop", json!({}));
            if let Some(k) = key {
                job = job.ordering_key(format!("k{k}"));
            }
            let mut envelope = Envelope::from_new_job(&job, "{}".into(), 0);
            envelope.id = id;
            self.state.accept(
                Pending {
                    tp: tp(p),
                    offset: o,
                    envelope,
                },
                self.now,
            );
        }
        self.position.insert(p, log.len() as i64);
    }

    fn commit(&mut self) {
        for ((_, p), position) in self.state.commits() {
            self.committed.insert(p, position);
        }
    }

    fn take(&mut self, n: usize) {
        let taken = self.state.take(n);
        for job in &taken {
            assert!(
                !self.out.iter().any(|o| o.envelope.id == job.envelope.id),
                "handed out twice: {job:?}"
            );
            assert!(
                !self.done.contains(&job.envelope.id),
                "handed out again after it finished: {job:?}"
            );
        }
        self.out.extend(taken);
    }

    fn finish(&mut self, i: usize) {
        if self.out.is_empty() {
            return;
        }
        let job = self.out.swap_remove(i % self.out.len());
        let id = job.envelope.id;
        if let Some(pending) = self.state.unlease(id) {
            self.state.finish(&pending, u32::MAX);
            self.done.insert(id);
            // Every record of the job read in the current assignments is finished with it.
            for (p, log) in &self.log {
                let read = self.position.get(p).copied().unwrap_or(0);
                for (o, (_, of)) in log.iter().enumerate() {
                    if *of == id && (o as i64) < read {
                        self.finished.insert((*p, o as i64));
                    }
                }
            }
        }
    }

    fn retry_keyed(&mut self, i: usize, delay: i64) {
        let Some(at) = self
            .out
            .iter()
            .position(|o| o.envelope.ordering_key.is_some())
        else {
            return;
        };
        let at = (at + i) % self.out.len();
        if self.out[at].envelope.ordering_key.is_none() {
            return;
        }
        let job = self.out.swap_remove(at);
        if let Some(mut pending) = self.state.unlease(job.envelope.id) {
            // As the session does: a revoked job's retry is taken over by a copy read again.
            if self.state.is_orphan(job.envelope.id) {
                self.state.give_up(
                    &pending,
                    Some((pending.envelope.attempt + 1, self.now + delay)),
                );
                return;
            }
            pending.envelope.not_before = Some(self.now + delay);
            self.state.hold(pending);
        }
    }

    fn revoke(&mut self, p: i32) {
        for ((_, partition), position) in self.state.revoke(&[tp(p)]) {
            self.committed.insert(partition, position);
        }
        // Jobs handed out from it keep running: they stay in `out` and report late.
        self.finished.retain(|(partition, _)| *partition != p);
        // The next owner (this session again) reads from the committed position.
        let from = self.committed.get(&p).copied().unwrap_or(0);
        self.position.insert(p, from);
        self.base.insert(p, from);
        self.state.assign(&[tp(p)], Lane::Fresh);
        self.read_to_end(p);
    }

    /// Every committed position is at most the lowest offset not finished yet, unless that
    /// record's job is done or another record of it is still to run.
    fn check_commits(&self) {
        for (p, position) in &self.committed {
            let lowest_unfinished = (0..*position).find(|o| {
                let read = *o < self.position.get(p).copied().unwrap_or(0);
                read && !self.finished.contains(&(*p, *o))
                    && !self.committed_before(*p, *o)
                    && !self.covered_elsewhere(*p, *o)
            });
            assert_eq!(
                lowest_unfinished, None,
                "partition {p} committed {position} past unfinished work"
            );
        }
    }

    /// The job of record `o` of partition `p` is done, or has another record not committed yet.
    fn covered_elsewhere(&self, p: i32, o: i64) -> bool {
        let Some((_, id)) = self.log.get(&p).and_then(|l| l.get(o as usize)) else {
            return false;
        };
        self.done.contains(id)
            || self.log.iter().any(|(q, log)| {
                let from = self.committed.get(q).copied().unwrap_or(0);
                log.iter()
                    .enumerate()
                    .any(|(at, (_, of))| of == id && (*q, at as i64) != (p, o) && at as i64 >= from)
            })
    }

    /// Offsets below the position at the last reassignment were done by an earlier owner.
    fn committed_before(&self, p: i32, o: i64) -> bool {
        o < self.base.get(&p).copied().unwrap_or(0)
    }

    /// No two handed-out jobs share an ordering key.
    fn check_keys(&self) {
        let mut keys = HashSet::new();
        for job in &self.out {
            if let Some(key) = &job.envelope.ordering_key {
                assert!(keys.insert(key.clone()), "two jobs of key {key} at once");
            }
        }
    }

    /// Runs everything to the end: every record read gets finished and committed.
    fn drain(&mut self) {
        for _ in 0..10_000 {
            self.now += 1_000;
            self.state.release_due(self.now);
            self.take(usize::MAX);
            if self.out.is_empty() && self.state.buffered(Lane::Fresh) == 0 {
                break;
            }
            while !self.out.is_empty() {
                self.finish(0);
            }
        }
        self.commit();
        for (p, log) in &self.log {
            assert_eq!(self.state.buffered(Lane::Fresh), 0, "jobs left unfinished");
            let committed = self.committed.get(p).copied().unwrap_or(0);
            assert_eq!(
                committed,
                log.len() as i64,
                "partition {p} not committed to its end"
            );
        }
        for (_, id) in &self.jobs {
            assert!(self.done.contains(id), "job {id} never ran");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_bookkeeping_holds_under_any_interleaving(ops in proptest::collection::vec(op(), 1..80)) {
        let mut world = World::default();
        world.state.assign(&[tp(0), tp(1), tp(2)], Lane::Fresh);
        for op in ops {
            match op {
                Op::Read { p, key } => world.read(p, key),
                Op::Copy { p, i } => world.copy(p, i),
                Op::Take { n } => world.take(n),
                Op::Finish { i } => world.finish(i),
                Op::RetryKeyed { i, delay } => world.retry_keyed(i, delay),
                Op::Tick { ms } => {
                    world.now += ms;
                    world.state.release_due(world.now);
                }
                Op::Revoke { p } => world.revoke(p),
            }
            world.commit();
            world.check_commits();
            world.check_keys();
        }
        world.drain();
    }
}
