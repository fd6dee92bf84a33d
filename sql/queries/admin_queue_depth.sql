-- The console's queue figures: deliveries by status (pending and in flight counted from the hot
-- queue, dead and cancelled from their partial index, succeeded from the history retention keeps)
-- and the age in seconds of the oldest pending delivery.
SELECT
    (SELECT count(*) FROM outbox.deliveries WHERE status = 'pending')::bigint AS pending,
    (SELECT count(*) FROM outbox.deliveries WHERE status = 'in_flight')::bigint AS in_flight,
    (SELECT count(*) FROM outbox.deliveries_done WHERE status = 'succeeded')::bigint AS succeeded,
    (SELECT count(*) FROM outbox.deliveries_done WHERE status = 'dead')::bigint AS dead,
    (SELECT count(*) FROM outbox.deliveries_done WHERE status = 'cancelled')::bigint AS cancelled,
    (SELECT extract(epoch FROM now() - d.created_at)::float8
     FROM outbox.deliveries d WHERE d.status = 'pending' ORDER BY d.id LIMIT 1) AS oldest_pending_age
