//! Running, retrying, dead-lettering, events (§4.3, §4.7).

use conveyor_core::{handler_fn, JobEvent, JobState, NewJob, Outcome, Registry};
use serde_json::json;

use crate::{start, test_config, wait_for_state, Harness};

/// A job runs once and completes.
pub async fn completes_a_job(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let job = backend
        .enqueue(NewJob::new("noop", json!({})))
        .await
        .expect("enqueue");
    assert_eq!(job.state, JobState::Available);
    assert!(!job.duplicate);
    let worker = start(&backend, Registry::with_builtins(), test_config());
    let info = wait_for_state(&backend, job.id, JobState::Completed).await;
    assert_eq!(info.attempt, 1);
    assert!(info.finished_at.is_some());
    worker.stop().await;
}

/// A failing job is retried after its backoff and completes once it succeeds.
pub async fn retries_with_backoff_then_completes(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let job = NewJob::new("fail", json!({"times": 2})).max_attempts(5);
    let id = backend.enqueue(job).await.expect("enqueue").id;
    let worker = start(&backend, Registry::with_builtins(), test_config());
    let info = wait_for_state(&backend, id, JobState::Completed).await;
    assert_eq!(info.attempt, 3, "two failures, then success");
    assert!(
        info.last_error.as_deref().unwrap_or("").contains("fail"),
        "{info:?}"
    );
    worker.stop().await;
}

/// Out of attempts, a job is dead with its attempts, last error and error time; it is in the
/// dead-letter list with its queue; retrying it resets its attempts.
pub async fn dead_letters_after_max_attempts_with_provenance(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let job = NewJob::new("fail", json!({})).queue("mail").max_attempts(2);
    let id = backend.enqueue(job).await.expect("enqueue").id;
    let worker = start(&backend, Registry::with_builtins(), test_config());
    let info = wait_for_state(&backend, id, JobState::Dead).await;
    worker.stop().await;
    assert_eq!(info.attempt, 2);
    assert!(
        info.last_error
            .as_deref()
            .unwrap_or("")
            .contains("always fails"),
        "{info:?}"
    );
    assert!(info.errored_at.is_some());
    let dead = backend.list_dead(10).await.expect("list dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job.id, id);
    assert_eq!(dead[0].original_queue, "mail");
    let retried = backend.retry_dead(id).await.expect("retry dead");
    assert_eq!(retried.attempt, 0, "attempts reset");
    assert!(!retried.state.is_final(), "{retried:?}");
    assert!(backend.list_dead(10).await.expect("list dead").is_empty());
}

/// `Outcome::Discard` dead-letters at once, whatever attempts remain.
pub async fn discard_goes_straight_to_dead(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let mut registry = Registry::new();
    registry.register(handler_fn("hopeless", |_| async {
        Outcome::Discard("account closed".into())
    }));
    let id = backend
        .enqueue(NewJob::new("hopeless", json!({})).max_attempts(10))
        .await
        .expect("enqueue")
        .id;
    let worker = start(&backend, registry, test_config());
    let info = wait_for_state(&backend, id, JobState::Dead).await;
    worker.stop().await;
    assert_eq!(info.attempt, 1);
    assert_eq!(info.last_error.as_deref(), Some("account closed"));
}

/// `retry --all` puts every dead job back; `purge` deletes them.
pub async fn dead_letter_retry_all_and_purge(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            backend
                .enqueue(NewJob::new("fail", json!({})).max_attempts(1))
                .await
                .expect("enqueue")
                .id,
        );
    }
    let worker = start(&backend, Registry::with_builtins(), test_config());
    for id in &ids {
        wait_for_state(&backend, *id, JobState::Dead).await;
    }
    worker.stop().await;
    assert_eq!(backend.retry_all_dead().await.expect("retry all"), 3);
    assert!(backend.list_dead(10).await.expect("list").is_empty());
    // Run them to death again, then purge.
    let worker = start(&backend, Registry::with_builtins(), test_config());
    for id in &ids {
        wait_for_state(&backend, *id, JobState::Dead).await;
    }
    worker.stop().await;
    assert_eq!(backend.purge_dead().await.expect("purge"), 3);
    for id in ids {
        assert!(backend.job(id).await.expect("lookup").is_none());
    }
}

/// Workers publish started / failed / completed events (the seeds' `listen`).
pub async fn events_report_the_lifecycle(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let mut worker = start(&backend, Registry::with_builtins(), test_config());
    let id = backend
        .enqueue(NewJob::new("fail", json!({"times": 1})))
        .await
        .expect("enqueue")
        .id;
    let mut seen = Vec::new();
    while seen
        .last()
        .map(|e: &JobEvent| !matches!(e, JobEvent::Completed { .. }))
        .unwrap_or(true)
    {
        let event = tokio::time::timeout(crate::WAIT, worker.events.recv())
            .await
            .expect("event in time")
            .expect("event");
        assert_eq!(event.id(), id);
        seen.push(event);
    }
    let names: Vec<&str> = seen
        .iter()
        .map(|e| match e {
            JobEvent::Started { .. } => "started",
            JobEvent::Failed { .. } => "failed",
            JobEvent::Completed { .. } => "completed",
            JobEvent::Dead { .. } => "dead",
            JobEvent::Cancelled { .. } => "cancelled",
        })
        .collect();
    assert_eq!(names, ["started", "failed", "started", "completed"]);
    worker.stop().await;
}
