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
