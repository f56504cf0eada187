//! Settings of the Kafka engine, parsed from `kafka://HOST:PORT[,HOST:PORT][?option=value&...]`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::topics::TopicLayout;
use crate::Error;

/// Compression of produced records (the seeds' choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4 (the default: cheap and effective on JSON).
    Lz4,
    /// zstd.
    Zstd,
}

impl Compression {
    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Settings of the Kafka engine.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port,host:port`.
    pub brokers: String,
    /// Topic names.
    pub topics: TopicLayout,
    /// Consumer group of the workers.
    pub group: String,
    /// Partitions of topics Conveyor creates.
    pub partitions: i32,
    /// Replication factor of topics Conveyor creates.
    pub replication: i32,
    /// Compression of produced records.
    pub compression: Compression,
    /// Largest payload accepted.
    pub max_payload_bytes: usize,
    /// Consumer session timeout (how long a silent worker keeps its partitions).
    pub session_timeout: Duration,
    /// A partition with this many records read and unfinished is paused (the client stops
    /// fetching it) until it is down to half: lower keeps one backlog (a retry storm, a burst
    /// in one queue) from delaying other partitions' jobs, higher drains a backlog faster.
    pub pause_at: usize,
    /// Raw librdkafka properties, applied last to every client (URL options `librdkafka.KEY=VALUE`,
    /// e.g. `librdkafka.security.protocol=SSL`).
    pub client_properties: BTreeMap<String, String>,
    /// Topics that plain producers write in another shape, consumed like queues
    /// (DESIGN.md §2.1; `?ingest=TOPIC:FORMAT`, repeatable).
    pub ingest: Vec<Ingest>,
    /// How long an idempotency key names its first job (URL option `idempotency_window`,
    /// default 24 h as seed 003's scheduler kept its keys): another job with the key enqueued
    /// within this time of the first is a duplicate. Every process of a deployment must use
    /// the same window.
    pub idempotency_window: Duration,
}

/// One ingest entry: a topic and how to read its records.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// The producers' topic, used as it is (no prefix).
    pub topic: String,
    /// How its records become jobs.
    pub decoder: crate::IngestDecoder,
    /// Where its records that are not jobs go (the producers' own dead-letter topic, as seed
    /// 003's `scheduler.jobs.dlq`); `None`: the engine's `{prefix}dead`.
    pub dead_letter_topic: Option<String>,
}

impl Ingest {
    /// Parses an ingest entry as the `ingest` URL option writes it:
    /// `TOPIC:FORMAT[;queue=Q][;timezone=ZONE][;dead_letter_topic=T]`.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let mut parts = value.split(';');
        let head = parts.next().unwrap_or_default();
        let (topic, format) = head
            .rsplit_once(':')
            .filter(|(t, f)| !t.is_empty() && !f.is_empty())
            .ok_or_else(|| {
                Error::invalid("ingest", format!("must be TOPIC:FORMAT, not {head:?}"))
            })?;
        let mut decoder = crate::IngestDecoder::new(format.parse()?, conveyor_core::DEFAULT_QUEUE);
        let mut dead_letter_topic = None;
        for part in parts {
            let (key, setting) = part.split_once('=').unwrap_or((part, ""));
            if setting.is_empty() {
                return Err(Error::invalid(
                    "ingest",
                    format!("{key:?} of ingest topic {topic:?} has no value"),
                ));
            }
            match key {
                "queue" => {
                    conveyor_core::check_name("queue", setting)
                        .map_err(|e| Error::invalid("ingest", format!("topic {topic:?}: {e}")))?;
                    decoder.queue = setting.to_string();
                }
                "timezone" => decoder.zone = setting.parse()?,
                "dead_letter_topic" => dead_letter_topic = Some(setting.to_string()),
                _ => {
                    return Err(Error::invalid(
                        "ingest",
                        format!("unknown setting {key:?} of ingest topic {topic:?} (known: queue, timezone, dead_letter_topic)"),
                    ))
                }
            }
        }
        Ok(Ingest {
            topic: topic.to_string(),
            decoder,
            dead_letter_topic,
        })
    }
}

impl KafkaConfig {
    /// The consumer group that reads the retry tiers: `{group}.retry`. Retries have a consumer
    /// of their own so a storm of them waiting for their time never holds back fresh jobs.
    pub fn retry_group(&self) -> String {
        format!("{}.retry", self.group)
    }

    /// The consumer group that reads the schedule topic: `{group}.schedule`. Each of its
    /// partitions is one worker's to move to the queues when due.
    pub fn schedule_group(&self) -> String {
        format!("{}.schedule", self.group)
    }

    /// The group whose committed offsets on the dead-letter topic mark where the list starts
    /// (`dlq purge` moves them; nobody consumes in it): `{group}.dead`.
    pub fn dead_group(&self) -> String {
        format!("{}.dead", self.group)
    }

    /// The consumer group that reads the high-priority queue topics: `{group}.high`. They have
    /// a consumer of their own so a backlog of ordinary jobs, already fetched by the client,
    /// never sits ahead of an urgent one.
    pub fn urgent_group(&self) -> String {
        format!("{}.high", self.group)
    }

    /// Defaults for the bootstrap list `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            topics: TopicLayout::default(),
            group: "conveyor-workers".to_string(),
            partitions: 6,
            replication: 1,
            compression: Compression::Lz4,
            max_payload_bytes: conveyor_core::DEFAULT_MAX_PAYLOAD_BYTES,
            session_timeout: Duration::from_secs(10),
            pause_at: 512,
            client_properties: BTreeMap::new(),
            ingest: Vec::new(),
            idempotency_window: Duration::from_secs(24 * 3600),
        }
    }

    /// Parses a backend URL. An empty host list falls back to `KAFKA_BROKERS` (the seeds'
    /// variable), as in `kafka://?prefix=acme.`.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let bad = |message: String| Error::invalid("backend", format!("{url:?}: {message}"));
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| bad("must start with kafka://".into()))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = match hosts {
            "" => std::env::var("KAFKA_BROKERS").unwrap_or_default(),
            h => h.to_string(),
        };
        if hosts.is_empty() {
            return Err(bad(
                "no broker address (kafka://HOST:PORT, or set KAFKA_BROKERS)".into(),
            ));
        }
        for host in hosts.split(',') {
            let ok = host
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(bad(format!("{host:?} is not HOST:PORT")));
            }
        }
        let mut config = KafkaConfig::new(hosts);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = |v: &str| {
                v.parse::<i32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(format!("{key} must be a positive number, not {v:?}")))
            };
            match key {
                "prefix" => config.topics.prefix = value.to_string(),
                "ingest" => {
                    let entry = Ingest::parse(value).map_err(|e| bad(e.to_string()))?;
                    config.ingest.push(entry);
                }
                "group" if !value.is_empty() => config.group = value.to_string(),
                "partitions" => config.partitions = number(value)?,
                "replication" => config.replication = number(value)?,
                "max_payload_bytes" => config.max_payload_bytes = number(value)? as usize,
                "pause_at" => config.pause_at = number(value)?.max(2) as usize,
                "session_timeout" => {
                    config.session_timeout = humantime::parse_duration(value).map_err(|e| bad(format!("session_timeout: {e}")))?
                }
                "idempotency_window" => {
                    config.idempotency_window = humantime::parse_duration(value)
                        .map_err(|e| bad(format!("idempotency_window: {e}")))?;
                }
                "compression" => {
                    config.compression = match value {
                        "none" => Compression::None,
                        "gzip" => Compression::Gzip,
                        "snappy" => Compression::Snappy,
                        "lz4" => Compression::Lz4,
                        "zstd" => Compression::Zstd,
                        _ => return Err(bad(format!("compression must be none, gzip, snappy, lz4 or zstd, not {value:?}"))),
                    }
                }
                _ if key.starts_with("librdkafka.") && key.len() > "librdkafka.".len() => {
                    let property = &key["librdkafka.".len()..];
                    config.client_properties.insert(property.to_string(), value.to_string());
                }
                _ => {
                    return Err(bad(format!(
                        "unknown option {key:?} (known: prefix, group, partitions, replication, compression, max_payload_bytes, session_timeout, pause_at, idempotency_window, ingest, librdkafka.PROPERTY)"
                    )))
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ingest_entry_names_its_queue_zone_and_dead_letter_topic() {
        let entry = Ingest::parse(
            "scheduler.jobs.ingest:schedule-request;queue=sms;timezone=Europe/Berlin;dead_letter_topic=scheduler.jobs.dlq",
        )
        .expect("entry");
        assert_eq!(entry.topic, "scheduler.jobs.ingest");
        assert_eq!(entry.decoder.queue, "sms");
        assert_eq!(entry.decoder.zone, "Europe/Berlin".parse().expect("zone"));
        assert_eq!(
            entry.dead_letter_topic.as_deref(),
            Some("scheduler.jobs.dlq")
        );
        let plain = Ingest::parse("job-events:event").expect("entry");
        assert_eq!(plain.decoder.queue, conveyor_core::DEFAULT_QUEUE);
        assert_eq!(plain.dead_letter_topic, None);
    }

    #[test]
    fn a_bad_ingest_entry_is_refused_naming_what_is_wrong() {
        for (value, says) in [
            ("job-events", "TOPIC:FORMAT"),
            ("job-events:xml", "xml"),
            ("job-events:event;colour=blue", "unknown setting \"colour\""),
            ("job-events:event;timezone=Mars/Olympus", "Mars/Olympus"),
            ("job-events:event;queue=", "has no value"),
            ("job-events:event;queue=a b", "queue"),
        ] {
            let err = Ingest::parse(value).expect_err(value).to_string();
            assert!(err.contains(says), "{value}: {err}");
        }
    }

    #[test]
    fn parses_hosts_and_options() {
        let c = KafkaConfig::from_url(
            "kafka://127.0.0.1:9092,127.0.0.1:9093?prefix=acme.&partitions=12&compression=zstd",
        )
        .unwrap();
        assert_eq!(c.brokers, "127.0.0.1:9092,127.0.0.1:9093");
        assert_eq!(c.topics.prefix, "acme.");
        assert_eq!(c.partitions, 12);
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.group, "conveyor-workers");
        assert_eq!(c.pause_at, 512);
        let paced = KafkaConfig::from_url("kafka://127.0.0.1:9092?pause_at=256").unwrap();
        assert_eq!(paced.pause_at, 256);
        assert_eq!(c.idempotency_window, Duration::from_secs(86_400));
        let window = KafkaConfig::from_url("kafka://127.0.0.1:9092?idempotency_window=1h").unwrap();
        assert_eq!(window.idempotency_window, Duration::from_secs(3600));
        let i = KafkaConfig::from_url("kafka://127.0.0.1:9092?ingest=job-events:event&ingest=scheduler.jobs.ingest:schedule-request").unwrap();
        let topics: Vec<&str> = i.ingest.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(topics, ["job-events", "scheduler.jobs.ingest"]);
        assert!(KafkaConfig::from_url("kafka://127.0.0.1:9092?ingest=job-events:yaml").is_err());
        let raw = KafkaConfig::from_url(
            "kafka://127.0.0.1:9092?librdkafka.security.protocol=SSL&librdkafka.client.rack=r1",
        )
        .unwrap();
        assert_eq!(
            raw.client_properties
                .get("security.protocol")
                .map(String::as_str),
            Some("SSL")
        );
        assert_eq!(
            raw.client_properties.get("client.rack").map(String::as_str),
            Some("r1")
        );
    }

    #[test]
    fn rejects_bad_urls_with_the_reason() {
        for (url, needle) in [
            ("sqlite://x", "kafka://"),
            ("kafka://localhost", "HOST:PORT"),
            ("kafka://127.0.0.1:9092?partitions=0", "positive"),
            ("kafka://127.0.0.1:9092?compression=brotli", "compression"),
            ("kafka://127.0.0.1:9092?colour=red", "unknown option"),
            ("kafka://127.0.0.1:9092?librdkafka.=x", "unknown option"),
        ] {
            let err = KafkaConfig::from_url(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
