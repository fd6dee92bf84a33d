//! Operations (issue 6): metrics, the admin API and its token rules, secrets kept out of responses
//! and logs, graceful shutdown, the queue gauges and database reconnects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use outbox_relay::relay::Relay;
use outbox_testkit::{Reply, TestDb, TestReceiver, wait_until};

use crate::support::*;

/// The metric names of docs/operations.md, exactly.
const METRICS: [&str; 14] = [
    "outbox_events_routed_total",
    "outbox_deliveries_created_total",
    "outbox_delivery_attempts_total",
    "outbox_deliveries_completed_total",
    "outbox_delivery_attempt_duration_seconds",
    "outbox_delivery_latency_seconds",
    "outbox_queue_depth",
    "outbox_oldest_pending_age_seconds",
    "outbox_filter_errors_total",
    "outbox_listener_notifications_total",
    "outbox_db_reconnects_total",
    "outbox_events_unroutable_total",
    "outbox_attempts_abandoned_total",
    "outbox_listener_connected",
];
const OUTCOMES: [&str; 6] = [
    "success",
    "http_error",
    "timeout",
    "connect_error",
    "render_error",
    "refused",
];

fn families(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// Every series of `webhooks`, with the values expected (zero unless listed in `nonzero`).
fn expected_series(webhooks: &[&str], nonzero: &[(String, f64)]) -> BTreeMap<String, f64> {
    let mut want = BTreeMap::new();
    for w in webhooks {
        want.insert(
            format!("outbox_deliveries_created_total{{webhook=\"{w}\"}}"),
            0.0,
        );
        want.insert(
            format!("outbox_filter_errors_total{{webhook=\"{w}\"}}"),
            0.0,
        );
        want.insert(
            format!("outbox_attempts_abandoned_total{{webhook=\"{w}\"}}"),
            0.0,
        );
        for o in OUTCOMES {
            want.insert(
                format!("outbox_delivery_attempts_total{{webhook=\"{w}\",outcome=\"{o}\"}}"),
                0.0,
            );
        }
        for s in ["succeeded", "dead"] {
            want.insert(
                format!("outbox_deliveries_completed_total{{webhook=\"{w}\",status=\"{s}\"}}"),
                0.0,
            );
        }
        for h in [
            "outbox_delivery_attempt_duration_seconds",
            "outbox_delivery_latency_seconds",
        ] {
            want.insert(format!("{h}_count{{webhook=\"{w}\"}}"), 0.0);
            want.insert(format!("{h}_bucket{{webhook=\"{w}\",le=\"+Inf\"}}"), 0.0);
        }
    }
    for s in ["pending", "in_flight"] {
        want.insert(format!("outbox_queue_depth{{status=\"{s}\"}}"), 0.0);
    }
    want.insert("outbox_oldest_pending_age_seconds".into(), 0.0);
    want.insert("outbox_events_routed_total".into(), 0.0);
    want.insert("outbox_db_reconnects_total".into(), 0.0);
    want.insert("outbox_events_unroutable_total".into(), 0.0);
    for (k, v) in nonzero {
        want.insert(k.clone(), *v);
    }
    want
}

fn mismatches(want: &BTreeMap<String, f64>, got: &BTreeMap<String, f64>) -> Vec<String> {
    want.iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: want {v}, got {:?}", got.get(k)))
        .collect()
}

#[tokio::test]
async fn metrics_count_known_traffic_exactly() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let flaky = Arc::new(AtomicUsize::new(0));
    let seen = flaky.clone();
    receiver.handle(move |req| {
        if req.path.starts_with("/flaky") && seen.fetch_add(1, Ordering::SeqCst) < 2 {
            Reply::status(500)
        } else if req.path.starts_with("/dead") {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    let hook = |name: &str, extra: &str, url: String| {
        format!(
            "[[webhook]]\nname = \"{name}\"\nevents = [\"order.*\"]\nurl = \"{url}\"\nretry_schedule = [\"50ms\"]\n{extra}\n"
        )
    };
    apply(
        &db,
        &[
            hook("ok", "", receiver.url("/ok")),
            hook(
                "flaky",
                "filter = 'event.entity_id == \"1\"'",
                receiver.url("/flaky"),
            ),
            hook(
                "dead",
                "filter = 'event.entity_id == \"2\"'\nmax_attempts = 2",
                receiver.url("/dead"),
            ),
            hook(
                "refused",
                "filter = 'event.entity_id == \"3\"'\nmax_attempts = 1",
                "http://169.254.169.254/latest".into(),
            ),
            hook(
                "broken-filter",
                "filter = 'event.data.nope.deeper == 1'",
                receiver.url("/never"),
            ),
        ]
        .concat(),
    )
    .await;
    let webhooks = ["ok", "flaky", "dead", "refused", "broken-filter"];
    let (mut relay, addr) = spawn_relay(&db, &[("RUST_LOG", "info,outbox_sender=debug")]).await;
    let metrics_url = format!("http://{addr}/metrics");

    // Before any traffic: exactly the documented names, every series at zero.
    let (status, text) = http("GET", &metrics_url, None).await;
    assert_eq!(status, 200);
    let mut names = METRICS.map(String::from).to_vec();
    names.sort();
    assert_eq!(families(&text), names);
    let zero = expected_series(&webhooks, &[]);
    assert_eq!(
        mismatches(&zero, &parse_metrics(&text)),
        Vec::<String>::new()
    );
    assert_eq!(
        parse_metrics(&text).get("outbox_listener_notifications_total"),
        Some(&0.0)
    );

    let client = db.connect().await;
    client
        .batch_execute(
            "SELECT outbox.emit('order.created', 'order', '1');
             SELECT outbox.emit('order.created', 'order', '2');
             SELECT outbox.emit('order.created', 'order', '3');",
        )
        .await
        .unwrap();

    let n = |k: &str, v: f64| (k.to_string(), v);
    let want = expected_series(
        &webhooks,
        &[
            // 3 orders + 2 relay.delivery.dead alerts (dead, refused)
            n("outbox_events_routed_total", 5.0),
            n("outbox_deliveries_created_total{webhook=\"ok\"}", 3.0),
            n("outbox_deliveries_created_total{webhook=\"flaky\"}", 1.0),
            n("outbox_deliveries_created_total{webhook=\"dead\"}", 1.0),
            n("outbox_deliveries_created_total{webhook=\"refused\"}", 1.0),
            n(
                "outbox_delivery_attempts_total{webhook=\"ok\",outcome=\"success\"}",
                3.0,
            ),
            n(
                "outbox_delivery_attempts_total{webhook=\"flaky\",outcome=\"http_error\"}",
                2.0,
            ),
            n(
                "outbox_delivery_attempts_total{webhook=\"flaky\",outcome=\"success\"}",
                1.0,
            ),
            n(
                "outbox_delivery_attempts_total{webhook=\"dead\",outcome=\"http_error\"}",
                2.0,
            ),
            n(
                "outbox_delivery_attempts_total{webhook=\"refused\",outcome=\"refused\"}",
                1.0,
            ),
            n(
                "outbox_deliveries_completed_total{webhook=\"ok\",status=\"succeeded\"}",
                3.0,
            ),
            n(
                "outbox_deliveries_completed_total{webhook=\"flaky\",status=\"succeeded\"}",
                1.0,
            ),
            n(
                "outbox_deliveries_completed_total{webhook=\"dead\",status=\"dead\"}",
                1.0,
            ),
            n(
                "outbox_deliveries_completed_total{webhook=\"refused\",status=\"dead\"}",
                1.0,
            ),
            n(
                "outbox_delivery_attempt_duration_seconds_count{webhook=\"ok\"}",
                3.0,
            ),
            n(
                "outbox_delivery_attempt_duration_seconds_bucket{webhook=\"ok\",le=\"+Inf\"}",
                3.0,
            ),
            n(
                "outbox_delivery_attempt_duration_seconds_count{webhook=\"flaky\"}",
                3.0,
            ),
            n(
                "outbox_delivery_attempt_duration_seconds_bucket{webhook=\"flaky\",le=\"+Inf\"}",
                3.0,
            ),
            n(
                "outbox_delivery_attempt_duration_seconds_count{webhook=\"dead\"}",
                2.0,
            ),
            n(
                "outbox_delivery_attempt_duration_seconds_bucket{webhook=\"dead\",le=\"+Inf\"}",
                2.0,
            ),
            n(
                "outbox_delivery_attempt_duration_seconds_count{webhook=\"refused\"}",
                1.0,
            ),
            n(
                "outbox_delivery_attempt_duration_seconds_bucket{webhook=\"refused\",le=\"+Inf\"}",
                1.0,
            ),
            n("outbox_delivery_latency_seconds_count{webhook=\"ok\"}", 3.0),
            n(
                "outbox_delivery_latency_seconds_bucket{webhook=\"ok\",le=\"+Inf\"}",
                3.0,
            ),
            n(
                "outbox_delivery_latency_seconds_count{webhook=\"flaky\"}",
                1.0,
            ),
            n(
                "outbox_delivery_latency_seconds_bucket{webhook=\"flaky\",le=\"+Inf\"}",
                1.0,
            ),
            n("outbox_filter_errors_total{webhook=\"broken-filter\"}", 3.0),
        ],
    );
    let got = wait_until(SOON, "the metrics of the known traffic", || async {
        let got = parse_metrics(&http("GET", &metrics_url, None).await.1);
        mismatches(&want, &got).is_empty().then_some(got)
    })
    .await;
    assert!(got["outbox_listener_notifications_total"] >= 1.0);
    assert_eq!(receiver.count(), 3 + 3 + 2, "ok 3, flaky 3, dead 2");

    assert_eq!(relay.terminate().await, Some(0), "SIGTERM exits 0");
    // --log-format json: one object per line; attempts carry their span's fields.
    let logs = relay.stderr.lock().unwrap().clone();
    for line in &logs {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    let attempt = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "attempt finished" && v["span"]["webhook"] == "flaky")
        .expect("an attempt log line of webhook flaky");
    assert_eq!(attempt["span"]["name"], "attempt");
    assert!(attempt["span"]["delivery"].as_i64().is_some(), "{attempt}");
    assert!(attempt["span"]["attempt"].as_i64().is_some(), "{attempt}");
}

#[tokio::test]
async fn the_queue_gauges_are_sampled_cheaply_and_estimate_large_queues() {
    let db = TestDb::new().await;
    let pool = outbox_core::db::pool(&db.url, 2).unwrap();
    let client = db.connect().await;

    let empty = outbox_relay::sampler::sample(&pool).await.unwrap();
    assert_eq!(
        (empty.pending, empty.in_flight, empty.oldest_pending_age),
        (0.0, 0.0, 0.0)
    );

    // An event committed long ago that no relay has routed yet counts as pending work.
    client
        .batch_execute(
            "INSERT INTO outbox.events (event_type, entity, entity_id, created_at)
             VALUES ('order.created', 'order', '1', now() - interval '2 hours')",
        )
        .await
        .unwrap();
    let unrouted = outbox_relay::sampler::sample(&pool).await.unwrap();
    assert!(
        (7190.0..7300.0).contains(&unrouted.oldest_pending_age),
        "{unrouted:?}"
    );

    // 12,000 pending deliveries (one an hour old) and 5 in flight: above the exact-count limit, the
    // pending count comes from the planner's statistics.
    client
        .batch_execute(
            "INSERT INTO outbox.deliveries (webhook_id, webhook, event_id, event_type, entity, entity_id,
                                            created_at, next_attempt_at)
             SELECT 1, 'w', i, 'order.created', 'order', i::text, now() - interval '1 hour', now()
             FROM generate_series(1, 12000) i;
             INSERT INTO outbox.deliveries (webhook_id, webhook, event_id, event_type, entity, entity_id,
                                            status, lease_owner, lease_until)
             SELECT 1, 'w', i, 'order.created', 'order', i::text, 'in_flight', 'x', now() + interval '1 hour'
             FROM generate_series(12001, 12005) i;
             ANALYZE outbox.deliveries;",
        )
        .await
        .unwrap();
    let large = outbox_relay::sampler::sample(&pool).await.unwrap();
    assert_eq!(large.in_flight, 5.0);
    assert!(
        (11_400.0..=12_600.0).contains(&large.pending),
        "estimated pending within 5% of 12000: {large:?}"
    );

    // Below the limit the counts are exact; the oldest pending delivery shows its age.
    client
        .batch_execute(
            "DELETE FROM outbox.deliveries WHERE id > 3 AND status = 'pending';
             DELETE FROM outbox.events;",
        )
        .await
        .unwrap();
    let small = outbox_relay::sampler::sample(&pool).await.unwrap();
    assert_eq!((small.pending, small.in_flight), (3.0, 5.0));
    assert!(
        (3590.0..3700.0).contains(&small.oldest_pending_age),
        "{small:?}"
    );
}

const TOKEN: &str = "s3cret-admin-token";
const PASSWORD: &str = "basic-pa55word-xyz";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const HMAC_SECRET: &str = "hmac-secret-abc123";

fn secret_hooks(receiver: &TestReceiver) -> String {
    format!(
        r#"[[webhook]]
name = "standard"
events = ["order.*"]
url = "{}"
[webhook.auth]
basic = {{ username = "relay", password = "{PASSWORD}" }}
[webhook.signature]
secrets = ["{WHSEC}"]

[[webhook]]
name = "hmac"
events = ["order.*"]
url = "{}"
max_attempts = 1
[webhook.signature]
scheme = "hmac-sha256"
secrets = ["{HMAC_SECRET}"]
"#,
        receiver.url("/standard"),
        receiver.url("/hmac")
    )
}

/// Every string that must never leave the relay: the secrets and the encoded basic credentials.
fn secret_strings() -> Vec<String> {
    use base64::Engine;
    vec![
        PASSWORD.to_string(),
        WHSEC.to_string(),
        WHSEC.trim_start_matches("whsec_").to_string(),
        HMAC_SECRET.to_string(),
        base64::engine::general_purpose::STANDARD.encode(format!("relay:{PASSWORD}")),
        TOKEN.to_string(),
    ]
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_answers_in_json() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    // The hmac webhook's only attempt fails: one dead delivery to retry.
    receiver.handle(|req| {
        if req.path.starts_with("/hmac") {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    apply(&db, &secret_hooks(&receiver)).await;
    let mut settings = settings(&db);
    settings.admin_token = Some(TOKEN.into());
    let relay = Relay::start(settings).await.unwrap();
    let base = format!("http://{}", relay.addr());
    let client = db.connect().await;
    client
        .execute("SELECT outbox.emit('order.created', 'order', '7')", &[])
        .await
        .unwrap();
    wait_for_status(&client, 1, "dead").await;
    let log = wait_for_status(&client, 1, "succeeded").await;
    let dead = log.iter().find(|d| d.status == "dead").unwrap().id;
    let ok = log.iter().find(|d| d.status == "succeeded").unwrap().id;

    // Without the token, or with a wrong one: 401 with a JSON error. Health and metrics stay open.
    for token in [None, Some("wrong")] {
        let (status, body) = http("GET", &format!("{base}/api/webhooks"), token).await;
        assert_eq!(status, 401, "{body}");
        let err: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            err["error"].as_str().unwrap().contains("bearer token"),
            "{body}"
        );
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            http("GET", &format!("{base}{path}"), None).await.0,
            200,
            "{path}"
        );
    }

    let t = Some(TOKEN);
    let (status, body) = http("GET", &format!("{base}/api/webhooks"), t).await;
    assert_eq!(status, 200);
    let hooks: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = hooks
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["hmac", "standard"]);
    assert_eq!(hooks[1]["auth"]["basic"]["password"], "***");
    assert_eq!(hooks[1]["signature"]["secrets"][0], "***");

    let (status, body) = http("GET", &format!("{base}/api/deliveries?status=dead"), t).await;
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], dead);
    assert_eq!(listed[0]["webhook"], "hmac");
    let (_, body) = http(
        "GET",
        &format!("{base}/api/deliveries?webhook=standard&limit=1"),
        t,
    )
    .await;
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed[0]["id"], ok);

    let (status, body) = http("GET", &format!("{base}/api/deliveries/{dead}"), t).await;
    assert_eq!(status, 200);
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["status"], "dead");
    assert_eq!(shown["attempts"][0]["status"], 500);
    assert_eq!(shown["attempts"][0]["outcome"], "http_error");

    // Bad input and unknown things: 4xx with one sentence.
    for (method, path, want) in [
        ("GET", "/api/deliveries?status=lost", 400),
        ("GET", "/api/deliveries?limit=0", 400),
        ("GET", "/api/deliveries?colour=red", 400),
        ("GET", "/api/deliveries/abc", 400),
        ("GET", "/api/deliveries/999999", 404),
        ("POST", "/api/deliveries/999999/retry", 404),
        ("POST", "/api/webhooks/nope/test", 404),
        ("GET", "/api/nothing", 404),
    ] {
        let (status, body) = http(method, &format!("{base}{path}"), t).await;
        assert_eq!(status, want, "{method} {path}: {body}");
        let err: serde_json::Value = serde_json::from_str(&body).unwrap();
        let message = err["error"].as_str().unwrap();
        assert!(!message.is_empty() && !message.contains('\n'), "{message}");
    }
    // Testing a webhook renders its request for the record's latest event (order 1 has none).
    let (status, body) = http("POST", &format!("{base}/api/webhooks/standard/test"), t).await;
    assert_eq!(status, 404, "{body}");
    let response = reqwest::Client::new()
        .post(format!("{base}/api/webhooks/standard/test"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"entity": "order", "id": "7"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let preview: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(preview["event"]["entity_id"], "7");
    assert_eq!(preview["request"]["method"], "POST");
    assert!(preview["response"].is_null(), "not sent: {preview}");

    // Retry the dead delivery: it goes back to the queue and, the receiver now willing, succeeds.
    receiver.handle(|_| Reply::ok());
    let (status, body) = http("POST", &format!("{base}/api/deliveries/{dead}/retry"), t).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["requeued"],
        true
    );
    wait_for_status(&client, 2, "succeeded").await;
    relay.stop().await;
}

