//! Jobs listed by state (`ListJobs`): keyset pages, each read through the index that already
//! holds that state's rows in a useful order (a page starts where the last ended, never by
//! skipping rows), and listing adds no index for the workers to keep up to date.
//!
//! | state | order | index |
//! |---|---|---|
//! | available | what a worker takes next (priority, run_at, seq); then scheduled jobs whose time came but no fetch promoted yet (run_at, seq); then the jobs held behind an earlier job of their ordering key (by key, seq) | `jobs_fetch_all` / `jobs_fetch_queue`, `jobs_due`, `jobs_ordering` |
//! | scheduled (not due), retryable | soonest first (run_at, seq) | `jobs_due` |
//! | running | seq | `jobs_leases` (few rows: sorted per page) |
//! | completed, dead, cancelled | newest first (finished_at, seq) | `jobs_finished` |
//!
//! With a queue, the held part walks the keyed jobs of every queue (`jobs_ordering` has no
//! queue column); the others read the queue's rows only.
//!
//! A cursor is the sort key of a page's last row, as text: `a:PRIORITY:RUN_AT:SEQ`,
//! `d:RUN_AT:SEQ`, `b:SEQ:KEY`, `t:RUN_AT:SEQ`, `s:SEQ` or `f:FINISHED_AT:SEQ`.

use async_trait::async_trait;
use conveyor_core::{now_ms, Error, JobInfo, JobPage, JobQuery, JobState, ListJobs, MAX_LIST_PAGE};
use rusqlite::types::Value;
use rusqlite::Connection;

use crate::engine::SqliteEngine;
use crate::error::Result;
use crate::rows::{job_info, SELECT_JOB};

/// Where a page starts, decoded from its cursor.
#[derive(Debug, Clone, PartialEq)]
enum Cursor {
    /// Available and unblocked, in fetch order.
    Next {
        priority: i64,
        run_at: i64,
        seq: i64,
    },
    /// Scheduled, due, not promoted yet.
    DueNow { run_at: i64, seq: i64 },
    /// Available, held behind its ordering key.
    Held { seq: i64, key: String },
    /// Scheduled or retryable.
    Due { run_at: i64, seq: i64 },
    /// Running.
    Seq { seq: i64 },
    /// Finished.
    Finished { finished_at: i64, seq: i64 },
}

impl Cursor {
    fn parse(text: &str) -> Option<Cursor> {
        let (tag, rest) = text.split_once(':')?;
        let int = |s: &str| s.parse::<i64>().ok();
        let mut parts = rest.splitn(3, ':');
        let mut next = || parts.next();
        Some(match tag {
            "a" => Cursor::Next {
                priority: int(next()?)?,
                run_at: int(next()?)?,
                seq: int(next()?)?,
            },
            "d" => Cursor::DueNow {
                run_at: int(next()?)?,
                seq: int(next()?)?,
            },
            "b" => {
                let (seq, key) = rest.split_once(':')?;
                Cursor::Held {
                    seq: int(seq)?,
                    key: key.to_string(),
                }
            }
            "t" => Cursor::Due {
                run_at: int(next()?)?,
                seq: int(next()?)?,
            },
            "s" => Cursor::Seq { seq: int(next()?)? },
            "f" => Cursor::Finished {
                finished_at: int(next()?)?,
                seq: int(next()?)?,
            },
            _ => return None,
        })
    }

    fn text(&self) -> String {
        match self {
            Cursor::Next {
                priority,
                run_at,
                seq,
            } => format!("a:{priority}:{run_at}:{seq}"),
            Cursor::DueNow { run_at, seq } => format!("d:{run_at}:{seq}"),
            Cursor::Held { seq, key } => format!("b:{seq}:{key}"),
            Cursor::Due { run_at, seq } => format!("t:{run_at}:{seq}"),
            Cursor::Seq { seq } => format!("s:{seq}"),
            Cursor::Finished { finished_at, seq } => format!("f:{finished_at}:{seq}"),
        }
    }

    /// Whether this cursor belongs to the list of `state`.
    fn fits(&self, state: JobState) -> bool {
        matches!(
            (self, state),
            (
                Cursor::Next { .. } | Cursor::DueNow { .. } | Cursor::Held { .. },
                JobState::Available
            ) | (
                Cursor::Due { .. },
                JobState::Scheduled | JobState::Retryable
            ) | (Cursor::Seq { .. }, JobState::Running)
                | (
                    Cursor::Finished { .. },
                    JobState::Completed | JobState::Dead | JobState::Cancelled
                )
        )
    }

