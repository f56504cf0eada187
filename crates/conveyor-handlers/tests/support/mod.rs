//! What the handler tests share: a real worker runtime on a SQLite file in a temp folder, and
//! the paths of the test workers.

#![allow(dead_code)] // each test file uses part of it

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use conveyor_core::{
    Backoff, Engine, Inspect, JobEvent, JobId, JobInfo, NewJob, Registry, Worker, WorkerConfig,
};
use conveyor_sqlite::SqliteEngine;
use tokio::sync::oneshot;

/// How long a test waits for its jobs before failing with their states.
const PATIENCE: Duration = Duration::from_secs(120);

/// An engine in a temp folder and a worker running on it.
pub struct Harness {
    pub engine: Arc<SqliteEngine>,
    pub dir: tempfile::TempDir,
}

/// A running worker: its events and how to stop it.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<conveyor_core::Result<()>>,
    /// Every event so far (collected in the background).
    pub events: Arc<std::sync::Mutex<Vec<JobEvent>>>,
}

impl Harness {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}?synchronous=normal",
            dir.path().join("t.db").display()
        );
        let engine = Arc::new(SqliteEngine::open_url(&url).expect("open sqlite"));
        Harness { engine, dir }
    }

    pub async fn enqueue(
        &self,
        kind: &str,
        payload: serde_json::Value,
        max_attempts: u32,
    ) -> JobId {
        let job = NewJob::new(kind, payload).max_attempts(max_attempts);
        self.engine.enqueue(job).await.expect("enqueue").id
    }

    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Vec<JobId> {
        let mut ids = Vec::new();
        for chunk in jobs.chunks(1000) {
            let done = self
                .engine
                .enqueue_batch(chunk.to_vec())
                .await
                .expect("enqueue batch");
            ids.extend(done.into_iter().map(|e| e.id));
        }
        ids
    }

    /// Starts a worker serving `registry` with fast polling and retries.
    pub fn start(&self, registry: Registry, concurrency: usize) -> Running {
        let config = WorkerConfig {
            concurrency,
            poll_interval: Duration::from_millis(10),
            shutdown_grace: Duration::from_secs(5),
            backoff: Backoff {
                base: Duration::from_millis(10),
                max: Duration::from_millis(50),
                jitter: 0.0,
            },
            ..WorkerConfig::default()
        };
        let engine: Arc<dyn Engine> = self.engine.clone();
        let mut worker = Worker::new(engine, registry, config);
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = events.clone();
        // Inline, so a burst of events is never skipped (a broadcast receiver may lag).
        worker.observe(move |event| into.lock().expect("events").push(event.clone()));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        Running {
            stop: Some(stop),
            task,
            events,
        }
    }

    /// Waits until every job of `ids` satisfies `done`, then returns them; panics with their
    /// states after [`PATIENCE`].
    pub async fn wait(&self, ids: &[JobId], done: impl Fn(&JobInfo) -> bool) -> Vec<JobInfo> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let mut infos = Vec::new();
            for id in ids {
                infos.push(self.engine.job(*id).await.expect("job").expect("exists"));
            }
            if infos.iter().all(&done) {
                return infos;
            }
            if tokio::time::Instant::now() > deadline {
                let states: Vec<_> = infos
                    .iter()
                    .filter(|i| !done(i))
                    .take(5)
                    .map(|i| (i.kind.clone(), i.state, i.attempt, i.last_error.clone()))
                    .collect();
                panic!("jobs not done in time: {states:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every job of `ids` is completed, dead or cancelled.
    pub async fn wait_final(&self, ids: &[JobId]) -> Vec<JobInfo> {
        self.wait(ids, |i| i.state.is_final()).await
    }
}

impl Running {
    /// Asks the worker to stop and waits until it returned.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("worker task").expect("worker run");
    }

    /// The errors of failed attempts, by job.
    pub fn failures(&self) -> HashMap<JobId, Vec<String>> {
        let mut map: HashMap<JobId, Vec<String>> = HashMap::new();
        for event in self.events.lock().expect("events").iter() {
            if let JobEvent::Failed { id, error, .. } = event {
                map.entry(*id).or_default().push(error.clone());
            }
        }
        map
    }
}

/// A file of `tests/workers/`.
pub fn worker_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workers")
        .join(name)
}

/// The Python worker library of `examples/workers/python`.
pub fn python_lib() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/workers/python")
}
