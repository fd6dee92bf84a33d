//! `outbox-relay demo` and `outbox-relay receive` (issue 6).

use std::time::Duration;

use outbox_testkit::{TestDb, wait_until};

use crate::support::*;

#[tokio::test]
async fn demo_once_runs_end_to_end_and_cleans_up() {
    let admin = outbox_testkit::admin_url();
    let mut demo = Spawned::start(&["demo", "--once"], &[("DATABASE_URL", admin.as_str())]);
    let code = demo.wait_exit(Duration::from_secs(120)).await;
    let out = demo.stdout_text();
    assert_eq!(
        code,
        Some(0),
        "stdout:\n{out}\nstderr:\n{}",
        demo.stderr_text()
    );
    assert!(out.contains("all 11 sample deliveries succeeded"), "{out}");
    // Each example webhook was received with its signature verified (the unsigned GET aside),
    // the XML body escaped and carrying its related order.
    assert!(
        out.contains("POST /crm/orders/1  signature verified (standard"),
        "{out}"
    );
    assert!(out.contains("POST /carrier/shipments/"), "{out}");
    assert!(out.contains("verified (hmac-sha256, hex-upper"), "{out}");
    assert!(
        out.contains("GET /kladana/webhook?id=1&type=order"),
        "{out}"
    );
    assert!(out.contains("Grace &amp; Co &lt;Hopper&gt;"), "{out}");
    assert!(out.contains("<order code=\"SO-100"), "{out}");
    assert!(
        out.contains("succeeded after 2 attempts"),
        "the refused carrier request was retried: {out}"
    );
    assert!(
        !out.contains("/crm/orders/3"),
        "the draft order is filtered out: {out}"
    );

    // The throwaway database is gone.
    let name = out
        .split_whitespace()
        .find(|w| w.starts_with("outbox_demo_"))
        .expect("the demo names its database")
        .to_string();
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "{name} was dropped");
}

#[tokio::test]
async fn demo_once_starts_its_own_postgres_without_database_url() {
    // A fresh machine: Postgres binaries installed, nothing running, no DATABASE_URL.
    let mut demo = Spawned::start_without(&["demo", "--once"], &[], &["DATABASE_URL"]);
    let code = demo.wait_exit(Duration::from_secs(120)).await;
    let out = demo.stdout_text();
    assert_eq!(
        code,
        Some(0),
        "stdout:\n{out}\nstderr:\n{}",
        demo.stderr_text()
    );
    assert!(out.contains("a private Postgres in "), "{out}");
    assert!(out.contains("all 11 sample deliveries succeeded"), "{out}");
    let dir = out
        .split_whitespace()
        .find(|w| w.contains("outbox-relay-pg-"))
        .expect("the demo names its data directory");
    assert!(
        !std::path::Path::new(dir).exists(),
        "{dir} is removed on exit"
    );
}

#[tokio::test]
async fn receive_prints_requests_and_verifies_both_signature_schemes() {
    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OTHER_WHSEC: &str = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY";
    let mut receiver = Spawned::start(
        &[
            "receive",
            "--listen",
            "127.0.0.1:0",
            "--secret",
            WHSEC,
            "--secret",
            "shared-text",
        ],
        &[],
    );
    let url = receiver
        .wait_line(false, "the receiver's address", |l| {
            let rest = l.strip_prefix("receiving webhooks on ")?;
            Some(rest.split_whitespace().next()?.to_string())
        })
        .await;
    let db = TestDb::new().await;
    let hook = |name: &str, signature: &str| {
        format!(
            "[[webhook]]\nname = \"{name}\"\nevents = [\"*\"]\nurl = \"{url}/{name}\"\n[webhook.signature]\n{signature}\n"
        )
    };
    apply(
        &db,
        &[
            hook(
                "standard",
                &format!("secrets = [\"{OTHER_WHSEC}\", \"{WHSEC}\"]"),
            ) + "[webhook.auth]\nbasic = { username = \"relay\", password = \"pw-never-shown\" }\n",
            hook(
                "hex-upper",
                "scheme = \"hmac-sha256\"\nsecrets = [\"shared-text\"]",
            ),
            hook(
                "hex",
                "scheme = \"hmac-sha256\"\nencoding = \"hex\"\nsecrets = [\"shared-text\"]",
            ),
            hook(
                "base64",
                "scheme = \"hmac-sha256\"\nencoding = \"base64\"\nsecrets = [\"shared-text\"]",
            ),
            hook("wrong", &format!("secrets = [\"{OTHER_WHSEC}\"]")),
        ]
        .concat(),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    client
        .execute(
            "SELECT outbox.emit('order.created', 'order', '1', '{\"code\": \"SO-1\"}')",
            &[],
        )
        .await
        .unwrap();
    wait_until(SOON, "five requests printed", || async {
        (receiver.stdout_text().matches("signature: ").count() >= 5).then_some(())
    })
    .await;
    relay.stop().await;
    assert_eq!(receiver.terminate().await, Some(0));

    let out = receiver.stdout_text();
    for (path, verdict) in [
        ("/standard", "verified (standard, base64, secret #1)"),
        ("/hex-upper", "verified (hmac-sha256, hex-upper, secret #2)"),
        ("/hex ", "verified (hmac-sha256, hex, secret #2)"),
        ("/base64", "verified (hmac-sha256, base64, secret #2)"),
        ("/wrong", "INVALID (standard)"),
    ] {
        let block = out
            .split("── ")
            .find(|b| {
                b.contains(&format!("POST {path}"))
                    || b.contains(&format!("POST {}  ", path.trim()))
            })
            .unwrap_or_else(|| panic!("no request to {path} in:\n{out}"));
        assert!(
            block.contains(verdict),
            "{path}: want {verdict} in:\n{block}"
        );
        assert!(
            block.contains("\"code\": \"SO-1\""),
            "the body is printed: {block}"
        );
        assert!(
            block.contains("webhook-id: msg_"),
            "headers are printed: {block}"
        );
    }
    assert!(out.contains("username \"relay\", password hidden"), "{out}");
    assert!(!out.contains("pw-never-shown"), "{out}");
}
