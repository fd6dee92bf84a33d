//! Credentials in webhook URLs never show (issue 14): not in attempt errors, the delivery log,
//! the CLI, the admin API, `test`, nor the relay's most verbose logs; and the admin token check.

use outbox_testkit::{TestDb, TestReceiver};

use crate::support::*;

const TOKEN: &str = "admin-token-for-url-secrets";
const QUERY_KEY: &str = "QueryKey_777";
const USER_TOKEN: &str = "Token_55";
const URL_PASSWORD: &str = "UrlPass_31";

/// A port nothing listens on: every attempt fails with an error that quotes the URL.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn url_credentials_never_appear_in_errors_outputs_or_logs() {
    let db = TestDb::new().await;
    let closed = closed_port();
    let hook = |name: &str, url: &str| {
        format!(
            "[[webhook]]\nname = \"{name}\"\nevents = [\"order.*\"]\nurl = \"{url}\"\nmax_attempts = 1\n"
        )
    };
    apply(
        &db,
        &[
            hook(
                "query-key",
                &format!("http://127.0.0.1:{closed}/hook?api_key={QUERY_KEY}&id={{{{ id }}}}"),
            ),
            hook(
                "user-token",
                &format!("http://{USER_TOKEN}@127.0.0.1:{closed}/x"),
            ),
            hook(
                "user-password",
                &format!("http://relay:{URL_PASSWORD}@127.0.0.1:{closed}/y"),
            ),
        ]
        .concat(),
    )
    .await;
    let (mut relay, addr) =
        spawn_relay(&db, &[("RUST_LOG", "trace"), ("OUTBOX_ADMIN_TOKEN", TOKEN)]).await;
    let base = format!("http://{addr}");
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

    // What the database keeps: attempt errors, the log's last_error, the dead-delivery alerts.
    let mut seen = Vec::new();
    for row in client
        .query(
            "SELECT coalesce(error, '') FROM outbox.attempts
             UNION ALL SELECT coalesce(last_error, '') FROM outbox.delivery_log
             UNION ALL SELECT data::text FROM outbox.events",
            &[],
        )
        .await
        .unwrap()
    {
        seen.push(row.get::<_, String>(0));
    }
    let errors: Vec<&String> = seen.iter().filter(|e| e.contains("127.0.0.1")).collect();
    assert!(
        errors.iter().any(|e| e.contains("api_key=***")),
        "the error still names the URL, redacted: {errors:?}"
    );

    // The CLI. One attempt's error is as an older relay recorded it, unredacted: shown redacted.
    let query_key = log.iter().find(|d| d.webhook == "query-key").unwrap().id;
    let raw =
        format!("error sending request for url (http://127.0.0.1:1/hook?api_key={QUERY_KEY})");
    client
        .execute(
            "UPDATE outbox.attempts SET error = $2 WHERE delivery_id = $1",
            &[&query_key, &raw],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE outbox.deliveries_done SET last_error = $2 WHERE id = $1",
            &[&query_key, &raw],
        )
        .await
        .unwrap();
    let id = query_key.to_string();
    for args in [
        &["deliveries", "list"][..],
        &["deliveries", "list", "--json"],
        &["deliveries", "show", &id],
        &["deliveries", "show", &id, "--json"],
        &["webhooks", "list"],
        &["webhooks", "list", "--json"],
        &["webhooks", "show", "user-token"],
        &["webhooks", "show", "user-token", "--json"],
        &["webhooks", "show", "query-key", "--json"],
        &[
            "test",
            "query-key",
            "--entity",
            "order",
            "--id",
            "1",
            "--send",
        ],
        &[
            "test",
            "user-token",
            "--entity",
            "order",
            "--id",
            "1",
            "--send",
            "--json",
        ],
        &[
            "test",
            "user-password",
            "--entity",
            "order",
            "--id",
            "1",
            "--send",
        ],
    ] {
        let (_, stdout, stderr) = cli(&db, args, &[]);
        seen.push(format!("{args:?}: {stdout}{stderr}"));
    }

    // The admin API, `test` with `send` included.
    let http_client = reqwest::Client::new();
    for path in [
        "/api/webhooks".to_string(),
        "/api/deliveries".to_string(),
        format!("/api/deliveries/{query_key}"),
    ] {
        seen.push(http("GET", &format!("{base}{path}"), Some(TOKEN)).await.1);
    }
    for name in ["query-key", "user-token", "user-password"] {
        let response = http_client
            .post(format!("{base}/api/webhooks/{name}/test"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(r#"{"entity": "order", "id": "1", "send": true}"#)
            .send()
            .await
            .unwrap();
        let body = response.text().await.unwrap();
        assert!(body.contains("send_error"), "{body}");
        seen.push(body);
    }
    assert_eq!(relay.terminate().await, Some(0));
    seen.push(relay.stdout_text());
    seen.push(relay.stderr_text());

    let everything = seen.join("\n");
    assert!(
        everything.contains("***@127.0.0.1") && everything.contains("relay:***@127.0.0.1"),
        "user info is shown redacted"
    );
    for secret in [QUERY_KEY, USER_TOKEN, URL_PASSWORD] {
        let leaks: Vec<&str> = everything.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "{secret} leaked in:\n{}",
            leaks.join("\n")
        );
    }
}

#[tokio::test]
async fn the_admin_token_scheme_is_case_insensitive_and_wrong_tokens_of_any_length_fail() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"a\"\nevents = [\"*\"]\nurl = \"{}\"\n",
            receiver.url("/a")
        ),
    )
    .await;
    let (mut relay, addr) = spawn_relay(&db, &[("OUTBOX_ADMIN_TOKEN", TOKEN)]).await;
    let url = format!("http://{addr}/api/webhooks");
    let client = reqwest::Client::new();
    let status = |header: String| {
        let request = client.get(&url).header("authorization", header);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        assert_eq!(status(format!("{scheme} {TOKEN}")).await, 200, "{scheme}");
    }
    let longer = format!("{TOKEN}x");
    let prefix = &TOKEN[..TOKEN.len() - 1];
    for wrong in [
        format!("Bearer {longer}"),
        format!("Bearer {prefix}"),
        "Bearer ".to_string(),
        format!("Basic {TOKEN}"),
        TOKEN.to_string(),
        format!("Bearer{TOKEN}"),
    ] {
        assert_eq!(status(wrong.clone()).await, 401, "{wrong:?}");
    }
    assert_eq!(relay.terminate().await, Some(0));
}
