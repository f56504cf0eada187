//! The Kafka engine against a real broker (tansu, started by scripts/dev-broker).

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor_core::{
    handler_fn, Backoff, Engine, JobEvent, NewJob, Outcome, Registry, Worker, WorkerConfig,
};
use conveyor_kafka::envelope::header;
use conveyor_kafka::producer::Producer;
use conveyor_kafka::{KafkaEngine, Record};
use serde_json::json;
use support::{fresh_config, header as text, read_topic};
use tokio::sync::broadcast;

fn quick() -> WorkerConfig {
    WorkerConfig {
        concurrency: 32,
        poll_interval: Duration::from_millis(20),
        backoff: Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(200),
            jitter: 0.0,
        },
        ..WorkerConfig::default()
    }
}

/// Collects events until `done` says so (bounded by 60 s).
async fn collect(
    events: &mut broadcast::Receiver<JobEvent>,
    done: impl Fn(&[JobEvent]) -> bool,
) -> Vec<JobEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) => seen.push(event),
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => panic!("missed {n} events"),
            other => panic!("events stopped after {} ({other:?}): {seen:?}", seen.len()),
        }
    }
    seen
}

fn completed(seen: &[JobEvent]) -> HashSet<conveyor_core::JobId> {
    seen.iter()
        .filter(|e| matches!(e, JobEvent::Completed { .. }))
        .map(JobEvent::id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_retries_pass_through_a_tier_and_everything_is_committed() {
    let config = fresh_config(3);
    let engine: Arc<KafkaEngine> =
        Arc::new(KafkaEngine::connect(config.clone()).await.expect("connect"));
    let mut jobs: Vec<NewJob> = (0..200)
        .map(|i| NewJob::new("noop", json!({"i": i})))
        .collect();
    jobs.extend((0..5).map(|_| NewJob::new("fail", json!({"times": 1}))));
    let ids: HashSet<_> = engine
        .enqueue_batch(jobs)
        .await
        .expect("enqueue")
        .into_iter()
        .map(|e| e.id)
        .collect();
    let worker = Worker::new(engine.clone(), Registry::with_builtins(), quick());
    let mut events = worker.events();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let seen = collect(&mut events, |s| completed(s).len() >= ids.len()).await;
    assert_eq!(completed(&seen), ids, "every acknowledged job completed");
    let failed = seen
        .iter()
        .filter(|e| matches!(e, JobEvent::Failed { .. }))
        .count();
    assert_eq!(
        failed, 5,
        "each fail job failed once, then passed through the retry tier"
    );
    let _ = stop.send(());
    running.await.expect("join").expect("worker");

    // A second worker in the same group runs only what was enqueued after: every offset of
    // the first run was committed.
    let marker = engine
        .enqueue(NewJob::new("noop", json!({"marker": true})))
        .await
        .expect("enqueue")
        .id;
    let again = Worker::new(
        engine.clone(),
        Registry::with_builtins(),
        WorkerConfig {
            owner: "second".into(),
            ..quick()
        },
    );
    let mut again_events = again.events();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(again.run(async move {
        let _ = stopped.await;
    }));
    let seen = collect(&mut again_events, |s| completed(s).contains(&marker)).await;
    let _ = stop.send(());
    running.await.expect("join").expect("worker");
    let started: HashSet<_> = seen
        .iter()
        .filter(|e| matches!(e, JobEvent::Started { .. }))
        .map(JobEvent::id)
        .collect();
    assert_eq!(
        started,
        HashSet::from([marker]),
        "a committed job ran again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_dead_lettered_and_the_partition_keeps_moving() {
    let config = fresh_config(1);
    let engine = Arc::new(KafkaEngine::connect(config.clone()).await.expect("connect"));
    let queue_topic = config.topics.queue("default");
    let producer = Producer::new(&config).expect("producer");
    producer
        .ensure_topics(std::slice::from_ref(&queue_topic))
        .await
        .expect("topic");
    // A plain producer writes garbage at the head of the only partition.
    let poison = Record {
        key: None,
        value: Some(b"{\"hello\": \"not a job\"}".to_vec()),
        headers: vec![],
    };
    let at = producer
        .send(&queue_topic, &poison)
        .await
        .expect("produce poison");
    let good = engine
        .enqueue(NewJob::new("noop", json!({})))
        .await
        .expect("enqueue")
        .id;
    let worker = Worker::new(engine.clone(), Registry::with_builtins(), quick());
    let mut events = worker.events();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let seen = collect(&mut events, |s| completed(s).contains(&good)).await;
    assert!(
        completed(&seen).contains(&good),
        "the job behind the poison record ran"
    );
    let _ = stop.send(());
    running.await.expect("join").expect("worker");
    let dead = read_topic(&config, &config.topics.dead(), 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].value, poison.value,
        "the poison record is kept as it was"
    );
    assert_eq!(text(&dead[0], header::ORIGINAL_TOPIC), queue_topic);
    assert_eq!(
        text(&dead[0], header::ORIGINAL_PARTITION),
        at.partition.to_string()
    );
    assert_eq!(
        text(&dead[0], header::ORIGINAL_OFFSET),
        at.offset.to_string()
    );
    assert!(
        text(&dead[0], header::ERROR_MESSAGE).contains("conveyor-version"),
        "{dead:?}"
    );
    assert!(text(&dead[0], header::ERROR_TIMESTAMP)
        .parse::<i64>()
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_out_of_attempts_is_dead_lettered_with_provenance() {
    let config = fresh_config(2);
    let engine = Arc::new(KafkaEngine::connect(config.clone()).await.expect("connect"));
    let id = engine
        .enqueue(NewJob::new("fail", json!({})).max_attempts(2))
        .await
        .expect("enqueue")
        .id;
    let worker = Worker::new(engine.clone(), Registry::with_builtins(), quick());
    let mut events = worker.events();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    collect(&mut events, |s| {
        s.iter().any(|e| matches!(e, JobEvent::Dead { .. }))
    })
    .await;
    let _ = stop.send(());
    running.await.expect("join").expect("worker");
    let dead = read_topic(&config, &config.topics.dead(), 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(text(&dead[0], header::ID), id.to_string());
    assert_eq!(text(&dead[0], header::ATTEMPT), "2");
    assert!(text(&dead[0], header::ERROR_MESSAGE).contains("always fails"));
    assert!(
        text(&dead[0], header::ORIGINAL_TOPIC).contains(".retry."),
        "the last attempt came from a retry tier"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordering_key_runs_in_order_also_across_a_retry() {
    let config = fresh_config(3);
    let engine = Arc::new(KafkaEngine::connect(config.clone()).await.expect("connect"));
    let order = Arc::new(Mutex::new(Vec::new()));
    let log = order.clone();
    let mut registry = Registry::new();
    registry.register(handler_fn("step", move |ctx| {
        let log = log.clone();
        async move {
            let n = serde_json::from_str::<serde_json::Value>(&ctx.job().payload)
                .ok()
                .and_then(|v| v["n"].as_u64())
                .unwrap_or(99);
            log.lock().expect("lock").push(n);
            if n == 2 && ctx.attempt() == 1 {
                return Outcome::Retry("transient".into());
            }
            Outcome::Complete
        }
    }));
    let jobs: Vec<NewJob> = (0..8)
        .map(|n| NewJob::new("step", json!({"n": n})).ordering_key("account-9"))
        .collect();
    engine.enqueue_batch(jobs).await.expect("enqueue");
    let worker = Worker::new(engine.clone(), registry, quick());
    let mut events = worker.events();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    collect(&mut events, |s| completed(s).len() >= 8).await;
    let _ = stop.send(());
    running.await.expect("join").expect("worker");
    assert_eq!(*order.lock().expect("lock"), [0, 1, 2, 2, 3, 4, 5, 6, 7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_are_refused_with_a_clear_error_until_the_scheduler_exists() {
    let engine = KafkaEngine::connect(fresh_config(1))
        .await
        .expect("connect");
    let err = engine
        .enqueue(NewJob::new("noop", json!({})).run_in(Duration::from_secs(60)))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("run_at"), "{err}");
    assert!(err.is_input_error());
}
