//! A relay's retention passes resume where the previous one stopped: what an earlier pass examined
//! and kept is not examined again, and is still deleted once nothing needs it any more.

use std::time::Duration;

use outbox_relay::retention::{Pass, Purged, Retention};
use outbox_testkit::TestDb;
use tokio_util::sync::CancellationToken;

const WEEK: Duration = Duration::from_secs(7 * 86400);

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// As the router does when it opens its next window: everything committed so far counts as routed.
async fn route_all(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "UPDATE outbox.router SET prev_snapshot = pg_current_snapshot(), cur_snapshot = pg_current_snapshot()",
        )
        .await
        .unwrap();
}

async fn pass(state: &mut Retention, pool: &deadpool_postgres::Pool) -> Pass {
    state
        .pass(pool, WEEK, &CancellationToken::new())
        .await
        .unwrap()
        .expect("no other relay deletes")
}

#[tokio::test]
async fn repeated_passes_do_not_examine_again_what_earlier_passes_kept() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    // 3,000 events a month old:
    //   1..=1000     each with a dead delivery (kept for good),
    //   1001..=2000  each with a delivery still queued (kept),
    //   2001..=2500  each with a delivery that succeeded yesterday (kept for now),
    //   2501..=2900  routed to nothing (deleted),
    //   2901..=3000  each with two succeeded deliveries, one a month ago, one yesterday.
    client
        .batch_execute(
            "INSERT INTO outbox.events (event_type, entity, entity_id, created_at)
             SELECT 'order.created', 'order', i::text, now() - interval '30 days'
             FROM generate_series(1, 3000) i;
             INSERT INTO outbox.deliveries_done (id, webhook_id, webhook, event_id, event_type, entity,
                 entity_id, status, attempts, priority, coalesced, created_at, updated_at)
             SELECT e.id, 1, 'w', e.id, e.event_type, e.entity, e.entity_id,
                    CASE WHEN e.id <= 1000 THEN 'dead' ELSE 'succeeded' END, 1, 0, 0, e.created_at,
                    CASE WHEN e.id <= 1000 OR e.id > 2900 THEN e.created_at ELSE now() - interval '1 day' END
             FROM outbox.events e WHERE e.id <= 1000 OR e.id BETWEEN 2001 AND 2500 OR e.id > 2900;
             INSERT INTO outbox.deliveries_done (id, webhook_id, webhook, event_id, event_type, entity,
                 entity_id, status, attempts, priority, coalesced, created_at, updated_at)
             SELECT 100000 + e.id, 2, 'v', e.id, e.event_type, e.entity, e.entity_id, 'succeeded', 1, 0, 0,
                    e.created_at, now() - interval '1 day'
             FROM outbox.events e WHERE e.id > 2900;
             INSERT INTO outbox.attempts (delivery_id, attempt, started_at, outcome)
             SELECT d.id, 1, d.created_at, 'success' FROM outbox.deliveries_done d;
             INSERT INTO outbox.deliveries (webhook_id, webhook, event_id, event_type, entity, entity_id)
             SELECT 1, 'w', e.id, e.event_type, e.entity, e.entity_id
             FROM outbox.events e WHERE e.id BETWEEN 1001 AND 2000;",
        )
        .await
        .unwrap();
    route_all(&client).await;
    // Then one old event the router has not seen yet, and ten new ones: the walk stops at the first.
    client
        .batch_execute(
            "INSERT INTO outbox.events (event_type, entity, entity_id, created_at)
             VALUES ('order.created', 'order', 'late', now() - interval '30 days');
             INSERT INTO outbox.events (event_type, entity, entity_id)
             SELECT 'order.created', 'order', i::text FROM generate_series(1, 10) i;",
        )
        .await
        .unwrap();

    let pool = outbox_core::db::pool(&db.url, 2).unwrap();
    let mut state = Retention::new();
    let first = pass(&mut state, &pool).await;
    assert_eq!(
        first.purged,
        Purged {
            deliveries: 100,
            attempts: 100,
            events: 400
        },
        "the month-old successes, and the events routed to nothing"
    );
    assert_eq!(first.events_examined, 3000, "every routed old event, once");

    // Nothing changed: the next pass deletes nothing and examines nothing.
    let second = pass(&mut state, &pool).await;
    assert_eq!(second.purged, Purged::default());
    assert_eq!(
        second.events_examined, 0,
        "a second pass examines again the events the first one kept"
    );

    // A week later: yesterday's successes have expired (they finished after the ones the first
    // pass deleted), and the late event has been routed.
    client
        .batch_execute(
            "UPDATE outbox.deliveries_done SET updated_at = now() - interval '8 days'
             WHERE status = 'succeeded'",
        )
        .await
        .unwrap();
    route_all(&client).await;
    let third = pass(&mut state, &pool).await;
    assert_eq!(
        third.purged,
        Purged {
            deliveries: 600,
            attempts: 600,
            events: 601
        },
        "the expired successes go with the events they alone needed, and the late event"
    );
    assert_eq!(
        third.events_examined, 1,
        "only the late event is new to the walk"
    );

    // Kept: the dead deliveries and their events, the queued ones and theirs, the new events.
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM outbox.deliveries_done WHERE status = 'dead'"
        )
        .await,
        1000
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM outbox.deliveries_done WHERE status = 'succeeded'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM outbox.attempts").await,
        1000
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM outbox.events WHERE id <= 2000 OR created_at > now() - interval '1 day'"
        )
        .await,
        2010
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM outbox.events").await,
        2010
    );

    // A relay that starts anew walks from the beginning once, and finds nothing more to delete.
    let fresh = pass(&mut Retention::new(), &pool).await;
    assert_eq!(fresh.purged, Purged::default());
    assert_eq!(fresh.events_examined, 2000);
}

#[tokio::test]
async fn a_pass_gives_way_while_another_relay_deletes() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    client
        .batch_execute(
            "INSERT INTO outbox.events (event_type, entity, entity_id, created_at)
             VALUES ('order.created', 'order', '1', now() - interval '30 days');",
        )
        .await
        .unwrap();
    route_all(&client).await;
    // Another relay's retention batch holds the lock ("outbox retention").
    let other = db.connect().await;
    other.batch_execute("BEGIN").await.unwrap();
    other
        .execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&outbox_relay::retention::LOCK],
        )
        .await
        .unwrap();
    let pool = outbox_core::db::pool(&db.url, 2).unwrap();
    let mut state = Retention::new();
    let stop = CancellationToken::new();
    assert_eq!(state.pass(&pool, WEEK, &stop).await.unwrap(), None);
    assert_eq!(
        count(&client, "SELECT count(*) FROM outbox.events").await,
        1
    );

    other.batch_execute("COMMIT").await.unwrap();
    let done = state.pass(&pool, WEEK, &stop).await.unwrap().unwrap();
    assert_eq!(done.purged.events, 1);
}
