-- Set events aside that cannot be routed, with the reason, and raise relay.event.unroutable for
-- each (never for relay.* events, so an alert cannot raise alerts). Runs in the routing
-- transaction, so the cursor moves past them only together with this record. The caller passes
-- each event id once. Long texts are cut to keep the listing readable.
-- $1 event ids, $2 event types, $3 entities, $4 entity ids, $5 reasons
WITH aside AS (
    INSERT INTO outbox.unroutable_events AS u (event_id, event_type, entity, entity_id, reason)
    SELECT a.event_id, left(a.event_type, 1000), left(a.entity, 1000), left(a.entity_id, 1000),
           left(a.reason, 2000)
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
        AS a(event_id, event_type, entity, entity_id, reason)
    ON CONFLICT (event_id) DO UPDATE
        SET event_type = EXCLUDED.event_type, entity = EXCLUDED.entity, entity_id = EXCLUDED.entity_id,
            reason = EXCLUDED.reason, set_aside_at = now()
    RETURNING u.event_id, u.event_type, u.entity, u.entity_id, u.reason
)
INSERT INTO outbox.events (event_type, entity, entity_id, data)
SELECT 'relay.event.unroutable', 'event', a.event_id::text,
       jsonb_build_object('event_type', a.event_type, 'entity', a.entity, 'entity_id', a.entity_id,
                          'reason', a.reason)
FROM aside a
WHERE a.event_type NOT LIKE 'relay.%'
