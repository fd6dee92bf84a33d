-- Re-queue deliveries with a fresh attempt budget (`deliveries retry`). Finished deliveries move
-- back into the queue under their own id (so their webhook-id stays the same); pending ones become
-- due now. In-flight deliveries and those whose webhook was deleted are left alone.
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
    SELECT id, webhook_id, webhook, event_id, event_type, entity, entity_id, 'pending', attempts, attempts,
           priority, false, ordered, coalesced, created_at, now(), now(),
           last_status, last_error, last_response
    FROM moved
    RETURNING id
),
bumped AS (
    UPDATE outbox.deliveries
    SET next_attempt_at = now(), attempts_base = attempts, updated_at = now()
    WHERE id = ANY($1::bigint[]) AND status = 'pending'
    RETURNING id
)
SELECT id FROM requeued
UNION ALL
SELECT id FROM bumped
