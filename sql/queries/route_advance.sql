-- The current window is exhausted: the next window is everything that committed since.
UPDATE outbox.router
SET prev_snapshot = cur_snapshot, cur_snapshot = pg_current_snapshot(),
    cursor_txid = '0', cursor_id = 0, updated_at = now()
WHERE id = 1
RETURNING prev_snapshot::text, cur_snapshot::text
