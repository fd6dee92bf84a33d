//! Pausing, deleting, replaying, and surviving a kill -9 mid-request (issue 5).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use outbox_testkit::{Received, Reply, TestDb, TestReceiver};

use crate::support::*;

fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!("[[webhook]]\nname = \"{name}\"\nevents = [\"order.*\"]\nurl = \"{url}\"\n{extra}\n")
}

#[tokio::test]
async fn a_paused_webhook_queues_everything_and_sends_it_when_reactivated() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(&db, &webhook("paused", &receiver.url("/p"), "")).await;
    let relay = start(&db).await;
    let client = db.connect().await;
    emit(
        &client,
        "order.created",
        "order",
        "0",
        serde_json::json!({}),
    )
    .await;
    receiver.wait_for(1, SOON).await;
    // Paused while the relay runs: takes effect at once, even before the relay reloads.
    apply(
        &db,
        &webhook("paused", &receiver.url("/p"), "active = false"),
    )
    .await;
    for id in ["1", "2", "3"] {
        emit(&client, "order.created", "order", id, serde_json::json!({})).await;
    }
    wait_for_overdue(&client, "paused", 3).await;
    emit(
        &client,
        "order.updated",
        "order",
        "1",
        serde_json::json!({}),
    )
    .await;
    wait_for_overdue(&client, "paused", 4).await;
    assert_eq!(receiver.count(), 1, "a paused webhook sends nothing");
    let queued = deliveries_of(&client, "paused").await;
    assert_eq!(queued.len(), 5);
    assert!(
        queued[1..]
            .iter()
            .all(|d| d.status == "pending" && d.attempts == 0),
        "{queued:?}"
    );

    apply(
        &db,
        &webhook("paused", &receiver.url("/p"), "active = true"),
    )
    .await;
    wait_for_status(&client, 5, "succeeded").await;
    relay.stop().await;
    assert_eq!(receiver.count(), 5);
}

#[tokio::test]
async fn deleting_a_webhook_cancels_its_queued_deliveries() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &[
            webhook("doomed", &receiver.url("/doomed"), "active = false"),
            webhook("kept", &receiver.url("/kept"), ""),
        ]
        .concat(),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    emit(
        &client,
        "order.created",
        "order",
        "1",
        serde_json::json!({}),
    )
    .await;
    emit(
        &client,
        "order.created",
        "order",
        "2",
        serde_json::json!({}),
    )
    .await;
    wait_for_webhook_status(&client, "kept", 2, "succeeded").await;
    wait_for_overdue(&client, "doomed", 2).await;

    let file = temp_file("kept.toml", &webhook("kept", &receiver.url("/kept"), ""));
    outbox_relay::commands::apply::run(&db.url, &file, false, true)
        .await
        .unwrap();
    let doomed = wait_for_webhook_status(&client, "doomed", 2, "cancelled").await;
    // Events after the deletion are not routed to it.
    emit(
        &client,
        "order.created",
        "order",
        "3",
        serde_json::json!({}),
    )
    .await;
    wait_for_webhook_status(&client, "kept", 3, "succeeded").await;
    relay.stop().await;

    assert_eq!(doomed.len(), 2);
    let reason: String = client
        .query_one(
            "SELECT last_error FROM outbox.delivery_log WHERE id = $1",
            &[&doomed[0].id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("webhook doomed was deleted"), "{reason}");
    assert!(receiver.requests().iter().all(|r| r.path == "/kept"));
    let (code, stdout, stderr) = cli(
        &db,
        &["deliveries", "retry", &doomed[0].id.to_string(), "--json"],
        &[],
    );
    assert_eq!(
        code, 2,
        "a deleted webhook's delivery cannot be replayed: {stdout}"
    );
    assert!(
        stderr.contains(&format!("{} (webhook \"doomed\")", doomed[0].id))
            && stderr.contains("the webhook was deleted"),
        "{stderr}"
    );
}

