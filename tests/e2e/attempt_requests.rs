//! Every attempt keeps the request it sent (URL, headers, body) and the response's headers, with
//! every secret hidden: what the receiver got is what the log, `deliveries show`, the API and
//! the console show, and no secret is anywhere in `outbox.attempts`.

use std::collections::BTreeMap;

use outbox_testkit::{Received, Reply, TestDb, TestReceiver};
use serde_json::{Value, json};

use crate::spine::schema_at_version;
use crate::support::*;

const PASSWORD: &str = "BasicPass_4711";
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const HMAC_SECRET: &str = "HmacSecret_2718";
const API_KEY: &str = "ApiKey_1234";
const QUERY_KEY: &str = "QueryKey_5678";
const COOKIE: &str = "ReceiverCookie_99";

/// Headers the HTTP client adds on its own (not part of the rendered request).
const CLIENT_HEADERS: [&str; 4] = ["host", "content-length", "accept", "accept-encoding"];

fn hooks(receiver: &TestReceiver) -> String {
    format!(
        r#"
[[webhook]]
name = "standard"
events = ["order.*"]
url = "{base}/hook/{{{{ entity_id }}}}?api_key={QUERY_KEY}&id={{{{ id }}}}"
headers = {{ "X-Api-Key" = "{API_KEY}", "X-Shop" = "{{{{ event.metadata.shop }}}}" }}
max_attempts = 2
retry_schedule = ["50ms"]
[webhook.auth]
basic = {{ username = "relay", password = "{PASSWORD}" }}
[webhook.signature]
secrets = ["{SIGNING_SECRET}"]

[[webhook]]
name = "hmac"
events = ["order.*"]
url = "{base}/hmac"
[webhook.signature]
scheme = "hmac-sha256"
header = "X-Hub"
secrets = ["{HMAC_SECRET}"]
"#,
        base = receiver.url("")
    )
}

/// `(attempt, request, response_headers)` of a delivery's attempts, as stored.
async fn stored(client: &tokio_postgres::Client, delivery: i64) -> Vec<(i32, Value, Value)> {
    client
        .query(
            "SELECT attempt, coalesce(request, 'null'), coalesce(response_headers, 'null')
             FROM outbox.attempts WHERE delivery_id = $1 ORDER BY attempt",
            &[&delivery],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
}

/// The stored request is the received one: method, path and query (credentials hidden), every
/// header the relay rendered (secrets hidden), the body byte for byte.
fn assert_matches(request: &Value, got: &Received, secret_headers: &[&str]) {
    assert_eq!(request["method"], got.method, "{request}");
    let url = request["url"].as_str().unwrap();
    let path = url.split_once("127.0.0.1").unwrap().1;
    let path = &path[path.find('/').unwrap()..];
    assert_eq!(
        path,
        got.path.replace(QUERY_KEY, "***"),
        "the URL as sent, its key hidden"
    );
    let headers = pairs(&request["headers"]);
    let sent: Vec<&(String, String)> = got
        .headers
        .iter()
        .filter(|(n, _)| !CLIENT_HEADERS.contains(&n.as_str()))
        .collect();
    assert_eq!(headers.len(), sent.len(), "{headers:?} vs {sent:?}");
    for (name, value) in &headers {
        let received = got
            .header(name)
            .unwrap_or_else(|| panic!("{name} was not received"));
        if secret_headers.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            assert_eq!(value, "***", "{name}");
            assert_ne!(received, "***");
        } else {
            assert_eq!(value, received, "{name}");
        }
    }
    assert_eq!(request["body"].as_str().unwrap().as_bytes(), &got.body[..]);
    assert_eq!(request["body_bytes"], got.body.len());
}

