-- Conveyor SQLite schema, version 3. Documented in docs/sqlite-schema.md.

-- Provenance of a replayed job (`conveyor replay`): the id of the job it re-runs. NULL for
-- every job enqueued otherwise; existing rows keep NULL.
ALTER TABLE jobs ADD COLUMN replay_of TEXT;
