-- Due jobs in fetch order. A job with an ordering key is flagged `blocked` while an earlier
-- job of that key is unfinished (triggers of migration 0005 keep the flag), so each key runs
-- one job at a time in enqueue order, and the fetch indexes never hold a blocked job: a
-- fetch costs the same however long a busy key's backlog is.
-- {columns} is "seq" (inside claim.sql) or "seq, priority, run_at" (per-queue merge);
-- {queue_filter} is "" (all queues) or "AND queue = :queue" (one queue).
SELECT {columns}
FROM jobs
WHERE state = 'available' AND blocked = 0 {queue_filter}
ORDER BY priority DESC, run_at, seq
LIMIT :limit
