-- Conveyor SQLite schema, version 5. Documented in docs/sqlite-schema.md.

-- A job that waits behind an earlier unfinished job of its ordering key is flagged `blocked`,
-- and the fetch indexes hold only unblocked available jobs. Before, every fetch walked a busy
-- key's whole backlog to find that none of it could run (a hot key of 20k jobs drained at
-- ~30 jobs/s); now a fetch never sees a blocked job, and a key's backlog costs nothing until
-- its turn. Triggers keep the flag right whoever writes the rows.
ALTER TABLE jobs ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0;

UPDATE jobs SET blocked = 1
WHERE ordering_key IS NOT NULL
  AND state IN ('scheduled', 'available', 'running', 'retryable')
  AND EXISTS (SELECT 1 FROM jobs AS prior
              WHERE prior.ordering_key = jobs.ordering_key
                AND prior.seq < jobs.seq
                AND prior.state IN ('scheduled', 'available', 'running', 'retryable'));

DROP INDEX jobs_fetch_all;
DROP INDEX jobs_fetch_queue;
CREATE INDEX jobs_fetch_all ON jobs (priority DESC, run_at, seq)
    WHERE state = 'available' AND blocked = 0;
CREATE INDEX jobs_fetch_queue ON jobs (queue, priority DESC, run_at, seq)
    WHERE state = 'available' AND blocked = 0;

-- A new keyed job waits while an earlier job of its key is unfinished.
CREATE TRIGGER jobs_block_new AFTER INSERT ON jobs
WHEN NEW.ordering_key IS NOT NULL
 AND NEW.state IN ('scheduled', 'available', 'running', 'retryable')
BEGIN
    UPDATE jobs SET blocked = 1
    WHERE seq = NEW.seq
      AND EXISTS (SELECT 1 FROM jobs AS prior
                  WHERE prior.ordering_key = NEW.ordering_key
                    AND prior.seq < NEW.seq
                    AND prior.state IN ('scheduled', 'available', 'running', 'retryable'));
END;

-- A keyed job that finishes (or is deleted) may have been its key's head: the key's oldest
-- unfinished job, whichever it is now, is free to run.
CREATE TRIGGER jobs_unblock_after_finish AFTER UPDATE OF state ON jobs
WHEN OLD.ordering_key IS NOT NULL
 AND OLD.state IN ('scheduled', 'available', 'running', 'retryable')
 AND NEW.state NOT IN ('scheduled', 'available', 'running', 'retryable')
BEGIN
    UPDATE jobs SET blocked = 0
    WHERE blocked = 1
      AND seq = (SELECT min(seq) FROM jobs
                 WHERE ordering_key = OLD.ordering_key
                   AND state IN ('scheduled', 'available', 'running', 'retryable'));
END;
CREATE TRIGGER jobs_unblock_after_delete AFTER DELETE ON jobs
WHEN OLD.ordering_key IS NOT NULL
 AND OLD.state IN ('scheduled', 'available', 'running', 'retryable')
BEGIN
    UPDATE jobs SET blocked = 0
    WHERE blocked = 1
      AND seq = (SELECT min(seq) FROM jobs
                 WHERE ordering_key = OLD.ordering_key
                   AND state IN ('scheduled', 'available', 'running', 'retryable'));
END;

-- A finished keyed job put back (a dead letter retried) runs in its place again: it waits for
-- earlier unfinished jobs of its key, and later unfinished ones wait for it (one already
-- running finishes, but if it is put back it waits too).
CREATE TRIGGER jobs_block_behind_revived AFTER UPDATE OF state ON jobs
WHEN NEW.ordering_key IS NOT NULL
 AND OLD.state NOT IN ('scheduled', 'available', 'running', 'retryable')
 AND NEW.state IN ('scheduled', 'available', 'running', 'retryable')
BEGIN
    UPDATE jobs SET blocked = EXISTS (
            SELECT 1 FROM jobs AS prior
            WHERE prior.ordering_key = NEW.ordering_key
              AND prior.seq < NEW.seq
              AND prior.state IN ('scheduled', 'available', 'running', 'retryable'))
    WHERE seq = NEW.seq;
    UPDATE jobs SET blocked = 1
    WHERE ordering_key = NEW.ordering_key
      AND seq > NEW.seq
      AND state IN ('scheduled', 'available', 'running', 'retryable')
      AND blocked = 0;
END;
