-- Due jobs in fetch order. A job with an ordering key is a candidate only when no earlier job
-- of that key is unfinished, so each key runs one job at a time in enqueue order.
-- {queue_filter} is replaced by "" (all queues) or "AND queue = ?2".
SELECT seq, priority, run_at
FROM jobs
WHERE state = 'available' {queue_filter}
  AND (ordering_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM jobs AS prior
        WHERE prior.ordering_key = jobs.ordering_key
          AND prior.seq < jobs.seq
          AND prior.state IN ('scheduled', 'available', 'running', 'retryable')))
ORDER BY priority DESC, run_at, seq
LIMIT ?1
