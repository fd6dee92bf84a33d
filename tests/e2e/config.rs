//! Filters and configuration (issue 3): CEL filters route exactly, `apply` validates everything
//! before writing anything, rows written by SQL are validated by the relay, changes reach a
//! running relay live, and `webhooks list/show` show every key with secrets hidden.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use outbox_testkit::{TestDb, TestReceiver, wait_until};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// Runs the relay binary with `args` against `db`.
fn relay_command(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
    command.args(args).env("DATABASE_URL", &db.url);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("the relay binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `GET /metrics` of a running relay.
async fn metrics(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: relay\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// The value of one series in Prometheus text, e.g. `outbox_filter_errors_total{webhook="x"}`.
fn series(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.trim();
        value.parse().ok()
    })
}

async fn emit(
    client: &tokio_postgres::Client,
    event_type: &str,
    id: &str,
    data: &str,
    metadata: &str,
) {
    client
        .execute(
            "SELECT outbox.emit($1, split_part($1, '.', 1), $2, $3::text::jsonb, $4::text::jsonb)",
            &[&event_type, &id, &data, &metadata],
        )
        .await
        .unwrap();
}

/// Deliveries per webhook: webhook → sorted entity ids.
async fn routed(client: &tokio_postgres::Client) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in delivery_log(client).await {
        out.entry(d.webhook).or_default().push(d.entity_id);
    }
    for ids in out.values_mut() {
        ids.sort();
    }
    out
}