    /// The cursor after `job` (its `seq` read with it), read by a part of `kind` of the list
    /// of `state`.
    fn after(state: JobState, kind: Kind, job: &JobInfo, seq: i64) -> Cursor {
        let ms = |t: &chrono::DateTime<chrono::Utc>| t.timestamp_millis();
        match state {
            JobState::Available if kind == Kind::Held => Cursor::Held {
                seq,
                key: job.ordering_key.clone().unwrap_or_default(),
            },
            JobState::Available if kind == Kind::DueNow => Cursor::DueNow {
                run_at: ms(&job.run_at),
                seq,
            },
            JobState::Available => Cursor::Next {
                priority: i64::from(job.priority),
                run_at: ms(&job.run_at),
                seq,
            },
            JobState::Scheduled | JobState::Retryable => Cursor::Due {
                run_at: ms(&job.run_at),
                seq,
            },
            JobState::Running => Cursor::Seq { seq },
            JobState::Completed | JobState::Dead | JobState::Cancelled => Cursor::Finished {
                finished_at: job.finished_at.as_ref().map_or(0, ms),
                seq,
            },
        }
    }
}

/// Which part of a list a row came from (the available list has three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The only part, or the available jobs a worker may take next.
    Plain,
    /// Scheduled jobs whose time came, not promoted yet.
    DueNow,
    /// Available jobs held behind an earlier job of their ordering key.
    Held,
}

/// One query of a page: the SQL after `FROM jobs` and its arguments from `?4` on (`?1` is
/// now, `?2` the limit, `?3` the queue).
struct Part {
    sql: String,
    args: Vec<Value>,
    kind: Kind,
}

fn part(index: &str, conditions: &[&str], order: &str, args: Vec<Value>, kind: Kind) -> Part {
    Part {
        sql: format!(
            " INDEXED BY {index} WHERE {} ORDER BY {order} LIMIT ?2",
            conditions.join(" AND ")
        ),
        args,
        kind,
    }
}

/// The queries that make up a page of `state` from `cursor`, run in order until the page is
/// full. The queue, when given, is always `?3`.
fn parts(state: JobState, queue: bool, cursor: Option<&Cursor>) -> Vec<Part> {
    // `?3` is always bound (NULL without a queue); `queue = ?3` is what lets the fetch index
    // of one queue serve the page.
    let q = if queue { "queue = ?3" } else { "?3 IS NULL" };
    match state {
        JobState::Available => available(queue, q, cursor),
        JobState::Scheduled | JobState::Retryable => {
            // A scheduled job whose time came is available (`select_job.sql` says so too).
            let when = match state {
                JobState::Scheduled => "run_at > ?1",
                _ => "1",
            };
            let mut conds = vec!["state IN ('scheduled', 'retryable')", "state = ?4", when, q];
            let mut args = vec![Value::Text(state.as_str().into())];
            if let Some(Cursor::Due { run_at, seq }) = cursor {
                conds.push("(run_at, seq) > (?5, ?6)");
                args.extend([Value::Integer(*run_at), Value::Integer(*seq)]);
            }
            vec![part("jobs_due", &conds, "run_at, seq", args, Kind::Plain)]
        }
        JobState::Running => {
            let mut conds = vec!["state = 'running'", q];
            let mut args = vec![];
            if let Some(Cursor::Seq { seq }) = cursor {
                conds.push("seq > ?4");
                args.push(Value::Integer(*seq));
            }
            vec![part("jobs_leases", &conds, "seq", args, Kind::Plain)]
        }
        JobState::Completed | JobState::Dead | JobState::Cancelled => {
            let mut conds = vec!["finished_at IS NOT NULL", "state = ?4", q];
            let mut args = vec![Value::Text(state.as_str().into())];
            if let Some(Cursor::Finished { finished_at, seq }) = cursor {
                conds.push("(finished_at, seq) < (?5, ?6)");
                args.extend([Value::Integer(*finished_at), Value::Integer(*seq)]);
            }
            let order = "finished_at DESC, seq DESC";
            vec![part("jobs_finished", &conds, order, args, Kind::Plain)]
        }
    }
}

