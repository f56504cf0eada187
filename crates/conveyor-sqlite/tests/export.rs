//! The source side of `conveyor migrate` on a real file: what [`Export`] lists and removes.

use std::sync::Arc;
use std::time::Duration;

use conveyor_core::{Completion, Engine, Export, Fetch, JobState, NewJob, Report, Statistics};
use conveyor_sqlite::SqliteEngine;
use serde_json::json;

fn fetch(limit: usize) -> Fetch {
    Fetch {
        owner: "test".into(),
        queues: Vec::new(),
        limit,
    }
}

#[tokio::test]
async fn export_lists_movable_jobs_in_enqueue_order_and_removes_only_those() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(SqliteEngine::open_path(dir.path().join("jobs.db")).expect("open"));
    // Two jobs leased: one completes, one stays running.
    let first = engine
        .enqueue(NewJob::new("noop", json!({"n": 1})))
        .await
        .expect("enqueue");
    let second = engine
        .enqueue(NewJob::new("noop", json!({"n": 2})))
        .await
        .expect("enqueue");
    let leased = engine.exchange(Vec::new(), &fetch(2)).await.expect("lease");
    assert_eq!(leased.len(), 2);
    let done = Report {
        id: first.id,
        attempt: 1,
        completion: Completion::Completed,
    };
    engine
        .exchange(vec![done], &fetch(0))
        .await
        .expect("complete");
    // Then a waiting job, a scheduled one with its own timeout, and one with keys.
    let waiting = engine
        .enqueue(NewJob::new("noop", json!({"n": 3})))
        .await
        .expect("enqueue");
    let mut scheduled = NewJob::new("noop", json!({"n": 4})).run_in(Duration::from_secs(3600));
    scheduled.timeout = Some(Duration::from_secs(7));
    let scheduled = engine.enqueue(scheduled).await.expect("enqueue");
    let mut keyed = NewJob::new("noop", json!({"n": 5}));
    keyed.idempotency_key = Some("once".into());
    keyed.ordering_key = Some("account-1".into());
    let keyed = engine.enqueue(keyed).await.expect("enqueue");

    assert_eq!(engine.running().await.expect("running"), 1);
    let moving = engine.export(10).await.expect("export");
    let ids: Vec<_> = moving.iter().map(|t| t.info.id).collect();
    assert_eq!(
        ids,
        vec![waiting.id, scheduled.id, keyed.id],
        "movable jobs in enqueue order"
    );
    assert_eq!(moving[1].info.state, JobState::Scheduled);
    assert_eq!(moving[1].timeout, Some(Duration::from_secs(7)));
    assert_eq!(moving[2].info.idempotency_key.as_deref(), Some("once"));
    assert_eq!(moving[2].info.ordering_key.as_deref(), Some("account-1"));
    assert_eq!(
        engine.export(2).await.expect("export").len(),
        2,
        "the limit holds"
    );

    // Removing the moved jobs leaves the others alone, and names those a worker took since
    // they were listed (here: one running, one completed).
    let kept = engine
        .remove_moved(&[waiting.id, scheduled.id, second.id, first.id])
        .await
        .expect("remove");
    assert_eq!(kept.len(), 2);
    assert!(
        kept.contains(&second.id) && kept.contains(&first.id),
        "{kept:?}"
    );
    let left = engine.export(10).await.expect("export");
    assert_eq!(
        left.iter().map(|t| t.info.id).collect::<Vec<_>>(),
        vec![keyed.id]
    );
    let stats = engine.stats().await.expect("stats");
    let queue = stats.queue("default").expect("default queue");
    assert_eq!((queue.running, queue.completed), (1, 1));
}

#[tokio::test]
async fn a_job_left_running_by_a_dead_worker_does_not_block_a_move() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = conveyor_sqlite::SqliteConfig {
        lease: Duration::from_millis(200),
        ..conveyor_sqlite::SqliteConfig::new(dir.path().join("jobs.db"))
    };
    let engine = Arc::new(SqliteEngine::open(config).expect("open"));
    let job = engine
        .enqueue(NewJob::new("noop", json!({})))
        .await
        .expect("enqueue");
    assert_eq!(
        engine
            .exchange(Vec::new(), &fetch(1))
            .await
            .expect("lease")
            .len(),
        1
    );
    assert_eq!(
        engine.running().await.expect("running"),
        1,
        "a live lease counts"
    );
    // The worker dies: its lease expires without a heartbeat.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(engine.running().await.expect("running"), 0);
    let moving = engine.export(10).await.expect("export");
    assert_eq!(moving.len(), 1);
    assert_eq!(moving[0].info.id, job.id);
    assert_eq!(moving[0].info.state, JobState::Available);
    assert_eq!(moving[0].info.attempt, 1, "the attempt it started counts");
}
