-- Jobs that can move to another engine (`conveyor migrate`), in enqueue order: every job
-- neither running nor finished, and the dead letters. Columns as select_job.sql, then the
-- job's own timeout and backoff.
SELECT id, kind, queue,
       CASE WHEN state = 'scheduled' AND run_at <= ?1 THEN 'available' ELSE state END,
       attempt, max_attempts, priority, run_at, created_at, finished_at, last_error, errored_at,
       progress, payload, idempotency_key, ordering_key, cancel_requested, replay_of,
       timeout_ms, backoff
FROM jobs
WHERE state IN ('scheduled', 'available', 'retryable', 'dead')
ORDER BY seq
LIMIT ?2
