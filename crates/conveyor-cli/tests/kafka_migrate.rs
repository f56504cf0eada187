//! `conveyor migrate` from the embedded SQLite file to Kafka, through the binary: 50k jobs
//! (waiting, scheduled, dead) and a cron entry; the first run is killed with SIGKILL halfway,
//! the second finishes. Then a Kafka worker runs every job exactly once, the dead ones are in
//! the dead-letter list once each, and the SQLite file holds nothing left to run.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conveyor::{Conveyor, JobId, NewJob, Registry, WorkerConfig};
use serde_json::json;

const WAITING: usize = 48_000;
const SCHEDULED: usize = 2_000;
const DEAD: usize = 100;

/// Ids of every job started in the worker's log, with how many times each started.
fn starts(log: &Path) -> HashMap<String, usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut runs: HashMap<String, usize> = HashMap::new();
    for line in text.lines().filter(|l| l.contains(" started job=")) {
        let id = line
            .split(" started job=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next());
        if let Some(id) = id {
            *runs.entry(id.to_string()).or_default() += 1;
        }
    }
    runs
}

/// Fills the SQLite file: dead jobs first (a worker runs `fail` once), then the waiting and
/// the scheduled ones; returns the ids to run and the dead ids.
async fn fill(sqlite: &str) -> (HashSet<JobId>, HashSet<JobId>) {
    let source = Conveyor::open(sqlite).expect("open sqlite");
    let doomed: Vec<NewJob> = (0..DEAD)
        .map(|n| {
            NewJob::new("fail", json!({ "n": n }))
                .queue("doomed")
                .max_attempts(1)
        })
        .collect();
    let dead: HashSet<JobId> = doomed.iter().map(|j| j.id).collect();
    source.dispatch_batch(doomed).await.expect("enqueue doomed");
    let worker = source.worker(
        Registry::with_builtins(),
        WorkerConfig {
            queues: vec!["doomed".into()],
            ..WorkerConfig::default()
        },
    );
    let probe = source.clone();
    worker
        .run(async move {
            while probe
                .stats()
                .await
                .ok()
                .and_then(|s| s.queue("doomed").map(|q| q.dead))
                != Some(DEAD as u64)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("worker");
    let mut run = HashSet::new();
    for chunk in 0..(WAITING + SCHEDULED) / 1_000 {
        let jobs: Vec<NewJob> = (0..1_000)
            .map(|n| {
                let job = NewJob::new("noop", json!({ "n": chunk * 1_000 + n }));
                match chunk * 1_000 + n >= WAITING {
                    true => job.run_in(Duration::from_secs(5)),
                    false => job,
                }
            })
            .collect();
        run.extend(jobs.iter().map(|j| j.id));
        source.dispatch_batch(jobs).await.expect("enqueue");
    }
    source
        .schedule(conveyor::CronEntry::new(
            "nightly",
            "0 3 * * *",
            "noop",
            json!({}),
        ))
        .await
        .expect("cron");
    (run, dead)
}

fn migrate(sqlite: &str, kafka: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_conveyor"));
    command
        .args([
            "migrate", "--from", sqlite, "--to", kafka, "--batch", "2000", "--json",
        ])
        .stderr(Stdio::inherit());
    command
}

/// Jobs still in the SQLite file waiting to move.
async fn left(source: &Conveyor) -> u64 {
    let stats = source.stats().await.expect("stats");
    stats
        .queues
        .iter()
        .map(|q| q.available + q.scheduled + q.retryable + q.dead)
        .sum()
}

/// Jobs the target holds (no worker ran any yet).
async fn produced(target: &Conveyor) -> u64 {
    let stats = target.stats().await.expect("target stats");
    stats
        .queues
        .iter()
        .map(|q| q.available + q.scheduled + q.retryable + q.dead)
        .sum()
}

/// Runs a move and kills it with SIGKILL `after` half the jobs (or, once fewer are left, one
/// more batch) left the source; true when
/// the kill landed inside a batch (the target holds jobs the source still holds too).
async fn kill_inside_a_batch(
    sqlite: &str,
    kafka: &str,
    source: &Conveyor,
    target: &Conveyor,
    total: u64,
    after: Duration,
) -> bool {
    let start = left(source).await;
    let halfway = (total / 2).min(start.saturating_sub(1));
    let mut run = migrate(sqlite, kafka)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn migrate");
    let deadline = Instant::now() + Duration::from_secs(120);
    while left(source).await > halfway {
        assert!(Instant::now() < deadline, "the move made no progress");
        assert!(
            run.try_wait().expect("poll").is_none(),
            "the move ended before it was killed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(after).await;
    run.kill().expect("kill -9 the move");
    run.wait().expect("reap");
    produced(target).await > total - left(source).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_killed_halfway_and_run_again_runs_each_job_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let tag = uuid::Uuid::now_v7().simple().to_string();
    // Topics and a consumer group of its own on the shared broker.
    let kafka = format!(
        "kafka://{}?prefix=migrate{id}.&group=migrate{id}&partitions=4",
        support::shared_broker(),
        id = &tag[24..]
    );
    let (run, dead) = fill(&sqlite).await;
    let total = (run.len() + dead.len()) as u64;
    let source = Conveyor::open(&sqlite).expect("open sqlite");
    assert_eq!(left(&source).await, total);

    // A run dies by SIGKILL while a batch is half done: the target holds records of it that
    // the source still holds too. Tried again until a kill lands there.
    let target = Conveyor::connect(&kafka).await.expect("connect");
    let mut landed = false;
    for attempt in 0..8 {
        let after = Duration::from_millis(attempt * 29 % 100);
        landed = kill_inside_a_batch(&sqlite, &kafka, &source, &target, total, after).await;
        if landed {
            break;
        }
    }
    assert!(landed, "no kill landed inside a batch: nothing is tested");
    let remaining = left(&source).await;
    eprintln!("killed the move with {remaining} of {total} jobs left to move");

    let second = migrate(&sqlite, &kafka)
        .output()
        .expect("run migrate again");
    assert!(second.status.success(), "second move failed");
    let summary: serde_json::Value =
        serde_json::from_slice(&second.stdout).expect("the summary is JSON");
    eprintln!("second move: {summary}");
    assert_eq!(summary["moved"].as_u64(), Some(remaining), "{summary}");
    assert!(
        summary["already"].as_u64() > Some(0),
        "the second run found none of the killed batch's jobs on the target: {summary}"
    );
    assert_eq!(left(&source).await, 0, "jobs were left in the SQLite file");
    // Each job has one record on the broker: a worker would drop a second copy of an id it
    // ran lately, so the runs below alone could not show a job stored twice.
    assert_eq!(
        produced(&target).await,
        total,
        "jobs stored twice on the broker"
    );
    assert!(source.schedules().await.expect("cron").is_empty());

    let cron = target.schedules().await.expect("cron on kafka");
    assert_eq!(cron.len(), 1, "{cron:?}");
    let letters = target.dead_letters(10 * DEAD).await.expect("dlq");
    let listed: Vec<JobId> = letters.iter().map(|l| l.job.id).collect();
    assert_eq!(listed.len(), DEAD, "each dead job is listed once");
    assert_eq!(listed.into_iter().collect::<HashSet<_>>(), dead);

    let mut fleet = support::Fleet::in_dir(dir.path());
    let log = dir.path().join("worker.log");
    fleet.spawn_worker_with(&kafka, &log, &[], "info,conveyor::commands=debug");
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut runs = starts(&log);
    while run.iter().any(|id| !runs.contains_key(&id.to_string())) {
        assert!(
            Instant::now() < deadline,
            "{} of {} jobs ran (log in {})",
            runs.len(),
            run.len(),
            dir.keep().display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        runs = starts(&log);
    }
    // A moment for a copy that would (wrongly) run after the last original.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = starts(&log);
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} jobs ran more than once: {twice:?}",
        twice.len()
    );
    let strangers = runs
        .keys()
        .filter(|id| id.parse::<JobId>().map_or(true, |id| !run.contains(&id)));
    assert_eq!(strangers.count(), 0, "jobs ran that were not moved");
}
