-- The next page of the current window: events visible in cur_snapshot but not in prev_snapshot, in
-- (txid, id) order after the cursor. A window is the xip list of the previous snapshot (transactions
-- that were still running) plus the transaction id range [xmax(prev), xmax(cur)); both parts are
-- index range scans, so a long-running transaction elsewhere never makes routing rescan old events.
-- $1 cursor txid (text), $2 cursor id, $3 page size
WITH st AS (SELECT prev_snapshot AS p, cur_snapshot AS c FROM outbox.router WHERE id = 1)
SELECT w.id, w.event_type, w.entity, w.entity_id, w.data, w.old, w.metadata, w.created_at, w.txid::text
FROM (
    (SELECT e.*
     FROM st, outbox.events e
     WHERE e.txid IN (SELECT pg_snapshot_xip(st.p))
       AND pg_visible_in_snapshot(e.txid, st.c)
       AND (e.txid, e.id) > ($1::text::xid8, $2::bigint)
     ORDER BY e.txid, e.id
     LIMIT $3)
    UNION ALL
    (SELECT e.*
     FROM st, outbox.events e
     WHERE e.txid >= pg_snapshot_xmax(st.p)
       AND e.txid < pg_snapshot_xmax(st.c)
       AND pg_visible_in_snapshot(e.txid, st.c)
       AND (e.txid, e.id) > ($1::text::xid8, $2::bigint)
     ORDER BY e.txid, e.id
     LIMIT $3)
) w
ORDER BY w.txid, w.id
LIMIT $3
