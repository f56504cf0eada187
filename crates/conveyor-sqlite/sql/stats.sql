-- Job counts per queue and public state.
SELECT queue,
       CASE WHEN state = 'scheduled' AND run_at <= ?1 THEN 'available' ELSE state END AS public_state,
       count(*)
FROM jobs
GROUP BY queue, public_state
ORDER BY queue
