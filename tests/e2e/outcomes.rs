//! What each kind of answer (or non-answer) does: Retry-After, 410 Gone, redirects, timeouts,
//! connection errors, the network policy, and the dead-delivery alert (issue 5).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use outbox_testkit::{Reply, TestDb, TestReceiver, wait_until};

use crate::support::*;

#[tokio::test]
async fn retry_after_in_seconds_or_as_a_date_sets_the_next_attempt() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let answered = Arc::new(AtomicUsize::new(0));
    let n = answered.clone();
    receiver.handle(move |_| match n.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::status(429).header("Retry-After", "2"),
        1 => {
            let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
            Reply::status(503).header("Retry-After", &at)
        }
        _ => Reply::ok(),
    });
    // Without Retry-After the next attempts would come after 100ms; the cap is the last step.
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"busy\"\nevents = [\"*\"]\nurl = \"{}\"\nretry_schedule = [\"100ms\", \"1h\"]\n",
            receiver.url("/busy")
        ),
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
    let log = wait_for_status(&client, 1, "succeeded").await;
    relay.stop().await;

    let got = receiver.requests();
    assert_eq!(got.len(), 3);
    // Seconds: 2s after the answer. An HTTP date has one-second resolution: "3s from now"
    // rounds down to between 2s and 3s. Lower bounds are exact up to clock reading; the upper
    // bounds are loose (polling, a busy machine).
    let first_wait = got[1].at - got[0].answered_at;
    let second_wait = got[2].at - got[1].answered_at;
    assert!(
        first_wait >= Duration::from_millis(1950) && first_wait < Duration::from_secs(8),
        "Retry-After: 2 waited {first_wait:?}"
    );
    assert!(
        second_wait >= Duration::from_millis(1950) && second_wait < Duration::from_secs(9),
        "Retry-After: <date 3s ahead> waited {second_wait:?}"
    );
    assert_eq!(
        attempts(&client, log[0].id).await,
        vec![
            (1, Some(429), "http_error".to_string()),
            (2, Some(503), "http_error".to_string()),
            (3, Some(200), "success".to_string()),
        ]
    );
}

#[tokio::test]
async fn gone_switches_the_webhook_off_raises_an_event_and_keeps_its_deliveries_queued() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|_| Reply::status(410).body("unsubscribed"));
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"gone\"\nevents = [\"order.*\"]\nurl = \"{}\"\nretry_schedule = [\"50ms\"]\n",
            receiver.url("/gone")
        ),
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

    let reason: String = wait_until(SOON, "the webhook to be switched off", || async {
        client
            .query_one(
                "SELECT active, disabled_reason FROM outbox.webhooks WHERE name = 'gone'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, Option<String>>(1)
    })
    .await;
    assert!(reason.contains("410"), "{reason}");
    let active: bool = client
        .query_one(
            "SELECT active FROM outbox.webhooks WHERE name = 'gone'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!active);
    let event = client
        .query_one(
            "SELECT entity, entity_id, data FROM outbox.events WHERE event_type = 'relay.webhook.disabled'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(event.get::<_, String>(0), "webhook");
    assert_eq!(event.get::<_, String>(1), "gone");
    let data: serde_json::Value = event.get(2);
    assert_eq!(data["webhook"], "gone");
    assert!(data["delivery_id"].is_i64(), "{data}");

    // Its deliveries (the one that got the 410, and new ones) stay queued, unsent.
    emit(
        &client,
        "order.updated",
        "order",
        "1",
        serde_json::json!({}),
    )
    .await;
    emit(
        &client,
        "order.updated",
        "order",
        "2",
        serde_json::json!({}),
    )
    .await;
    wait_for_overdue(&client, "gone", 3).await;
    assert_eq!(
        receiver.count(),
        1,
        "nothing is sent to a switched-off webhook"
    );
    let first = &delivery_log(&client).await[0];
    assert_eq!((first.status.as_str(), first.attempts), ("pending", 1));

    // Switched on again, it sends them all.
    receiver.handle(|_| Reply::ok());
    client
        .execute(
            "UPDATE outbox.webhooks SET active = true WHERE name = 'gone'",
            &[],
        )
        .await
        .unwrap();
    wait_for_status(&client, 3, "succeeded").await;
    relay.stop().await;
    assert_eq!(receiver.count(), 4);
    let events: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox.events WHERE event_type = 'relay.webhook.disabled'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 1);
}

#[tokio::test]
async fn link_local_and_denied_networks_are_refused_before_connecting() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let port = receiver.addr().port();
    let hook = |name: &str, url: &str| {
        format!(
            "[[webhook]]\nname = \"{name}\"\nevents = [\"*\"]\nurl = \"{url}\"\nmax_attempts = 1\n"
        )
    };
    apply(
        &db,
        &[
            hook("metadata", "http://169.254.169.254/latest/meta-data/"),
            hook("metadata-v6", "http://[fe80::1]/"),
            hook("denied-ip", &format!("http://127.0.0.1:{port}/")),
            hook("denied-by-dns", &format!("http://localhost:{port}/")),
        ]
        .concat(),
    )
    .await;
    let mut settings = settings(&db);
    settings.deny_networks = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    let relay = outbox_relay::relay::Relay::start(settings).await.unwrap();
    let client = db.connect().await;
    emit(
        &client,
        "order.created",
        "order",
        "1",
        serde_json::json!({}),
    )
    .await;
    let log = wait_for_status(&client, 4, "dead").await;
    relay.stop().await;

    assert_eq!(receiver.connections(), 0, "no connection was ever opened");
    for d in log.iter().filter(|d| d.event_type == "order.created") {
        let tried = attempt_errors(&client, d.id).await;
        assert_eq!(tried.len(), 1);
        let (_, status, outcome, error) = &tried[0];
        assert_eq!(
            (status, outcome.as_str()),
            (&None, "refused"),
            "{}",
            d.webhook
        );
        let error = error.as_deref().unwrap();
        assert!(error.contains("network policy"), "{}: {error}", d.webhook);
        let expected = match d.webhook.as_str() {
            "metadata" => "169.254.169.254",
            "metadata-v6" => "fe80::1",
            _ => "127.0.0.1",
        };
        assert!(error.contains(expected), "{}: {error}", d.webhook);
    }
}

