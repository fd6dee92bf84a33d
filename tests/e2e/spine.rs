//! The spine: transactional emit → claim → route → deliver → log (issue 2).

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use outbox_core::Capture;
use outbox_testkit::{Reply, TestDb, TestReceiver, wait_until};

use crate::support::*;

#[tokio::test]
async fn committed_changes_arrive_once_each_and_nothing_else_does() {
    changes_arrive_once_each(Capture::Plpgsql).await;
}

/// What `capture` records of inserts, updates, deletes and rolled-back work, end to end. Also run with the native capture (native.rs).
pub async fn changes_arrive_once_each(capture: Capture) {
    let db = TestDb::new().await;
    if !use_capture(&db, capture) {
        return;
    }
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            r#"[[webhook]]
name = "orders"
events = ["order.*"]
url = "{}""#,
            receiver.url("/orders/{{ entity_id }}")
        ),
    )
    .await;
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, status text NOT NULL);
             CREATE TRIGGER orders_outbox AFTER INSERT OR UPDATE OR DELETE ON orders
                 FOR EACH ROW EXECUTE FUNCTION outbox.capture('order');
             INSERT INTO orders (status) VALUES ('new'), ('new');
             UPDATE orders SET status = 'paid' WHERE id = 1;
             UPDATE orders SET status = 'paid' WHERE id = 1;  -- changes nothing
             DELETE FROM orders WHERE id = 2;",
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "BEGIN; INSERT INTO orders (status) VALUES ('never'); UPDATE orders SET status = 'x'; ROLLBACK;",
        )
        .await
        .unwrap();
    let relay = start(&db).await;

    let log = wait_for_status(&client, 4, "succeeded").await;
    let got = receiver.wait_for(4, SOON).await;
    relay.stop().await;

    assert_eq!(log.len(), 4, "exactly four deliveries: {log:?}");
    let mut bodies: Vec<serde_json::Value> = got.iter().map(|r| r.json()).collect();
    bodies.sort_by_key(|b| {
        b["id"]
            .as_str()
            .unwrap()
            .split('_')
            .next_back()
            .unwrap()
            .parse::<i64>()
            .unwrap()
    });
    let kinds: Vec<(&str, &str)> = bodies
        .iter()
        .map(|b| {
            (
                b["type"].as_str().unwrap(),
                b["entity_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("order.created", "1"),
            ("order.created", "2"),
            ("order.updated", "1"),
            ("order.deleted", "2"),
        ]
    );
    assert_eq!(bodies[2]["old"]["status"], "new");
    assert_eq!(bodies[2]["data"]["status"], "paid");
    assert!(bodies[0].get("old").is_none(), "no old on created");
    assert_eq!(
        bodies[3]["data"]["status"], "new",
        "deleted carries the old row"
    );
    assert!(got.iter().all(|r| r.path.starts_with("/orders/")));
    assert_eq!(receiver.count(), 4, "nothing else arrived");
}

#[tokio::test]
async fn bad_producer_input_is_rejected_by_the_database() {
    bad_input_is_rejected(Capture::Plpgsql).await;
}

/// Bad rows and misdeclared triggers fail the producer's statement, with messages naming the fix. Also run with the native capture (native.rs).
pub async fn bad_input_is_rejected(capture: Capture) {
    let db = TestDb::new().await;
    if !use_capture(&db, capture) {
        return;
    }
    let client = db.connect().await;
    for (sql, expected) in [
        (
            "INSERT INTO outbox.events (event_type, entity, entity_id, data) VALUES ('a', 'b', 'c', '[1]')",
            "data_must_be_a_json_object",
        ),
        (
            "INSERT INTO outbox.events (event_type, entity, entity_id) VALUES ('a', 'b', NULL)",
            "entity_id",
        ),
        (
            "SELECT outbox.emit('a', 'b', '', '{}')",
            "entity_id_must_not_be_empty",
        ),
    ] {
        assert_rejected(&client, sql, expected).await;
    }
    let id: i64 = client
        .query_one(
            "SELECT outbox.emit('shipment.shipped', 'Warehouse\\Shipment', '7', '{\"id\": 7}'::jsonb)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let count: i64 = client
        .query_one("SELECT count(*) FROM outbox.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
    assert!(id > 0);

    client
        .batch_execute("CREATE TABLE t (code text); CREATE TRIGGER t_outbox AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION outbox.capture('thing');")
        .await
        .unwrap();
    assert_rejected(
        &client,
        "INSERT INTO t VALUES ('x')",
        "column \"id\" is missing or NULL",
    )
    .await;
    client
        .batch_execute("DROP TRIGGER t_outbox ON t; CREATE TRIGGER t_outbox AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION outbox.capture('thing', 'code');")
        .await
        .unwrap();
    assert_rejected(
        &client,
        "INSERT INTO t VALUES ('')",
        "outbox.capture('thing') on public.t: column \"code\" is empty",
    )
    .await;

    // Misdeclared capture triggers fail the statement, naming the table and the fix; a BEFORE
    // trigger in particular must not silently cancel the row change by returning NULL.
    for (trigger, expected) in [
        (
            "AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION outbox.capture()",
            "outbox.capture on public.t needs the event prefix",
        ),
        (
            "AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION outbox.capture('')",
            "outbox.capture on public.t needs the event prefix",
        ),
        (
            "BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION outbox.capture('thing', 'code')",
            "outbox.capture on public.t must be an AFTER ... FOR EACH ROW trigger",
        ),
        (
            "AFTER INSERT ON t FOR EACH STATEMENT EXECUTE FUNCTION outbox.capture('thing', 'code')",
            "outbox.capture on public.t must be an AFTER ... FOR EACH ROW trigger",
        ),
    ] {
        client
            .batch_execute(&format!(
                "DROP TRIGGER t_outbox ON t; CREATE TRIGGER t_outbox {trigger}"
            ))
            .await
            .unwrap();
        assert_rejected(&client, "INSERT INTO t VALUES ('x')", expected).await;
    }
    let rows: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "no row change without its event");
}

#[tokio::test]
async fn one_event_fans_out_to_every_matching_webhook() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let hook = |name: &str, events: &str| {
        format!(
            "[[webhook]]\nname = \"{name}\"\nevents = {events}\nurl = \"{}\"\n",
            receiver.url(&format!("/{name}"))
        )
    };
    apply(
        &db,
        &[
            hook("exact", r#"["order.created"]"#),
            hook("prefix", r#"["order.*"]"#),
            hook("all", r#"["*"]"#),
            hook("other", r#"["shipment.*", "order.deleted"]"#),
        ]
        .concat(),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    client
        .execute(
            "SELECT outbox.emit('order.created', 'order', '42', '{\"id\": 42}')",
            &[],
        )
        .await
        .unwrap();
    let log = wait_for_status(&client, 3, "succeeded").await;
    receiver.wait_for(3, SOON).await;
    relay.stop().await;

    let mut webhooks: Vec<&str> = log.iter().map(|d| d.webhook.as_str()).collect();
    webhooks.sort();
    assert_eq!(webhooks, vec!["all", "exact", "prefix"]);
    let mut paths: Vec<String> = receiver.requests().iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, vec!["/all", "/exact", "/prefix"]);
    // One delivery per (event, webhook): distinct webhook-ids.
    let ids: HashSet<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3);
}

#[tokio::test]
async fn failures_are_retried_and_every_attempt_is_recorded() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.push([
        Reply::status(500).body("boom"),
        Reply::status(502),
        Reply::ok().body("thanks"),
    ]);
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"flaky\"\nevents = [\"*\"]\nurl = \"{}\"\nretry_schedule = [\"50ms\"]\n",
            receiver.url("/hook")
        ),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    client
        .execute("SELECT outbox.emit('order.created', 'order', '1')", &[])
        .await
        .unwrap();
    let log = wait_for_status(&client, 1, "succeeded").await;
    relay.stop().await;

    assert_eq!(log[0].attempts, 3);
    assert_eq!(
        attempts(&client, log[0].id).await,
        vec![
            (1, Some(500), "http_error".to_string()),
            (2, Some(502), "http_error".to_string()),
            (3, Some(200), "success".to_string()),
        ]
    );
    let got = receiver.requests();
    assert_eq!(got.len(), 3);
    let attempt_headers: Vec<&str> = got
        .iter()
        .map(|r| r.header("webhook-attempt").unwrap())
        .collect();
    assert_eq!(attempt_headers, vec!["1", "2", "3"]);
    let ids: HashSet<&str> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "webhook-id is stable across attempts");
    for r in &got {
        assert_eq!(
            r.header("user-agent"),
            Some(concat!("outbox-relay/", env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        assert!((ts - chrono::Utc::now().timestamp()).abs() < 600);
    }
    let row = client
        .query_one(
            "SELECT last_status, last_response FROM outbox.delivery_log WHERE id = $1",
            &[&log[0].id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), Some(200));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("thanks"));
}

#[tokio::test]
async fn a_delivery_that_keeps_failing_dies_and_raises_an_alert_event() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|_| Reply::status(503).body("down"));
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"down\"\nevents = [\"order.*\"]\nurl = \"{}\"\nmax_attempts = 2\nretry_schedule = [\"50ms\"]\n",
            receiver.url("/down")
        ),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    client
        .execute(
            "SELECT outbox.emit('order.created', 'order', '9', '{\"id\": 9}')",
            &[],
        )
        .await
        .unwrap();
    let log = wait_for_status(&client, 1, "dead").await;
    relay.stop().await;

    assert_eq!(log.len(), 1);
    assert_eq!(log[0].attempts, 2);
    assert_eq!(attempts(&client, log[0].id).await.len(), 2);
    assert_eq!(receiver.count(), 2);
    let alert = client
        .query_one(
            "SELECT entity, entity_id, data FROM outbox.events WHERE event_type = 'relay.delivery.dead'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(alert.get::<_, String>(0), "delivery");
    assert_eq!(alert.get::<_, String>(1), log[0].id.to_string());
    let data: serde_json::Value = alert.get(2);
    assert_eq!(data["webhook"], "down");
    assert_eq!(data["event_type"], "order.created");
    assert_eq!(data["entity_id"], "9");
    assert_eq!(data["attempts"], 2);
    assert_eq!(data["last_status"], 503);
}

#[tokio::test]
async fn an_abandoned_attempt_is_retried_after_the_lease_with_the_same_webhook_id() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    // The first request hangs (its relay is killed meanwhile); the retry succeeds.
    receiver.push([Reply::ok().delay(Duration::from_secs(60))]);
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"slow\"\nevents = [\"*\"]\nurl = \"{}\"\ntimeout = \"2s\"\n",
            receiver.url("/slow")
        ),
    )
    .await;
    let client = db.connect().await;
    client
        .execute("SELECT outbox.emit('order.created', 'order', '1')", &[])
        .await
        .unwrap();

    let mut doomed = std::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &db.url)
        .env("OUTBOX_LEASE", "1s")
        .env("OUTBOX_POLL_INTERVAL", "100ms")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("relay binary starts");
    receiver.wait_for(1, SOON).await;
    doomed.kill().expect("kill -9 the relay");
    let _ = doomed.wait();

    let mut settings = settings(&db);
    settings.lease = Duration::from_secs(1);
    let relay = outbox_relay::relay::Relay::start(settings).await.unwrap();
    let log = wait_for_status(&client, 1, "succeeded").await;
    relay.stop().await;

    let got = receiver.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(got[0].header("webhook-attempt"), Some("1"));
    assert_eq!(got[1].header("webhook-attempt"), Some("2"));
    assert_eq!(log[0].attempts, 2);
    let tried = attempts(&client, log[0].id).await;
    assert_eq!(
        tried,
        vec![
            (1, None, "abandoned".to_string()),
            (2, Some(200), "success".to_string())
        ]
    );
}