#[tokio::test]
async fn secrets_never_appear_in_api_responses_or_logs() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|req| {
        if req.path.starts_with("/hmac") {
            Reply::status(500).body("nope")
        } else {
            Reply::ok().body("thanks")
        }
    });
    apply(&db, &secret_hooks(&receiver)).await;
    // Everything the relay and its libraries log, at the most verbose level.
    let (mut relay, addr) =
        spawn_relay(&db, &[("RUST_LOG", "trace"), ("OUTBOX_ADMIN_TOKEN", TOKEN)]).await;
    let base = format!("http://{addr}");
    let client = db.connect().await;
    client
        .execute(
            "SELECT outbox.emit('order.created', 'order', '7', '{\"id\": 7}')",
            &[],
        )
        .await
        .unwrap();
    let log = wait_for_status(&client, 1, "dead").await;
    let log = if log.iter().any(|d| d.status == "succeeded") {
        log
    } else {
        wait_for_status(&client, 1, "succeeded").await
    };
    // Every request really carried the secrets' effects (auth and signatures).
    let got = receiver.requests();
    assert!(got.iter().any(|r| r.header("authorization").is_some()));
    assert!(got.iter().any(|r| r.header("webhook-signature").is_some()));
    assert!(got.iter().any(|r| r.header("ms-signature").is_some()));

    let t = Some(TOKEN);
    let mut responses = Vec::new();
    let mut paths = vec![
        ("GET", "/api/webhooks".to_string()),
        ("GET", "/api/deliveries".to_string()),
        ("GET", "/api/deliveries?status=dead".to_string()),
        ("POST", "/api/webhooks/standard/test".to_string()),
        ("POST", "/api/webhooks/hmac/test".to_string()),
        ("GET", "/metrics".to_string()),
        ("GET", "/readyz".to_string()),
    ];
    for d in &log {
        paths.push(("GET", format!("/api/deliveries/{}", d.id)));
        paths.push(("POST", format!("/api/deliveries/{}/retry", d.id)));
    }
    for (method, path) in &paths {
        let (status, body) = http(method, &format!("{base}{path}"), t).await;
        assert!(
            status < 500 || status == 501,
            "{method} {path}: {status} {body}"
        );
        responses.push(format!("{method} {path}: {body}"));
    }
    // A wrong token is not echoed either.
    responses.push(
        http("GET", &format!("{base}/api/webhooks"), Some("x"))
            .await
            .1,
    );
    assert_eq!(relay.terminate().await, Some(0));

    let everything = format!(
        "{}\n{}\n{}",
        responses.join("\n"),
        relay.stdout_text(),
        relay.stderr_text()
    );
    assert!(
        relay.stderr.lock().unwrap().len() > 50,
        "trace logging produced output"
    );
    for secret in secret_strings() {
        assert!(
            !everything.contains(&secret),
            "secret {secret:?} leaked in:\n{}",
            everything
                .lines()
                .filter(|l| l.contains(&secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test]
async fn without_a_token_the_relay_refuses_a_public_address() {
    let db = TestDb::new().await;
    let mut public = settings(&db);
    public.listen = "0.0.0.0:0".parse().unwrap();
    let err = match Relay::start(public.clone()).await {
        Ok(_) => panic!("a public address without OUTBOX_ADMIN_TOKEN must be refused"),
        Err(e) => e,
    };
    assert_eq!(err.code, 2);
    assert!(
        err.message.contains("OUTBOX_ADMIN_TOKEN"),
        "{}",
        err.message
    );
    assert!(err.message.contains("0.0.0.0"), "{}", err.message);

    // The binary: exit code 2 and one line on stderr.
    let mut refused = Spawned::start(
        &["run", "--listen", "0.0.0.0:0"],
        &[("DATABASE_URL", db.url.as_str())],
    );
    assert_eq!(refused.wait_exit(SOON).await, Some(2));
    let stderr = refused.stderr_text();
    assert!(
        stderr.starts_with("error: refusing to listen on 0.0.0.0"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // With a token it listens, and the API asks for it.
    public.admin_token = Some(TOKEN.into());
    let relay = Relay::start(public).await.unwrap();
    let url = format!("http://127.0.0.1:{}/api/deliveries", relay.addr().port());
    assert_eq!(http("GET", &url, None).await.0, 401);
    assert_eq!(http("GET", &url, Some(TOKEN)).await.0, 200);
    relay.stop().await;
}

#[tokio::test]
async fn stopping_lets_the_attempt_in_flight_finish_and_records_it() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.push([Reply::ok()
        .delay(Duration::from_millis(1500))
        .body("slow but fine")]);
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"slow\"\nevents = [\"*\"]\nurl = \"{}\"\n",
            receiver.url("/slow")
        ),
    )
    .await;
    let relay = Relay::start(settings(&db)).await.unwrap();
    let client = db.connect().await;
    client
        .execute("SELECT outbox.emit('order.created', 'order', '1')", &[])
        .await
        .unwrap();
    receiver.wait_for(1, SOON).await;
    // The request is in flight now; stop returns once it has finished and been recorded.
    relay.stop().await;

    let log = delivery_log(&client).await;
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].status.as_str(), log[0].attempts), ("succeeded", 1));
    assert_eq!(
        attempts(&client, log[0].id).await,
        vec![(1, Some(200), "success".to_string())]
    );
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn sigterm_lets_the_attempt_in_flight_finish_and_exits_zero() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.push([Reply::ok().delay(Duration::from_millis(1500))]);
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"slow\"\nevents = [\"*\"]\nurl = \"{}\"\n",
            receiver.url("/slow")
        ),
    )
    .await;
    let (mut relay, _) = spawn_relay(&db, &[]).await;
    let client = db.connect().await;
    client
        .execute("SELECT outbox.emit('order.created', 'order', '1')", &[])
        .await
        .unwrap();
    receiver.wait_for(1, SOON).await;
    assert_eq!(relay.terminate().await, Some(0), "{}", relay.stderr_text());

    let log = delivery_log(&client).await;
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].status.as_str(), log[0].attempts), ("succeeded", 1));
    assert_eq!(
        attempts(&client, log[0].id).await,
        vec![(1, Some(200), "success".to_string())]
    );
    assert!(relay.stderr_text().contains("relay stopped"));
}

