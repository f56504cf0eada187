//! Idempotency keys and priorities (§4.6).

use std::sync::{Arc, Mutex};

use conveyor_core::{JobId, JobState, NewJob, Registry, WorkerConfig};
use serde_json::json;

use crate::{start, test_config, wait_for_state, Harness};

/// The same idempotency key yields one job, from any handle, also after reopening.
pub async fn idempotency_key_holds_across_handles(h: &dyn Harness) {
    let site = h.site().await;
    let (a, b) = (site.open().await, site.open().await);
    let first = a
        .enqueue(NewJob::new("noop", json!({"v": 1})).idempotency_key("order-42"))
        .await
        .expect("enqueue");
    assert!(!first.duplicate);
    let second = b
        .enqueue(NewJob::new("noop", json!({"v": 2})).idempotency_key("order-42"))
        .await
        .expect("enqueue");
    assert!(second.duplicate);
    assert_eq!(second.id, first.id);
    drop((a, b));
    let c = site.open().await;
    let third = c
        .enqueue(NewJob::new("noop", json!({"v": 3})).idempotency_key("order-42"))
        .await
        .expect("enqueue");
    assert!(third.duplicate);
    assert_eq!(third.id, first.id);
    let stored = c.job(first.id).await.expect("lookup").expect("exists");
    assert_eq!(stored.payload, json!({"v": 1}), "the first payload wins");
    let other = c
        .enqueue(NewJob::new("noop", json!({})).idempotency_key("order-43"))
        .await
        .expect("enqueue");
    assert!(!other.duplicate);
}

/// The key of a deleted job (purged, or completed and cleaned up) still names that job: a
/// producer retrying late gets "duplicate", never a second run.
pub async fn idempotency_key_outlives_the_deleted_job(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let keyed = |key: &str| {
        NewJob::new("noop", json!({}))
            .queue("keys")
            .idempotency_key(key)
    };
    let purged = backend.enqueue(keyed("purged")).await.expect("enqueue");
    assert_eq!(backend.purge_queue("keys").await.expect("purge"), 1);
    let again = backend.enqueue(keyed("purged")).await.expect("enqueue");
    assert!(again.duplicate, "{again:?}");
    assert_eq!(again.id, purged.id);

    let done = backend.enqueue(keyed("done")).await.expect("enqueue");
    let worker = start(&backend, Registry::with_builtins(), test_config());
    wait_for_state(&backend, done.id, JobState::Completed).await;
    worker.stop().await;
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    assert_eq!(backend.cleanup(later).await.expect("cleanup"), 1);
    assert!(backend.job(done.id).await.expect("lookup").is_none());
    let again = backend.enqueue(keyed("done")).await.expect("enqueue");
    assert!(again.duplicate, "{again:?}");
    assert_eq!((again.id, again.state), (done.id, JobState::Completed));
    // Nothing new waits to run (an engine that keeps logs may still count the finished jobs).
    let stats = backend.stats().await.expect("stats");
    assert!(
        stats
            .queue("keys")
            .is_none_or(|q| q.available + q.scheduled + q.retryable == 0),
        "nothing new was stored: {stats:?}"
    );
}

/// A producer retrying with the same job id stores the job once.
pub async fn same_job_id_is_stored_once(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let job = NewJob::new("noop", json!({}));
    let first = backend.enqueue(job.clone()).await.expect("enqueue");
    let again = backend.enqueue(job.clone()).await.expect("enqueue");
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.id, job.id);
    let stats = backend.stats().await.expect("stats");
    assert_eq!(stats.queue("default").map(|q| q.available), Some(1));
}

/// Among due jobs, higher priority runs first.
pub async fn priorities_run_high_first(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let order: Arc<Mutex<Vec<i32>>> = Arc::new(Mutex::new(Vec::new()));
    let mut registry = Registry::new();
    registry.register(crate::tests::recorder("prio", order.clone(), |ctx| {
        serde_json::from_str::<serde_json::Value>(&ctx.job().payload)
            .ok()
            .and_then(|v| v["p"].as_i64())
            .unwrap_or(-1) as i32
    }));
    let mut ids: Vec<JobId> = Vec::new();
    for p in [0, 0, 0, 10, 10, 10] {
        ids.push(
            backend
                .enqueue(NewJob::new("prio", json!({"p": p})).priority(p))
                .await
                .expect("enqueue")
                .id,
        );
    }
    let worker = start(
        &backend,
        registry,
        WorkerConfig {
            concurrency: 1,
            ..test_config()
        },
    );
    for id in &ids {
        wait_for_state(&backend, *id, JobState::Completed).await;
    }
    worker.stop().await;
    assert_eq!(*order.lock().expect("lock"), [10, 10, 10, 0, 0, 0]);

    // The same across a worker's list of queues: best priority first, whatever the queue.
    order.lock().expect("lock").clear();
    let mut ids: Vec<JobId> = Vec::new();
    for (queue, p) in [("mail", 0), ("sms", 5), ("mail", 9), ("reports", 99)] {
        ids.push(
            backend
                .enqueue(
                    NewJob::new("prio", json!({"p": p}))
                        .queue(queue)
                        .priority(p),
                )
                .await
                .expect("enqueue")
                .id,
        );
    }
    let mut registry = Registry::new();
    registry.register(crate::tests::recorder("prio", order.clone(), |ctx| {
        serde_json::from_str::<serde_json::Value>(&ctx.job().payload)
            .ok()
            .and_then(|v| v["p"].as_i64())
            .unwrap_or(-1) as i32
    }));
    let config = WorkerConfig {
        concurrency: 1,
        queues: vec!["mail".into(), "sms".into()],
        ..test_config()
    };
    let worker = start(&backend, registry, config);
    for id in &ids[..3] {
        wait_for_state(&backend, *id, JobState::Completed).await;
    }
    worker.stop().await;
    assert_eq!(*order.lock().expect("lock"), [9, 5, 0]);
}
