//! Observing jobs from outside a worker: counts per queue and state, and the dead-letter list
//! (§4.7, §4.8). Engines that cannot look jobs up by id (Kafka) still prove these.

use std::time::Duration;

use conveyor_core::{handler_fn, JobEvent, JobId, NewJob, Outcome, Registry, WorkerConfig};
use serde_json::json;

use crate::{run, test_config, ObserveHarness};

fn dead_of(events: &[JobEvent], ids: &[JobId]) -> bool {
    ids.iter().all(|id| {
        events
            .iter()
            .any(|e| matches!(e, JobEvent::Dead { id: i, .. } if i == id))
    })
}

/// Stats count waiting, completed, retrying and dead jobs per queue, as seen by another handle
/// once the worker stopped; a queue no worker reads keeps its waiting count.
pub async fn stats_count_each_state_per_queue(h: &dyn ObserveHarness) {
    let site = h.observe_site().await;
    let engine = site.engine().await;
    for _ in 0..3 {
        let job = NewJob::new("noop", json!({})).queue("reports");
        engine.enqueue(job).await.expect("enqueue");
    }
    let later = NewJob::new("later", json!({})).queue("reports");
    let later = engine.enqueue(later).await.expect("enqueue").id;
    let dead = NewJob::new("fail", json!({}))
        .queue("reports")
        .max_attempts(1);
    let dead = engine.enqueue(dead).await.expect("enqueue").id;
    for _ in 0..2 {
        let job = NewJob::new("noop", json!({})).queue("other");
        engine.enqueue(job).await.expect("enqueue");
    }
    let stats = site.statistics().await.stats().await.expect("stats");
    assert_eq!(
        stats.queue("reports").map(|q| q.available),
        Some(5),
        "{stats:?}"
    );
    assert_eq!(
        stats.queue("other").map(|q| q.available),
        Some(2),
        "{stats:?}"
    );

    let mut registry = Registry::with_builtins();
    registry.register(handler_fn("later", |_| async {
        Outcome::RetryAfter {
            delay: Duration::from_secs(3600),
            error: "not yet".into(),
        }
    }));
    let config = WorkerConfig {
        queues: vec!["reports".into()],
        ..test_config()
    };
    let mut worker = run(&engine, registry, config);
    worker
        .until("3 completed, one retry scheduled, one dead", |seen| {
            let completed = seen
                .iter()
                .filter(|e| matches!(e, JobEvent::Completed { .. }))
                .count();
            let retried = seen
                .iter()
                .any(|e| matches!(e, JobEvent::Failed { id, .. } if *id == later));
            completed == 3 && retried && dead_of(seen, &[dead])
        })
        .await;
    worker.stop().await;

    let stats = site.statistics().await.stats().await.expect("stats");
    let reports = stats.queue("reports").expect("reports queue");
    assert_eq!(
        (
            reports.available,
            reports.retryable,
            reports.completed,
            reports.dead
        ),
        (0, 1, 3, 1),
        "available, retryable, completed, dead: {stats:?}"
    );
    assert_eq!(
        stats.queue("other").map(|q| q.available),
        Some(2),
        "{stats:?}"
    );
}

/// The dead-letter list shows each dead job with its attempts, last error and queue, most
/// recent first, and honours its limit.
pub async fn dead_letter_list_shows_jobs_newest_first(h: &dyn ObserveHarness) {
    let site = h.observe_site().await;
    let engine = site.engine().await;
    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    let mut ids = Vec::new();
    for queue in ["mail", "billing"] {
        let job = NewJob::new("fail", json!({"n": queue}))
            .queue(queue)
            .max_attempts(2);
        let id = engine.enqueue(job).await.expect("enqueue").id;
        worker
            .until("the job is dead", |seen| dead_of(seen, &[id]))
            .await;
        ids.push(id);
        // Error times are in milliseconds: keep the two apart.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.stop().await;

    let list = site.dead_letter_list().await;
    let dead = list.list_dead(10).await.expect("list dead");
    let listed: Vec<JobId> = dead.iter().map(|d| d.job.id).collect();
    assert_eq!(listed, vec![ids[1], ids[0]], "newest first: {dead:#?}");
    let newest = &dead[0];
    assert_eq!(newest.original_queue, "billing");
    assert_eq!(newest.job.kind, "fail");
    assert_eq!(newest.job.attempt, 2);
    assert_eq!(newest.job.payload, json!({"n": "billing"}));
    let error = newest.job.last_error.as_deref().unwrap_or("");
    assert!(error.contains("always fails"), "{newest:?}");
    assert!(newest.job.errored_at.is_some(), "{newest:?}");
    let one = list.list_dead(1).await.expect("list dead");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].job.id, ids[1]);
}

