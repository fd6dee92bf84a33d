-- Rerouting, step 1: take one listed unroutable event, so two reroutes of it wait for each other.
-- $1 event id
SELECT event_id FROM outbox.unroutable_events WHERE event_id = $1 FOR UPDATE
