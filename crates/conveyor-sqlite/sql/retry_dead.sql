-- Puts dead jobs back with a fresh set of attempts (as many as at enqueue). The attempt count
-- is not reset: attempt numbers never repeat, so a late report of an earlier attempt can never
-- match the new lease. A retried job goes to the back of its ordering key's line (a new seq,
-- after every other row): a later job of its key may be running, and the key must still run
-- one job at a time. ?1 now, ?2 the job id (retry all: one job at a time, in seq order).
UPDATE jobs
SET seq              = (SELECT max(seq) FROM jobs) + 1,
    state            = 'available',
    attempt_budget   = max(COALESCE(attempt_budget, max_attempts), 1),
    max_attempts     = attempt + max(COALESCE(attempt_budget, max_attempts), 1),
    run_at           = ?1,
    finished_at      = NULL,
    cancel_requested = 0,
    lease_owner      = NULL,
    lease_expires_at = NULL
WHERE state = 'dead' AND id = ?2
