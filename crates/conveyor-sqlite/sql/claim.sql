-- Leases one candidate to a worker and starts its next attempt.
UPDATE jobs
SET state = 'running', attempt = attempt + 1, lease_owner = ?2, lease_expires_at = ?3
WHERE seq = ?1 AND state = 'available'
RETURNING id, kind, queue, payload, attempt, max_attempts, timeout_ms, backoff
