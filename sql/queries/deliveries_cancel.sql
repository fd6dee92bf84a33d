-- Cancels deliveries waiting in the queue (an operator's `Cancel`): they move to
-- outbox.deliveries_done as cancelled. One being attempted right now is left alone (its state is
-- checked in the same statement). Returns what the caller needs to let an ordered webhook's next
-- delivery of the same record go (release_next.sql).
-- $1 delivery ids
WITH gone AS (
    DELETE FROM outbox.deliveries WHERE id = ANY($1::bigint[]) AND status = 'pending' RETURNING *
)
INSERT INTO outbox.deliveries_done
    (id, webhook_id, webhook, event_id, event_type, entity, entity_id, status, attempts, attempts_base,
     priority, coalescing, ordered, coalesced, created_at, updated_at, last_status, last_error, last_response)
SELECT id, webhook_id, webhook, event_id, event_type, entity, entity_id, 'cancelled', attempts, attempts_base,
       priority, coalescing, ordered, coalesced, created_at, now(), last_status,
       coalesce(last_error || '; ', '') || 'cancelled by an operator', last_response
FROM gone
RETURNING id, webhook_id, entity, entity_id, ordered
