-- Puts dead jobs back with a fresh set of attempts (as many as at enqueue). The attempt count
-- is not reset: attempt numbers never repeat, so a late report of an earlier attempt can never
-- match the new lease. A retried job goes to the back of its ordering key's line (a new seq,
-- after every other row, retried jobs keeping their order): a later job of its key may be
-- running, and the key must still run one job at a time.
-- The caller appends "AND id = ?2" to retry one job.
UPDATE jobs
SET seq              = seq + (SELECT max(seq) FROM jobs),
    state            = 'available',
    attempt_budget   = COALESCE(attempt_budget, max_attempts),
    max_attempts     = attempt + COALESCE(attempt_budget, max_attempts),
    run_at           = ?1,
    finished_at      = NULL,
    cancel_requested = 0,
    lease_owner      = NULL,
    lease_expires_at = NULL
WHERE state = 'dead'
