-- A receiver answered 410 Gone to an attempt whose result was recorded while this relay still held
-- its claim: switch the webhook off (its queue waits) and raise relay.webhook.disabled.
-- $1 webhook id, $2 delivery id
WITH off AS (
    UPDATE outbox.webhooks SET active = false, updated_at = now(),
           disabled_reason = 'receiver answered 410 Gone at ' || now()::text
    WHERE id = $1 AND active RETURNING name
)
INSERT INTO outbox.events (event_type, entity, entity_id, data)
SELECT 'relay.webhook.disabled', 'webhook', name,
       jsonb_build_object('webhook', name, 'reason', '410 Gone', 'delivery_id', $2::bigint)
FROM off
