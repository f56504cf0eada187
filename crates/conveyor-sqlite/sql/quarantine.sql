-- Dead-letters a claimed row that cannot be read (written by another producer with a value of
-- the wrong type or form), and makes it readable for the dead-letter list and `conveyor job`:
-- the id becomes :id (the canonical id, or a new one when the stored id is not a job id),
-- bytes become hex text, values of the wrong type become defaults. The error names the column
-- and the original id.
UPDATE jobs
SET state            = 'dead',
    id               = :id,
    kind             = CASE WHEN typeof(kind) = 'blob' THEN hex(kind) ELSE CAST(kind AS TEXT) END,
    queue            = CASE WHEN typeof(queue) = 'blob' THEN hex(queue) ELSE CAST(queue AS TEXT) END,
    payload          = CASE WHEN typeof(payload) = 'blob' THEN hex(payload) ELSE CAST(payload AS TEXT) END,
    progress         = CASE WHEN typeof(progress) = 'blob' THEN hex(progress) ELSE CAST(progress AS TEXT) END,
    idempotency_key  = CASE WHEN typeof(idempotency_key) = 'blob' THEN hex(idempotency_key)
                            ELSE CAST(idempotency_key AS TEXT) END,
    ordering_key     = CASE WHEN typeof(ordering_key) = 'blob' THEN hex(ordering_key)
                            ELSE CAST(ordering_key AS TEXT) END,
    cancel_requested = CASE WHEN cancel_requested = 1 THEN 1 ELSE 0 END,
    attempt          = CASE WHEN typeof(attempt) = 'integer' AND attempt BETWEEN 0 AND 4294967295
                            THEN attempt ELSE 0 END,
    max_attempts     = CASE WHEN typeof(max_attempts) = 'integer' AND max_attempts BETWEEN 1 AND 4294967295
                            THEN max_attempts ELSE 1 END,
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
