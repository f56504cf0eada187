//! The Kafka side of `conveyor bench`: fresh topics (a new prefix) and a new consumer group on
//! the given brokers; the ceiling is a plain rdkafka produce and consume of the same records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use conveyor::{Engine, KafkaConfig, KafkaEngine, NewJob};
use conveyor_kafka::producer::{client_config, Producer};
use conveyor_kafka::Envelope;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::paced::{self, Pace};
use super::{delayed, drain, enqueue_noops, round_trips, BenchResult, Plan, Workload};

/// Runs one workload.
pub async fn run(url: &str, plan: Plan) -> Result<Vec<BenchResult>> {
    let Plan {
        workload,
        jobs,
        concurrency,
        pace,
        seconds,
        workers: plan_workers,
    } = plan;
    let mut config = KafkaConfig::from_url(url).map_err(conveyor::Error::from)?;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    config.topics.prefix = format!("{}bench-{}.", config.topics.prefix, &tag[20..]);
    config.group = format!("{}-bench-{}", config.group, &tag[20..]);
    let kafka = Arc::new(KafkaEngine::connect(config.clone()).await?);
    let engine: Arc<dyn Engine> = kafka.clone();
    let backend = format!("kafka ({})", config.brokers);
    match workload {
        Workload::BurnDown => {
            let enqueue_rate = enqueue_noops(&engine, jobs).await?;
            let seconds = drain(&engine, jobs, concurrency).await?;
            let ceiling = raw_consume_rate(&config, jobs).await?;
            Ok(vec![BenchResult::burn_down(
                backend,
                jobs,
                seconds,
                enqueue_rate,
                ceiling,
            )])
        }
        Workload::Latency => {
            let (samples, seconds) = round_trips(&engine, jobs).await?;
            let ceiling = raw_round_trips(&config, jobs).await?;
            Ok(vec![BenchResult::latency(
                backend, &samples, seconds, ceiling,
            )])
        }
        Workload::Delayed => {
            let run = delayed::run(&engine, jobs, seconds, concurrency).await?;
            Ok(vec![BenchResult::delayed(backend, &run)])
        }
        Workload::Pool => super::pool::run(&engine, &backend, jobs, concurrency).await,
        Workload::HotKey => super::hot_key::run(&engine, &backend, jobs, concurrency).await,
        Workload::Fleet => {
            super::fleet::run(url, &config, &engine, &backend, plan_workers, pace).await
        }
        Workload::Scheduled => {
            super::scheduled::run(&engine, &backend, jobs, pace, concurrency).await
        }
        Workload::DeepBacklog => bail!(
            "deep-backlog is a SQLite workload: a Kafka worker reads on from its group's offset, \
             so how many records follow it never enters a fetch"
        ),
        Workload::Http => {
            let conveyor = conveyor::Conveyor::from_parts(kafka.clone(), kafka.capabilities());
            super::http::run(conveyor, &engine, &backend, jobs).await
        }
        Workload::Sustained | Workload::RetryStorm => {
            let storm = if workload == Workload::RetryStorm {
                jobs
            } else {
                0
            };
            let run = match paced::run(&engine, pace, storm, concurrency).await {
                Ok(run) => run,
                Err(err) => return Err(with_group_offsets(err, &kafka).await),
            };
            let raw = raw_paced(&config, pace).await?;
            Ok(vec![BenchResult::paced(
                workload,
                backend,
                &run,
                Some(&raw),
            )])
        }
    }
}

/// The record a no-op job is on the wire, produced `jobs` times to a fresh topic.
async fn fill_raw_topic(config: &KafkaConfig, topic: &str, jobs: usize) -> Result<()> {
    let producer = Producer::new(config)?;
    producer.ensure_topics(&[topic.to_string()]).await?;
    let job = NewJob::new("noop", serde_json::json!({}));
    let record = Envelope::from_new_job(&job, "{}".into(), conveyor::now_ms()).to_record();
    let mut left = jobs;
    while left > 0 {
        let n = left.min(1000);
        left -= n;
        let sends = (0..n).map(|_| producer.send(topic, &record));
        for sent in futures::future::join_all(sends).await {
            sent?;
        }
    }
    Ok(())
}

fn reader(
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
    from: Offset,
) -> Result<BaseConsumer> {
    // Connected as the engine's clients are (security settings from `librdkafka.*` included).
    let consumer: BaseConsumer = client_config(config, |c| {
        c.set("group.id", format!("{}-raw", config.group))
            .set("enable.auto.commit", "false")
            // The same fetch wait as Conveyor's consumers, so both sides poll alike.
            .set("fetch.wait.max.ms", "10");
    })
    .create()?;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, from)?;
    }
    consumer.assign(&list)?;
    Ok(consumer)
}

