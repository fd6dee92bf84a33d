-- outbox-relay schema, version 1.
--
-- Producer side: outbox.events (append-only; routed by transaction snapshot windows, never updated),
-- outbox.emit(...) and the generic row trigger outbox.capture(prefix [, id_column]).
-- Operator side: outbox.webhooks, outbox.relations, outbox.delivery_log, outbox.attempts.
-- Relay internals: outbox.deliveries (hot queue: pending and in_flight only), outbox.deliveries_done
-- (finished deliveries), outbox.router (the routing cursor).

CREATE TABLE outbox.events (
    -- Ids follow insertion order across sessions (no per-session sequence cache): per-record order
    -- relies on it, since two transactions changing one record insert their events one after the
    -- other (the second waits for the first's row lock), while their transaction ids need not be in
    -- that order.
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The producer's transaction id. The router hands out events by transaction snapshot windows, so
    -- an event is routed exactly once, after its transaction committed, without ever updating the row.
    -- Leave it to its default.
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_type  text NOT NULL CONSTRAINT event_type_must_not_be_empty CHECK (event_type <> ''),
    entity      text NOT NULL CONSTRAINT entity_must_not_be_empty CHECK (entity <> ''),
    entity_id   text NOT NULL CONSTRAINT entity_id_must_not_be_empty CHECK (entity_id <> ''),
    data        jsonb NOT NULL DEFAULT '{}'
                CONSTRAINT data_must_be_a_json_object CHECK (jsonb_typeof(data) = 'object'),
    old         jsonb CONSTRAINT old_must_be_a_json_object_or_null CHECK (old IS NULL OR jsonb_typeof(old) = 'object'),
    metadata    jsonb NOT NULL DEFAULT '{}'
                CONSTRAINT metadata_must_be_a_json_object CHECK (jsonb_typeof(metadata) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX events_by_txid ON outbox.events (txid, id);

COMMENT ON TABLE outbox.events IS
    'Transactional outbox: insert here (or call outbox.emit / the outbox.capture trigger) inside the business transaction.';

-- At most one NOTIFY per statement (Postgres folds duplicates within a transaction), never per
-- row, and only while the router asks for it: a transaction that NOTIFYs takes a database-wide
-- lock at commit, so committing producers would queue behind each other. While the router is busy
-- (events keep coming) it polls by itself and clears notify_wanted; once it runs dry it sets it again.
CREATE FUNCTION outbox.notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM outbox.router WHERE id = 1 AND notify_wanted) THEN
        PERFORM pg_notify('outbox_events', '');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER events_notify AFTER INSERT ON outbox.events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.notify_events();

CREATE FUNCTION outbox.emit(
    event_type text, entity text, entity_id text, data jsonb DEFAULT '{}', metadata jsonb DEFAULT '{}'
) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO outbox.events (event_type, entity, entity_id, data, metadata)
    VALUES (emit.event_type, emit.entity, emit.entity_id, coalesce(emit.data, '{}'), coalesce(emit.metadata, '{}'))
    RETURNING id
$$;

-- FOR EACH ROW EXECUTE FUNCTION outbox.capture('order' [, 'order_no'])
CREATE FUNCTION outbox.capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    prefix    text;
    id_column text;
    new_row   jsonb;
    old_row   jsonb;
    key       text;
BEGIN
    IF TG_NARGS < 1 OR TG_ARGV[0] IS NULL OR TG_ARGV[0] = '' THEN
        RAISE EXCEPTION 'outbox.capture on %.% needs the event prefix as its argument, e.g. EXECUTE FUNCTION outbox.capture(''order'')',
            TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    IF TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'outbox.capture on %.% must be an AFTER ... FOR EACH ROW trigger', TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    prefix := TG_ARGV[0];
    id_column := coalesce(TG_ARGV[1], 'id');

    IF TG_OP = 'INSERT' THEN
        new_row := to_jsonb(NEW);
    ELSIF TG_OP = 'UPDATE' THEN
        new_row := to_jsonb(NEW);
        old_row := to_jsonb(OLD);
        IF new_row = old_row THEN
            RETURN NULL;  -- an UPDATE that changes nothing emits nothing
        END IF;
    ELSE
        old_row := to_jsonb(OLD);
    END IF;

    key := coalesce(new_row, old_row) ->> id_column;
    IF key IS NULL THEN
        RAISE EXCEPTION 'outbox.capture(''%'') on %.%: column "%" is missing or NULL; pass the id column as the second argument, e.g. outbox.capture(''%'', ''order_no'')',
            prefix, TG_TABLE_SCHEMA, TG_TABLE_NAME, id_column, prefix;
    END IF;

    INSERT INTO outbox.events (event_type, entity, entity_id, data, old)
    VALUES (
        prefix || CASE TG_OP WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated' ELSE '.deleted' END,
        prefix,
        key,
        coalesce(new_row, old_row),
        CASE WHEN TG_OP = 'UPDATE' THEN old_row END
    );
    RETURN NULL;
END
$$;

-- Operator side -----------------------------------------------------------------------------------

CREATE TABLE outbox.webhooks (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE CONSTRAINT name_must_not_be_empty CHECK (name <> ''),
    contact         text,
    events          text[] NOT NULL DEFAULT '{}',
    filter          text,
    url             text NOT NULL,
    method          text NOT NULL DEFAULT 'POST',
    headers         jsonb NOT NULL DEFAULT '{}',
    content_type    text NOT NULL DEFAULT 'application/json',
    body            text,
    priority        integer NOT NULL DEFAULT 0,
    "coalesce"      boolean NOT NULL DEFAULT false,
    ordered         boolean NOT NULL DEFAULT false,
    active          boolean NOT NULL DEFAULT true,
    timeout         text NOT NULL DEFAULT '30s',
    max_attempts    integer NOT NULL DEFAULT 10,
    retry_schedule  text[],
    max_in_flight   integer NOT NULL DEFAULT 16,
    auth            jsonb,
    signature       jsonb,
    tls             jsonb,
    -- Written by the relay: whether the row validated when it was last loaded, and why not.
    valid           boolean NOT NULL DEFAULT true,
    error           text,
    -- Why the relay switched the webhook off (410 Gone), if it did.
    disabled_reason text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE outbox.relations (
    entity text NOT NULL,
    name   text NOT NULL,
    query  text NOT NULL,
    PRIMARY KEY (entity, name)
);

-- Running relays reload their configuration when it changes. Only operator-written columns count,
-- so the relay writing valid/error back does not wake itself up.
-- Bumped by every configuration change, in the changing transaction. The router reads it in the
-- same snapshot as each page of events and reloads the configuration first when it moved on: an
-- event committed after a webhook change is routed by the changed configuration, however late the
-- NOTIFY arrives.
CREATE TABLE outbox.config_version (
    id      integer PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL DEFAULT 0
);
INSERT INTO outbox.config_version (id) VALUES (1);

CREATE FUNCTION outbox.notify_config() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE outbox.config_version SET version = version + 1 WHERE id = 1;
    PERFORM pg_notify('outbox_config', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
CREATE TRIGGER webhooks_notify
    AFTER INSERT OR DELETE OR TRUNCATE
       OR UPDATE OF name, contact, events, filter, url, method, headers, content_type, body, priority,
                    "coalesce", ordered, active, timeout, max_attempts, retry_schedule, max_in_flight,
                    auth, signature, tls
    ON outbox.webhooks FOR EACH STATEMENT EXECUTE FUNCTION outbox.notify_config();
CREATE TRIGGER relations_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON outbox.relations
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.notify_config();

-- Queue --------------------------------------------------------------------------------------------

-- The hot queue: only pending and in_flight deliveries live here, so claims stay fast however long
-- the history grows. Finished deliveries move to outbox.deliveries_done.
CREATE TABLE outbox.deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      bigint NOT NULL,
    webhook         text NOT NULL,
    event_id        bigint NOT NULL,
    event_type      text NOT NULL,
    entity          text NOT NULL,
    entity_id       text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'in_flight')),
    attempts        integer NOT NULL DEFAULT 0,
    -- attempts made before the last replay: the attempt budget counts from here
    attempts_base   integer NOT NULL DEFAULT 0,
    priority        integer NOT NULL DEFAULT 0,
    coalescing      boolean NOT NULL DEFAULT false,
    ordered         boolean NOT NULL DEFAULT false,
    coalesced       integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- NULL while an ordered delivery waits for an earlier one of the same record
    next_attempt_at timestamptz,
    lease_owner     text,
    lease_until     timestamptz,
    last_status     integer,
    last_error      text,
    last_response   text,
    UNIQUE (event_id, webhook_id)
);
-- Every delivery is inserted, updated (claimed) and deleted (finished) within seconds: vacuum the
-- queue after a fixed number of dead rows, not a fraction of a table whose size swings. (The relay
-- also vacuums it itself every few seconds while busy.)
ALTER TABLE outbox.deliveries SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0
);
CREATE INDEX deliveries_due ON outbox.deliveries (webhook_id, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX deliveries_lease ON outbox.deliveries (lease_until) WHERE status = 'in_flight';
CREATE UNIQUE INDEX deliveries_coalesce ON outbox.deliveries (webhook_id, entity, entity_id)
    WHERE coalescing AND status = 'pending' AND attempts = 0;
CREATE INDEX deliveries_ordered ON outbox.deliveries (webhook_id, entity, entity_id, event_id) WHERE ordered;

CREATE TABLE outbox.deliveries_done (
    id              bigint PRIMARY KEY,
    webhook_id      bigint NOT NULL,
    webhook         text NOT NULL,
    event_id        bigint NOT NULL,
    event_type      text NOT NULL,
    entity          text NOT NULL,
    entity_id       text NOT NULL,
    status          text NOT NULL CHECK (status IN ('succeeded', 'dead', 'cancelled')),
    attempts        integer NOT NULL,
    attempts_base   integer NOT NULL DEFAULT 0,
    priority        integer NOT NULL,
    coalescing      boolean NOT NULL DEFAULT false,
    ordered         boolean NOT NULL DEFAULT false,
    coalesced       integer NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    last_response   text
);
-- Succeeded deliveries are the bulk and are only ever read by id (and deleted by retention in id
-- order), so the only indexes beyond the primary key cover the few dead and cancelled ones.
CREATE INDEX deliveries_done_kept ON outbox.deliveries_done (status, updated_at) WHERE status <> 'succeeded';
CREATE INDEX deliveries_done_kept_event ON outbox.deliveries_done (event_id) WHERE status <> 'succeeded';

CREATE TABLE outbox.attempts (
    delivery_id bigint NOT NULL,
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL,
    duration_ms integer,
    status      integer,
    error       text,
    response    text,
    -- success, http_error, timeout, connect_error, render_error, refused, abandoned
    outcome     text NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- Deleting a webhook cancels what it still had queued.
CREATE FUNCTION outbox.cancel_deliveries_of_deleted_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (
        DELETE FROM outbox.deliveries WHERE webhook_id = OLD.id RETURNING *
    )
    INSERT INTO outbox.deliveries_done
        (id, webhook_id, webhook, event_id, event_type, entity, entity_id, status, attempts, attempts_base,
         priority, coalescing, ordered, coalesced, created_at, updated_at, last_status, last_error, last_response)
    SELECT id, webhook_id, webhook, event_id, event_type, entity, entity_id, 'cancelled', attempts, attempts_base,
           priority, coalescing, ordered, coalesced, created_at, now(), last_status,
           coalesce(last_error || '; ', '') || 'cancelled: webhook ' || OLD.name || ' was deleted', last_response
    FROM gone;
    RETURN OLD;
END
$$;
CREATE TRIGGER webhooks_cancel_on_delete BEFORE DELETE ON outbox.webhooks
    FOR EACH ROW EXECUTE FUNCTION outbox.cancel_deliveries_of_deleted_webhook();

CREATE VIEW outbox.delivery_log AS
    SELECT id, webhook, event_id, event_type, entity, entity_id, status, attempts, priority, coalesced,
           created_at, updated_at, next_attempt_at, last_status, last_error, last_response
    FROM outbox.deliveries
    UNION ALL
    SELECT id, webhook, event_id, event_type, entity, entity_id, status, attempts, priority, coalesced,
           created_at, updated_at, NULL::timestamptz, last_status, last_error, last_response
    FROM outbox.deliveries_done;

-- Router cursor: events visible in cur_snapshot but not in prev_snapshot form the current window;
-- (cursor_txid, cursor_id) is how far into that window routing has come.
CREATE TABLE outbox.router (
    id            integer PRIMARY KEY CHECK (id = 1),
    -- Random per installation; part of every webhook-id, so ids never repeat across databases.
    install_id    text NOT NULL DEFAULT substr(md5(random()::text || clock_timestamp()::text), 1, 12),
    prev_snapshot pg_snapshot NOT NULL,
    cur_snapshot  pg_snapshot NOT NULL,
    cursor_txid   xid8 NOT NULL DEFAULT '0',
    cursor_id     bigint NOT NULL DEFAULT 0,
    -- Whether producers should NOTIFY (the router is idle) or not (it is busy and polls itself).
    notify_wanted boolean NOT NULL DEFAULT true,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO outbox.router (id, prev_snapshot, cur_snapshot)
VALUES (1, pg_current_snapshot(), pg_current_snapshot());
