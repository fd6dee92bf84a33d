-- The next page of a window: events visible in snapshot $5 (cur) but not in snapshot $4 (prev), in
-- (txid, id) order after the cursor ($1, $2). A window is the xip list of the previous snapshot
-- (transactions that were still running then) plus the transaction id range [xmax(prev), xmax(cur));
-- both parts are index range scans on events_by_txid (merged with captured_events_by_txid of the
-- child table that capture() writes), so the cost of a page does not grow with the table, and a
-- long-running transaction elsewhere never makes routing rescan old events.
-- The last column is the configuration version as of the same snapshot (see outbox.config_version).
-- $1 cursor txid (text), $2 cursor id, $3 page size, $4 prev snapshot (text), $5 cur snapshot (text)
SELECT w.id, w.event_type, w.entity, w.entity_id, w.data, w.old, w.metadata, w.created_at, w.txid::text,
       cv.version
FROM (
    (SELECT e.*
     FROM outbox.events e
     WHERE e.txid = ANY (ARRAY(SELECT pg_snapshot_xip($4::text::pg_snapshot)))
       AND pg_visible_in_snapshot(e.txid, $5::text::pg_snapshot)
       AND (e.txid, e.id) > ($1::text::xid8, $2::bigint)
     ORDER BY e.txid, e.id
     LIMIT $3)
    UNION ALL
    (SELECT e.*
     FROM outbox.events e
     WHERE e.txid >= pg_snapshot_xmax($4::text::pg_snapshot)
       AND e.txid < pg_snapshot_xmax($5::text::pg_snapshot)
       AND pg_visible_in_snapshot(e.txid, $5::text::pg_snapshot)
       AND (e.txid, e.id) > ($1::text::xid8, $2::bigint)
     ORDER BY e.txid, e.id
     LIMIT $3)
) w
CROSS JOIN (SELECT version FROM outbox.config_version WHERE id = 1) cv
ORDER BY w.txid, w.id
LIMIT $3
