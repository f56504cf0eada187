use std::time::Duration;

use conveyor_core::{Backoff, Job, JobId, JobInfo, JobState};
use rusqlite::Row;

use crate::error::{Result, SqliteError};

pub(crate) const SELECT_JOB: &str = include_str!("../sql/select_job.sql");

pub(crate) fn job_id(text: &str) -> rusqlite::Result<JobId> {
    text.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Maps a row of `select_job.sql`.
pub(crate) fn job_info(row: &Row<'_>) -> rusqlite::Result<JobInfo> {
    let state: String = row.get(3)?;
    let state: JobState = state.parse().map_err(|e: conveyor_core::Error| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let payload: String = row.get(13)?;
    let progress: Option<String> = row.get(12)?;
    Ok(JobInfo {
        id: job_id(&row.get::<_, String>(0)?)?,
        kind: row.get(1)?,
        queue: row.get(2)?,
        state,
        attempt: row.get(4)?,
        max_attempts: row.get(5)?,
        priority: row.get(6)?,
        run_at: JobInfo::time(row.get(7)?),
        created_at: JobInfo::time(row.get(8)?),
        finished_at: row.get::<_, Option<i64>>(9)?.map(JobInfo::time),
        last_error: row.get(10)?,
        errored_at: row.get::<_, Option<i64>>(11)?.map(JobInfo::time),
        progress: progress.map(|p| json_or_string(&p)),
        // A payload written by a foreign producer may not be JSON; show it as a string.
        payload: json_or_string(&payload),
        idempotency_key: row.get(14)?,
        ordering_key: row.get(15)?,
        cancel_requested: row.get::<_, i64>(16)? != 0,
    })
}

fn json_or_string(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}

/// Maps a row returned by `claim.sql`.
pub(crate) fn leased_job(row: &Row<'_>) -> Result<Job> {
    let backoff: Option<String> = row.get(7)?;
    let backoff = backoff
        .map(|b| serde_json::from_str::<Backoff>(&b))
        .transpose()
        .map_err(|e| SqliteError::Corrupt(format!("backoff column: {e}")))?;
    Ok(Job {
        id: job_id(&row.get::<_, String>(0)?)?,
        kind: row.get(1)?,
        queue: row.get(2)?,
        payload: row.get(3)?,
        attempt: row.get(4)?,
        max_attempts: row.get(5)?,
        timeout: row
            .get::<_, Option<i64>>(6)?
            .map(|ms| Duration::from_millis(ms.max(1) as u64)),
        backoff,
    })
}
