-- Conveyor SQLite schema, version 2. Documented in docs/sqlite-schema.md.

-- Job ids are stored in one canonical form (lower-case, hyphenated, 36 characters), because
-- reports, heartbeats and look-ups match rows by that text: a row written by another producer
-- as '{3F2504E0-4F89-11D3-9A0C-0305E82C3301}' or without hyphens would otherwise never match
-- its own worker's report and stay 'running'. Rows already stored are rewritten here, new rows
-- by the trigger. Text that is not a UUID is left as it is (a worker that claims such a row
-- dead-letters it with the reason), and so is a row whose canonical id another row already has.
UPDATE OR IGNORE jobs
SET id = COALESCE(
        (SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-' || substr(h, 13, 4) || '-'
                || substr(h, 17, 4) || '-' || substr(h, 21, 12)
         FROM (SELECT replace(replace(replace(replace(lower(trim(jobs.id)), 'urn:uuid:', ''),
                                                  '{', ''), '}', ''), '-', '') AS h)
         WHERE length(h) = 32 AND h NOT GLOB '*[^0-9a-f]*'),
        id)
WHERE length(id) <> 36 OR id GLOB '*[^0-9a-f-]*';

-- A row inserted in another form whose canonical id is taken is the same job sent again (a
-- producer's retry): it is ignored, as Conveyor's own enqueue ignores a duplicate id, rather
-- than failing the INSERT on the unique id once the row below would be rewritten.
CREATE TRIGGER jobs_duplicate_id BEFORE INSERT ON jobs
WHEN (length(NEW.id) <> 36 OR NEW.id GLOB '*[^0-9a-f-]*')
 AND EXISTS (
        SELECT 1
        FROM (SELECT replace(replace(replace(replace(lower(trim(NEW.id)), 'urn:uuid:', ''),
                                             '{', ''), '}', ''), '-', '') AS h) AS form
        JOIN jobs ON jobs.id = substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-' || substr(h, 13, 4)
                               || '-' || substr(h, 17, 4) || '-' || substr(h, 21, 12)
        WHERE length(h) = 32 AND h NOT GLOB '*[^0-9a-f]*')
BEGIN
    SELECT RAISE(IGNORE);
END;

-- The WHEN clause is cheap and false for Conveyor's own inserts, which are canonical already.
CREATE TRIGGER jobs_canonical_id AFTER INSERT ON jobs
WHEN length(NEW.id) <> 36 OR NEW.id GLOB '*[^0-9a-f-]*'
BEGIN
    UPDATE jobs
    SET id = COALESCE(
            (SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-' || substr(h, 13, 4) || '-'
                    || substr(h, 17, 4) || '-' || substr(h, 21, 12)
             FROM (SELECT replace(replace(replace(replace(lower(trim(NEW.id)), 'urn:uuid:', ''),
                                                      '{', ''), '}', ''), '-', '') AS h)
             WHERE length(h) = 32 AND h NOT GLOB '*[^0-9a-f]*'),
            NEW.id)
    WHERE seq = NEW.seq;
END;

-- The attempts a job is given each time it is retried from the dead-letter list (its
-- max_attempts at enqueue); NULL until its first such retry. A retry raises max_attempts by it
-- instead of resetting the attempt count, so attempt numbers never repeat and a late report of
-- an earlier attempt can never match a new lease.
ALTER TABLE jobs ADD COLUMN attempt_budget INTEGER;

-- The idempotency keys of deleted jobs (cleanup, purge, dead-letter purge, or a DELETE by
-- another program), with the job they named: for key_retention (default 7 days) after the
-- delete, enqueueing the same key again still answers "duplicate" with that job, so a producer
-- retrying late never runs a job twice. Cleanup forgets keys older than that.
CREATE TABLE retired_keys (
    idempotency_key TEXT    PRIMARY KEY,
    job_id          TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    retired_at      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER jobs_retire_key AFTER DELETE ON jobs
WHEN OLD.idempotency_key IS NOT NULL
BEGIN
    INSERT OR REPLACE INTO retired_keys (idempotency_key, job_id, state, retired_at)
    VALUES (OLD.idempotency_key, OLD.id, OLD.state,
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
