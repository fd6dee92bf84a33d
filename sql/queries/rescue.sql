-- Deliveries whose relay stopped reporting (crashed, lost its connection) before the lease ran out:
-- log the abandoned attempt and queue the delivery again. The next claim gives it the next attempt
-- number and the same webhook-id. Deliveries whose budget is spent die instead. Returns each
-- delivery taken over, its webhook and whether it died.
-- $1 batch size
WITH expired AS (
    SELECT d.id, d.attempts, d.attempts_base, d.lease_owner, d.updated_at AS claimed_at,
           coalesce(w.max_attempts, 0) AS max_attempts
    FROM outbox.deliveries d
    LEFT JOIN outbox.webhooks w ON w.id = d.webhook_id
    WHERE d.status = 'in_flight' AND d.lease_until < now()
    ORDER BY d.lease_until
    LIMIT $1
    FOR NO KEY UPDATE OF d SKIP LOCKED
),
logged AS (
    INSERT INTO outbox.attempts (delivery_id, attempt, started_at, duration_ms, status, error, response, outcome)
    SELECT id, attempts, claimed_at, NULL, NULL,
           'abandoned: relay ' || coalesce(lease_owner, '?') || ' did not report the result before its lease expired',
           NULL, 'abandoned'
    FROM expired
    ON CONFLICT (delivery_id, attempt) DO NOTHING
),
requeued AS (
    UPDATE outbox.deliveries d
    SET status = 'pending', next_attempt_at = now(), lease_owner = NULL, lease_until = NULL,
        last_status = NULL, last_error = 'attempt ' || x.attempts || ' abandoned: its relay did not report back',
        last_response = NULL, updated_at = now()
    FROM expired x
    WHERE d.id = x.id AND x.attempts - x.attempts_base < x.max_attempts
    RETURNING d.id, d.webhook
),
died AS (
    DELETE FROM outbox.deliveries d
    USING expired x
    WHERE d.id = x.id AND x.attempts - x.attempts_base >= x.max_attempts
    RETURNING d.*
),
moved AS (
    INSERT INTO outbox.deliveries_done
        (id, webhook_id, webhook, event_id, event_type, entity, entity_id, status, attempts, attempts_base,
         priority, coalescing, ordered, coalesced, created_at, updated_at, last_status, last_error, last_response)
    SELECT f.id, f.webhook_id, f.webhook, f.event_id, f.event_type, f.entity, f.entity_id, 'dead',
           f.attempts, f.attempts_base, f.priority, f.coalescing, f.ordered, f.coalesced, f.created_at, now(),
           NULL, 'attempt ' || f.attempts || ' abandoned: its relay did not report back', NULL
    FROM died f
)
SELECT id, false AS dead, webhook FROM requeued
UNION ALL
SELECT id, true AS dead, webhook FROM died
