//! Stats, purge, cleanup and durability across handles (§4.1, §4.8).

use std::time::Duration;

use chrono::Utc;
use conveyor_core::{JobState, NewJob, Registry};
use serde_json::json;

use crate::{start, test_config, wait_for_state, Harness};

/// Stats count every state per queue; purge removes the jobs that have not started.
pub async fn stats_are_true_and_purge_removes(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    for _ in 0..3 {
        backend
            .enqueue(NewJob::new("noop", json!({})).queue("reports"))
            .await
            .expect("enqueue");
    }
    for _ in 0..2 {
        let later = NewJob::new("noop", json!({}))
            .queue("reports")
            .run_in(Duration::from_secs(3600));
        backend.enqueue(later).await.expect("enqueue");
    }
    backend
        .enqueue(NewJob::new("noop", json!({})).queue("other"))
        .await
        .expect("enqueue");
    let stats = backend.stats().await.expect("stats");
    let reports = stats.queue("reports").expect("reports queue");
    assert_eq!(
        (reports.available, reports.scheduled, reports.running),
        (3, 2, 0)
    );
    assert_eq!(stats.queue("other").map(|q| q.available), Some(1));
    assert_eq!(backend.purge_queue("reports").await.expect("purge"), 5);
    let stats = backend.stats().await.expect("stats");
    assert!(
        stats
            .queue("reports")
            .is_none_or(|q| q.available + q.scheduled == 0),
        "{stats:?}"
    );
    assert_eq!(
        stats.queue("other").map(|q| q.available),
        Some(1),
        "other queues untouched"
    );
    // The purged jobs never run.
    let worker = start(&backend, Registry::with_builtins(), test_config());
    let marker = backend
        .enqueue(NewJob::new("noop", json!({})).queue("reports"))
        .await
        .expect("enqueue")
        .id;
    wait_for_state(&backend, marker, JobState::Completed).await;
    worker.stop().await;
    let stats = backend.stats().await.expect("stats");
    assert_eq!(stats.queue("reports").map(|q| q.completed), Some(1));
}

/// Cleanup deletes finished jobs older than the cutoff and returns how many.
pub async fn cleanup_removes_old_finished_jobs(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let worker = start(&backend, Registry::with_builtins(), test_config());
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            backend
                .enqueue(NewJob::new("noop", json!({})))
                .await
                .expect("enqueue")
                .id,
        );
    }
    for id in &ids {
        wait_for_state(&backend, *id, JobState::Completed).await;
    }
    worker.stop().await;
    let pending = backend
        .enqueue(NewJob::new("noop", json!({})).run_in(Duration::from_secs(3600)))
        .await
        .expect("enqueue")
        .id;
    assert_eq!(
        backend
            .cleanup(Utc::now() - chrono::Duration::hours(1))
            .await
            .expect("cleanup"),
        0
    );
    assert_eq!(
        backend
            .cleanup(Utc::now() + chrono::Duration::seconds(1))
            .await
            .expect("cleanup"),
        3
    );
    assert!(backend.job(ids[0]).await.expect("lookup").is_none());
    assert!(
        backend.job(pending).await.expect("lookup").is_some(),
        "unfinished jobs are kept"
    );
}

/// Once shutdown began, a worker fetches nothing new.
pub async fn graceful_shutdown_fetches_nothing_new(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let worker = start(&backend, Registry::with_builtins(), test_config());
    // Long enough to be seen running by a status lookup that reads a broker.
    let id = backend
        .enqueue(NewJob::new("sleep", json!({"ms": 2000})))
        .await
        .expect("enqueue")
        .id;
    wait_for_state(&backend, id, JobState::Running).await;
    let waiting = backend
        .enqueue(NewJob::new("noop", json!({})).run_in(Duration::from_millis(100)))
        .await
        .expect("enqueue")
        .id;
    worker.stop().await;
    assert_eq!(
        backend
            .job(id)
            .await
            .expect("lookup")
            .expect("exists")
            .state,
        JobState::Completed
    );
    let later = backend.job(waiting).await.expect("lookup").expect("exists");
    assert!(
        !later.state.is_final(),
        "no new job was fetched after shutdown began: {later:?}"
    );
}
