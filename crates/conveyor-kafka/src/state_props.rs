//! Property tests of the session bookkeeping: random interleavings of reading, handing out,
//! finishing, keyed retries and revocations never commit past unfinished work, never hand a
//! job out twice, never run two jobs of one key at once, and lose no job.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use conveyor_core::NewJob;
use proptest::prelude::*;
use serde_json::json;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// Read the next record of partition `p`, with ordering key `key`.
    Read { p: i32, key: Option<u8> },
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
    /// Per partition: the records (offset -> key) in the log.
    log: BTreeMap<i32, Vec<Option<u8>>>,
    /// Per partition: the next offset the consumer reads.
    position: HashMap<i32, i64>,
    /// Per partition: the last committed offset.
    committed: HashMap<i32, i64>,
    /// Offsets finished in the current assignment of each partition.
    finished: HashSet<(i32, i64)>,
    /// Jobs handed out and not finished.
    out: Vec<Pending>,
    /// Per partition: the committed position when it was last reassigned (done before).
    base: HashMap<i32, i64>,
}

impl World {
    fn read(&mut self, p: i32, key: Option<u8>) {
        let log = self.log.entry(p).or_default();
        log.push(key);
        let offset = *self.position.entry(p).or_insert(0);
        // The consumer reads everything up to the log end, in order.
        for o in offset..log.len() as i64 {
            let mut job = NewJob::new("noop", json!({}));
            if let Some(k) = log[o as usize] {
                job = job.ordering_key(format!("k{k}"));
            }
            let envelope = Envelope::from_new_job(&job, "{}".into(), 0);
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
        }
        self.out.extend(taken);
    }

    fn finish(&mut self, i: usize) {
        if self.out.is_empty() {
            return;
        }
        let job = self.out.swap_remove(i % self.out.len());
        if let Some(pending) = self.state.unlease(job.envelope.id) {
            self.state.finish(&pending);
            self.finished.insert((pending.tp.1, pending.offset));
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
            pending.envelope.not_before = Some(self.now + delay);
            self.state.hold(pending);
        }
    }

    fn revoke(&mut self, p: i32) {
        for ((_, partition), position) in self.state.revoke(&[tp(p)]) {
            self.committed.insert(partition, position);
        }
        self.out.retain(|o| o.tp.1 != p);
        self.finished.retain(|(partition, _)| *partition != p);
        // The next owner (this session again) reads from the committed position.
        let from = self.committed.get(&p).copied().unwrap_or(0);
        self.position.insert(p, from);
        self.base.insert(p, from);
        self.state.assign(&[tp(p)], Lane::Fresh);
        if self.log.get(&p).is_some_and(|l| from < l.len() as i64) {
            let key = self.log[&p].last().copied().flatten();
            // Re-read what follows the committed position (without appending).
            self.log.get_mut(&p).map(Vec::pop);
            self.read(p, key);
        }
    }

    /// Every committed position is at most the lowest offset not finished yet.
    fn check_commits(&self) {
        for (p, position) in &self.committed {
            let lowest_unfinished = (0..*position).find(|o| {
                let read = *o < self.position.get(p).copied().unwrap_or(0);
                read && !self.finished.contains(&(*p, *o)) && !self.committed_before(*p, *o)
            });
            assert_eq!(
                lowest_unfinished, None,
                "partition {p} committed {position} past unfinished work"
            );
        }
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
