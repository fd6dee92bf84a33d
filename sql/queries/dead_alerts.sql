-- Raise relay.delivery.dead for deliveries that just died (never for deliveries of relay.* events).
-- $1 delivery ids
INSERT INTO outbox.events (event_type, entity, entity_id, data)
SELECT 'relay.delivery.dead', 'delivery', d.id::text,
       jsonb_build_object('webhook', d.webhook, 'event_id', d.event_id, 'event_type', d.event_type,
                          'entity', d.entity, 'entity_id', d.entity_id, 'attempts', d.attempts,
                          'last_status', d.last_status, 'last_error', d.last_error)
FROM outbox.deliveries_done d
WHERE d.id = ANY($1::bigint[]) AND d.status = 'dead' AND d.event_type NOT LIKE 'relay.%'
