-- Stores how an attempt ended, only if the worker still holds the lease of that attempt
-- (a rescued job may already run elsewhere). A cancel request turns a retry or a release into
-- 'cancelled': a job a user cancelled never runs again. A retry asked for at the last attempt
-- is stored as 'dead', whatever the worker decided: attempts never exceed max_attempts.
-- ?4 new state, ?5 attempts to give back (1 for a released job), ?6 next run time,
-- ?7 error, ?8 now, ?9 1 when the new state is final.
UPDATE jobs
SET state            = CASE WHEN ?4 IN ('retryable', 'available') AND cancel_requested = 1 THEN 'cancelled'
                            WHEN ?4 = 'retryable' AND attempt >= max_attempts THEN 'dead'
                            ELSE ?4 END,
    attempt          = attempt - ?5,
    run_at           = COALESCE(?6, run_at),
    last_error       = COALESCE(?7, last_error),
    errored_at       = CASE WHEN ?7 IS NULL THEN errored_at ELSE ?8 END,
    finished_at      = CASE WHEN ?9 = 1
                              OR (?4 IN ('retryable', 'available') AND cancel_requested = 1)
                              OR (?4 = 'retryable' AND attempt >= max_attempts)
                            THEN ?8 ELSE NULL END,
    lease_owner      = NULL,
    lease_expires_at = NULL
WHERE id = ?1 AND lease_owner = ?2 AND attempt = ?3 AND state = 'running'
