-- Retention, part 1: one batch of succeeded deliveries that finished before $1, with their attempts.
-- Dead and cancelled deliveries are kept (an operator may still retry them). Rows another transaction
-- holds (a `deliveries retry` in progress) are skipped. Returns (deliveries, attempts) deleted.
-- $1 cutoff (timestamptz), $2 batch size
WITH victims AS (
    SELECT d.id
    FROM outbox.deliveries_done d
    WHERE d.status = 'succeeded' AND d.updated_at < $1
    ORDER BY d.updated_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
gone AS (
    DELETE FROM outbox.deliveries_done d USING victims v WHERE d.id = v.id RETURNING d.id
),
gone_attempts AS (
    DELETE FROM outbox.attempts a WHERE a.delivery_id = ANY (ARRAY(SELECT id FROM gone)) RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM gone_attempts)
