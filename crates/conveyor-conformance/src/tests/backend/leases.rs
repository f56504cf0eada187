//! Leases meeting user actions: cancel, dead-letter retry and purge against jobs whose worker
//! gave them back or died (§4.4, §4.7). These drive the engine as a worker would, through
//! [`conveyor_core::Engine::exchange`], so each step is exact and nothing depends on timing
//! other than the lease expiring.

use std::sync::Arc;
use std::time::Duration;

use conveyor_core::{
    handler_fn, Backend, Completion, Fetch, Job, JobId, JobState, NewJob, Outcome, Registry, Report,
};
use serde_json::json;

use crate::{start, test_config, wait_for_state, Harness, Site};

/// Leases up to `limit` jobs for `owner`.
async fn lease(backend: &Arc<dyn Backend>, owner: &str, limit: usize) -> Vec<Job> {
    let fetch = Fetch {
        owner: owner.to_string(),
        queues: Vec::new(),
        limit,
    };
    backend.exchange(Vec::new(), &fetch).await.expect("lease")
}

/// Stores `report` as `owner` would, leasing nothing.
async fn report(backend: &Arc<dyn Backend>, owner: &str, report: Report) {
    let fetch = Fetch {
        owner: owner.to_string(),
        queues: Vec::new(),
        limit: 0,
    };
    backend
        .exchange(vec![report], &fetch)
        .await
        .expect("report");
}

/// Waits out the harness's short lease, then lets a new handle (another process) look for
/// expired leases, as every worker does when it fetches. Returns what that handle leased.
async fn rescue_after_lease(site: &dyn Site, owner: &str) -> Vec<Job> {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    lease(&site.open().await, owner, 10).await
}

async fn state_of(backend: &Arc<dyn Backend>, id: JobId) -> JobState {
    backend
        .job(id)
        .await
        .expect("lookup")
        .expect("job exists")
        .state
}

/// A job cancelled while it runs is cancelled for good when its worker gives it back at
/// shutdown: it never runs again.
pub async fn cancel_survives_a_released_lease(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let id = backend
        .enqueue(NewJob::new("noop", json!({})))
        .await
        .expect("enqueue")
        .id;
    let leased = lease(&backend, "w1", 1).await;
    assert_eq!(leased.len(), 1);
    backend.cancel(id).await.expect("cancel");
    let released = Report {
        id,
        attempt: leased[0].attempt,
        completion: Completion::Released,
    };
    report(&backend, "w1", released).await;
    assert_eq!(state_of(&backend, id).await, JobState::Cancelled);
    assert!(lease(&backend, "w2", 10).await.is_empty(), "ran again");
}

/// A job cancelled while it runs is cancelled for good when its worker dies and the lease
/// expires: the rescue does not make it available again.
pub async fn cancel_survives_a_rescued_lease(h: &dyn Harness) {
    let site = h.site().await;
    let backend = site.open().await;
    let id = backend
        .enqueue(NewJob::new("noop", json!({})))
        .await
        .expect("enqueue")
        .id;
    assert_eq!(lease(&backend, "dies", 1).await.len(), 1);
    backend.cancel(id).await.expect("cancel");
    let again = rescue_after_lease(site.as_ref(), "w2").await;
    assert!(again.is_empty(), "a cancelled job ran again: {again:?}");
    assert_eq!(state_of(&backend, id).await, JobState::Cancelled);
}

/// After a dead-letter retry, the new attempt has a number never used before: a late report
/// of the attempt that died, from the same worker, does not match the new lease.
pub async fn a_late_report_never_matches_a_retried_job(h: &dyn Harness) {
    let site = h.site().await;
    let backend = site.open().await;
    let job = NewJob::new("noop", json!({})).max_attempts(1);
    let id = backend.enqueue(job).await.expect("enqueue").id;
    let first = lease(&backend, "w", 1).await;
    assert_eq!(first.len(), 1);
    // The worker stalls past its lease: the job is rescued, out of attempts, into the list.
    assert!(rescue_after_lease(site.as_ref(), "x").await.is_empty());
    assert_eq!(state_of(&backend, id).await, JobState::Dead);
    backend.retry_dead(id).await.expect("retry dead");
    let second = lease(&backend, "w", 1).await;
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].attempt, first[0].attempt, "attempt number reused");
    // The stalled attempt wakes up and reports.
    let late = Report {
        id,
        attempt: first[0].attempt,
        completion: Completion::Completed,
    };
    report(&backend, "w", late).await;
    let info = backend.job(id).await.expect("lookup").expect("job");
    assert_eq!(info.state, JobState::Running, "{info:?}");
    assert!(info.attempt <= info.max_attempts, "{info:?}");
}

/// Purge drops jobs waiting for their first attempt and keeps the ones waiting for a retry.
pub async fn purge_keeps_jobs_waiting_for_a_retry(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let mut registry = Registry::with_builtins();
    registry.register(handler_fn("later", |_ctx| async {
        Outcome::RetryAfter {
            delay: Duration::from_secs(3600),
            error: "try again in an hour".into(),
        }
    }));
    let retry = NewJob::new("later", json!({})).queue("q");
    let retry = backend.enqueue(retry).await.expect("enqueue").id;
    let worker = start(&backend, registry, test_config());
    wait_for_state(&backend, retry, JobState::Retryable).await;
    worker.stop().await;
    let waiting = NewJob::new("noop", json!({})).queue("q");
    let waiting = backend.enqueue(waiting).await.expect("enqueue").id;
    assert_eq!(backend.purge_queue("q").await.expect("purge"), 1);
    assert!(backend.job(waiting).await.expect("lookup").is_none());
    assert_eq!(state_of(&backend, retry).await, JobState::Retryable);
}
