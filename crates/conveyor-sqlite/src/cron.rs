//! Cron schedules for the SQLite engine. Firing runs in an immediate transaction that moves
//! the entry to its next tick, so concurrent `serve` processes fire each tick once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use conveyor_core::{next_fire_after, CronEntry, JobId, JobInfo, NewJob, Schedules};
use rusqlite::{params, Row, TransactionBehavior};

use crate::engine::{insert_jobs, SqliteEngine};
use crate::error::{Result, SqliteError};

const COLUMNS: &str = "name, expr, kind, queue, payload, next_run_at, last_run_at";

fn entry_row(row: &Row<'_>) -> rusqlite::Result<(CronEntry, String)> {
    let payload: String = row.get(4)?;
    Ok((
        CronEntry {
            name: row.get(0)?,
            expr: row.get(1)?,
            kind: row.get(2)?,
            queue: row.get(3)?,
            payload: serde_json::Value::Null,
            next_run_at: Some(JobInfo::time(row.get(5)?)),
            last_run_at: row.get::<_, Option<i64>>(6)?.map(JobInfo::time),
        },
        payload,
    ))
}

fn decode((mut entry, payload): (CronEntry, String)) -> Result<CronEntry> {
    entry.payload = serde_json::from_str(&payload)
        .map_err(|e| SqliteError::Corrupt(format!("cron entry {}: payload: {e}", entry.name)))?;
    Ok(entry)
}

#[async_trait]
impl Schedules for SqliteEngine {
    async fn list_cron(&self) -> conveyor_core::Result<Vec<CronEntry>> {
        let entries = self
            .store
            .run(|conn| {
                let mut stmt = conn
                    .prepare_cached(&format!("SELECT {COLUMNS} FROM cron_entries ORDER BY name"))?;
                let rows = stmt.query_map([], entry_row)?;
                rows.map(|r| decode(r?)).collect()
            })
            .await?;
        Ok(entries)
    }

    async fn upsert_cron(&self, entry: CronEntry) -> conveyor_core::Result<CronEntry> {
        let now = Utc::now();
        let next = entry.validate(now)?;
        let payload = serde_json::to_string(&entry.payload)
            .map_err(|e| conveyor_core::Error::invalid("payload", e))?;
        let stored = self
            .store
            .run(move |conn| {
                // Re-saving an entry with the same expression (as `serve` does with its config
                // at every start) keeps its next tick, so a tick missed while nothing ran
                // still fires once.
                conn.execute(
                    "INSERT INTO cron_entries (name, expr, kind, queue, payload, next_run_at, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (name) DO UPDATE SET expr = ?2, kind = ?3, queue = ?4, payload = ?5, \
                     next_run_at = CASE WHEN expr = ?2 THEN next_run_at ELSE ?6 END",
                    params![entry.name, entry.expr, entry.kind, entry.queue, payload,
                            next.timestamp_millis(), now.timestamp_millis()],
                )?;
                let sql = format!("SELECT {COLUMNS} FROM cron_entries WHERE name = ?1");
                decode(conn.query_row(&sql, [&entry.name], entry_row)?)
            })
            .await?;
        Ok(stored)
    }

    async fn remove_cron(&self, name: &str) -> conveyor_core::Result<bool> {
        let name = name.to_string();
        let removed = self
            .store
            .run(move |conn| {
                Ok(conn.execute("DELETE FROM cron_entries WHERE name = ?1", [name])? > 0)
            })
            .await?;
        Ok(removed)
    }

    async fn fire_due_cron(&self, now: DateTime<Utc>) -> conveyor_core::Result<Vec<JobId>> {
        let max_payload = self.store.config.max_payload_bytes;
        let key_retention_ms = self.store.config.key_retention_ms();
        let fired = self
            .store
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let due: Vec<CronEntry> = {
                    let mut stmt = tx.prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM cron_entries WHERE next_run_at <= ?1 ORDER BY name"
                    ))?;
                    let rows = stmt.query_map([now.timestamp_millis()], entry_row)?;
                    rows.map(|r| decode(r?)).collect::<Result<_>>()?
                };
                let mut fired = Vec::new();
                for entry in due {
                    let tick = entry.next_run_at.unwrap_or(now);
                    // Missed ticks (nobody was serving) fire once, not as a burst.
                    let next = next_fire_after(&entry.expr, now)?;
                    tx.execute(
                        "UPDATE cron_entries SET next_run_at = ?2, last_run_at = ?3 WHERE name = ?1",
                        params![entry.name, next.timestamp_millis(), tick.timestamp_millis()],
                    )?;
                    let job = NewJob::new(entry.kind.clone(), entry.payload.clone())
                        .queue(entry.queue.clone())
                        .idempotency_key(format!("cron:{}:{}", entry.name, tick.timestamp_millis()));
                    let payload = job.validate(max_payload)?;
                    let at = now.timestamp_millis();
                    let out = insert_jobs(&tx, &[(job, payload)], at, at - key_retention_ms)?;
                    fired.extend(out.into_iter().filter(|e| !e.duplicate).map(|e| e.id));
                }
                tx.commit()?;
                Ok(fired)
            })
            .await?;
        if !fired.is_empty() {
            self.notify();
        }
        Ok(fired)
    }
}
