//! Seed 003 drop-in: the Java scheduler's producers write `ScheduleJobRequest` records to a
//! topic that `conveyor worker --ingest TOPIC=schedule-request` reads, on a durable broker of
//! the test's own. Two producers race with the same idempotency keys, one of them retries
//! sends, a worker is killed with SIGKILL between the two halves of the race, and garbage is
//! mixed in: every request runs once at or after its `scheduledTime`, every key once, and the
//! garbage lands in the dead-letter topic with the seed's error headers.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use support::Fleet;

/// Keys raced by the two producers; the second producer sends the upper half after the kill.
const KEYS: usize = 40;
/// Requests without a key, each its own job.
const PLAIN: usize = 20;

/// A plain librdkafka producer, as the Java services would have (no Conveyor headers).
fn producer(address: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("linger.ms", "5")
        .create()
        .expect("plain producer")
}

/// Sends `values` to `topic` and waits until the broker acknowledged them all.
fn send_all(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, values: &[String]) {
    for value in values {
        let mut record = BaseRecord::<(), String>::to(topic).payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("the broker acknowledged every request");
}

/// A `ScheduleJobRequest` as seed 003's Java services write it.
fn request(id: &str, key: Option<&str>, at: &str, data: Value) -> String {
    let mut request = json!({
        "requestId": id, "appName": "echo", "scheduledTime": at,
        "priority": "normal", "jobData": data
    });
    if let Some(key) = key {
        request["idempotencyKey"] = json!(key);
    }
    request.to_string()
}

/// The keyed requests of producer `from` for keys `range`.
fn keyed(from: &str, range: std::ops::Range<usize>, at: &str) -> Vec<String> {
    range
        .map(|k| {
            let key = format!("order-{k}");
            let data = json!({"key": key, "from": from});
            request(&format!("{from}-{k}"), Some(&key), at, data)
        })
        .collect()
}

/// Records no scheduler could run, each for its own reason.
fn garbage(at: &str) -> Vec<String> {
    vec![
        "not json {".to_string(),
        json!({"requestId": "g-1", "scheduledTime": at, "jobData": {}}).to_string(),
        json!({"requestId": "g-2", "appName": "echo", "scheduledTime": "tomorrow", "jobData": {}})
            .to_string(),
        json!({"requestId": "g-3", "appName": "echo", "scheduledTime": at, "priority": "urgent", "jobData": {}})
            .to_string(),
        "[1, 2, 3]".to_string(),
    ]
}

/// Every echoed payload over the workers' logs, with the time its handler ran.
fn echoes(logs: &[PathBuf]) -> Vec<(DateTime<Utc>, Value)> {
    let mut seen = Vec::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(" echo job=")) {
            let at = line.split_whitespace().next().and_then(|t| t.parse().ok());
            let payload = line
                .split("payload=")
                .nth(1)
                .and_then(|p| serde_json::from_str(p.trim()).ok());
            if let (Some(at), Some(payload)) = (at, payload) {
                seen.push((at, payload));
            }
        }
    }
    seen
}

/// How many times each request ran, by its key (`order-K`) or plain number (`plain-N`).
fn runs_by_request(echoes: &[(DateTime<Utc>, Value)]) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for (_, payload) in echoes {
        let name = match (&payload["key"], &payload["plain"]) {
            (Value::String(key), _) => key.clone(),
            (_, Value::Number(n)) => format!("plain-{n}"),
            _ => format!("unexpected {payload}"),
        };
        *runs.entry(name).or_insert(0) += 1;
    }
    runs
}

