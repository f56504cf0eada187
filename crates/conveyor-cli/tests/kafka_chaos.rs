//! The chaos ledger test of the Kafka engine: three `conveyor worker` processes on a durable
//! broker (tansu, SQLite storage) of the test's own drain 20k jobs with ordering keys, 5 % of
//! them failing once; a random worker is killed with SIGKILL (and replaced) every few seconds
//! and the broker is restarted once. Every worker logs each attempt's start and end, and the
//! ledger built from those logs must show: every job ran to completion, every failing job was
//! retried, no two jobs of one ordering key ever ran at once, and the group's committed
//! offsets reached every partition's log end.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use conveyor::{Conveyor, JobId, NewJob};
use serde_json::json;
use support::{dev_broker, dev_broker_script};

const JOBS: usize = 20_000;
const KEYS: usize = 500;
const WORKERS: usize = 3;
const KILLS: usize = 5;
/// Logs every attempt's start and end (with its time) and nothing else below warnings.
const LEDGER_LOG: &str = "warn,conveyor::commands=debug";

/// The workers' log filter: the ledger's, plus `CHAOS_LOG` (say `conveyor_kafka=info,rdkafka=debug`)
/// when a run is to be looked into.
fn log_filter() -> String {
    match std::env::var("CHAOS_LOG") {
        Ok(extra) if !extra.is_empty() => format!("{LEDGER_LOG},{extra}"),
        _ => LEDGER_LOG.to_string(),
    }
}

/// One attempt seen in a worker's log.
#[derive(Debug, Clone)]
struct Attempt {
    start: DateTime<Utc>,
    /// When it ended; `None` when its worker was killed first (it ended at the kill).
    end: Option<DateTime<Utc>>,
    failed: bool,
    worker: usize,
}

/// A worker process and where it logs; `killed_at` once it was killed.
struct Worker {
    child: Option<Child>,
    log: PathBuf,
    killed_at: Option<DateTime<Utc>>,
}

/// The broker and every worker process that ever ran; all stopped on drop.
struct Chaos {
    dir: PathBuf,
    url: String,
    workers: Vec<Worker>,
}

impl Chaos {
    fn broker(&self, args: &[&str]) -> String {
        dev_broker(args, Some(&self.dir.join("broker")))
    }

    fn spawn_worker(&mut self) {
        let log = self.dir.join(format!("worker-{}.log", self.workers.len()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_conveyor"))
            .args(["worker", "--backend", &self.url, "--concurrency", "32"])
            .env("RUST_LOG", log_filter())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn conveyor worker");
        self.workers.push(Worker {
            child: Some(child),
            log,
            killed_at: None,
        });
    }

    /// Kills a live worker with SIGKILL and starts another in its place.
    fn kill_one(&mut self, pick: usize) {
        let live: Vec<usize> = (0..self.workers.len())
            .filter(|i| self.workers[*i].child.is_some())
            .collect();
        let victim = live[pick % live.len()];
        if let Some(mut child) = self.workers[victim].child.take() {
            child.kill().expect("kill -9 a worker");
            child.wait().expect("reap");
        }
        self.workers[victim].killed_at = Some(Utc::now());
        self.spawn_worker();
    }

    /// Every attempt in every worker's log, by job id.
    fn ledger(&self) -> HashMap<String, Vec<Attempt>> {
        let mut ledger: HashMap<String, Vec<Attempt>> = HashMap::new();
        for (worker, w) in self.workers.iter().enumerate() {
            let text = std::fs::read_to_string(&w.log).unwrap_or_default();
            let mut open: HashMap<String, Attempt> = HashMap::new();
            for line in text.lines() {
                let Some((at, event, job)) = parse(line) else {
                    continue;
                };
                match event {
                    "started" => {
                        let attempt = Attempt {
                            start: at,
                            end: None,
                            failed: false,
                            worker,
                        };
                        open.insert(job, attempt);
                    }
                    _ => {
                        if let Some(mut attempt) = open.remove(&job) {
                            attempt.end = Some(at);
                            attempt.failed = event == "failed";
                            ledger.entry(job).or_default().push(attempt);
                        }
                    }
                }
            }
            // Attempts still open ended when their worker was killed (or run on).
            for (job, attempt) in open {
                ledger.entry(job).or_default().push(attempt);
            }
        }
        ledger
    }

    /// When an attempt that never logged its end stopped: its worker's kill, else now.
    fn end_of(&self, attempt: &Attempt) -> DateTime<Utc> {
        attempt
            .end
            .or(self.workers[attempt.worker].killed_at)
            .unwrap_or_else(Utc::now)
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().filter_map(|w| w.child.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new(dev_broker_script())
            .arg("stop")
            .env("CONVEYOR_BROKER_DIR", self.dir.join("broker"))
            .status();
    }
}

/// The test's folder (worker and broker logs), kept when the test fails so it can be read.
struct KeptOnFailure(Option<tempfile::TempDir>);

impl KeptOnFailure {
    fn path(&self) -> PathBuf {
        self.0
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }
}

impl Drop for KeptOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                eprintln!("worker and broker logs kept in {}", dir.keep().display());
            }
        }
    }
}

