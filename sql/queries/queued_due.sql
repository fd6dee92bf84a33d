-- How many deliveries of the given webhooks are due right now, counting no further than $2.
-- The router pauses while this is at its high-water mark, so a large backlog waits in
-- outbox.events (append-only, costs nothing to keep) instead of bloating the hot queue table.
-- Only webhooks with queued work are looked at (a loose index scan, as in queued_webhooks.sql),
-- so the cost does not grow with the number of webhooks configured.
-- $1 webhook ids, $2 count limit
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
SELECT count(*)
FROM (
    SELECT 1
    FROM queued q
    JOIN unnest($1::bigint[]) AS w(webhook_id) ON w.webhook_id = q.webhook_id
    CROSS JOIN LATERAL (
        SELECT 1
        FROM outbox.deliveries d
        WHERE d.webhook_id = q.webhook_id AND d.status = 'pending' AND d.next_attempt_at <= now()
        LIMIT $2
    ) due
    LIMIT $2
) due