#[tokio::test]
async fn two_relays_attempt_every_delivery_exactly_once() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"bulk\"\nevents = [\"item.*\"]\nurl = \"{}\"\n",
            receiver.url("/bulk")
        ),
    )
    .await;
    let a = start(&db).await;
    let b = start(&db).await;
    let client = db.connect().await;
    const N: usize = 3000;
    for chunk in 0..(N / 500) {
        client
            .execute(
                "INSERT INTO outbox.events (event_type, entity, entity_id, data)
                 SELECT 'item.created', 'item', i::text, jsonb_build_object('i', i)
                 FROM generate_series($1::int, $1::int + 499) i",
                &[&((chunk * 500) as i32)],
            )
            .await
            .unwrap();
    }
    let log = wait_for_status(&client, N, "succeeded").await;
    a.stop().await;
    b.stop().await;

    assert_eq!(log.len(), N, "one delivery per event");
    assert!(log.iter().all(|d| d.attempts == 1));
    let got = receiver.requests();
    assert_eq!(got.len(), N, "every delivery sent exactly once");
    let ids: HashSet<&str> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), N);
    let attempt_rows: i64 = client
        .query_one("SELECT count(*) FROM outbox.attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempt_rows, N as i64);
}

#[tokio::test]
async fn the_listener_survives_losing_its_connection() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"w\"\nevents = [\"*\"]\nurl = \"{}\"\n",
            receiver.url("/w")
        ),
    )
    .await;
    // Polling so slow that only notifications (and the rescan after reconnecting) deliver in time.
    let mut settings = settings(&db);
    settings.poll_interval = Duration::from_secs(600);
    let relay = outbox_relay::relay::Relay::start(settings).await.unwrap();
    let client = db.connect().await;
    let listener_pid = || async {
        client
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
                 AND application_name = 'outbox-relay listener' AND query ILIKE 'LISTEN%'",
                &[],
            )
            .await
            .unwrap()
            .map(|r| r.get::<_, i32>(0))
    };
    let first = wait_until(SOON, "the LISTEN connection", listener_pid).await;
    client
        .execute("SELECT outbox.emit('a.b', 'a', '1')", &[])
        .await
        .unwrap();
    receiver.wait_for(1, SOON).await;

    client
        .execute("SELECT pg_terminate_backend($1)", &[&first])
        .await
        .unwrap();
    // Written while the listener is away.
    client
        .execute("SELECT outbox.emit('a.b', 'a', '2')", &[])
        .await
        .unwrap();
    receiver.wait_for(2, SOON).await;
    let second = wait_until(SOON, "a new LISTEN connection", || async {
        listener_pid().await.filter(|p| *p != first)
    })
    .await;
    assert_ne!(first, second);
    // And notifications work on the new connection.
    client
        .execute("SELECT outbox.emit('a.b', 'a', '3')", &[])
        .await
        .unwrap();
    receiver.wait_for(3, SOON).await;
    relay.stop().await;
    assert_eq!(receiver.count(), 3);
}

