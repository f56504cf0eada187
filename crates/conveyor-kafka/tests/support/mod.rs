//! A real broker for the tests: `CONVEYOR_TEST_KAFKA` (set by scripts/test), else the project's
//! own `scripts/dev-broker start --memory`. Every test uses its own topic prefix and group.

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use conveyor_kafka::{KafkaConfig, Record};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::ClientConfig;

pub fn broker() -> &'static str {
    static ADDRESS: OnceLock<String> = OnceLock::new();
    ADDRESS.get_or_init(|| {
        if let Ok(address) = std::env::var("CONVEYOR_TEST_KAFKA") {
            return address;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/dev-broker");
        let out = Command::new(script)
            .args(["start", "--memory"])
            .output()
            .expect("run scripts/dev-broker");
        assert!(
            out.status.success(),
            "dev-broker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("address line")
            .trim()
            .to_string()
    })
}

/// A config with a fresh prefix and group, so tests never share topics.
pub fn fresh_config(partitions: i32) -> KafkaConfig {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let mut config = KafkaConfig::new(broker());
    config.topics.prefix = format!("t{}.", &tag[20..]);
    config.group = format!("g{tag}");
    config.partitions = partitions;
    config.session_timeout = Duration::from_secs(6);
    config
}

/// Reads every record of `topic` from the beginning until `count` arrived or 20 s passed.
pub async fn read_topic(config: &KafkaConfig, topic: &str, count: usize) -> Vec<Record> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set(
            "group.id",
            format!("reader-{}", uuid::Uuid::now_v7().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < count {
        let Ok(Ok(message)) = tokio::time::timeout_at(deadline, consumer.recv()).await else {
            break;
        };
        out.push(conveyor_kafka::record_of(&message));
    }
    out
}

/// The text of header `name`.
pub fn header<'a>(record: &'a Record, name: &str) -> &'a str {
    record.header(name).and_then(Result::ok).unwrap_or("")
}

/// The group's committed offset and the log end of each partition of `topic` (partitions
/// `0..partitions`); a partition without a commit shows -1.
pub fn commit_and_end(
    config: &KafkaConfig,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<(i64, i64)> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offset reader");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| {
            let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(at)) => at,
                _ => -1,
            };
            let (_, end) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (at, end)
        })
        .collect()
}

/// Waits (up to 60 s) until the group committed every partition of `topics` to its log end;
/// returns the last reading of each topic.
pub async fn until_committed_to_end(
    config: &KafkaConfig,
    group: &str,
    topics: &[&str],
    partitions: i32,
) -> Vec<Vec<(i64, i64)>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let readings: Vec<Vec<(i64, i64)>> = topics
            .iter()
            .map(|t| tokio::task::block_in_place(|| commit_and_end(config, group, t, partitions)))
            .collect();
        let done = readings.iter().flatten().all(|(at, end)| at == end);
        if done || tokio::time::Instant::now() > deadline {
            return readings;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
