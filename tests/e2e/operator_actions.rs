//! Pause, resume and cancel from the command line and the API (the console's buttons call the
//! same admin functions), and the page of a webhook named like the console's create form.

use outbox_testkit::{TestDb, TestReceiver};
use serde_json::{Value, json};

use crate::console::{client, post, session};
use crate::support::*;

const TOKEN: &str = "operator-actions-token";

fn webhook(name: &str, receiver: &TestReceiver) -> String {
    format!(
        "[[webhook]]\nname = \"{name}\"\nevents = [\"order.*\"]\nurl = \"{}\"\n",
        receiver.url(&format!("/{name}"))
    )
}

async fn active(client: &tokio_postgres::Client, name: &str) -> bool {
    client
        .query_one(
            "SELECT active FROM outbox.webhooks WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

async fn status(client: &tokio_postgres::Client, id: i64) -> String {
    client
        .query_one(
            "SELECT status FROM outbox.delivery_log WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

/// Emits `n` events and waits until `webhook` holds them, overdue, because it is paused.
async fn held(client: &tokio_postgres::Client, webhook: &str, n: usize) -> Vec<i64> {
    for i in 0..n {
        emit(client, "order.created", "order", &i.to_string(), json!({})).await;
    }
    wait_for_overdue(client, webhook, n as i64).await;
    deliveries_of(client, webhook)
        .await
        .iter()
        .map(|d| d.id)
        .collect()
}

#[tokio::test]
async fn pause_resume_and_cancel_from_the_command_line() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(&db, &webhook("w", &receiver)).await;
    let relay = start(&db).await;
    let client = db.connect().await;

    let (code, out, err) = cli(&db, &["webhooks", "pause", "w"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("paused webhook \"w\""), "{out}");
    assert!(!active(&client, "w").await);
    let (code, _, err) = cli(&db, &["webhooks", "pause", "nope"], &[]);
    assert_eq!(code, 2, "an unknown webhook is bad input");
    assert!(err.contains("no webhook named \"nope\""), "{err}");

    let ids = held(&client, "w", 3).await;
    let (one, two) = (ids[0].to_string(), ids[1].to_string());
    let (code, out, err) = cli(&db, &["deliveries", "cancel", &one, &two], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cancelled 2 deliveries"), "{out}");
    assert_eq!(status(&client, ids[0]).await, "cancelled");
    assert_eq!(status(&client, ids[1]).await, "cancelled");

    // Already cancelled, and unknown: both named, nothing else happens.
    let (code, out, err) = cli(
        &db,
        &["deliveries", "cancel", &one, "999999", "--json"],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["cancelled"], json!([]));
    assert_eq!(shown["failed"].as_array().unwrap().len(), 2, "{out}");
    assert!(
        err.contains("only pending deliveries can be cancelled"),
        "{err}"
    );
    assert!(err.contains("no delivery with id 999999"), "{err}");
    let (code, _, _) = cli(&db, &["deliveries", "cancel"], &[]);
    assert_eq!(code, 2, "no id given");

    let (code, out, err) = cli(&db, &["webhooks", "resume", "w", "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({ "webhook": "w", "active": true })
    );
    wait_for_webhook_status(&client, "w", 1, "succeeded").await;
    assert_eq!(
        receiver.count(),
        1,
        "the cancelled deliveries were not sent"
    );
    relay.stop().await;
}

#[tokio::test]
async fn pause_resume_and_cancel_through_the_api() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(&db, &webhook("w", &receiver)).await;
    let (mut relay, addr) = spawn_relay(&db, &[("OUTBOX_ADMIN_TOKEN", TOKEN)]).await;
    let api = |path: &str| format!("http://{addr}/api{path}");
    let client = db.connect().await;

    let (code, _) = http("POST", &api("/webhooks/w/pause"), None).await;
    assert_eq!(code, 401, "the same token as the rest of /api");
    assert!(active(&client, "w").await);
    let (code, body) = http("POST", &api("/webhooks/w/pause"), Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({ "webhook": "w", "active": false })
    );
    assert!(!active(&client, "w").await);
    let (code, body) = http("POST", &api("/webhooks/nope/resume"), Some(TOKEN)).await;
    assert_eq!(code, 404, "{body}");

    let ids = held(&client, "w", 2).await;
    let (code, _) = http(
        "POST",
        &api(&format!("/deliveries/{}/cancel", ids[0])),
        None,
    )
    .await;
    assert_eq!(code, 401);
    let (code, body) = http(
        "POST",
        &api(&format!("/deliveries/{}/cancel", ids[0])),
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({ "id": ids[0], "cancelled": true })
    );
    assert_eq!(status(&client, ids[0]).await, "cancelled");
    let (code, body) = http(
        "POST",
        &api(&format!("/deliveries/{}/cancel", ids[0])),
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("only pending deliveries"), "{body}");
    let (code, _) = http("POST", &api("/deliveries/999999/cancel"), Some(TOKEN)).await;
    assert_eq!(code, 404);
    let (code, _) = http("POST", &api("/deliveries/x/cancel"), Some(TOKEN)).await;
    assert_eq!(code, 400);

    let (code, body) = http("POST", &api("/webhooks/w/resume"), Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    assert!(active(&client, "w").await);
    wait_for_webhook_status(&client, "w", 1, "succeeded").await;
    assert_eq!(status(&client, ids[0]).await, "cancelled");
    assert_eq!(receiver.count(), 1);
    assert_eq!(relay.terminate().await, Some(0));
}

#[tokio::test]
async fn a_webhook_named_new_has_a_page_of_its_own() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &[webhook("new", &receiver), webhook("other", &receiver)].concat(),
    )
    .await;
    let relay = start(&db).await;
    let base = format!("http://{}", relay.addr());
    let client_db = db.connect().await;
    emit(
        &client_db,
        "order.created",
        "order",
        "1",
        json!({ "id": 1 }),
    )
    .await;
    let delivery = wait_for_webhook_status(&client_db, "new", 1, "succeeded").await[0].id;
    let get = |path: &str| {
        let url = format!("{base}{path}");
        async move {
            let response = client().get(url).send().await.unwrap();
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string());
            (status, location, response.text().await.unwrap())
        }
    };

    // Links to its page say which webhook is meant; the create form keeps its path.
    let (_, _, list) = get("/ui/webhooks").await;
    assert!(
        list.contains("href=\"/ui/webhooks/new?name=new\""),
        "{list}"
    );
    assert!(list.contains("href=\"/ui/webhooks/other\""), "{list}");
    let (_, _, page) = get(&format!("/ui/deliveries/{delivery}")).await;
    assert!(
        page.contains("href=\"/ui/webhooks/new?name=new\""),
        "{page}"
    );
    let (code, _, form) = get("/ui/webhooks/new").await;
    assert_eq!(code, 200);
    assert!(form.contains("<h1>New webhook</h1>"), "{form}");

    let (code, _, page) = get("/ui/webhooks/new?name=new").await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<h1>new "), "{page}");
    assert!(page.contains("<h2>Configuration</h2>"), "{page}");
    let url = receiver.url("/new").replace('/', "&#x2f;");
    assert!(page.contains(&url), "its own configuration: {page}");
    // Its test form (a GET form) carries the name along.
    assert!(page.contains("<input type=\"hidden\" name=\"name\" value=\"new\">"));
    let (code, _, page) = get("/ui/webhooks/new?name=new&entity=order&id=1").await;
    assert_eq!(code, 200);
    assert!(page.contains("id=\"request\""), "the test rendered: {page}");
    let (code, location, _) = get("/ui/webhooks/new?name=other").await;
    assert_eq!(code, 303);
    assert_eq!(location.as_deref(), Some("/ui/webhooks/other"));

    // Its actions keep their paths.
    let (code, _, edit) = get("/ui/webhooks/new/edit").await;
    assert_eq!(code, 200);
    assert!(edit.contains("<h1>Edit new</h1>"), "{edit}");
    let (cookie, csrf) = session(&base, "/ui/webhooks/new?name=new").await;
    let (code, _) = post(&base, "/ui/webhooks/new/pause", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(code, 303);
    assert!(!active(&client_db, "new").await);
    assert!(active(&client_db, "other").await);
    let response = client()
        .post(format!("{base}/ui/webhooks/new/resume"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/ui/webhooks/new?name=new");
    assert!(active(&client_db, "new").await);
    relay.stop().await;
}
