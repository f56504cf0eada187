//! Producing records: an idempotent producer with `acks=all`, so an enqueue returns only once
//! every in-sync replica has the record, and retries inside the client cannot duplicate it.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;

use crate::{Error, KafkaConfig, Record};

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Least time between two replacements of the producer.
const RENEW_AT_MOST_EVERY: Duration = Duration::from_secs(5);

/// The engine's producer and admin client.
pub struct Producer {
    /// Replaced by a new one when the broker stops taking its records for good (see
    /// [`needs_new_producer`]).
    producer: std::sync::RwLock<FutureProducer>,
    /// When the producer was last replaced.
    renewed: Mutex<Option<std::time::Instant>>,
    admin: AdminClient<DefaultClientContext>,
    created: Mutex<HashSet<String>>,
    config: KafkaConfig,
}

/// The client settings every Conveyor client shares; `apply` adds the role's own settings
/// before the user's raw properties (`librdkafka.*` URL options), which win. Public so tools
/// beside the engine (the bench's raw ceiling) connect exactly as the engine does.
pub fn client_config(config: &KafkaConfig, apply: impl FnOnce(&mut ClientConfig)) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    client.set("client.id", "conveyor");
    apply(&mut client);
    for (key, value) in &config.client_properties {
        client.set(key, value);
    }
    client
}

impl Producer {
    /// Connects (lazily, as librdkafka does) with the engine's settings.
    pub fn new(config: &KafkaConfig) -> Result<Self, Error> {
        Ok(Producer {
            producer: std::sync::RwLock::new(Self::create(config)?),
            renewed: Mutex::new(None),
            admin: client_config(config, |_| {}).create()?,
            created: Mutex::new(HashSet::new()),
            config: config.clone(),
        })
    }

    fn create(config: &KafkaConfig) -> Result<FutureProducer, Error> {
        let producer = client_config(config, |c| {
            c.set("enable.idempotence", "true")
                .set("acks", "all")
                .set("compression.type", config.compression.as_str())
                .set("linger.ms", "2")
                .set("message.timeout.ms", "30000");
        });
        Ok(producer.create()?)
    }

    fn current(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces `failed` (if it is still the producer in use) by a new one: a new producer id
    /// and sequence, which a broker that lost its producer state after a restart takes again.
    /// At most once per [`RENEW_AT_MOST_EVERY`]: a broker that refuses records for another
    /// reason must not get a new client per record.
    fn renew(&self, failed: &FutureProducer) {
        let mut producer = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if !std::ptr::eq(producer.client().native_ptr(), failed.client().native_ptr()) {
            return; // another send renewed it already
        }
        {
            let mut last = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < RENEW_AT_MOST_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        match Self::create(&self.config) {
            Ok(fresh) => {
                tracing::warn!(
                    "the broker refused the producer's records: producing with a new producer"
                );
                *producer = fresh;
            }
            Err(err) => tracing::warn!(error = %err, "cannot make a new producer"),
        }
    }

    /// Creates the topics that do not exist yet, with the configured partitions and
    /// replication. Topics this process already made sure of are skipped.
    pub async fn ensure_topics(&self, topics: &[String]) -> Result<(), Error> {
        let missing: Vec<&String> = {
            let created = self.created.lock().unwrap_or_else(|e| e.into_inner());
            topics.iter().filter(|t| !created.contains(*t)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let specs: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.config.partitions,
                    TopicReplication::Fixed(self.config.replication),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in self.admin.create_topics(specs.iter(), &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(Error::Topic {
                        topic,
                        reason: code.to_string(),
                    })
                }
            }
        }
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        created.extend(missing.into_iter().cloned());
        Ok(())
    }

    /// The names of every topic of the cluster.
    pub async fn topic_names(&self) -> Result<Vec<String>, Error> {
        let producer = self.current();
        tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(None, Duration::from_secs(10))?;
            Ok(metadata
                .topics()
                .iter()
                .map(|t| t.name().to_string())
                .collect())
        })
        .await
        .map_err(|e| Error::Topic {
            topic: "-".into(),
            reason: format!("metadata task failed: {e}"),
        })?
    }

    /// How many partitions `topic` has (from the cluster's metadata).
    pub async fn partition_count(&self, topic: &str) -> Result<usize, Error> {
        let producer = self.current();
        let topic = topic.to_string();
        let count = tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            let partitions = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len());
            match partitions {
                0 => Err(Error::Topic {
                    topic,
                    reason: "the topic has no partitions (is it missing?)".into(),
                }),
                n => Ok(n),
            }
        })
        .await
        .map_err(|e| Error::Topic {
            topic: "-".into(),
            reason: format!("metadata task failed: {e}"),
        })??;
        Ok(count)
    }

    /// Produces one record and waits until the broker acknowledged it.
    pub async fn send(&self, topic: &str, record: &Record) -> Result<Delivered, Error> {
        self.send_to(topic, None, record).await
    }

    /// Produces one record into `partition` (else where its key leads) and waits until the
    /// broker acknowledged it.
    pub async fn send_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        record: &Record,
    ) -> Result<Delivered, Error> {
        let producer = self.current();
        match self.send_with(&producer, topic, partition, record).await {
            Err(Error::Client(err)) if needs_new_producer(&producer, &err) => {
                // Once more with a new producer; the refused record was not written.
                self.renew(&producer);
                self.send_with(&self.current(), topic, partition, record)
                    .await
            }
            sent => sent,
        }
    }

    async fn send_with(
        &self,
        producer: &FutureProducer,
        topic: &str,
        partition: Option<i32>,
        record: &Record,
    ) -> Result<Delivered, Error> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut out = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
        if let Some(partition) = partition {
            out = out.partition(partition);
        }
        if let Some(key) = &record.key {
            out = out.key(key);
        }
        if let Some(value) = &record.value {
            out = out.payload(value);
        }
        let delivery = producer.send(out, Duration::from_secs(30)).await;
        let delivered = delivery.map_err(|(err, _)| Error::Client(err))?;
        Ok(Delivered {
            partition: delivered.partition,
            offset: delivered.offset,
        })
    }
}

/// True when `producer` will not get records through again: it hit a fatal error, or the broker
/// answered with an error an idempotent producer does not recover from by itself. Seen on tansu
/// after a restart of its SQLite storage: every later record of the producer was refused with
/// `UNKNOWN_SERVER_ERROR`, so due jobs were never moved to their queues.
fn needs_new_producer(producer: &FutureProducer, err: &rdkafka::error::KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    producer.client().fatal_error().is_some()
        || matches!(
            err.rdkafka_error_code(),
            Some(
                Code::Unknown
                    | Code::UnknownProducerId
                    | Code::OutOfOrderSequenceNumber
                    | Code::InvalidProducerEpoch
                    | Code::InvalidProducerIdMapping
                    | Code::Fatal
            )
        )
}
