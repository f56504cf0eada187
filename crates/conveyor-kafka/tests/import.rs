//! The target side of `conveyor migrate` on the real broker: imported jobs keep their id,
//! state, attempts and error, and importing a batch again stores nothing twice.

mod support;

use std::time::Duration;

use chrono::Utc;
use conveyor_core::{DeadLetterList, Import, Inspect, JobInfo, JobState, NewJob, Transfer};
use conveyor_kafka::KafkaEngine;
use serde_json::json;
use support::fresh_config;

/// A job as another engine would hand it over.
fn transfer(state: JobState, attempt: u32, error: Option<&str>, run_in: i64) -> Transfer {
    let job = NewJob::new("noop", json!({ "state": state.as_str() }));
    let now = Utc::now();
    Transfer {
        info: JobInfo {
            id: job.id,
            kind: job.kind,
            queue: "moved".into(),
            state,
            attempt,
            max_attempts: 3,
            priority: 0,
            run_at: now + chrono::Duration::seconds(run_in),
            created_at: now - chrono::Duration::hours(2),
            finished_at: None,
            last_error: error.map(str::to_string),
            errored_at: error.map(|_| now - chrono::Duration::minutes(5)),
            progress: None,
            payload: job.payload,
            idempotency_key: None,
            ordering_key: None,
            cancel_requested: false,
            replay_of: None,
        },
        timeout: Some(Duration::from_secs(9)),
        backoff: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_jobs_keep_their_state_and_a_second_import_stores_nothing() {
    let config = fresh_config(3);
    let engine = KafkaEngine::connect(config.clone()).await.expect("connect");
    let jobs = vec![
        transfer(JobState::Available, 0, None, 0),
        transfer(JobState::Scheduled, 0, None, 3600),
        transfer(JobState::Retryable, 1, Some("boom"), 3600),
        transfer(JobState::Dead, 3, Some("gave up"), 0),
    ];
    let imported = engine.import(jobs.clone()).await.expect("import");
    assert_eq!((imported.stored, imported.already), (4, 0));

    let expect = [
        (JobState::Available, 0, None),
        (JobState::Scheduled, 0, None),
        (JobState::Retryable, 1, Some("boom")),
        (JobState::Dead, 3, Some("gave up")),
    ];
    for (job, (state, attempt, error)) in jobs.iter().zip(expect) {
        let info = engine
            .job(job.info.id)
            .await
            .expect("status")
            .expect("the moved job is found");
        assert_eq!(info.state, state, "{info:?}");
        assert_eq!(info.attempt, attempt, "{info:?}");
        assert_eq!(info.last_error.as_deref(), error, "{info:?}");
        assert_eq!(
            info.created_at.timestamp_millis(),
            job.info.created_at.timestamp_millis()
        );
    }
    let dead = engine.list_dead(10).await.expect("dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job.id, jobs[3].info.id);

    // A new handle (a second `conveyor migrate` after a crash) is handed the same jobs.
    let again = KafkaEngine::connect(config).await.expect("connect");
    let imported = again.import(jobs).await.expect("import again");
    assert_eq!((imported.stored, imported.already), (0, 4));
    assert_eq!(
        again.list_dead(10).await.expect("dlq").len(),
        1,
        "one dead letter"
    );
}
