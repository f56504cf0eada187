//! Ordering keys, idempotency keys and priorities (§4.5, §4.6).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor_core::{handler_fn, JobId, JobState, NewJob, Outcome, Registry, WorkerConfig};
use serde::Deserialize;
use serde_json::json;

use crate::{start, test_config, wait_for_state, Harness};

#[derive(Deserialize)]
struct Step {
    n: u32,
}

/// Tracks how many handlers run at once and the most ever seen.
#[derive(Default)]
struct Overlap {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Overlap {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Jobs sharing an ordering key run one at a time in enqueue order, also across a retry.
pub async fn ordering_key_runs_one_at_a_time_in_order(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let overlap = Arc::new(Overlap::default());
    let (log, gate) = (order.clone(), overlap.clone());
    let mut registry = Registry::new();
    registry.register(handler_fn("step", move |ctx| {
        let (log, gate) = (log.clone(), gate.clone());
        async move {
            let step: Step = match ctx.payload() {
                Ok(s) => s,
                Err(discard) => return discard,
            };
            gate.enter();
            log.lock().expect("lock").push(step.n);
            tokio::time::sleep(Duration::from_millis(5)).await;
            gate.leave();
            if step.n == 3 && ctx.attempt() == 1 {
                return Outcome::RetryAfter {
                    delay: Duration::from_millis(100),
                    error: "transient".into(),
                };
            }
            Outcome::Complete
        }
    }));
    let mut ids = Vec::new();
    for n in 0..10 {
        let job = NewJob::new("step", json!({"n": n})).ordering_key("account-7");
        ids.push(backend.enqueue(job).await.expect("enqueue").id);
    }
    let worker = start(
        &backend,
        registry,
        WorkerConfig {
            concurrency: 8,
            ..test_config()
        },
    );
    for id in &ids {
        wait_for_state(&backend, *id, JobState::Completed).await;
    }
    worker.stop().await;
    assert_eq!(
        overlap.max.load(Ordering::SeqCst),
        1,
        "two jobs of one key ran at once"
    );
    let seen = order.lock().expect("lock").clone();
    assert_eq!(
        seen,
        [0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9],
        "job 3's retry must run before job 4"
    );
}

/// Different ordering keys run in parallel.
pub async fn different_ordering_keys_run_in_parallel(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let overlap = Arc::new(Overlap::default());
    let gate = overlap.clone();
    let mut registry = Registry::new();
    registry.register(handler_fn("slow", move |_ctx| {
        let gate = gate.clone();
        async move {
            gate.enter();
            tokio::time::sleep(Duration::from_millis(300)).await;
            gate.leave();
            Outcome::Complete
        }
    }));
    let mut ids = Vec::new();
    for key in ["a", "b", "c", "d"] {
        ids.push(
            backend
                .enqueue(NewJob::new("slow", json!({})).ordering_key(key))
                .await
                .expect("enqueue")
                .id,
        );
    }
    let worker = start(&backend, registry, test_config());
    for id in &ids {
        wait_for_state(&backend, *id, JobState::Completed).await;
    }
    worker.stop().await;
    assert!(
        overlap.max.load(Ordering::SeqCst) >= 2,
        "keys did not run in parallel"
    );
}

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
    registry.register(super::recorder("prio", order.clone(), |ctx| {
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
}

/// A worker serving a list of queues takes jobs from those queues only, best priority first.
pub async fn workers_take_only_their_queues(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let order: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let mut registry = Registry::new();
    registry.register(super::recorder("mark", order.clone(), |ctx| {
        ctx.job().queue.clone()
    }));
    let mut wanted = Vec::new();
    for (queue, priority) in [("mail", 0), ("sms", 5), ("mail", 9)] {
        let job = NewJob::new("mark", json!({}))
            .queue(queue)
            .priority(priority);
        wanted.push(backend.enqueue(job).await.expect("enqueue").id);
    }
    let other = backend
        .enqueue(NewJob::new("mark", json!({})).queue("reports").priority(99))
        .await
        .expect("enqueue")
        .id;
    let config = WorkerConfig {
        concurrency: 1,
        queues: vec!["mail".into(), "sms".into()],
        ..test_config()
    };
    let worker = start(&backend, registry, config);
    for id in &wanted {
        wait_for_state(&backend, *id, JobState::Completed).await;
    }
    worker.stop().await;
    assert_eq!(
        *order.lock().expect("lock"),
        ["mail", "sms", "mail"],
        "priority 9, 5, 0 across both queues"
    );
    let untouched = backend.job(other).await.expect("lookup").expect("exists");
    assert_eq!(
        untouched.state,
        JobState::Available,
        "a queue the worker does not serve was taken"
    );
}
