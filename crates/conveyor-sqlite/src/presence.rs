//! The connected workers (the `Workers` capability): a row per worker, written by its
//! heartbeat, deleted when it leaves (migration `0007_workers`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use conveyor_core::{now_ms, WorkerInfo, Workers};
use rusqlite::{params, Connection};

use crate::engine::SqliteEngine;
use crate::error::Result;

const WORKER_SEEN: &str = include_str!("../sql/worker_seen.sql");
const WORKERS: &str = include_str!("../sql/workers.sql");

/// A row expired this long ago belongs to a worker that is long gone: deleted.
const FORGET_AFTER_MS: i64 = 3_600_000;

/// Notes, inside a heartbeat's transaction, that `owner` is connected until `expires` (its
/// lease: three heartbeats, so a worker is listed by its own settings, not the reader's);
/// forgets long-gone workers (a handful of rows: the table holds one per worker).
pub(crate) fn seen(conn: &Connection, owner: &str, now: i64, expires: i64) -> Result<()> {
    conn.prepare_cached(WORKER_SEEN)?
        .execute(params![owner, now, expires])?;
    conn.prepare_cached("DELETE FROM workers WHERE expires_at < ?1")?
        .execute([now - FORGET_AFTER_MS])?;
    Ok(())
}

/// `owner` left: it is no longer listed.
pub(crate) fn left(conn: &Connection, owner: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM workers WHERE owner = ?1")?
        .execute([owner])?;
    Ok(())
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The workers not expired, with what each runs.
fn list(conn: &Connection) -> Result<Vec<WorkerInfo>> {
    let mut stmt = conn.prepare_cached(WORKERS)?;
    let mut rows = stmt.query([now_ms()])?;
    let mut workers: Vec<WorkerInfo> = Vec::new();
    while let Some(row) = rows.next()? {
        let owner: String = row.get(0)?;
        if workers.last().map(|w| &w.owner) != Some(&owner) {
            workers.push(WorkerInfo {
                owner,
                started_at: Some(time(row.get(1)?)),
                seen_at: time(row.get(2)?),
                running: BTreeMap::new(),
            });
        }
        let queue: Option<String> = row.get(3)?;
        let count: i64 = row.get(4)?;
        if let (Some(queue), Some(worker)) = (queue.filter(|_| count > 0), workers.last_mut()) {
            worker.running.insert(queue, count as u64);
        }
    }
    Ok(workers)
}

#[async_trait]
impl Workers for SqliteEngine {
    async fn workers(&self) -> conveyor_core::Result<Vec<WorkerInfo>> {
        Ok(self.store.read(|conn| list(conn)).await?)
    }
}
