//! `outbox-relay demo [--once]`: a zero-setup tour. It needs only the Postgres binaries: without
//! `DATABASE_URL` it starts a private Postgres in a temporary directory; with it, it creates a
//! throwaway database on that server (so it never touches your data). Then it migrates, creates the
//! example `orders`/`shipments` tables (examples/shop.sql), applies the example webhooks
//! (examples/webhooks.toml) pointed at a built-in receiver, writes sample data
//! (examples/sample-data.sql) and prints every request received and every delivery's progress.
//! Ctrl-C stops it and removes what it created; `--once` exits 0 as soon as every sample delivery
//! succeeded (non-zero if they do not within a minute). A demo that was killed cannot clean up:
//! the next one removes what it left ([`super::leftovers`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, Utc};
use outbox_core::cluster::{Options, PrivateCluster};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::leftovers;
use crate::config::Settings;
use crate::error::Failure;
use crate::receiver::{self, Received};
use crate::relay::Relay;

const SHOP_SQL: &str = include_str!("../../../../examples/shop.sql");
const WEBHOOKS_TOML: &str = include_str!("../../../../examples/webhooks.toml");
const SAMPLE_SQL: &str = include_str!("../../../../examples/sample-data.sql");
/// The secrets of examples/webhooks.toml, so the receiver can verify what it gets.
const SECRETS: [&str; 2] = [
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "carrier-demo-secret",
];
/// Deliveries the sample data makes: crm-orders 3 (the draft is filtered out), carrier-shipments
/// 2, kladana-style 6.
const SAMPLE_DELIVERIES: usize = 11;
/// How long `--once` waits for them.
const ONCE_DEADLINE: Duration = Duration::from_secs(60);

