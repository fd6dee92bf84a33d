-- How many deliveries of the given webhooks are due right now, counting no further than $2.
-- The router pauses while this is at its high-water mark, so a large backlog waits in
-- outbox.events (append-only, costs nothing to keep) instead of bloating the hot queue table.
-- $1 webhook ids, $2 count limit
SELECT count(*)
FROM (
    SELECT 1
    FROM outbox.deliveries d
    WHERE d.webhook_id = ANY($1::bigint[]) AND d.status = 'pending' AND d.next_attempt_at <= now()
    LIMIT $2
) due
