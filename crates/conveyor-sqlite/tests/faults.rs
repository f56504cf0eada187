//! Fault paths of the SQLite engine under the real worker runtime, on a real file: rows written
//! by other producers, storage that is busy across a heartbeat or across shutdown, and a job
//! rescued while its old attempt still runs. Each test checks that nothing is lost and that no
//! job (nor two jobs of one ordering key) ever runs twice at once, with a ledger of start and
//! end times of every attempt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conveyor_core::{
    handler_fn, Engine, JobId, JobState, NewJob, Outcome, Registry, Worker, WorkerConfig,
};
use conveyor_sqlite::{SqliteConfig, SqliteEngine};
use rusqlite::Connection;
use serde_json::json;
use tokio::sync::oneshot;

/// Longest any wait of these tests lasts.
const PATIENCE: Duration = Duration::from_secs(20);

/// One attempt as the handler saw it: its job, ordering key, start and end.
#[derive(Debug, Clone)]
struct Entry {
    id: JobId,
    attempt: u32,
    key: String,
    start: Instant,
    end: Option<Instant>,
}

/// Start and end of every attempt of the `slow` kind; an aborted attempt ends when it is
/// dropped, so the ledger shows exactly when it stopped running.
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<Vec<Entry>>>);

/// Records the end of an attempt when the handler's future finishes or is dropped.
struct EndGuard {
    ledger: Ledger,
    index: usize,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let mut entries = self.ledger.0.lock().expect("ledger");
        entries[self.index].end = Some(Instant::now());
    }
}

impl Ledger {
    fn entries(&self) -> Vec<Entry> {
        self.0.lock().expect("ledger").clone()
    }

    fn started(&self, id: JobId) -> bool {
        self.entries().iter().any(|e| e.id == id)
    }

    /// A registry whose `slow` kind sleeps `{"ms": N}` (or `{"ms_by_attempt": [..]}`) and
    /// records itself here; its ordering key is `{"key": K}` (the job id when absent).
    fn registry(&self) -> Registry {
        let ledger = self.clone();
        let mut registry = Registry::with_builtins();
        registry.register(handler_fn("slow", move |ctx| {
            let ledger = ledger.clone();
            async move {
                let payload: serde_json::Value = ctx.payload().unwrap_or_default();
                let attempt = ctx.attempt();
                let by_attempt = payload["ms_by_attempt"][attempt as usize - 1].as_u64();
                let ms = by_attempt.or(payload["ms"].as_u64()).unwrap_or(0);
                let key = payload["key"]
                    .as_str()
                    .map_or(ctx.id().to_string(), String::from);
                let index = {
                    let mut entries = ledger.0.lock().expect("ledger");
                    entries.push(Entry {
                        id: ctx.id(),
                        attempt,
                        key,
                        start: Instant::now(),
                        end: None,
                    });
                    entries.len() - 1
                };
                let _end = EndGuard { ledger, index };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Outcome::Complete
            }
        }));
        registry
    }

    /// Asserts that no two attempts of one key (or of one job) ever ran at the same time.
    fn assert_no_overlap(&self) {
        let entries = self.entries();
        let now = Instant::now();
        for (i, a) in entries.iter().enumerate() {
            for b in &entries[i + 1..] {
                if a.key != b.key {
                    continue;
                }
                let overlap = a.start < b.end.unwrap_or(now) && b.start < a.end.unwrap_or(now);
                assert!(
                    !overlap,
                    "two attempts of key {} ran at once: {a:?} and {b:?}",
                    a.key
                );
            }
        }
    }
}

struct Db {
    _dir: tempfile::TempDir,
    config: SqliteConfig,
}

impl Db {
    fn new(lease: Duration) -> Db {
        Db::waiting(lease, Duration::from_millis(50))
    }

    /// A file whose writers wait up to `busy_timeout` for another process's lock.
    fn waiting(lease: Duration, busy_timeout: Duration) -> Db {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = SqliteConfig::new(dir.path().join("faults.db"));
        config.lease = lease;
        config.busy_timeout = busy_timeout;
        Db { _dir: dir, config }
    }

    fn engine(&self) -> Arc<dyn Engine> {
        Arc::new(SqliteEngine::open(self.config.clone()).expect("open"))
    }

    fn sql(&self) -> Connection {
        Connection::open(&self.config.path).expect("open sql")
    }