/// Records per second a plain consumer reads the same records at.
async fn raw_consume_rate(config: &KafkaConfig, jobs: usize) -> Result<f64> {
    let topic = format!("{}raw", config.topics.prefix);
    fill_raw_topic(config, &topic, jobs).await?;
    let consumer = reader(config, &topic, config.partitions, Offset::Beginning)?;
    tokio::task::spawn_blocking(move || {
        let mut seen = 0;
        let mut started = None;
        let deadline = Instant::now() + Duration::from_secs(300);
        while seen < jobs {
            if Instant::now() > deadline {
                bail!("the raw consumer read {seen} of {jobs} records in 300 s");
            }
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                message.context("raw consume")?;
                started.get_or_insert_with(Instant::now);
                seen += 1;
            }
        }
        Ok(jobs as f64 / started.map_or(1.0, |t: Instant| t.elapsed().as_secs_f64()))
    })
    .await?
}

/// Sequential produce-then-consume round trips per second, the floor of enqueue -> start.
async fn raw_round_trips(config: &KafkaConfig, jobs: usize) -> Result<f64> {
    let topic = format!("{}raw-latency", config.topics.prefix);
    let producer = Producer::new(config)?;
    producer.ensure_topics(std::slice::from_ref(&topic)).await?;
    let consumer = Arc::new(reader(config, &topic, config.partitions, Offset::End)?);
    let record =
        Envelope::from_new_job(&NewJob::new("noop", serde_json::json!({})), "{}".into(), 0)
            .to_record();
    // Let the consumer settle on the end of the empty topic before timing.
    let warm = consumer.clone();
    tokio::task::spawn_blocking(move || {
        let _ = warm.poll(Duration::from_millis(500)).is_some();
    })
    .await?;
    let started = Instant::now();
    for _ in 0..jobs {
        producer.send(&topic, &record).await?;
        let reader = consumer.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(message) = reader.poll(Duration::from_millis(100)) {
                    message.context("raw consume")?;
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("a raw record did not arrive within 10 s");
                }
            }
        })
        .await??;
    }
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

/// The same paced stream through a plain producer and consumer: latencies (ms, sorted) from
/// each record's intended send time to its arrival. The floor of the paced workloads.
async fn raw_paced(config: &KafkaConfig, pace: Pace) -> Result<Vec<f64>> {
    let topic = format!("{}raw-paced", config.topics.prefix);
    let producer = Arc::new(Producer::new(config)?);
    producer.ensure_topics(std::slice::from_ref(&topic)).await?;
    // The topic is new and empty: reading from its start misses nothing, whenever the
    // consumer gets going.
    let consumer = reader(config, &topic, config.partitions, Offset::Beginning)?;
    let consumer = tokio::task::spawn_blocking(move || {
        let _ = consumer.poll(Duration::from_millis(500)).is_some();
        consumer
    })
    .await?;
    let start = Instant::now();
    let arrivals = tokio::task::spawn_blocking(move || -> Result<Vec<f64>> {
        let mut samples = Vec::with_capacity(pace.total);
        let deadline = Instant::now() + Duration::from_secs(60) + pace.duration();
        while samples.len() < pace.total {
            if Instant::now() > deadline {
                bail!(
                    "the raw consumer read {} of {} paced records",
                    samples.len(),
                    pace.total
                );
            }
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.context("raw consume")?;
            let at = Instant::now();
            if let Some(i) = message.payload().and_then(paced::index_of) {
                let late = at.saturating_duration_since(pace.intended(start, i));
                samples.push(late.as_secs_f64() * 1000.0);
            }
        }
        samples.sort_by(f64::total_cmp);
        Ok(samples)
    });
    paced::pace_sends(pace, start, move |range| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            let records: Vec<_> = range
                .map(|i| {
                    let job = paced::paced_job(i);
                    let payload = job.payload.to_string();
                    Envelope::from_new_job(&job, payload, conveyor::now_ms()).to_record()
                })
                .collect();
            let sends = records.iter().map(|r| producer.send(&topic, r));
            for sent in futures::future::join_all(sends).await {
                sent?;
            }
            Ok(())
        }
    })
    .await?;
    arrivals.await?
}

/// Adds where the workers' group stands per partition to a failed run's error: lag left means
/// jobs are stuck in the broker, no lag with jobs missing means a commit passed them.
async fn with_group_offsets(err: anyhow::Error, kafka: &KafkaEngine) -> anyhow::Error {
    match conveyor::Statistics::stats(kafka).await {
        Ok(stats) => {
            let partitions: Vec<String> = stats
                .queues
                .iter()
                .flat_map(|q| &q.partitions)
                .map(|p| {
                    format!(
                        "{}/{} committed {} of {}",
                        p.topic, p.partition, p.committed, p.end
                    )
                })
                .collect();
            err.context(format!(
                "the group's offsets then: {}",
                partitions.join(", ")
            ))
        }
        Err(stats_err) => err.context(format!(
            "(the group's offsets could not be read: {stats_err})"
        )),
    }
}
