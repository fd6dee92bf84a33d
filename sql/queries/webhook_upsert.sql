-- Creates a webhook, or replaces the configuration of the webhook of that name (`apply`, and the
-- console's form): it is valid again until the relays find otherwise, and a webhook made active
-- loses the reason it was switched off.
-- $1..$20 the configuration keys in the order of the column list
INSERT INTO outbox.webhooks AS w (name, contact, events, filter, url, method, headers, content_type, body,
    priority, "coalesce", ordered, active, timeout, max_attempts, retry_schedule, max_in_flight,
    auth, signature, tls)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
ON CONFLICT (name) DO UPDATE SET
    contact = EXCLUDED.contact, events = EXCLUDED.events, filter = EXCLUDED.filter,
    url = EXCLUDED.url, method = EXCLUDED.method, headers = EXCLUDED.headers,
    content_type = EXCLUDED.content_type, body = EXCLUDED.body, priority = EXCLUDED.priority,
    "coalesce" = EXCLUDED."coalesce", ordered = EXCLUDED.ordered, active = EXCLUDED.active,
    timeout = EXCLUDED.timeout, max_attempts = EXCLUDED.max_attempts,
    retry_schedule = EXCLUDED.retry_schedule, max_in_flight = EXCLUDED.max_in_flight,
    auth = EXCLUDED.auth, signature = EXCLUDED.signature, tls = EXCLUDED.tls,
    valid = true, error = NULL,
    disabled_reason = CASE WHEN EXCLUDED.active THEN NULL ELSE w.disabled_reason END,
    updated_at = now()
RETURNING id
