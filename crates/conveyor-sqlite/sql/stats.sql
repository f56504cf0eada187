-- Job counts per queue and public state, from `queue_counts` (kept by triggers, migration
-- 0006): a read of a few rows, however many jobs the file holds. Its `available` includes the
-- running jobs, counted here from their rows (few: one per job a worker holds, through the
-- jobs_leases index). A scheduled job whose time has come counts as available (the next fetch
-- stores that change); those are counted from their rows too, through the jobs_due index.
WITH due AS (
    SELECT queue, count(*) AS n
    FROM jobs
    WHERE state IN ('scheduled', 'retryable') AND state = 'scheduled' AND run_at <= ?1
    GROUP BY queue),
running AS (
    SELECT queue, count(*) AS n
    FROM jobs
    WHERE state = 'running'
    GROUP BY queue)
SELECT queue, public_state, sum(n)
FROM (SELECT c.queue AS queue, c.state AS public_state,
             c.n - CASE c.state WHEN 'scheduled' THEN COALESCE(d.n, 0)
                                WHEN 'available' THEN COALESCE(r.n, 0)
                                ELSE 0 END AS n
      FROM queue_counts AS c
      LEFT JOIN due AS d ON d.queue = c.queue
      LEFT JOIN running AS r ON r.queue = c.queue
      UNION ALL
      SELECT queue, 'available', n FROM due
      UNION ALL
      SELECT queue, 'running', n FROM running)
GROUP BY queue, public_state
HAVING sum(n) > 0
ORDER BY queue
