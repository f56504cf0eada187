//! `kill -9` of a real `conveyor worker` process in the middle of a drain: every acknowledged
//! job still completes, and only the jobs in flight at the kill run twice.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conveyor::{Conveyor, JobState, NewJob};
use serde_json::json;

const JOBS: usize = 3000;
const CONCURRENCY: usize = 32;

fn spawn_worker(url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args([
            "worker",
            "--backend",
            url,
            "--concurrency",
            &CONCURRENCY.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn conveyor worker")
}

async fn completed(conveyor: &Conveyor) -> u64 {
    conveyor
        .stats()
        .await
        .expect("stats")
        .queue("default")
        .map_or(0, |q| q.completed)
}

async fn wait_for_completed(conveyor: &Conveyor, at_least: u64, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        let done = completed(conveyor).await;
        if done >= at_least || Instant::now() > deadline {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_drain_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A short lease so the killed worker's jobs are rescued quickly.
    let url = format!(
        "sqlite://{}?lease=1s",
        dir.path().join("crash.db").display()
    );
    let conveyor = Conveyor::open(&url).expect("open");
    let jobs = (0..JOBS)
        .map(|i| NewJob::new("sleep", json!({"ms": 10, "i": i})))
        .collect();
    let ids: Vec<_> = conveyor
        .dispatch_batch(jobs)
        .await
        .expect("enqueue")
        .into_iter()
        .map(|e| e.id)
        .collect();

    let mut first = spawn_worker(&url);
    let before_kill =
        wait_for_completed(&conveyor, (JOBS / 4) as u64, Duration::from_secs(60)).await;
    first.kill().expect("kill -9"); // SIGKILL on Unix: no shutdown code runs
    first.wait().expect("reap");
    assert!(
        before_kill < JOBS as u64,
        "the drain finished before the kill; make the jobs slower"
    );
    let stats = conveyor.stats().await.expect("stats");
    let in_flight = stats.queue("default").map_or(0, |q| q.running);
    assert!(
        in_flight > 0,
        "the kill should leave leased jobs behind: {stats:?}"
    );

    let mut second = spawn_worker(&url);
    let done = wait_for_completed(&conveyor, JOBS as u64, Duration::from_secs(120)).await;
    second.kill().expect("stop second worker");
    second.wait().expect("reap");
    assert_eq!(done, JOBS as u64, "acknowledged jobs were lost");

    let mut reruns = 0;
    for id in &ids {
        let info = conveyor
            .status(*id)
            .await
            .expect("status")
            .expect("job exists");
        assert_eq!(info.state, JobState::Completed, "{info:?}");
        if info.attempt > 1 {
            reruns += 1;
        }
    }
    assert!(
        reruns as u64 <= in_flight,
        "{reruns} jobs ran twice, but only {in_flight} were in flight"
    );
    assert!(
        reruns <= CONCURRENCY,
        "{reruns} re-runs exceed the worker's concurrency"
    );
}
