//! Helpers shared by the conformance tests.

use std::sync::Arc;
use std::time::Duration;

use conveyor_core::{
    Backend, Backoff, JobEvent, JobId, JobInfo, JobState, Registry, Worker, WorkerConfig,
};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// Upper bound of every wait in the suite: long enough for a loaded CI machine, short enough
/// that a broken engine fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(20);

/// A worker config for tests: quick polling, quick retries, no jitter.
pub fn test_config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 8,
        poll_interval: Duration::from_millis(20),
        shutdown_grace: Duration::from_secs(5),
        backoff: Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(200),
            jitter: 0.0,
        },
        ..WorkerConfig::default()
    }
}

/// A worker running in the background.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<conveyor_core::Result<()>>,
    /// Its lifecycle events, subscribed before it started.
    pub events: broadcast::Receiver<JobEvent>,
}

impl Running {
    /// Asks for a graceful shutdown and waits for it; panics if the worker failed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(WAIT, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("worker did not stop cleanly: {other:?}"),
        }
    }
}

/// Starts a worker on `backend`.
pub fn start(backend: &Arc<dyn Backend>, registry: Registry, config: WorkerConfig) -> Running {
    let worker = Worker::new(backend.clone().as_engine(), registry, config);
    let events = worker.events();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    Running {
        stop: Some(stop),
        task,
        events,
    }
}

/// Polls the job until `done` holds, or panics with the last state seen.
pub async fn wait_until(
    backend: &Arc<dyn Backend>,
    id: JobId,
    what: &str,
    done: impl Fn(&JobInfo) -> bool,
) -> JobInfo {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = backend.job(id).await.expect("job lookup");
        if let Some(info) = &info {
            if done(info) {
                return info.clone();
            }
        }
        if tokio::time::Instant::now() > deadline {
            panic!("job {id} never became {what}; last seen: {info:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the job is in `state`.
pub async fn wait_for_state(backend: &Arc<dyn Backend>, id: JobId, state: JobState) -> JobInfo {
    wait_until(backend, id, state.as_str(), |info| info.state == state).await
}
