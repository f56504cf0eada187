-- The jobs of a queue `conveyor replay` runs again: enqueued at or after ?3 and come due
-- (whatever became of them), in enqueue order. Columns as export_jobs.sql, but the attempts
-- allowed are those the job was enqueued with (a dead-letter retry raises max_attempts).
SELECT id, kind, queue,
       CASE WHEN state = 'scheduled' AND run_at <= ?1 THEN 'available' ELSE state END,
       attempt, COALESCE(attempt_budget, max_attempts), priority, run_at, created_at, finished_at, last_error, errored_at,
       progress, payload, idempotency_key, ordering_key, cancel_requested, replay_of,
       timeout_ms, backoff
FROM jobs
WHERE queue = ?2 AND created_at >= ?3 AND NOT (state = 'scheduled' AND run_at > ?1)
ORDER BY seq
