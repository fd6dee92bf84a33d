-- Record a batch of finished attempts in one statement: log every attempt, put retries back in the
-- queue, move succeeded and dead deliveries out of the hot queue, and release the next parked
-- delivery of an ordered record. Every change checks that this relay still holds the claim.
-- $1 ids, $2 attempt numbers, $3 next state (pending|succeeded|dead), $4 next attempt at,
-- $5 http status, $6 error, $7 response, $8 started at, $9 duration ms, $10 outcome, $11 lease owner
WITH r AS (
    SELECT *
    FROM unnest($1::bigint[], $2::int[], $3::text[], $4::timestamptz[], $5::int[], $6::text[], $7::text[],
                $8::timestamptz[], $9::int[], $10::text[])
        AS r(id, attempt, next_state, next_at, http_status, error, response, started_at, duration_ms, outcome)
),
logged AS (
    INSERT INTO outbox.attempts AS a (delivery_id, attempt, started_at, duration_ms, status, error, response, outcome)
    SELECT id, attempt, started_at, duration_ms, http_status, error, response, outcome FROM r
    ON CONFLICT (delivery_id, attempt) DO UPDATE
        SET started_at = EXCLUDED.started_at, duration_ms = EXCLUDED.duration_ms, status = EXCLUDED.status,
            error = EXCLUDED.error, response = EXCLUDED.response, outcome = EXCLUDED.outcome
),
retried AS (
    UPDATE outbox.deliveries d
    SET status = 'pending', next_attempt_at = r.next_at, lease_owner = NULL, lease_until = NULL,
        last_status = r.http_status, last_error = r.error, last_response = r.response, updated_at = now()
    FROM r
    WHERE r.next_state = 'pending' AND d.id = r.id AND d.status = 'in_flight'
      AND d.lease_owner = $11 AND d.attempts = r.attempt
    RETURNING d.id
),
finished AS (
    DELETE FROM outbox.deliveries d
    USING r
    WHERE r.next_state <> 'pending' AND d.id = r.id AND d.status = 'in_flight'
      AND d.lease_owner = $11 AND d.attempts = r.attempt
    RETURNING d.*, r.next_state, r.http_status, r.error, r.response
),
moved AS (
    INSERT INTO outbox.deliveries_done
        (id, webhook_id, webhook, event_id, event_type, entity, entity_id, status, attempts, attempts_base,
         priority, coalescing, ordered, coalesced, created_at, updated_at, last_status, last_error, last_response)
    SELECT f.id, f.webhook_id, f.webhook, f.event_id, f.event_type, f.entity, f.entity_id, f.next_state,
           f.attempts, f.attempts_base, f.priority, f.coalescing, f.ordered, f.coalesced, f.created_at, now(),
           f.http_status, f.error, f.response
    FROM finished f
),
released AS (
    UPDATE outbox.deliveries d
    SET next_attempt_at = now()
    FROM (
        SELECT DISTINCT ON (x.webhook_id, x.entity, x.entity_id) x.id
        FROM finished f
        JOIN outbox.deliveries x
          ON x.webhook_id = f.webhook_id AND x.entity = f.entity AND x.entity_id = f.entity_id AND x.ordered
        WHERE f.ordered AND x.id <> f.id AND x.status = 'pending' AND x.next_attempt_at IS NULL
        ORDER BY x.webhook_id, x.entity, x.entity_id, x.event_id
    ) n
    WHERE d.id = n.id
)
SELECT id FROM retried
UNION ALL
SELECT id FROM finished
