//! The connected workers (`Workers`): a worker is listed from its first heartbeat with what it
//! runs, stays listed while idle, and is gone once it leaves.

use std::sync::Arc;

use conveyor_core::{Backend, JobEvent, JobState, NewJob, Registry, WorkerInfo};
use serde_json::json;

use crate::{start, test_config, wait_for_state, Harness, WAIT};

/// Polls the workers list (read by another handle, as another process would) until `done`
/// holds, or panics with the last list seen.
async fn wait_for_workers(
    observer: &Arc<dyn Backend>,
    what: &str,
    done: impl Fn(&[WorkerInfo]) -> bool,
) -> Vec<WorkerInfo> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let workers = observer.workers().await.expect("workers list");
        if done(&workers) {
            return workers;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("never saw {what}; last list: {workers:#?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A running worker is listed with its job's queue; idle, it stays listed (its heartbeats go
/// on without jobs) with nothing running; once it stopped, it is not listed.
pub async fn connected_workers_are_listed_with_what_they_run(h: &dyn Harness) {
    let site = h.site().await;
    let backend = site.open().await;
    let observer = site.open().await;
    let job = NewJob::new("sleep", json!({ "ms": 60_000 })).queue("video");
    let id = backend.enqueue(job).await.expect("enqueue").id;
    let config = test_config();
    let owner = config.owner.clone();
    let mut worker = start(&backend, Registry::with_builtins(), config);
    worker
        .until("the job started", |seen| {
            seen.iter()
                .any(|e| matches!(e, JobEvent::Started { .. }) && e.id() == id)
        })
        .await;
    let listed = wait_for_workers(&observer, "the worker running its job", |list| {
        list.iter()
            .any(|w| w.owner == owner && w.running.get("video") == Some(&1))
    })
    .await;
    let me = listed.iter().find(|w| w.owner == owner).expect("listed");
    assert!(me.started_at.is_some_and(|t| t <= me.seen_at), "{me:?}");
    backend.cancel(id).await.expect("cancel");
    wait_for_state(&backend, id, JobState::Cancelled).await;
    let idle = |list: &[WorkerInfo]| {
        list.iter()
            .any(|w| w.owner == owner && w.running_total() == 0)
    };
    wait_for_workers(&observer, "the worker listed idle", idle).await;
    // Longer than any engine's freshness window (three heartbeats on SQLite, 6 s on Kafka):
    // listed idle after it, which only idle heartbeats can do.
    tokio::time::sleep(backend.heartbeat_interval() * 7).await;
    wait_for_workers(&observer, "the worker still listed while idle", idle).await;
    worker.stop().await;
    wait_for_workers(&observer, "the worker gone after it stopped", |list| {
        !list.iter().any(|w| w.owner == owner)
    })
    .await;
}
