-- Dead-letters a claimed row that cannot be read (written by another producer with a value of
-- the wrong type or form), and makes it readable for the dead-letter list and `conveyor job`:
-- the id becomes :id (the canonical id, or a new one when the stored id is not a job id),
-- values of the wrong type become defaults. The error names the column and the original id.
UPDATE jobs
SET state            = 'dead',
    id               = :id,
    kind             = CAST(kind AS TEXT),
    queue            = CAST(queue AS TEXT),
    payload          = CAST(payload AS TEXT),
    attempt          = CASE WHEN typeof(attempt) = 'integer' AND attempt BETWEEN 0 AND 4294967295
                            THEN attempt ELSE 0 END,
    max_attempts     = CASE WHEN typeof(max_attempts) = 'integer' AND max_attempts BETWEEN 0 AND 4294967295
                            THEN max_attempts ELSE 0 END,
    priority         = CASE WHEN typeof(priority) = 'integer' AND priority BETWEEN -2147483648 AND 2147483647
                            THEN priority ELSE 0 END,
    run_at           = CASE WHEN typeof(run_at) = 'integer' THEN run_at ELSE :now END,
    created_at       = CASE WHEN typeof(created_at) = 'integer' THEN created_at ELSE :now END,
    timeout_ms       = CASE WHEN typeof(timeout_ms) = 'integer' THEN timeout_ms ELSE NULL END,
    finished_at      = :now,
    last_error       = :error,
    errored_at       = :now,
    lease_owner      = NULL,
    lease_expires_at = NULL
WHERE seq = :seq
