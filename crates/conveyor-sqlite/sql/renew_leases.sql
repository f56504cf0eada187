-- Renews the leases of the jobs a worker still runs (never every lease of the owner: a job the
-- worker lost track of must expire and be rescued). Returns the renewed ids and whether a user
-- asked to cancel each; an id missing from the result is a lease the worker no longer holds.
-- ?1 owner, ?2 new expiry, ?3 JSON array of the worker's job ids.
UPDATE jobs SET lease_expires_at = ?2
WHERE lease_owner = ?1 AND state = 'running' AND id IN (SELECT value FROM json_each(?3))
RETURNING id, cancel_requested = 1