/// Where the demo's data lives, and how to clean it up.
enum DemoDb {
    Private {
        cluster: PrivateCluster,
        url: String,
    },
    Throwaway {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl DemoDb {
    async fn open(database_url: Option<String>) -> Result<DemoDb, Failure> {
        match database_url.filter(|u| !u.is_empty()) {
            Some(admin_url) => {
                let name = leftovers::database_name();
                let client = super::connect(&admin_url).await?;
                leftovers::drop_stale_databases(&client).await?;
                // Two statements: CREATE DATABASE cannot run in the implicit transaction of a
                // multi-statement query. The comment marks it as this host's (see leftovers).
                let comment = leftovers::database_comment().replace('\'', "''");
                let created = match client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                {
                    Ok(()) => {
                        client
                            .batch_execute(&format!("COMMENT ON DATABASE {name} IS '{comment}'"))
                            .await
                    }
                    Err(e) => Err(e),
                };
                created.map_err(|e| {
                        Failure::runtime(format!(
                            "cannot create the demo database {name} on {}: {}; the demo needs the \
                             CREATEDB privilege there, or unset DATABASE_URL to let it start a private Postgres",
                            outbox_core::db::redact_url(&admin_url),
                            outbox_core::db::describe(&e)
                        ))
                    })?;
                let url = outbox_core::db::with_database(&admin_url, &name);
                Ok(DemoDb::Throwaway {
                    admin_url,
                    name,
                    url,
                })
            }
            None => {
                let cluster = tokio::task::spawn_blocking(|| {
                    PrivateCluster::start_in(
                        &Options { unsafe_fast: true },
                        &leftovers::dir_prefix(),
                    )
                })
                .await
                .map_err(|e| Failure::runtime(format!("cannot start Postgres: {e}")))?
                .map_err(|e| {
                    Failure::runtime(format!("{e} (or set DATABASE_URL to use a running server)"))
                })?;
                let url = cluster.url("postgres");
                Ok(DemoDb::Private { cluster, url })
            }
        }
    }

    fn url(&self) -> &str {
        match self {
            DemoDb::Private { url, .. } | DemoDb::Throwaway { url, .. } => url,
        }
    }

    fn describe(&self) -> String {
        match self {
            DemoDb::Private { cluster, .. } => format!(
                "a private Postgres in {} (port {}), removed on exit",
                cluster
                    .data_dir()
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                cluster.port()
            ),
            DemoDb::Throwaway {
                admin_url, name, ..
            } => format!(
                "database {name} on {}, dropped on exit",
                outbox_core::db::redact_url(admin_url)
            ),
        }
    }

    async fn close(self) {
        match self {
            DemoDb::Private { cluster, .. } => {
                let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
            }
            DemoDb::Throwaway {
                admin_url, name, ..
            } => {
                let dropped = match super::connect(&admin_url).await {
                    Ok(client) => client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                        .map_err(|e| outbox_core::db::describe(&e)),
                    Err(e) => Err(e.message),
                };
                if let Err(e) = dropped {
                    eprintln!("warning: could not drop the demo database {name}: {e}");
                }
            }
        }
    }
}

pub async fn run(database_url: Option<String>, once: bool) -> Result<(), Failure> {
    crate::telemetry::init_logging_at(false, "warn,deadpool=error");
    println!(
        "outbox-relay demo: committed database changes become signed, retried, logged webhooks\n"
    );
    leftovers::remove_stale_dirs();
    let db = DemoDb::open(database_url).await?;
    let result = tour(&db, once).await;
    println!("cleaning up: {}", db.describe());
    db.close().await;
    result
}

async fn tour(db: &DemoDb, once: bool) -> Result<(), Failure> {
    let url = db.url().to_string();
    let mut client = super::connect(&url).await?;
    outbox_core::migrate(&mut client).await?;
    client.batch_execute(SHOP_SQL).await?;

    // The receiver: verifies signatures, and turns the carrier's first request away with a 503 to
    // show a retry.
    let listener = receiver::bind("127.0.0.1:0").await?;
    let receiver_url = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(|e| Failure::runtime(e.to_string()))?
    );
    let refused = Arc::new(AtomicBool::new(false));
    let options = receiver::Options {
        secrets: SECRETS.iter().map(|s| s.to_string()).collect(),
        hmac_header: "ms-signature".into(),
        respond: Arc::new(move |r: &Received| {
            if r.path.starts_with("/carrier/") && !refused.swap(true, Ordering::SeqCst) {
                503
            } else {
                200
            }
        }),
    };
    let (received_tx, mut received) = mpsc::unbounded_channel();
    let stop_receiver = CancellationToken::new();
    let receiver_task = tokio::spawn(receiver::serve(
        listener,
        options,
        received_tx,
        stop_receiver.clone(),
    ));

    println!("database   {}", db.describe());
    println!("receiver   {receiver_url} (built in; checks every signature)");
    let dir = tempfile::Builder::new()
        .prefix(&leftovers::dir_prefix())
        .tempdir()
        .map_err(|e| Failure::runtime(format!("cannot create a temporary directory: {e}")))?;
    let hooks = dir.path().join("webhooks.toml");
    std::fs::write(
        &hooks,
        WEBHOOKS_TOML.replace("${RECEIVER_URL}", &receiver_url),
    )
    .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", hooks.display())))?;
    println!("webhooks   examples/webhooks.toml:");
    super::apply::run(&url, &hooks, false, false).await?;

    let relay = Relay::start(Settings {
        database_url: url.clone(),
        listen: "127.0.0.1:0".parse().expect("static address"),
        concurrency: 16,
        claim_batch: 100,
        poll_interval: Duration::from_millis(200),
        notify: true,
        lease: Duration::from_secs(30),
        retention: Duration::from_secs(7 * 86400),
        allow_networks: Vec::new(),
        deny_networks: Vec::new(),
        json_logs: false,
        admin_token: None,
        console_edit: true,
    })
    .await?;
    println!(
        "relay      running; metrics on http://{}/metrics, admin API on http://{}/api/deliveries",
        relay.addr(),
        relay.addr()
    );
    println!(
        "console    http://{}/ui/  (the webhooks and the webhook queue, live)\n",
        relay.addr()
    );

    println!(
        "writing sample data (examples/sample-data.sql): 3 orders (SO-1003 is a draft, which the"
    );
    println!(
        "crm-orders filter leaves out), a shipment for SO-1001 and SO-1002, SO-1001 marked paid\n"
    );
    client.batch_execute(SAMPLE_SQL).await?;

    let watched = watch(&client, &url, &mut received, once).await;
    relay.stop().await;
    stop_receiver.cancel();
    let _ = receiver_task.await;
    if watched.is_ok() && once {
        println!("\nall {SAMPLE_DELIVERIES} sample deliveries succeeded");
    }
    watched
}

/// A delivery's state as last printed.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    status: String,
    attempts: i32,
}

