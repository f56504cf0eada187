//! A property test of the SQLite engine: random interleavings of enqueue, fetch, report (of
//! current and of stale leases), heartbeat, lease expiry, rescue, cancel, purge and dead-letter
//! retry, on a real file, with the invariants checked after every step:
//! - no job is lost: every enqueued job is still there, unless a purge removed it, and a purge
//!   removes exactly the jobs waiting for their first attempt;
//! - no two jobs of one ordering key are leased (`running`) at once (that an attempt whose lease
//!   was lost also stops running in its worker is the worker runtime's part: tests/faults.rs);
//! - attempts never exceed `max_attempts`;
//! - a job cancelled by a user is never handed out again (unless retried from the dead-letter
//!   list);
//! - a report or heartbeat of a lease the worker no longer holds changes nothing, and the
//!   heartbeat says it is lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use conveyor_core::{Backend, Completion, Fetch, Job, JobId, NewJob, Report};
use conveyor_sqlite::{SqliteConfig, SqliteEngine, Synchronous};
use proptest::prelude::*;
use rusqlite::{Connection, OptionalExtension};
use serde_json::json;

/// Unfinished rows whose `blocked` flag disagrees with its definition.
const WRONG_BLOCKED_FLAGS: &str = "
    SELECT seq, ordering_key, state, blocked FROM jobs
    WHERE state IN ('scheduled', 'available', 'running', 'retryable')
      AND blocked <> (ordering_key IS NOT NULL AND EXISTS (
            SELECT 1 FROM jobs AS prior
            WHERE prior.ordering_key = jobs.ordering_key AND prior.seq < jobs.seq
              AND prior.state IN ('scheduled', 'available', 'running', 'retryable')))";

/// (queue, state) pairs whose kept count differs from a count of the rows (running jobs are
/// kept under `available`).
const WRONG_COUNTS: &str = "
    SELECT queue, state, counted, kept FROM (
        SELECT a.queue, a.state, a.counted, COALESCE(c.n, 0) AS kept
        FROM (SELECT queue, CASE state WHEN 'running' THEN 'available' ELSE state END AS state,
                     count(*) AS counted
              FROM jobs GROUP BY 1, 2) AS a
        LEFT JOIN queue_counts AS c ON c.queue = a.queue AND c.state = a.state
        UNION ALL
        SELECT c.queue, c.state, 0, c.n FROM queue_counts AS c
        WHERE c.n <> 0 AND NOT EXISTS (
            SELECT 1 FROM jobs WHERE jobs.queue = c.queue
              AND CASE jobs.state WHEN 'running' THEN 'available' ELSE jobs.state END = c.state))
    WHERE counted <> kept";

const OWNERS: [&str; 3] = ["w1", "w2", "w3"];
const QUEUES: [&str; 2] = ["a", "b"];

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        queue: usize,
        key: Option<u8>,
        max_attempts: u32,
    },
    Fetch {
        owner: usize,
        limit: usize,
    },
    /// The `lease`-th lease handed out so far (current or stale) reports `how`.
    Report {
        lease: usize,
        how: u8,
    },
    Heartbeat {
        owner: usize,
    },
    /// The lease of the `job`-th running job expires (its worker stalled).
    Expire {
        job: usize,
    },
    /// Another process fetches: it rescues expired leases first.
    Rescue {
        owner: usize,
    },
    Cancel {
        job: usize,
    },
    Purge {
        queue: usize,
    },
    RetryDead {
        job: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, proptest::option::of(0..2u8), 1..4u32)
            .prop_map(|(queue, key, max_attempts)| Op::Enqueue { queue, key, max_attempts }),
        4 => (0..3usize, 1..4usize).prop_map(|(owner, limit)| Op::Fetch { owner, limit }),
        4 => (any::<usize>(), 0..5u8).prop_map(|(lease, how)| Op::Report { lease, how }),
        1 => (0..3usize).prop_map(|owner| Op::Heartbeat { owner }),
        1 => any::<usize>().prop_map(|job| Op::Expire { job }),
        1 => (0..3usize).prop_map(|owner| Op::Rescue { owner }),
        1 => any::<usize>().prop_map(|job| Op::Cancel { job }),
        1 => (0..2usize).prop_map(|queue| Op::Purge { queue }),
        1 => any::<usize>().prop_map(|job| Op::RetryDead { job }),
    ]
}

/// A lease a simulated worker got from a fetch and has not reported yet.
#[derive(Debug, Clone)]
struct Lease {
    id: JobId,
    attempt: u32,
    owner: &'static str,
}

/// A row's fields that a report could change.
#[derive(Debug, Clone, PartialEq)]
struct RowState {
    state: String,
    attempt: i64,
    max_attempts: i64,
    lease_owner: Option<String>,
    run_at: i64,
    last_error: Option<String>,
}