/// The available list's parts from `cursor`: what workers take next, then the scheduled jobs
/// that came due, then the jobs held behind their ordering key.
fn available(queue: bool, q: &str, cursor: Option<&Cursor>) -> Vec<Part> {
    let fetch_index = if queue {
        "jobs_fetch_queue"
    } else {
        "jobs_fetch_all"
    };
    let next = "state = 'available' AND blocked = 0";
    let due = "state IN ('scheduled', 'retryable') AND state = 'scheduled' AND run_at <= ?1";
    let held = "ordering_key IS NOT NULL \
                AND state IN ('scheduled', 'available', 'running', 'retryable') \
                AND state = 'available' AND blocked = 1";
    let int = Value::Integer;
    let due_from = |after: Option<(i64, i64)>| {
        let mut conds = vec![due, q];
        let mut args = vec![];
        if let Some((run_at, seq)) = after {
            conds.push("(run_at, seq) > (?4, ?5)");
            args.extend([int(run_at), int(seq)]);
        }
        part("jobs_due", &conds, "run_at, seq", args, Kind::DueNow)
    };
    let held_from = |after: Option<(&str, i64)>| {
        let mut conds = vec![held, q];
        let mut args = vec![];
        if let Some((key, seq)) = after {
            conds.push("(ordering_key, seq) > (?4, ?5)");
            args.extend([Value::Text(key.to_string()), int(seq)]);
        }
        part(
            "jobs_ordering",
            &conds,
            "ordering_key, seq",
            args,
            Kind::Held,
        )
    };
    let fetch_order = "priority DESC, run_at, seq";
    match cursor {
        None => vec![
            part(fetch_index, &[next, q], fetch_order, vec![], Kind::Plain),
            due_from(None),
            held_from(None),
        ],
        Some(Cursor::Next {
            priority,
            run_at,
            seq,
        }) => vec![
            // The rest of this priority level, then the lower levels: each a range of the
            // index, never a walk over the rows before the cursor.
            part(
                fetch_index,
                &[next, q, "priority = ?4", "(run_at, seq) > (?5, ?6)"],
                "run_at, seq",
                vec![int(*priority), int(*run_at), int(*seq)],
                Kind::Plain,
            ),
            part(
                fetch_index,
                &[next, q, "priority < ?4"],
                fetch_order,
                vec![int(*priority)],
                Kind::Plain,
            ),
            due_from(None),
            held_from(None),
        ],
        Some(Cursor::DueNow { run_at, seq }) => {
            vec![due_from(Some((*run_at, *seq))), held_from(None)]
        }
        Some(Cursor::Held { seq, key }) => vec![held_from(Some((key, *seq)))],
        // A cursor of another state's list (refused by `page` before).
        Some(_) => Vec::new(),
    }
}

/// Reads one page.
fn page(conn: &Connection, query: &JobQuery) -> Result<JobPage> {
    let cursor = match query.after.as_deref() {
        None => None,
        Some(text) => Some(Cursor::parse(text).ok_or_else(|| bad_cursor(text))?),
    };
    if cursor.as_ref().is_some_and(|c| !c.fits(query.state)) {
        return Err(bad_cursor(query.after.as_deref().unwrap_or_default()).into());
    }
    let plan = parts(query.state, query.queue.is_some(), cursor.as_ref());
    // One more than asked: whether a next page exists, without counting.
    let want = query.limit.clamp(1, MAX_LIST_PAGE) + 1;
    let mut rows: Vec<(JobInfo, i64, Kind)> = Vec::new();
    for part in plan {
        if rows.len() >= want {
            break;
        }
        let sql = format!("{SELECT_JOB}{}", part.sql);
        let mut args = vec![
            Value::Integer(now_ms()),
            Value::Integer((want - rows.len()) as i64),
        ];
        args.push(query.queue.clone().map_or(Value::Null, Value::Text));
        args.extend(part.args);
        let mut stmt = conn.prepare_cached(&sql)?;
        let found = stmt.query_map(rusqlite::params_from_iter(args), |row| {
            Ok((job_info(row)?, row.get::<_, i64>(18)?))
        })?;
        for row in found {
            let (job, seq) = row?;
            rows.push((job, seq, part.kind));
        }
    }
    let more = rows.len() >= want;
    rows.truncate(want - 1);
    let next = rows
        .last()
        .filter(|_| more)
        .map(|(job, seq, kind)| Cursor::after(query.state, *kind, job, *seq).text());
    Ok(JobPage {
        jobs: rows.into_iter().map(|(job, _, _)| job).collect(),
        next,
    })
}

fn bad_cursor(text: &str) -> Error {
    Error::invalid(
        "after",
        format!("{text:?} is not a cursor of this list (use the `next` of the previous page)"),
    )
}

#[async_trait]
impl ListJobs for SqliteEngine {
    async fn list_jobs(&self, query: &JobQuery) -> conveyor_core::Result<JobPage> {
        let query = query.clone();
        Ok(self.store.read(move |conn| page(conn, &query)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_what_they_wrote() {
        for cursor in [
            Cursor::Next {
                priority: -3,
                run_at: 1_764_700_000_000,
                seq: 42,
            },
            Cursor::Held {
                seq: 7,
                key: "user:42:a".into(),
            },
            Cursor::Due { run_at: 5, seq: 6 },
            Cursor::DueNow { run_at: 7, seq: 8 },
            Cursor::Seq { seq: 9 },
            Cursor::Finished {
                finished_at: 11,
                seq: 12,
            },
        ] {
            assert_eq!(Cursor::parse(&cursor.text()), Some(cursor));
        }
        for bad in ["", "a", "a:1:2", "x:1", "s:one", "f:1"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
