//! `outbox-relay run`: wires the listener, router, catalog, sender and HTTP endpoint together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use outbox_core::SchemaStatus;
use outbox_listener::{Router, Wakeups};
use outbox_sender::{HttpTransport, NetworkPolicy, Pools, Sender, SenderOptions, Transport};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::config::Settings;
use crate::error::Failure;
use crate::health::Health;
use crate::http;

/// How often the catalog is reloaded without a notification.
const RELOAD_EVERY: Duration = Duration::from_secs(30);
/// Connections for related-record lookups (one per claimed batch that needs them, at a time).
const LOOKUP_CONNECTIONS: usize = 4;
/// On shutdown, how long results that cannot be recorded (the database is down) are retried.
const RECORD_GRACE: Duration = Duration::from_secs(10);
/// On shutdown, how long the background tasks get to finish once the sender has stopped.
const BACKGROUND_GRACE: Duration = Duration::from_secs(2);

/// A running relay.
pub struct Relay {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    addr: SocketAddr,
}

impl Relay {
    /// Starts a relay; returns once it is connected, configured and listening.
    pub async fn start(settings: Settings) -> Result<Relay, Failure> {
        let transport = HttpTransport::new(NetworkPolicy::new(
            settings.allow_networks.clone(),
            settings.deny_networks.clone(),
        ))
        .map_err(|e| Failure::runtime(e.to_string()))?;
        Relay::start_with(settings, Arc::new(transport)).await
    }

    /// Starts a relay sending through `transport`.
    pub async fn start_with(
        settings: Settings,
        transport: Arc<dyn Transport>,
    ) -> Result<Relay, Failure> {
        http::check_listen(settings.listen, settings.admin_token.as_deref())?;
        let metrics = crate::telemetry::prometheus().map_err(Failure::runtime)?;
        let pool = outbox_core::db::relay_pool(&settings.database_url, pool_size(&settings))?;
        let client = pool.get().await.map_err(|e| {
            Failure::runtime(format!(
                "cannot connect to the database at {}: {}",
                outbox_core::db::redact_url(&settings.database_url),
                outbox_core::Error::from(e)
            ))
        })?;
        match outbox_core::schema_status(&client).await? {
            SchemaStatus::Current => {}
            SchemaStatus::Missing | SchemaStatus::Behind { .. } => {
                return Err(Failure::runtime(
                    "the database schema is missing or out of date; run `outbox-relay migrate` first",
                ));
            }
            SchemaStatus::Ahead { found } => {
                return Err(Failure::runtime(format!(
                    "the database schema (version {found}) is newer than this relay understands ({}); upgrade outbox-relay",
                    outbox_core::SCHEMA_VERSION
                )));
            }
        }
        set_notify(&client, settings.notify).await?;
        warn_capture_privileges(&client).await?;
        let capture = outbox_core::capture_in_use(&client).await?;
        let install_id: String = client
            .query_one("SELECT install_id FROM outbox.router WHERE id = 1", &[])
            .await?
            .get(0);
        drop(client);

        let catalog = Arc::new(Catalog::default());
        let loaded = catalog.reload(&pool).await?;
        tracing::info!(
            valid = loaded.valid,
            invalid = loaded.invalid,
            "loaded webhooks"
        );

        let admin_token = settings.admin_token.clone();
        let listener = http::bind(settings.listen, admin_token.as_deref()).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::runtime(e.to_string()))?;

        let shutdown = CancellationToken::new();
        let wakeups = Arc::new(Wakeups::default());
        let health = Arc::new(Health::default());
        let owner = owner_name();
        tracing::info!(relay = %owner, listen = %addr, %capture, "relay started");