/// A connection whose notifications are collected. Postgres hands a session the notifications of
/// its own transactions before it reports the statement done, so `pending()` after a statement
/// shows exactly what that statement's commit sent.
struct Listening {
    client: tokio_postgres::Client,
    received: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Listening {
    async fn new(db: &TestDb, channel: &str) -> Listening {
        let (client, mut connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let (tx, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let tokio_postgres::AsyncMessage::Notification(n) = message {
                    let _ = tx.send(n.channel().to_string());
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .unwrap();
        Listening { client, received }
    }

    fn pending(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.received.try_recv().ok()).collect()
    }
}

#[tokio::test]
async fn producers_notify_only_while_the_router_asks_for_it() {
    notify_only_when_asked(Capture::Plpgsql).await;
}

/// Producers NOTIFY once per transaction while the router asks for it, and never otherwise. Also run with the native capture (native.rs).
pub async fn notify_only_when_asked(capture: Capture) {
    let db = TestDb::new().await;
    if !use_capture(&db, capture) {
        return;
    }
    let mut session = Listening::new(&db, "outbox_events").await;
    session
        .client
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, status text);
             CREATE TRIGGER orders_outbox AFTER INSERT OR UPDATE OR DELETE ON orders
                 FOR EACH ROW EXECUTE FUNCTION outbox.capture('order');",
        )
        .await
        .unwrap();
    // Each statement commits events of its own: n is the order id it starts from.
    let producers = |n: i32| {
        [
            format!("INSERT INTO orders VALUES ({n}, 'new')"),
            format!("UPDATE orders SET status = 'paid' WHERE id = {n}"),
            format!("SELECT outbox.emit('order.note', 'order', '{n}')"),
            format!(
                "INSERT INTO outbox.events (event_type, entity, entity_id) VALUES ('order.note', 'order', '{n}')"
            ),
            format!(
                "BEGIN; INSERT INTO orders VALUES ({}, 'new'), ({}, 'new'); DELETE FROM orders WHERE id = {n}; COMMIT",
                n + 1,
                n + 2
            ),
        ]
    };

    // Idle router: every committing producer wakes it, once per transaction.
    session
        .client
        .batch_execute("SELECT setval('outbox.notify_wanted', 1)")
        .await
        .unwrap();
    for sql in producers(1) {
        session.client.batch_execute(&sql).await.unwrap();
        assert_eq!(session.pending(), ["outbox_events"], "{sql}");
    }

    // Busy router: it polls by itself, and producers commit without the NOTIFY lock.
    session
        .client
        .batch_execute("SELECT setval('outbox.notify_wanted', 0)")
        .await
        .unwrap();
    for sql in producers(11) {
        session.client.batch_execute(&sql).await.unwrap();
        assert!(session.pending().is_empty(), "{sql}");
    }
    // Every statement above emitted (the last one three events): the flag only decides the NOTIFY.
    let events: i64 = session
        .client
        .query_one("SELECT count(*) FROM outbox.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 2 * 7);
}

#[tokio::test]
async fn upgrading_from_schema_1_keeps_events_and_rules() {
    let db = TestDb::empty().await;
    let mut client = db.connect().await;
    client
        .batch_execute(&format!(
            "{}
             SELECT outbox.emit('order.created', 'order', '42', '{{\"id\": 42}}', '{{\"shop\": \"nl\"}}');
             UPDATE outbox.router SET notify_wanted = false;
             ALTER TABLE outbox.events DISABLE TRIGGER events_notify;",
            schema_at_version(1)
        ))
        .await
        .unwrap();

    let applied = outbox_core::migrate(&mut client).await.unwrap();
    assert_eq!(applied, migrations_after(1));

    let row = client
        .query_one(
            "SELECT event_type, entity_id, data, metadata,
                    pg_sequence_last_value('outbox.notify_wanted'),
                    (SELECT tgenabled::text FROM pg_trigger
                     WHERE tgrelid = 'outbox.events'::regclass AND tgname = 'events_notify')
             FROM outbox.events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "order.created");
    assert_eq!(row.get::<_, String>(1), "42");
    assert_eq!(row.get::<_, serde_json::Value>(2)["id"], 42);
    assert_eq!(row.get::<_, serde_json::Value>(3)["shop"], "nl");
    assert_eq!(
        row.get::<_, i64>(4),
        0,
        "the router's busy flag carries over"
    );
    assert_eq!(
        row.get::<_, String>(5),
        "D",
        "notify = off (the NOTIFY trigger switched off) carries over"
    );
    // Producers' prepared statements keep working: the columns are still plain text and jsonb,
    // so one parameter may feed a column and an expression of another type.
    client
        .execute(
            "INSERT INTO outbox.events (event_type, entity, entity_id, data)
             VALUES ($1, 'order', $2, jsonb_build_object('id', $2::text))",
            &[&"order.created", &"43"],
        )
        .await
        .unwrap();
    for (sql, rule) in [
        (
            "SELECT outbox.emit('', 'order', '1')",
            "event_type_must_not_be_empty",
        ),
        (
            "SELECT outbox.emit('a', '', '1')",
            "entity_must_not_be_empty",
        ),
        (
            "SELECT outbox.emit('a', 'b', '1', '[]')",
            "data_must_be_a_json_object",
        ),
        (
            "SELECT outbox.emit('a', 'b', '1', '{}', '\"x\"')",
            "metadata_must_be_a_json_object",
        ),
        (
            "INSERT INTO outbox.events (event_type, entity, entity_id, old) VALUES ('a', 'b', 'c', '1')",
            "old_must_be_a_json_object_or_null",
        ),
    ] {
        assert_rejected(&client, sql, rule).await;
    }
}

#[tokio::test]
async fn upgrading_from_schema_2_lets_producers_go_on_capturing_in_order() {
    let db = TestDb::empty().await;
    let mut client = db.connect().await;
    let role = format!("producer_{}", &db.name[12..]);
    let setup = schema_at_version(2);
    client
        .batch_execute(&format!(
            "{setup}
             CREATE ROLE {role};
             GRANT USAGE ON SCHEMA outbox TO {role};
             GRANT INSERT, SELECT (id) ON outbox.events TO {role};
             CREATE TABLE orders (id int PRIMARY KEY, status text);
             GRANT INSERT, UPDATE, SELECT ON orders TO {role};
             CREATE TRIGGER orders_outbox AFTER INSERT OR UPDATE ON orders
                 FOR EACH ROW EXECUTE FUNCTION outbox.capture('order');
             INSERT INTO orders VALUES (1, 'new');"
        ))
        .await
        .unwrap();

    let applied = outbox_core::migrate(&mut client).await.unwrap();
    assert_eq!(applied, migrations_after(2));

    // The role that could insert events can still capture them, and emit between captures.
    let produced = client
        .batch_execute(&format!(
            "SET ROLE {role};
             UPDATE orders SET status = 'paid' WHERE id = 1;
             SELECT outbox.emit('order.note', 'order', '1');
             UPDATE orders SET status = 'shipped' WHERE id = 1;
             RESET ROLE;"
        ))
        .await
        .map_err(|e| outbox_core::db::describe(&e));
    client.batch_execute("RESET ROLE").await.unwrap();
    let events: Vec<(String, Option<String>)> = client
        .query(
            "SELECT event_type, data ->> 'status' FROM outbox.events ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let captured: i64 = client
        .query_one("SELECT count(*) FROM ONLY outbox.captured_events", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .unwrap();
    assert_eq!(produced, Ok(()));
    let status = |s: &str| Some(s.to_string());
    assert_eq!(
        events,
        [
            ("order.created".into(), status("new")),
            ("order.updated".into(), status("paid")),
            ("order.note".into(), None),
            ("order.updated".into(), status("shipped")),
        ],
        "one id sequence for both tables: events read back in insertion order"
    );
    assert_eq!(
        captured, 2,
        "captured after the upgrade: into outbox.captured_events"
    );
    // What capture() now guarantees itself is still checked for every other insert.
    assert_rejected(
        &client,
        "INSERT INTO outbox.events (event_type, entity, entity_id) VALUES ('a', 'b', '')",
        "entity_id_must_not_be_empty",
    )
    .await;
}

/// SQL that creates schema `outbox` as `migrate` of an older release left it: migrations 1 to
/// `version` applied and recorded.
fn schema_at_version(version: i32) -> String {
    let mut sql = "CREATE SCHEMA outbox;
         CREATE TABLE outbox.schema_migrations (
             version integer PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());"
        .to_string();
    for (v, name, migration) in outbox_core::sql::MIGRATIONS
        .iter()
        .filter(|m| m.0 <= version)
    {
        sql += &format!(
            "{migration};
             INSERT INTO outbox.schema_migrations (version, name) VALUES ({v}, '{name}');"
        );
    }
    sql
}

/// Runs `sql`, which must fail with a message containing `expected`.
async fn assert_rejected(client: &tokio_postgres::Client, sql: &str, expected: &str) {
    let err = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("{sql} must fail"));
    let message = outbox_core::db::describe(&err);
    assert!(message.contains(expected), "{sql}: {message}");
}

#[tokio::test]
async fn a_producer_role_needs_insert_on_events_and_captured_events_and_the_id_column() {
    producer_role_privileges(Capture::Plpgsql).await;
}

/// A producer role with the documented grants can capture and emit. Also run with the native capture (native.rs).
pub async fn producer_role_privileges(capture: Capture) {
    let db = TestDb::new().await;
    if !use_capture(&db, capture) {
        return;
    }
    let client = db.connect().await;
    let role = format!("producer_{}", &db.name[12..]);
    client
        .batch_execute(&format!(
            "CREATE ROLE {role};
             GRANT USAGE ON SCHEMA outbox TO {role};
             GRANT INSERT, SELECT (id) ON outbox.events TO {role};
             GRANT INSERT ON outbox.captured_events TO {role};
             CREATE TABLE orders (id int PRIMARY KEY);
             GRANT INSERT ON orders TO {role};
             CREATE TRIGGER orders_outbox AFTER INSERT ON orders
                 FOR EACH ROW EXECUTE FUNCTION outbox.capture('order');"
        ))
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for (n, wanted) in [(1, 1), (2, 0)] {
        outcomes.push(
            client
                .batch_execute(&format!(
                    "SELECT setval('outbox.notify_wanted', {wanted});
                     SET ROLE {role};
                     INSERT INTO orders VALUES ({n});
                     SELECT outbox.emit('order.note', 'order', '{n}');
                     RESET ROLE;"
                ))
                .await
                .map_err(|e| outbox_core::db::describe(&e)),
        );
        client.batch_execute("RESET ROLE").await.unwrap();
    }
    let events: i64 = client
        .query_one("SELECT count(*) FROM outbox.events", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .unwrap();
    assert_eq!(outcomes, [Ok(()), Ok(())]);
    assert_eq!(events, 4);
}

/// The versions of the migrations after `version` (numbers may have gaps).
fn migrations_after(version: i32) -> Vec<i32> {
    outbox_core::sql::MIGRATIONS
        .iter()
        .map(|(v, _, _)| *v)
        .filter(|v| *v > version)
        .collect()
}
