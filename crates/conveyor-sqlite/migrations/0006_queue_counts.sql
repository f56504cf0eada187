-- Conveyor SQLite schema, version 6. Documented in docs/sqlite-schema.md.

-- Jobs per queue and state, kept by triggers, so counting them (`conveyor stats`, `/metrics`,
-- the dashboard) reads a few rows instead of every job: a file of a million jobs took about a
-- second to count, and the dashboard counted at every page load. Running jobs are counted
-- under `available`: a lease taken or given back changes no count (the workers' hottest
-- writes), and `stats` tells them apart by counting the running rows, which are few.
CREATE TABLE queue_counts (
    queue TEXT    NOT NULL,
    state TEXT    NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;

INSERT INTO queue_counts (queue, state, n)
SELECT queue, CASE state WHEN 'running' THEN 'available' ELSE state END AS bucket, count(*)
FROM jobs GROUP BY queue, bucket;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO queue_counts (queue, state, n)
    VALUES (NEW.queue, CASE NEW.state WHEN 'running' THEN 'available' ELSE NEW.state END, 1)
    ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_count_update AFTER UPDATE OF state, queue ON jobs
WHEN OLD.queue IS NOT NEW.queue
  OR CASE OLD.state WHEN 'running' THEN 'available' ELSE OLD.state END
     IS NOT CASE NEW.state WHEN 'running' THEN 'available' ELSE NEW.state END
BEGIN
    UPDATE queue_counts SET n = n - 1
    WHERE queue = OLD.queue
      AND state = CASE OLD.state WHEN 'running' THEN 'available' ELSE OLD.state END;
    INSERT INTO queue_counts (queue, state, n)
    VALUES (NEW.queue, CASE NEW.state WHEN 'running' THEN 'available' ELSE NEW.state END, 1)
    ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
BEGIN
    UPDATE queue_counts SET n = n - 1
    WHERE queue = OLD.queue
      AND state = CASE OLD.state WHEN 'running' THEN 'available' ELSE OLD.state END;
END;

-- The dead-letter list, most recent first, without reading the other jobs (dead rows are few
-- and change rarely, so the index costs the workers nothing).
CREATE INDEX jobs_dead ON jobs (finished_at DESC, seq DESC) WHERE state = 'dead';
