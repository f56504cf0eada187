-- One new job. Any uniqueness conflict (same id or same idempotency key) stores nothing, and so
-- does a key that named a job deleted less than key_retention ago (?14: the oldest retirement
-- time still honoured); the caller then reads the existing job and reports a duplicate.
INSERT INTO jobs (id, kind, queue, payload, state, priority, max_attempts, run_at, created_at,
                  timeout_ms, backoff, idempotency_key, ordering_key, replay_of, traceparent)
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?15, ?16
WHERE ?12 IS NULL OR NOT EXISTS (
    SELECT 1 FROM retired_keys WHERE idempotency_key = ?12 AND retired_at >= ?14)
ON CONFLICT DO NOTHING