#[tokio::test]
async fn each_attempt_stores_the_request_it_sent_and_no_secret() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|r| {
        if r.path.starts_with("/hook") && r.header("webhook-attempt") == Some("1") {
            Reply::status(500)
                .header("x-trace", "t-1")
                .header("set-cookie", &format!("session={COOKIE}"))
                .body("try again")
        } else {
            Reply::ok().header("x-request-id", "r-2")
        }
    });
    apply(&db, &hooks(&receiver)).await;
    let (mut relay, addr) = spawn_relay(&db, &[]).await;
    let client = db.connect().await;
    client
        .execute(
            "SELECT outbox.emit('order.created', 'order', '7', $1, $2)",
            &[
                &json!({ "id": 7, "note": "a \"quoted\" <word>" }),
                &json!({ "shop": "nl" }),
            ],
        )
        .await
        .unwrap();
    wait_for_status(&client, 2, "succeeded").await;
    let standard = deliveries_of(&client, "standard").await[0].id;
    let hmac = deliveries_of(&client, "hmac").await[0].id;
    let got = receiver.requests();
    let hook: Vec<&Received> = got.iter().filter(|r| r.path.starts_with("/hook")).collect();
    assert_eq!(hook.len(), 2);

    let attempts = stored(&client, standard).await;
    assert_eq!(attempts.len(), 2);
    for ((attempt, request, _), received) in attempts.iter().zip(&hook) {
        assert_eq!(
            received.header("webhook-attempt"),
            Some(attempt.to_string().as_str())
        );
        assert_matches(
            request,
            received,
            &["authorization", "webhook-signature", "x-api-key"],
        );
    }
    let first = pairs(&attempts[0].2);
    assert!(
        first.contains(&("x-trace".into(), "t-1".into())),
        "{first:?}"
    );
    assert!(
        first.contains(&("set-cookie".into(), "***".into())),
        "{first:?}"
    );
    let second = pairs(&attempts[1].2);
    assert!(
        second.contains(&("x-request-id".into(), "r-2".into())),
        "{second:?}"
    );

    let hmac_attempts = stored(&client, hmac).await;
    let hmac_got = got.iter().find(|r| r.path == "/hmac").unwrap();
    assert_matches(&hmac_attempts[0].1, hmac_got, &["x-hub"]);

    // No secret anywhere in the attempt log: not the configured ones, not the signatures and
    // credentials as they went over the wire, not the receiver's cookie.
    let mut secrets: Vec<String> = [PASSWORD, SIGNING_SECRET, HMAC_SECRET, API_KEY, QUERY_KEY]
        .iter()
        .map(|s| s.to_string())
        .collect();
    secrets.push(COOKIE.into());
    for r in &got {
        for name in ["authorization", "webhook-signature", "x-hub", "x-api-key"] {
            if let Some(v) = r.header(name) {
                secrets.push(v.to_string());
                secrets.extend(
                    v.split([' ', ','])
                        .filter(|p| p.len() > 8)
                        .map(String::from),
                );
            }
        }
    }
    let rows: Vec<String> = client
        .query("SELECT a::text FROM outbox.attempts a", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        for secret in &secrets {
            assert!(!row.contains(secret.as_str()), "{secret:?} stored: {row}");
        }
    }

    // `deliveries show --json` and the API return the stored request, typed.
    let (code, out, err) = cli(
        &db,
        &["deliveries", "show", &standard.to_string(), "--json"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let (status, api) = http(
        "GET",
        &format!("http://{addr}/api/deliveries/{standard}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{api}");
    for text in [&out, &api] {
        let shown: Value = serde_json::from_str(text).unwrap();
        for (i, (_, request, response_headers)) in attempts.iter().enumerate() {
            let a = &shown["attempts"][i];
            assert_eq!(a["request"]["url"], request["url"]);
            assert_eq!(a["request"]["body"], request["body"]);
            assert_eq!(a["request"]["body_truncated"], false);
            let headers: BTreeMap<String, String> = a["request"]["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h["name"].as_str().unwrap().into(),
                        h["value"].as_str().unwrap().into(),
                    )
                })
                .collect();
            assert_eq!(headers, pairs(&request["headers"]).into_iter().collect());
            assert_eq!(
                a["response_headers"].as_array().unwrap().len(),
                pairs(response_headers).len()
            );
        }
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{secret:?} shown: {text}");
        }
    }
    let (code, out, _) = cli(&db, &["deliveries", "show", &standard.to_string()], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("attempt 2: request as sent"), "{out}");
    assert!(out.contains("webhook-signature: ***"), "{out}");
    assert!(out.contains("x-request-id: r-2"), "{out}");

    // The console shows it as sent, and nothing rendered again.
    let page = reqwest::get(format!("http://{addr}/ui/deliveries/{standard}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Request (as sent)"), "{page}");
    assert!(!page.contains("rendered again"), "{page}");
    assert!(page.contains("x-trace: t-1"), "{page}");
    for secret in &secrets {
        assert!(!page.contains(secret.as_str()), "{secret:?} on the page");
    }
    assert_eq!(relay.terminate().await, Some(0));
}

