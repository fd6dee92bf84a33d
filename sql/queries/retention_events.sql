-- Retention, part 2: events older than $1 that were routed and that no delivery refers to any more
-- (hot or finished: a dead delivery keeps its event so it can be retried), and that is not set aside
-- as unroutable (it may be rerouted). An event was routed iff its
-- transaction is visible in outbox.router.prev_snapshot: every earlier routing window is complete, while
-- the current window may be half routed and later events are not routed at all; so an event is never
-- deleted before the router has seen it.
--
-- The walk goes through events by id, one batch of $3 after the last event examined ($2), and the
-- relay remembers where it got to: an event it passes is never examined again. So the walk stops
-- (blocked) at the first event that could still become deletable by waiting: one newer than the
-- cutoff, or not routed yet. Events it passes because a delivery still needs them go with their
-- last delivery (retention_deliveries.sql). Both lookups of "a delivery needs it" are index probes,
-- and rows are picked by `= ANY (ARRAY(...))`, index lookups whatever the planner thinks of the
-- tables' sizes.
--
-- Returns (last event examined, NULL if there were none; whether the walk is blocked; events
-- examined; events read; deleted).
-- $1 cutoff (timestamptz), $2 last event examined, $3 batch size
WITH scanned AS (
    SELECT e.id, e.txid, e.created_at
    FROM outbox.events e
    WHERE e.id > $2
    ORDER BY e.id
    LIMIT $3
),
blocked AS (
    SELECT min(s.id) AS id
    FROM scanned s
    CROSS JOIN outbox.router r
    WHERE r.id = 1
      AND (s.created_at >= $1 OR NOT pg_visible_in_snapshot(s.txid, r.prev_snapshot))
),
examined AS (
    SELECT s.id FROM scanned s WHERE s.id < coalesce((SELECT id FROM blocked), 9223372036854775807)
),
victims AS (
    SELECT e.id
    FROM outbox.events e
    WHERE e.id = ANY (ARRAY(SELECT id FROM examined))
      AND NOT EXISTS (SELECT 1 FROM outbox.deliveries d WHERE d.event_id = e.id)
      AND NOT EXISTS (SELECT 1 FROM outbox.deliveries_done d WHERE d.event_id = e.id)
      AND NOT EXISTS (SELECT 1 FROM outbox.unroutable_events u WHERE u.event_id = e.id)
    FOR UPDATE OF e SKIP LOCKED
),
gone AS (
    DELETE FROM outbox.events e WHERE e.id = ANY (ARRAY(SELECT id FROM victims)) RETURNING e.id
)
SELECT coalesce((SELECT id FROM blocked) - 1, (SELECT max(id) FROM scanned)),
       (SELECT id FROM blocked) IS NOT NULL,
       (SELECT count(*) FROM examined),
       (SELECT count(*) FROM scanned),
       (SELECT count(*) FROM gone)