#[tokio::test]
async fn lost_database_connections_are_replaced_and_counted() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"w\"\nevents = [\"*\"]\nurl = \"{}\"\n",
            receiver.url("/w")
        ),
    )
    .await;
    let (mut relay, addr) = spawn_relay(&db, &[]).await;
    let client = db.connect().await;
    client
        .execute("SELECT outbox.emit('a.b', 'a', '1')", &[])
        .await
        .unwrap();
    receiver.wait_for(1, SOON).await;

    // Cut every connection of the relay (the LISTEN one and the pool's), as a restart would.
    let cut: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name LIKE 'outbox-relay%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        cut >= 2,
        "the relay had its pool and LISTEN connections: {cut}"
    );
    client
        .execute("SELECT outbox.emit('a.b', 'a', '2')", &[])
        .await
        .unwrap();
    receiver.wait_for(2, SOON).await;
    wait_for_status(&client, 2, "succeeded").await;
    let metrics_url = format!("http://{addr}/metrics");
    wait_until(SOON, "reconnects counted", || async {
        let got = parse_metrics(&http("GET", &metrics_url, None).await.1);
        // The LISTEN connection and at least one pooled connection were replaced.
        (got["outbox_db_reconnects_total"] >= 2.0).then_some(())
    })
    .await;
    assert_eq!(relay.terminate().await, Some(0));
}

