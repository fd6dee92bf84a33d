//! Retention (issue 6): expired succeeded deliveries, their attempts and routed, unreferenced
//! events are deleted; nothing else is. Issue 13: at a cost per deleted row that does not grow with
//! the history (`plans`), without examining again what earlier passes kept (`passes`).

mod passes;
mod plans;

use std::time::Duration;

use outbox_relay::retention::{Purged, purge};
use outbox_testkit::{Reply, TestDb, TestReceiver, wait_until};
use tokio_util::sync::CancellationToken;

use crate::support::*;

const WEEK: Duration = Duration::from_secs(7 * 86400);

async fn ids(client: &tokio_postgres::Client, sql: &str) -> Vec<i64> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn retention_deletes_only_what_expired_and_nothing_still_needed() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|req| {
        if req.path.starts_with("/down") {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    apply(
        &db,
        &format!(
            r#"[[webhook]]
name = "ok"
events = ["order.*"]
url = "{}"

[[webhook]]
name = "down"
events = ["order.created"]
filter = 'event.entity_id == "2"'
url = "{}"
max_attempts = 1

[[webhook]]
name = "paused"
events = ["stock.*"]
url = "{}"
active = false
"#,
            receiver.url("/ok"),
            receiver.url("/down"),
            receiver.url("/paused")
        ),
    )
    .await;
    let client = db.connect().await;
    let emit = |t: &'static str, id: &'static str| {
        let client = &client;
        async move {
            client
                .query_one("SELECT outbox.emit($1, 'x', $2)", &[&t, &id])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let e1 = emit("order.created", "1").await; // ok: succeeded
    let e2 = emit("order.created", "2").await; // ok: succeeded; down: dead
    // Two captured events (outbox.captured_events), purged and kept like the others.
    let capture = |table: &'static str, prefix: &'static str, id: i32| {
        let client = &client;
        async move {
            client
                .batch_execute(&format!(
                    "CREATE TABLE {table} (id int PRIMARY KEY);
                     CREATE TRIGGER {table}_outbox AFTER INSERT ON {table}
                         FOR EACH ROW EXECUTE FUNCTION outbox.capture('{prefix}');
                     INSERT INTO {table} VALUES ({id});"
                ))
                .await
                .unwrap();
            client
                .query_one("SELECT max(id) FROM ONLY outbox.captured_events", &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let e3 = capture("things", "other", 3).await; // no webhook wants it
    let e4 = capture("stock", "stock", 4).await; // paused: stays pending
    let e5 = emit("order.created", "5").await; // ok: succeeded, recent
    let e6 = emit("other.thing", "6").await; // no webhook, recent
    let relay = start(&db).await;
    wait_for_status(&client, 3, "succeeded").await;
    wait_for_status(&client, 1, "dead").await;
    wait_for_status(&client, 1, "pending").await;
    // The dead delivery's alert event is routed too before the relay stops.
    wait_until(SOON, "the alert event routed", || async {
        let routed: bool = client
            .query_one(
                "SELECT pg_visible_in_snapshot(e.txid, r.prev_snapshot)
                 FROM outbox.events e, outbox.router r WHERE e.event_type = 'relay.delivery.dead'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        routed.then_some(())
    })
    .await;
    relay.stop().await;
    // Committed after the last relay stopped: not routed yet.
    let e7 = emit("other.thing", "7").await;

    // Age everything but e5/e6 (and the alert) past the retention.
    client
        .execute(
            "UPDATE outbox.events SET created_at = now() - interval '30 days'
             WHERE id = ANY($1)",
            &[&vec![e1, e2, e3, e4, e7]],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE outbox.deliveries_done SET updated_at = now() - interval '30 days'
             WHERE event_id = ANY($1)",
            &[&vec![e1, e2]],
        )
        .await
        .unwrap();
    let done_before = ids(&client, "SELECT id FROM outbox.deliveries_done ORDER BY id").await;
    assert_eq!(done_before.len(), 4, "3 succeeded + 1 dead");

    let pool = outbox_core::db::pool(&db.url, 2).unwrap();
    let stop = CancellationToken::new();
    let purged = purge(&pool, WEEK, &stop).await.unwrap();
    assert_eq!(
        purged,
        Some(Purged {
            deliveries: 2,
            attempts: 2,
            events: 2
        })
    );

    // Kept: the dead delivery (and its attempt and event), the recent success, the pending one.
    let kept: Vec<(i64, String, String)> = client
        .query(
            "SELECT event_id, webhook, status FROM outbox.delivery_log ORDER BY event_id, webhook",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        kept,
        vec![
            (e2, "down".to_string(), "dead".to_string()),
            (e4, "paused".to_string(), "pending".to_string()),
            (e5, "ok".to_string(), "succeeded".to_string()),
        ]
    );
    let attempt_owners = ids(
        &client,
        "SELECT d.event_id FROM outbox.attempts a JOIN outbox.deliveries_done d ON d.id = a.delivery_id ORDER BY 1",
    )
    .await;
    assert_eq!(attempt_owners, vec![e2, e5]);
    let orphans = ids(
        &client,
        "SELECT delivery_id FROM outbox.attempts a WHERE NOT EXISTS
             (SELECT 1 FROM outbox.delivery_log d WHERE d.id = a.delivery_id)",
    )
    .await;
    assert!(orphans.is_empty(), "no attempt outlives its delivery");
    // Events: e1 (its delivery expired) and e3 (routed to nothing) are gone; e2 is needed by the
    // dead delivery, e4 by the pending one, e7 was never routed, the rest are recent.
    let events = ids(
        &client,
        "SELECT id FROM outbox.events WHERE event_type <> 'relay.delivery.dead' ORDER BY id",
    )
    .await;
    assert_eq!(events, vec![e2, e4, e5, e6, e7]);
    assert_eq!(
        ids(
            &client,
            "SELECT id FROM outbox.events WHERE event_type = 'relay.delivery.dead'"
        )
        .await
        .len(),
        1
    );

    // Nothing more to do.
    assert_eq!(
        purge(&pool, WEEK, &stop).await.unwrap(),
        Some(Purged::default())
    );

    // The relay does the same on its own, shortly after it starts.
    client
        .execute(
            "UPDATE outbox.deliveries_done SET updated_at = now() - interval '30 days'
             WHERE event_id = $1",
            &[&e5],
        )
        .await
        .unwrap();
    let relay = start(&db).await;
    wait_until(SOON, "the relay's retention pass", || async {
        let left = ids(
            &client,
            "SELECT id FROM outbox.deliveries_done WHERE status = 'succeeded'",
        )
        .await;
        left.is_empty().then_some(())
    })
    .await;
    relay.stop().await;
    let dead = ids(
        &client,
        "SELECT event_id FROM outbox.deliveries_done WHERE status = 'dead'",
    )
    .await;
    assert_eq!(dead, vec![e2], "dead deliveries are kept for retrying");
}

#[tokio::test]
async fn retention_works_through_large_backlogs_in_batches() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    // 2,500 old events, each with a succeeded delivery of two attempts.
    client
        .batch_execute(
            "INSERT INTO outbox.events (event_type, entity, entity_id, created_at)
             SELECT 'order.created', 'order', i::text, now() - interval '30 days'
             FROM generate_series(1, 2500) i;
             INSERT INTO outbox.deliveries_done (id, webhook_id, webhook, event_id, event_type, entity,
                 entity_id, status, attempts, priority, coalesced, created_at, updated_at)
             SELECT e.id, 1, 'w', e.id, e.event_type, e.entity, e.entity_id, 'succeeded', 2, 0, 0,
                    e.created_at, e.created_at
             FROM outbox.events e;
             INSERT INTO outbox.attempts (delivery_id, attempt, started_at, outcome)
             SELECT d.id, a, d.created_at, 'success' FROM outbox.deliveries_done d, generate_series(1, 2) a;",
        )
        .await
        .unwrap();
    // After they committed, as the router does when it opens the next window.
    client
        .batch_execute(
            "UPDATE outbox.router SET prev_snapshot = pg_current_snapshot(), cur_snapshot = pg_current_snapshot()",
        )
        .await
        .unwrap();
    let pool = outbox_core::db::pool(&db.url, 2).unwrap();
    let purged = purge(&pool, WEEK, &CancellationToken::new()).await.unwrap();
    assert_eq!(
        purged,
        Some(Purged {
            deliveries: 2500,
            attempts: 5000,
            events: 2500
        })
    );
    for table in ["events", "deliveries_done", "attempts"] {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM outbox.{table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table}");
    }
}

#[tokio::test]
async fn events_set_aside_as_unroutable_are_kept_until_they_leave_the_list() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"ok\"\nevents = [\"order.*\"]\nurl = \"{}\"\n",
            receiver.url("/")
        ),
    )
    .await;
    let client = db.connect().await;
    let deep = format!("{}1{}", "{\"a\": ".repeat(130), "}".repeat(130));
    let bad: i64 = client
        .query_one(
            "SELECT outbox.emit('order.created', 'order', 'deep', $1::text::jsonb)",
            &[&deep],
        )
        .await
        .unwrap()
        .get(0);
    let relay = start(&db).await;
    wait_until(SOON, "the deep event set aside", || async {
        let listed = ids(&client, "SELECT event_id FROM outbox.unroutable_events").await;
        (listed == [bad]).then_some(())
    })
    .await;
    // Retention deletes only events of a finished routing window; the router closes the window it
    // set the event aside in on a later pass.
    wait_until(SOON, "the deep event's routing window finished", || async {
        let routed = ids(
            &client,
            "SELECT e.id FROM outbox.events e CROSS JOIN outbox.router r
             WHERE r.id = 1 AND e.entity_id = 'deep' AND pg_visible_in_snapshot(e.txid, r.prev_snapshot)",
        )
        .await;
        (routed == [bad]).then_some(())
    })
    .await;
    relay.stop().await;
    client
        .execute(
            "UPDATE outbox.events SET created_at = now() - interval '30 days' WHERE id = $1",
            &[&bad],
        )
        .await
        .unwrap();
    let pool = outbox_core::db::pool(&db.url, 2).unwrap();
    let stop = CancellationToken::new();
    purge(&pool, WEEK, &stop).await.unwrap();
    assert_eq!(
        ids(
            &client,
            "SELECT id FROM outbox.events WHERE entity_id = 'deep'"
        )
        .await,
        [bad],
        "kept while listed as unroutable"
    );
    client
        .execute("DELETE FROM outbox.unroutable_events", &[])
        .await
        .unwrap();
    purge(&pool, WEEK, &stop).await.unwrap();
    assert!(
        ids(
            &client,
            "SELECT id FROM outbox.events WHERE entity_id = 'deep'"
        )
        .await
        .is_empty(),
        "deleted once off the list"
    );
}
