//! Cancel on Kafka through the binary, on a durable broker of the test's own: scheduled jobs
//! are cancelled before they are due, and a worker that owns schedule partitions is killed
//! with SIGKILL as they come due. The cancelled jobs never run on any worker (the one that
//! takes the partitions over reads the cancel marks first); the others run once, not early.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use conveyor::{Conveyor, JobState, NewJob};
use serde_json::json;
use support::Fleet;

const JOBS: usize = 10;
/// How far ahead the jobs are due: time for the cancels, each a status lookup on a broker
/// whose durable storage answers one request at a time.
const DUE_IN: Duration = Duration::from_secs(30);

/// Start times of every job started in `logs`, by job id.
fn starts(logs: &[PathBuf]) -> HashMap<String, Vec<DateTime<Utc>>> {
    let mut runs: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(" started job=")) {
            let id = line
                .split(" started job=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next());
            let at = line
                .split_whitespace()
                .next()
                .and_then(|t| t.parse::<DateTime<Utc>>().ok());
            if let (Some(id), Some(at)) = (id, at) {
                runs.entry(id.to_string()).or_default().push(at);
            }
        }
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_scheduled_jobs_never_run_when_their_owner_is_killed_as_they_come_due() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut fleet = Fleet::in_dir(dir.path());
    let address = fleet.broker(&["start"]);
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let url = format!(
        "kafka://{address}?prefix=cancel{}.&partitions=3&session_timeout=6s",
        &tag[24..]
    );
    let conveyor = Conveyor::connect(&url).await.expect("connect");
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|n| NewJob::new("echo", json!({ "n": n })).run_in(DUE_IN))
        .collect();
    let due = jobs[0].run_at.expect("run_at");
    let enqueued = conveyor
        .dispatch_batch(jobs.clone())
        .await
        .expect("enqueue");
    let (cancelled, kept): (Vec<_>, Vec<_>) =
        enqueued.iter().enumerate().partition(|(n, _)| n % 2 == 0);
    let cancelling = Instant::now();
    for (_, job) in &cancelled {
        let info = conveyor.cancel(job.id).await.expect("cancel");
        assert_eq!(info.state, JobState::Cancelled, "{info:?}");
    }
    eprintln!(
        "{} cancels took {:?} on the durable broker",
        cancelled.len(),
        cancelling.elapsed()
    );
    assert!(
        Utc::now() < due,
        "the cancels took past the jobs' time: nothing is tested (a slower machine than {DUE_IN:?} allows)"
    );
    // The workers start after the cancels (each a status lookup, slow on a durable broker
    // that two workers keep busy) and own the schedule partitions by the jobs' time.
    let log_filter = "info,conveyor::commands=debug";
    let mut logs: Vec<PathBuf> = Vec::new();
    for i in 0..2 {
        logs.push(dir.path().join(format!("worker-{i}.log")));
        fleet.spawn_worker_with(&url, &logs[i], &[], log_filter);
    }
    // The blow lands as the jobs come due: a schedule owner dies while it would move them.
    let until_due = (due - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_due.saturating_sub(Duration::from_millis(300))).await;
    if let Some(mut victim) = fleet.workers[0].take() {
        victim.kill().expect("kill -9 a worker");
        victim.wait().expect("reap");
    }
    logs.push(dir.path().join("worker-2.log"));
    fleet.spawn_worker_with(&url, &logs[2], &[], log_filter);

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut runs = starts(&logs);
    while kept
        .iter()
        .any(|(_, j)| !runs.contains_key(&j.id.to_string()))
    {
        assert!(
            Instant::now() < deadline,
            "not every kept job ran: {} of {} (logs in {})",
            kept.iter()
                .filter(|(_, j)| runs.contains_key(&j.id.to_string()))
                .count(),
            kept.len(),
            dir.keep().display()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        runs = starts(&logs);
    }
    // A moment for a cancelled job that would (wrongly) run just after the kept ones; then
    // the workers stop, so the status lookups below do not wait behind them on the broker.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for worker in fleet.workers.iter_mut().flatten() {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    let runs = starts(&logs);
    for (_, job) in &cancelled {
        assert!(
            !runs.contains_key(&job.id.to_string()),
            "cancelled job {} ran at {:?}",
            job.id,
            runs[&job.id.to_string()]
        );
        let info = conveyor
            .status(job.id)
            .await
            .expect("status")
            .expect("known");
        assert_eq!(info.state, JobState::Cancelled, "{info:?}");
    }
    for (_, job) in &kept {
        let first = runs[&job.id.to_string()][0];
        assert!(
            first.timestamp_millis() >= due.timestamp_millis(),
            "job {} started at {first}, before {due}",
            job.id
        );
    }
}
