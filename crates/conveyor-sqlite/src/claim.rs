//! Leasing due jobs to a worker, and quarantining rows that cannot be read.
//!
//! Other producers may write rows (docs/sqlite-schema.md): a row this build cannot read must
//! never stop the others from running. It is dead-lettered with the reason, in the same
//! transaction, and the rest of the claim goes on.

use std::sync::LazyLock;

use conveyor_core::{Fetch, Job, JobId};
use rusqlite::{named_params, Transaction};

use crate::error::{Result, SqliteError};

const PROMOTE_DUE: &str = include_str!("../sql/promote_due.sql");
const CLAIM_CANDIDATES: &str = include_str!("../sql/claim_candidates.sql");
const CLAIM: &str = include_str!("../sql/claim.sql");
const QUARANTINE: &str = include_str!("../sql/quarantine.sql");

/// The statement text of a `.sql` file without its comment lines, for composing statements.
fn body(sql: &str) -> String {
    sql.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Candidates of one queue, with their sort columns, for merging several queues.
static CANDIDATES_OF_QUEUE: LazyLock<String> = LazyLock::new(|| {
    body(CLAIM_CANDIDATES)
        .replace("{columns}", "seq, priority, run_at")
        .replace("{queue_filter}", "AND queue = :queue")
});
/// Claims the best candidates of every queue in one statement.
static CLAIM_ANY_QUEUE: LazyLock<String> = LazyLock::new(|| {
    let candidates = body(CLAIM_CANDIDATES)
        .replace("{columns}", "seq")
        .replace("{queue_filter}", "");
    body(CLAIM).replace("{candidates}", &candidates)
});
/// Claims the given seqs (a JSON array).
static CLAIM_SEQS: LazyLock<String> =
    LazyLock::new(|| body(CLAIM).replace("{candidates}", "SELECT value FROM json_each(:seqs)"));

/// Seqs of the best candidates across `queues`: one indexed query per queue, merged here (an
/// IN list would make SQLite sort every available row of those queues).
fn candidates_per_queue(tx: &Transaction<'_>, queues: &[String], limit: usize) -> Result<Vec<i64>> {
    let mut stmt = tx.prepare_cached(&CANDIDATES_OF_QUEUE)?;
    let mut found: Vec<(i32, i64, i64)> = Vec::new();
    for queue in queues {
        let rows = stmt.query_map(
            named_params! {":limit": limit as i64, ":queue": queue},
            // A sort column of the wrong type (a row from another producer) sorts as 0: the
            // row is still claimed, and quarantined, instead of failing every fetch.
            |r| Ok((sort_key(r, 1), sort_key(r, 2), r.get(0)?)),
        )?;
        for row in rows {
            found.push(row?);
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    Ok(found
        .into_iter()
        .take(limit)
        .map(|(_, _, seq)| seq)
        .collect())
}

/// A claimed row that could not be read.
struct Unreadable {
    seq: i64,
    /// The row's id as stored (it may be what could not be read).
    id: Option<String>,
    error: String,
}

/// Leases up to `fetch.limit` due jobs, in fetch order (highest priority, earliest, oldest).
pub(crate) fn claim(
    tx: &Transaction<'_>,
    fetch: &Fetch,
    lease_ms: i64,
    now: i64,
) -> Result<Vec<Job>> {
    tx.prepare_cached(PROMOTE_DUE)?.execute([now])?;
    let expires = now + lease_ms;
    let mut claimed: Vec<(i32, i64, i64, Job)> = Vec::with_capacity(fetch.limit);
    let mut unreadable: Vec<Unreadable> = Vec::new();
    let mut collect = |rows: &mut rusqlite::Rows<'_>| -> Result<()> {
        while let Some(row) = rows.next()? {
            // seq is the INTEGER PRIMARY KEY: always readable, so a bad row can be named.
            let seq: i64 = row.get(10)?;
            match crate::rows::leased_job(row) {
                Ok(job) => claimed.push((sort_key(row, 8), sort_key(row, 9), seq, job)),
                Err(error) => unreadable.push(Unreadable {
                    seq,
                    id: row.get::<_, String>(0).ok(),
                    error,
                }),
            }
        }
        Ok(())
    };
    if fetch.queues.is_empty() {
        let mut stmt = tx.prepare_cached(&CLAIM_ANY_QUEUE)?;
        let params = named_params! {":limit": fetch.limit as i64, ":owner": fetch.owner, ":expires": expires};
        collect(&mut stmt.query(params)?)?;
    } else {
        let seqs = candidates_per_queue(tx, &fetch.queues, fetch.limit)?;
        let seqs = serde_json::to_string(&seqs).map_err(|e| SqliteError::Corrupt(e.to_string()))?;
        let mut stmt = tx.prepare_cached(&CLAIM_SEQS)?;
        let params = named_params! {":seqs": seqs, ":owner": fetch.owner, ":expires": expires};
        collect(&mut stmt.query(params)?)?;
    }
    for row in unreadable {
        quarantine(tx, row, now)?;
    }
    // RETURNING gives no order: restore fetch order so the best jobs start first.
    claimed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    Ok(claimed.into_iter().map(|(_, _, _, job)| job).collect())
}

/// A sort column of a row; a value of another type sorts as 0 rather than failing.
fn sort_key<T: rusqlite::types::FromSql + Default>(row: &rusqlite::Row<'_>, index: usize) -> T {
    row.get(index).unwrap_or_default()
}

/// Dead-letters a row that cannot be read, with the reason, and makes it readable for the
/// dead-letter list: an id that is not a canonical job id is replaced (the original is kept in
/// the error), values of the wrong type are replaced by defaults.
fn quarantine(tx: &Transaction<'_>, row: Unreadable, now: i64) -> Result<()> {
    let parsed = row.id.as_deref().and_then(|text| {
        text.parse::<JobId>()
            .ok()
            .filter(|id| id.to_string() == text)
    });
    let id = parsed.unwrap_or_default();
    let stored = match &row.id {
        Some(text) if parsed.is_none() => format!("; stored under the new id {id} (was {text:?})"),
        _ => String::new(),
    };
    let error = format!("unreadable job row: {}{stored}", row.error);
    tracing::error!(seq = row.seq, %id, %error, "quarantined an unreadable job row: dead-lettered");
    tx.prepare_cached(QUARANTINE)?.execute(named_params! {
        ":seq": row.seq,
        ":id": id.to_string(),
        ":error": error,
        ":now": now,
    })?;
    Ok(())
}
