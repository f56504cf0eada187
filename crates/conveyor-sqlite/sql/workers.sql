-- The connected workers (not expired at ?1, ms) with the jobs each holds the lease of, per
-- queue; one row per worker and queue (queue NULL for a worker running nothing). The running
-- jobs are counted from jobs_leases (running rows only), never from a walk of the table.
SELECT w.owner, w.started_at, w.seen_at, r.queue, coalesce(r.n, 0)
FROM workers w
LEFT JOIN (
    SELECT lease_owner, queue, count(*) AS n
    FROM jobs INDEXED BY jobs_leases
    WHERE state = 'running'
    GROUP BY lease_owner, queue
) r ON r.lease_owner = w.owner
WHERE w.expires_at >= ?1
ORDER BY w.owner, r.queue
