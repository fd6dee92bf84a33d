-- Per webhook: deliveries by status, and when an attempt last succeeded and last failed (the
-- console's webhook list). Reads the whole delivery log and attempt history that retention keeps.
SELECT d.webhook, d.status, count(*)::bigint, NULL::timestamptz, NULL::timestamptz
FROM outbox.delivery_log d
GROUP BY d.webhook, d.status
UNION ALL
SELECT d.webhook, NULL, NULL,
       max(a.started_at) FILTER (WHERE a.outcome = 'success'),
       max(a.started_at) FILTER (WHERE a.outcome <> 'success')
FROM outbox.attempts a
JOIN outbox.delivery_log d ON d.id = a.delivery_id
GROUP BY d.webhook
