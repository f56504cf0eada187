//! Delayed jobs and cancellation (§4.4); cron is in observe.rs, where Kafka runs it too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use conveyor_core::{handler_fn, Error, JobState, NewJob, Outcome, Registry};
use serde_json::json;

use crate::{start, test_config, wait_for_state, Harness};

/// A delayed job is `scheduled` until its time, never starts before it, and then runs.
pub async fn scheduled_jobs_never_fire_early(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let started = Arc::new(Mutex::new(Vec::new()));
    let mut registry = Registry::new();
    registry.register(crate::tests::recorder("stamp", started.clone(), |_| {
        Utc::now()
    }));
    let worker = start(&backend, registry, test_config());
    // Far enough ahead for a status lookup on a loaded broker to answer before it is due.
    let job = NewJob::new("stamp", json!({})).run_in(Duration::from_secs(3));
    let run_at = job.run_at.expect("run_at set");
    let enqueued = backend.enqueue(job).await.expect("enqueue");
    assert_eq!(enqueued.state, JobState::Scheduled);
    assert_eq!(
        backend
            .job(enqueued.id)
            .await
            .expect("lookup")
            .expect("exists")
            .state,
        JobState::Scheduled
    );
    wait_for_state(&backend, enqueued.id, JobState::Completed).await;
    worker.stop().await;
    let at = started.lock().expect("lock")[0];
    // Stored times have millisecond precision.
    assert!(
        at.timestamp_millis() >= run_at.timestamp_millis(),
        "started {at} before {run_at}"
    );
}

/// A job cancelled before it starts never runs; finished and unknown jobs cannot be cancelled.
pub async fn cancel_before_start(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let ran = Arc::new(Mutex::new(Vec::new()));
    let mut registry = Registry::with_builtins();
    registry.register(crate::tests::recorder("tracked", ran.clone(), |ctx| {
        ctx.id()
    }));
    let later = backend
        .enqueue(NewJob::new("tracked", json!({})).run_in(Duration::from_millis(300)))
        .await
        .expect("enqueue");
    let info = backend.cancel(later.id).await.expect("cancel");
    assert_eq!(info.state, JobState::Cancelled);
    let marker = backend
        .enqueue(NewJob::new("noop", json!({})).run_in(Duration::from_millis(500)))
        .await
        .expect("enqueue");
    let worker = start(&backend, registry, test_config());
    wait_for_state(&backend, marker.id, JobState::Completed).await;
    worker.stop().await;
    assert!(ran.lock().expect("lock").is_empty(), "a cancelled job ran");
    assert!(matches!(
        backend.cancel(marker.id).await,
        Err(Error::WrongState { .. })
    ));
    assert!(matches!(
        backend.cancel(conveyor_core::JobId::new()).await,
        Err(Error::NotFound { .. })
    ));
}

/// Cancelling a running job stops it at the worker's next heartbeat.
pub async fn cancel_while_running(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let worker = start(&backend, Registry::with_builtins(), test_config());
    let id = backend
        .enqueue(NewJob::new("sleep", json!({"ms": 60_000})))
        .await
        .expect("enqueue")
        .id;
    wait_for_state(&backend, id, JobState::Running).await;
    let requested = backend.cancel(id).await.expect("cancel");
    assert!(
        requested.cancel_requested || requested.state == JobState::Cancelled,
        "{requested:?}"
    );
    let info = wait_for_state(&backend, id, JobState::Cancelled).await;
    assert!(info.finished_at.is_some());
    worker.stop().await;
}

/// A handler's progress is stored and visible in the job's status.
pub async fn progress_is_visible_in_status(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let mut registry = Registry::new();
    registry.register(handler_fn("report", move |ctx| {
        let mut release = release_rx.clone();
        async move {
            if let Err(e) = ctx.progress(json!({"done": 50, "of": 100})).await {
                return Outcome::Retry(e.to_string());
            }
            let _ = release.wait_for(|go| *go).await;
            Outcome::Complete
        }
    }));
    let worker = start(&backend, registry, test_config());
    let id = backend
        .enqueue(NewJob::new("report", json!({})))
        .await
        .expect("enqueue")
        .id;
    let info = crate::wait_until(&backend, id, "showing progress", |i| i.progress.is_some()).await;
    assert_eq!(info.progress, Some(json!({"done": 50, "of": 100})));
    assert_eq!(info.state, JobState::Running);
    let _ = release_tx.send(true);
    let done = wait_for_state(&backend, id, JobState::Completed).await;
    assert_eq!(
        done.progress,
        Some(json!({"done": 50, "of": 100})),
        "progress kept after completion"
    );
    worker.stop().await;
}