        let background = vec![
            tokio::spawn(outbox_listener::listen(
                outbox_core::db::target(&settings.database_url)?,
                wakeups.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(reload_loop(
                catalog.clone(),
                pool.clone(),
                wakeups.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(route_loop(
                Router::new(pool.clone(), settings.claim_batch)
                    .with_producer_notify(settings.notify),
                catalog.clone(),
                pool.clone(),
                wakeups.clone(),
                settings.clone(),
                health.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(crate::maintenance::vacuum::run(
                pool.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(metrics_upkeep(metrics.clone(), shutdown.clone())),
            tokio::spawn(crate::maintenance::sampler::run(
                pool.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(crate::maintenance::retention::run(
                pool.clone(),
                settings.retention,
                shutdown.clone(),
            )),
            tokio::spawn(http::serve(
                listener,
                crate::state::AppState {
                    pool: pool.clone(),
                    metrics,
                    admin_token: admin_token.map(Into::into),
                    transport: HttpTransport::new(NetworkPolicy::new(
                        settings.allow_networks.clone(),
                        settings.deny_networks.clone(),
                    ))
                    .map_err(|e| Failure::runtime(e.to_string()))?,
                    health,
                    console: Arc::new(crate::console::Console::new(settings.console_edit)),
                },
                shutdown.clone(),
            )),
        ];

        let sender = Sender::new(
            Pools {
                relay: pool.clone(),
                lookups: outbox_core::db::pool(&settings.database_url, LOOKUP_CONNECTIONS)?,
            },
            catalog.directory.clone(),
            transport,
            SenderOptions {
                concurrency: settings.concurrency,
                claim_batch: settings.claim_batch,
                poll_interval: settings.poll_interval,
                lease: settings.lease,
                relation_timeout: Duration::from_secs(5),
                record_grace: RECORD_GRACE,
            },
            owner,
            install_id,
            wakeups.deliveries.clone(),
        );
        let sender_shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            sender.run(sender_shutdown).await;
            // The other tasks stop on the same token; one stuck waiting for an unreachable
            // database is not waited for long (none of them holds anything that a rollback or
            // the next start does not undo).
            let deadline = tokio::time::Instant::now() + BACKGROUND_GRACE;
            for mut task in background {
                if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                    task.abort();
                }
            }
            tracing::info!("relay stopped");
        });
        Ok(Relay {
            shutdown,
            task,
            addr,
        })
    }

    /// The address the HTTP endpoint listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A token that stops the relay when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops claiming, lets in-flight attempts finish and be recorded, and returns.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Waits until the relay stops (after its shutdown token is cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

fn pool_size(settings: &Settings) -> usize {
    // router, claimer, completer, rescuer, reloads, API, relation lookups
    (8 + settings.concurrency / 64).min(32)
}

/// Switches producers' NOTIFY on or off: the trigger on `outbox.events` (for direct inserts and
/// `emit`), and, when off, the flag that `capture` reads (the router never sets it again).
async fn set_notify(client: &tokio_postgres::Client, on: bool) -> Result<(), Failure> {
    if !on {
        client
            .batch_execute("SELECT setval('outbox.notify_wanted', 0)")
            .await?;
    }
    let enabled: bool = client
        .query_one(
            "SELECT tgenabled <> 'D' FROM pg_trigger
             WHERE tgrelid = 'outbox.events'::regclass AND tgname = 'events_notify'",
            &[],
        )
        .await?
        .get(0);
    if enabled != on {
        let sql = if on {
            "ALTER TABLE outbox.events ENABLE TRIGGER events_notify"
        } else {
            "ALTER TABLE outbox.events DISABLE TRIGGER events_notify"
        };
        client.batch_execute(sql).await.map_err(|e| {
            Failure::runtime(format!(
                "cannot switch notify {}: {} (the relay's database user must own outbox.events)",
                if on { "on" } else { "off" },
                outbox_core::db::describe(&e)
            ))
        })?;
        tracing::info!(notify = on, "switched NOTIFY on event inserts");
    }
    Ok(())
}

/// Logs the producer privileges that break capture or reopen the door it closes (schema 5):
/// every role that may insert into `outbox.events` but not through `outbox.capture_sink`, where
/// `capture` writes, so its statements that fire a capture trigger fail; and every role other
/// than the owner's (and superusers) that may still insert into `outbox.captured_events`
/// directly, with ids of its choosing. The upgrade moved the grants of the time; this catches
/// grants made since.
async fn warn_capture_privileges(client: &tokio_postgres::Client) -> Result<(), Failure> {
    let rows = client
        .query(
            "SELECT r.rolname FROM pg_roles r
             WHERE r.rolname NOT LIKE 'pg\\_%'
               AND has_table_privilege(r.oid, 'outbox.events', 'INSERT')
               AND NOT has_table_privilege(r.oid, 'outbox.capture_sink', 'INSERT')
               -- or on the columns capture() names, as its INSERT would accept
               AND NOT (SELECT bool_and(has_column_privilege(r.oid, 'outbox.capture_sink', c, 'INSERT'))
                        FROM unnest(ARRAY['event_type', 'entity', 'entity_id', 'data', 'old']) c)
             ORDER BY 1",
            &[],
        )
        .await?;
    for row in rows {
        let role: String = row.get(0);
        tracing::warn!(
            role,
            "role {role} may insert into outbox.events but not into outbox.capture_sink, so its statements that fire outbox.capture() triggers fail; GRANT INSERT ON outbox.capture_sink TO it"
        );
    }
    let rows = client
        .query(
            "SELECT r.rolname FROM pg_roles r, pg_class c
             WHERE c.oid = 'outbox.captured_events'::regclass
               AND r.rolname NOT LIKE 'pg\\_%' AND NOT r.rolsuper
               AND NOT pg_has_role(r.oid, c.relowner, 'USAGE')
               AND has_any_column_privilege(r.oid, c.oid, 'INSERT')
             ORDER BY 1",
            &[],
        )
        .await?;
    for row in rows {
        let role: String = row.get(0);
        tracing::warn!(
            role,
            "role {role} may insert into outbox.captured_events directly, with event ids of its choosing (a duplicate stops routing); it needs INSERT on outbox.capture_sink only: REVOKE INSERT ON outbox.captured_events FROM it"
        );
    }
    Ok(())
}

fn owner_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "relay".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &tag[..6])
}

async fn reload_loop(
    catalog: Arc<Catalog>,
    pool: Pool,
    wakeups: Arc<Wakeups>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wakeups.config.notified() => {}
            _ = tokio::time::sleep(RELOAD_EVERY) => {}
        }
        match catalog.reload(&pool).await {
            Ok(r) => tracing::debug!(valid = r.valid, invalid = r.invalid, "reloaded webhooks"),
            Err(e) => {
                tracing::warn!(error = %e, "reloading webhooks failed; keeping the previous configuration")
            }
        }
        // New or re-activated webhooks may have deliveries waiting.
        wakeups.deliveries.notify_one();
    }
}

/// Due deliveries the hot queue may hold before the router pauses (at least this many; more when
/// `claim_batch` is large).
const QUEUE_HIGH_WATER: i64 = 100_000;
/// Pause between pages while events keep coming (producers do not NOTIFY then).
const BUSY_POLL: Duration = Duration::from_micros(200);
/// ... and after a page of fewer than `SMALL_PAGE` events.
const BUSY_POLL_SMALL: Duration = Duration::from_millis(1);
const SMALL_PAGE: usize = 64;
/// After running dry, how often and how many times the router looks again before it relies on
/// notifications alone (covers transactions that checked the notify flag before it was set).
const GRACE_POLL: Duration = Duration::from_millis(10);
const GRACE_POLLS: u32 = 100;

/// How often the router looks at the queue's size while it is creating deliveries.
const QUEUE_CHECK_EVERY: Duration = Duration::from_millis(250);

async fn route_loop(
    router: Router,
    catalog: Arc<Catalog>,
    pool: Pool,
    wakeups: Arc<Wakeups>,
    settings: Settings,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let high_water = QUEUE_HIGH_WATER.max(100 * settings.claim_batch as i64);
    let mut failures = 0u32;
    let mut paused = false;
    let mut last_check: Option<tokio::time::Instant> = None;
    let mut grace = 0u32;
    loop {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            // Backpressure: while the senders are far behind, leave the backlog in outbox.events
            // (append-only, free to keep) rather than in the hot queue, whose every row is
            // updated and deleted again. Resume at half the high-water mark.
            if last_check.is_none_or(|t| t.elapsed() >= QUEUE_CHECK_EVERY) {
                last_check = Some(tokio::time::Instant::now());
                match queued_due(&pool, &catalog, high_water).await {
                    Ok(due) if due >= high_water => {
                        if !paused {
                            tracing::info!(
                                due,
                                "the queue is full; routing pauses until the senders catch up"
                            );
                        }
                        paused = true;
                        health.set_routing_paused(true);
                    }
                    Ok(due) if due < high_water / 2 => {
                        if paused {
                            tracing::info!(due, "routing resumes");
                        }
                        paused = false;
                        health.set_routing_paused(false);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "could not measure the queue"),
                }
            }
            if paused {
                break;
            }
            let routing = catalog.routing.load_full();
            match router.route_page(routing).await {
                Ok(Some(page)) if page.stale_config => {
                    // A webhook or relation changed and these events were committed after it:
                    // route them by the new configuration.
                    if let Err(e) = catalog.reload(&pool).await {
                        tracing::warn!(error = %e, "reloading webhooks failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                    }
                    wakeups.deliveries.notify_one();
                }
                Ok(Some(page)) => {
                    failures = 0;
                    if page.created > 0 || page.coalesced > 0 {
                        wakeups.deliveries.notify_one();
                    }
                    if page.more {
                        continue;
                    }
                    if page.events > 0 {
                        // Busy: producers are not notifying; look again after a moment (long
                        // enough for a few more commits to make the next page worth it).
                        // A small page means events trickle in: wait a little longer, so the next
                        // transaction routes a batch rather than one or two events.
                        let pause = if page.events < SMALL_PAGE {
                            BUSY_POLL_SMALL
                        } else {
                            BUSY_POLL
                        };
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(pause) => {}
                        }
                        continue;
                    }
                    if page.went_idle {
                        grace = GRACE_POLLS;
                    }
                    if grace > 0 {
                        // Just switched producers back to NOTIFY: a transaction that checked the
                        // flag before the switch commits without notifying; catch it by polling
                        // briefly.
                        grace -= 1;
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = wakeups.events.notified() => {}
                            _ = tokio::time::sleep(GRACE_POLL) => {}
                        }
                        continue;
                    }
                    break;
                }
                Ok(None) => break, // another relay is routing
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::warn!(error = %e, "routing events failed; retrying");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10)))) => {}
                    }
                    break;
                }
            }
        }
        let wait = if paused {
            QUEUE_CHECK_EVERY
        } else {
            settings.poll_interval
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wakeups.events.notified(), if !paused => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Due deliveries of the active webhooks, counted up to `limit`.
async fn queued_due(pool: &Pool, catalog: &Catalog, limit: i64) -> Result<i64, outbox_core::Error> {
    let ids: Vec<i64> = catalog
        .directory
        .load()
        .sendable
        .iter()
        .map(|e| e.id)
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let client = pool.get().await?;
    let statement = client.prepare_cached(outbox_core::sql::QUEUED_DUE).await?;
    Ok(client.query_one(&statement, &[&ids, &limit]).await?.get(0))
}

/// Folds recorded histogram samples into their buckets every few seconds. The exporter otherwise
/// keeps every sample until the next scrape, so a relay nobody scrapes would grow by a few bytes per
/// delivery, forever.
async fn metrics_upkeep(
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => metrics.run_upkeep(),
        }
    }
}
