//! Jobs listed by state on SQLite (`ListJobs`): each job of a state on exactly one page, in the
//! documented order, however the pages are cut; a cursor of another list is refused. Every
//! page runs its queries with `INDEXED BY`, so a plan that could not use its index fails here.

use std::sync::Arc;

use chrono::Utc;
use conveyor_core::{
    Completion, Control, Engine, Error, Fetch, JobId, JobQuery, JobState, ListJobs, NewJob, Report,
};
use conveyor_sqlite::SqliteEngine;
use serde_json::json;

async fn add(engine: &Arc<SqliteEngine>, job: NewJob) -> JobId {
    engine.enqueue(job).await.expect("enqueue").id
}

fn job(queue: &str, priority: i32) -> NewJob {
    NewJob::new("noop", json!({}))
        .queue(queue)
        .priority(priority)
}

async fn exchange(engine: &Arc<SqliteEngine>, reports: Vec<Report>, limit: usize) -> Vec<JobId> {
    let fetch = Fetch {
        owner: "w".into(),
        queues: Vec::new(),
        limit,
    };
    let leased = engine.exchange(reports, &fetch).await.expect("exchange");
    leased.into_iter().map(|j| j.id).collect()
}

/// Every page of a list, `limit` jobs at a time.
async fn pages(
    engine: &Arc<SqliteEngine>,
    state: JobState,
    queue: Option<&str>,
    limit: usize,
) -> Vec<JobId> {
    let mut query = JobQuery::new(state);
    query.queue = queue.map(str::to_string);
    query.limit = limit;
    let mut ids = Vec::new();
    for _ in 0..100 {
        let page = engine.list_jobs(&query).await.expect("page");
        assert!(page.jobs.len() <= limit, "{page:?}");
        assert!(
            page.jobs.iter().all(|j| j.state == state),
            "{state}: {page:?}"
        );
        ids.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(next) => query.after = Some(next),
            None => return ids,
        }
    }
    panic!("the {state} list never ended");
}

#[tokio::test]
async fn every_state_lists_each_job_once_in_its_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(SqliteEngine::open_path(dir.path().join("list.db")).expect("open"));
    // Finished: three taken first (highest priority); two complete, one dies.
    let mut finished = Vec::new();
    for _ in 0..3 {
        finished.push(add(&engine, job("done", 100)).await);
    }
    assert_eq!(exchange(&engine, vec![], 3).await, finished);
    let report = |id, completion| Report {
        id,
        attempt: 1,
        completion,
    };
    let reports = vec![
        report(finished[0], Completion::Completed),
        report(finished[1], Completion::Completed),
        report(finished[2], Completion::Dead { error: "no".into() }),
    ];
    exchange(&engine, reports, 0).await;
    let running = add(&engine, job("run", 50)).await;
    assert_eq!(exchange(&engine, vec![], 1).await, vec![running]);
    // Available: by priority, then enqueue order; the jobs held behind their key's first job
    // come last.
    let high = add(&engine, job("a", 5)).await;
    let first = add(&engine, job("a", 0)).await;
    let keyed = add(&engine, job("a", 0).ordering_key("k")).await;
    let in_b = add(&engine, job("b", 0)).await;
    let held_1 = add(&engine, job("a", 0).ordering_key("k")).await;
    let low = add(&engine, job("a", -1)).await;
    let held_2 = add(&engine, job("b", 9).ordering_key("k")).await;
    // Scheduled, soonest first; one of them cancelled.
    let hour = chrono::Duration::hours(1);
    let later = add(&engine, job("a", 0).run_at(Utc::now() + hour * 2)).await;
    let soon = add(&engine, job("a", 0).run_at(Utc::now() + hour)).await;
    let dropped = add(&engine, job("a", 0).run_at(Utc::now() + hour * 3)).await;
    engine.cancel(dropped).await.expect("cancel");
    // Scheduled, and due by the time the lists are read, with no fetch to promote it: it is
    // available (as its status says), after the jobs a worker takes next.
    let due = add(
        &engine,
        job("a", 0).run_at(Utc::now() + chrono::Duration::milliseconds(300)),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let expected = [
        (
            JobState::Available,
            vec![high, first, keyed, in_b, low, due, held_1, held_2],
        ),
        (JobState::Scheduled, vec![soon, later]),
        (JobState::Running, vec![running]),
        (JobState::Completed, vec![finished[1], finished[0]]),
        (JobState::Dead, vec![finished[2]]),
        (JobState::Cancelled, vec![dropped]),
        (JobState::Retryable, vec![]),
    ];
    for (state, ids) in expected {
        for limit in [1, 2, 3, 500] {
            assert_eq!(
                pages(&engine, state, None, limit).await,
                ids,
                "{state} by {limit}"
            );
        }
    }
    for limit in [1, 2, 50] {
        assert_eq!(
            pages(&engine, JobState::Available, Some("a"), limit).await,
            vec![high, first, keyed, low, due, held_1],
            "queue a by {limit}"
        );
        assert_eq!(
            pages(&engine, JobState::Available, Some("b"), limit).await,
            vec![in_b, held_2],
            "queue b by {limit}"
        );
    }
}

#[tokio::test]
async fn a_cursor_of_another_list_or_made_up_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(SqliteEngine::open_path(dir.path().join("list.db")).expect("open"));
    for _ in 0..2 {
        add(&engine, job("a", 0)).await;
    }
    let mut query = JobQuery::new(JobState::Available);
    query.limit = 1;
    let next = engine
        .list_jobs(&query)
        .await
        .expect("page")
        .next
        .expect("a second page");
    for (state, after) in [
        (JobState::Dead, next.as_str()),
        (JobState::Available, "zzz"),
        (JobState::Available, "a:1:two:3"),
        (JobState::Running, "s:"),
    ] {
        let mut query = JobQuery::new(state);
        query.after = Some(after.to_string());
        match engine.list_jobs(&query).await {
            Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "after"),
            other => panic!("{state} after {after:?}: {other:?}"),
        }
    }
}
