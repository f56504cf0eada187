-- The public view of jobs; a scheduled job whose time has come shows as available. The last
-- column, seq, is for the cursors of job lists (listing.rs).
SELECT id, kind, queue,
       CASE WHEN state = 'scheduled' AND run_at <= ?1 THEN 'available' ELSE state END,
       attempt, max_attempts, priority, run_at, created_at, finished_at, last_error, errored_at,
       progress, payload, idempotency_key, ordering_key, cancel_requested, replay_of, seq
FROM jobs