#[tokio::test]
async fn redirects_timeouts_and_connection_errors_fail_with_a_clear_error() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|r| match r.path.as_str() {
        "/moved" => Reply::status(302).header("Location", "/elsewhere"),
        "/slow" => Reply::ok().delay(Duration::from_secs(5)),
        _ => Reply::ok(),
    });
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let hook = |name: &str, url: &str, extra: &str| {
        format!(
            "[[webhook]]\nname = \"{name}\"\nevents = [\"*\"]\nurl = \"{url}\"\nmax_attempts = 1\n{extra}\n"
        )
    };
    apply(
        &db,
        &[
            hook("moved", &receiver.url("/moved"), ""),
            hook("slow", &receiver.url("/slow"), "timeout = \"300ms\""),
            hook("closed", &format!("http://127.0.0.1:{closed}/"), ""),
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
    let log = wait_for_status(&client, 3, "dead").await;
    relay.stop().await;

    let outcome_of = async |webhook: &str| {
        let d = log
            .iter()
            .find(|d| d.webhook == webhook && d.event_type == "order.created")
            .unwrap();
        attempt_errors(&client, d.id).await.remove(0)
    };
    let (_, status, outcome, error) = outcome_of("moved").await;
    assert_eq!((status, outcome.as_str()), (Some(302), "http_error"));
    assert!(error.unwrap().contains("redirects are not followed"));
    let paths: Vec<String> = receiver.requests().iter().map(|r| r.path.clone()).collect();
    assert!(!paths.contains(&"/elsewhere".to_string()), "{paths:?}");

    let (_, status, outcome, error) = outcome_of("slow").await;
    assert_eq!((status, outcome.as_str()), (None, "timeout"));
    assert!(error.unwrap().contains("300ms"));

    let (_, status, outcome, error) = outcome_of("closed").await;
    assert_eq!((status, outcome.as_str()), (None, "connect_error"));
    let error = error.unwrap();
    assert!(error.contains(&closed.to_string()), "{error}");
}

#[tokio::test]
async fn a_dead_delivery_raises_one_alert_that_other_webhooks_can_route() {
    let db = TestDb::new().await;
    let failing = TestReceiver::start().await;
    failing.handle(|_| Reply::status(500).body("nope"));
    let it = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            r#"[[webhook]]
name = "everything"
events = ["*"]
url = "{}"
max_attempts = 1

[[webhook]]
name = "it-manager"
events = ["relay.delivery.dead"]
url = "{}"
"#,
            failing.url("/all"),
            it.url("/alerts")
        ),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    emit(
        &client,
        "invoice.created",
        "invoice",
        "INV-1",
        serde_json::json!({}),
    )
    .await;
    let alert = it.wait_for(1, SOON).await.remove(0).json();
    // The alert event is routed to "everything" too, and dies there: no alert about that one.
    let log = wait_for_webhook_status(&client, "everything", 2, "dead").await;
    relay.stop().await;

    assert_eq!(alert["type"], "relay.delivery.dead");
    assert_eq!(alert["entity"], "delivery");
    assert_eq!(alert["entity_id"], log[0].id.to_string());
    let data = &alert["data"];
    assert_eq!(data["webhook"], "everything");
    assert_eq!(data["event_type"], "invoice.created");
    assert_eq!(data["entity"], "invoice");
    assert_eq!(data["entity_id"], "INV-1");
    assert_eq!(data["attempts"], 1);
    assert_eq!(data["last_status"], 500);
    assert!(data["last_error"].as_str().unwrap().contains("500"));
    assert!(data["event_id"].is_i64());
    let alerts: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox.events WHERE event_type = 'relay.delivery.dead'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(alerts, 1, "deliveries of relay.* events raise no alerts");
    assert_eq!(it.count(), 1);
}