/// `(time, "started" | "completed" | "failed" | "dead", job id)` of a job event log line.
fn parse(line: &str) -> Option<(DateTime<Utc>, &'static str, String)> {
    let event = [
        (" started job=", "started"),
        (" completed job=", "completed"),
        (" attempt failed; will retry job=", "failed"),
        (" dead-lettered job=", "dead"),
        (
            " stopped while running (cancelled or released) job=",
            "released",
        ),
    ]
    .into_iter()
    .find(|(needle, _)| line.contains(needle))?;
    let at = line.split_whitespace().next()?.parse().ok()?;
    let job = line.split(event.0).nth(1)?.split_whitespace().next()?;
    Some((at, event.1, job.to_string()))
}

/// Enqueues the jobs: keyed, 5 % failing once; returns (id, key, fails) per job.
async fn enqueue(url: &str) -> Vec<(JobId, String, bool)> {
    let conveyor = Conveyor::connect(url).await.expect("connect");
    let mut jobs = Vec::with_capacity(JOBS);
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<(NewJob, String, bool)> = chunk
            .iter()
            .map(|i| {
                let key = format!("key-{}", i % KEYS);
                let fails = i % 20 == 7;
                let job = if fails {
                    NewJob::new("fail", json!({"times": 1, "n": i}))
                } else {
                    NewJob::new("sleep", json!({"ms": 1, "n": i}))
                };
                (job.ordering_key(key.clone()), key, fails)
            })
            .collect();
        let sent = conveyor
            .dispatch_batch(batch.iter().map(|(job, _, _)| job.clone()).collect())
            .await
            .expect("enqueue");
        for (enqueued, (_, key, fails)) in sent.iter().zip(batch) {
            jobs.push((enqueued.id, key, fails));
        }
    }
    jobs
}

fn completed(ledger: &HashMap<String, Vec<Attempt>>) -> usize {
    ledger
        .values()
        .filter(|attempts| attempts.iter().any(|a| a.end.is_some() && !a.failed))
        .count()
}

/// Waits until `done` jobs completed or `limit` passed; returns how many completed.
fn wait_for_completed(chaos: &Chaos, done: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let n = completed(&chaos.ledger());
        if n >= done || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An attempt's start and end, and the attempt.
type Span<'a> = (DateTime<Utc>, DateTime<Utc>, &'a Attempt);

/// Waits until more jobs completed than now (or all did); `Err` saying how many were done if
/// none completes within `limit`.
fn wait_for_progress(chaos: &Chaos, limit: Duration) -> Result<(), String> {
    let before = completed(&chaos.ledger());
    let after = wait_for_completed(chaos, (before + 1).min(JOBS), limit);
    if after > before || after == JOBS {
        return Ok(());
    }
    Err(format!(
        "no job completed for {limit:?} ({before} of {JOBS} done): the group never re-formed"
    ))
}