#[tokio::test]
async fn relay_settings_come_from_the_file_and_outbox_variables_and_typos_are_refused() {
    let db = TestDb::new().await;
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec![("DATABASE_URL", db.url.as_str())];
        all.extend_from_slice(env);
        let mut argv = vec!["run"];
        argv.extend_from_slice(args);
        Spawned::start(&argv, &all)
    };

    let mut typo = run(&[], &[("OUTBOX_CONCURANCY", "5")]);
    assert_eq!(typo.wait_exit(SOON).await, Some(2));
    let err = typo.stderr_text();
    assert!(
        err.contains("OUTBOX_CONCURANCY is not a relay setting"),
        "{err}"
    );
    assert!(
        err.contains("OUTBOX_CONCURRENCY"),
        "the message lists the real keys: {err}"
    );

    let file = temp_file("relay.toml", "listen = \"127.0.0.1:0\"\nconcurency = 5\n");
    let mut bad_file = run(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(bad_file.wait_exit(SOON).await, Some(2));
    let err = bad_file.stderr_text();
    assert!(
        err.contains("concurency") && err.contains("relay.toml"),
        "{err}"
    );

    let mut bad_value = run(&[], &[("OUTBOX_LEASE", "forever")]);
    assert_eq!(bad_value.wait_exit(SOON).await, Some(2));
    assert!(
        bad_value.stderr_text().contains("lease"),
        "{}",
        bad_value.stderr_text()
    );

    // A good file, with a variable on top: JSON logs from the file, the address from it too.
    let file = temp_file(
        "relay.toml",
        "listen = \"127.0.0.1:0\"\nlog_format = \"json\"\nconcurrency = 8\nretention = \"30d\"\n",
    );
    // As a relay with notify = on would leave it when it went idle.
    db.connect()
        .await
        .batch_execute("SELECT setval('outbox.notify_wanted', 1)")
        .await
        .unwrap();
    let mut relay = run(
        &["--config", file.to_str().unwrap()],
        &[("OUTBOX_NOTIFY", "off"), ("OUTBOX_POLL_INTERVAL", "50ms")],
    );
    let capture = relay
        .wait_line(true, "a JSON start line", |l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["message"] == "relay started").then(|| v["capture"].clone())
        })
        .await;
    assert_eq!(capture, "plpgsql", "the start line says which capture runs");
    // notify = off switched the trigger off.
    let client = db.connect().await;
    let enabled: bool = client
        .query_one(
            "SELECT tgenabled <> 'D' FROM pg_trigger WHERE tgname = 'events_notify'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!enabled);
    // ... and cleared the flag that capture() reads, and the router, running dry, does not ask for
    // notifications again.
    let id: i64 = client
        .query_one("SELECT outbox.emit('a.b', 'a', '1')", &[])
        .await
        .unwrap()
        .get(0);
    wait_until(SOON, "the router to pass the event", || async {
        let routed: bool = client
            .query_one(
                "SELECT pg_visible_in_snapshot(e.txid, r.prev_snapshot)
                 FROM outbox.events e, outbox.router r WHERE e.id = $1 AND r.id = 1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        routed.then_some(())
    })
    .await;
    let flag: i64 = client
        .query_one("SELECT pg_sequence_last_value('outbox.notify_wanted')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(flag, 0, "notify = off: producers are never asked to NOTIFY");
    assert_eq!(relay.terminate().await, Some(0));
}

#[tokio::test]
async fn the_relay_warns_about_roles_that_may_insert_events_but_not_capture_them() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let both = format!("both_{}", &db.name[12..]);
    let events_only = format!("events_only_{}", &db.name[12..]);
    // INSERT on the columns capture() fills is as good as on the view; on some of them, not.
    let columns = format!("columns_{}", &db.name[12..]);
    let some_columns = format!("some_columns_{}", &db.name[12..]);
    // A role that may still write captured_events directly (the door schema 5 closed).
    let side_door = format!("side_door_{}", &db.name[12..]);
    client
        .batch_execute(&format!(
            "CREATE ROLE {both}; CREATE ROLE {events_only};
             CREATE ROLE {columns}; CREATE ROLE {some_columns}; CREATE ROLE {side_door};
             GRANT INSERT ON outbox.events TO {both}, {events_only}, {columns}, {some_columns};
             GRANT INSERT ON outbox.capture_sink TO {both};
             GRANT INSERT (event_type, entity, entity_id, data, old)
                 ON outbox.capture_sink TO {columns};
             GRANT INSERT (event_type, entity) ON outbox.capture_sink TO {some_columns};
             GRANT INSERT (id, event_type) ON outbox.captured_events TO {side_door};"
        ))
        .await
        .unwrap();
    let (mut relay, _) = spawn_relay(&db, &[]).await;
    let warned = |table: &str| -> Vec<String> {
        relay
            .stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("WARN") && l.contains(&format!("but not into {table}")))
            .cloned()
            .collect()
    };
    let cannot_capture = warned("outbox.capture_sink");
    let direct: Vec<String> = relay
        .stderr
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("into outbox.captured_events directly"))
        .cloned()
        .collect();
    assert_eq!(relay.terminate().await, Some(0));
    client
        .batch_execute(&format!(
            "DROP OWNED BY {both}, {events_only}, {columns}, {some_columns}, {side_door};
             DROP ROLE {both}, {events_only}, {columns}, {some_columns}, {side_door}"
        ))
        .await
        .unwrap();
    assert_eq!(cannot_capture.len(), 2, "{cannot_capture:?}");
    assert!(
        cannot_capture[0].contains(&events_only),
        "{}",
        cannot_capture[0]
    );
    assert!(
        cannot_capture[1].contains(&some_columns),
        "{}",
        cannot_capture[1]
    );
    assert_eq!(direct.len(), 1, "{direct:?}");
    assert!(direct[0].contains(&side_door), "{}", direct[0]);
}

