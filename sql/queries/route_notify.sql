-- Ask producers to NOTIFY (the router ran dry and will sleep) or not to (it is busy and polls by
-- itself). Takes effect at once, whatever becomes of the calling transaction. $1 wanted
SELECT setval('outbox.notify_wanted', CASE WHEN $1::boolean THEN 1 ELSE 0 END, true)
