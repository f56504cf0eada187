//! Running, retrying, dead-lettering, events (§4.3, §4.7).

use conveyor_core::{JobState, NewJob, Registry};
use serde_json::json;

use crate::{start, test_config, wait_for_state, Harness};

/// Out of attempts, a job is dead with its attempts, last error and error time; it is in the
/// dead-letter list with its queue; retrying it gives it a fresh set of attempts, numbered on
/// from the last one (a late report of an old attempt can never match the new lease).
pub async fn dead_letters_after_max_attempts_with_provenance(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let job = NewJob::new("fail", json!({})).queue("mail").max_attempts(2);
    let id = backend.enqueue(job).await.expect("enqueue").id;
    let worker = start(&backend, Registry::with_builtins(), test_config());
    let info = wait_for_state(&backend, id, JobState::Dead).await;
    worker.stop().await;
    assert_eq!(info.attempt, 2);
    assert!(
        info.last_error
            .as_deref()
            .unwrap_or("")
            .contains("always fails"),
        "{info:?}"
    );
    assert!(info.errored_at.is_some());
    let dead = backend.list_dead(10).await.expect("list dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job.id, id);
    assert_eq!(dead[0].original_queue, "mail");
    let retried = backend.retry_dead(id).await.expect("retry dead");
    assert_eq!(
        (retried.attempt, retried.max_attempts),
        (2, 4),
        "a fresh set of attempts, numbered on"
    );
    assert!(!retried.state.is_final(), "{retried:?}");
    assert!(backend.list_dead(10).await.expect("list dead").is_empty());
}

/// `retry --all` puts every dead job back; `purge` deletes them.
pub async fn dead_letter_retry_all_and_purge(h: &dyn Harness) {
    let backend = h.site().await.open().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            backend
                .enqueue(NewJob::new("fail", json!({})).max_attempts(1))
                .await
                .expect("enqueue")
                .id,
        );
    }
    let worker = start(&backend, Registry::with_builtins(), test_config());
    for id in &ids {
        wait_for_state(&backend, *id, JobState::Dead).await;
    }
    worker.stop().await;
    assert_eq!(
        backend.retry_all_dead(&|_, _| {}).await.expect("retry all"),
        3
    );
    assert!(backend.list_dead(10).await.expect("list").is_empty());
    // Run them to death again, then purge.
    let worker = start(&backend, Registry::with_builtins(), test_config());
    for id in &ids {
        wait_for_state(&backend, *id, JobState::Dead).await;
    }
    worker.stop().await;
    assert_eq!(backend.purge_dead().await.expect("purge"), 3);
    for id in ids {
        assert!(backend.job(id).await.expect("lookup").is_none());
    }
}
