-- Rerouting, last step: the event is routed (or gone): off the list. $1 event id
DELETE FROM outbox.unroutable_events WHERE event_id = $1
