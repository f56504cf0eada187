//! Kafka-specific behaviour against a real broker (tansu, started by scripts/dev-broker): what
//! the engine conformance suite cannot see through worker events alone.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use conveyor_conformance::{attempts, dead_error, run, test_config};
use conveyor_core::{
    DeadLetterList, Engine, JobEvent, JobId, NewJob, Registry, Statistics, WorkerConfig,
};
use conveyor_kafka::envelope::header;
use conveyor_kafka::producer::Producer;
use conveyor_kafka::{KafkaConfig, KafkaEngine, Record};
use serde_json::json;
use support::{fresh_config, header as text, read_topic};

async fn connect(partitions: i32) -> (conveyor_kafka::KafkaConfig, Arc<dyn Engine>) {
    let config = fresh_config(partitions);
    let engine = KafkaEngine::connect(config.clone()).await.expect("connect");
    (config, Arc::new(engine))
}

/// Ids of the jobs that started at least once.
fn started(events: &[JobEvent]) -> HashSet<JobId> {
    events
        .iter()
        .filter(|e| matches!(e, JobEvent::Started { .. }))
        .map(JobEvent::id)
        .collect()
}

/// Enqueues `jobs` in one batch; returns their ids in order.
async fn enqueue_all(engine: &Arc<dyn Engine>, jobs: Vec<NewJob>) -> Vec<JobId> {
    let enqueued = engine.enqueue_batch(jobs).await.expect("enqueue");
    enqueued.into_iter().map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_pass_through_a_tier_and_every_finished_offset_is_committed() {
    let (_, engine) = connect(3).await;
    let mut jobs: Vec<NewJob> = (0..200)
        .map(|i| NewJob::new("noop", json!({"i": i})))
        .collect();
    jobs.extend((0..5).map(|_| NewJob::new("fail", json!({"times": 1}))));
    let ids: Vec<_> = enqueue_all(&engine, jobs).await;
    let mut worker = run(
        &engine,
        Registry::with_builtins(),
        WorkerConfig {
            concurrency: 32,
            ..test_config()
        },
    );
    worker.until_completed(&ids).await;
    let events = worker.stop().await;
    let failed = events
        .iter()
        .filter(|e| matches!(e, JobEvent::Failed { .. }))
        .count();
    assert_eq!(
        failed, 5,
        "each fail job failed once, then passed through the retry tier"
    );

    // A second worker in the same group runs only what was enqueued after: every offset of
    // the first run was committed.
    let marker = engine
        .enqueue(NewJob::new("noop", json!({"marker": true})))
        .await
        .expect("enqueue")
        .id;
    let mut again = run(&engine, Registry::with_builtins(), test_config());
    again.until_completed(&[marker]).await;
    let events = again.stop().await;
    let started = started(&events);
    assert_eq!(
        started,
        HashSet::from([marker]),
        "a committed job ran again"
    );
}

/// A worker that resumes from a committed offset inside a producer batch gets the rest of that
/// batch. (tansu 0.6's memory storage skipped it until scripts/tansu/ patched it: the fleet test
/// lost jobs that way.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_resuming_inside_a_producer_batch_runs_the_rest_of_it() {
    let (_, engine) = connect(1).await;
    // One enqueue_batch on one partition: the producer sends it as few large batches.
    let jobs: Vec<NewJob> = (0..300)
        .map(|n| NewJob::new("step", json!({"n": n})))
        .collect();
    let ids: Vec<_> = enqueue_all(&engine, jobs).await;
    // The first worker finishes jobs 0..100 and holds the next ones until it is stopped, so
    // the committed offset lands at 100, inside a batch.
    let mut first = Registry::new();
    first.register(conveyor_core::handler_fn("step", |ctx| async move {
        let n = ctx
            .payload::<serde_json::Value>()
            .ok()
            .and_then(|p| p["n"].as_u64());
        if n.is_some_and(|n| n >= 100) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        conveyor_core::Outcome::Complete
    }));
    let stop_fast = WorkerConfig {
        shutdown_grace: Duration::from_millis(100),
        ..test_config()
    };
    let mut worker = run(&engine, first, stop_fast);
    worker.until_completed(&ids[..100]).await;
    worker.stop().await;

    let mut second = Registry::new();
    second.register(conveyor_core::handler_fn("step", |_| async {
        conveyor_core::Outcome::Complete
    }));
    let mut worker = run(&engine, second, test_config());
    worker.until_completed(&ids[100..]).await;
    let events = worker.stop().await;
    let started = started(&events);
    assert_eq!(
        started,
        ids[100..].iter().copied().collect(),
        "exactly the rest ran"
    );
}