#[tokio::test]
async fn filters_route_each_event_to_exactly_the_webhooks_whose_filter_holds() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let hook = |name: &str, events: &str, filter: &str| {
        format!(
            "[[webhook]]\nname = \"{name}\"\nevents = {events}\nfilter = '''{filter}'''\nurl = \"{}\"\n",
            receiver.url(&format!("/{name}"))
        )
    };
    apply(
        &db,
        &[
            hook(
                "shop-nl",
                r#"["order.*"]"#,
                r#"event.metadata.shop == "nl""#,
            ),
            hook(
                "dhl-boxes",
                r#"["shipment.*"]"#,
                r#"event.data.carrier == "dhl" && event.data.parcel_type in ["box", "pallet"]"#,
            ),
            hook(
                "label-printer",
                r#"["shipment.*"]"#,
                r#"has(event.data.printer_type) && event.data.printer_type == "label""#,
            ),
            hook(
                "it-manager",
                r#"["error.*", "relay.*"]"#,
                r#"event.data.severity in ["major", "critical"]"#,
            ),
            hook(
                "green-warehouse",
                r#"["stock.*"]"#,
                r#"event.data.lines.exists(l, l.warehouse == "GreenWarehouse")"#,
            ),
            hook(
                "became-shipped",
                r#"["order.updated"]"#,
                r#"event.old.status != "shipped" && event.data.status == "shipped""#,
            ),
            hook("big-orders", r#"["order.*"]"#, "event.data.qty + 1 > 10"),
            hook("broken", r#"["order.*"]"#, "event.data.no_such_field == 1"),
            "[[webhook]]\nname = \"witness\"\nevents = [\"*\"]\nurl = \"".to_string()
                + &receiver.url("/witness")
                + "\"\n",
        ]
        .concat(),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    emit(
        &client,
        "order.created",
        "o1",
        r#"{"qty": 3}"#,
        r#"{"shop": "nl"}"#,
    )
    .await;
    emit(
        &client,
        "order.created",
        "o2",
        r#"{"qty": 12}"#,
        r#"{"shop": "de"}"#,
    )
    .await;
    client
        .batch_execute(
            r#"INSERT INTO outbox.events (event_type, entity, entity_id, data, old, metadata) VALUES
               ('order.updated', 'order', 'o3', '{"status": "shipped", "qty": 1}', '{"status": "packed"}', '{"shop": "be"}'),
               ('order.updated', 'order', 'o4', '{"status": "shipped", "qty": 1}', '{"status": "shipped"}', '{"shop": "be"}')"#,
        )
        .await
        .unwrap();
    emit(
        &client,
        "shipment.created",
        "s1",
        r#"{"carrier": "dhl", "parcel_type": "box"}"#,
        "{}",
    )
    .await;
    emit(
        &client,
        "shipment.created",
        "s2",
        r#"{"carrier": "dhl", "parcel_type": "letter", "printer_type": "label"}"#,
        "{}",
    )
    .await;
    emit(
        &client,
        "shipment.created",
        "s3",
        r#"{"carrier": "ups", "parcel_type": "box", "printer_type": "a4"}"#,
        "{}",
    )
    .await;
    emit(
        &client,
        "error.raised",
        "e1",
        r#"{"severity": "major"}"#,
        "{}",
    )
    .await;
    emit(
        &client,
        "error.raised",
        "e2",
        r#"{"severity": "minor"}"#,
        "{}",
    )
    .await;
    emit(
        &client,
        "stock.changed",
        "p1",
        r#"{"lines": [{"warehouse": "Red"}, {"warehouse": "GreenWarehouse"}]}"#,
        "{}",
    )
    .await;
    emit(
        &client,
        "stock.changed",
        "p2",
        r#"{"lines": [{"warehouse": "Red"}]}"#,
        "{}",
    )
    .await;

    // The witness takes everything: once it has all 11, every event has been routed.
    receiver.wait_for(11 + 7, SOON).await;
    let log = wait_for_status(&client, 11 + 7, "succeeded").await;
    let mut got = routed(&client).await;
    assert_eq!(got.remove("witness").map(|v| v.len()), Some(11));
    let expect = |pairs: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(w, ids)| (w.to_string(), ids.iter().map(|s| s.to_string()).collect()))
            .collect()
    };
    assert_eq!(
        got,
        expect(&[
            ("big-orders", &["o2"]),
            ("became-shipped", &["o3"]),
            ("dhl-boxes", &["s1"]),
            ("green-warehouse", &["p1"]),
            ("it-manager", &["e1"]),
            ("label-printer", &["s2"]),
            ("shop-nl", &["o1"]),
        ]),
        "{log:?}"
    );
    // The broken filter failed on each of the 4 order events: counted, never routed, no crash.
    let text = metrics(relay.addr()).await;
    assert_eq!(
        series(&text, r#"outbox_filter_errors_total{webhook="broken"}"#),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        series(&text, r#"outbox_filter_errors_total{webhook="shop-nl"}"#),
        Some(0.0)
    );
    relay.stop().await;
}

#[tokio::test]
async fn apply_reports_every_problem_at_once_and_writes_nothing() {
    let db = TestDb::new().await;
    let file = temp_file(
        "hooks.toml",
        r#"
[[relation]]
entity = "shipment"
name = "order"
query = "SELEC to_jsonb(o) FROM orders o"

[[webhook]]
name = "fine"
events = ["order.*"]
url = "https://example.com/hook"

[[webhook]]
name = "carrier"
events = ["shipment.*"]
filter = 'event.data.carrier == "dhl" &&'
url = "ftp://carrier.example/{{ entity_id }}"
timeout = "soon"
retry_schedule = ["5s", "often"]
max_atempts = 3
signature = { scheme = "standard", secrets = ["not-a-secret"] }
auth = { basic = { username = "relay", password = "${E2E_SURELY_UNSET_PASSWORD}" } }

[[webhook]]
name = "hostile"
events = ["*"]
url = "https://example.com/"
filter = "((((((((((((((((((((((((((((((((((((((((true))))))))))))))))))))))))))))))))))))))))"

[[webhook]]
name = "templates"
events = []
url = "https://example.com/{{ id"
body = "{% for %}"
content_type = "json"
"#,
    );
    let path = file.to_str().unwrap();
    let out = relay_command(&db, &["apply", path], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for expected in [
        r#"webhook "carrier": filter: the expression does not compile as CEL"#,
        r#"webhook "carrier": url:"#,
        r#"webhook "carrier": timeout: invalid duration "soon""#,
        r#"webhook "carrier": retry_schedule[1]: invalid duration "often""#,
        r#"webhook "carrier": max_atempts: unknown key; did you mean `max_attempts`?"#,
        r#"webhook "carrier": signature.secrets[0]:"#,
        r#"webhook "carrier": auth.basic.password: environment variable E2E_SURELY_UNSET_PASSWORD is not set"#,
        r#"webhook "hostile": filter: the expression nests brackets 40 levels deep; the limit is 32"#,
        r#"webhook "templates": events: must list at least one"#,
        r#"webhook "templates": url:"#,
        r#"webhook "templates": body:"#,
        r#"webhook "templates": content_type: "json" is not a media type"#,
        r#"relation "order" of entity "shipment": query: does not prepare: syntax error"#,
        "nothing was written",
    ] {
        assert!(
            err.contains(&format!("{path}: {expected}")) || err.contains(expected),
            "missing {expected:?} in:\n{err}"
        );
    }
    for line in err
        .lines()
        .filter(|l| l.contains(": webhook ") || l.contains(": relation "))
    {
        assert!(
            line.starts_with(&format!("error: {path}: ")) || line.starts_with(path),
            "{line}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
    let client = db.connect().await;
    let count: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM outbox.webhooks) + (SELECT count(*) FROM outbox.relations)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "nothing written");
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_prune_cancels_what_the_removed_webhook_had_queued() {
    let db = TestDb::new().await;
    let hook = |name: &str, url: &str| {
        format!("[[webhook]]\nname = \"{name}\"\nevents = [\"order.*\"]\nurl = \"{url}\"\n")
    };
    apply(
        &db,
        &(hook("keep", "https://example.com/keep") + &hook("drop", "https://example.com/drop")),
    )
    .await;
    // Queue a delivery for each, routed by a relay that cannot send (the URLs are not reachable
    // in time to matter: the webhooks are paused first).
    let client = db.connect().await;
    client
        .batch_execute("UPDATE outbox.webhooks SET active = false")
        .await
        .unwrap();
    let relay = start(&db).await;
    emit(&client, "order.created", "1", "{}", "{}").await;
    wait_for_status(&client, 2, "pending").await;
    relay.stop().await;

    let next =
        hook("keep", "https://example.com/keep-v2") + &hook("new", "https://example.com/new");
    let file = temp_file("next.toml", &next);
    let path = file.to_str().unwrap();
    let out = relay_command(&db, &["apply", path, "--dry-run", "--prune"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    for line in [
        "update     webhook keep",
        "create     webhook new",
        "remove     webhook drop",
        "dry run: nothing written",
    ] {
        assert!(plan.contains(line), "missing {line:?} in:\n{plan}");
    }
    let names: Vec<String> = client
        .query("SELECT name FROM outbox.webhooks ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["drop", "keep"], "a dry run writes nothing");

    let out = relay_command(&db, &["apply", path, "--prune"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let names: Vec<String> = client
        .query("SELECT name FROM outbox.webhooks ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["keep", "new"]);
    let statuses: Vec<(String, String)> = delivery_log(&client)
        .await
        .into_iter()
        .map(|d| (d.webhook, d.status))
        .collect();
    assert!(
        statuses.contains(&("drop".into(), "cancelled".into())),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("keep".into(), "pending".into())),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn rows_written_by_sql_are_validated_and_invalid_ones_never_run() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"good\"\nevents = [\"order.*\"]\nurl = \"{}\"\n",
            receiver.url("/good")
        ),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    let url = receiver.url("/bad");
    let two_thousand_terms = format!("{} > 0", vec!["1"; 2000].join("+"));
    let deep = format!("{}true{}", "(".repeat(500), ")".repeat(500));
    let nots_and_members = format!("event{} == 1", ".a".repeat(300));
    for (name, filter, extra) in [
        ("bad-filter", "event.data.(", ""),
        ("bad-2000-terms", two_thousand_terms.as_str(), ""),
        ("bad-500-deep", deep.as_str(), ""),
        ("bad-member-chain", nots_and_members.as_str(), ""),
        ("bad-url", "true", "ftp"),
        ("bad-shape", "true", "shape"),
    ] {
        let (url, auth) = match extra {
            "ftp" => ("ftp://nowhere/".to_string(), None),
            "shape" => (url.clone(), Some(serde_json::json!("not an object"))),
            _ => (url.clone(), None),
        };
        client
            .execute(
                "INSERT INTO outbox.webhooks (name, events, filter, url, auth) VALUES ($1, '{order.*}', $2, $3, $4)",
                &[&name, &filter, &url, &auth],
            )
            .await
            .unwrap();
    }
    let verdicts = wait_until(SOON, "the relay to mark the SQL-written rows invalid", || async {
        let rows = client
            .query(
                "SELECT name, valid, error FROM outbox.webhooks WHERE name LIKE 'bad-%' AND NOT valid ORDER BY name",
                &[],
            )
            .await
            .unwrap();
        (rows.len() == 6).then(|| {
            rows.iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(2).unwrap_or_default()))
                .collect::<BTreeMap<_, _>>()
        })
    })
    .await;
    assert!(
        verdicts["bad-filter"].contains("filter: the expression does not compile as CEL"),
        "{verdicts:?}"
    );
    assert!(
        verdicts["bad-2000-terms"].contains("2001 terms; the limit is 500"),
        "{verdicts:?}"
    );
    assert!(
        verdicts["bad-500-deep"].contains("500 levels deep"),
        "{verdicts:?}"
    );
    assert!(
        verdicts["bad-member-chain"].contains("nested"),
        "{verdicts:?}"
    );
    assert!(verdicts["bad-url"].contains("url:"), "{verdicts:?}");
    assert!(
        verdicts["bad-shape"].contains("does not have the shape of a webhook"),
        "{verdicts:?}"
    );

    // Every other webhook keeps working; the invalid ones get nothing.
    emit(&client, "order.created", "1", "{}", "{}").await;
    receiver.wait_for(1, SOON).await;
    wait_for_status(&client, 1, "succeeded").await;
    let log = delivery_log(&client).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].webhook, "good");

    // Fixing a row by SQL makes it valid again, live.
    client
        .execute("UPDATE outbox.webhooks SET filter = 'event.entity_id == \"2\"' WHERE name = 'bad-filter'", &[])
        .await
        .unwrap();
    wait_until(SOON, "bad-filter to become valid", || async {
        let row = client
            .query_one(
                "SELECT valid, error FROM outbox.webhooks WHERE name = 'bad-filter'",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, bool>(0) && row.get::<_, Option<String>>(1).is_none()).then_some(())
    })
    .await;
    emit(&client, "order.created", "2", "{}", "{}").await;
    wait_for_status(&client, 3, "succeeded").await;
    let mut got = routed(&client).await;
    assert_eq!(got.remove("bad-filter"), Some(vec!["2".to_string()]));
    assert_eq!(
        got.remove("good"),
        Some(vec!["1".to_string(), "2".to_string()])
    );
    assert!(got.is_empty(), "{got:?}");
    relay.stop().await;
}

#[tokio::test]
async fn a_filter_changed_while_the_relay_runs_takes_effect_at_once() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"shop\"\nevents = [\"order.*\"]\nfilter = 'event.metadata.shop == \"nl\"'\nurl = \"{}\"\n",
            receiver.url("/shop")
        ),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    emit(&client, "order.created", "nl-1", "{}", r#"{"shop": "nl"}"#).await;
    wait_for_status(&client, 1, "succeeded").await;

    // Change the filter (as `apply` or any SQL client would) and keep emitting "de" events until
    // one is routed. The periodic reload runs every 30 s, so finishing within the 20 s deadline
    // shows the change arrived by NOTIFY.
    client
        .execute(
            "UPDATE outbox.webhooks SET filter = 'event.metadata.shop == \"de\"' WHERE name = 'shop'",
            &[],
        )
        .await
        .unwrap();
    let changed = Instant::now();
    let mut n = 0;
    wait_until(
        SOON,
        "a \"de\" event to be routed under the new filter",
        || {
            n += 1;
            let client = &client;
            async move {
                emit(
                    client,
                    "order.created",
                    &format!("de-{n}"),
                    "{}",
                    r#"{"shop": "de"}"#,
                )
                .await;
                tokio::time::sleep(Duration::from_millis(30)).await;
                let log = delivery_log(client).await;
                log.iter()
                    .any(|d| d.entity_id.starts_with("de-"))
                    .then_some(())
            }
        },
    )
    .await;
    eprintln!("filter change took effect after {:?}", changed.elapsed());
    emit(&client, "order.created", "nl-2", "{}", r#"{"shop": "nl"}"#).await;
    emit(
        &client,
        "order.created",
        "de-last",
        "{}",
        r#"{"shop": "de"}"#,
    )
    .await;
    wait_until(SOON, "de-last to be delivered", || async {
        delivery_log(&client)
            .await
            .iter()
            .any(|d| d.entity_id == "de-last" && d.status == "succeeded")
            .then_some(())
    })
    .await;
    relay.stop().await;
    let ids: Vec<String> = delivery_log(&client)
        .await
        .into_iter()
        .map(|d| d.entity_id)
        .collect();
    assert!(
        !ids.contains(&"nl-2".to_string()),
        "the old filter no longer applies: {ids:?}"
    );
    assert_eq!(ids[0], "nl-1");
}

#[tokio::test]
async fn webhooks_list_and_show_print_every_key_with_secrets_hidden() {
    let db = TestDb::new().await;
    let file = temp_file(
        "hooks.toml",
        r#"
[[webhook]]
name = "carrier-shipments"
contact = "it@example.com"
events = ["shipment.created", "shipment.updated"]
filter = 'event.data.carrier == "dhl"'
url = "https://relay:url-pass-123@carrier.example/shipments/{{ entity_id }}?api_key=query-key-456"
headers = { "X-Shop" = "{{ event.metadata.shop }}", "X-Api-Key" = "header-key-789" }
priority = 10
coalesce = true

[webhook.auth]
basic = { username = "relay", password = "${E2E_CARRIER_PASSWORD}" }

[webhook.signature]
scheme = "standard"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
"#,
    );
    let out = relay_command(
        &db,
        &["apply", file.to_str().unwrap()],
        &[("E2E_CARRIER_PASSWORD", "hunter2-secret")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let client = db.connect().await;
    client
        .batch_execute(
            "INSERT INTO outbox.webhooks (name, events, url, filter, valid, error)
             VALUES ('sql-broken', '{*}', 'https://example.com/', 'nope(', false, 'filter: the expression does not compile as CEL')",
        )
        .await
        .unwrap();

    let secrets = [
        "hunter2-secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "url-pass-123",
        "query-key-456",
        "header-key-789",
    ];
    let list = relay_command(&db, &["webhooks", "list", "--json"], &[]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list.stderr));
    let show = relay_command(
        &db,
        &["webhooks", "show", "carrier-shipments", "--json"],
        &[],
    );
    assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
    let table = relay_command(&db, &["webhooks", "list"], &[]);
    let plain = relay_command(&db, &["webhooks", "show", "carrier-shipments"], &[]);
    for out in [&list, &show, &table, &plain] {
        let all = text(&out.stdout) + &text(&out.stderr);
        for secret in secrets {
            assert!(!all.contains(secret), "{secret} shown in:\n{all}");
        }
    }

    let listed: Vec<Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed.len(), 2);
    let shown: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown, listed[0]);
    let keys = [
        "name",
        "contact",
        "events",
        "filter",
        "url",
        "method",
        "headers",
        "content_type",
        "body",
        "priority",
        "coalesce",
        "ordered",
        "active",
        "timeout",
        "max_attempts",
        "retry_schedule",
        "max_in_flight",
        "auth",
        "signature",
        "tls",
        "valid",
        "error",
        "disabled_reason",
        "config",
    ];
    for w in &listed {
        let object = w.as_object().unwrap();
        let mut got: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut want = keys.to_vec();
        got.sort();
        want.sort();
        assert_eq!(got, want, "every key, always");
    }
    assert_eq!(shown["valid"], true);
    assert_eq!(shown["error"], Value::Null);
    assert_eq!(shown["auth"]["basic"]["password"], "***");
    assert_eq!(shown["auth"]["basic"]["username"], "relay");
    assert_eq!(shown["signature"]["secrets"][0], "***");
    assert_eq!(shown["headers"]["X-Api-Key"], "***");
    assert_eq!(shown["headers"]["X-Shop"], "{{ event.metadata.shop }}");
    assert_eq!(
        shown["url"],
        "https://relay:***@carrier.example/shipments/{{ entity_id }}?api_key=***"
    );
    assert_eq!(shown["filter"], r#"event.data.carrier == "dhl""#);
    assert_eq!(shown["priority"], 10);
    assert_eq!(shown["coalesce"], true);
    assert_eq!(shown["body"], Value::Null);
    assert_eq!(shown["max_attempts"], 10);
    let broken = &listed[1];
    assert_eq!(broken["name"], "sql-broken");
    assert_eq!(broken["valid"], false);
    assert_eq!(
        shown["config"]["url"], shown["url"],
        "config holds the same keys"
    );
    assert_eq!(shown["config"]["auth"], shown["auth"]);
    assert_eq!(
        broken["error"],
        "filter: the expression does not compile as CEL"
    );

    let missing = relay_command(&db, &["webhooks", "show", "nope"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("no webhook named \"nope\""));
}

#[tokio::test]
async fn a_relation_added_by_sql_while_the_relay_runs_is_used_at_once() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            r#"[[webhook]]
name = "with-order"
events = ["shipment.*"]
url = "{}"
body = '{{"order": {{{{ related.order.code }}}}}}'
max_attempts = 1
"#,
            receiver.url("/with-order")
        ),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    // Without the relation, rendering fails and (one attempt allowed) the delivery dies.
    emit(
        &client,
        "shipment.created",
        "before",
        r#"{"order_code": "A-1"}"#,
        "{}",
    )
    .await;
    wait_for_status(&client, 1, "dead").await;
    let error: Option<String> = client
        .query_one(
            "SELECT last_error FROM outbox.delivery_log WHERE entity_id = 'before'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("no relation \"order\"")),
        "{error:?}"
    );

    client
        .execute(
            "INSERT INTO outbox.relations (entity, name, query)
             VALUES ('shipment', 'order', 'SELECT jsonb_build_object(''code'', $1::jsonb->>''order_code'')')",
            &[],
        )
        .await
        .unwrap();
    // Keep shipping until one arrives with its order: within the 20 s deadline, so by NOTIFY
    // (the periodic reload runs every 30 s).
    let mut n = 0;
    let got = wait_until(SOON, "a shipment delivered with its related order", || {
        n += 1;
        let (client, receiver) = (&client, &receiver);
        async move {
            emit(
                client,
                "shipment.created",
                &format!("s{n}"),
                &format!(r#"{{"order_code": "B-{n}"}}"#),
                "{}",
            )
            .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            receiver
                .requests()
                .into_iter()
                .find(|r| r.path == "/with-order")
        }
    })
    .await;
    relay.stop().await;
    let body = got.json();
    assert!(
        body["order"]
            .as_str()
            .is_some_and(|code| code.starts_with("B-")),
        "{body}"
    );
}

#[tokio::test]
async fn events_committed_with_or_after_a_webhook_change_are_routed_by_the_changed_configuration() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"first\"\nevents = [\"*\"]\nurl = \"{}\"\n",
            receiver.url("/first")
        ),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    // Each round adds a webhook and emits an event in one transaction: the notification of the
    // change and the event arrive together, and the router must not route the event by the
    // configuration it had before.
    for round in 0..5 {
        client
            .batch_execute(&format!(
                "BEGIN;
                 INSERT INTO outbox.webhooks (name, events, url) VALUES ('added{round}', '{{order.*}}', '{}');
                 SELECT outbox.emit('order.created', 'order', '{round}');
                 COMMIT;",
                receiver.url(&format!("/added{round}"))
            ))
            .await
            .unwrap();
        let path = format!("/added{round}");
        wait_until(
            SOON,
            &format!("the event of round {round} at {path}"),
            || async {
                receiver
                    .requests()
                    .iter()
                    .any(|r| r.path == path)
                    .then_some(())
            },
        )
        .await;
    }
    relay.stop().await;
    let log = delivery_log(&client).await;
    for round in 0..5 {
        // addedN gets the event of its own round and of every later one, each once.
        let name = format!("added{round}");
        let mut got: Vec<String> = log
            .iter()
            .filter(|d| d.webhook == name)
            .map(|d| d.entity_id.clone())
            .collect();
        got.sort();
        let want: Vec<String> = (round..5).map(|r| r.to_string()).collect();
        assert_eq!(got, want, "{name}: {log:?}");
    }
}
