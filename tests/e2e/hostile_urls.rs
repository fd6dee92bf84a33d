//! Hostile values in URL templates (issue 14): a merge field never moves a request to another
//! path.

use outbox_testkit::{TestDb, TestReceiver, wait_until};

use crate::support::*;

#[tokio::test]
async fn an_entity_id_of_dot_dot_never_reaches_another_path() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"by-id\"\nevents = [\"order.*\"]\nurl = \"{}\"\nmax_attempts = 1\n",
            receiver.url("/hook/{{ id }}")
        ),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    for id in ["..", ".", "ok"] {
        emit(&client, "order.created", "order", id, serde_json::json!({})).await;
    }
    wait_for_status(&client, 2, "dead").await;
    wait_until(SOON, "the good request", || async {
        (receiver.count() >= 1).then_some(())
    })
    .await;
    relay.stop().await;

    let paths: Vec<String> = receiver.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        vec!["/hook/ok"],
        "nothing but /hook/ok was requested"
    );
    for d in delivery_log(&client).await {
        if d.entity_id == "ok" {
            assert_eq!(d.status, "succeeded");
            continue;
        }
        let tried = attempt_errors(&client, d.id).await;
        let (_, status, outcome, error) = &tried[0];
        assert_eq!((status, outcome.as_str()), (&None, "render_error"));
        let error = error.as_deref().unwrap();
        assert!(
            error.contains("/hook/%2E") && error.contains("resolve"),
            "{}: {error}",
            d.entity_id
        );
    }
}