/// A storm of retries waiting for their time (more than a lane's buffer holds) does not stop a
/// worker from reading and running fresh jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_jobs_flow_while_a_retry_storm_waits() {
    const STORM: usize = 5000;
    let (_, engine) = connect(3).await;
    let storm: Vec<NewJob> = (0..STORM)
        .map(|_| NewJob::new("storm", json!({})).queue("storm"))
        .collect();
    engine
        .enqueue_batch(storm)
        .await
        .expect("enqueue the storm");
    let mut registry = Registry::with_builtins();
    registry.register(conveyor_core::handler_fn("storm", |ctx| async move {
        if ctx.attempt() == 1 {
            conveyor_core::Outcome::RetryAfter {
                delay: Duration::from_secs(60),
                error: "storm".into(),
            }
        } else {
            conveyor_core::Outcome::Complete
        }
    }));
    let config = WorkerConfig {
        concurrency: 64,
        ..test_config()
    };
    let mut worker = run(&engine, registry, config);
    worker
        .until("every storm job failed once", |seen| {
            seen.iter()
                .filter(|e| matches!(e, JobEvent::Failed { .. }))
                .count()
                >= STORM
        })
        .await;
    let healthy: Vec<NewJob> = (0..50)
        .map(|i| NewJob::new("noop", json!({"i": i})))
        .collect();
    let healthy: Vec<_> = enqueue_all(&engine, healthy).await;
    // The storm's retries are due in a minute; the healthy jobs must not wait for them.
    worker.until_completed(&healthy).await;
    let events = worker.stop().await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, JobEvent::Started { attempt: 2, .. })),
        "no retry ran before its time"
    );
}

