-- Events set aside as unroutable (`outbox-relay events unrouted`), oldest first.
SELECT event_id, event_type, entity, entity_id, reason, set_aside_at
FROM outbox.unroutable_events
ORDER BY event_id
