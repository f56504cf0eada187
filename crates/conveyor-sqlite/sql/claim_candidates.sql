-- Due jobs in fetch order. A job with an ordering key is a candidate only when no earlier job
-- of that key is unfinished, so each key runs one job at a time in enqueue order.
-- {columns} is "seq" (inside claim.sql) or "seq, priority, run_at" (per-queue merge);
-- {queue_filter} is "" (all queues) or "AND queue = :queue" (one queue).
SELECT {columns}
FROM jobs
WHERE state = 'available' {queue_filter}
  AND (ordering_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM jobs AS prior
        WHERE prior.ordering_key = jobs.ordering_key
          AND prior.seq < jobs.seq
          AND prior.state IN ('scheduled', 'available', 'running', 'retryable')))
ORDER BY priority DESC, run_at, seq
LIMIT :limit
