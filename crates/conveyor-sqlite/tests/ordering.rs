//! Ordering keys on the SQLite engine: the `blocked` flag (migration 0005) must follow every
//! way a key's head can change — finish, delete, cancel, a dead letter put back (at the back
//! of its key's line) — and a file
//! written before the flag existed must get it right when upgraded. A wrong 0 would break a
//! key's order; a wrong 1 would wedge the key forever.

use std::sync::Arc;

use conveyor_core::{Backend, Completion, Fetch, Job, JobId, NewJob, Report};
use conveyor_sqlite::SqliteEngine;
use rusqlite::Connection;
use serde_json::json;

fn engine(dir: &tempfile::TempDir) -> Arc<dyn Backend> {
    Arc::new(SqliteEngine::open_path(dir.path().join("keys.db")).expect("open"))
}

async fn enqueue(engine: &Arc<dyn Backend>, key: &str, max_attempts: u32) -> JobId {
    let job = NewJob::new("noop", json!({}))
        .ordering_key(key)
        .max_attempts(max_attempts);
    engine.enqueue(job).await.expect("enqueue").id
}

/// Reports `done` and leases whatever may run now.
async fn exchange(engine: &Arc<dyn Backend>, done: Vec<(&Job, Completion)>) -> Vec<Job> {
    let reports = done
        .into_iter()
        .map(|(job, completion)| Report {
            id: job.id,
            attempt: job.attempt,
            completion,
        })
        .collect();
    let fetch = Fetch {
        owner: "w".into(),
        queues: Vec::new(),
        limit: 10,
    };
    engine.exchange(reports, &fetch).await.expect("exchange")
}

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn a_dead_letter_put_back_goes_to_the_back_of_its_keys_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = engine(&dir);
    let a = enqueue(&engine, "k", 1).await;
    let b = enqueue(&engine, "k", 1).await;
    let c = enqueue(&engine, "k", 1).await;
    let got = exchange(&engine, vec![]).await;
    assert_eq!(ids(&got), vec![a]);
    let dead = Completion::Dead {
        error: "boom".into(),
    };
    let got_b = exchange(&engine, vec![(&got[0], dead)]).await;
    assert_eq!(ids(&got_b), vec![b], "a dead job no longer holds its key");
    engine.retry_dead(a).await.expect("retry dead");
    let got = exchange(&engine, vec![(&got_b[0], Completion::Completed)]).await;
    assert_eq!(ids(&got), vec![c], "the job put back waits behind c");
    let got = exchange(&engine, vec![(&got[0], Completion::Completed)]).await;
    assert_eq!(ids(&got), vec![a], "then runs: the key is not wedged");
}

#[tokio::test]
async fn cancelling_or_purging_a_keys_head_lets_the_next_job_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = engine(&dir);
    let a = enqueue(&engine, "k", 3).await;
    let b = enqueue(&engine, "k", 3).await;
    let c = enqueue(&engine, "k", 3).await;
    engine.cancel(a).await.expect("cancel");
    let got = exchange(&engine, vec![]).await;
    assert_eq!(ids(&got), vec![b]);
    // Deleted rows (purge, retention) free the key as well.
    let conn = Connection::open(dir.path().join("keys.db")).expect("open");
    conn.execute("DELETE FROM jobs WHERE id = ?1", [b.to_string()])
        .expect("delete the head");
    let got = exchange(&engine, vec![]).await;
    assert_eq!(ids(&got), vec![c]);
}

/// A version-4 file holding a keyed backlog gets the flags when upgraded: only each key's
/// oldest unfinished job may run.
#[tokio::test]
async fn a_version_4_file_with_a_keyed_backlog_is_upgraded_in_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys.db");
    let conn = Connection::open(&path).expect("open");
    for (_, sql) in &conveyor_sqlite::MIGRATIONS[..4] {
        conn.execute_batch(sql).expect("schema version 4");
    }
    conn.pragma_update(None, "user_version", 4)
        .expect("version");
    let rows = [
        ("01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c01", "k", "completed"),
        ("01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c02", "k", "available"),
        ("01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c03", "k", "available"),
        ("01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c04", "j", "available"),
    ];
    for (id, key, state) in rows {
        conn.execute(
            "INSERT INTO jobs (id, kind, queue, payload, state, max_attempts, run_at, created_at, ordering_key) \
             VALUES (?1, 'noop', 'default', '{}', ?2, 3, 0, 0, ?3)",
            [id, state, key],
        )
        .expect("insert");
    }
    drop(conn);
    let engine = engine(&dir);
    let got: Vec<String> = exchange(&engine, vec![])
        .await
        .iter()
        .map(|j| j.id.to_string())
        .collect();
    assert_eq!(got, vec![rows[1].0, rows[3].0]);
}
