-- Re-queue deliveries with a fresh attempt budget (`deliveries retry`). Finished deliveries move
-- back into the queue under their own id (so their webhook-id stays the same); pending ones become
-- due now. In-flight deliveries and those whose webhook was deleted are left alone. Ordered webhooks
-- keep one delivery in flight per record: a re-queued delivery of a record that still has deliveries
-- queued is parked behind them (locked as in route_insert.sql), and a parked one stays parked.
-- $1 delivery ids
WITH moved AS (
    DELETE FROM outbox.deliveries_done d
    WHERE d.id = ANY($1::bigint[])
      AND EXISTS (SELECT 1 FROM outbox.webhooks w WHERE w.id = d.webhook_id)
    RETURNING d.*
),
requeued AS (
    INSERT INTO outbox.deliveries
        (id, webhook_id, webhook, event_id, event_type, entity, entity_id, status, attempts, attempts_base,
         priority, coalescing, ordered, coalesced, created_at, updated_at, next_attempt_at,
         last_status, last_error, last_response)
    OVERRIDING SYSTEM VALUE
    SELECT m.id, m.webhook_id, m.webhook, m.event_id, m.event_type, m.entity, m.entity_id, 'pending',
           m.attempts, m.attempts, m.priority, false, m.ordered, m.coalesced, m.created_at, now(),
           CASE WHEN m.ordered AND (
                    row_number() OVER (PARTITION BY m.webhook_id, m.entity, m.entity_id ORDER BY m.event_id) > 1
                    OR EXISTS (
                        SELECT 1 FROM outbox.deliveries x
                        WHERE x.webhook_id = m.webhook_id AND x.entity = m.entity
                          AND x.entity_id = m.entity_id AND x.ordered
                        FOR KEY SHARE SKIP LOCKED))
                THEN NULL ELSE now() END,
           m.last_status, m.last_error, m.last_response
    FROM moved m
    RETURNING id
),
bumped AS (
    UPDATE outbox.deliveries
    SET next_attempt_at = CASE WHEN next_attempt_at IS NULL THEN NULL ELSE now() END,
        attempts_base = attempts, updated_at = now()
    WHERE id = ANY($1::bigint[]) AND status = 'pending'
    RETURNING id
)
SELECT id FROM requeued
UNION ALL
SELECT id FROM bumped
