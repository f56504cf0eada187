//! Running, retrying, discarding, events, durability (§4.1, §4.3).

use conveyor_core::{handler_fn, JobEvent, NewJob, Outcome, Registry};
use serde_json::json;

use crate::{attempts, dead_error, run, test_config, EngineHarness};

/// A job runs once and completes.
pub async fn completes_a_job(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
    let job = engine
        .enqueue(NewJob::new("noop", json!({})))
        .await
        .expect("enqueue");
    assert!(!job.duplicate);
    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    worker.until_completed(&[job.id]).await;
    let events = worker.stop().await;
    assert_eq!(attempts(&events, job.id), [1]);
}

/// A failing job is retried after its backoff and completes once it succeeds.
pub async fn retries_with_backoff_then_completes(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
    let id = engine
        .enqueue(NewJob::new("fail", json!({"times": 2})).max_attempts(5))
        .await
        .expect("enqueue")
        .id;
    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    worker.until_completed(&[id]).await;
    let events = worker.stop().await;
    assert_eq!(
        attempts(&events, id),
        [1, 2, 3],
        "two failures, then success"
    );
    let failures = events
        .iter()
        .filter(|e| matches!(e, JobEvent::Failed { error, .. } if error.contains("fail")))
        .count();
    assert_eq!(failures, 2);
}

/// `Outcome::Discard` dead-letters at once, whatever attempts remain.
pub async fn discard_goes_straight_to_dead(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
    let mut registry = Registry::new();
    registry.register(handler_fn("hopeless", |_| async {
        Outcome::Discard("account closed".into())
    }));
    let id = engine
        .enqueue(NewJob::new("hopeless", json!({})).max_attempts(10))
        .await
        .expect("enqueue")
        .id;
    let mut worker = run(&engine, registry, test_config());
    worker
        .until("the job dead", |seen| dead_error(seen, id).is_some())
        .await;
    let events = worker.stop().await;
    assert_eq!(attempts(&events, id), [1]);
    assert_eq!(dead_error(&events, id).as_deref(), Some("account closed"));
}

/// Workers publish started / failed / completed events (the seeds' `listen`).
pub async fn events_report_the_lifecycle(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    let id = engine
        .enqueue(NewJob::new("fail", json!({"times": 1})))
        .await
        .expect("enqueue")
        .id;
    worker.until_completed(&[id]).await;
    let events = worker.stop().await;
    let names: Vec<&str> = events
        .iter()
        .filter(|e| e.id() == id)
        .map(|e| match e {
            JobEvent::Started { .. } => "started",
            JobEvent::Failed { .. } => "failed",
            JobEvent::Completed { .. } => "completed",
            JobEvent::Dead { .. } => "dead",
            JobEvent::Cancelled { .. } => "cancelled",
        })
        .collect();
    assert_eq!(names, ["started", "failed", "started", "completed"]);
}

/// Every acknowledged enqueue runs, also when the handle that enqueued is gone (a restarted
/// process) and another handle's worker runs them.
pub async fn acknowledged_jobs_survive_reopening(h: &dyn EngineHarness) {
    let site = h.engine_site().await;
    let first = site.engine().await;
    let batch = (0..50)
        .map(|i| NewJob::new("noop", json!({"i": i})))
        .collect();
    let ids: Vec<_> = first
        .enqueue_batch(batch)
        .await
        .expect("enqueue")
        .into_iter()
        .map(|e| e.id)
        .collect();
    drop(first);
    let second = site.engine().await;
    let mut worker = run(&second, Registry::with_builtins(), test_config());
    worker.until_completed(&ids).await;
    worker.stop().await;
}

/// The W3C trace context given at enqueue reaches the handler (through storage, and through a
/// retry); a malformed one is refused at enqueue, naming the field.
pub async fn trace_context_reaches_the_handler(h: &dyn EngineHarness) {
    let engine = h.engine_site().await.engine().await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut job = NewJob::new("traced", json!({})).max_attempts(3);
    job.traceparent = Some(trace.to_string());
    let id = engine.enqueue(job).await.expect("enqueue").id;
    let mut bad = NewJob::new("traced", json!({}));
    bad.traceparent = Some("00-nope".into());
    match engine.enqueue(bad).await {
        Err(conveyor_core::Error::InvalidInput { field, .. }) => assert_eq!(field, "traceparent"),
        other => panic!("a malformed traceparent was not refused: {other:?}"),
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let mut registry = Registry::new();
    registry.register(handler_fn("traced", move |ctx| {
        let record = record.clone();
        async move {
            let trace = ctx.traceparent().map(str::to_string);
            record.lock().expect("seen").push(trace);
            match ctx.attempt() {
                1 => Outcome::Retry("once more".into()),
                _ => Outcome::Complete,
            }
        }
    }));
    let mut worker = run(&engine, registry, test_config());
    worker.until_completed(&[id]).await;
    worker.stop().await;
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(
        seen,
        vec![Some(trace.to_string()); 2],
        "both attempts see the trace"
    );
}
