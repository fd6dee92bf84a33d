-- Retention, part 1: one batch of succeeded deliveries that finished before $1, with their attempts
-- and the events that only they still needed.
--
-- Deliveries go in the order of the index deliveries_done_expiry (updated_at, id), each batch starting
-- after the last delivery the previous one deleted, so a batch reads the rows it deletes and little
-- else however long the history is. Dead and cancelled deliveries are kept (an operator may still
-- retry them) and are not in that index. Rows another transaction holds (a `deliveries retry` in
-- progress) are skipped.
--
-- An event goes with its last delivery when it is older than $1 and routed (see
-- retention_events.sql): the event walk passed it while a delivery still needed it, and does not go
-- back. This statement still sees the deliveries it deletes, hence the `<> ALL`.
--
-- Rows are picked by `= ANY (ARRAY(...))`, index lookups whatever the planner thinks of the tables'
-- sizes (a join may choose to read a small table whole).
--
-- Returns (deliveries, attempts, events deleted, updated_at and id of the last delivery deleted).
-- $1 cutoff (timestamptz), $2 batch size, $3 updated_at and $4 id of the last delivery the previous
-- batch deleted ($3 NULL for the first batch)
WITH victims AS (
    SELECT d.id, d.updated_at
    FROM outbox.deliveries_done d
    WHERE d.status = 'succeeded' AND d.updated_at < $1
      AND (d.updated_at, d.id) > (coalesce($3::timestamptz, '-infinity'), $4::bigint)
    ORDER BY d.updated_at, d.id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
gone AS (
    DELETE FROM outbox.deliveries_done d
    WHERE d.id = ANY (ARRAY(SELECT id FROM victims))
    RETURNING d.id, d.event_id
),
gone_attempts AS (
    DELETE FROM outbox.attempts a WHERE a.delivery_id = ANY (ARRAY(SELECT id FROM gone)) RETURNING 1
),
freed AS (
    SELECT e.id
    FROM outbox.events e
    CROSS JOIN outbox.router r
    WHERE e.id = ANY (ARRAY(SELECT event_id FROM gone))
      AND r.id = 1
      AND e.created_at < $1
      AND pg_visible_in_snapshot(e.txid, r.prev_snapshot)
      AND NOT EXISTS (SELECT 1 FROM outbox.deliveries x WHERE x.event_id = e.id)
      AND NOT EXISTS (SELECT 1 FROM outbox.deliveries_done x
                      WHERE x.event_id = e.id AND x.id <> ALL (ARRAY(SELECT id FROM gone)))
      AND NOT EXISTS (SELECT 1 FROM outbox.unroutable_events u WHERE u.event_id = e.id)
    FOR UPDATE OF e SKIP LOCKED
),
gone_events AS (
    DELETE FROM outbox.events e WHERE e.id = ANY (ARRAY(SELECT id FROM freed)) RETURNING 1
),
last AS (
    SELECT updated_at, id FROM victims ORDER BY updated_at DESC, id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM gone),
       (SELECT count(*) FROM gone_attempts),
       (SELECT count(*) FROM gone_events),
       (SELECT updated_at FROM last),
       (SELECT id FROM last)