/// Waits until `count` distinct requests ran or `limit` passed; returns the echoes.
fn wait_for_requests(
    logs: &[PathBuf],
    count: usize,
    limit: Duration,
) -> Vec<(DateTime<Utc>, Value)> {
    let deadline = Instant::now() + limit;
    loop {
        let seen = echoes(logs);
        if runs_by_request(&seen).len() >= count || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The records of `topic` (read from the start by a group of its own) with their headers,
/// once `count` arrived or 60 s passed.
fn read_topic(address: &str, topic: &str, count: usize) -> Vec<(Vec<u8>, HashMap<String, String>)> {
    let group = format!("seed003-reader-{}", uuid::Uuid::now_v7().simple());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = Vec::new();
    while records.len() < count && Instant::now() < deadline {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_string(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push((message.payload().unwrap_or_default().to_vec(), headers));
    }
    records
}

/// Starts a worker reading the requests topic, logging each echo with its payload.
fn spawn(fleet: &mut Fleet, url: &str, topic: &str, log: &Path) {
    let ingest = format!("{topic}=schedule-request");
    fleet.spawn_worker_with(url, log, &["--ingest", &ingest], "info");
}

#[test]
fn schedule_requests_run_once_at_their_time_across_racing_producers_and_a_worker_kill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut fleet = Fleet::in_dir(dir.path());
    let address = fleet.broker(&["start"]);
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let prefix = format!("seed003{}.", &tag[24..]);
    let url = format!("kafka://{address}?prefix={prefix}&partitions=3&session_timeout=6s");
    let topic = format!("{prefix}scheduler.jobs.ingest");
    let logs: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("worker-{i}.log")))
        .collect();
    spawn(&mut fleet, &url, &topic, &logs[0]);
    spawn(&mut fleet, &url, &topic, &logs[1]);

    let due = Utc::now() + chrono::Duration::seconds(30);
    let at = due.to_rfc3339_opts(SecondsFormat::Millis, true);
    let (a, b) = (producer(&address), producer(&address));
    // The first half of the race: A sends every key (every 5th twice, as a producer's retry),
    // the plain requests and the garbage, while B sends the lower half of the keys.
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut values = keyed("a", 0..KEYS, &at);
            values.extend(keyed("a", 0..KEYS, &at).into_iter().step_by(5));
            values.extend(
                (0..PLAIN).map(|n| request(&format!("p-{n}"), None, &at, json!({"plain": n}))),
            );
            values.extend(garbage(&at));
            send_all(&a, &topic, &values);
        });
        s.spawn(|| send_all(&b, &topic, &keyed("b", 0..KEYS / 2, &at)));
    });
    // The workers read and judge them; then one dies without a word, and the second half of
    // the race arrives while its partitions move.
    std::thread::sleep(Duration::from_secs(8));
    if let Some(mut victim) = fleet.workers[0].take() {
        victim.kill().expect("kill -9 a worker");
        victim.wait().expect("reap");
    }
    send_all(&b, &topic, &keyed("b", KEYS / 2..KEYS, &at));
    spawn(&mut fleet, &url, &topic, &logs[2]);

    let expected = KEYS + PLAIN;
    wait_for_requests(&logs, expected, Duration::from_secs(150));
    // A second copy of a key would run right beside the first: give it time to show.
    std::thread::sleep(Duration::from_secs(5));
    let seen = echoes(&logs);
    let runs = runs_by_request(&seen);
    if runs.len() != expected {
        let kept = dir.keep();
        panic!(
            "{} of {expected} requests ran: {runs:?}; logs kept in {}",
            runs.len(),
            kept.display()
        );
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "requests that ran more than once: {twice:?}"
    );
    let early: Vec<_> = seen.iter().filter(|(ran, _)| *ran < due).collect();
    assert!(early.is_empty(), "requests run before {due}: {early:?}");

    let dead = read_topic(&address, &format!("{prefix}dead"), garbage(&at).len());
    let mut payloads: Vec<Vec<u8>> = dead.iter().map(|(p, _)| p.clone()).collect();
    payloads.sort();
    let mut sent: Vec<Vec<u8>> = garbage(&at).into_iter().map(String::into_bytes).collect();
    sent.sort();
    assert_eq!(
        payloads, sent,
        "each garbage record is dead-lettered as it was sent"
    );
    for (payload, headers) in &dead {
        let record = String::from_utf8_lossy(payload);
        assert_eq!(
            headers.get("original-topic"),
            Some(&topic),
            "{record}: {headers:?}"
        );
        for name in ["original-partition", "original-offset", "error-timestamp"] {
            assert!(
                headers.contains_key(name),
                "{record} lacks {name}: {headers:?}"
            );
        }
        let error = headers.get("error-message").cloned().unwrap_or_default();
        assert!(
            !error.is_empty(),
            "{record} has no error message: {headers:?}"
        );
    }
}

/// An `[[ingest]]` entry of `conveyor.toml` with its queue, zone and dead-letter topic: a
/// request whose `scheduledTime` has no zone is read in the entry's zone (`+05:00`: five hours
/// ahead of this machine's UTC, so a worker reading it as local time would wait five hours),
/// runs in the entry's queue, and a record that is not a request lands in the entry's
/// dead-letter topic with the seed's headers.
#[test]
fn an_ingest_entry_in_the_file_sets_its_queue_zone_and_dead_letter_topic() {
    let address = support::shared_broker();
    let dir = tempfile::tempdir().expect("temp dir");
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let prefix = format!("file{}.", &tag[24..]);
    let (topic, dlq) = (format!("{prefix}orders.in"), format!("{prefix}orders.dlq"));
    let config = dir.path().join("conveyor.toml");
    std::fs::write(
        &config,
        format!(
            "backend = \"kafka://{address}?prefix={prefix}&partitions=1&session_timeout=15s\"\n\
             [[ingest]]\ntopic = \"{topic}\"\nformat = \"schedule-request\"\nqueue = \"sms\"\n\
             dead_letter_topic = \"{dlq}\"\ntimezone = \"+05:00\"\n"
        ),
    )
    .expect("write conveyor.toml");
    let log = dir.path().join("worker.log");
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .arg("--config")
        .arg(&config)
        .args(["worker", "--queues", "sms"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn conveyor worker");

    let due = Utc::now() + chrono::Duration::seconds(4);
    let there = due + chrono::Duration::hours(5);
    let at = there.format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
    let plain: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &address)
        .set("message.timeout.ms", "60000")
        .create()
        .expect("plain producer");
    let values = [
        request("zone-1", None, &at, json!({"plain": 1})),
        "not json {".to_string(),
    ];
    send_all(&plain, &topic, &values);
    let logs = [log.clone()];
    // A loaded shared broker can answer heartbeats late: a 6 s session was lost once in CI,
    // and the rejoin outlasted a 60 s wait.
    let seen = wait_for_requests(&logs, 1, Duration::from_secs(120));
    let letters = read_topic(&address, &dlq, 1);
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(
        seen.len(),
        1,
        "the request ran once: {seen:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(seen[0].0 >= due, "ran at {} before {due}", seen[0].0);
    assert_eq!(
        letters.len(),
        1,
        "the garbage is in the entry's dead-letter topic"
    );
    assert_eq!(letters[0].0, b"not json {");
    assert_eq!(letters[0].1.get("original-topic"), Some(&topic));
}
