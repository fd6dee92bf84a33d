-- The queue gauges (outbox_queue_depth, outbox_oldest_pending_age_seconds), cheap at any queue size.
-- The caller runs it with sequential scans disabled, so each part is an index scan that stops early:
-- - pending / in_flight are counted exactly up to $1 rows, from the partial indexes deliveries_due and
--   deliveries_lease; past that the caller estimates pending from estimated_rows;
-- - estimated_rows is the planner's own estimate: live-row density from the last ANALYZE times the
--   table's current size (NULL before the first ANALYZE);
-- - oldest_delivery_age: the lowest-id pending delivery (ids grow with creation; retried deliveries keep
--   theirs), read from the primary key;
-- - oldest_unrouted_age: the first committed event after the routing cursor (the (txid, id) indexes), so a
--   router that stopped or fell behind shows as a growing age even though no delivery is pending.
-- $1 count cap
SELECT
    (SELECT count(*) FROM (SELECT 1 FROM outbox.deliveries WHERE status = 'pending' LIMIT $1) p) AS pending,
    (SELECT count(*) FROM (SELECT 1 FROM outbox.deliveries WHERE status = 'in_flight' LIMIT $1) f) AS in_flight,
    (SELECT CASE WHEN c.relpages > 0 AND c.reltuples >= 0
                 THEN c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::float8)
            END
     FROM pg_class c WHERE c.oid = 'outbox.deliveries'::regclass) AS estimated_rows,
    (SELECT extract(epoch FROM now() - d.created_at)::float8
     FROM outbox.deliveries d WHERE d.status = 'pending' ORDER BY d.id LIMIT 1) AS oldest_delivery_age,
    -- (the router's values as scalar subqueries, so they bound the index scan instead of filtering it)
    (SELECT extract(epoch FROM now() - e.created_at)::float8
     FROM outbox.events e
     WHERE (e.txid, e.id) > ((SELECT r.cursor_txid FROM outbox.router r WHERE r.id = 1),
                             (SELECT r.cursor_id FROM outbox.router r WHERE r.id = 1))
       AND e.txid >= (SELECT pg_snapshot_xmax(r.prev_snapshot) FROM outbox.router r WHERE r.id = 1)
     ORDER BY e.txid, e.id LIMIT 1) AS oldest_unrouted_age
