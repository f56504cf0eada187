use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conveyor_core::{
    now_ms, Completion, Engine, Enqueued, Fetch, Job, JobId, JobState, NewJob, Renewal, Report,
};
use rusqlite::{
    named_params, params, Connection, OptionalExtension, Transaction, TransactionBehavior,
};

use crate::claim::claim;
use tokio::sync::Notify;

use crate::config::SqliteConfig;
use crate::error::{Result, SqliteError};
use crate::store::Store;

const INSERT_JOB: &str = include_str!("../sql/insert_job.sql");
pub(crate) const RESCUE_EXPIRED: &str = include_str!("../sql/rescue_expired.sql");
const RECORD_OUTCOME: &str = include_str!("../sql/record_outcome.sql");
const RECORD_COMPLETED: &str = include_str!("../sql/record_completed.sql");
const RENEW_LEASES: &str = include_str!("../sql/renew_leases.sql");

/// How often expired leases are looked for (per process).
const RESCUE_EVERY_MS: i64 = 1000;

/// The SQLite engine. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct SqliteEngine {
    pub(crate) store: Arc<Store>,
    pub(crate) waker: Arc<Notify>,
    last_rescue_ms: Arc<AtomicI64>,
}

impl SqliteEngine {
    /// Opens (creating if needed) the database described by `config` and applies migrations.
    pub fn open(config: SqliteConfig) -> conveyor_core::Result<Self> {
        let store = Store::open(config)?;
        Ok(SqliteEngine {
            store: Arc::new(store),
            waker: Arc::new(Notify::new()),
            last_rescue_ms: Arc::new(AtomicI64::new(0)),
        })
    }

    /// Opens a backend URL such as `sqlite://conveyor.db?synchronous=normal`.
    pub fn open_url(url: &str) -> conveyor_core::Result<Self> {
        Self::open(SqliteConfig::from_url(url)?)
    }

    /// What this engine offers beyond the core trait: every capability.
    pub fn capabilities(self: &Arc<Self>) -> conveyor_core::Capabilities {
        let backend: Arc<dyn conveyor_core::Backend> = self.clone();
        conveyor_core::Capabilities {
            export: Some(self.clone()),
            list_jobs: Some(self.clone()),
            ..conveyor_core::Capabilities::all(&backend)
        }
    }

    /// Opens the file at `path` with default settings.
    pub fn open_path(path: impl AsRef<Path>) -> conveyor_core::Result<Self> {
        Self::open(SqliteConfig::new(path.as_ref()))
    }

    /// The settings this engine was opened with.
    pub fn config(&self) -> &SqliteConfig {
        &self.store.config
    }

    pub(crate) fn notify(&self) {
        self.waker.notify_waiters();
    }

    async fn insert(&self, jobs: Vec<NewJob>) -> conveyor_core::Result<Vec<Enqueued>> {
        let limit = self.store.config.max_payload_bytes;
        let key_retention_ms = self.store.config.key_retention_ms();
        let prepared = jobs
            .into_iter()
            .map(|job| job.validate(limit).map(|payload| (job, payload)))
            .collect::<conveyor_core::Result<Vec<_>>>()?;
        let out = self
            .store
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = now_ms();
                let out = insert_jobs(&tx, &prepared, now, now - key_retention_ms)?;
                tx.commit()?;
                Ok(out)
            })
            .await?;
        if out.iter().any(|e| !e.duplicate) {
            self.notify();
        }
        Ok(out)
    }
}

