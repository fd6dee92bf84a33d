-- Record a batch of finished attempts in one statement: log every attempt, put retries back in the
-- queue, move succeeded and dead deliveries out of the hot queue, and give back claims that were
-- never used (`released`: nothing was sent, so the attempt counter goes back and no attempt is
-- logged). Every change checks that this relay still holds the claim: a result that comes after
-- another relay took the delivery over changes nothing but its own attempt's log row. The caller
-- passes each (delivery, attempt) once. Returns the deliveries changed; for finished deliveries of
-- ordered webhooks also their record, whose next parked delivery release_next.sql then makes due.
--
-- The claim is checked as "still leased by this relay for this attempt number": a lease (lease_until
-- set) exists only while a delivery is in flight. The check deliberately does not say
-- status = 'in_flight': that would let the planner drive the join from the in-flight index, whose
-- statistics are always stale on a queue table, and a stale "a dozen rows" estimate there once made
-- this statement quadratic in the batch size. This way each batch row is one primary-key lookup.
-- $1 ids, $2 attempt numbers, $3 next state (pending|succeeded|dead|released), $4 next attempt at,
-- $5 http status, $6 error, $7 response, $8 started at, $9 duration ms, $10 outcome, $11 lease owner,
-- $12 the request as sent and $13 the response headers, each JSON text written by the sender (its
-- record module: secrets hidden, sizes capped) and stored as jsonb
WITH r AS (
    SELECT *
    FROM unnest($1::bigint[], $2::int[], $3::text[], $4::timestamptz[], $5::int[], $6::text[], $7::text[],
                $8::timestamptz[], $9::int[], $10::text[], $12::text[], $13::text[])
        AS r(id, attempt, next_state, next_at, http_status, error, response, started_at, duration_ms, outcome,
             request, response_headers)
),
logged AS (
    INSERT INTO outbox.attempts AS a
        (delivery_id, attempt, started_at, duration_ms, status, error, response, outcome, request, response_headers)
    SELECT id, attempt, started_at, duration_ms, http_status, error, response, outcome, request::jsonb,
           response_headers::jsonb
    FROM r
    WHERE r.next_state <> 'released'
    ON CONFLICT (delivery_id, attempt) DO UPDATE
        SET started_at = EXCLUDED.started_at, duration_ms = EXCLUDED.duration_ms, status = EXCLUDED.status,
            error = EXCLUDED.error, response = EXCLUDED.response, outcome = EXCLUDED.outcome,
            request = EXCLUDED.request, response_headers = EXCLUDED.response_headers
),
retried AS (
    UPDATE outbox.deliveries d
    SET status = 'pending', next_attempt_at = r.next_at, lease_owner = NULL, lease_until = NULL,
        last_status = r.http_status, last_error = r.error, last_response = r.response, updated_at = now()
    FROM r
    WHERE r.next_state = 'pending' AND d.id = r.id AND d.lease_until IS NOT NULL
      AND d.lease_owner = $11 AND d.attempts = r.attempt
    RETURNING d.id
),
released AS (
    UPDATE outbox.deliveries d
    SET status = 'pending', attempts = d.attempts - 1, next_attempt_at = now(), lease_owner = NULL,
        lease_until = NULL, updated_at = now()
    FROM r
    WHERE r.next_state = 'released' AND d.id = r.id AND d.lease_until IS NOT NULL
      AND d.lease_owner = $11 AND d.attempts = r.attempt
    RETURNING d.id
),
finished AS (
    DELETE FROM outbox.deliveries d
    USING r
    WHERE r.next_state IN ('succeeded', 'dead') AND d.id = r.id AND d.lease_until IS NOT NULL
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
)
SELECT id, false AS ordered, NULL::bigint AS webhook_id, NULL::text AS entity, NULL::text AS entity_id
FROM retried
UNION ALL
SELECT id, false, NULL, NULL, NULL FROM released
UNION ALL
SELECT id, ordered, webhook_id, entity, entity_id FROM finished
