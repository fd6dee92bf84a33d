//! The admin service (`outbox-admin`) that the CLI, the JSON API and the console share: writes
//! through `apply`'s checks, pause/resume, keyset pages, selections counted before a retry,
//! cancel, and the overview's figures.

use outbox_admin::deliveries::{self, Filter, Selection};
use outbox_admin::{AdminError, ErrorKind, overview, webhooks};
use outbox_testkit::{Reply, TestDb, TestReceiver};
use serde_json::json;

use crate::support::*;

fn item(text: &str) -> toml::Value {
    toml::from_str(text).expect("test TOML parses")
}

#[tokio::test]
async fn a_webhook_is_created_only_when_every_check_passes() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let bad = item(
        r#"name = "crm"
events = ["order.*"]
url = "https://crm.example/"
filter = "event.data.("
max_attempts = 0"#,
    );
    let Err(AdminError::InvalidWebhook { problems, .. }) = webhooks::create(&client, bad).await
    else {
        panic!("an invalid webhook is refused");
    };
    let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
    assert!(fields.contains(&"filter"), "{problems:?}");
    assert!(fields.contains(&"max_attempts"), "{problems:?}");
    assert!(
        webhooks::list(&client).await.unwrap().is_empty(),
        "nothing written"
    );

    let good = "name = \"crm\"\nevents = [\"order.*\"]\nurl = \"https://crm.example/\"";
    webhooks::create(&client, item(good)).await.unwrap();
    assert_eq!(webhooks::show(&client, "crm").await.unwrap().name, "crm");
    // The name is taken now; and a webhook keeps its name when changed.
    let Err(e) = webhooks::create(&client, item(good)).await else {
        panic!("a second webhook of the same name is refused");
    };
    assert_eq!(e.kind(), ErrorKind::Invalid);
    let renamed = "name = \"crm2\"\nevents = [\"*\"]\nurl = \"https://crm.example/\"";
    let Err(AdminError::InvalidWebhook { problems, .. }) =
        webhooks::update(&client, "crm", item(renamed)).await
    else {
        panic!("a rename is refused");
    };
    assert_eq!(problems[0].0, "name");
    let changed = "name = \"crm\"\nevents = [\"*\"]\nurl = \"https://crm.example/v2\"";
    webhooks::update(&client, "crm", item(changed))
        .await
        .unwrap();
    let shown = webhooks::show(&client, "crm").await.unwrap();
    assert_eq!(shown.config["url"], "https://crm.example/v2");
    assert_eq!(shown.events(), ["*"]);

    webhooks::delete(&client, "crm").await.unwrap();
    assert!(matches!(
        webhooks::delete(&client, "crm").await,
        Err(AdminError::NoWebhook { .. })
    ));
}

#[tokio::test]
async fn paused_webhooks_hold_their_deliveries_until_resumed() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"w\"\nevents = [\"*\"]\nurl = \"{}\"\n",
            receiver.url("/hook")
        ),
    )
    .await;
    let _relay = start(&db).await;
    webhooks::pause(&client, "w").await.unwrap();
    assert_eq!(
        webhooks::show(&client, "w").await.unwrap().state(),
        webhooks::WebhookState::Paused
    );
    // The relay reloads on the change; what is emitted now queues without being sent.
    outbox_testkit::wait_until(SOON, "the pause to take effect", || async {
        emit(&client, "order.created", "order", "probe", json!({})).await;
        let log = delivery_log(&client).await;
        let pending = log.iter().filter(|d| d.status == "pending").count();
        (pending >= 2).then_some(())
    })
    .await;
    let sent_while_paused = receiver.count();
    webhooks::resume(&client, "w").await.unwrap();
    let log = delivery_log(&client).await;
    wait_for_status(&client, log.len(), "succeeded").await;
    assert!(receiver.count() > sent_while_paused);
}

#[tokio::test]
async fn the_queue_pages_by_id_and_selections_are_counted_before_a_retry() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|_| Reply::status(500));
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"w\"\nevents = [\"order.*\"]\nurl = \"{}\"\nmax_attempts = 1\n",
            receiver.url("/hook")
        ),
    )
    .await;
    let relay = start(&db).await;
    for i in 0..5 {
        emit(
            &client,
            "order.created",
            "order",
            &i.to_string(),
            json!({ "n": i }),
        )
        .await;
    }
    wait_for_status(&client, 5, "dead").await;
    relay.stop().await;

    let first = deliveries::list(&client, &Filter::default(), None, 2)
        .await
        .unwrap();
    assert_eq!(first.deliveries.len(), 2);
    let second = deliveries::list(&client, &Filter::default(), first.next_before, 2)
        .await
        .unwrap();
    let third = deliveries::list(&client, &Filter::default(), second.next_before, 2)
        .await
        .unwrap();
    let mut ids: Vec<i64> = [first, second, third.clone()]
        .iter()
        .flat_map(|p| p.deliveries.iter().map(|d| d.id))
        .collect();
    assert_eq!(third.next_before, None, "the last page says so");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "every delivery once");

    let one_record = Filter {
        entity_id: Some("3".into()),
        ..Default::default()
    };
    let page = deliveries::list(&client, &one_record, None, 50)
        .await
        .unwrap();
    assert_eq!(page.deliveries.len(), 1);
    let shown = deliveries::show(&client, page.deliveries[0].id)
        .await
        .unwrap();
    assert_eq!(shown.attempts.len(), 1);
    assert_eq!(shown.attempts[0].status, Some(500));

    let dead = Selection {
        status: "dead".into(),
        webhook: Some("w".into()),
        ..Default::default()
    };
    assert_eq!(
        deliveries::count_selection(&client, &dead).await.unwrap(),
        5
    );
    let pending = Selection {
        status: "pending".into(),
        ..Default::default()
    };
    assert!(matches!(
        deliveries::count_selection(&client, &pending).await,
        Err(AdminError::BadInput {
            field: "status",
            ..
        })
    ));
    let retried = deliveries::retry_selection(&client, &dead).await.unwrap();
    assert_eq!(retried.requeued.len(), 5);
    assert_eq!(
        deliveries::count_selection(&client, &dead).await.unwrap(),
        0
    );

    // A pending delivery can be cancelled, once.
    let id = retried.requeued[0];
    deliveries::cancel(&client, id).await.unwrap();
    assert_eq!(
        deliveries::show(&client, id).await.unwrap().delivery.status,
        "cancelled"
    );
    assert!(matches!(
        deliveries::cancel(&client, id).await,
        Err(AdminError::NotCancellable { .. })
    ));
    assert!(matches!(
        deliveries::cancel(&client, 999_999).await,
        Err(AdminError::NoDelivery { .. })
    ));

    let figures = overview::overview(&client).await.unwrap();
    assert_eq!(figures.queue.pending, 4);
    assert_eq!(figures.queue.cancelled, 1);
    assert_eq!(figures.webhooks[0].name, "w");
    assert_eq!(figures.webhooks[0].attempts, 5);
    assert_eq!(figures.webhooks[0].failed_attempts, 5);
    assert!(figures.webhooks[0].needs_attention());

    // The pending rest, counted first, then cancelled at once.
    let rest = Filter {
        webhook: Some("w".into()),
        ..Default::default()
    };
    assert_eq!(deliveries::count_pending(&client, &rest).await.unwrap(), 4);
    let cancelled = deliveries::cancel_selection(&client, &rest).await.unwrap();
    assert_eq!(cancelled.cancelled.len(), 4);
    assert!(cancelled.skipped.is_empty());
    assert_eq!(
        overview::overview(&client).await.unwrap().queue.cancelled,
        5
    );
}
