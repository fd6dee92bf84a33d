-- Remember how far into the current window routing has come. $1 txid (text), $2 id
UPDATE outbox.router SET cursor_txid = $1::text::xid8, cursor_id = $2, updated_at = now() WHERE id = 1
