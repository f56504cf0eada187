-- Job counts per queue and public state, from `queue_counts` (kept by triggers, migration
-- 0006): a read of a few rows, however many jobs the file holds. A scheduled job whose time
-- has come counts as available (the next fetch stores that change); only those are counted
-- from `jobs`, through the jobs_due index.
WITH due AS (
    SELECT queue, count(*) AS n
    FROM jobs
    WHERE state IN ('scheduled', 'retryable') AND state = 'scheduled' AND run_at <= ?1
    GROUP BY queue)
SELECT queue, public_state, sum(n)
FROM (SELECT c.queue AS queue, c.state AS public_state,
             c.n - CASE WHEN c.state = 'scheduled' THEN COALESCE(d.n, 0) ELSE 0 END AS n
      FROM queue_counts AS c LEFT JOIN due AS d ON d.queue = c.queue
      UNION ALL
      SELECT queue, 'available', n FROM due)
GROUP BY queue, public_state
HAVING sum(n) > 0
ORDER BY queue
