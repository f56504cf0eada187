-- A worker's heartbeat: it is connected. ?1 owner, ?2 now (ms), ?3 when it stops being
-- listed unless it beats again (ms).
INSERT INTO workers (owner, started_at, seen_at, expires_at) VALUES (?1, ?2, ?2, ?3)
ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at, expires_at = excluded.expires_at