/// Runs `ids` to death on a worker of its own.
async fn run_to_death(engine: &std::sync::Arc<dyn conveyor_core::Engine>, ids: &[JobId]) {
    let mut worker = run(engine, Registry::with_builtins(), test_config());
    worker
        .until("the jobs are dead", |seen| dead_of(seen, ids))
        .await;
    worker.stop().await;
}

/// A dead job retried from the dead-letter list leaves the list and the dead count, keeps its
/// id, runs again with a fresh set of attempts numbered on from its last one, and dies again
/// (listed once, with its new attempts). Retrying an id that is not dead says so.
pub async fn a_dead_letter_retried_runs_again_with_fresh_attempts(h: &dyn ObserveHarness) {
    let site = h.observe_site().await;
    let engine = site.engine().await;
    let job = NewJob::new("fail", json!({})).queue("mail").max_attempts(2);
    let id = engine.enqueue(job).await.expect("enqueue").id;
    run_to_death(&engine, &[id]).await;
    let admin = site.dead_letters().await;
    let retried = admin.retry_dead(id).await.expect("retry dead");
    assert_eq!(retried.id, id);
    assert_eq!(
        (retried.attempt, retried.max_attempts),
        (2, 4),
        "a fresh set of attempts, numbered on"
    );
    assert!(!retried.state.is_final(), "{retried:?}");
    assert!(admin.list_dead(10).await.expect("list").is_empty());
    let mail = |stats: conveyor_core::Stats| stats.queue("mail").map_or(0, |q| q.dead);
    let stats = site.statistics().await;
    assert_eq!(mail(stats.stats().await.expect("stats")), 0);
    assert!(
        admin.retry_dead(id).await.is_err(),
        "a job that is not dead cannot be retried"
    );

    let mut worker = run(&engine, Registry::with_builtins(), test_config());
    worker
        .until("the job is dead again", |seen| dead_of(seen, &[id]))
        .await;
    let events = worker.stop().await;
    assert_eq!(crate::attempts(&events, id), [3, 4]);
    let dead = admin.list_dead(10).await.expect("list");
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!((dead[0].job.id, dead[0].job.attempt), (id, 4));
    assert_eq!(mail(stats.stats().await.expect("stats")), 1);
    // Each retry gives the attempts the job was enqueued with, not the last retry's total.
    let again = admin.retry_dead(id).await.expect("retry dead again");
    assert_eq!(
        (again.attempt, again.max_attempts),
        (4, 6),
        "the same fresh set again"
    );
}

/// `retry --all` puts every dead job back; once they died again, `purge` empties the list and
/// the dead count and says how many it removed.
pub async fn dead_letters_retried_all_then_purged(h: &dyn ObserveHarness) {
    let site = h.observe_site().await;
    let engine = site.engine().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let job = NewJob::new("fail", json!({ "n": n })).max_attempts(1);
        ids.push(engine.enqueue(job).await.expect("enqueue").id);
    }
    run_to_death(&engine, &ids).await;
    let admin = site.dead_letters().await;
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let hear = heard.clone();
    let progress = move |done, total| hear.lock().expect("progress").push((done, total));
    assert_eq!(admin.retry_all_dead(&progress).await.expect("retry all"), 3);
    let heard = heard.lock().expect("progress").clone();
    assert_eq!(
        heard.last(),
        Some(&(3, 3)),
        "progress ends at the total: {heard:?}"
    );
    assert!(admin.list_dead(10).await.expect("list").is_empty());
    run_to_death(&engine, &ids).await;
    assert_eq!(admin.list_dead(10).await.expect("list").len(), 3);
    assert_eq!(admin.purge_dead().await.expect("purge"), 3);
    assert!(admin.list_dead(10).await.expect("list").is_empty());
    let stats = site.statistics().await.stats().await.expect("stats");
    assert_eq!(stats.queue("default").map_or(0, |q| q.dead), 0, "{stats:?}");
}

