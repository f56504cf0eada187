-- Jobs whose worker stopped renewing the lease (crashed, killed, stalled) run again, unless
-- that was their last attempt (a job that kills its worker cannot crash-loop forever) or a user
-- asked to cancel them (a cancelled job never runs again).
UPDATE jobs
SET state            = CASE WHEN cancel_requested = 1 THEN 'cancelled'
                            WHEN attempt >= max_attempts THEN 'dead'
                            ELSE 'available' END,
    finished_at      = CASE WHEN cancel_requested = 1 OR attempt >= max_attempts THEN ?1 ELSE NULL END,
    run_at           = ?1,
    last_error       = 'lease expired: the worker running attempt ' || attempt || ' stopped renewing it (crashed, killed or stalled)',
    errored_at       = ?1,
    lease_owner      = NULL,
    lease_expires_at = NULL
WHERE state = 'running' AND lease_expires_at < ?1
