-- Conveyor SQLite schema, version 1. Times are milliseconds since the Unix epoch (UTC).
-- Documented in docs/sqlite-schema.md; guarded by tests/schema.rs.

CREATE TABLE jobs (
    -- Enqueue order: ordering keys run in this order. Never reused while a newer row exists.
    seq              INTEGER PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    kind             TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN
                         ('scheduled','available','running','retryable','completed','dead','cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    timeout_ms       INTEGER,
    backoff          TEXT,
    idempotency_key  TEXT,
    ordering_key     TEXT,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    errored_at       INTEGER,
    progress         TEXT
);

-- The database, not a cache, enforces idempotency: one row per key until it is cleaned up.
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Fetch order, for one queue and for all queues. Partial: a job leaves these indexes when it is
-- leased, so running and finished jobs cost the fetch path nothing.
CREATE INDEX jobs_fetch_queue ON jobs (queue, priority DESC, run_at, seq) WHERE state = 'available';
CREATE INDEX jobs_fetch_all   ON jobs (priority DESC, run_at, seq) WHERE state = 'available';

-- Scheduled and retryable jobs coming due.
CREATE INDEX jobs_due ON jobs (run_at) WHERE state IN ('scheduled', 'retryable');

-- Leases to renew, record or rescue: every running job (at most the sum of all workers'
-- concurrency), so scanning it for one owner is cheap and the key stays small.
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';

-- The unfinished jobs of each ordering key, in enqueue order.
CREATE INDEX jobs_ordering ON jobs (ordering_key, seq)
    WHERE ordering_key IS NOT NULL AND state IN ('scheduled', 'available', 'running', 'retryable');

-- Cleanup of finished jobs and the dead-letter list.
CREATE INDEX jobs_finished ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE cron_entries (
    name        TEXT    PRIMARY KEY,
    expr        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    queue       TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    next_run_at INTEGER NOT NULL,
    last_run_at INTEGER,
    created_at  INTEGER NOT NULL
);