/// Several handles firing the same cron entry at the same tick enqueue one job per tick, with
/// the entry's kind and payload; re-saving the entry keeps its next tick; a bad expression is
/// refused naming the field; removing it twice says it was gone.
pub async fn cron_fires_each_tick_once_across_handles(h: &dyn ObserveHarness) {
    use conveyor_core::{CronEntry, Error};
    let site = h.observe_site().await;
    let (a, b) = (site.schedules().await, site.schedules().await);
    let every_second = || {
        CronEntry::new(
            "every-second",
            "* * * * * *",
            "tick",
            json!({"from": "cron"}),
        )
    };
    let entry = a.upsert_cron(every_second()).await.expect("upsert");
    let first = entry.next_run_at.expect("next tick");
    // Saving the same entry again (as `serve` does at every start) keeps its next tick.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = a.upsert_cron(every_second()).await.expect("upsert again");
    assert_eq!(
        again.next_run_at,
        Some(first),
        "re-saving moved the next tick"
    );
    assert!(matches!(
        a.upsert_cron(CronEntry::new("bad", "every day", "noop", json!({})))
            .await,
        Err(Error::InvalidInput { field: "cron", .. })
    ));
    let mut fired = Vec::new();
    for tick in [first, first + chrono::Duration::seconds(1)] {
        let (x, y) = tokio::join!(a.fire_due_cron(tick), b.fire_due_cron(tick));
        let (x, y) = (x.expect("fire a"), y.expect("fire b"));
        assert_eq!(
            x.len() + y.len(),
            1,
            "tick {tick} fired {} times",
            x.len() + y.len()
        );
        fired.extend(x.into_iter().chain(y));
    }
    let listed = b.list_cron().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].next_run_at.expect("next") > first + chrono::Duration::seconds(1));
    assert_eq!(
        listed[0].last_run_at.map(|t| t.timestamp()),
        Some(first.timestamp() + 1)
    );
    let payloads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut registry = Registry::new();
    let log = payloads.clone();
    registry.register(crate::tests::recorder("tick", log, |ctx| {
        ctx.job().payload.clone()
    }));
    let mut worker = run(&site.engine().await, registry, test_config());
    worker.until_completed(&fired).await;
    worker.stop().await;
    let payloads = payloads.lock().expect("lock").clone();
    assert_eq!(payloads.len(), 2, "{payloads:?}");
    assert!(
        payloads.iter().all(|p| p == r#"{"from":"cron"}"#),
        "{payloads:?}"
    );
    assert!(a.remove_cron("every-second").await.expect("remove"));
    assert!(!b.remove_cron("every-second").await.expect("remove again"));
}

/// Stats count a job a worker runs as `running` (not `available`), and as `completed` once it
/// finished, as seen by another handle.
pub async fn stats_count_running_jobs(h: &dyn ObserveHarness) {
    let site = h.observe_site().await;
    let engine = site.engine().await;
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut registry = Registry::with_builtins();
    let gate = release.clone();
    registry.register(handler_fn("held", move |_| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            Outcome::Complete
        }
    }));
    let job = NewJob::new("held", json!({})).queue("busy");
    let id = engine.enqueue(job).await.expect("enqueue").id;
    let config = WorkerConfig {
        queues: vec!["busy".into()],
        ..test_config()
    };
    let mut worker = run(&engine, registry, config);
    worker
        .until("the held job started", |seen| {
            seen.iter()
                .any(|e| matches!(e, JobEvent::Started { id: i, .. } if *i == id))
        })
        .await;
    let observer = site.statistics().await;
    let counts = |stats: &conveyor_core::Stats| {
        stats
            .queue("busy")
            .map(|q| (q.available, q.running, q.completed))
    };
    let until = |want: (u64, u64, u64), what: &'static str| {
        let observer = observer.clone();
        async move {
            let deadline = tokio::time::Instant::now() + crate::WAIT;
            loop {
                let stats = observer.stats().await.expect("stats");
                if counts(&stats) == Some(want) {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "{what}: {stats:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    until((0, 1, 0), "the running job was never counted as running").await;
    release.notify_one();
    worker.until_completed(&[id]).await;
    // The worker idles on: it runs nothing, and says so.
    until((0, 0, 1), "the finished job was never counted as completed").await;
    worker.stop().await;
}
