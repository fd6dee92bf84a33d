-- outbox-relay schema, version 6: indexes that let retention delete in index order, so that what
-- it costs per deleted row does not grow with the history.
--
-- Before, a batch of retention found its succeeded deliveries by sorting the whole of
-- outbox.deliveries_done by updated_at, and asked whether an event was still referenced by a
-- finished delivery with a scan of that table too (the event_id index covered only dead and
-- cancelled deliveries): every 1,000-row batch read the whole history.
--
-- deliveries_done_expiry: succeeded deliveries in the order they expire. Retention deletes them in
-- this order, each batch starting where the previous one stopped. Dead and cancelled deliveries are
-- kept and have no entry, so no pass wades through them.
--
-- deliveries_done_event: every finished delivery by its event (it replaces deliveries_done_kept_event,
-- which covered only dead and cancelled ones), for "does any delivery still need this event?".
--
-- Both are paid on the hot path: each succeeded delivery the completer moves here adds an entry to
-- each (a dead or cancelled one to deliveries_done_event only). Their keys grow with time, so the
-- entries go to the right-hand edge of each index. BENCHMARKS.md ("Retention") has the measured cost.
--
-- Upgrading builds both indexes while holding outbox.deliveries_done locked against writes: running
-- relays wait to record results meanwhile (16 s for 9 million finished deliveries here).

SET client_min_messages = warning;

CREATE INDEX deliveries_done_expiry ON outbox.deliveries_done (updated_at, id) WHERE status = 'succeeded';
CREATE INDEX deliveries_done_event ON outbox.deliveries_done (event_id);
DROP INDEX outbox.deliveries_done_kept_event;
