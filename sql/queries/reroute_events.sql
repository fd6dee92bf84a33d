-- Rerouting, step 2: the event(s) with this id, columns as the router reads them. Ids are unique
-- unless an INSERT supplied its own. $1 event id
SELECT id, event_type, entity, entity_id, data, old, metadata, created_at
FROM outbox.events
WHERE id = $1
