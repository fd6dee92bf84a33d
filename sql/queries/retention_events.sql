-- Retention, part 2: events older than $1 that were routed and that no delivery refers to any more
-- (hot or finished: a dead delivery keeps its event so it can be retried). An event was routed iff its
-- transaction is visible in outbox.router.prev_snapshot: every earlier routing window is complete, while
-- the current window may be half routed and later events are not routed at all; so an event is never
-- deleted before the router has seen it.
-- One batch walks the next $3 events by id after $2. Ids grow with time, so the walk stops at the first
-- event newer than the cutoff (too_new > 0). Returns (last id examined, too new, deleted).
-- $1 cutoff (timestamptz), $2 last id examined, $3 batch size
WITH scanned AS (
    SELECT e.id, e.txid, e.created_at
    FROM outbox.events e
    WHERE e.id > $2
    ORDER BY e.id
    LIMIT $3
),
victims AS (
    SELECT e.id
    FROM scanned s
    JOIN outbox.events e ON e.id = s.id
    CROSS JOIN outbox.router r
    WHERE r.id = 1
      AND s.created_at < $1
      AND pg_visible_in_snapshot(s.txid, r.prev_snapshot)
      AND NOT EXISTS (SELECT 1 FROM outbox.deliveries d WHERE d.event_id = s.id)
      AND NOT EXISTS (SELECT 1 FROM outbox.deliveries_done d WHERE d.event_id = s.id)
    FOR UPDATE OF e SKIP LOCKED
),
gone AS (
    DELETE FROM outbox.events e USING victims v WHERE e.id = v.id RETURNING e.id
)
SELECT (SELECT max(id) FROM scanned),
       (SELECT count(*) FROM scanned WHERE created_at >= $1),
       (SELECT count(*) FROM gone)
