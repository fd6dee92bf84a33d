-- outbox-relay schema, version 8: every attempt keeps the request it sent and its response's headers.
--
-- request: the request as the relay sent it, written by the sender once per attempt:
--   {"method", "url", "headers": [[name, value], ...], "body", "body_bytes"}
-- with every secret as *** (the URL's credentials; Authorization, cookies, the signature header and
-- credential-like headers) and capped: the body's first 4 KiB (body_bytes is the whole body's
-- size), the first 64 headers with each value's first 1 KiB. NULL when no request was made (the
-- attempt failed to render, or was abandoned by a relay that stopped reporting) and for attempts
-- recorded before this version.
-- response_headers: the response's headers, [[name, value], ...], capped and redacted alike; NULL
-- when there was no response.
--
-- Both are new nullable columns without a default: adding them rewrites nothing, and the existing
-- columns stay as they are. IF NOT EXISTS keeps the migration safe to repeat by hand.
ALTER TABLE outbox.attempts
    ADD COLUMN IF NOT EXISTS request jsonb,
    ADD COLUMN IF NOT EXISTS response_headers jsonb;