/// Position in `events` where each job first started.
fn start_positions(events: &[JobEvent]) -> std::collections::HashMap<JobId, usize> {
    let mut at = std::collections::HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if let JobEvent::Started { .. } = e {
            at.entry(e.id()).or_insert(i);
        }
    }
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_jobs_overtake_a_backlog_and_low_ones_wait_for_it() {
    const BACKLOG: usize = 1500;
    let (config, engine) = connect(3).await;
    let slow = |i: usize, priority: i32| NewJob::new("slow", json!({"i": i})).priority(priority);
    let backlog = enqueue_all(&engine, (0..BACKLOG).map(|i| slow(i, 0)).collect()).await;
    // One job of each other level up front: the worker finds their topics when it joins.
    let first_urgent = enqueue_all(&engine, vec![slow(0, 10)]).await;
    enqueue_all(&engine, vec![slow(0, -10)]).await;
    let mut registry = Registry::new();
    registry.register(conveyor_core::handler_fn("slow", |_ctx| async move {
        tokio::time::sleep(Duration::from_millis(4)).await;
        conveyor_core::Outcome::Complete
    }));
    let worker_config = WorkerConfig {
        concurrency: 2,
        ..test_config()
    };
    let mut worker = run(&engine, registry, worker_config);
    worker.until_completed(&first_urgent).await;
    worker
        .until("a tenth of the backlog done", |seen| {
            conveyor_conformance::completed(seen).len() > BACKLOG / 10
        })
        .await;
    let urgent = enqueue_all(&engine, (0..20).map(|i| slow(i, 10)).collect()).await;
    let low = enqueue_all(&engine, (0..20).map(|i| slow(i, -10)).collect()).await;
    let backlog_done_when_urgent_done = {
        let seen = worker.until_completed(&urgent).await;
        let done = conveyor_conformance::completed(seen);
        backlog.iter().filter(|id| done.contains(id)).count()
    };
    assert!(
        backlog_done_when_urgent_done < BACKLOG / 2,
        "urgent jobs waited for the backlog: {backlog_done_when_urgent_done} of {BACKLOG} done first"
    );
    worker.until_completed(&low).await;
    worker.until_completed(&backlog).await;
    let events = worker.stop().await;
    let at = start_positions(&events);
    // Ready urgent jobs all go before any ordinary one (not merely in turns with them): only
    // jobs handed out while an urgent record was still on its way start in between.
    let urgent_starts: Vec<usize> = urgent.iter().filter_map(|id| at.get(id).copied()).collect();
    let (first, last) = (urgent_starts.iter().min(), urgent_starts.iter().max());
    let interleaved = backlog
        .iter()
        .filter_map(|id| at.get(id))
        .filter(|p| Some(*p) > first && Some(*p) < last)
        .count();
    assert!(
        interleaved <= 6,
        "{interleaved} backlog jobs started between the first and the last urgent one"
    );
    let first_low = low.iter().filter_map(|id| at.get(id)).min().copied();
    let backlog_before_low = backlog
        .iter()
        .filter(|id| at.get(id).copied() < first_low)
        .count();
    assert!(
        backlog_before_low >= BACKLOG * 9 / 10,
        "low jobs overtook the backlog: only {backlog_before_low} of {BACKLOG} started before them"
    );
    // Each level has a topic of its own.
    let high_topic = config
        .topics
        .queue_at("default", conveyor_kafka::Level::High);
    let records = read_topic(&config, &high_topic, 21).await;
    assert_eq!(records.len(), 21);
    assert!(records
        .iter()
        .all(|r| text(r, header::PRIORITY) == "10" && r.key.is_some()));
}

/// A producer of the engine's own, and the default queue's topic, created.
async fn default_queue_producer(config: &KafkaConfig) -> (Producer, String) {
    let queue_topic = config.topics.queue("default");
    let producer = Producer::new(config).expect("producer");
    producer
        .ensure_topics(std::slice::from_ref(&queue_topic))
        .await
        .expect("topic");
    (producer, queue_topic)
}

