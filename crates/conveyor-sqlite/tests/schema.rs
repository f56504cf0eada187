//! Guards the on-disk format: the schema a fresh file gets must match the documented fixture,
//! and a file written by an older build must open and keep its jobs. Changing the schema
//! means adding a numbered migration and updating `tests/fixtures/schema.sql` and
//! `docs/sqlite-schema.md` together.

use conveyor_core::{Inspect, JobState};
use conveyor_sqlite::{SqliteEngine, SCHEMA_VERSION};
use rusqlite::Connection;

fn schema_of(path: &std::path::Path) -> String {
    let conn = Connection::open(path).expect("open");
    let mut stmt = conn
        .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY type DESC, name")
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("query");
    rows.map(|r| r.expect("row") + ";\n").collect()
}

#[test]
fn fresh_schema_matches_the_fixture() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("fresh.db");
    drop(SqliteEngine::open_path(&path).expect("open"));
    let actual = schema_of(&path);
    let expected = include_str!("fixtures/schema.sql");
    assert_eq!(
        actual, expected,
        "the schema changed: add a migration, then update tests/fixtures/schema.sql and docs/sqlite-schema.md"
    );
    let conn = Connection::open(&path).expect("open");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, SCHEMA_VERSION);
}

#[tokio::test]
async fn rows_written_in_the_documented_format_are_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("fixture.db");
    drop(SqliteEngine::open_path(&path).expect("open"));
    // A row exactly as docs/sqlite-schema.md describes it, written by plain SQL (another
    // producer, an older build).
    let conn = Connection::open(&path).expect("open");
    conn.execute_batch(include_str!("fixtures/rows-v1.sql"))
        .expect("insert fixture rows");
    drop(conn);
    let engine = SqliteEngine::open_path(&path).expect("reopen");
    let id = "01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c7d".parse().expect("id");
    let job = engine.job(id).await.expect("lookup").expect("fixture job");
    assert_eq!(job.kind, "send_email");
    assert_eq!(job.queue, "mail");
    assert_eq!(job.state, JobState::Retryable);
    assert_eq!(job.attempt, 2);
    assert_eq!(job.last_error.as_deref(), Some("smtp timeout"));
    assert_eq!(job.payload, serde_json::json!({"to": "ada@example.com"}));
    assert_eq!(job.ordering_key.as_deref(), Some("user-1"));
    let malformed = engine
        .job("01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c7e".parse().expect("id"))
        .await
        .expect("lookup")
        .expect("malformed job");
    assert_eq!(
        malformed.payload,
        serde_json::json!("{not json"),
        "a non-JSON payload is shown as text"
    );
}

/// A version-1 file (as the first release wrote it) is upgraded in place: ids another producer
/// stored in another UUID form become canonical, so their jobs can be found and reported.
#[tokio::test]
async fn a_version_1_file_is_upgraded_in_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("v1.db");
    let conn = Connection::open(&path).expect("open");
    conn.execute_batch(conveyor_sqlite::MIGRATIONS[0].1)
        .expect("schema version 1");
    conn.pragma_update(None, "user_version", 1)
        .expect("version");
    let id: conveyor_core::JobId = "01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c7d".parse().expect("id");
    conn.execute(
        "INSERT INTO jobs (id, kind, queue, payload, state, max_attempts, run_at, created_at) \
         VALUES (?1, 'noop', 'default', '{}', 'available', 3, 0, 0)",
        [format!("{{{}}}", id.to_string().to_uppercase())],
    )
    .expect("insert");
    drop(conn);
    let engine = SqliteEngine::open_path(&path).expect("upgrade");
    let job = engine
        .job(id)
        .await
        .expect("lookup")
        .expect("found by its canonical id");
    assert_eq!(job.state, JobState::Available);
    let version: i64 = Connection::open(&path)
        .expect("open")
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, SCHEMA_VERSION);
}

/// Counts come from `queue_counts` (migration 6): an upgraded file gets the counts of the rows
/// it holds, and rows another program inserts, changes or deletes keep them right.
#[tokio::test]
async fn counts_are_kept_through_an_upgrade_and_foreign_writes() {
    use conveyor_core::Statistics;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("v5.db");
    let conn = Connection::open(&path).expect("open");
    for (_, sql) in &conveyor_sqlite::MIGRATIONS[..5] {
        conn.execute_batch(sql).expect("schema version 5");
    }
    conn.pragma_update(None, "user_version", 5)
        .expect("version");
    let insert =
        "INSERT INTO jobs (id, kind, queue, payload, state, max_attempts, run_at, created_at) \
                  VALUES (?1, 'noop', ?2, '{}', ?3, 3, 0, 0)";
    for (id, queue, state) in [
        ("01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c01", "a", "available"),
        ("01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c02", "a", "completed"),
        ("01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c03", "b", "dead"),
    ] {
        conn.execute(insert, [id, queue, state]).expect("insert");
    }
    drop(conn);
    let engine = SqliteEngine::open_path(&path).expect("upgrade");
    let counts = |stats: conveyor_core::Stats| -> Vec<(String, u64, u64, u64)> {
        stats
            .queues
            .into_iter()
            .map(|q| (q.queue, q.available, q.completed, q.dead))
            .collect()
    };
    assert_eq!(
        counts(engine.stats().await.expect("stats")),
        vec![("a".into(), 1, 1, 0), ("b".into(), 0, 0, 1)]
    );
    let conn = Connection::open(&path).expect("open");
    conn.execute(
        insert,
        ["01936f6e-7c3a-7d2e-9c4b-2f1e0a9b8c04", "b", "available"],
    )
    .expect("a foreign insert");
    conn.execute(
        "UPDATE jobs SET state = 'completed' WHERE queue = 'a' AND state = 'available'",
        [],
    )
    .expect("a foreign update");
    conn.execute("DELETE FROM jobs WHERE state = 'dead'", [])
        .expect("a foreign delete");
    assert_eq!(
        counts(engine.stats().await.expect("stats")),
        vec![("a".into(), 0, 2, 0), ("b".into(), 1, 0, 0)]
    );
}
