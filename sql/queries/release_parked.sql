-- Safety net for ordered webhooks: wake the first parked delivery of every record that has nothing
-- earlier queued (a completion and a routing commit can race past each other). $1 webhook ids
UPDATE outbox.deliveries d
SET next_attempt_at = now()
WHERE d.webhook_id = ANY($1::bigint[]) AND d.status = 'pending' AND d.next_attempt_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM outbox.deliveries x
      WHERE x.webhook_id = d.webhook_id AND x.entity = d.entity AND x.entity_id = d.entity_id
        AND x.ordered AND x.event_id < d.event_id)
