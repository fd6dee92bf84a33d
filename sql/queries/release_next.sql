-- Ordered webhooks: the records whose delivery just finished may send their next one. Makes the
-- first queued delivery of each record due, if it is parked. This runs as its own statement after
-- complete.sql, in the same transaction, so its snapshot is taken after complete.sql's deletes went
-- through: a routing transaction that parked a delivery behind a finished one holds a lock on that
-- row until it commits (route_insert.sql), so by now its parked delivery is visible here.
-- $1 webhook ids, $2 entities, $3 entity ids
UPDATE outbox.deliveries d
SET next_attempt_at = now()
FROM (
    SELECT DISTINCT ON (x.webhook_id, x.entity, x.entity_id) x.id, x.next_attempt_at
    FROM unnest($1::bigint[], $2::text[], $3::text[]) AS k(webhook_id, entity, entity_id)
    JOIN outbox.deliveries x
      ON x.webhook_id = k.webhook_id AND x.entity = k.entity AND x.entity_id = k.entity_id AND x.ordered
    ORDER BY x.webhook_id, x.entity, x.entity_id, x.event_id
) first
WHERE d.id = first.id AND first.next_attempt_at IS NULL
