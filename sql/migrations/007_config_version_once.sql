-- outbox-relay schema, version 7: a configuration change bumps outbox.config_version once per
-- transaction, not once per statement.
--
-- notify_config() runs after every statement that changes outbox.webhooks or outbox.relations.
-- Each bump in one transaction left another version of the single config_version row, and each
-- following UPDATE walked all of them: `apply` of 10,000 webhooks (one upsert each, one
-- transaction) spent ~9 s in Postgres on that alone. The relay reads the version to know which
-- configuration routed an event; all changes of a transaction commit together, so one bump per
-- transaction tells it the same. A row this transaction already bumped has the transaction's own
-- id as its xmin; the UPDATE then finds nothing to do. (In a subtransaction the ids differ and the
-- row is bumped again: harmless.) The NOTIFY stays per statement; Postgres folds identical
-- notifications of a transaction into one.
CREATE OR REPLACE FUNCTION outbox.notify_config() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE outbox.config_version SET version = version + 1
    -- pg_current_xact_id() counts epochs too; xmin is its low 32 bits
    WHERE id = 1 AND xmin <> (pg_current_xact_id()::text::bigint % 4294967296)::text::xid;
    PERFORM pg_notify('outbox_config', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
