//! [`Export`] for the SQLite engine: the source side of `conveyor migrate`.

use std::time::Duration;

use async_trait::async_trait;
use conveyor_core::{now_ms, Backoff, Export, JobId, Transfer};
use rusqlite::{params, Row};

use crate::engine::{SqliteEngine, RESCUE_EXPIRED};
use crate::rows::job_info;

const EXPORT_JOBS: &str = include_str!("../sql/export_jobs.sql");

/// Ids removed per statement: well under SQLite's limit of bound parameters.
const REMOVE_CHUNK: usize = 500;

/// Maps a row of `export_jobs.sql` (and `replay_jobs.sql`).
pub(crate) fn transfer(row: &Row<'_>) -> rusqlite::Result<Transfer> {
    let info = job_info(row)?;
    let timeout_ms: Option<i64> = row.get(18)?;
    let backoff: Option<String> = row.get(19)?;
    let backoff = backoff
        .map(|b| serde_json::from_str::<Backoff>(&b))
        .transpose()
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(19, rusqlite::types::Type::Text, Box::new(e))
        })?;
    Ok(Transfer {
        info,
        timeout: timeout_ms.map(|ms| Duration::from_millis(ms.max(1) as u64)),
        backoff,
    })
}

#[async_trait]
impl Export for SqliteEngine {
    async fn export(&self, limit: usize) -> conveyor_core::Result<Vec<Transfer>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let jobs = self
            .store
            .run(move |conn| {
                let mut statement = conn.prepare_cached(EXPORT_JOBS)?;
                let rows = statement.query_map(params![now_ms(), limit], transfer)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        Ok(jobs)
    }

    /// Jobs whose lease expired (their worker crashed) are put back first, as a worker would:
    /// only jobs a live worker holds keep a move from starting.
    async fn running(&self) -> conveyor_core::Result<u64> {
        let running = self
            .store
            .run(|conn| {
                let rescued = conn.execute(RESCUE_EXPIRED, [now_ms()])?;
                if rescued > 0 {
                    tracing::warn!(rescued, "jobs with expired leases put back before the move");
                }
                let count: i64 = conn.query_row(
                    "SELECT count(*) FROM jobs WHERE state = 'running'",
                    [],
                    |r| r.get(0),
                )?;
                Ok(count.max(0) as u64)
            })
            .await?;
        Ok(running)
    }

    async fn remove_moved(&self, ids: &[JobId]) -> conveyor_core::Result<Vec<JobId>> {
        let ids: Vec<String> = ids.iter().map(JobId::to_string).collect();
        let kept = self
            .store
            .run(move |conn| {
                let tx = conn.transaction()?;
                let mut kept = Vec::new();
                for chunk in ids.chunks(REMOVE_CHUNK) {
                    let marks = vec!["?"; chunk.len()].join(",");
                    let sql = format!(
                        "DELETE FROM jobs WHERE id IN ({marks}) \
                         AND state IN ('scheduled', 'available', 'retryable', 'dead')"
                    );
                    tx.execute(&sql, rusqlite::params_from_iter(chunk))?;
                    // What is left of the batch was taken by a worker since it was listed.
                    let sql = format!("SELECT id FROM jobs WHERE id IN ({marks})");
                    let mut left = tx.prepare(&sql)?;
                    let rows = left
                        .query_map(rusqlite::params_from_iter(chunk), |r| r.get::<_, String>(0))?;
                    for id in rows {
                        kept.push(crate::rows::job_id(&id?)?);
                    }
                }
                tx.commit()?;
                Ok(kept)
            })
            .await?;
        Ok(kept)
    }
}
