-- One new job. Any uniqueness conflict (same id or same idempotency key) stores nothing;
-- the caller then reads the existing job and reports a duplicate.
INSERT INTO jobs (id, kind, queue, payload, state, priority, max_attempts, run_at, created_at,
                  timeout_ms, backoff, idempotency_key, ordering_key)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
ON CONFLICT DO NOTHING
