-- The given deliveries as `deliveries retry ID...` checks them before re-queuing any: which exist,
-- their status and whether their webhook still exists. Ids that name no delivery are missing.
-- $1 delivery ids
SELECT d.id, d.status, d.webhook,
       EXISTS (SELECT 1 FROM outbox.webhooks w WHERE w.id = d.webhook_id) AS webhook_exists
FROM (
    SELECT id, status, webhook, webhook_id FROM outbox.deliveries WHERE id = ANY($1::bigint[])
    UNION ALL
    SELECT id, status, webhook, webhook_id FROM outbox.deliveries_done WHERE id = ANY($1::bigint[])
) d
ORDER BY d.id
