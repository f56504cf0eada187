use std::time::Duration;

use conveyor_core::{Backoff, Job, JobId, JobInfo, JobState};
use rusqlite::Row;

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
        replay_of: row
            .get::<_, Option<String>>(17)?
            .map(|id| job_id(&id))
            .transpose()?,
    })
}

fn json_or_string(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}

/// Reads column `index` (named `name` in errors) of a row.
fn column<T: rusqlite::types::FromSql>(
    row: &Row<'_>,
    index: usize,
    name: &str,
) -> Result<T, String> {
    row.get(index).map_err(|e| match e {
        rusqlite::Error::InvalidColumnType(_, _, found) => {
            format!("column {name} holds a value of type {found}")
        }
        rusqlite::Error::IntegralValueOutOfRange(_, value) => {
            format!("column {name} is out of range ({value})")
        }
        other => format!("column {name}: {other}"),
    })
}

/// The job id of a leased row, which must be in the canonical (lower-case, hyphenated) form:
/// reports and heartbeats match rows by that text, so a row in any other form would stay
/// `running` forever.
fn canonical_id(text: &str) -> Result<JobId, String> {
    let id: JobId = text
        .parse()
        .map_err(|e: conveyor_core::Error| format!("column id: {e}"))?;
    if id.to_string() != text {
        return Err(format!(
            "column id: {text:?} is not in the canonical form {id} (another row already has that id)"
        ));
    }
    Ok(id)
}

/// Maps a row returned by `claim.sql`; the error names the column that cannot be read.
pub(crate) fn leased_job(row: &Row<'_>) -> Result<Job, String> {
    let backoff: Option<String> = column(row, 7, "backoff")?;
    let backoff = backoff
        .map(|b| serde_json::from_str::<Backoff>(&b))
        .transpose()
        .map_err(|e| format!("column backoff: {e}"))?;
    let timeout_ms: Option<i64> = column(row, 6, "timeout_ms")?;
    Ok(Job {
        id: canonical_id(&column::<String>(row, 0, "id")?)?,
        kind: column(row, 1, "kind")?,
        queue: column(row, 2, "queue")?,
        payload: column(row, 3, "payload")?,
        attempt: column(row, 4, "attempt")?,
        max_attempts: column(row, 5, "max_attempts")?,
        timeout: timeout_ms.map(|ms| Duration::from_millis(ms.max(1) as u64)),
        backoff,
        traceparent: column(row, 11, "traceparent")?,
    })
}
