-- Leases the chosen jobs to a worker and starts their next attempt, in one statement.
-- {candidates} is claim_candidates.sql (all queues) or, when a worker serves a list of queues,
-- the seqs picked per queue: SELECT value FROM json_each(:seqs).
UPDATE jobs
SET state = 'running', attempt = attempt + 1, lease_owner = :owner, lease_expires_at = :expires
WHERE state = 'available' AND seq IN ({candidates})
RETURNING id, kind, queue, payload, attempt, max_attempts, timeout_ms, backoff, priority, run_at, seq,
          traceparent
