//! The broker's group protocol as the engine uses it (cooperative-sticky assignment): a
//! partition is never owned by two members of a group at once, also while members join one
//! after the other. Unpatched tansu 0.6 answered the group leader before the other members
//! rejoined, so the leader assigned from stale subscriptions and handed a partition still
//! consumed by one member to another (scripts/tansu/broker/group-join-waits-for-every-member.patch).

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use conveyor_kafka::producer::Producer;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext};
use support::fresh_config;

const PARTITIONS: i32 = 6;

/// (member, partition, true when assigned / false when revoked, when).
type Ledger = Arc<Mutex<Vec<(usize, i32, bool, Instant)>>>;

/// Records a member's assignments and revocations.
struct Recorder {
    member: usize,
    ledger: Ledger,
}

impl ClientContext for Recorder {}

impl ConsumerContext for Recorder {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            self.record(list, false);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.record(list, true);
        }
    }
}

impl Recorder {
    fn record(&self, list: &rdkafka::TopicPartitionList, assigned: bool) {
        let now = Instant::now();
        let mut ledger = self.ledger.lock().expect("ledger");
        for e in list.elements() {
            ledger.push((self.member, e.partition(), assigned, now));
        }
    }
}

/// A member polling in a thread of its own until `stop`.
fn member(
    index: usize,
    brokers: &str,
    group: &str,
    topic: &str,
    ledger: &Ledger,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<()> {
    let consumer: BaseConsumer<Recorder> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .create_with_context(Recorder {
            member: index,
            ledger: ledger.clone(),
        })
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let stop = stop.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let _ = consumer.poll(Duration::from_millis(50));
        }
        consumer.unsubscribe();
    })
}

/// Who owns each partition after replaying the ledger, and every moment a partition was
/// assigned to a member while another still owned it.
fn replay(ledger: &[(usize, i32, bool, Instant)]) -> (BTreeMap<i32, usize>, Vec<String>) {
    let mut owners: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    let mut doubles = Vec::new();
    let mut events = ledger.to_vec();
    events.sort_by_key(|e| e.3);
    for (member, partition, assigned, _) in events {
        let owned = owners.entry(partition).or_default();
        if assigned {
            if !owned.is_empty() {
                doubles.push(format!(
                    "partition {partition} assigned to member {member} while {owned:?} owned it"
                ));
            }
            owned.push(member);
        } else {
            owned.retain(|m| *m != member);
        }
    }
    let single = owners
        .into_iter()
        .filter_map(|(p, owned)| (owned.len() == 1).then(|| (p, owned[0])))
        .collect();
    (single, doubles)
}

/// Waits until every partition has exactly one owner among `members` members, each owning
/// some; false if that did not happen within 30 s.
fn until_balanced(ledger: &Ledger, members: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let (owners, _) = replay(&ledger.lock().expect("ledger"));
        let mut per_member = vec![0; members];
        for owner in owners.values() {
            if let Some(n) = per_member.get_mut(*owner) {
                *n += 1;
            }
        }
        if owners.len() == PARTITIONS as usize && per_member.iter().all(|n| *n > 0) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_one_after_another_never_own_a_partition_together() {
    let config = fresh_config(PARTITIONS);
    let topic = config.topics.queue("default");
    Producer::new(&config)
        .expect("producer")
        .ensure_topics(std::slice::from_ref(&topic))
        .await
        .expect("topic");
    let ledger: Ledger = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut members = Vec::new();
    for index in 0..3 {
        members.push(member(
            index,
            &config.brokers,
            &config.group,
            &topic,
            &ledger,
            &stop,
        ));
        let waiting = ledger.clone();
        let balanced = tokio::task::spawn_blocking(move || until_balanced(&waiting, index + 1))
            .await
            .expect("wait");
        let (_, doubles) = replay(&ledger.lock().expect("ledger"));
        assert!(doubles.is_empty(), "{doubles:?}");
        assert!(
            balanced,
            "{} members never shared the {PARTITIONS} partitions",
            index + 1
        );
    }
    stop.store(true, Ordering::Relaxed);
    for m in members {
        m.join().expect("member thread");
    }
}
