-- Conveyor SQLite schema, version 4. Documented in docs/sqlite-schema.md.

-- W3C trace context of the enqueue (`traceparent`), handed to the handler so its work joins
-- the producer's trace. NULL for jobs enqueued without one; existing rows keep NULL.
ALTER TABLE jobs ADD COLUMN traceparent TEXT;
