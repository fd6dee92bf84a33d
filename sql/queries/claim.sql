-- Claim due deliveries for the webhooks that have free slots: highest priority first, and among
-- webhooks of equal priority the one whose oldest due delivery has waited longest; oldest due
-- first within a webhook. The claim is committed before any request is sent: attempts is
-- incremented and a lease taken, so a crash can repeat an attempt but never skip one. A webhook
-- switched off in the table is not claimed for even before the relay reloads its configuration.
--
-- Durable: the relay's sessions commit asynchronously (synchronous_commit = off), but a claim must
-- be on disk before its request leaves, or a Postgres crash would forget it and the next claim
-- would send the same (webhook-id, webhook-attempt) again. `durable` switches synchronous_commit
-- on for this statement's transaction only (set_config(..., true)); the setting in force at
-- commit is what counts, and this statement is its own transaction. It is joined into the UPDATE,
-- so it runs whenever a row is claimed. Flushing the claim's WAL also flushes every earlier
-- commit, so the routing of the deliveries claimed is durable too.
-- Each webhook passed costs an index probe; with many webhooks configured the relay passes only
-- those with queued work (queued_webhooks.sql).
-- $1 webhook ids, $2 free slots per webhook, $3 lease seconds per webhook, $4 total limit, $5 owner,
-- $6 priority per webhook
WITH want AS MATERIALIZED (
    SELECT w.webhook_id, w.slots, w.lease
    FROM unnest($1::bigint[], $2::int[], $3::float8[], $6::int[]) AS w(webhook_id, slots, lease, priority)
    CROSS JOIN LATERAL (
        SELECT d.next_attempt_at, d.id
        FROM outbox.deliveries d
        WHERE d.webhook_id = w.webhook_id AND d.status = 'pending' AND d.next_attempt_at <= now()
        ORDER BY d.next_attempt_at, d.id
        LIMIT 1
    ) head
    -- paused (or switched off by a 410) since this relay last loaded its configuration; a scalar
    -- subquery, so it stays one primary-key probe per webhook with due work rather than a join
    -- that could read every webhook
    WHERE (SELECT h.active FROM outbox.webhooks h WHERE h.id = w.webhook_id)
    ORDER BY w.priority DESC, head.next_attempt_at, head.id
),
durable AS (
    SELECT set_config('synchronous_commit', 'on', true) AS setting
),
picked AS (
    SELECT q.id, w.lease
    FROM want w
    CROSS JOIN LATERAL (
        SELECT d.id
        FROM outbox.deliveries d
        WHERE d.webhook_id = w.webhook_id AND d.status = 'pending' AND d.next_attempt_at <= now()
        ORDER BY d.next_attempt_at, d.id
        LIMIT w.slots
        FOR NO KEY UPDATE SKIP LOCKED
    ) q
    LIMIT $4
)
UPDATE outbox.deliveries d
SET status = 'in_flight', attempts = d.attempts + 1, lease_owner = $5,
    lease_until = now() + make_interval(secs => p.lease), updated_at = now()
FROM picked p, outbox.events e, durable
WHERE d.id = p.id AND e.id = d.event_id
RETURNING d.id, d.webhook_id, d.attempts, d.attempts_base, e.id, e.event_type, e.entity, e.entity_id,
          e.data, e.old, e.metadata, e.created_at
