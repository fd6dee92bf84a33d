-- Rerouting, last step when it failed again: the new reason. $1 event id, $2 reason
UPDATE outbox.unroutable_events SET reason = left($2, 2000), set_aside_at = now() WHERE event_id = $1
