-- The console's overview, per webhook over the last hour: attempts made, attempts that failed,
-- deliveries that succeeded and deliveries that died.
SELECT d.webhook,
       count(*)::bigint AS attempts,
       (count(*) FILTER (WHERE a.outcome <> 'success'))::bigint AS failed,
       (count(*) FILTER (WHERE a.outcome = 'success'))::bigint AS succeeded
FROM outbox.attempts a
JOIN outbox.delivery_log d ON d.id = a.delivery_id
WHERE a.started_at > now() - interval '1 hour'
GROUP BY d.webhook
