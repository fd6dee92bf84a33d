//! How the queue is worked: coalescing, per-entity order, priority, max_in_flight and the global
//! concurrency bound (issue 5).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use outbox_testkit::{Received, Reply, TestDb, TestReceiver, wait_until};

use crate::support::*;

const ORDERS: &str = "CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL);
     CREATE TRIGGER orders_outbox AFTER INSERT OR UPDATE OR DELETE ON orders
         FOR EACH ROW EXECUTE FUNCTION outbox.capture('order');
     INSERT INTO orders VALUES (1, 'v0');";

fn coalescing_webhook(url: &str, active: bool) -> String {
    format!(
        "[[webhook]]\nname = \"sync\"\nevents = [\"order.updated\"]\nurl = \"{url}\"\ncoalesce = true\nactive = {active}\n"
    )
}

/// `(coalesced, event_id)` of the webhook's queued deliveries.
async fn queued(client: &tokio_postgres::Client) -> Vec<(i32, i64)> {
    client
        .query(
            "SELECT coalesced, event_id FROM outbox.deliveries WHERE webhook = 'sync' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn five_updates_of_a_record_waiting_in_the_queue_become_one_delivery_of_the_newest_row() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let client = db.connect().await;
    client.batch_execute(ORDERS).await.unwrap();
    // Paused: the delivery stays pending and never attempted while the updates come in, each
    // routed on its own.
    apply(&db, &coalescing_webhook(&receiver.url("/sync"), false)).await;
    let relay = start(&db).await;
    for i in 1..=5 {
        client
            .execute(
                "UPDATE orders SET status = $1 WHERE id = 1",
                &[&format!("v{i}")],
            )
            .await
            .unwrap();
        wait_until(SOON, &format!("update {i} to be routed"), || async {
            let q = queued(&client).await;
            (q.len() == 1 && q[0].0 == i - 1).then_some(())
        })
        .await;
    }
    let newest: i64 = client
        .query_one("SELECT max(id) FROM outbox.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued(&client).await, vec![(4, newest)]);

    apply(&db, &coalescing_webhook(&receiver.url("/sync"), true)).await;
    wait_for_status(&client, 1, "succeeded").await;
    let body = receiver.wait_for(1, SOON).await[0].json();
    assert_eq!(body["data"]["status"], "v5");
    assert_eq!(body["old"]["status"], "v4");

    // An attempted delivery is never replaced: the next update is a delivery of its own.
    client
        .execute("UPDATE orders SET status = 'v6' WHERE id = 1", &[])
        .await
        .unwrap();
    let log = wait_for_status(&client, 2, "succeeded").await;
    relay.stop().await;
    assert_eq!(receiver.count(), 2);
    assert_eq!(receiver.requests()[1].json()["data"]["status"], "v6");
    let coalesced: Vec<i32> = client
        .query("SELECT coalesced FROM outbox.delivery_log ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(coalesced, vec![4, 0]);
    assert_eq!(log.len(), 2);
}

#[tokio::test]
async fn updates_routed_in_one_page_are_coalesced_too() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let client = db.connect().await;
    client.batch_execute(ORDERS).await.unwrap();
    apply(&db, &coalescing_webhook(&receiver.url("/sync"), true)).await;
    // Written before the relay starts: all five are routed in its first page.
    for i in 1..=5 {
        client
            .execute(
                "UPDATE orders SET status = $1 WHERE id = 1",
                &[&format!("v{i}")],
            )
            .await
            .unwrap();
    }
    let relay = start(&db).await;
    wait_for_status(&client, 1, "succeeded").await;
    relay.stop().await;

    assert_eq!(receiver.count(), 1);
    let body = receiver.requests()[0].json();
    assert_eq!(body["data"]["status"], "v5");
    let coalesced: i32 = client
        .query_one("SELECT coalesced FROM outbox.delivery_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(coalesced, 4);
}

/// The `seq` of a request's event data.
fn seq(r: &Received) -> i64 {
    r.json()["data"]["seq"].as_i64().unwrap()
}

#[tokio::test]
async fn ordered_deliveries_of_one_record_never_overlap_while_other_records_proceed() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let failed_once = Arc::new(AtomicBool::new(false));
    let flag = failed_once.clone();
    receiver.handle(move |r| {
        let body = r.json();
        // The second event of record A fails once: the third must wait for its retry.
        if body["entity_id"] == "A"
            && body["data"]["seq"] == 2
            && !flag.swap(true, Ordering::SeqCst)
        {
            return Reply::status(500).delay(Duration::from_millis(100));
        }
        Reply::ok().delay(Duration::from_millis(100))
    });
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"seq\"\nevents = [\"order.*\"]\nurl = \"{}\"\nordered = true\nretry_schedule = [\"100ms\"]\n",
            receiver.url("/seq")
        ),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    // A burst, each event its own transaction, interleaving two records.
    for seq in 1..=6 {
        for record in ["A", "B"] {
            emit(
                &client,
                "order.updated",
                "order",
                record,
                serde_json::json!({ "seq": seq }),
            )
            .await;
        }
    }
    wait_for_status(&client, 12, "succeeded").await;
    relay.stop().await;

    let got = receiver.requests();
    let mut by_record: HashMap<String, Vec<&Received>> = HashMap::new();
    for r in &got {
        by_record
            .entry(r.json()["entity_id"].as_str().unwrap().to_string())
            .or_default()
            .push(r);
    }
    let seqs = |record: &str| by_record[record].iter().map(|r| seq(r)).collect::<Vec<_>>();
    assert_eq!(
        seqs("A"),
        vec![1, 2, 2, 3, 4, 5, 6],
        "A in event order, 2 retried before 3"
    );
    assert_eq!(seqs("B"), vec![1, 2, 3, 4, 5, 6]);
    for record in ["A", "B"] {
        for pair in by_record[record].windows(2) {
            assert!(
                pair[1].at >= pair[0].answered_at,
                "{record}: seq {} was sent before seq {} was answered",
                seq(pair[1]),
                seq(pair[0])
            );
        }
    }
    let overlapped = by_record["A"].iter().any(|a| {
        by_record["B"]
            .iter()
            .any(|b| a.at < b.answered_at && b.at < a.answered_at)
    });
    assert!(overlapped, "records A and B are sent in parallel");
}

#[tokio::test]
async fn higher_priority_goes_first_and_equal_priority_oldest_first() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let hook = |name: &str, priority: i32| {
        format!(
            "[[webhook]]\nname = \"{name}\"\nevents = [\"job.*\"]\nurl = \"{}\"\npriority = {priority}\n",
            receiver.url(&format!("/{name}"))
        )
    };
    apply(
        &db,
        &[hook("low", 0), hook("high", 10), hook("middle", 5)].concat(),
    )
    .await;
    let client = db.connect().await;
    for i in 1..=4 {
        emit(
            &client,
            "job.created",
            "job",
            &i.to_string(),
            serde_json::json!({}),
        )
        .await;
    }
    // One request at a time: the order of arrival is the order of claiming.
    let mut settings = settings(&db);
    settings.concurrency = 1;
    let relay = outbox_relay::relay::Relay::start(settings).await.unwrap();
    let got = receiver.wait_for(12, SOON).await;
    relay.stop().await;

    let order: Vec<String> = got
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r.path.trim_start_matches('/'),
                r.json()["entity_id"].as_str().unwrap()
            )
        })
        .collect();
    let expected: Vec<String> = ["high", "middle", "low"]
        .iter()
        .flat_map(|w| (1..=4).map(move |i| format!("{w}:{i}")))
        .collect();
    assert_eq!(order, expected);
    assert_eq!(receiver.max_concurrency(), 1);
}

