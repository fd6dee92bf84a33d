-- Take the routing cursor. Only one relay routes at a time; the others skip and keep sending.
SELECT cursor_txid::text, cursor_id
FROM outbox.router
WHERE id = 1
FOR UPDATE SKIP LOCKED
