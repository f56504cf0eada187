//! Delayed jobs (§4.4): never before their time, whatever order they were enqueued in, and
//! not lost when the worker that read them goes away before they are due.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use conveyor_core::{Engine, JobId, JobState, NewJob, Registry};
use serde_json::json;

use crate::{attempts, run, test_config, EngineHarness};

/// When each attempt of a job of kind `stamp` started.
type Starts = Arc<Mutex<Vec<(JobId, DateTime<Utc>)>>>;

fn stamping(starts: &Starts) -> Registry {
    let mut registry = Registry::with_builtins();
    registry.register(crate::tests::recorder("stamp", starts.clone(), |ctx| {
        (ctx.id(), Utc::now())
    }));
    registry
}

/// Enqueues one `stamp` job per delay (ms), in the order given; returns (id, run_at).
async fn enqueue_delayed(engine: &Arc<dyn Engine>, delays: &[u64]) -> Vec<(JobId, DateTime<Utc>)> {
    let mut jobs = Vec::new();
    for (i, ms) in delays.iter().enumerate() {
        let job = NewJob::new("stamp", json!({"i": i})).run_in(Duration::from_millis(*ms));
        let run_at = job.run_at.expect("run_at set");
        let enqueued = engine.enqueue(job).await.expect("enqueue");
        assert_eq!(
            enqueued.state,
            JobState::Scheduled,
            "a job due later is scheduled"
        );
        jobs.push((enqueued.id, run_at));
    }
    jobs
}

fn assert_none_early(starts: &Starts, jobs: &[(JobId, DateTime<Utc>)]) {
    let starts = starts.lock().expect("lock");
    for (id, run_at) in jobs {
        let runs: Vec<&DateTime<Utc>> =
            starts.iter().filter(|s| s.0 == *id).map(|s| &s.1).collect();
        assert!(!runs.is_empty(), "job {id} never ran");
        for at in runs {
            // Stored times have millisecond precision.
            assert!(
                at.timestamp_millis() >= run_at.timestamp_millis(),
                "job {id} started at {at}, before its time {run_at}"
            );
        }
    }
}

/// Delayed jobs enqueued latest-due first (so the order they are stored in is not the order
/// they are due in) each start at or after their time, once; a job without a delay beside
/// them runs at once.
pub async fn delayed_jobs_never_start_early_in_any_order(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
    let starts: Starts = Arc::default();
    let mut worker = run(&engine, stamping(&starts), test_config());
    let jobs = enqueue_delayed(&engine, &[1500, 1200, 900, 600, 300]).await;
    let now = engine
        .enqueue(NewJob::new("noop", json!({})))
        .await
        .expect("enqueue")
        .id;
    worker.until_completed(&[now]).await;
    let ids: Vec<JobId> = jobs.iter().map(|(id, _)| *id).collect();
    worker.until_completed(&ids).await;
    let events = worker.stop().await;
    assert_none_early(&starts, &jobs);
    for id in ids {
        assert_eq!(attempts(&events, id), [1], "job {id} ran once");
    }
}

/// Delayed jobs read by a worker that stops before they are due are run at their time by a
/// worker on another handle (a restarted process).
pub async fn delayed_jobs_survive_a_worker_restart(h: &dyn EngineHarness) {
    let site = h.engine_site().await;
    let first = site.engine().await;
    let starts: Starts = Arc::default();
    let worker = run(&first, stamping(&starts), test_config());
    let delays: Vec<u64> = (0..20).map(|i| 2500 + 50 * i).collect();
    let jobs = enqueue_delayed(&first, &delays).await;
    // Long enough for the worker to have read them; well before the first is due.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let events = worker.stop().await;
    assert!(
        starts.lock().expect("lock").is_empty(),
        "nothing is due yet: {events:?}"
    );
    drop(first);
    let second = site.engine().await;
    let mut worker = run(&second, stamping(&starts), test_config());
    let ids: Vec<JobId> = jobs.iter().map(|(id, _)| *id).collect();
    worker.until_completed(&ids).await;
    worker.stop().await;
    assert_none_early(&starts, &jobs);
}
