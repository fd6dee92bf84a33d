-- The latest event matching the given entity / entity_id (NULL = any) and event type patterns,
-- for `outbox-relay test` and `outbox-relay fields`. Nothing is written.
--   $1 entity, $2 entity_id (text or NULL), $3 exact types (text[]), $4 prefixes with their dot
--   (text[], "order." for "order.*"), $5 whether any type matches ("*").
SELECT id, event_type, entity, entity_id, data, old, metadata, created_at
FROM outbox.events
WHERE ($1::text IS NULL OR entity = $1)
  AND ($2::text IS NULL OR entity_id = $2)
  AND ($5::bool
       OR event_type = ANY ($3::text[])
       OR EXISTS (SELECT 1 FROM unnest($4::text[]) AS p (prefix) WHERE starts_with(event_type, p.prefix)))
ORDER BY id DESC
LIMIT 1
