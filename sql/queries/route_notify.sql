-- Ask producers to NOTIFY (the router ran dry and will sleep) or not to (it is busy and polls by
-- itself). $1 wanted
UPDATE outbox.router SET notify_wanted = $1 WHERE id = 1