/// Inserts jobs inside the caller's transaction (also used by cron firing).
/// `keys_since`: keys of jobs deleted at or after this time (ms) still count as taken.
pub(crate) fn insert_jobs(
    tx: &Transaction<'_>,
    jobs: &[(NewJob, String)],
    now: i64,
    keys_since: i64,
) -> Result<Vec<Enqueued>> {
    let mut insert = tx.prepare_cached(INSERT_JOB)?;
    let mut out = Vec::with_capacity(jobs.len());
    for (job, payload) in jobs {
        let state = job.initial_state(now);
        let backoff = job
            .backoff
            .map(|b| serde_json::to_string(&b))
            .transpose()
            .map_err(|e| SqliteError::Corrupt(format!("backoff: {e}")))?;
        let inserted = insert.execute(params![
            job.id.to_string(),
            job.kind,
            job.queue,
            payload,
            state.as_str(),
            job.priority,
            job.max_attempts,
            job.run_at.map_or(now, |t| t.timestamp_millis().max(now)),
            now,
            job.timeout.map(|t| t.as_millis() as i64),
            backoff,
            job.idempotency_key,
            job.ordering_key,
            keys_since,
            job.replay_of.map(|id| id.to_string()),
            job.traceparent,
        ])?;
        out.push(if inserted == 1 {
            Enqueued {
                id: job.id,
                state,
                duplicate: false,
            }
        } else {
            existing(tx, job)?
        });
    }
    Ok(out)
}

