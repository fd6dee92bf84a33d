//! Shared helpers of the end-to-end tests.

use std::path::PathBuf;
use std::time::Duration;

use outbox_relay::config::Settings;
use outbox_relay::relay::Relay;
use outbox_testkit::{TestDb, wait_until};

/// Generous deadline for anything the relay should do "soon".
pub const SOON: Duration = Duration::from_secs(20);

/// Relay settings for tests: ephemeral port, fast polling.
pub fn settings(db: &TestDb) -> Settings {
    Settings {
        database_url: db.url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        concurrency: 64,
        claim_batch: 500,
        poll_interval: Duration::from_millis(100),
        notify: true,
        lease: Duration::from_secs(60),
        retention: Duration::from_secs(7 * 86400),
        allow_networks: Vec::new(),
        deny_networks: Vec::new(),
        json_logs: false,
    }
}

pub async fn start(db: &TestDb) -> Relay {
    Relay::start(settings(db)).await.expect("relay starts")
}

/// Writes a webhooks file and applies it with `apply`.
pub async fn apply(db: &TestDb, toml: &str) {
    let path = temp_file("hooks.toml", toml);
    outbox_relay::commands::apply::run(&db.url, &path, false, false)
        .await
        .unwrap_or_else(|e| panic!("apply failed: {e}"));
}

pub fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outbox-e2e-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A delivery as the log shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub id: i64,
    pub webhook: String,
    pub event_type: String,
    pub entity_id: String,
    pub status: String,
    pub attempts: i32,
}

pub async fn delivery_log(client: &tokio_postgres::Client) -> Vec<Logged> {
    client
        .query(
            "SELECT id, webhook, event_type, entity_id, status, attempts FROM outbox.delivery_log ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Logged {
            id: r.get(0),
            webhook: r.get(1),
            event_type: r.get(2),
            entity_id: r.get(3),
            status: r.get(4),
            attempts: r.get(5),
        })
        .collect()
}

/// Waits until `n` deliveries have `status`; returns the log.
pub async fn wait_for_status(
    client: &tokio_postgres::Client,
    n: usize,
    status: &str,
) -> Vec<Logged> {
    wait_until(SOON, &format!("{n} deliveries {status}"), || async {
        let log = delivery_log(client).await;
        (log.iter().filter(|d| d.status == status).count() >= n).then_some(log)
    })
    .await
}

/// `(attempt, status, outcome)` of every attempt of a delivery.
pub async fn attempts(
    client: &tokio_postgres::Client,
    delivery: i64,
) -> Vec<(i32, Option<i32>, String)> {
    client
        .query(
            "SELECT attempt, status, outcome FROM outbox.attempts WHERE delivery_id = $1 ORDER BY attempt",
            &[&delivery],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}
