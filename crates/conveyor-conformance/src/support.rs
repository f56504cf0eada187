//! Helpers shared by the conformance tests.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use conveyor_core::{
    Backend, Backoff, Engine, Fetch, Job, JobEvent, JobId, JobInfo, JobState, Registry, Worker,
    WorkerConfig,
};
use tokio::sync::{mpsc, oneshot};
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

/// A worker running in the background, with the events it published so far.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<conveyor_core::Result<()>>,
    /// Its lifecycle events, every one (observed inline from before it started).
    pub events: mpsc::UnboundedReceiver<JobEvent>,
    /// Events taken from `events` by [`Running::until`].
    pub seen: Vec<JobEvent>,
}

impl Running {
    /// Collects events until `done` holds for all seen so far; panics after [`WAIT`].
    pub async fn until(&mut self, what: &str, done: impl Fn(&[JobEvent]) -> bool) -> &[JobEvent] {
        self.until_within(WAIT, what, done).await
    }

    /// Like [`Running::until`], waiting at most `limit` (for waits that include a handover
    /// after a crashed handle: a group session timeout and a rebalance on Kafka).
    pub async fn until_within(
        &mut self,
        limit: Duration,
        what: &str,
        done: impl Fn(&[JobEvent]) -> bool,
    ) -> &[JobEvent] {
        let deadline = tokio::time::Instant::now() + limit;
        while !done(&self.seen) {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.seen.push(event),
                other => panic!("never saw {what} ({other:?}); events: {:#?}", self.seen),
            }
        }
        &self.seen
    }

    /// Waits until every job in `ids` completed.
    pub async fn until_completed(&mut self, ids: &[JobId]) -> &[JobEvent] {
        let wanted: HashSet<JobId> = ids.iter().copied().collect();
        self.until("all jobs completed", |seen| {
            wanted.is_subset(&completed(seen))
        })
        .await
    }

    /// Asks for a graceful shutdown, waits for it (panics if the worker failed), and returns
    /// every event the worker published.
    pub async fn stop(mut self) -> Vec<JobEvent> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(WAIT, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("worker did not stop cleanly: {other:?}"),
        }
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
        self.seen
    }
}

/// Starts a worker on `engine`.
pub fn run(engine: &Arc<dyn Engine>, registry: Registry, config: WorkerConfig) -> Running {
    let mut worker = Worker::new(engine.clone(), registry, config);
    let (sender, events) = mpsc::unbounded_channel();
    worker.observe(move |event| {
        let _ = sender.send(event.clone());
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    Running {
        stop: Some(stop),
        task,
        events,
        seen: Vec::new(),
    }
}

/// Starts a worker on `backend`.
pub fn start(backend: &Arc<dyn Backend>, registry: Registry, config: WorkerConfig) -> Running {
    run(&backend.clone().as_engine(), registry, config)
}

/// Ids of the jobs that completed.
pub fn completed(events: &[JobEvent]) -> HashSet<JobId> {
    events
        .iter()
        .filter(|e| matches!(e, JobEvent::Completed { .. }))
        .map(JobEvent::id)
        .collect()
}

/// The attempt numbers that started for `id`, in order.
pub fn attempts(events: &[JobEvent], id: JobId) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Started { id: i, attempt, .. } if *i == id => Some(*attempt),
            _ => None,
        })
        .collect()
}

/// Leases one job as worker `owner` by hand (no worker runtime), reporting nothing: a worker
/// process about to die holding it. Panics if none is leased within twice [`WAIT`]: after a
/// crashed handle, a Kafka engine gets the job only once the group gave up on the dead member
/// (its session timeout) and rebalanced, which a loaded CI machine once stretched past `WAIT`.
pub async fn lease_one(engine: &Arc<dyn Engine>, owner: &str) -> Job {
    let fetch = Fetch {
        owner: owner.into(),
        queues: vec![],
        limit: 1,
    };
    let started = tokio::time::Instant::now();
    loop {
        let leased = engine.exchange(vec![], &fetch).await.expect("fetch");
        if let Some(job) = leased.into_iter().next() {
            return job;
        }
        assert!(
            started.elapsed() < 2 * WAIT,
            "{owner} got no job in {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The error `id` was dead-lettered with, if it was.
pub fn dead_error(events: &[JobEvent], id: JobId) -> Option<String> {
    events.iter().find_map(|e| match e {
        JobEvent::Dead { id: i, error, .. } if *i == id => Some(error.clone()),
        _ => None,
    })
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
