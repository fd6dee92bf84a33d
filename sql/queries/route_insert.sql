-- Create the deliveries of one routed page in one statement. Coalescing webhooks fold a new event
-- into a pending, never-attempted delivery of the same record; ordered webhooks park a delivery
-- (next_attempt_at NULL) while an earlier one of the same record is still queued. The earlier row it
-- parks behind is locked (FOR KEY SHARE) until this commits, so a completion that finishes that
-- row waits for this commit and then releases the parked delivery (release_next.sql runs after it).
-- A row that a completion is deleting right now (locked FOR UPDATE) is skipped: its attempt is over
-- and its outcome decided, so nothing needs to wait for it. Claims, retries and rescues lock rows
-- FOR NO KEY UPDATE, which does not conflict. The router never waits for a row lock here, so it
-- cannot deadlock with a completion batch.
-- Returns one row per affected delivery: inserted = false means it was coalesced.
INSERT INTO outbox.deliveries AS d
    (webhook_id, webhook, event_id, event_type, entity, entity_id, priority, coalescing, ordered,
     coalesced, next_attempt_at)
SELECT r.webhook_id, r.webhook, r.event_id, r.event_type, r.entity, r.entity_id, r.priority,
       r.coalescing, r.ordered, r.coalesced,
       CASE WHEN r.ordered AND (NOT r.first_of_key OR EXISTS (
                SELECT 1 FROM outbox.deliveries x
                WHERE x.webhook_id = r.webhook_id AND x.entity = r.entity AND x.entity_id = r.entity_id
                  AND x.ordered
                FOR KEY SHARE SKIP LOCKED))
            THEN NULL ELSE now() END
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::int[],
            $8::bool[], $9::bool[], $10::int[], $11::bool[])
    AS r(webhook_id, webhook, event_id, event_type, entity, entity_id, priority, coalescing, ordered,
         coalesced, first_of_key)
ON CONFLICT (webhook_id, entity, entity_id) WHERE coalescing AND status = 'pending' AND attempts = 0
DO UPDATE SET event_id = EXCLUDED.event_id,
              event_type = EXCLUDED.event_type,
              coalesced = d.coalesced + EXCLUDED.coalesced + 1,
              updated_at = now()
RETURNING d.webhook_id, (xmax = 0) AS inserted