/// A header name that is not UTF-8 (any bytes are valid on the wire): rdkafka 0.39 panics
/// reading it, which ended the lane's poll loop, so the job behind it never ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_name_that_is_not_utf8_is_dead_lettered_and_the_lane_keeps_reading() {
    use rdkafka::bindings::{rd_kafka_header_add, rd_kafka_headers_t};
    use rdkafka::message::{BorrowedHeaders, Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let (config, engine) = connect(1).await;
    let (_, queue_topic) = default_queue_producer(&config).await;
    let headers = OwnedHeaders::new().insert(Header {
        key: header::VERSION,
        value: Some("1"),
    });
    let native = (headers.as_borrowed() as *const BorrowedHeaders)
        .cast_mut()
        .cast::<rd_kafka_headers_t>();
    let (name, value) = (b"x-\xff", b"v");
    // SAFETY: `as_borrowed` is the address of the librdkafka headers object `headers` owns
    // (rdkafka makes its `BorrowedHeaders` by this very cast), alive until it is sent;
    // librdkafka copies the name and value it is given.
    let added = unsafe {
        rd_kafka_header_add(
            native,
            name.as_ptr().cast(),
            name.len() as isize,
            value.as_ptr().cast(),
            value.len() as isize,
        )
    };
    assert_eq!(added as i32, 0, "librdkafka took the header");
    let raw: FutureProducer = conveyor_kafka::producer::client_config(&config, |_| {})
        .create()
        .expect("raw producer");
    raw.send(
        FutureRecord::<[u8], [u8]>::to(&queue_topic)
            .payload(&b"{}"[..])
            .headers(headers),
        Duration::from_secs(10),
    )
    .await
    .expect("produce the record");
    let good = engine
        .enqueue(NewJob::new("noop", json!({})))
        .await
        .expect("enqueue")
        .id;
    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    worker.until_completed(&[good]).await;
    worker.stop().await;
    let dead = read_topic(&config, &config.topics.dead(), 1).await;
    assert_eq!(dead.len(), 1);
    let error = text(&dead[0], header::ERROR_MESSAGE);
    assert!(
        error.contains("`header #1`") && error.contains("not UTF-8"),
        "{error}"
    );
    assert_eq!(
        text(&dead[0], header::VERSION),
        "1",
        "readable headers are kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_dead_lettered_and_the_partition_keeps_moving() {
    let (config, engine) = connect(1).await;
    let (producer, queue_topic) = default_queue_producer(&config).await;
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
    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    worker.until_completed(&[good]).await;
    worker.stop().await;
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

    // The dead-letter list and the counts show it, attributed to the queue it was read from.
    let inspector = KafkaEngine::connect(config.clone()).await.expect("connect");
    let listed = inspector.list_dead(10).await.expect("list dead");
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let letter = &listed[0];
    assert_eq!(letter.original_queue, "default");
    assert_eq!(letter.original_topic.as_deref(), Some(queue_topic.as_str()));
    assert_eq!(letter.original_partition, Some(at.partition));
    assert_eq!(letter.original_offset, Some(at.offset));
    assert_eq!(letter.job.kind, "unknown");
    assert_eq!(letter.job.payload, json!({"hello": "not a job"}));
    assert!(
        letter
            .job
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("undecodable record")),
        "{letter:?}"
    );
    let stats = inspector.stats().await.expect("stats");
    let default = stats.queue("default").expect("default queue");
    assert_eq!(
        (default.available, default.completed, default.dead),
        (0, 1, 1),
        "{stats:?}"
    );
    assert_eq!(default.partitions.len(), 1);
    assert_eq!(default.partitions[0].lag, 0);
    assert_eq!(default.partitions[0].end, at.offset + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_out_of_attempts_is_dead_lettered_with_provenance() {
    let (config, engine) = connect(2).await;
    let id = engine
        .enqueue(NewJob::new("fail", json!({})).max_attempts(2))
        .await
        .expect("enqueue")
        .id;
    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    worker
        .until("the job dead", |seen| dead_error(seen, id).is_some())
        .await;
    assert_eq!(attempts(&worker.stop().await, id), [1, 2]);
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

/// A delayed job waits in the schedule topic, counted as `scheduled` in its queue, while a
/// later-due job stays behind it; at its time a worker moves it to its queue's topic and runs
/// it there, and the schedule group's commit passes it, up to the job still waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_waits_in_the_schedule_topic_then_runs_from_its_queue() {
    let config = fresh_config(1);
    let kafka = Arc::new(KafkaEngine::connect(config.clone()).await.expect("connect"));
    let engine: Arc<dyn Engine> = kafka.clone();
    let later = engine
        .enqueue(
            NewJob::new("noop", json!({}))
                .queue("mail")
                .run_in(Duration::from_secs(600)),
        )
        .await
        .expect("enqueue")
        .id;
    let soon = engine
        .enqueue(
            NewJob::new("noop", json!({}))
                .queue("mail")
                .run_in(Duration::from_millis(1500)),
        )
        .await
        .expect("enqueue")
        .id;
    let mail = kafka.stats().await.expect("stats");
    let mail = mail.queue("mail").expect("the queue is counted");
    assert_eq!((mail.scheduled, mail.available), (2, 0), "{mail:?}");
    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    worker.until_completed(&[soon]).await;
    let events = worker.stop().await;
    assert!(
        !started(&events).contains(&later),
        "the job due in 10 minutes ran"
    );
    let moved = read_topic(&config, &config.topics.queue("mail"), 1).await;
    assert_eq!(text(&moved[0], header::ID), soon.to_string());
    let mail = kafka.stats().await.expect("stats");
    let mail = mail.queue("mail").expect("the queue is counted");
    assert_eq!((mail.scheduled, mail.completed), (1, 1), "{mail:?}");
    // The job due later holds the schedule partition's position at its own offset (0), and
    // nothing else is left there: the moved job's offset (1) is done, and so is its `moved`
    // marker (2).
    let schedule = tokio::task::block_in_place(|| {
        support::commit_and_end(
            &config,
            &config.schedule_group(),
            &config.topics.scheduled(),
            1,
        )
    });
    let (position, end) = schedule[0];
    assert!(position <= 0 && end == 3, "{schedule:?}");
    let records = read_topic(&config, &config.topics.scheduled(), 3).await;
    assert_eq!(text(&records[2], header::MARKER), "moved");
    assert_eq!(text(&records[2], header::ID), soon.to_string());

    // A worker on another handle reads the partition again from the job due later: the marker
    // says the other job was moved, so it is not moved (nor run) again.
    let again = KafkaEngine::connect(config.clone()).await.expect("connect");
    let again: Arc<dyn Engine> = Arc::new(again);
    let marker = again
        .enqueue(NewJob::new("noop", json!({})).queue("mail"))
        .await
        .expect("enqueue")
        .id;
    let mut worker = run(&again, Registry::with_builtins(), test_config());
    worker.until_completed(&[marker]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = worker.stop().await;
    assert_eq!(
        started(&events),
        HashSet::from([marker]),
        "a moved job ran again"
    );
}

/// A record in a queue topic due in 30 days (as a Java scheduler's request may be) is parked
/// in the schedule topic: the jobs behind it in its partition run, and the group's commit
/// passes it up to the log end, so it neither holds the partition nor depends on the queue
/// topic's retention. It still counts as scheduled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_due_in_30_days_does_not_hold_its_queue_partition() {
    let config = fresh_config(1);
    let kafka = Arc::new(KafkaEngine::connect(config.clone()).await.expect("connect"));
    let engine: Arc<dyn Engine> = kafka.clone();
    let (producer, queue_topic) = default_queue_producer(&config).await;
    let month = NewJob::new("noop", json!({})).run_in(Duration::from_secs(30 * 24 * 3600));
    let month_record = conveyor_kafka::Envelope::from_new_job(&month, "{}".into(), 0).to_record();
    producer
        .send(&queue_topic, &month_record)
        .await
        .expect("produce");
    let behind = enqueue_all(
        &engine,
        (0..5)
            .map(|i| NewJob::new("noop", json!({"i": i})))
            .collect(),
    )
    .await;
    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    worker.until_completed(&behind).await;
    let readings =
        support::until_committed_to_end(&config, &config.group, &[&queue_topic], 1).await;
    let events = worker.stop().await;
    assert_eq!(
        readings,
        [[(6, 6)]],
        "the commit passed the job due in 30 days"
    );
    assert_eq!(
        started(&events),
        behind.iter().copied().collect(),
        "only the jobs due now ran"
    );
    let parked = read_topic(&config, &config.topics.scheduled(), 1).await;
    assert_eq!(text(&parked[0], header::ID), month.id.to_string());
    assert_eq!(text(&parked[0], header::ORIGINAL_OFFSET), "0");
    let stats = kafka.stats().await.expect("stats");
    let default = stats.queue("default").expect("the queue is counted");
    assert_eq!(
        (default.scheduled, default.completed),
        (1, 5),
        "{default:?}"
    );
}

/// Producers that know nothing of Conveyor: the Go server's event and the Java scheduler's
/// request, written with a plain rdkafka producer, run as jobs; a record in no known shape is
/// dead-lettered naming the field, and the topic keeps moving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_shapes_from_plain_producers_run_as_jobs() {
    use conveyor_core::handler_fn;
    use conveyor_kafka::{Format, Ingest, IngestDecoder};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use std::sync::Mutex;

    let mut config = fresh_config(2);
    let events = format!("{}job-events", config.topics.prefix);
    let requests = format!("{}scheduler.jobs.ingest", config.topics.prefix);
    config.ingest = vec![
        Ingest {
            topic: events.clone(),
            decoder: IngestDecoder::new(Format::Event, "default"),
            dead_letter_topic: None,
        },
        Ingest {
            topic: requests.clone(),
            decoder: IngestDecoder::new(Format::ScheduleRequest, "default"),
            dead_letter_topic: None,
        },
    ];
    let engine: Arc<dyn Engine> =
        Arc::new(KafkaEngine::connect(config.clone()).await.expect("connect"));
    let ran = Arc::new(Mutex::new(Vec::new()));
    let mut registry = Registry::new();
    for kind in ["job.email.verification", "sms"] {
        let log = ran.clone();
        registry.register(handler_fn(kind, move |ctx| {
            log.lock()
                .expect("lock")
                .push((ctx.job().kind.clone(), ctx.job().payload.clone()));
            async { conveyor_core::Outcome::Complete }
        }));
    }
    let mut worker = run(&engine, registry, test_config());

    let plain: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .expect("plain producer");
    let event = json!({
        "id": "550e8400-e29b-41d4-a716-446655440000",
        "type": "job.email.verification",
        "data": {"type": "verification", "user_id": "u-1"},
        "timestamp": "2025-01-01T12:00:00Z"
    })
    .to_string();
    let request = json!({
        "requestId": "req-42", "appName": "sms", "scheduledTime": "2025-11-03T22:00:00Z",
        "priority": "high", "idempotencyKey": "sms-1", "jobData": {"phone": "+15550000"}
    })
    .to_string();
    let broken =
        json!({"requestId": "req-43", "scheduledTime": "2025-11-03T22:00:00Z", "jobData": {}})
            .to_string();
    for (topic, value) in [
        (&events, &event),
        (&requests, &broken),
        (&requests, &request),
    ] {
        plain
            .send(
                FutureRecord::<(), _>::to(topic).payload(value),
                Duration::from_secs(10),
            )
            .await
            .expect("plain produce");
    }
    worker
        .until("both seed jobs ran", |seen| completed_count(seen) >= 2)
        .await;
    worker.stop().await;
    let mut ran = ran.lock().expect("lock").clone();
    ran.sort();
    assert_eq!(ran[0].0, "job.email.verification");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ran[0].1).expect("json"),
        json!({"type": "verification", "user_id": "u-1"})
    );
    assert_eq!(ran[1].0, "sms");
    let dead = read_topic(&config, &config.topics.dead(), 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(text(&dead[0], header::ORIGINAL_TOPIC), requests);
    assert!(
        text(&dead[0], header::ERROR_MESSAGE).contains("missing required field `appName`"),
        "{dead:?}"
    );
}