#[tokio::test]
async fn attempts_without_a_stored_request_say_why() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"w\"\nevents = [\"order.*\"]\nurl = \"{}\"\nmax_attempts = 1\n\
             body = '{{{{ event.data.cod }}}}'\n\n\
             [[webhook]]\nname = \"ok\"\nevents = [\"order.*\"]\nurl = \"{}\"\n",
            receiver.url("/w"),
            receiver.url("/ok")
        ),
    )
    .await;
    let (mut relay, addr) = spawn_relay(&db, &[]).await;
    let client = db.connect().await;
    emit(&client, "order.created", "order", "1", json!({})).await;
    let failed = wait_for_webhook_status(&client, "w", 1, "dead").await[0].id;
    let ok = wait_for_webhook_status(&client, "ok", 1, "succeeded").await[0].id;

    // A request that could not be rendered was never made.
    assert_eq!(stored(&client, failed).await[0].1, Value::Null);
    let page = |id: i64| {
        let url = format!("http://{addr}/ui/deliveries/{id}");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let html = page(failed).await;
    assert!(html.contains("No request was sent"), "{html}");

    // An attempt recorded before requests were stored: its request is rendered again, labelled.
    client
        .execute(
            "UPDATE outbox.attempts SET request = NULL, response_headers = NULL WHERE delivery_id = $1",
            &[&ok],
        )
        .await
        .unwrap();
    let html = page(ok).await;
    assert!(
        html.contains("Request (rendered again: not recorded with this attempt)"),
        "{html}"
    );
    assert!(
        html.contains("class=\"request rendered\">POST http:"),
        "{html}"
    );
    let (_, api) = http("GET", &format!("http://{addr}/api/deliveries/{ok}"), None).await;
    let shown: Value = serde_json::from_str(&api).unwrap();
    assert_eq!(shown["attempts"][0]["request"], Value::Null, "{api}");
    assert_eq!(relay.terminate().await, Some(0));
}

#[tokio::test]
async fn upgrading_keeps_the_attempts_logged_before() {
    let db = TestDb::empty().await;
    let mut client = db.connect().await;
    client
        .batch_execute(&format!(
            "{}
             INSERT INTO outbox.attempts (delivery_id, attempt, started_at, duration_ms, status, error, response, outcome)
             VALUES (1, 1, now(), 12, 200, NULL, 'ok', 'success');",
            schema_at_version(7)
        ))
        .await
        .unwrap();
    assert_eq!(outbox_core::migrate(&mut client).await.unwrap(), vec![8]);
    // Repeating the migration's SQL by hand changes nothing.
    client
        .batch_execute(outbox_core::sql::MIGRATIONS[7].2)
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT delivery_id, attempt, duration_ms, status, response, outcome,
                    request IS NULL, response_headers IS NULL
             FROM outbox.attempts",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert_eq!(row.get::<_, i32>(2), 12);
    assert_eq!(row.get::<_, String>(4), "ok");
    assert!(row.get::<_, bool>(6) && row.get::<_, bool>(7));
    assert!(outbox_core::migrate(&mut client).await.unwrap().is_empty());
}
