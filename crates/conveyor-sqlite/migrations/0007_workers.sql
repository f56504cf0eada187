-- Conveyor SQLite schema, version 7. Documented in docs/sqlite-schema.md.

-- The workers connected to this file: one row per worker process, written by its heartbeat
-- (also while it is idle) and deleted when it leaves. A row past its expires_at (its worker's
-- lease: three missed heartbeats, by the writer's own settings) belongs to a worker killed
-- without leaving: it is no longer listed, and any worker's heartbeat deletes it an hour
-- later. What a worker runs is not stored here: it is read from the leases it holds.
CREATE TABLE workers (
    owner      TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,  -- ms since the epoch, first heartbeat
    seen_at    INTEGER NOT NULL,  -- ms since the epoch, last heartbeat
    expires_at INTEGER NOT NULL   -- ms since the epoch, when it stops being listed
) WITHOUT ROWID;
