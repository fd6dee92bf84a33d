-- Take the routing cursor. Only one relay routes at a time; the others skip and keep sending.
-- Returns the cursor, the window's two snapshots (as text, passed back as parameters so the page
-- query gets index range conditions) and whether producers currently NOTIFY.
SELECT cursor_txid::text, cursor_id, prev_snapshot::text, cur_snapshot::text,
       coalesce(pg_sequence_last_value('outbox.notify_wanted') = 1, false)
FROM outbox.router
WHERE id = 1
FOR UPDATE SKIP LOCKED
