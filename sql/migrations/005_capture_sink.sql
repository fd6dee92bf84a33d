-- outbox-relay schema, version 5: producers no longer write outbox.captured_events directly.
--
-- Until now every producer role had INSERT on outbox.captured_events, which has no CHECKs, so it
-- could store an event with an id of its choosing (or a transaction id, or an empty type): a
-- duplicate id stops routing. capture() now writes through outbox.capture_sink, a view of the
-- five columns capture() fills; the view's owner (the schema owner) holds INSERT on the table,
-- producers hold INSERT on the view only. So ids, transaction ids, metadata and timestamps always
-- come from the table's defaults, and the view's CHECK OPTION refuses what the producer checks
-- of outbox.events refuse (a direct INSERT into the view is no side door either).
--
-- Why a view and not a SECURITY DEFINER capture(): a trigger function running with its owner's
-- rights also turns the business row into JSON with them, and to_jsonb() calls a user-defined
-- cast to json for a column of a user-defined type. Whoever may create a type, a cast and a
-- table with a capture trigger would run code of their choosing as the schema owner (often a
-- superuser). Through the view, capture() runs entirely as the role whose statement fired it,
-- and only the insert into the table is the owner's. It also costs nothing per captured row: the
-- view is resolved when the INSERT is planned, which PL/pgSQL does once per session.
--
-- Privileges are still checked when the trigger fires (INSERT on outbox.capture_sink, for the
-- role whose statement fired it). EXECUTE on outbox.capture() is no gate: Postgres checks it
-- only when a trigger is created, never when it fires.

SET client_min_messages = warning;

CREATE VIEW outbox.capture_sink AS
    SELECT event_type, entity, entity_id, data, old FROM outbox.captured_events
    WHERE event_type <> '' AND entity <> '' AND entity_id <> ''
      AND jsonb_typeof(data) = 'object' AND (old IS NULL OR jsonb_typeof(old) = 'object')
    WITH CHECK OPTION;
COMMENT ON VIEW outbox.capture_sink IS
    'Where outbox.capture writes its events (into outbox.captured_events). Producer roles need INSERT on it.';

-- Whoever could insert into captured_events (table or column grants, PUBLIC included) may insert
-- into the view instead, and no longer into the table.
DO $$
DECLARE
    grant_ record;
    role   text;
    roles  text[] := '{}';
BEGIN
    FOR grant_ IN
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                    ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS role,
               NULL::text AS col
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'outbox.captured_events'::regclass AND a.privilege_type = 'INSERT'
          AND a.grantee <> c.relowner
        UNION
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                    ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
               quote_ident(att.attname)
        FROM pg_class c JOIN pg_attribute att ON att.attrelid = c.oid, aclexplode(att.attacl) a
        WHERE c.oid = 'outbox.captured_events'::regclass AND a.privilege_type = 'INSERT'
          AND a.grantee <> c.relowner
          AND att.attname IN ('event_type', 'entity', 'entity_id', 'data', 'old')
    LOOP
        IF grant_.col IS NULL THEN
            EXECUTE format('GRANT INSERT ON outbox.capture_sink TO %s', grant_.role);
        ELSE
            EXECUTE format('GRANT INSERT (%s) ON outbox.capture_sink TO %s', grant_.col, grant_.role);
        END IF;
        roles := roles || grant_.role;
    END LOOP;
    -- (revoking the table privilege revokes the column privileges too)
    FOR role IN SELECT DISTINCT unnest(roles) LOOP
        EXECUTE format('REVOKE INSERT ON outbox.captured_events FROM %s CASCADE', role);
    END LOOP;
END
$$;

-- FOR EACH ROW EXECUTE FUNCTION outbox.capture('order' [, 'order_no'])
-- Every simple expression of a PL/pgSQL function is compiled again in each transaction that calls
-- it, and most business transactions capture one row: so the common path evaluates as few as it can.
CREATE OR REPLACE FUNCTION outbox.capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_data jsonb;
    old_row  jsonb;
    key      text;
BEGIN
    -- One test on the common path; the messages are worked out only when it fails.
    IF TG_WHEN <> 'AFTER' OR TG_LEVEL <> 'ROW' OR coalesce(TG_ARGV[0], '') = '' THEN
        IF coalesce(TG_ARGV[0], '') = '' THEN
            RAISE EXCEPTION 'outbox.capture on %.% needs the event prefix as its argument, e.g. EXECUTE FUNCTION outbox.capture(''order'')',
                TG_TABLE_SCHEMA, TG_TABLE_NAME;
        END IF;
        RAISE EXCEPTION 'outbox.capture on %.% must be an AFTER ... FOR EACH ROW trigger', TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;

    IF TG_OP = 'UPDATE' THEN
        row_data := to_jsonb(NEW);
        old_row := to_jsonb(OLD);
        IF row_data = old_row THEN
            RETURN NULL;  -- an UPDATE that changes nothing emits nothing
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        row_data := to_jsonb(NEW);
    ELSE
        row_data := to_jsonb(OLD);
    END IF;

    -- (to_jsonb of a row is always an object: the one producer check left to make is the id's)
    key := row_data ->> coalesce(TG_ARGV[1], 'id');
    IF coalesce(key, '') = '' THEN
        IF key = '' THEN
            RAISE EXCEPTION 'outbox.capture(''%'') on %.%: column "%" is empty; every captured row needs an id',
                TG_ARGV[0], TG_TABLE_SCHEMA, TG_TABLE_NAME, coalesce(TG_ARGV[1], 'id');
        END IF;
        RAISE EXCEPTION 'outbox.capture(''%'') on %.%: column "%" is missing or NULL; pass the id column as the second argument, e.g. outbox.capture(''%'', ''order_no'')',
            TG_ARGV[0], TG_TABLE_SCHEMA, TG_TABLE_NAME, coalesce(TG_ARGV[1], 'id'), TG_ARGV[0];
    END IF;

    INSERT INTO outbox.capture_sink (event_type, entity, entity_id, data, old)
    VALUES (TG_ARGV[0] || CASE TG_OP WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated' ELSE '.deleted' END,
            TG_ARGV[0], key, row_data, old_row);
    -- What the NOTIFY trigger on outbox.events does for other inserts: only while the router asks
    -- for it (Postgres folds a transaction's duplicate notifications into one).
    IF pg_sequence_last_value('outbox.notify_wanted') = 1 THEN
        PERFORM pg_notify('outbox_events', '');
    END IF;
    RETURN NULL;
END
$$;
