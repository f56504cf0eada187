//! The capability traits (inspect, statistics, control, dead letters) for the SQLite engine.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use conveyor_core::{
    now_ms, Control, DeadLetter, DeadLetterList, DeadLetters, Error, Inspect, JobId, JobInfo,
    JobState, Progress, QueueStats, Statistics, Stats,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::engine::SqliteEngine;
use crate::error::Result;
use crate::rows::{job_info, SELECT_JOB};

const STATS: &str = include_str!("../sql/stats.sql");

pub(crate) fn load_job(conn: &Connection, id: JobId) -> Result<Option<JobInfo>> {
    let sql = format!("{SELECT_JOB} WHERE id = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![now_ms(), id.to_string()], job_info)
        .optional()?)
}

fn must_load(conn: &Connection, id: JobId) -> Result<JobInfo> {
    load_job(conn, id)?.ok_or_else(|| {
        Error::NotFound {
            what: "job",
            id: id.to_string(),
        }
        .into()
    })
}

impl SqliteEngine {
    /// Runs one write statement with `args` and returns the number of rows it changed.
    async fn write(
        &self,
        sql: &'static str,
        args: Vec<rusqlite::types::Value>,
    ) -> conveyor_core::Result<u64> {
        let changed = self
            .store
            .run(move |conn| Ok(conn.execute(sql, rusqlite::params_from_iter(args))? as u64))
            .await?;
        Ok(changed)
    }
}

#[async_trait]
impl Inspect for SqliteEngine {
    async fn job(&self, id: JobId) -> conveyor_core::Result<Option<JobInfo>> {
        Ok(self.store.read(move |conn| load_job(conn, id)).await?)
    }
}

#[async_trait]
impl Statistics for SqliteEngine {
    async fn stats(&self) -> conveyor_core::Result<Stats> {
        let stats = self
            .store
            .read(|conn| {
                let mut stmt = conn.prepare_cached(STATS)?;
                let mut rows = stmt.query([now_ms()])?;
                let mut queues: Vec<QueueStats> = Vec::new();
                while let Some(row) = rows.next()? {
                    let queue: String = row.get(0)?;
                    let state: JobState = row.get::<_, String>(1)?.parse()?;
                    let count: i64 = row.get(2)?;
                    if queues.last().map(|q| &q.queue) != Some(&queue) {
                        queues.push(QueueStats {
                            queue,
                            ..QueueStats::default()
                        });
                    }
                    if let Some(last) = queues.last_mut() {
                        last.add(state, count as u64);
                    }
                }
                Ok(Stats { queues })
            })
            .await?;
        Ok(stats)
    }
}

#[async_trait]
impl Control for SqliteEngine {
    async fn cancel(&self, id: JobId) -> conveyor_core::Result<JobInfo> {
        let info = self
            .store
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let job = must_load(&tx, id)?;
                match job.state {
                    JobState::Running => {
                        tx.execute(
                            "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1",
                            [id.to_string()],
                        )?;
                    }
                    state if state.is_final() => {
                        return Err(Error::WrongState {
                            id: id.to_string(),
                            state: state.to_string(),
                            message: "only unfinished jobs can be cancelled".into(),
                        }
                        .into())
                    }
                    _ => {
                        tx.execute(
                            "UPDATE jobs SET state = 'cancelled', finished_at = ?2 WHERE id = ?1",
                            params![id.to_string(), now_ms()],
                        )?;
                    }
                }
                let after = must_load(&tx, id)?;
                tx.commit()?;
                Ok(after)
            })
            .await?;
        Ok(info)
    }

    async fn purge_queue(&self, queue: &str) -> conveyor_core::Result<u64> {
        self.write(
            "DELETE FROM jobs WHERE queue = ?1 AND state IN ('scheduled', 'available') AND attempt = 0",
            vec![queue.to_string().into()],
        )
        .await
    }

    async fn cleanup(&self, before: DateTime<Utc>) -> conveyor_core::Result<u64> {
        let keys_before = now_ms() - self.store.config.key_retention_ms();
        let removed = self
            .store
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let removed = tx.execute(
                    "DELETE FROM jobs WHERE state IN ('completed', 'cancelled') AND finished_at < ?1",
                    [before.timestamp_millis()],
                )?;
                // Keys of jobs deleted longer ago than key_retention may name new jobs now.
                tx.execute("DELETE FROM retired_keys WHERE retired_at < ?1", [keys_before])?;
                tx.commit()?;
                Ok(removed as u64)
            })
            .await?;
        Ok(removed)
    }
}

const RETRY_DEAD: &str = include_str!("../sql/retry_dead.sql");

#[async_trait]
impl DeadLetterList for SqliteEngine {
    async fn list_dead(&self, limit: usize) -> conveyor_core::Result<Vec<DeadLetter>> {
        let dead = self
            .store
            .read(move |conn| {
                let sql = format!("{SELECT_JOB} WHERE state = 'dead' ORDER BY finished_at DESC, seq DESC LIMIT ?2");
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![now_ms(), limit as i64], job_info)?;
                let mut out = Vec::new();
                for row in rows {
                    // A row written by another program that cannot be read must not hide the
                    // rest of the list.
                    let job = match row {
                        Ok(job) => job,
                        Err(err) => {
                            tracing::warn!(error = %err, "a dead job row cannot be read: left out of the list");
                            continue;
                        }
                    };
                    out.push(DeadLetter {
                        original_queue: job.queue.clone(),
                        original_partition: None,
                        original_topic: None,
                        original_offset: None,
                        job,
                    });
                }
                Ok(out)
            })
            .await?;
        Ok(dead)
    }
}

#[async_trait]
impl DeadLetters for SqliteEngine {
    async fn retry_dead(&self, id: JobId) -> conveyor_core::Result<JobInfo> {
        let info = self
            .store
            .run(move |conn| {
                if conn.execute(RETRY_DEAD, params![now_ms(), id.to_string()])? == 0 {
                    let job = must_load(conn, id)?;
                    return Err(Error::WrongState {
                        id: id.to_string(),
                        state: job.state.to_string(),
                        message: "only dead jobs can be retried from the dead-letter list".into(),
                    }
                    .into());
                }
                must_load(conn, id)
            })
            .await?;
        self.notify();
        Ok(info)
    }

    /// One transaction: `progress` hears once, when every job is back.
    async fn retry_all_dead(&self, progress: &Progress) -> conveyor_core::Result<u64> {
        let n = self
            .store
            .run(|conn| {
                // One at a time in seq order: each goes to the back of its key's line, and
                // the retried jobs keep their order among themselves.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let ids = tx
                    .prepare("SELECT id FROM jobs WHERE state = 'dead' ORDER BY seq")?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let now = now_ms();
                let mut retried = 0;
                for id in ids {
                    retried += tx.execute(RETRY_DEAD, params![now, id])? as u64;
                }
                tx.commit()?;
                Ok(retried)
            })
            .await?;
        self.notify();
        progress(n, n);
        Ok(n)
    }

    async fn purge_dead(&self) -> conveyor_core::Result<u64> {
        self.write("DELETE FROM jobs WHERE state = 'dead'", vec![])
            .await
    }
}
