//! One bad thing never holds up the rest: events the relay cannot route are set aside with their
//! reason and can be rerouted after a fix; a result the database refuses to store does not stop
//! the others from being recorded; a result that comes too late acts on nothing; readiness says
//! when routing is stuck.

use std::time::Duration;

use outbox_testkit::{Reply, TestDb, TestReceiver, wait_until};
use serde_json::Value;

use crate::support::*;

/// A JSON object nested `levels` deep, as text.
fn deep_json(levels: usize) -> String {
    format!("{}1{}", "{\"a\": ".repeat(levels), "}".repeat(levels))
}

async fn unrouted(db: &TestDb) -> Vec<Value> {
    let (code, out, err) = cli(db, &["events", "unrouted", "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn reason_of(unrouted: &[Value], event_id: i64) -> String {
    unrouted
        .iter()
        .find(|u| u["event_id"] == event_id)
        .unwrap_or_else(|| panic!("event {event_id} is not listed: {unrouted:?}"))["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn unroutable_events_are_set_aside_with_their_reason_and_the_rest_flows() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            r#"
[[webhook]]
name = "orders"
events = ["order.*"]
url = "{}"

[[webhook]]
name = "ordered"
events = ["order.*"]
url = "{}"
ordered = true

[[webhook]]
name = "alerts"
events = ["relay.event.unroutable"]
url = "{}"

[[webhook]]
name = "held"
events = ["order.*"]
url = "{}"
active = false
"#,
            receiver.url("/orders"),
            receiver.url("/ordered"),
            receiver.url("/alerts"),
            receiver.url("/held"),
        ),
    )
    .await;
    let client = db.connect().await;
    let good1 = emit(
        &client,
        "order.created",
        "order",
        "1",
        serde_json::json!({"n": 1}),
    )
    .await;
    let deep: i64 = client
        .query_one(
            &format!(
                "SELECT outbox.emit('order.created', 'order', 'deep', '{}'::jsonb)",
                deep_json(130)
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // An INSERT that supplies its own id, reusing one (outbox.events and its child table
    // outbox.captured_events each have their own primary key).
    client
        .execute(
            "INSERT INTO outbox.captured_events (id, event_type, entity, entity_id)
             VALUES ($1, 'order.created', 'order', 'dup')",
            &[&good1],
        )
        .await
        .unwrap();
    // An entity id too long for the index of ordered deliveries: the database refuses its rows.
    let long: i64 = client
        .query_one(
            "SELECT outbox.emit('order.created', 'order',
                 (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 250) i))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let good2 = emit(
        &client,
        "order.created",
        "order",
        "2",
        serde_json::json!({"n": 2}),
    )
    .await;

    let (relay, addr) = spawn_relay(&db, &[]).await;
    let _relay = relay;
    // The good events reach both webhooks; the four bad ones raise one alert each.
    receiver.wait_for(2 * 2 + 3, SOON).await;
    let delivered = |path: &str| {
        let mut ids: Vec<String> = receiver
            .requests()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.json()["entity_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    wait_until(SOON, "the good events at both webhooks", || async {
        (delivered("/orders") == ["1", "2"] && delivered("/ordered") == ["1", "2"]).then_some(())
    })
    .await;

    let listed = unrouted(&db).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let reason = reason_of(&listed, deep);
    assert!(
        reason.contains("nested 130 levels deep") && reason.contains("at most 128"),
        "{reason}"
    );
    assert!(reason_of(&listed, good1).contains("same id"), "{listed:?}");
    assert!(
        reason_of(&listed, long).contains("index row size"),
        "{listed:?}"
    );
    let alerts = wait_until(SOON, "three alerts", || async {
        let alerts: Vec<Value> = receiver
            .requests()
            .iter()
            .filter(|r| r.path == "/alerts")
            .map(|r| r.json())
            .collect();
        (alerts.len() == 3).then_some(alerts)
    })
    .await;
    let deep_alert = alerts
        .iter()
        .find(|a| a["entity_id"].as_str() == Some(deep.to_string().as_str()))
        .expect("an alert for the deep event");
    assert_eq!(deep_alert["type"], "relay.event.unroutable");
    assert_eq!(deep_alert["entity"], "event");
    assert_eq!(deep_alert["data"]["event_type"], "order.created");
    assert_eq!(deep_alert["data"]["entity_id"], "deep");
    assert!(
        deep_alert["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("nested 130 levels deep")
    );
    let metrics = parse_metrics(&http("GET", &format!("http://{addr}/metrics"), None).await.1);
    assert_eq!(metrics.get("outbox_events_unroutable_total"), Some(&3.0));
    assert_eq!(
        http("GET", &format!("http://{addr}/readyz"), None).await.0,
        200
    );

    // An id reused after its event was routed, while a delivery of it is still queued (the paused
    // webhook's): the database refuses the second delivery row of that (event, webhook).
    client
        .execute(
            "INSERT INTO outbox.captured_events (id, event_type, entity, entity_id)
             VALUES ($1, 'order.updated', 'order', 'dup2')",
            &[&good2],
        )
        .await
        .unwrap();
    let good3 = emit(
        &client,
        "order.created",
        "order",
        "3",
        serde_json::json!({"n": 3}),
    )
    .await;
    wait_until(SOON, "the event after the reused id", || async {
        delivered("/orders")
            .contains(&"3".to_string())
            .then_some(())
    })
    .await;
    let listed = unrouted(&db).await;
    assert!(
        reason_of(&listed, good2).contains("refused its deliveries"),
        "{listed:?}"
    );
    assert!(listed.iter().all(|u| u["event_id"] != good3));

    // Fixed: the deep event is rerouted and delivered; a duplicate stays listed until only one
    // event has the id, and is then routed to nobody new (its webhooks have it already).
    client
        .execute(
            "UPDATE outbox.events SET data = '{\"n\": 9}' WHERE id = $1",
            &[&deep],
        )
        .await
        .unwrap();
    let (code, out, err) = cli(
        &db,
        &["events", "reroute", &deep.to_string(), &good1.to_string()],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("event {deep}: routed (3 deliveries)")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "event {good1}: still unroutable: 2 events share the id {good1}"
        )),
        "{out}"
    );
    wait_until(SOON, "the rerouted event", || async {
        (delivered("/orders").contains(&"deep".to_string())
            && delivered("/ordered").contains(&"deep".to_string()))
        .then_some(())
    })
    .await;
    client
        .execute(
            "DELETE FROM outbox.events WHERE entity_id IN ('dup', 'dup2')",
            &[],
        )
        .await
        .unwrap();
    let (code, out, err) = cli(&db, &["events", "reroute", "--all", "--json"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let results: Vec<Value> = serde_json::from_str(&out).unwrap();
    let result_of = |id: i64| {
        results
            .iter()
            .find(|r| r["event_id"] == id)
            .unwrap_or_else(|| panic!("{id} in {results:?}"))
            .clone()
    };
    assert_eq!(result_of(good1)["result"], "routed");
    assert_eq!(result_of(good1)["deliveries"], 0);
    assert_eq!(result_of(good2)["result"], "routed");
    assert_eq!(result_of(long)["result"], "unroutable");
    let listed = unrouted(&db).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["event_id"], long);
    // The good events were delivered once each, whatever was rerouted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(delivered("/orders"), ["1", "2", "3", "deep"]);

    let (code, _, err) = cli(&db, &["events", "reroute", "424242"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not listed as unroutable: 424242"), "{err}");
}

#[tokio::test]
async fn a_captured_row_too_deep_to_read_is_set_aside_and_capture_goes_on() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"docs\"\nevents = [\"doc.*\"]\nurl = \"{}\"\n",
            receiver.url("/")
        ),
    )
    .await;
    let client = db.connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE docs (id int PRIMARY KEY, body jsonb);
             CREATE TRIGGER docs_outbox AFTER INSERT OR UPDATE OR DELETE ON docs
                 FOR EACH ROW EXECUTE FUNCTION outbox.capture('doc');
             INSERT INTO docs VALUES (1, '{{}}'), (2, '{}'), (3, '[1]');",
            deep_json(130)
        ))
        .await
        .unwrap();
    let relay = start(&db).await;
    let got = receiver.wait_for(2, SOON).await;
    let mut ids: Vec<String> = got
        .iter()
        .map(|r| r.json()["entity_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["1", "3"]);
    let listed = unrouted(&db).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["entity_id"], "2");
    assert!(
        listed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("its data is nested 131 levels deep"),
        "{listed:?}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_result_the_database_refuses_does_not_hold_up_the_others() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|req| {
        if req.path == "/2" {
            Reply::ok().body("poison")
        } else {
            Reply::ok().body("fine")
        }
    });
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"w\"\nevents = [\"order.*\"]\nurl = \"{}/{{{{ id }}}}\"\n",
            receiver.url("")
        ),
    )
    .await;
    let client = db.connect().await;
    // Stands for any row the database refuses to store (a constraint an operator added).
    client
        .batch_execute(
            "ALTER TABLE outbox.attempts ADD CONSTRAINT no_poison
                 CHECK (response IS DISTINCT FROM 'poison')",
        )
        .await
        .unwrap();
    for id in 1..=5 {
        emit(
            &client,
            "order.created",
            "order",
            &id.to_string(),
            serde_json::json!({}),
        )
        .await;
    }
    let relay = start(&db).await;
    let log = wait_for_status(&client, 5, "succeeded").await;
    assert_eq!(receiver.count(), 5, "nothing was sent twice");
    let poisoned = log.iter().find(|d| d.entity_id == "2").unwrap();
    let attempts = attempt_errors(&client, poisoned.id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].2, "success");
    assert!(
        attempts[0]
            .3
            .as_deref()
            .unwrap_or("")
            .contains("could not be stored"),
        "{attempts:?}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_410_after_the_lease_was_taken_over_switches_nothing_off() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|_| Reply::status(410).delay(Duration::from_millis(1500)));
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"w\"\nevents = [\"order.*\"]\nurl = \"{}\"\n",
            receiver.url("/")
        ),
    )
    .await;
    let client = db.connect().await;
    emit(
        &client,
        "order.created",
        "order",
        "1",
        serde_json::json!({}),
    )
    .await;
    let relay = start(&db).await;
    receiver.wait_for(1, SOON).await;
    // While the request is in flight, another relay takes the delivery over.
    let taken = client
        .execute(
            "UPDATE outbox.deliveries SET lease_owner = 'another-relay', attempts = attempts + 1
             WHERE status = 'in_flight'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(taken, 1);
    wait_until(SOON, "the late result's attempt row", || async {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM outbox.attempts WHERE status = 410",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (n == 1).then_some(())
    })
    .await;
    let active: bool = client
        .query_one("SELECT active FROM outbox.webhooks WHERE name = 'w'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        active,
        "a result recorded after the takeover switched the webhook off"
    );
    let owner: String = client
        .query_one("SELECT lease_owner FROM outbox.deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "another-relay");
    relay.stop().await;
}

#[tokio::test]
async fn rescued_attempts_are_counted_and_a_delivery_that_dies_in_rescue_counts_as_dead() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"once\"\nevents = [\"order.*\"]\nurl = \"{0}\"\nmax_attempts = 1\n\n\
             [[webhook]]\nname = \"many\"\nevents = [\"order.*\"]\nurl = \"{0}\"\n",
            receiver.url("/")
        ),
    )
    .await;
    let client = db.connect().await;
    // Two deliveries whose relay died mid-attempt (their lease ran out a minute ago).
    client
        .batch_execute(
            "INSERT INTO outbox.deliveries
                 (webhook_id, webhook, event_id, event_type, entity, entity_id, status, attempts,
                  lease_owner, lease_until, next_attempt_at)
             SELECT id, name, 1000 + id, 'order.created', 'order', '1', 'in_flight', 1,
                    'crashed-relay', now() - interval '1 minute', now() - interval '2 minutes'
             FROM outbox.webhooks",
        )
        .await
        .unwrap();
    let (relay, addr) = spawn_relay(&db, &[("OUTBOX_LEASE", "2s")]).await;
    let _relay = relay;
    let metrics = wait_until(SOON, "the rescue counted", || async {
        let m = parse_metrics(&http("GET", &format!("http://{addr}/metrics"), None).await.1);
        (m.get("outbox_attempts_abandoned_total{webhook=\"once\"}") == Some(&1.0)
            && m.get("outbox_attempts_abandoned_total{webhook=\"many\"}") == Some(&1.0))
        .then_some(m)
    })
    .await;
    assert_eq!(
        metrics.get("outbox_deliveries_completed_total{webhook=\"once\",status=\"dead\"}"),
        Some(&1.0)
    );
    assert_eq!(
        metrics.get("outbox_deliveries_completed_total{webhook=\"many\",status=\"dead\"}"),
        Some(&0.0)
    );
    let statuses: Vec<(String, String)> = client
        .query(
            "SELECT webhook, status FROM outbox.delivery_log ORDER BY webhook",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        statuses,
        [
            ("many".to_string(), "pending".to_string()),
            ("once".to_string(), "dead".to_string())
        ]
    );
}

#[tokio::test]
async fn readiness_reports_routing_that_makes_no_progress_while_events_wait() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"w\"\nevents = [\"order.*\"]\nurl = \"{}\"\n",
            receiver.url("/")
        ),
    )
    .await;
    let relay = start(&db).await;
    let readyz = format!("http://{}/readyz", relay.addr());
    assert_eq!(http("GET", &readyz, None).await.0, 200);

    // Something holds the queue table: the router waits on it and routes nothing.
    let mut blocker = db.connect().await;
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE outbox.deliveries IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let client = db.connect().await;
    emit(
        &client,
        "order.created",
        "order",
        "1",
        serde_json::json!({}),
    )
    .await;
    let body = wait_until(
        Duration::from_secs(60),
        "readyz to say routing is stuck",
        || async {
            let (status, body) = http("GET", &readyz, None).await;
            (status == 503).then_some(body)
        },
    )
    .await;
    assert!(body.contains("routing is stuck"), "{body}");
    tx.rollback().await.unwrap();
    receiver.wait_for(1, SOON).await;
    wait_until(SOON, "readyz to recover", || async {
        (http("GET", &readyz, None).await.0 == 200).then_some(())
    })
    .await;
    relay.stop().await;
}
