//! Hostile configuration (issue 14): templates and filters that used to crash or stall the relay
//! are refused by `apply` and marked invalid on load; filters over budget fail only their own
//! (event, webhook) pair; the documentation's examples apply as written.

use outbox_testkit::{TestDb, TestReceiver, wait_until};

use crate::support::*;

/// A body template whose expression chain overflowed the stack of `outbox-relay run`.
fn chain_body() -> String {
    format!("{{{{ 1{} }}}}", " + 1".repeat(15_000))
}

#[tokio::test]
async fn apply_refuses_what_would_crash_or_never_fire_naming_webhook_and_field() {
    let db = TestDb::new().await;
    let literal = "x".repeat(1024 * 1024 + 1);
    let file = temp_file(
        "hooks.toml",
        &format!(
            r#"
[[webhook]]
name = "chain"
events = ["*"]
url = "https://example.com/"
body = '''{}'''

[[webhook]]
name = "huge-literal"
events = ["*"]
url = "https://example.com/"
content_type = "text/plain"
body = "{literal}"

[[webhook]]
name = "unknown-function"
events = ["*"]
url = "https://example.com/"
filter = "foo(event.id)"

[[webhook]]
name = "not-bool"
events = ["*"]
url = "https://example.com/"
filter = "event.id"

[[webhook]]
name = "namespace"
events = ["*"]
url = "https://example.com/"
body = "{{% set ns = namespace(n=0) %}}{{{{ ns.n }}}}"
"#,
            chain_body()
        ),
    );
    let (code, _, err) = cli(&db, &["apply", file.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    for expected in [
        r#"webhook "chain": body: line 1: a tag of 30001 tokens; the limit is 256"#,
        r#"webhook "huge-literal": body: the text is 1048577 bytes; a rendered field may be at most 1048576 bytes (1 MiB)"#,
        r#"webhook "unknown-function": filter: line 1, column 1: `foo` is not a function filters have"#,
        r#"webhook "not-bool": filter: line 1, column 6: the expression returns an int, never a bool"#,
        r#"webhook "namespace": body: namespace() is not available"#,
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    let client = db.connect().await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM outbox.webhooks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing is written");
}

#[tokio::test]
async fn hostile_rows_written_by_sql_are_invalid_and_a_filter_over_budget_fails_only_its_pair() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            r#"
[[webhook]]
name = "good"
events = ["order.*"]
url = "{}"

[[webhook]]
name = "heavy"
events = ["order.*"]
url = "{}"
filter = "event.data.l.map(x, event.data.l.map(y, x + y)).size() > 0"
"#,
            receiver.url("/good"),
            receiver.url("/heavy")
        ),
    )
    .await;
    // The real binary: a stack overflow would abort it.
    let (mut relay, addr) = spawn_relay(&db, &[]).await;
    let client = db.connect().await;
    let url = receiver.url("/bad");
    let chain = chain_body();
    let deep_header =
        serde_json::json!({"X-A": format!("{{{{ event{} }}}}", ".data".repeat(10_000))});
    let long_url = format!("{url}{{{{ {} }}}}", vec!["'a'"; 5_000].join(" ~ "));
    for (name, body, hook_url, filter) in [
        ("bad-body", Some(chain.as_str()), url.as_str(), None),
        ("bad-url", None, long_url.as_str(), None),
        (
            "bad-filter",
            None,
            url.as_str(),
            Some("frobnicate(event.id)"),
        ),
    ] {
        client
            .execute(
                "INSERT INTO outbox.webhooks (name, events, url, body, filter) VALUES ($1, '{order.*}', $2, $3, $4)",
                &[&name, &hook_url, &body, &filter],
            )
            .await
            .unwrap();
    }
    client
        .execute(
            "INSERT INTO outbox.webhooks (name, events, url, headers) VALUES ('bad-header', '{order.*}', $1, $2)",
            &[&url, &deep_header],
        )
        .await
        .unwrap();
    let verdicts = wait_until(SOON, "the relay to mark the hostile rows invalid", || async {
        let rows = client
            .query(
                "SELECT name, error FROM outbox.webhooks WHERE name LIKE 'bad-%' AND NOT valid ORDER BY name",
                &[],
            )
            .await
            .unwrap();
        (rows.len() == 4).then(|| {
            rows.iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1).unwrap_or_default()))
                .collect::<std::collections::BTreeMap<_, _>>()
        })
    })
    .await;
    assert!(
        verdicts["bad-body"].contains("body: line 1: a tag of"),
        "{verdicts:?}"
    );
    assert!(
        verdicts["bad-url"].contains("url: line 1: a tag of"),
        "{verdicts:?}"
    );
    assert!(
        verdicts["bad-header"].contains("headers.X-A: line 1: a tag of"),
        "{verdicts:?}"
    );
    assert!(
        verdicts["bad-filter"].contains("`frobnicate` is not a function"),
        "{verdicts:?}"
    );

    // An event whose 3,000-item list makes `heavy` quadratic: `good` gets it, `heavy` does not,
    // and its filter error is counted.
    let items: Vec<i64> = (0..3_000).collect();
    emit(
        &client,
        "order.created",
        "order",
        "1",
        serde_json::json!({"l": items}),
    )
    .await;
    emit(
        &client,
        "order.created",
        "order",
        "2",
        serde_json::json!({"l": [1, 2]}),
    )
    .await;
    receiver.wait_for(3, SOON).await;
    let metrics = wait_until(SOON, "the filter error to be counted", || async {
        let (_, text) = http("GET", &format!("http://{addr}/metrics"), None).await;
        let m = parse_metrics(&text);
        (m.get(r#"outbox_filter_errors_total{webhook="heavy"}"#) == Some(&1.0)).then_some(m)
    })
    .await;
    assert_eq!(
        metrics.get(r#"outbox_filter_errors_total{webhook="good"}"#),
        Some(&0.0)
    );
    let log = delivery_log(&client).await;
    let mut routed: Vec<(String, String)> = log
        .iter()
        .map(|d| (d.webhook.clone(), d.entity_id.clone()))
        .collect();
    routed.sort();
    assert_eq!(
        routed,
        [
            ("good".to_string(), "1".to_string()),
            ("good".to_string(), "2".to_string()),
            ("heavy".to_string(), "2".to_string())
        ]
    );
    assert!(
        relay.stderr_text().contains("evaluation stopped after"),
        "the reason is logged"
    );
    assert!(
        relay.child.try_wait().unwrap().is_none(),
        "the relay still runs"
    );
    relay.terminate().await;
}

/// Every TOML example in the documentation that defines a webhook passes `apply`'s validation,
/// with its placeholders (`${CARRIER_PASSWORD}`, certificate paths) filled in.
#[test]
fn the_documented_webhook_examples_validate() {
    let ca = outbox_testkit::tls::TestCa::new("docs");
    let dir = std::env::temp_dir().join(format!("outbox-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let client = dir.join("carrier.pem");
    std::fs::write(&client, ca.client_cert("relay").bundle_pem()).unwrap();
    let ca_file = dir.join("private-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let mut checked = 0;
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        for block in text.split("```toml").skip(1) {
            let block = block.split("```").next().unwrap_or("");
            if !block.contains("[[webhook]]") {
                continue;
            }
            let block = block
                .replace("${CARRIER_PASSWORD}", "documented-password")
                .replace("/etc/relay/carrier.pem", client.to_str().unwrap())
                .replace("/etc/relay/private-ca.pem", ca_file.to_str().unwrap());
            if let Err(problems) = outbox_relay::commands::apply::parse(file, &block) {
                panic!("{}: {block}\n{problems:#?}", file.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} examples found");
}
