-- Stores many completed attempts at once (the common outcome), under the same guard as
-- record_outcome.sql: the worker must still hold the lease of that attempt.
-- :done is a JSON array of [id, attempt] pairs.
UPDATE jobs
SET state = 'completed', finished_at = :now, lease_owner = NULL, lease_expires_at = NULL
WHERE lease_owner = :owner AND state = 'running'
  AND (id, attempt) IN (SELECT value ->> 0, value ->> 1 FROM json_each(:done))
