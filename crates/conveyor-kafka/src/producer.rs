//! Producing records: an idempotent producer with `acks=all`, so an enqueue returns only once
//! every in-sync replica has the record, and retries inside the client cannot duplicate it.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
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

/// The engine's producer and admin client.
pub struct Producer {
    producer: FutureProducer,
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
        let producer = client_config(config, |c| {
            c.set("enable.idempotence", "true")
                .set("acks", "all")
                .set("compression.type", config.compression.as_str())
                .set("linger.ms", "2")
                .set("message.timeout.ms", "30000");
        });
        Ok(Producer {
            producer: producer.create()?,
            admin: client_config(config, |_| {}).create()?,
            created: Mutex::new(HashSet::new()),
            config: config.clone(),
        })
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
        let delivery = self.producer.send(out, Duration::from_secs(30)).await;
        let delivered = delivery.map_err(|(err, _)| Error::Client(err))?;
        Ok(Delivered {
            partition: delivered.partition,
            offset: delivered.offset,
        })
    }
}