fn completed_count(events: &[JobEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, JobEvent::Completed { .. }))
        .count()
}

/// A producer's retry of a Go event (the same `{id,type,data,timestamp}` twice in one
/// partition) and one event id on two ingest topics: each job runs once, and the group's
/// committed offsets reach every partition's log end (before: the duplicate ran twice and the
/// partition's commit froze at the first copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_id_read_twice_runs_once_and_the_commit_reaches_the_log_end() {
    use conveyor_core::handler_fn;
    use conveyor_kafka::{Format, Ingest, IngestDecoder};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use std::sync::Mutex;

    let mut config = fresh_config(1);
    let events = format!("{}job-events", config.topics.prefix);
    let more = format!("{}more-events", config.topics.prefix);
    config.ingest = [&events, &more]
        .into_iter()
        .map(|topic| Ingest {
            topic: topic.clone(),
            decoder: IngestDecoder::new(Format::Event, "default"),
            dead_letter_topic: None,
        })
        .collect();
    Producer::new(&config)
        .expect("producer")
        .ensure_topics(&[events.clone(), more.clone()])
        .await
        .expect("topics");
    let plain: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .expect("plain producer");
    let send = |topic: &str, id: String| {
        let value = json!({"id": id, "type": "email", "data": {"id": id}, "timestamp": "2025-01-01T12:00:00Z"})
            .to_string();
        let plain = plain.clone();
        let topic = topic.to_string();
        async move {
            plain
                .send(
                    FutureRecord::<(), _>::to(&topic).payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .expect("plain produce");
        }
    };
    // 50 events, every 10th sent twice in a row; 5 more on both topics.
    let mut unique = 0;
    for n in 0..50 {
        send(&events, format!("evt-{n}")).await;
        if n % 10 == 0 {
            send(&events, format!("evt-{n}")).await;
        }
        unique += 1;
    }
    for n in 0..5 {
        send(&events, format!("both-{n}")).await;
        send(&more, format!("both-{n}")).await;
        unique += 1;
    }

    let engine: Arc<dyn Engine> =
        Arc::new(KafkaEngine::connect(config.clone()).await.expect("connect"));
    let ran = Arc::new(Mutex::new(Vec::new()));
    let mut registry = Registry::new();
    let log = ran.clone();
    registry.register(handler_fn("email", move |ctx| {
        log.lock().expect("lock").push(ctx.job().payload.clone());
        async {
            // Long enough for a copy read right behind it to arrive while it runs.
            tokio::time::sleep(Duration::from_millis(50)).await;
            conveyor_core::Outcome::Complete
        }
    }));
    let mut worker = run(&engine, registry, test_config());
    worker
        .until("every event ran", |seen| completed_count(seen) >= unique)
        .await;
    let readings =
        support::until_committed_to_end(&config, &config.group, &[&events, &more], 1).await;
    worker.stop().await;
    let ran = ran.lock().expect("lock").clone();
    let distinct: HashSet<&String> = ran.iter().collect();
    assert_eq!(
        (ran.len(), distinct.len()),
        (unique, unique),
        "each event runs once"
    );
    assert_eq!(
        readings,
        [vec![(60, 60)], vec![(5, 5)]],
        "committed offset and log end of each topic"
    );
}

