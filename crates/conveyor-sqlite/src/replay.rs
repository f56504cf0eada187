//! [`Replay`] for the SQLite engine: a queue's jobs since a time, enqueued again.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use conveyor_core::{now_ms, Engine, JobId, NewJob, Progress, Replay, Transfer};
use rusqlite::params;

use crate::engine::SqliteEngine;
use crate::export::transfer;

const REPLAY_JOBS: &str = include_str!("../sql/replay_jobs.sql");

/// Jobs enqueued per transaction.
const BATCH: usize = 1_000;

/// The new job that re-runs `old`: same work, new id, no idempotency key.
pub(crate) fn replay_of(old: &Transfer) -> NewJob {
    let info = &old.info;
    NewJob {
        queue: info.queue.clone(),
        priority: info.priority,
        max_attempts: info.max_attempts,
        // Every replayed job came due (a retrying one's run_at is its next retry): it runs now.
        run_at: None,
        timeout: old.timeout,
        backoff: old.backoff,
        ordering_key: info.ordering_key.clone(),
        replay_of: Some(info.id),
        ..NewJob::new(info.kind.clone(), info.payload.clone())
    }
}

#[async_trait]
impl Replay for SqliteEngine {
    async fn replay(
        &self,
        queue: &str,
        since: DateTime<Utc>,
        progress: &Progress,
    ) -> conveyor_core::Result<Vec<JobId>> {
        let queue = queue.to_string();
        let since = since.timestamp_millis();
        let old = self
            .store
            .run(move |conn| {
                let mut statement = conn.prepare_cached(REPLAY_JOBS)?;
                let rows = statement.query_map(params![now_ms(), queue, since], transfer)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        let total = old.len() as u64;
        progress(0, total);
        let mut ids = Vec::with_capacity(old.len());
        for batch in old.chunks(BATCH) {
            let jobs: Vec<NewJob> = batch.iter().map(replay_of).collect();
            ids.extend(self.enqueue_batch(jobs).await?.into_iter().map(|e| e.id));
            progress(ids.len() as u64, total);
        }
        Ok(ids)
    }
}
