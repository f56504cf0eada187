//! The raw storage ceiling: the fastest plain SQLite loops we can write for the same work,
//! on the same kind of file with the same durability, measured in the same run.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use rusqlite::{params, Connection, TransactionBehavior};

fn connect(path: &Path, synchronous: &str) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS raw_jobs (id INTEGER PRIMARY KEY, state INTEGER NOT NULL, payload TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS raw_jobs_state ON raw_jobs (state, id);",
    )?;
    Ok(conn)
}

/// Jobs per second of a batched claim + complete loop: each transaction completes the
/// previous batch and claims the next `batch` rows, as a worker does.
pub fn burn_down(path: &Path, synchronous: &str, jobs: usize, batch: usize) -> Result<f64> {
    let mut conn = connect(path, synchronous)?;
    {
        let tx = conn.transaction()?;
        let mut insert = tx.prepare("INSERT INTO raw_jobs (state, payload) VALUES (0, '{}')")?;
        for _ in 0..jobs {
            insert.execute([])?;
        }
        drop(insert);
        tx.commit()?;
    }
    let started = Instant::now();
    let mut claimed: Vec<i64> = Vec::new();
    let mut done = 0usize;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut complete = tx.prepare_cached("UPDATE raw_jobs SET state = 2 WHERE id = ?1")?;
            for id in claimed.drain(..) {
                complete.execute([id])?;
                done += 1;
            }
            let mut claim = tx.prepare_cached(
                "UPDATE raw_jobs SET state = 1 WHERE id IN \
                 (SELECT id FROM raw_jobs WHERE state = 0 ORDER BY id LIMIT ?1) RETURNING id, payload",
            )?;
            // The payload is read too: a worker cannot run a job without it.
            let rows = claim.query_map([batch as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                claimed.push(row?.0);
            }
        }
        tx.commit()?;
        if claimed.is_empty() && done >= jobs {
            break;
        }
    }
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

/// Round trips per second of a sequential insert-one then claim-it loop (two transactions,
/// as an enqueue and a fetch are).
pub fn round_trip(path: &Path, synchronous: &str, jobs: usize) -> Result<f64> {
    let conn = connect(path, synchronous)?;
    let started = Instant::now();
    for _ in 0..jobs {
        conn.execute("INSERT INTO raw_jobs (state, payload) VALUES (0, '{}')", [])?;
        let id = conn.last_insert_rowid();
        conn.execute("UPDATE raw_jobs SET state = 1 WHERE id = ?1", params![id])?;
    }
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}