/// Ids of the jobs a worker started, from its events so far (without waiting).
fn drain_started(worker: &mut conveyor_conformance::Running) -> HashSet<JobId> {
    while let Ok(event) = worker.events.try_recv() {
        worker.seen.push(event);
    }
    started(&worker.seen)
}

/// Two workers on different queues, with jobs that fail once, and an ingest topic of one
/// queue: each worker runs only its own queues' jobs, retries included. One retry tier of one
/// partition, so one worker's retry lane reads every queue's retries (before: it ran them,
/// or dead-lettered those it had no handler for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_only_their_own_queues_jobs_retries_and_ingest_included() {
    use conveyor_kafka::{Format, Ingest, IngestDecoder};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let mut config = fresh_config(1);
    config.topics.retry_tiers = vec![Duration::from_secs(1)];
    let events = format!("{}sms-events", config.topics.prefix);
    config.ingest = vec![Ingest {
        topic: events.clone(),
        decoder: IngestDecoder::new(Format::Event, "sms"),
        dead_letter_topic: None,
    }];
    let connect = || async {
        let engine = KafkaEngine::connect(config.clone()).await.expect("connect");
        Arc::new(engine) as Arc<dyn Engine>
    };
    let (mail_engine, sms_engine) = (connect().await, connect().await);
    let on = |queue: &str| WorkerConfig {
        queues: vec![queue.to_string()],
        ..test_config()
    };
    let failing = |queue: &str, n: usize| {
        (0..n)
            .map(|i| NewJob::new("fail", json!({"times": 1, "i": i})).queue(queue))
            .collect::<Vec<_>>()
    };
    // The mail worker starts alone and owns every partition it reads, the retry tier's too,
    // once a job of its own went through it.
    let mut mail = run(&mail_engine, Registry::with_builtins(), on("mail"));
    let first = enqueue_all(&mail_engine, failing("mail", 1)).await;
    mail.until_completed(&first).await;
    let mut sms = run(&sms_engine, Registry::with_builtins(), on("sms"));
    let mut mail_jobs = enqueue_all(&mail_engine, failing("mail", 10)).await;
    let sms_jobs = enqueue_all(&sms_engine, failing("sms", 10)).await;
    mail_jobs.extend(first);
    let plain: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .expect("plain producer");
    for n in 0..5 {
        let value = json!({"id": format!("sms-{n}"), "type": "noop", "data": {}, "timestamp": "2025-01-01T12:00:00Z"})
            .to_string();
        plain
            .send(
                FutureRecord::<(), _>::to(&events).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .expect("plain produce");
    }
    let everything = mail_jobs.len() + sms_jobs.len() + 5;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        drain_started(&mut mail);
        drain_started(&mut sms);
        let done = conveyor_conformance::completed(&mail.seen).len()
            + conveyor_conformance::completed(&sms.seen).len();
        if done >= everything || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mail_events = mail.stop().await;
    let sms_events = sms.stop().await;
    let mail_ran = started(&mail_events);
    let sms_ran = started(&sms_events);
    let mail_set: HashSet<JobId> = mail_jobs.iter().copied().collect();
    let sms_set: HashSet<JobId> = sms_jobs.iter().copied().collect();
    assert!(
        mail_ran.is_subset(&mail_set),
        "the mail worker ran {} jobs of other queues",
        mail_ran.difference(&mail_set).count()
    );
    let mail_done = conveyor_conformance::completed(&mail_events);
    assert_eq!(
        mail_done.len(),
        mail_set.len(),
        "every mail job completed on the mail worker; sms worker: {} of {} done; mail events: {mail_events:?}",
        conveyor_conformance::completed(&sms_events).len(),
        sms_set.len() + 5,
    );
    assert_eq!(mail_done, mail_set);
    let sms_done = conveyor_conformance::completed(&sms_events);
    assert!(
        sms_set.is_subset(&sms_done),
        "every sms job completed on the sms worker"
    );
    assert_eq!(
        sms_ran.len(),
        sms_set.len() + 5,
        "the sms worker ran its jobs and the 5 ingest events, nothing else"
    );
    for events in [&mail_events, &sms_events] {
        assert!(
            !events.iter().any(|e| matches!(e, JobEvent::Dead { .. })),
            "nothing was dead-lettered"
        );
        for id in started(events) {
            assert!(attempts(events, id).len() <= 2);
        }
    }
}

