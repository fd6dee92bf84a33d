-- Rerouting, step 3: webhooks that already have a delivery of this event (queued or finished), so
-- a reroute never creates a second one. $1 event id
SELECT webhook_id FROM outbox.deliveries WHERE event_id = $1
UNION
SELECT webhook_id FROM outbox.deliveries_done WHERE event_id = $1
