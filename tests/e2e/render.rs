//! Templates with merge fields and related records, render failures, and the `test` and `fields`
//! commands (issue 4).

use std::time::Duration;

use hmac::{KeyInit, Mac};
use outbox_testkit::{Reply, TestDb, TestReceiver};
use serde_json::{Value, json};

use crate::support::*;

/// Order codes and customers full of characters that break naive templates.
const CUSTOMER: &str = "Ada \"the\" <Countess> & Co, Lovelace's 日本 😀";
const CODE: &str = "SO/1 & \"2\"";

const SHOP: &str = "
    CREATE TABLE orders (
        id       bigserial PRIMARY KEY,
        code     text NOT NULL,
        customer text NOT NULL,
        total    numeric(10, 2) NOT NULL DEFAULT 0
    );
    CREATE TABLE shipments (
        id       bigserial PRIMARY KEY,
        order_id bigint REFERENCES orders (id),
        carrier  text NOT NULL,
        lines    jsonb NOT NULL DEFAULT '[]'
    );
    CREATE TRIGGER orders_outbox AFTER INSERT OR UPDATE OR DELETE ON orders
        FOR EACH ROW EXECUTE FUNCTION outbox.capture('order');
    CREATE TRIGGER shipments_outbox AFTER INSERT OR UPDATE OR DELETE ON shipments
        FOR EACH ROW EXECUTE FUNCTION outbox.capture('shipment');";

const ORDER_RELATION: &str = r#"
[[relation]]
entity = "shipment"
name   = "order"
query  = "SELECT to_jsonb(o) FROM orders o WHERE o.id = ($1->>'order_id')::bigint"
"#;

async fn shop(db: &TestDb) -> tokio_postgres::Client {
    let client = db.connect().await;
    client.batch_execute(SHOP).await.unwrap();
    client
}

async fn order(client: &tokio_postgres::Client, code: &str, customer: &str) -> i64 {
    client
        .query_one(
            "INSERT INTO orders (code, customer, total) VALUES ($1, $2, 19.90) RETURNING id",
            &[&code, &customer],
        )
        .await
        .unwrap()
        .get(0)
}

