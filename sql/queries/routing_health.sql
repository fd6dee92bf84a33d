-- For /readyz: whether committed events wait to be routed, and how many seconds ago routing last
-- made progress (the router row changes with every page routed and every window opened, even
-- when idle; a failed page rolls back and changes nothing).
--
-- An event waits if the previous window's snapshot does not include it and it comes after the
-- cursor: the same two index range scans as route_page.sql (transactions still running at the
-- previous snapshot, and everything from its xmax on), each stopping at the first row.
WITH r AS MATERIALIZED (
    SELECT prev_snapshot, cursor_txid, cursor_id, updated_at FROM outbox.router WHERE id = 1
)
SELECT
    EXISTS (
        SELECT 1 FROM outbox.events e
        WHERE e.txid = ANY (ARRAY(SELECT pg_snapshot_xip((SELECT prev_snapshot FROM r))))
          AND (e.txid, e.id) > ((SELECT cursor_txid FROM r), (SELECT cursor_id FROM r))
    ) OR EXISTS (
        SELECT 1 FROM outbox.events e
        WHERE e.txid >= (SELECT pg_snapshot_xmax(prev_snapshot) FROM r)
          AND (e.txid, e.id) > ((SELECT cursor_txid FROM r), (SELECT cursor_id FROM r))
    ) AS waiting,
    (SELECT extract(epoch FROM now() - updated_at)::float8 FROM r) AS since_progress