struct World {
    _dir: tempfile::TempDir,
    config: SqliteConfig,
    engine: Arc<dyn Backend>,
    sql: Connection,
    jobs: Vec<JobId>,
    purged: HashSet<JobId>,
    leases: Vec<Lease>,
    cancelled: HashSet<JobId>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = SqliteConfig::new(dir.path().join("props.db"));
        config.synchronous = Synchronous::Normal;
        config.lease = Duration::from_secs(60);
        let engine = Arc::new(SqliteEngine::open(config.clone()).expect("open"));
        let sql = Connection::open(&config.path).expect("open sql");
        World {
            _dir: dir,
            config,
            engine,
            sql,
            jobs: Vec::new(),
            purged: HashSet::new(),
            leases: Vec::new(),
            cancelled: HashSet::new(),
        }
    }

    fn row(&self, id: JobId) -> Option<RowState> {
        self.sql
            .query_row(
                "SELECT state, attempt, max_attempts, lease_owner, run_at, last_error FROM jobs WHERE id = ?1",
                [id.to_string()],
                |r| {
                    Ok(RowState {
                        state: r.get(0)?,
                        attempt: r.get(1)?,
                        max_attempts: r.get(2)?,
                        lease_owner: r.get(3)?,
                        run_at: r.get(4)?,
                        last_error: r.get(5)?,
                    })
                },
            )
            .optional()
            .expect("read row")
    }

    fn holds(&self, lease: &Lease) -> bool {
        self.row(lease.id).is_some_and(|row| {
            row.state == "running"
                && row.attempt == i64::from(lease.attempt)
                && row.lease_owner.as_deref() == Some(lease.owner)
        })
    }

    fn pick<T: Clone>(items: &[T], i: usize) -> Option<T> {
        (!items.is_empty()).then(|| items[i % items.len()].clone())
    }

    fn ids_in(&self, states: &str) -> Vec<JobId> {
        let sql = format!("SELECT id FROM jobs WHERE state IN ({states}) ORDER BY seq");
        let mut stmt = self.sql.prepare(&sql).expect("prepare");
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .expect("query")
            .map(|id| id.expect("row").parse().expect("canonical id"))
            .collect();
        ids
    }

    async fn fetch(&mut self, engine: Arc<dyn Backend>, owner: &'static str, limit: usize) {
        let fetch = Fetch {
            owner: owner.to_string(),
            queues: Vec::new(),
            limit,
        };
        let jobs: Vec<Job> = engine.exchange(Vec::new(), &fetch).await.expect("fetch");
        for job in jobs {
            assert!(
                !self.cancelled.contains(&job.id),
                "a cancelled job was handed out again: {job:?}"
            );
            self.leases.push(Lease {
                id: job.id,
                attempt: job.attempt,
                owner,
            });
        }
    }

    async fn report(&mut self, index: usize, how: u8) {
        if self.leases.is_empty() {
            return;
        }
        let lease = self.leases.remove(index % self.leases.len());
        let completion = match how {
            0 => Completion::Completed,
            1 => Completion::Retry {
                at_ms: 0,
                error: "failed".into(),
            },
            2 => Completion::Dead {
                error: "gave up".into(),
            },
            3 => Completion::Released,
            _ => Completion::Cancelled,
        };
        let current = self.holds(&lease);
        let before = self.row(lease.id);
        let fetch = Fetch {
            owner: lease.owner.to_string(),
            queues: Vec::new(),
            limit: 0,
        };
        let report = Report {
            id: lease.id,
            attempt: lease.attempt,
            completion,
        };
        self.engine
            .exchange(vec![report], &fetch)
            .await
            .expect("report");
        if !current {
            assert_eq!(
                self.row(lease.id),
                before,
                "a report of a lease no longer held changed the job: {lease:?}"
            );
        }
    }

    async fn heartbeat(&mut self, owner: &'static str) {
        let held: Vec<Lease> = self
            .leases
            .iter()
            .filter(|l| l.owner == owner)
            .cloned()
            .collect();
        if held.is_empty() {
            return;
        }
        let holding: HashSet<JobId> = held
            .iter()
            .filter(|l| self.holds(l))
            .map(|l| l.id)
            .collect();
        let ids: Vec<JobId> = held.iter().map(|l| l.id).collect();
        let renewal = self.engine.heartbeat(owner, &ids).await.expect("heartbeat");
        for lease in &held {
            let said_lost = renewal.lost.contains(&lease.id);
            assert_eq!(
                said_lost,
                !holding.contains(&lease.id),
                "heartbeat got a lease wrong: {lease:?}, lost {:?}",
                renewal.lost
            );
        }
    }

    async fn apply(&mut self, op: Op) {
        match op {
            Op::Enqueue {
                queue,
                key,
                max_attempts,
            } => {
                let mut job = NewJob::new("noop", json!({}))
                    .queue(QUEUES[queue])
                    .max_attempts(max_attempts);
                if let Some(key) = key {
                    job = job.ordering_key(format!("k{key}"));
                }
                let id = self.engine.enqueue(job).await.expect("enqueue").id;
                self.jobs.push(id);
            }
            Op::Fetch { owner, limit } => {
                self.fetch(self.engine.clone(), OWNERS[owner], limit).await;
            }
            Op::Report { lease, how } => self.report(lease, how).await,
            Op::Heartbeat { owner } => self.heartbeat(OWNERS[owner]).await,
            Op::Expire { job } => {
                if let Some(id) = Self::pick(&self.ids_in("'running'"), job) {
                    self.sql
                        .execute(
                            "UPDATE jobs SET lease_expires_at = 0 WHERE id = ?1",
                            [id.to_string()],
                        )
                        .expect("expire");
                }
            }
            Op::Rescue { owner } => {
                // A new handle rescues at its first fetch, as another process would.
                let other: Arc<dyn Backend> =
                    Arc::new(SqliteEngine::open(self.config.clone()).expect("open"));
                self.fetch(other, OWNERS[owner], 1).await;
            }
            Op::Cancel { job } => {
                if let Some(id) = Self::pick(&self.jobs, job) {
                    if self.engine.cancel(id).await.is_ok() {
                        self.cancelled.insert(id);
                    }
                }
            }
            Op::Purge { queue } => self.purge(QUEUES[queue]).await,
            Op::RetryDead { job } => {
                if let Some(id) = Self::pick(&self.ids_in("'dead'"), job) {
                    self.engine.retry_dead(id).await.expect("retry dead");
                    self.cancelled.remove(&id);
                }
            }
        }
    }

    async fn purge(&mut self, queue: &str) {
        let waiting: HashSet<JobId> = {
            let mut stmt = self
                .sql
                .prepare("SELECT id FROM jobs WHERE queue = ?1 AND state IN ('scheduled', 'available') AND attempt = 0")
                .expect("prepare");
            let ids = stmt
                .query_map([queue], |r| r.get::<_, String>(0))
                .expect("query")
                .map(|id| id.expect("row").parse().expect("id"))
                .collect();
            ids
        };
        let removed = self.engine.purge_queue(queue).await.expect("purge");
        assert_eq!(
            removed as usize,
            waiting.len(),
            "purge removed other jobs than the waiting ones"
        );
        self.purged.extend(waiting);
    }

    fn check(&self) {
        for id in &self.jobs {
            let row = self.row(*id);
            if self.purged.contains(id) {
                assert!(row.is_none(), "purged job {id} still there");
                continue;
            }
            let row = row.unwrap_or_else(|| panic!("job {id} was lost"));
            assert!(
                row.attempt <= row.max_attempts,
                "attempts over the limit: {row:?}"
            );
        }
        let running_per_key: Vec<(String, i64)> = {
            let mut stmt = self
                .sql
                .prepare("SELECT ordering_key, count(*) FROM jobs WHERE state = 'running' AND ordering_key IS NOT NULL GROUP BY ordering_key HAVING count(*) > 1")
                .expect("prepare");
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("query")
                .map(|r| r.expect("row"))
                .collect();
            rows
        };
        assert!(
            running_per_key.is_empty(),
            "two jobs of one key run at once: {running_per_key:?}"
        );
        // The fetch trusts the `blocked` flag: it must say exactly whether an earlier job of
        // the key is unfinished (a wrong 0 breaks the order, a wrong 1 wedges the key).
        let wrong_flags: Vec<(i64, Option<String>, String, i64)> = {
            let mut stmt = self.sql.prepare(WRONG_BLOCKED_FLAGS).expect("prepare");
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .expect("query")
                .map(|r| r.expect("row"))
                .collect();
            rows
        };
        assert!(
            wrong_flags.is_empty(),
            "wrong blocked flags (seq, key, state, blocked): {wrong_flags:?}"
        );
        // Counts come from `queue_counts`, kept by triggers: they must equal a count of the rows.
        let wrong_counts: Vec<(String, String, i64, i64)> = {
            let mut stmt = self.sql.prepare(WRONG_COUNTS).expect("prepare");
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .expect("query")
                .map(|r| r.expect("row"))
                .collect();
            rows
        };
        assert!(
            wrong_counts.is_empty(),
            "queue_counts (queue, state, counted, kept): {wrong_counts:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_every_invariant(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut world = World::new();
            for op in ops {
                world.apply(op).await;
                world.check();
            }
        });
    }
}