/// Prints requests and delivery changes until Ctrl-C (or, with `once`, until every sample delivery
/// succeeded).
async fn watch(
    client: &tokio_postgres::Client,
    url: &str,
    received: &mut mpsc::UnboundedReceiver<Received>,
    once: bool,
) -> Result<(), Failure> {
    let started = Instant::now();
    let mut seen: HashMap<i64, Seen> = HashMap::new();
    let mut announced = false;
    let mut shown_bodies = HashSet::new();
    let signal = crate::shutdown_signal();
    tokio::pin!(signal);
    let mut tick = tokio::time::interval(Duration::from_millis(150));
    loop {
        tokio::select! {
            _ = &mut signal => {
                println!("\nstopping");
                return Ok(());
            }
            Some(r) = received.recv() => print_received(&r, &mut shown_bodies),
            _ = tick.tick() => {
                let rows = client
                    .query(
                        "SELECT id, webhook, event_type, entity, entity_id, status, attempts, last_status,
                                last_error, next_attempt_at
                         FROM outbox.delivery_log ORDER BY id",
                        &[],
                    )
                    .await?;
                let mut succeeded = 0;
                for row in &rows {
                    let id: i64 = row.try_get(0)?;
                    let now = Seen { status: row.try_get(5)?, attempts: row.try_get(6)? };
                    if now.status == "succeeded" {
                        succeeded += 1;
                    }
                    if seen.get(&id) == Some(&now) {
                        continue;
                    }
                    let line = describe_delivery(row, &now)?;
                    if let Some(line) = line {
                        println!("{}  delivery  #{id:<3} {line}", Local::now().format("%H:%M:%S%.3f"));
                    }
                    if now.status == "dead" && once {
                        let error: Option<String> = row.try_get(8)?;
                        return Err(Failure::runtime(format!(
                            "delivery {id} died: {}",
                            error.unwrap_or_default()
                        )));
                    }
                    seen.insert(id, now);
                }
                if succeeded >= SAMPLE_DELIVERIES && !announced {
                    announced = true;
                    if once {
                        // Let the receiver's lines of the last requests print first.
                        while let Ok(r) = received.try_recv() {
                            print_received(&r, &mut shown_bodies);
                        }
                        return Ok(());
                    }
                    println!("\nevery sample delivery succeeded. Make your own changes and watch them arrive:");
                    println!("  psql '{}' -c \"UPDATE orders SET status = 'shipped' WHERE code = 'SO-1002'\"", outbox_core::db::redact_url(url));
                    println!("  outbox-relay deliveries list --database-url '{}'", outbox_core::db::redact_url(url));
                    println!("Ctrl-C stops the demo and removes everything it created.\n");
                }
                if once && started.elapsed() > ONCE_DEADLINE {
                    let mut by_status: HashMap<String, usize> = HashMap::new();
                    for s in seen.values() {
                        *by_status.entry(s.status.clone()).or_default() += 1;
                    }
                    return Err(Failure::runtime(format!(
                        "the sample deliveries did not all succeed within {}s (expected {SAMPLE_DELIVERIES} succeeded; have {by_status:?})",
                        ONCE_DEADLINE.as_secs()
                    )));
                }
            }
        }
    }
}

fn describe_delivery(row: &tokio_postgres::Row, now: &Seen) -> Result<Option<String>, Failure> {
    let webhook: String = row.try_get(1)?;
    let event_type: String = row.try_get(2)?;
    let entity: String = row.try_get(3)?;
    let entity_id: String = row.try_get(4)?;
    let last_status: Option<i32> = row.try_get(7)?;
    let last_error: Option<String> = row.try_get(8)?;
    let next: Option<DateTime<Utc>> = row.try_get(9)?;
    let what = format!(
        "{webhook:<18} {event_type:<17} {:<11}",
        format!("{entity}/{entity_id}")
    );
    let attempts = |n: i32| format!("{n} attempt{}", if n == 1 { "" } else { "s" });
    let text = match now.status.as_str() {
        "pending" if now.attempts == 0 => format!("{what} queued"),
        "pending" => format!(
            "{what} attempt {} failed ({}); next attempt at {}",
            now.attempts,
            last_error.unwrap_or_default(),
            next.map(|n| n.with_timezone(&Local).format("%H:%M:%S").to_string())
                .unwrap_or_default()
        ),
        "in_flight" => return Ok(None),
        "succeeded" => format!(
            "{what} succeeded after {} (HTTP {})",
            attempts(now.attempts),
            last_status.map(|s| s.to_string()).unwrap_or_default()
        ),
        other => format!(
            "{what} {other} after {}: {}",
            attempts(now.attempts),
            last_error.unwrap_or_default()
        ),
    };
    Ok(Some(text))
}

/// One line per request; the first request to each path also shows its body.
fn print_received(r: &Received, shown_bodies: &mut HashSet<String>) {
    println!(
        "{}  received  {} {}  signature {}  → answered {}",
        r.at.format("%H:%M:%S%.3f"),
        r.method,
        r.path,
        r.signature,
        r.status
    );
    if !r.body.is_empty() && shown_bodies.insert(r.path.clone()) {
        for line in receiver::printable_body(r).lines() {
            println!("              | {line}");
        }
    }
}
