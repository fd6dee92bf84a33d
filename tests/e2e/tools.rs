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
        .find(|w| w.contains("outbox-relay-demo-"))
        .expect("the demo names its data directory");
    assert!(
        !std::path::Path::new(dir).exists(),
        "{dir} is removed on exit"
    );
}

/// Whether a process with this pid exists.
fn running(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The `outbox-relay-demo-*` entries of `dir`.
fn demo_leftovers(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("outbox-relay-demo-"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_demo_killed_with_sigkill_leaves_its_private_postgres_and_the_next_demo_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().to_str().unwrap();
    // Not leftovers of a dead demo: one whose owner runs (this test), a test cluster.
    let live = format!("outbox-relay-demo-{}-live", std::process::id());
    std::fs::create_dir(tmp.path().join(&live)).unwrap();
    std::fs::create_dir(tmp.path().join("outbox-relay-pg-test")).unwrap();

    let mut killed = Spawned::start_without(&["demo"], &[("TMPDIR", tmpdir)], &["DATABASE_URL"]);
    let dir = killed
        .wait_line(false, "the demo's private Postgres", |l| {
            let rest = l.strip_prefix("database   a private Postgres in ")?;
            Some(std::path::PathBuf::from(rest.split(" (port").next()?))
        })
        .await;
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    assert!(dir.join("data").is_dir(), "SIGKILL leaves {dir:?} behind");
    // Its server notices its parent died and stops.
    wait_until(SOON, "the killed demo's Postgres to stop", || async {
        let pid = std::fs::read_to_string(dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<u32>().ok());
        (!pid.is_some_and(running)).then_some(())
    })
    .await;

    let mut next = Spawned::start_without(
        &["demo", "--once"],
        &[("TMPDIR", tmpdir)],
        &["DATABASE_URL"],
    );
    let code = next.wait_exit(Duration::from_secs(120)).await;
    let out = next.stdout_text();
    assert_eq!(
        code,
        Some(0),
        "stdout:\n{out}\nstderr:\n{}",
        next.stderr_text()
    );
    assert!(out.contains(&format!("removed {}", dir.display())), "{out}");
    assert!(!dir.exists(), "{dir:?} was removed");
    assert_eq!(
        demo_leftovers(tmp.path()),
        vec![live],
        "only the live owner's is kept"
    );
    assert!(
        tmp.path().join("outbox-relay-pg-test").exists(),
        "test clusters are not the demo's"
    );
}

#[tokio::test]
async fn a_demo_killed_with_sigkill_leaves_its_database_and_the_next_demo_drops_it() {
    let admin = outbox_testkit::admin_url();
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().to_str().unwrap();
    let env = [("DATABASE_URL", admin.as_str()), ("TMPDIR", tmpdir)];
    let mut killed = Spawned::start(&["demo"], &env);
    let name = killed
        .wait_line(false, "the demo's database", |l| {
            let rest = l.strip_prefix("database   database ")?;
            Some(rest.split_whitespace().next()?.to_string())
        })
        .await;
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();

    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let exists = |name: String| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM pg_database WHERE datname = $1",
                    &[&name],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 1
        }
    };
    assert!(exists(name.clone()).await, "SIGKILL leaves {name} behind");
    // The server notices the killed demo's connections are gone.
    wait_until(SOON, "the killed demo's connections to close", || async {
        let open: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        (open == 0).then_some(())
    })
    .await;
    // A database another demo on this host still uses is never dropped: a live owner.
    let live = format!("outbox_demo_{}_live0000", std::process::id());
    for statement in [
        format!("DROP DATABASE IF EXISTS {live}"),
        format!("CREATE DATABASE {live}"),
    ] {
        client.batch_execute(&statement).await.unwrap();
    }
    let comment: String = client
        .query_one(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(&format!("COMMENT ON DATABASE {live} IS '{comment}'"))
        .await
        .unwrap();

    let mut next = Spawned::start(&["demo", "--once"], &env);
    let code = next.wait_exit(Duration::from_secs(120)).await;
    let out = next.stdout_text();
    assert_eq!(
        code,
        Some(0),
        "stdout:\n{out}\nstderr:\n{}",
        next.stderr_text()
    );
    assert!(out.contains(&format!("dropped database {name}")), "{out}");
    assert!(!exists(name.clone()).await, "{name} was dropped");
    assert!(
        exists(live.clone()).await,
        "{live} belongs to a running process"
    );
    client
        .batch_execute(&format!("DROP DATABASE {live}"))
        .await
        .unwrap();
    assert!(
        demo_leftovers(tmp.path()).is_empty(),
        "{:?}",
        demo_leftovers(tmp.path())
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