#[tokio::test]
async fn among_webhooks_of_equal_priority_the_oldest_delivery_goes_first() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let hook = |name: &str| {
        format!(
            "[[webhook]]\nname = \"{name}\"\nevents = [\"job.*\"]\nurl = \"{}\"\n",
            receiver.url(&format!("/{name}"))
        )
    };
    apply(&db, &[hook("first"), hook("second")].concat()).await;
    let client = db.connect().await;
    for i in 1..=4 {
        emit(
            &client,
            "job.created",
            "job",
            &i.to_string(),
            serde_json::json!({}),
        )
        .await;
    }
    let mut settings = settings(&db);
    settings.concurrency = 1;
    let relay = outbox_relay::relay::Relay::start(settings).await.unwrap();
    let got = receiver.wait_for(8, SOON).await;
    relay.stop().await;

    // Both webhooks' deliveries of job 1 go before either's delivery of job 2: the first webhook
    // does not get to drain its queue while the second one's older deliveries wait.
    let jobs: Vec<String> = got
        .iter()
        .map(|r| r.json()["entity_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(jobs, vec!["1", "1", "2", "2", "3", "3", "4", "4"]);
}

#[tokio::test]
async fn max_in_flight_bounds_concurrent_requests_to_a_webhook() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|_| Reply::ok().delay(Duration::from_millis(200)));
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"narrow\"\nevents = [\"*\"]\nurl = \"{}\"\nmax_in_flight = 3\n",
            receiver.url("/narrow")
        ),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    client
        .execute(
            "INSERT INTO outbox.events (event_type, entity, entity_id)
             SELECT 'item.created', 'item', i::text FROM generate_series(1, 15) i",
            &[],
        )
        .await
        .unwrap();
    wait_for_status(&client, 15, "succeeded").await;
    relay.stop().await;
    assert_eq!(receiver.max_concurrency(), 3);
}