fn existing(tx: &Transaction<'_>, job: &NewJob) -> Result<Enqueued> {
    let (column, value) = match &job.idempotency_key {
        Some(key) => ("idempotency_key", key.clone()),
        None => ("id", job.id.to_string()),
    };
    let sql = format!("SELECT id, state FROM jobs WHERE {column} = ?1");
    let found: Option<(String, String)> = tx
        .query_row(&sql, [&value], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    // Not in the table: the key named a job deleted within key_retention.
    let (id, state) = match found {
        Some(found) => found,
        None => tx.query_row(
            "SELECT job_id, state FROM retired_keys WHERE idempotency_key = ?1",
            [&value],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?,
    };
    Ok(Enqueued {
        id: crate::rows::job_id(&id)?,
        state: state.parse()?,
        duplicate: true,
    })
}

fn record(tx: &Transaction<'_>, owner: &str, reports: &[Report], now: i64) -> Result<()> {
    let (completed, others): (Vec<&Report>, Vec<&Report>) = reports
        .iter()
        .partition(|r| r.completion == Completion::Completed);
    let mut stored = 0;
    if !completed.is_empty() {
        let done: Vec<(String, u32)> = completed
            .iter()
            .map(|r| (r.id.to_string(), r.attempt))
            .collect();
        let done = serde_json::to_string(&done).map_err(|e| SqliteError::Corrupt(e.to_string()))?;
        stored += tx
            .prepare_cached(RECORD_COMPLETED)?
            .execute(named_params! {":now": now, ":owner": owner, ":done": done})?;
    }
    let mut stmt = tx.prepare_cached(RECORD_OUTCOME)?;
    for report in others {
        let (state, give_back, run_at, error) = match &report.completion {
            Completion::Completed => (JobState::Completed, 0, None, None),
            Completion::Retry { at_ms, error } => {
                (JobState::Retryable, 0, Some(*at_ms), Some(error.as_str()))
            }
            Completion::Dead { error } => (JobState::Dead, 0, None, Some(error.as_str())),
            Completion::Cancelled => (JobState::Cancelled, 0, None, None),
            Completion::Released => (JobState::Available, 1, Some(now), None),
        };
        stored += stmt.execute(params![
            report.id.to_string(),
            owner,
            report.attempt,
            state.as_str(),
            give_back,
            run_at,
            error,
            now,
            state.is_final(),
        ])?;
    }
    if stored < reports.len() {
        tracing::warn!(
            lost = reports.len() - stored,
            "outcomes not stored: the lease was lost (those jobs were rescued and may run again)"
        );
    }
    Ok(())
}

fn exchange(
    conn: &mut Connection,
    reports: &[Report],
    fetch: &Fetch,
    lease_ms: i64,
    rescue: bool,
) -> Result<Vec<Job>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    record(&tx, &fetch.owner, reports, now)?;
    if rescue {
        let rescued = tx.prepare_cached(RESCUE_EXPIRED)?.execute([now])?;
        if rescued > 0 {
            tracing::warn!(
                rescued,
                "jobs with expired leases put back (a worker died or stalled)"
            );
        }
    }
    let jobs = if fetch.limit > 0 {
        claim(&tx, fetch, lease_ms, now)?
    } else {
        Vec::new()
    };
    tx.commit()?;
    Ok(jobs)
}

#[async_trait]
impl Engine for SqliteEngine {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn enqueue(&self, job: NewJob) -> conveyor_core::Result<Enqueued> {
        let mut out = self.insert(vec![job]).await?;
        out.pop()
            .ok_or_else(|| conveyor_core::Error::Closed("insert returned nothing".into()))
    }

    async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> conveyor_core::Result<Vec<Enqueued>> {
        self.insert(jobs).await
    }

    async fn exchange(
        &self,
        reports: Vec<Report>,
        fetch: &Fetch,
    ) -> conveyor_core::Result<Vec<Job>> {
        let lease_ms = self.store.config.lease.as_millis() as i64;
        let now = now_ms();
        let last = self.last_rescue_ms.load(Ordering::Relaxed);
        let rescue = fetch.limit > 0
            && now - last >= RESCUE_EVERY_MS
            && self
                .last_rescue_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        let fetch = fetch.clone();
        let jobs = self
            .store
            .run(move |conn| exchange(conn, &reports, &fetch, lease_ms, rescue))
            .await?;
        Ok(jobs)
    }

    async fn heartbeat(&self, owner: &str, running: &[JobId]) -> conveyor_core::Result<Renewal> {
        let owner = owner.to_string();
        let expires = now_ms() + self.store.config.lease.as_millis() as i64;
        let asked: Vec<String> = running.iter().map(|id| id.to_string()).collect();
        let ids = serde_json::to_string(&asked).map_err(|e| SqliteError::Corrupt(e.to_string()))?;
        let renewed = self
            .store
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                crate::presence::seen(&tx, &owner, now_ms(), expires)?;
                let renewed = tx
                    .prepare_cached(RENEW_LEASES)?
                    .query_map(params![owner, expires, ids], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                tx.commit()?;
                Ok(renewed)
            })
            .await?;
        let renewed: std::collections::HashMap<String, bool> = renewed.into_iter().collect();
        let mut renewal = Renewal::default();
        for (id, text) in running.iter().zip(&asked) {
            match renewed.get(text) {
                Some(true) => renewal.cancel.push(*id),
                Some(false) => {}
                None => renewal.lost.push(*id),
            }
        }
        Ok(renewal)
    }

    fn heartbeat_interval(&self) -> Duration {
        self.store.config.lease / 3
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.store.config.lease)
    }

    async fn set_progress(
        &self,
        owner: &str,
        id: JobId,
        progress: serde_json::Value,
    ) -> conveyor_core::Result<()> {
        let owner = owner.to_string();
        let text = serde_json::to_string(&progress)
            .map_err(|e| conveyor_core::Error::invalid("progress", e))?;
        let changed = self
            .store
            .run(move |conn| {
                Ok(conn.prepare_cached(
                    "UPDATE jobs SET progress = ?3 WHERE id = ?1 AND lease_owner = ?2 AND state = 'running'",
                )?
                .execute(params![id.to_string(), owner, text])?)
            })
            .await?;
        if changed == 0 {
            return Err(conveyor_core::Error::WrongState {
                id: id.to_string(),
                state: "not leased by this worker".into(),
                message: "progress is only stored while the job runs".into(),
            });
        }
        Ok(())
    }

    fn waker(&self) -> Arc<Notify> {
        self.waker.clone()
    }

    fn max_payload_bytes(&self) -> usize {
        self.store.config.max_payload_bytes
    }

    /// Takes the worker off the workers list. Every outcome is stored by now, so a failure
    /// (the file locked past `busy_timeout`) only leaves the row to expire: logged, never the
    /// shutdown's error.
    async fn leave(&self, owner: &str) -> conveyor_core::Result<()> {
        let owner = owner.to_string();
        let left = self
            .store
            .run(move |conn| crate::presence::left(conn, &owner))
            .await;
        if let Err(err) = left {
            tracing::debug!(error = %err, "the worker's row stays until it expires");
        }
        Ok(())
    }
}
