//! Fault paths: panics, timeouts, bad input, shutdown and crashes (§4.1, §4.2, §4.9, §4.10).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor_core::{handler_fn, Error, Fetch, JobState, NewJob, Outcome, Registry, WorkerConfig};
use serde_json::json;

use crate::{start, test_config, wait_for_state, Harness};

/// A panicking handler fails its attempt with the panic message; the worker keeps going.
pub async fn handler_panic_is_an_error_not_a_crash(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let mut registry = Registry::with_builtins();
    registry.register(handler_fn("explode", |_| async {
        panic!("boom at line 7")
    }));
    let worker = start(&backend, registry, test_config());
    let id = backend
        .enqueue(NewJob::new("explode", json!({})).max_attempts(2))
        .await
        .expect("enqueue")
        .id;
    let info = wait_for_state(&backend, id, JobState::Dead).await;
    assert_eq!(info.attempt, 2);
    let error = info.last_error.unwrap_or_default();
    assert!(
        error.contains("panicked") && error.contains("boom at line 7"),
        "{error}"
    );
    let after = backend
        .enqueue(NewJob::new("noop", json!({})))
        .await
        .expect("enqueue")
        .id;
    wait_for_state(&backend, after, JobState::Completed).await;
    worker.stop().await;
}

/// An attempt over its timeout fails with a timeout error.
pub async fn timeout_fails_the_attempt(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let worker = start(&backend, Registry::with_builtins(), test_config());
    let job = NewJob::new("sleep", json!({"ms": 60_000}))
        .timeout(Duration::from_millis(200))
        .max_attempts(1);
    let id = backend.enqueue(job).await.expect("enqueue").id;
    let info = wait_for_state(&backend, id, JobState::Dead).await;
    assert!(info
        .last_error
        .unwrap_or_default()
        .contains("timed out after 200ms"));
    worker.stop().await;
}

/// A job of a kind no handler serves is dead-lettered with an error naming the kind.
pub async fn unknown_kind_is_dead_lettered_naming_the_kind(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let worker = start(&backend, Registry::with_builtins(), test_config());
    let id = backend
        .enqueue(NewJob::new("no_such_kind", json!({})))
        .await
        .expect("enqueue")
        .id;
    let info = wait_for_state(&backend, id, JobState::Dead).await;
    let error = info.last_error.unwrap_or_default();
    assert!(
        error.contains("no handler") && error.contains("no_such_kind"),
        "{error}"
    );
    worker.stop().await;
}

/// A payload its handler cannot decode is dead-lettered at once with the decode error.
pub async fn malformed_payload_is_dead_lettered_with_the_decode_error(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let worker = start(&backend, Registry::with_builtins(), test_config());
    let id = backend
        .enqueue(NewJob::new("sleep", json!({"ms": "soon"})).max_attempts(5))
        .await
        .expect("enqueue")
        .id;
    let info = wait_for_state(&backend, id, JobState::Dead).await;
    assert_eq!(info.attempt, 1, "a decode error is not retried");
    let error = info.last_error.unwrap_or_default();
    assert!(
        error.contains("does not decode") && error.contains("invalid type"),
        "{error}"
    );
    worker.stop().await;
}

/// An oversized payload is refused at enqueue with a clear error, and nothing is stored.
pub async fn oversized_payload_is_refused_at_enqueue(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let limit = backend.max_payload_bytes();
    let big = json!({"blob": "x".repeat(limit)});
    match backend.enqueue(NewJob::new("noop", big)).await {
        Err(Error::PayloadTooLarge { size, limit: l }) => {
            assert!(size > l);
            assert_eq!(l, limit);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let batch = vec![
        NewJob::new("noop", json!({})),
        NewJob::new("noop", json!({"blob": "x".repeat(limit)})),
    ];
    assert!(matches!(
        backend.enqueue_batch(batch).await,
        Err(Error::PayloadTooLarge { .. })
    ));
    assert!(
        backend.stats().await.expect("stats").queues.is_empty(),
        "a refused batch stored nothing"
    );
}

/// Shutdown stops fetching and lets running jobs finish within the grace period.
pub async fn graceful_shutdown_lets_running_jobs_finish(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let worker = start(&backend, Registry::with_builtins(), test_config());
    let id = backend
        .enqueue(NewJob::new("sleep", json!({"ms": 400})))
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
    let info = backend.job(id).await.expect("lookup").expect("exists");
    assert_eq!(
        info.state,
        JobState::Completed,
        "the running job finished before stop returned"
    );
    let later = backend.job(waiting).await.expect("lookup").expect("exists");
    assert!(
        !later.state.is_final(),
        "no new job was fetched after shutdown began: {later:?}"
    );
}

/// Jobs still running when the grace period ends are given back and run again later.
pub async fn shutdown_releases_jobs_past_the_grace_period(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let config = WorkerConfig {
        shutdown_grace: Duration::from_millis(200),
        ..test_config()
    };
    let worker = start(&backend, Registry::with_builtins(), config);
    let id = backend
        .enqueue(NewJob::new("sleep", json!({"ms": 60_000})))
        .await
        .expect("enqueue")
        .id;
    wait_for_state(&backend, id, JobState::Running).await;
    worker.stop().await;
    let info = backend.job(id).await.expect("lookup").expect("exists");
    assert_eq!(info.state, JobState::Available, "{info:?}");
    assert_eq!(info.attempt, 0, "an interrupted attempt is not counted");
    let mut quick = Registry::new();
    quick.register(handler_fn("sleep", |_| async { Outcome::Complete }));
    let worker = start(&backend, quick, test_config());
    wait_for_state(&backend, id, JobState::Completed).await;
    worker.stop().await;
}

/// A worker that dies holding a job loses it; the job runs again elsewhere.
pub async fn crashed_worker_loses_its_lease_and_the_job_runs_again(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let id = backend
        .enqueue(NewJob::new("tracked", json!({})))
        .await
        .expect("enqueue")
        .id;
    // A worker that leases the job and then vanishes: it never reports or heartbeats.
    let ghost = Fetch {
        owner: "ghost-worker".into(),
        queues: vec![],
        limit: 10,
    };
    let leased = backend.exchange(vec![], &ghost).await.expect("ghost fetch");
    assert_eq!(leased.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);
    let ran = Arc::new(Mutex::new(Vec::new()));
    let mut registry = Registry::new();
    registry.register(super::recorder("tracked", ran.clone(), |ctx| ctx.id()));
    let worker = start(&backend, registry, test_config());
    wait_for_state(&backend, id, JobState::Completed).await;
    worker.stop().await;
    assert_eq!(*ran.lock().expect("lock"), [id]);
}
