-- Example business schema for the quick start: orders and shipments whose changes become events.
CREATE TABLE IF NOT EXISTS orders (
    id       bigserial PRIMARY KEY,
    code     text NOT NULL,
    customer text NOT NULL,
    shop     text NOT NULL DEFAULT 'nl',
    status   text NOT NULL DEFAULT 'new',
    total    numeric(10, 2) NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS shipments (
    id       bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders (id),
    carrier  text NOT NULL,
    tracking text,
    status   text NOT NULL DEFAULT 'packed'
);

DROP TRIGGER IF EXISTS orders_outbox ON orders;
CREATE TRIGGER orders_outbox AFTER INSERT OR UPDATE OR DELETE ON orders
    FOR EACH ROW EXECUTE FUNCTION outbox.capture('order');
DROP TRIGGER IF EXISTS shipments_outbox ON shipments;
CREATE TRIGGER shipments_outbox AFTER INSERT OR UPDATE OR DELETE ON shipments
    FOR EACH ROW EXECUTE FUNCTION outbox.capture('shipment');