/// A worker whose lane buffer is full (more long jobs read than it can run) goes on serving
/// the group's rebalances: a second worker joining gets partitions and runs jobs long before
/// the first one's running jobs end (before: the first worker stopped polling while full, and
/// rebalance callbacks run only inside a poll, so the joiner waited for its buffer to drain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_full_buffer_lets_a_joining_worker_in() {
    // More than a lane's buffer (4096), each job longer than the test's bound.
    const JOBS: usize = 5000;
    let config = fresh_config(6);
    let first_engine: Arc<dyn Engine> =
        Arc::new(KafkaEngine::connect(config.clone()).await.expect("connect"));
    let jobs = (0..JOBS)
        .map(|i| NewJob::new("slow", json!({"i": i})))
        .collect();
    enqueue_all(&first_engine, jobs).await;
    let mut slow = Registry::new();
    slow.register(conveyor_core::handler_fn("slow", |_| async {
        tokio::time::sleep(Duration::from_secs(120)).await;
        conveyor_core::Outcome::Complete
    }));
    let stop_fast = WorkerConfig {
        shutdown_grace: Duration::from_millis(100),
        ..test_config()
    };
    let mut first = run(&first_engine, slow, stop_fast.clone());
    first
        .until("the first worker runs its share", |seen| {
            started(seen).len() >= stop_fast.concurrency
        })
        .await;
    // Let its poll loop fill the lane's buffer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second_engine: Arc<dyn Engine> =
        Arc::new(KafkaEngine::connect(config.clone()).await.expect("connect"));
    let mut quick = Registry::new();
    quick.register(conveyor_core::handler_fn("slow", |_| async {
        conveyor_core::Outcome::Complete
    }));
    let mut second = run(&second_engine, quick, stop_fast);
    // Bounded by the conformance suite's wait (20 s), well under the first worker's jobs
    // (120 s): a joiner that waits for them never gets there.
    second
        .until("the joining worker runs a job", |seen| {
            conveyor_conformance::completed(seen).len() >= 10
        })
        .await;
    second.stop().await;
    first.stop().await;
}