    fn state(&self, id: JobId) -> String {
        self.sql()
            .query_row(
                "SELECT state FROM jobs WHERE id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )
            .expect("job row")
    }

    async fn wait_for_state(&self, id: JobId, state: &str) {
        let deadline = Instant::now() + PATIENCE;
        while self.state(id) != state {
            assert!(
                Instant::now() < deadline,
                "job {id} never became {state}: {}",
                self.state(id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Holds SQLite's write lock from another connection for `hold`, as another process's long
    /// transaction would; returns once the lock is taken.
    async fn hold_write_lock(&self, hold: Duration) -> std::thread::JoinHandle<()> {
        let conn = self.sql();
        let (taken, is_taken) = oneshot::channel();
        let holder = std::thread::spawn(move || {
            conn.execute_batch("BEGIN IMMEDIATE")
                .expect("take the write lock");
            let _ = taken.send(());
            std::thread::sleep(hold);
            conn.execute_batch("COMMIT")
                .expect("release the write lock");
        });
        is_taken.await.expect("lock taken");
        holder
    }
}

impl Db {
    /// Holds the write lock for `hold` from another connection and returns once it is released.
    async fn lock_for(&self, hold: Duration) {
        let holder = self.hold_write_lock(hold).await;
        tokio::task::spawn_blocking(move || holder.join())
            .await
            .expect("join")
            .expect("lock holder");
    }
}

fn config(grace: Duration) -> WorkerConfig {
    WorkerConfig {
        concurrency: 4,
        poll_interval: Duration::from_millis(20),
        shutdown_grace: grace,
        ..WorkerConfig::default()
    }
}

/// A worker running in the background until `stop` is sent.
struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<conveyor_core::Result<()>>,
}

fn start(engine: &Arc<dyn Engine>, registry: Registry, config: WorkerConfig) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let worker = Worker::new(engine.clone(), registry, config);
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    async fn stop(self) -> conveyor_core::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("worker stopped")
            .expect("worker task")
    }
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn enqueue(engine: &Arc<dyn Engine>, job: NewJob) -> JobId {
    engine.enqueue(job).await.expect("enqueue").id
}

/// A slow job of ordering key `k` (5 s, `max_attempts`) and the key's next job behind it.
async fn slow_then_next(engine: &Arc<dyn Engine>, max_attempts: u32) -> (JobId, JobId) {
    let slow = NewJob::new("slow", json!({"ms": 5000, "key": "k"}))
        .ordering_key("k")
        .max_attempts(max_attempts);
    let next = NewJob::new("slow", json!({"ms": 10, "key": "k"})).ordering_key("k");
    (enqueue(engine, slow).await, enqueue(engine, next).await)
}

/// Inserts a row with plain SQL, as another producer following docs/sqlite-schema.md would.
fn insert_row(conn: &Connection, id: &str, kind: &str, payload: &str) {
    conn.execute(
        "INSERT INTO jobs (id, kind, queue, payload, state, max_attempts, run_at, created_at) \
         VALUES (?1, ?2, 'default', ?3, 'available', 3, 0, 0)",
        [id, kind, payload],
    )
    .expect("insert row");
}

/// A row whose id is not a job id does not stop the good jobs beside it: it is dead-lettered
/// with an error naming the column, and keeps its original id in that error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_row_is_dead_lettered_and_the_rest_run() {
    let db = Db::new(Duration::from_secs(30));
    let engine = db.engine();
    let good = [
        enqueue(&engine, NewJob::new("noop", json!({}))).await,
        enqueue(&engine, NewJob::new("noop", json!({}))).await,
    ];
    insert_row(&db.sql(), "job-42", "noop", "{}");
    let worker = start(
        &engine,
        Registry::with_builtins(),
        config(Duration::from_secs(5)),
    );
    for id in good {
        db.wait_for_state(id, "completed").await;
    }
    let conn = db.sql();
    let deadline = Instant::now() + PATIENCE;
    let (state, error): (String, String) = loop {
        let row = conn
            .query_row(
                "SELECT state, coalesce(last_error, '') FROM jobs WHERE last_error LIKE '%job-42%' OR id = 'job-42'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the bad row is still there");
        if row.0 == "dead" || Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    worker.stop().await.expect("worker stops cleanly");
    assert_eq!(state, "dead", "{error}");
    assert!(
        error.contains("column id") && error.contains("job-42"),
        "{error}"
    );
}

/// A worker serving a list of queues reads the sort columns (priority, run_at) of every
/// candidate: a row holding text there must not fail every fetch (it runs, sorted as 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_with_a_text_priority_does_not_wedge_a_worker_of_listed_queues() {
    let db = Db::new(Duration::from_secs(30));
    let engine = db.engine();
    let good = enqueue(&engine, NewJob::new("noop", json!({}))).await;
    db.sql()
        .execute(
            "INSERT INTO jobs (id, kind, queue, payload, state, priority, max_attempts, run_at, created_at) \
             VALUES (?1, 'noop', 'default', '{}', 'available', 'high', 3, 0, 0)",
            [JobId::new().to_string()],
        )
        .expect("insert row");
    let mut listed = config(Duration::from_secs(5));
    listed.queues = vec!["default".into()];
    let worker = start(&engine, Registry::with_builtins(), listed);
    db.wait_for_state(good, "completed").await;
    let completed = || {
        db.sql()
            .query_row(
                "SELECT count(*) FROM jobs WHERE state = 'completed'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .expect("count")
    };
    wait_until("both jobs completed", || completed() == 2).await;
    worker.stop().await.expect("worker stops cleanly");
}

/// A row written with an id in another valid UUID form (upper case, braces, no hyphens) runs
/// and completes like any other: its report matches its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_inserted_with_a_non_canonical_id_completes() {
    let db = Db::new(Duration::from_secs(1));
    let engine = db.engine();
    let forms = [
        JobId::new().to_string().to_uppercase(),
        format!("{{{}}}", JobId::new()),
        JobId::new().0.simple().to_string(),
    ];
    let conn = db.sql();
    for id in &forms {
        insert_row(&conn, id, "noop", "{}");
    }
    let worker = start(
        &engine,
        Registry::with_builtins(),
        config(Duration::from_secs(5)),
    );
    for form in &forms {
        let id: JobId = form.parse().expect("a valid uuid form");
        db.wait_for_state(id, "completed").await;
    }
    worker.stop().await.expect("worker stops cleanly");
}

/// With heartbeats blocked by another process's write lock, the attempt whose lease could not be
/// renewed stops itself before the lease expires: the job never runs again (after a rescue, or
/// its own retry), and when that was its last attempt and it is dead, the next job of its
/// ordering key never starts, while the old attempt still runs. (On main the old attempt ran
/// on: the rescue, to `available` or to `dead`, overlapped it.)
async fn blocked_heartbeats_never_run_a_key_twice(max_attempts: u32) {
    let db = Db::new(Duration::from_secs(1));
    let engine = db.engine();
    let ledger = Ledger::default();
    let (slow, next) = slow_then_next(&engine, max_attempts).await;
    let worker = start(&engine, ledger.registry(), config(Duration::from_secs(5)));
    wait_until("the slow job started", || ledger.started(slow)).await;
    db.lock_for(Duration::from_millis(2500)).await;
    db.wait_for_state(next, "completed").await;
    worker.stop().await.expect("worker stops cleanly");
    ledger.assert_no_overlap();
    let state = db.state(slow);
    assert!(
        state == "completed" || state == "dead",
        "slow job is {state}"
    );
}

/// The same with a busy timeout longer than the lease, and a second worker on the file: the
/// first worker's loop waits on the lock for longer than the lease, so only the attempt itself
/// can stop in time; the second worker rescues the job once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stuck_on_a_lock_longer_than_its_lease_never_runs_a_job_twice() {
    let db = Db::waiting(Duration::from_secs(1), Duration::from_secs(3));
    let engine = db.engine();
    let ledger = Ledger::default();
    let (slow, next) = slow_then_next(&engine, 3).await;
    let first = start(&engine, ledger.registry(), config(Duration::from_secs(5)));
    wait_until("the slow job started", || ledger.started(slow)).await;
    let second = start(
        &db.engine(),
        ledger.registry(),
        config(Duration::from_secs(5)),
    );
    db.lock_for(Duration::from_millis(4000)).await;
    db.wait_for_state(next, "completed").await;
    first.stop().await.expect("first worker stops cleanly");
    second.stop().await.expect("second worker stops cleanly");
    ledger.assert_no_overlap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_heartbeats_never_run_a_job_twice_at_once() {
    blocked_heartbeats_never_run_a_key_twice(3).await;
}

/// Item 6 of issue 13: a job that goes dead on its last attempt frees its key only after
/// that attempt stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescue_to_dead_never_starts_the_next_job_of_the_key_early() {
    blocked_heartbeats_never_run_a_key_twice(1).await;
}

/// Outcomes that could not be stored when shutdown came (storage busy past the grace period)
/// are stored once storage answers again, before the worker returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_are_stored_at_shutdown_after_storage_was_busy() {
    let db = Db::new(Duration::from_secs(30));
    let engine = db.engine();
    let ledger = Ledger::default();
    let quick = enqueue(&engine, NewJob::new("slow", json!({"ms": 500}))).await;
    let slow = enqueue(&engine, NewJob::new("slow", json!({"ms": 60_000}))).await;
    let worker = start(
        &engine,
        ledger.registry(),
        config(Duration::from_millis(1000)),
    );
    wait_until("both jobs started", || {
        ledger.started(quick) && ledger.started(slow)
    })
    .await;
    // Shutdown comes first; then storage is locked, the quick job finishes and the grace
    // period ends (the slow job is given back), all before the lock is released.
    let stopped = tokio::spawn(worker.stop());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let holder = db.hold_write_lock(Duration::from_millis(2500)).await;
    let locked_at = Instant::now();
    tokio::task::spawn_blocking(move || holder.join())
        .await
        .expect("join")
        .expect("lock holder");
    stopped
        .await
        .expect("join")
        .expect("worker stored every outcome");
    let quick_end = ledger
        .entries()
        .iter()
        .find(|e| e.id == quick)
        .and_then(|e| e.end);
    assert!(
        quick_end.is_some_and(|end| end > locked_at),
        "the quick job finished before storage was locked: this run tested nothing"
    );
    assert_eq!(db.state(quick), "completed");
    assert_eq!(db.state(slow), "available", "released, not left running");
}

