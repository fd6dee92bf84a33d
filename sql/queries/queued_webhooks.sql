-- The webhooks that have anything pending, found by skipping through the deliveries_due index one
-- webhook at a time (a loose index scan): as many index probes as webhooks with queued work,
-- however many webhooks are configured and however long their queues are. With many webhooks
-- configured, the dispatcher claims only for these (claim.sql probes every webhook it is given).
WITH RECURSIVE queued AS (
    (SELECT d.webhook_id FROM outbox.deliveries d
     WHERE d.status = 'pending'
     ORDER BY d.webhook_id
     LIMIT 1)
    UNION ALL
    SELECT (SELECT d.webhook_id FROM outbox.deliveries d
            WHERE d.status = 'pending' AND d.webhook_id > q.webhook_id
            ORDER BY d.webhook_id
            LIMIT 1)
    FROM queued q
    WHERE q.webhook_id IS NOT NULL
)
SELECT webhook_id FROM queued WHERE webhook_id IS NOT NULL
