//! Fault paths: panics, timeouts, bad input, shutdown and crashes (§4.1, §4.2, §4.9, §4.10).

use std::time::Duration;

use conveyor_core::{handler_fn, Error, NewJob, Outcome, Registry, WorkerConfig};
use serde_json::json;

use crate::{attempts, completed, dead_error, lease_one, run, test_config, EngineHarness, WAIT};

/// A panicking handler fails its attempt with the panic message; the worker keeps going.
pub async fn handler_panic_is_an_error_not_a_crash(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
    let mut registry = Registry::with_builtins();
    registry.register(handler_fn("explode", |_| async {
        panic!("boom at line 7")
    }));
    let mut worker = run(&engine, registry, test_config());
    let id = engine
        .enqueue(NewJob::new("explode", json!({})).max_attempts(2))
        .await
        .expect("enqueue")
        .id;
    worker
        .until("the job dead", |seen| dead_error(seen, id).is_some())
        .await;
    let after = engine
        .enqueue(NewJob::new("noop", json!({})))
        .await
        .expect("enqueue")
        .id;
    worker.until_completed(&[after]).await;
    let events = worker.stop().await;
    assert_eq!(attempts(&events, id), [1, 2]);
    let error = dead_error(&events, id).unwrap_or_default();
    assert!(
        error.contains("panicked") && error.contains("boom at line 7"),
        "{error}"
    );
}

/// An attempt over its timeout fails with a timeout error.
pub async fn timeout_fails_the_attempt(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    let job = NewJob::new("sleep", json!({"ms": 60_000}))
        .timeout(Duration::from_millis(200))
        .max_attempts(1);
    let id = engine.enqueue(job).await.expect("enqueue").id;
    worker
        .until("the job dead", |seen| dead_error(seen, id).is_some())
        .await;
    let events = worker.stop().await;
    assert!(dead_error(&events, id)
        .unwrap_or_default()
        .contains("timed out after 200ms"));
}

/// A job of a kind no handler serves is dead-lettered with an error naming the kind.
pub async fn unknown_kind_is_dead_lettered_naming_the_kind(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    let id = engine
        .enqueue(NewJob::new("no_such_kind", json!({})))
        .await
        .expect("enqueue")
        .id;
    worker
        .until("the job dead", |seen| dead_error(seen, id).is_some())
        .await;
    let error = dead_error(&worker.stop().await, id).unwrap_or_default();
    assert!(
        error.contains("no handler") && error.contains("no_such_kind"),
        "{error}"
    );
}

/// A payload its handler cannot decode is dead-lettered at once with the decode error.
pub async fn malformed_payload_is_dead_lettered_with_the_decode_error(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    let id = engine
        .enqueue(NewJob::new("sleep", json!({"ms": "soon"})).max_attempts(5))
        .await
        .expect("enqueue")
        .id;
    worker
        .until("the job dead", |seen| dead_error(seen, id).is_some())
        .await;
    let events = worker.stop().await;
    assert_eq!(attempts(&events, id), [1], "a decode error is not retried");
    let error = dead_error(&events, id).unwrap_or_default();
    assert!(
        error.contains("does not decode") && error.contains("invalid type"),
        "{error}"
    );
}

/// An oversized payload is refused at enqueue with a clear error, and nothing of a refused
/// batch is stored: a worker afterwards runs only the job enqueued after it.
pub async fn oversized_payload_is_refused_at_enqueue(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
    let limit = engine.max_payload_bytes();
    match engine
        .enqueue(NewJob::new("noop", json!({"blob": "x".repeat(limit)})))
        .await
    {
        Err(Error::PayloadTooLarge { size, limit: l }) => assert!(size > l && l == limit),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let batch = vec![
        NewJob::new("noop", json!({})),
        NewJob::new("noop", json!({"blob": "x".repeat(limit)})),
    ];
    assert!(matches!(
        engine.enqueue_batch(batch).await,
        Err(Error::PayloadTooLarge { .. })
    ));
    let marker = engine
        .enqueue(NewJob::new("noop", json!({"marker": true})))
        .await
        .expect("enqueue")
        .id;
    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    worker.until_completed(&[marker]).await;
    let events = worker.stop().await;
    assert_eq!(completed(&events).len(), 1, "a refused job ran: {events:?}");
}

/// Shutdown lets running jobs finish within the grace period before the worker returns.
pub async fn graceful_shutdown_lets_running_jobs_finish(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    let id = engine
        .enqueue(NewJob::new("sleep", json!({"ms": 400})))
        .await
        .expect("enqueue")
        .id;
    worker
        .until("the job started", |seen| !attempts(seen, id).is_empty())
        .await;
    let events = worker.stop().await;
    assert!(
        completed(&events).contains(&id),
        "the running job finished before stop returned"
    );
}

/// Jobs still running when the grace period ends are given back and run again later.
pub async fn shutdown_releases_jobs_past_the_grace_period(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
    let config = WorkerConfig {
        shutdown_grace: Duration::from_millis(200),
        ..test_config()
    };
    let mut worker = run(&engine, Registry::with_builtins(), config);
    let id = engine
        .enqueue(NewJob::new("sleep", json!({"ms": 60_000})))
        .await
        .expect("enqueue")
        .id;
    worker
        .until("the job started", |seen| !attempts(seen, id).is_empty())
        .await;
    let events = worker.stop().await;
    assert!(!completed(&events).contains(&id));
    let mut quick = Registry::new();
    quick.register(handler_fn("sleep", |_| async { Outcome::Complete }));
    let mut next = run(&engine, quick, test_config());
    next.until_completed(&[id]).await;
    let events = next.stop().await;
    assert_eq!(
        attempts(&events, id),
        [1],
        "an interrupted attempt is not counted"
    );
}

/// A worker process that dies holding jobs (here: a handle that leased them and is dropped
/// without reporting) loses them; they run again on another handle.
pub async fn a_crashed_worker_handle_loses_its_jobs_and_they_run_again(h: &dyn EngineHarness) {
    let site = h.engine_site().await;
    let ghost = site.engine().await;
    let id = ghost
        .enqueue(NewJob::new("noop", json!({})))
        .await
        .expect("enqueue")
        .id;
    let leased = lease_one(&ghost, "ghost-worker").await;
    assert_eq!(leased.id, id);
    drop(ghost); // the crash: no report, no heartbeat, no commit
    let survivor = site.engine().await;
    let mut worker = run(&survivor, Registry::with_builtins(), test_config());
    // The survivor gets the job once the group gave up on the dead handle (its session, then
    // a rebalance): a loaded CI machine once took longer than `WAIT` for that on Kafka.
    worker
        .until_within(2 * WAIT, "the job completed", |seen| {
            completed(seen).contains(&id)
        })
        .await;
    worker.stop().await;
}