/// When the engine hands out a new attempt of a job whose old attempt still runs in this very
/// worker (the job was rescued after its lease expired), the old attempt stops first, and the
/// new one stays tracked: shutdown gives it back instead of leaving it running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_handed_out_again_to_the_same_worker_is_tracked() {
    let db = Db::new(Duration::from_secs(30));
    let engine = db.engine();
    let ledger = Ledger::default();
    let job = NewJob::new("slow", json!({"ms_by_attempt": [1000, 60_000]}));
    let id = enqueue(&engine, job).await;
    let worker = start(
        &engine,
        ledger.registry(),
        config(Duration::from_millis(200)),
    );
    wait_until("the first attempt started", || ledger.started(id)).await;
    // What a rescue does once the lease has expired (the worker stalled, say).
    db.sql()
        .execute(
            "UPDATE jobs SET state = 'available', lease_owner = NULL, lease_expires_at = NULL WHERE id = ?1",
            [id.to_string()],
        )
        .expect("rescue");
    wait_until("the second attempt started", || {
        ledger.entries().iter().any(|e| e.attempt == 2)
    })
    .await;
    // Past the first attempt's natural end: its report must not untrack the second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    worker.stop().await.expect("worker stops cleanly");
    ledger.assert_no_overlap();
    assert_eq!(
        db.state(id),
        "available",
        "the second attempt was given back at shutdown"
    );
}

/// A worker whose storage keeps failing still obeys shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_obeyed_while_storage_errors_repeat() {
    let db = Db::new(Duration::from_secs(30));
    let engine = db.engine();
    let holder = db.hold_write_lock(Duration::from_millis(5000)).await;
    let worker = start(
        &engine,
        Registry::with_builtins(),
        config(Duration::from_millis(100)),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.stop().await.expect("an idle worker stops");
    assert!(
        !holder.is_finished(),
        "shutdown waited until storage answered again"
    );
    let _ = tokio::task::spawn_blocking(move || holder.join()).await;
}

/// A row written with an upper-case id is found by its id (look-ups match the canonical text).
#[test]
fn a_row_inserted_with_an_upper_case_id_is_found_by_its_id() {
    let db = Db::new(Duration::from_secs(30));
    drop(db.engine());
    let id = JobId::new();
    insert_row(&db.sql(), &id.to_string().to_uppercase(), "noop", "{}");
    assert_eq!(db.state(id), JobState::Available.as_str());
}
