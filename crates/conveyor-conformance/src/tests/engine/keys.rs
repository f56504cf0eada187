//! Ordering keys and queues (§4.5).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor_core::{
    handler_fn, now_ms, Completion, Fetch, NewJob, Outcome, Registry, Report, WorkerConfig,
};
use serde::Deserialize;
use serde_json::json;

use crate::{attempts, dead_error, lease_one, run, test_config, EngineHarness, WAIT};

#[derive(Deserialize)]
struct Step {
    n: u32,
}

/// Tracks how many handlers run at once and the most ever seen.
#[derive(Default)]
pub(crate) struct Overlap {
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
pub async fn ordering_key_runs_one_at_a_time_in_order(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
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
    let jobs = (0..10)
        .map(|n| NewJob::new("step", json!({"n": n})).ordering_key("account-7"))
        .collect();
    let ids: Vec<_> = engine
        .enqueue_batch(jobs)
        .await
        .expect("enqueue")
        .into_iter()
        .map(|e| e.id)
        .collect();
    let mut worker = run(
        &engine,
        registry,
        WorkerConfig {
            concurrency: 8,
            ..test_config()
        },
    );
    worker.until_completed(&ids).await;
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
pub async fn different_ordering_keys_run_in_parallel(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
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
    let jobs = ["a", "b", "c", "d"]
        .iter()
        .map(|k| NewJob::new("slow", json!({})).ordering_key(*k))
        .collect();
    let ids: Vec<_> = engine
        .enqueue_batch(jobs)
        .await
        .expect("enqueue")
        .into_iter()
        .map(|e| e.id)
        .collect();
    let mut worker = run(&engine, registry, test_config());
    worker.until_completed(&ids).await;
    worker.stop().await;
    assert!(
        overlap.max.load(Ordering::SeqCst) >= 2,
        "keys did not run in parallel"
    );
}

/// A worker serving a list of queues takes jobs from those queues only.
pub async fn workers_take_only_their_queues(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
    let mut wanted = Vec::new();
    for queue in ["mail", "sms", "mail"] {
        wanted.push(
            engine
                .enqueue(NewJob::new("noop", json!({})).queue(queue))
                .await
                .expect("enqueue")
                .id,
        );
    }
    let other = engine
        .enqueue(NewJob::new("noop", json!({})).queue("reports"))
        .await
        .expect("enqueue")
        .id;
    let config = WorkerConfig {
        queues: vec!["mail".into(), "sms".into()],
        ..test_config()
    };
    let mut worker = run(&engine, Registry::with_builtins(), config);
    worker.until_completed(&wanted).await;
    let events = worker.stop().await;
    assert!(
        attempts(&events, other).is_empty(),
        "a queue the worker does not serve was taken"
    );
}

/// The same idempotency key enqueued from two handles at once (as two processes would), and
/// again from a third handle later, yields one job: every enqueue answers its id, exactly one
/// of the racers says it stored it, and the job runs once.
pub async fn idempotency_keys_hold_across_racing_handles(h: &dyn EngineHarness) {
    let site = h.engine_site().await;
    let (a, b) = (site.engine().await, site.engine().await);
    let keyed = |who: &str, key: &str| {
        NewJob::new("noop", json!({ "from": who })).idempotency_key(format!("race-{key}"))
    };
    let mut winners = Vec::new();
    for key in 0..10 {
        let key = key.to_string();
        let (first, second) =
            tokio::join!(a.enqueue(keyed("a", &key)), b.enqueue(keyed("b", &key)));
        let (first, second) = (first.expect("enqueue a"), second.expect("enqueue b"));
        assert_eq!(
            first.id, second.id,
            "both racers answer the job holding the key"
        );
        assert!(
            first.duplicate != second.duplicate,
            "exactly one racer stored the job: {first:?} {second:?}"
        );
        winners.push(first.id);
    }
    drop((a, b));
    let c = site.engine().await;
    let late = c.enqueue(keyed("c", "0")).await.expect("enqueue c");
    assert!(late.duplicate, "{late:?}");
    assert_eq!(late.id, winners[0], "a later process gets the same job");
    let other = c.enqueue(keyed("c", "other")).await.expect("enqueue other");
    assert!(!other.duplicate, "another key is another job: {other:?}");
    winners.push(other.id);

    let mut worker = run(&c, Registry::with_builtins(), test_config());
    worker.until_completed(&winners).await;
    let events = worker.stop().await;
    for id in &winners {
        assert_eq!(attempts(&events, *id), [1], "job {id} runs once");
    }
    let started: std::collections::HashSet<_> = events
        .iter()
        .filter(|e| matches!(e, conveyor_core::JobEvent::Started { .. }))
        .map(conveyor_core::JobEvent::id)
        .collect();
    assert_eq!(
        started,
        winners.iter().copied().collect(),
        "no job but the keys' holders ran"
    );
}

/// A keyed job that always fails keeps its attempt count when the worker holding it for its
/// retry dies: two handles each run one attempt and die without a word, and a third runs the
/// rest and dead-letters it after exactly its max attempts (not max plus the lost ones).
pub async fn a_keyed_retry_keeps_its_attempts_across_crashed_workers(h: &dyn EngineHarness) {
    let site = h.engine_site().await;
    let mut handle = Some(site.engine().await);
    let job = NewJob::new("fail", json!({}))
        .ordering_key("account-7")
        .max_attempts(4);
    let id = handle
        .as_ref()
        .expect("first handle")
        .enqueue(job)
        .await
        .expect("enqueue")
        .id;
    for attempt in 1..=2 {
        let ghost = match handle.take() {
            Some(first) => first,
            None => site.engine().await,
        };
        let leased = lease_one(&ghost, &format!("ghost-{attempt}")).await;
        assert_eq!(
            (leased.id, leased.attempt),
            (id, attempt),
            "attempt {attempt}"
        );
        let failed = Report {
            id,
            attempt,
            completion: Completion::Retry {
                at_ms: now_ms() + 100,
                error: format!("attempt {attempt} failed"),
            },
        };
        let fetch = Fetch {
            owner: format!("ghost-{attempt}"),
            queues: vec![],
            limit: 0,
        };
        ghost.exchange(vec![failed], &fetch).await.expect("report");
        drop(ghost); // the crash: its memory of the retry is gone
    }
    let survivor = site.engine().await;
    let mut worker = run(&survivor, Registry::with_builtins(), test_config());
    // The survivor gets the job once the group gave up on the dead handle (its session).
    worker
        .until_within(2 * WAIT, "the job dead", |seen| {
            dead_error(seen, id).is_some()
        })
        .await;
    assert_eq!(attempts(&worker.stop().await, id), [3, 4]);
}