/// Pairs of attempts of one ordering key that overlapped in time.
fn overlaps(chaos: &Chaos, jobs: &[(JobId, String, bool)]) -> Vec<String> {
    let ledger = chaos.ledger();
    let mut by_key: HashMap<&str, Vec<Span<'_>>> = HashMap::new();
    for (id, key, _) in jobs {
        for attempt in ledger.get(&id.to_string()).into_iter().flatten() {
            let end = chaos.end_of(attempt);
            by_key
                .entry(key)
                .or_default()
                .push((attempt.start, end, attempt));
        }
    }
    let mut found = Vec::new();
    for (key, mut spans) in by_key {
        spans.sort_by_key(|s| s.0);
        for pair in spans.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if b.0 < a.1 {
                found.push(format!("{key}: {:?} and {:?}", a.2, b.2));
            }
        }
    }
    found
}

/// The queue's partitions once the group's committed offsets reach their log ends (or after
/// a minute): `(topic, partition, committed, end)` of those that do not.
async fn lagging_partitions(url: &str) -> Vec<(String, i32, i64, i64)> {
    let conveyor = Conveyor::connect(url).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lagging: Vec<(String, i32, i64, i64)> = match conveyor.stats().await {
            Ok(stats) => stats
                .queue("default")
                .map(|q| q.partitions.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|p| p.committed < p.end)
                .map(|p| (p.topic, p.partition, p.committed, p.end))
                .collect(),
            Err(err) => vec![(format!("stats: {err}"), -1, 0, 0)],
        };
        if lagging.is_empty() || Instant::now() > deadline {
            return lagging;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_ledger_every_job_runs_keys_never_overlap_commits_reach_the_end() {
    let dir = KeptOnFailure(Some(tempfile::tempdir().expect("temp dir")));
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let mut chaos = Chaos {
        dir: dir.path(),
        url: String::new(),
        workers: Vec::new(),
    };
    let address = chaos.broker(&["start"]);
    // A 15 s session: tansu's SQLite storage answers heartbeats late under load (see
    // kafka_fleet.rs); a killed worker's connection closes, so its partitions move at once.
    chaos.url = format!(
        "kafka://{address}?prefix=chaos{}.&partitions=6&session_timeout=15s",
        &tag[24..]
    );
    let jobs = enqueue(&chaos.url).await;
    for _ in 0..WORKERS {
        chaos.spawn_worker();
    }
    let mut seed = u64::from_str_radix(&tag[16..32], 16).unwrap_or(7);
    for kill in 0..KILLS {
        std::thread::sleep(Duration::from_millis(2500 + (seed % 2500)));
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if kill == KILLS / 2 {
            chaos.broker(&["restart"]);
        }
        // tansu's group coordinator keeps a member it lost track of (a worker killed around a
        // restart, or while a rebalance waits) until that member answers again, which a killed
        // one never does (docs/kafka-engine.md, "Broker restarts"): the group then waits for
        // good. So the next blow comes once the group runs jobs again.
        if let Err(stall) = wait_for_progress(&chaos, Duration::from_secs(120)) {
            panic!("{stall}");
        }
        chaos.kill_one((seed >> 33) as usize);
    }
    let done = wait_for_completed(&chaos, JOBS, Duration::from_secs(300));
    assert_eq!(done, JOBS, "{done} of {JOBS} jobs completed");
    let ledger = chaos.ledger();
    for (id, _, fails) in &jobs {
        let attempts = &ledger[&id.to_string()];
        if *fails {
            assert!(
                attempts.iter().any(|a| a.failed),
                "job {id} planned to fail once never failed: {attempts:?}"
            );
        }
    }
    let overlapping = overlaps(&chaos, &jobs);
    assert!(
        overlapping.is_empty(),
        "{} overlaps of one ordering key, e.g. {:?}",
        overlapping.len(),
        &overlapping[..overlapping.len().min(3)]
    );
    let lagging = lagging_partitions(&chaos.url).await;
    assert!(
        lagging.is_empty(),
        "committed offsets short of the log end: {lagging:?}"
    );
    let reruns: usize = ledger.values().map(|a| a.len().saturating_sub(1)).sum();
    eprintln!(
        "chaos: {JOBS} jobs completed, {KILLS} kills and a broker restart, {reruns} extra attempts"
    );
}
