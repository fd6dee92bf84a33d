-- Sample business data for the example webhooks (examples/webhooks.toml): every statement below
-- commits a change to orders or shipments, and their capture triggers turn it into events.
-- SO-1003 is a draft, so the CRM webhook's CEL filter leaves it out.
INSERT INTO orders (code, customer, shop, status, total) VALUES
    ('SO-1001', 'Ada Lovelace', 'nl', 'new', 99.50),
    ('SO-1002', 'Grace & Co <Hopper>', 'de', 'new', 1250.00),
    ('SO-1003', 'Draft Customer', 'nl', 'draft', 0);

INSERT INTO shipments (order_id, carrier, tracking)
SELECT id, 'dhl', 'JD0146' || lpad(id::text, 6, '0') FROM orders WHERE code IN ('SO-1001', 'SO-1002') ORDER BY id;

UPDATE orders SET status = 'paid' WHERE code = 'SO-1001';