async fn shipment(client: &tokio_postgres::Client, order_id: Option<i64>, carrier: &str) -> i64 {
    client
        .query_one(
            r#"INSERT INTO shipments (order_id, carrier, lines)
               VALUES ($1, $2, '[{"sku": "A,1", "qty": 2}, {"sku": "B\"2", "qty": 1}]') RETURNING id"#,
            &[&order_id, &carrier],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn shipment_template_uses_its_related_order() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let client = shop(&db).await;
    apply(
        &db,
        &format!(
            r#"{ORDER_RELATION}
# Defined but not referenced by the template: must never run (it would fail).
[[relation]]
entity = "shipment"
name   = "exploding"
query  = "SELECT to_jsonb(($1->>'id')::int / 0)"

[[webhook]]
name         = "carrier"
events       = ["shipment.created"]
url          = "{}"
content_type = "application/xml"
headers      = {{ "X-Order" = "{{{{ related.order.code }}}}" }}
body = '''<?xml version="1.0"?>
<shipment id="{{{{ event.data.id }}}}" carrier="{{{{ event.data.carrier }}}}">
  <order code="{{{{ related.order.code }}}}" total="{{{{ related.order.total }}}}">{{{{ related.order.customer }}}}</order>
  {{% for line in event.data.lines %}}<line sku="{{{{ line.sku }}}}" qty="{{{{ line.qty }}}}"/>{{% endfor %}}
  <date>{{{{ event.created_at | date("%Y-%m-%d") }}}}</date>
</shipment>'''
"#,
            receiver.url("/shipments/{{ id }}?order={{ related.order.code }}")
        ),
    )
    .await;
    let order_id = order(&client, CODE, CUSTOMER).await;
    let shipment_id = shipment(&client, Some(order_id), "dhl & co").await;
    let relay = start(&db).await;
    let got = receiver.wait_for(1, SOON).await;
    wait_for_status(&client, 1, "succeeded").await;
    relay.stop().await;

    let request = &got[0];
    assert_eq!(
        request.path,
        format!("/shipments/{shipment_id}?order=SO%2F1%20%26%20%222%22")
    );
    assert_eq!(request.header("x-order"), Some(CODE));
    assert_eq!(request.header("content-type"), Some("application/xml"));
    let body = request.text();
    let doc = roxmltree::Document::parse(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let root = doc.root_element();
    assert_eq!(root.attribute("id"), Some(shipment_id.to_string().as_str()));
    assert_eq!(root.attribute("carrier"), Some("dhl & co"));
    let order_el = root.children().find(|n| n.has_tag_name("order")).unwrap();
    assert_eq!(order_el.attribute("code"), Some(CODE));
    assert_eq!(order_el.attribute("total"), Some("19.9"));
    assert_eq!(order_el.text(), Some(CUSTOMER));
    let skus: Vec<&str> = root
        .children()
        .filter(|n| n.has_tag_name("line"))
        .filter_map(|n| n.attribute("sku"))
        .collect();
    assert_eq!(skus, ["A,1", "B\"2"]);
    let today: String = client
        .query_one(
            "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM outbox.events WHERE entity = 'shipment'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let date = root.children().find(|n| n.has_tag_name("date")).unwrap();
    assert_eq!(date.text(), Some(today.as_str()));
}

/// The last attempt's (outcome, error) of the delivery of `webhook`.
async fn last_attempt(client: &tokio_postgres::Client, webhook: &str) -> (String, String) {
    let row = client
        .query_one(
            "SELECT a.outcome, coalesce(a.error, '') FROM outbox.attempts a
             JOIN outbox.delivery_log d ON d.id = a.delivery_id
             WHERE d.webhook = $1 ORDER BY a.attempt DESC LIMIT 1",
            &[&webhook],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn render_failures_are_recorded_and_the_relay_keeps_going() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let client = shop(&db).await;
    let url = receiver.url("/hook");
    apply(
        &db,
        &format!(
            r#"{ORDER_RELATION}
[[relation]]
entity = "shipment"
name   = "writer"
query  = "WITH w AS (UPDATE orders SET code = 'changed' RETURNING 1) SELECT to_jsonb(count(*)) FROM w"

[[webhook]]
name = "typo"
events = ["shipment.created"]
url = "{url}"
max_attempts = 1
body = '''{{
  "carrier": {{{{ event.data.carrier }}}},
  "code": {{{{ event.data.cod }}}}
}}'''

[[webhook]]
name = "undefined-relation"
events = ["shipment.created"]
url = "{url}"
max_attempts = 1
body = '{{"invoice": {{{{ related.invoice.no }}}}}}'

[[webhook]]
name = "missing-record"
events = ["shipment.created"]
url = "{url}"
max_attempts = 1
body = '{{"order": {{{{ related.order.code }}}}}}'

[[webhook]]
name = "writing-relation"
events = ["shipment.created"]
url = "{url}"
max_attempts = 1
body = '{{"w": {{{{ related.writer }}}}}}'

[[webhook]]
name = "huge"
events = ["shipment.created"]
url = "{url}"
max_attempts = 1
content_type = "text/plain"
body = "{{% for i in range(100000) %}}{{{{ event.data.carrier * 100 }}}}{{% endfor %}}"

[[webhook]]
name = "fine"
events = ["shipment.created"]
url = "{url}"
"#
        ),
    )
    .await;
    // A shipment without an order: the order relation finds no row.
    shipment(&client, None, "ups").await;
    let relay = start(&db).await;
    wait_for_status(&client, 5, "dead").await;
    wait_for_status(&client, 1, "succeeded").await;
    let got = receiver.wait_for(1, SOON).await;
    relay.stop().await;

    assert_eq!(got.len(), 1, "only the good webhook's request was sent");
    assert_eq!(got[0].json()["data"]["carrier"], "ups");
    let expectations = [
        ("typo", "body template failed at line 3"),
        ("typo", "event.data.cod"),
        (
            "undefined-relation",
            "no relation \"invoice\" is defined for entity \"shipment\"",
        ),
        (
            "missing-record",
            "relation \"order\" of entity \"shipment\" returned no row",
        ),
        ("writing-relation", "read-only transaction"),
        ("huge", "body rendered to more than 1048576 bytes"),
    ];
    for (webhook, expected) in expectations {
        let (outcome, error) = last_attempt(&client, webhook).await;
        assert_eq!(outcome, "render_error", "{webhook}: {error}");
        assert!(error.contains(expected), "{webhook}: {error}");
    }
    let codes: Vec<String> = client
        .query("SELECT code FROM orders", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(codes.is_empty(), "nothing was written by a relation");
    let log = client
        .query_one(
            "SELECT last_error FROM outbox.delivery_log WHERE webhook = 'typo'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert!(log.contains("event.data.cod"), "{log}");
}

#[tokio::test]
async fn relation_queries_are_read_only_and_time_limited() {
    let db = TestDb::new().await;
    let mut client = shop(&db).await;
    let order_id = order(&client, "SO-1", "Ada").await;
    let relations: outbox_sender::related::Relations = [
        (
            ("shipment".to_string(), "order".to_string()),
            "SELECT to_jsonb(o) FROM orders o WHERE o.id = ($1->>'order_id')::bigint".to_string(),
        ),
        (
            ("shipment".to_string(), "slow".to_string()),
            "SELECT to_jsonb(pg_sleep(10)::text)".to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let event = outbox_core::Event {
        id: 1,
        event_type: "shipment.created".into(),
        entity: "shipment".into(),
        entity_id: "1".into(),
        data: json!({"order_id": order_id}),
        old: None,
        metadata: json!({}),
        created_at: chrono::Utc::now(),
    };
    let loaded = outbox_sender::related::load(
        &mut client,
        &relations,
        &["order".to_string()],
        &event,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(loaded["order"]["code"], "SO-1");

    let err = outbox_sender::related::load(
        &mut client,
        &relations,
        &["order".to_string(), "slow".to_string()],
        &event,
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("relation \"slow\""), "{text}");
    assert!(text.contains("statement timeout"), "{text}");

    // The connection is usable afterwards and not stuck in the read-only transaction.
    client
        .execute("UPDATE orders SET code = 'SO-2'", &[])
        .await
        .unwrap();
}

/// Runs the binary against `db`; returns (exit code, stdout, stderr).
async fn relay_cli(db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn queue_rows(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT (SELECT count(*) FROM outbox.deliveries) + (SELECT count(*) FROM outbox.deliveries_done)
                  + (SELECT count(*) FROM outbox.attempts)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

fn header<'a>(preview: &'a Value, name: &str) -> Option<&'a str> {
    preview["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"].as_str().unwrap().eq_ignore_ascii_case(name))
        .and_then(|h| h["value"].as_str())
}

#[tokio::test]
async fn test_command_renders_and_sends_exactly_what_the_sender_sends() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let client = shop(&db).await;
    apply(
        &db,
        &format!(
            r#"{ORDER_RELATION}
[[webhook]]
name         = "erp"
events       = ["shipment.*"]
url          = "{}"
method       = "PUT"
content_type = "application/json"
headers      = {{ "X-Carrier" = "{{{{ event.data.carrier }}}}", "X-Api-Key" = "k-123" }}
body = '{{"shipment": {{{{ event.data.id }}}}, "order": {{{{ related.order.code }}}}, "customer": {{{{ related.order.customer }}}}}}'

[webhook.auth]
basic = {{ username = "relay", password = "pa55" }}

[webhook.signature]
scheme   = "hmac-sha256"
secrets  = ["secret123"]
header   = "ms-signature"
prefix   = "sha256="
encoding = "hex-upper"
"#,
            receiver.url("/erp/{{ type }}/{{ id }}")
        ),
    )
    .await;
    let order_id = order(&client, CODE, CUSTOMER).await;
    let shipment_id = shipment(&client, Some(order_id), "dhl").await;
    client
        .execute(
            "UPDATE shipments SET carrier = 'ups' WHERE id = $1",
            &[&shipment_id],
        )
        .await
        .unwrap();
    let id = shipment_id.to_string();
    let before = queue_rows(&client).await;

    // Render only.
    let (code, stdout, stderr) = relay_cli(
        &db,
        &["test", "erp", "--entity", "shipment", "--id", &id, "--json"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let preview: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        preview["event"]["type"], "shipment.updated",
        "the latest event"
    );
    assert_eq!(preview["request"]["method"], "PUT");
    assert_eq!(
        preview["request"]["url"],
        receiver.url(&format!("/erp/shipment/{id}"))
    );
    assert_eq!(header(&preview, "authorization"), Some("***"));
    assert_eq!(header(&preview, "ms-signature"), Some("***"));
    assert_eq!(header(&preview, "x-api-key"), Some("***"));
    assert_eq!(header(&preview, "x-carrier"), Some("ups"));
    assert_eq!(header(&preview, "webhook-attempt"), Some("1"));
    let body: Value = serde_json::from_str(preview["request"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"shipment": shipment_id, "order": CODE, "customer": CUSTOMER})
    );
    assert!(!stdout.contains("pa55") && !stdout.contains("secret123") && !stdout.contains("k-123"));

    // Text output, with --send: one real request, signed, with auth; the response is shown.
    receiver.push([Reply::status(202)
        .body("queued as #77")
        .header("x-receipt", "r-1")]);
    let (code, stdout, stderr) = relay_cli(
        &db,
        &["test", "erp", "--entity", "shipment", "--id", &id, "--send"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!(
            "PUT {}",
            receiver.url(&format!("/erp/shipment/{id}"))
        )),
        "{stdout}"
    );
    assert!(stdout.contains("authorization: ***"), "{stdout}");
    assert!(stdout.contains("HTTP 202 Accepted"), "{stdout}");
    assert!(stdout.contains("x-receipt: r-1"), "{stdout}");
    assert!(stdout.contains("queued as #77"), "{stdout}");
    let sent = receiver.wait_for(1, SOON).await;
    let tested = sent[0].clone();
    assert_eq!(tested.method, "PUT");
    assert_eq!(
        tested.header("authorization"),
        Some("Basic cmVsYXk6cGE1NQ==")
    );
    assert_eq!(tested.header("x-api-key"), Some("k-123"));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"secret123").unwrap();
    mac.update(&tested.body);
    let expected = format!("sha256={}", hex_upper(&mac.finalize().into_bytes()));
    assert_eq!(tested.header("ms-signature"), Some(expected.as_str()));
    assert_eq!(
        queue_rows(&client).await,
        before,
        "test wrote nothing to the queue"
    );

    // The relay sends the same request for real.
    let relay = start(&db).await;
    let all = receiver.wait_for(3, SOON).await;
    wait_for_status(&client, 2, "succeeded").await;
    relay.stop().await;
    let real = all
        .iter()
        .skip(1)
        .find(|r| r.header("x-carrier") == Some("ups"))
        .expect("the relay sent the updated shipment");
    assert_eq!(real.path, tested.path);
    assert_eq!(real.body, tested.body, "same body as the test");
    assert_eq!(real.header("ms-signature"), tested.header("ms-signature"));
    for name in [
        "content-type",
        "user-agent",
        "authorization",
        "x-carrier",
        "x-api-key",
    ] {
        assert_eq!(real.header(name), tested.header(name), "{name}");
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[tokio::test]
async fn test_command_explains_missing_webhooks_and_events() {
    let db = TestDb::new().await;
    let client = shop(&db).await;
    apply(
        &db,
        r#"[[webhook]]
name = "orders"
events = ["order.updated"]
url = "http://127.0.0.1:9/hook"
"#,
    )
    .await;
    order(&client, "SO-1", "Ada").await;

    let (code, _, stderr) =
        relay_cli(&db, &["test", "nope", "--entity", "order", "--id", "1"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("no webhook named \"nope\""), "{stderr}");

    let (code, _, stderr) =
        relay_cli(&db, &["test", "orders", "--entity", "order", "--id", "999"]).await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("record order \"999\" has no events"),
        "{stderr}"
    );

    let (code, _, stderr) =
        relay_cli(&db, &["test", "orders", "--entity", "order", "--id", "1"]).await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no event of a type webhook \"orders\" listens to (order.updated); its latest event is order.created"),
        "{stderr}"
    );
}

#[tokio::test]
async fn fields_lists_merge_fields_with_related_records() {
    let db = TestDb::new().await;
    let client = shop(&db).await;
    apply(
        &db,
        &format!(
            r#"{ORDER_RELATION}
[[relation]]
entity = "shipment"
name   = "broken"
query  = "SELECT to_jsonb(($1->>'id')::int / 0)"
"#
        ),
    )
    .await;
    let first_order = order(&client, "SO-1", "Ada").await;
    let second_order = order(&client, "SO-2", "Grace").await;
    let first = shipment(&client, Some(first_order), "dhl").await;
    shipment(&client, Some(second_order), "ups").await;

    let (code, stdout, stderr) = relay_cli(&db, &["fields", "shipment.created", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let found: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let example = |found: &Value, path: &str| -> Value {
        found["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .map(|f| f["example"].clone())
            .unwrap_or_else(|| panic!("no {path} in {found}"))
    };
    assert_eq!(
        example(&found, "event.data.carrier"),
        "ups",
        "latest of the type"
    );
    assert_eq!(example(&found, "event.data.lines[].sku"), "A,1");
    assert_eq!(example(&found, "event.data.lines[].qty"), 2);
    assert_eq!(example(&found, "related.order.code"), "SO-2");
    assert_eq!(example(&found, "related.order.customer"), "Grace");
    assert_eq!(example(&found, "type"), "shipment");
    assert_eq!(example(&found, "webhook.name"), "(webhook name)");
    for path in [
        "id",
        "entity_id",
        "event.created_at",
        "delivery.id",
        "delivery.attempt",
        "event.metadata",
    ] {
        example(&found, path);
    }
    assert_eq!(found["failed_relations"][0]["name"], "broken");
    assert!(
        found["failed_relations"][0]["error"]
            .as_str()
            .unwrap()
            .contains("division by zero")
    );

    // One record, in text form.
    let first_id = first.to_string();
    let (code, stdout, stderr) = relay_cli(
        &db,
        &["fields", "shipment.created", "--entity-id", &first_id],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("PATH"), "{stdout}");
    let line = |path: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(path))
            .unwrap_or_else(|| panic!("no {path} in {stdout}"))
            .to_string()
    };
    assert!(line("related.order.code").ends_with("\"SO-1\""), "{stdout}");
    assert!(line("event.data.carrier").ends_with("\"dhl\""), "{stdout}");
    assert!(
        stderr.contains("related.broken is not available"),
        "{stderr}"
    );

    let (code, _, stderr) = relay_cli(&db, &["fields", "invoice.created"]).await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no event of type invoice.created"),
        "{stderr}"
    );

    // Patterns work too.
    let (code, stdout, _) = relay_cli(&db, &["fields", "order.*", "--json"]).await;
    assert_eq!(code, 0);
    let found: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(example(&found, "event.data.code"), "SO-2");
    assert_eq!(
        queue_rows(&client).await,
        0,
        "fields wrote nothing to the queue"
    );
}

#[tokio::test]
async fn a_claimed_batch_loads_each_deliverys_own_related_records_and_one_failure_stays_its_own() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let client = shop(&db).await;
    apply(
        &db,
        &format!(
            r#"{ORDER_RELATION}
[[relation]]
entity = "shipment"
name   = "pace"
query  = "SELECT to_jsonb(100 / (($1->>'id')::int % 50))"

[[webhook]]
name = "carrier"
events = ["shipment.created"]
url = "{}"
body = '{{"shipment": {{{{ event.data.id }}}}, "order": {{{{ related.order.code }}}}, "pace": {{{{ related.pace }}}}}}'
retry_schedule = ["1h"]
"#,
            receiver.url("/")
        ),
    )
    .await;
    // 120 shipments of 120 orders, committed together so they are claimed in few batches; the
    // one whose id is a multiple of 50 makes its "pace" relation divide by zero.
    let mut tx_client = db.connect().await;
    let tx = tx_client.transaction().await.unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..120 {
        let code = format!("SO-{i}");
        let order_id: i64 = tx
            .query_one(
                "INSERT INTO orders (code, customer) VALUES ($1, 'c') RETURNING id",
                &[&code],
            )
            .await
            .unwrap()
            .get(0);
        let shipment_id: i64 = tx
            .query_one(
                "INSERT INTO shipments (order_id, carrier) VALUES ($1, 'dhl') RETURNING id",
                &[&order_id],
            )
            .await
            .unwrap()
            .get(0);
        expected.insert(shipment_id, code);
    }
    tx.commit().await.unwrap();
    let failing: Vec<i64> = expected.keys().copied().filter(|id| id % 50 == 0).collect();
    assert!(!failing.is_empty());
    let relay = start(&db).await;
    let got = receiver
        .wait_for(expected.len() - failing.len(), SOON)
        .await;
    wait_for_status(&client, failing.len(), "pending").await;
    relay.stop().await;

    let mut seen = std::collections::BTreeMap::new();
    for request in &got {
        let body = request.json();
        let id = body["shipment"].as_i64().unwrap();
        assert_eq!(body["pace"], 100 / (id % 50), "{body}");
        seen.insert(id, body["order"].as_str().unwrap().to_string());
    }
    let mut want = expected.clone();
    want.retain(|id, _| !failing.contains(id));
    assert_eq!(
        seen, want,
        "every delivery got its own order, the failing one none"
    );
    for id in &failing {
        let error: String = client
            .query_one(
                "SELECT a.error FROM outbox.attempts a JOIN outbox.delivery_log d ON d.id = a.delivery_id
                 WHERE d.entity_id = $1",
                &[&id.to_string()],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            error.contains("relation \"pace\"") && error.contains("division by zero"),
            "{error}"
        );
    }
}
