//! Replaying a queue from a point in time (`conveyor replay`).

use std::time::Duration;

use chrono::Utc;
use conveyor_core::{JobState, NewJob, Registry, WorkerConfig};
use serde_json::json;

use crate::{start, test_config, wait_for_state, Harness};

/// A replay enqueues again, with new ids, the queue's jobs enqueued since the time (not those
/// before it, nor other queues'); each new job runs, names the job it re-runs and does the
/// same work; an idempotency key is not carried over (the replay runs, it is no duplicate).
pub async fn replay_reruns_a_queues_jobs_since_a_time(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let config = WorkerConfig {
        queues: vec!["replayed".into(), "elsewhere".into()],
        ..test_config()
    };
    let worker = start(&backend, Registry::with_builtins(), config);
    let early = NewJob::new("noop", json!({ "n": 0 })).queue("replayed");
    let early = backend.enqueue(early).await.expect("enqueue").id;
    wait_for_state(&backend, early, JobState::Completed).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let key = format!("replayed-{}", conveyor_core::JobId::new());
    let mut originals = Vec::new();
    for n in 1..=3 {
        let mut job = NewJob::new("noop", json!({ "n": n })).queue("replayed");
        if n == 2 {
            job = job.idempotency_key(key.clone());
        }
        originals.push(backend.enqueue(job).await.expect("enqueue").id);
    }
    let other = NewJob::new("noop", json!({})).queue("elsewhere");
    let other = backend.enqueue(other).await.expect("enqueue").id;
    for id in originals.iter().chain([&other]) {
        wait_for_state(&backend, *id, JobState::Completed).await;
    }

    let replayed = backend
        .replay("replayed", since, &|_, _| {})
        .await
        .expect("replay");
    assert_eq!(
        replayed.len(),
        3,
        "the three jobs since the time: {replayed:?}"
    );
    for (new, old) in replayed.iter().zip(&originals) {
        assert_ne!(new, old, "a replay has a new id");
        let info = wait_for_state(&backend, *new, JobState::Completed).await;
        let original = backend.job(*old).await.expect("status").expect("original");
        assert_eq!(info.replay_of, Some(*old), "{info:?}");
        assert_eq!(info.payload, original.payload);
        assert_eq!(
            (info.kind.as_str(), info.queue.as_str()),
            ("noop", "replayed")
        );
        assert_eq!(info.idempotency_key, None);
    }
    worker.stop().await;
}
