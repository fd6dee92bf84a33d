-- outbox-relay schema, version 4: events the router cannot decode or route are set aside instead
-- of holding up every other event; max_in_flight becomes optional (adaptive when unset).
--
-- An event is set aside when its row cannot be read (e.g. data nested deeper than the relay's JSON
-- parser allows), when it shares its id with another event (an INSERT that supplied its own id),
-- or when writing its deliveries fails for a reason of its own (e.g. an entity_id too long for an
-- index). The router records it here with the reason, raises a relay.event.unroutable event, and
-- moves on. `outbox-relay events unrouted` lists these rows; `outbox-relay events reroute` routes
-- the events again (after a fix) and removes them from here. Retention keeps the events listed
-- here.

SET client_min_messages = warning;

CREATE TABLE outbox.unroutable_events (
    event_id     bigint PRIMARY KEY,
    event_type   text NOT NULL,
    entity       text NOT NULL,
    entity_id    text NOT NULL,
    reason       text NOT NULL,
    set_aside_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE outbox.unroutable_events IS
    'Events the relay could not route, with the reason. List them with `outbox-relay events unrouted`; route them again with `outbox-relay events reroute`.';

-- A webhook without max_in_flight no longer means "at most 16": the relay adapts the number of
-- requests in flight to the receiver, up to its own `concurrency` (a receiver that needs a hard
-- cap sets one). Rows written before keep their value, which is a cap from now on; applying the
-- webhooks file again (without max_in_flight) lets them adapt.
ALTER TABLE outbox.webhooks ALTER COLUMN max_in_flight DROP NOT NULL,
                            ALTER COLUMN max_in_flight DROP DEFAULT;