#[tokio::test]
async fn the_global_concurrency_bounds_requests_over_all_webhooks() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|_| Reply::ok().delay(Duration::from_millis(200)));
    let hook = |name: &str| {
        format!(
            "[[webhook]]\nname = \"{name}\"\nevents = [\"*\"]\nurl = \"{}\"\n",
            receiver.url(&format!("/{name}"))
        )
    };
    apply(&db, &[hook("one"), hook("two"), hook("three")].concat()).await;
    let client = db.connect().await;
    client
        .execute(
            "INSERT INTO outbox.events (event_type, entity, entity_id)
             SELECT 'item.created', 'item', i::text FROM generate_series(1, 5) i",
            &[],
        )
        .await
        .unwrap();
    let mut settings = settings(&db);
    settings.concurrency = 4;
    let relay = outbox_relay::relay::Relay::start(settings).await.unwrap();
    wait_for_status(&client, 15, "succeeded").await;
    relay.stop().await;
    assert_eq!(receiver.max_concurrency(), 4);
}

#[tokio::test]
async fn ordered_records_stay_in_order_while_events_keep_arriving() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"stream\"\nevents = [\"*\"]\nurl = \"{}\"\nordered = true\n",
            receiver.url("/stream")
        ),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    // Routing parks new events behind deliveries that are completing at the same moment; every
    // parked one must be released by the completion, not left for the relay's periodic sweep
    // (which runs every 15 s with the default lease: far beyond this deadline).
    const N: usize = 600;
    for seq in 0..N {
        let record = (seq % 4).to_string();
        emit(
            &client,
            "order.updated",
            "order",
            &record,
            serde_json::json!({ "seq": seq }),
        )
        .await;
    }
    let got = receiver.wait_for(N, Duration::from_secs(10)).await;
    relay.stop().await;

    let mut by_record: HashMap<String, Vec<&Received>> = HashMap::new();
    for r in &got {
        by_record
            .entry(r.json()["entity_id"].as_str().unwrap().to_string())
            .or_default()
            .push(r);
    }
    assert_eq!(by_record.len(), 4);
    for (record, requests) in &by_record {
        assert_eq!(requests.len(), N / 4, "{record}");
        for pair in requests.windows(2) {
            assert!(seq(pair[0]) < seq(pair[1]), "{record}: out of order");
            assert!(pair[1].at >= pair[0].answered_at, "{record}: overlapping");
        }
    }
}

