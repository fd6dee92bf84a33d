//! `outbox-relay run`: wires the listener, router, catalog, sender and HTTP endpoint together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use outbox_core::SchemaStatus;
use outbox_listener::{Router, Wakeups};
use outbox_sender::{HttpTransport, NetworkPolicy, Sender, SenderOptions, Transport};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::config::Settings;
use crate::error::Failure;
use crate::http;

/// How often the catalog is reloaded without a notification.
const RELOAD_EVERY: Duration = Duration::from_secs(30);

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
        let owner = owner_name();
        tracing::info!(relay = %owner, listen = %addr, "relay started");

        let background = vec![
            tokio::spawn(outbox_listener::listen(
                outbox_core::db::config(&settings.database_url)?,
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
                Router::new(pool.clone(), settings.claim_batch),
                catalog.clone(),
                wakeups.clone(),
                settings.poll_interval,
                shutdown.clone(),
            )),
            tokio::spawn(crate::sampler::run(pool.clone(), shutdown.clone())),
            tokio::spawn(crate::retention::run(
                pool.clone(),
                settings.retention,
                shutdown.clone(),
            )),
            tokio::spawn(http::serve(
                listener,
                http::AppState {
                    pool: pool.clone(),
                    metrics,
                    admin_token: admin_token.map(Into::into),
                    transport: HttpTransport::new(NetworkPolicy::new(
                        settings.allow_networks.clone(),
                        settings.deny_networks.clone(),
                    ))
                    .map_err(|e| Failure::runtime(e.to_string()))?,
                },
                shutdown.clone(),
            )),
        ];

        let sender = Sender::new(
            pool.clone(),
            catalog.directory.clone(),
            transport,
            SenderOptions {
                concurrency: settings.concurrency,
                claim_batch: settings.claim_batch,
                poll_interval: settings.poll_interval,
                lease: settings.lease,
                relation_timeout: Duration::from_secs(5),
            },
            owner,
            install_id,
            wakeups.deliveries.clone(),
        );
        let sender_shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            sender.run(sender_shutdown).await;
            for task in background {
                let _ = task.await;
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

/// Switches the NOTIFY trigger on `outbox.events` on or off, if it is not already.
async fn set_notify(client: &tokio_postgres::Client, on: bool) -> Result<(), Failure> {
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

async fn route_loop(
    router: Router,
    catalog: Arc<Catalog>,
    wakeups: Arc<Wakeups>,
    poll_interval: Duration,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let routing = catalog.routing.load_full();
            match router.route_page(routing).await {
                Ok(Some(page)) => {
                    failures = 0;
                    if page.created > 0 || page.coalesced > 0 {
                        wakeups.deliveries.notify_one();
                    }
                    if !page.more {
                        break;
                    }
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
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wakeups.events.notified() => {}
            _ = tokio::time::sleep(poll_interval) => {}
        }
    }
}