#[tokio::test]
async fn replaying_dead_deliveries_restarts_their_budget_and_keeps_their_webhook_id() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    // Before the replay everything fails; after it, the first replayed attempt fails again and
    // the second succeeds: only a fresh budget of 2 allows that.
    let replaying = Arc::new(AtomicUsize::new(0));
    let phase = replaying.clone();
    receiver.handle(move |r| {
        let attempt: u32 = r.header("webhook-attempt").unwrap().parse().unwrap();
        if phase.load(Ordering::SeqCst) == 1 && r.path == "/flaky" && attempt == 4 {
            Reply::ok()
        } else {
            Reply::status(500)
        }
    });
    apply(
        &db,
        &[
            webhook(
                "flaky",
                &receiver.url("/flaky"),
                "max_attempts = 2\nretry_schedule = [\"50ms\"]",
            ),
            webhook("other", &receiver.url("/other"), "max_attempts = 1"),
        ]
        .concat(),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    for id in ["1", "2", "3"] {
        emit(&client, "order.created", "order", id, serde_json::json!({})).await;
    }
    let dead = wait_for_webhook_status(&client, "flaky", 3, "dead").await;
    wait_for_webhook_status(&client, "other", 3, "dead").await;
    replaying.store(1, Ordering::SeqCst);

    // By id ...
    let (code, stdout, stderr) = cli(
        &db,
        &["deliveries", "retry", &dead[0].id.to_string(), "--json"],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["requeued"], serde_json::json!([dead[0].id]));
    wait_for_webhook_status(&client, "flaky", 1, "succeeded").await;

    // ... and by status, for one webhook.
    let (code, stdout, stderr) = cli(
        &db,
        &[
            "deliveries",
            "retry",
            "--status",
            "dead",
            "--webhook",
            "flaky",
            "--since",
            "1h",
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["requeued"], serde_json::json!([dead[1].id, dead[2].id]));
    let log = wait_for_webhook_status(&client, "flaky", 3, "succeeded").await;
    relay.stop().await;

    let mut by_id: HashMap<&str, Vec<&Received>> = HashMap::new();
    let requests = receiver.requests();
    for r in requests.iter().filter(|r| r.path == "/flaky") {
        by_id
            .entry(r.header("webhook-id").unwrap())
            .or_default()
            .push(r);
    }
    assert_eq!(
        by_id.len(),
        3,
        "the same three webhook-ids before and after the replay"
    );
    for sent in by_id.values() {
        let numbers: Vec<&str> = sent
            .iter()
            .map(|r| r.header("webhook-attempt").unwrap())
            .collect();
        assert_eq!(
            numbers,
            vec!["1", "2", "3", "4"],
            "attempt numbers continue"
        );
    }
    for d in &log {
        assert_eq!(d.attempts, 4);
        let outcomes: Vec<String> = attempts(&client, d.id)
            .await
            .into_iter()
            .map(|a| a.2)
            .collect();
        assert_eq!(
            outcomes,
            vec!["http_error", "http_error", "http_error", "success"]
        );
    }
    let others = deliveries_of(&client, "other").await;
    assert!(
        others.iter().all(|d| d.status == "dead"),
        "--webhook limits the replay"
    );
}

#[tokio::test]
async fn replayed_deliveries_of_an_ordered_record_go_one_at_a_time_in_event_order() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|_| Reply::status(500));
    apply(
        &db,
        &webhook(
            "ordered",
            &receiver.url("/o"),
            "ordered = true\nmax_attempts = 1",
        ),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    for seq in 1..=4 {
        emit(
            &client,
            "order.updated",
            "order",
            "A",
            serde_json::json!({ "seq": seq }),
        )
        .await;
    }
    wait_for_status(&client, 4, "dead").await;
    let before = receiver.count();
    receiver.handle(|_| Reply::ok().delay(Duration::from_millis(100)));
    let (code, _, stderr) = cli(&db, &["deliveries", "retry", "--status", "dead"], &[]);
    assert_eq!(code, 0, "{stderr}");
    wait_for_status(&client, 4, "succeeded").await;
    relay.stop().await;

    let replayed = &receiver.requests()[before..];
    let seqs: Vec<i64> = replayed
        .iter()
        .map(|r| r.json()["data"]["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    for pair in replayed.windows(2) {
        assert!(
            pair[1].at >= pair[0].answered_at,
            "replayed deliveries overlapped"
        );
    }
}

#[tokio::test]
async fn kill_9_mid_request_loses_nothing_and_the_log_shows_both_attempts() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    // The first four requests hang (their relay is killed meanwhile); later ones succeed.
    let seen = Arc::new(AtomicUsize::new(0));
    let n = seen.clone();
    receiver.handle(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) < 4 {
            Reply::ok().delay(Duration::from_secs(60))
        } else {
            Reply::ok()
        }
    });
    apply(
        &db,
        &webhook(
            "slow",
            &receiver.url("/slow"),
            "timeout = \"2s\"\nmax_in_flight = 8",
        ),
    )
    .await;
    let client = db.connect().await;
    for id in ["1", "2", "3", "4"] {
        emit(&client, "order.created", "order", id, serde_json::json!({})).await;
    }

    let mut doomed = std::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &db.url)
        .env("OUTBOX_LEASE", "1s")
        .env("OUTBOX_POLL_INTERVAL", "100ms")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("relay binary starts");
    receiver.wait_for(4, SOON).await;
    doomed.kill().expect("kill -9 the relay");
    let _ = doomed.wait();
    let in_flight: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox.deliveries WHERE status = 'in_flight'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        in_flight, 4,
        "four requests were in flight when the relay died"
    );

    let mut settings = settings(&db);
    settings.lease = Duration::from_secs(1);
    let relay = outbox_relay::relay::Relay::start(settings).await.unwrap();
    let log = wait_for_status(&client, 4, "succeeded").await;
    relay.stop().await;

    let requests = receiver.requests();
    assert_eq!(requests.len(), 8);
    let mut by_id: HashMap<&str, Vec<&str>> = HashMap::new();
    for r in &requests {
        by_id
            .entry(r.header("webhook-id").unwrap())
            .or_default()
            .push(r.header("webhook-attempt").unwrap());
    }
    assert_eq!(by_id.len(), 4);
    assert!(by_id.values().all(|a| *a == vec!["1", "2"]), "{by_id:?}");
    for d in &log {
        assert_eq!(d.attempts, 2);
        let tried = attempt_errors(&client, d.id).await;
        assert_eq!(tried.len(), 2);
        assert_eq!((tried[0].0, tried[0].2.as_str()), (1, "abandoned"));
        assert!(tried[0].3.as_deref().unwrap().contains("did not report"));
        assert_eq!(
            (tried[1].0, tried[1].1, tried[1].2.as_str()),
            (2, Some(200), "success")
        );
    }
}