/// The most requests of `received` that the receiver was answering at once, among those that
/// arrived at or after `from`.
fn overlap_since(received: &[Received], from: std::time::Instant) -> usize {
    let late: Vec<_> = received.iter().filter(|r| r.at >= from).collect();
    late.iter()
        .map(|r| {
            late.iter()
                .filter(|o| o.at <= r.at && (!o.answered || o.answered_at > r.at))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn without_max_in_flight_a_prompt_receiver_gets_more_at_once_and_a_failing_one_fewer() {
    let db = TestDb::new().await;
    let prompt = TestReceiver::start().await;
    prompt.handle(|_| Reply::ok().delay(Duration::from_millis(20)));
    let failing = TestReceiver::start().await;
    failing.handle(|_| Reply::status(503).delay(Duration::from_millis(20)));
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"prompt\"\nevents = [\"item.*\"]\nurl = \"{}\"\n\n\
             [[webhook]]\nname = \"failing\"\nevents = [\"part.*\"]\nurl = \"{}\"\n\
             retry_schedule = [\"50ms\"]\nmax_attempts = 1000\n",
            prompt.url("/"),
            failing.url("/")
        ),
    )
    .await;
    let client = db.connect().await;
    client
        .batch_execute(
            "INSERT INTO outbox.events (event_type, entity, entity_id)
             SELECT 'item.created', 'item', i::text FROM generate_series(1, 1500) i;
             INSERT INTO outbox.events (event_type, entity, entity_id)
             SELECT 'part.created', 'part', i::text FROM generate_series(1, 64) i;",
        )
        .await
        .unwrap();
    let relay = start(&db).await;
    wait_for_webhook_status(&client, "prompt", 1500, "succeeded").await;
    // It started at 16 and grew: the receiver answered promptly and the limit held requests back.
    assert!(
        prompt.max_concurrency() > 16,
        "a prompt receiver got at most {} requests at once",
        prompt.max_concurrency()
    );
    // The failing one got 16 at first; every round of 503s halved that.
    let settled = std::time::Instant::now() + Duration::from_millis(1500);
    wait_until(SOON, "a second of retries after the first ones", || async {
        let late = failing
            .requests()
            .iter()
            .filter(|r| r.at > settled + Duration::from_secs(1))
            .count();
        (late > 0).then_some(())
    })
    .await;
    relay.stop().await;
    assert!(
        failing.max_concurrency() >= 10,
        "{}",
        failing.max_concurrency()
    );
    let later = overlap_since(&failing.requests(), settled);
    assert!(
        later <= 2,
        "a receiver answering only 503 still got {later} requests at once"
    );
    // Nothing exceeded the relay's concurrency.
    assert!(prompt.max_concurrency() <= settings(&db).concurrency);
}

#[tokio::test]
async fn with_many_webhooks_configured_the_ones_with_work_are_served() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    // More webhooks than a claim probes one by one: the relay first asks which have queued work.
    let mut file = String::new();
    for i in 0..150 {
        file.push_str(&format!(
            "[[webhook]]\nname = \"tenant{i}\"\nevents = [\"tenant{i}.*\"]\nurl = \"{}\"\n\n",
            receiver.url(&format!("/tenant{i}"))
        ));
    }
    apply(&db, &file).await;
    let relay = start(&db).await;
    let client = db.connect().await;
    client
        .execute(
            "INSERT INTO outbox.events (event_type, entity, entity_id)
             SELECT 'tenant' || (i % 3 * 70) || '.created', 'item', i::text
             FROM generate_series(1, 90) i",
            &[],
        )
        .await
        .unwrap();
    wait_for_status(&client, 90, "succeeded").await;
    // A second wave for other webhooks, while the relay runs: the set of webhooks with work that
    // claims reuse for a moment must not hide them.
    client
        .execute(
            "INSERT INTO outbox.events (event_type, entity, entity_id)
             SELECT 'tenant' || (5 + i % 2 * 72) || '.created', 'item', i::text
             FROM generate_series(91, 150) i",
            &[],
        )
        .await
        .unwrap();
    let log = wait_for_status(&client, 150, "succeeded").await;
    relay.stop().await;
    let mut per_webhook: HashMap<String, usize> = HashMap::new();
    for d in &log {
        *per_webhook.entry(d.webhook.clone()).or_default() += 1;
    }
    assert_eq!(
        per_webhook,
        HashMap::from([
            ("tenant0".to_string(), 30),
            ("tenant70".to_string(), 30),
            ("tenant140".to_string(), 30),
            ("tenant5".to_string(), 30),
            ("tenant77".to_string(), 30)
        ])
    );
    assert_eq!(receiver.count(), 150);
}