/// `db.url` with `sslmode` (and more) added.
fn with_params(url: &str, params: &str) -> String {
    let glue = if url.contains('?') { '&' } else { '?' };
    format!("{url}{glue}{params}")
}

#[tokio::test]
async fn the_relay_speaks_tls_to_postgres_when_the_url_asks_for_it() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let server_ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let encrypted = |url: String| async move {
        let c = outbox_core::db::connect(&url).await?;
        let row = c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?;
        Ok::<bool, outbox_core::Error>(row.get(0))
    };
    assert!(
        !encrypted(db.url.clone()).await.unwrap(),
        "no sslmode: plain"
    );
    if server_ssl != "on" {
        // A server without TLS (a private test cluster): require fails and says why; prefer
        // falls back to plain, as with libpq.
        let err = encrypted(with_params(&db.url, "sslmode=require"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("TLS"), "{err}");
        assert!(
            !encrypted(with_params(&db.url, "sslmode=prefer"))
                .await
                .unwrap()
        );
        return;
    }
    assert!(
        encrypted(with_params(&db.url, "sslmode=require"))
            .await
            .unwrap()
    );
    assert!(
        encrypted(with_params(&db.url, "sslmode=prefer"))
            .await
            .unwrap()
    );
    // The server's certificate is self-signed: checking it against the system's roots fails.
    let err = encrypted(with_params(&db.url, "sslmode=verify-full"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate"), "{err}");

    // A whole relay over TLS: every one of its connections (pool and LISTEN) is encrypted, and an
    // event goes through.
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"tls\"\nevents = [\"a.*\"]\nurl = \"{}\"\n",
            receiver.url("/tls")
        ),
    )
    .await;
    let url = with_params(&db.url, "sslmode=require");
    let (mut relay, _) = spawn_relay(&db, &[("DATABASE_URL", url.as_str())]).await;
    client
        .execute("SELECT outbox.emit('a.b', 'a', '1')", &[])
        .await
        .unwrap();
    receiver.wait_for(1, SOON).await;
    let connections: Vec<(String, bool)> = client
        .query(
            "SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = current_database() AND a.application_name LIKE 'outbox-relay%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(relay.terminate().await, Some(0));
    assert!(
        connections
            .iter()
            .any(|(name, _)| name == "outbox-relay listener"),
        "{connections:?}"
    );
    assert!(connections.iter().all(|(_, ssl)| *ssl), "{connections:?}");
}

#[tokio::test]
async fn beyond_a_thousand_webhooks_their_series_appear_when_first_used() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let mut file = String::new();
    for i in 0..1010 {
        file.push_str(&format!(
            "[[webhook]]\nname = \"tenant{i:04}\"\nevents = [\"tenant{i}.*\"]\nurl = \"{}\"\n\n",
            receiver.url("/")
        ));
    }
    apply(&db, &file).await;
    let (relay, addr) = spawn_relay(&db, &[]).await;
    let _relay = relay;
    let metrics_url = format!("http://{addr}/metrics");
    let created = |m: &BTreeMap<String, f64>, name: &str| {
        m.get(&format!(
            "outbox_deliveries_created_total{{webhook=\"{name}\"}}"
        ))
        .copied()
    };
    let m = parse_metrics(&http("GET", &metrics_url, None).await.1);
    assert_eq!(created(&m, "tenant0000"), Some(0.0));
    assert_eq!(created(&m, "tenant0999"), Some(0.0));
    assert_eq!(
        created(&m, "tenant1009"),
        None,
        "registered up front beyond the first 1,000"
    );
    let client = db.connect().await;
    emit(
        &client,
        "tenant1009.created",
        "t",
        "1",
        serde_json::json!({}),
    )
    .await;
    receiver.wait_for(1, SOON).await;
    let m = wait_until(SOON, "the series of the used webhook", || async {
        let m = parse_metrics(&http("GET", &metrics_url, None).await.1);
        created(&m, "tenant1009").is_some().then_some(m)
    })
    .await;
    assert_eq!(created(&m, "tenant1009"), Some(1.0));
}
