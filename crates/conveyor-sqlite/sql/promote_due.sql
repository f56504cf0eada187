-- Scheduled and retryable jobs whose time has come become available.
UPDATE jobs SET state = 'available' WHERE state IN ('scheduled', 'retryable') AND run_at <= ?1
