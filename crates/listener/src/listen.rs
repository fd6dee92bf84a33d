use std::sync::Arc;
use std::time::Duration;

use futures_util::future::poll_fn;
use outbox_core::telemetry;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

/// Fired (statement-level trigger) when events are inserted.
pub const CHANNEL_EVENTS: &str = "outbox_events";
/// Fired by a relay after it routed new deliveries, so every relay's senders wake up.
pub const CHANNEL_DELIVERIES: &str = "outbox_deliveries";
/// Fired when `outbox.webhooks` or `outbox.relations` change.
pub const CHANNEL_CONFIG: &str = "outbox_config";

/// What there may be to do. Each is a [`Notify`]: a wake-up that arrives while nobody waits is kept
/// for the next waiter, so none is lost between two checks.
#[derive(Debug, Default)]
pub struct Wakeups {
    pub events: Arc<Notify>,
    pub deliveries: Arc<Notify>,
    pub config: Arc<Notify>,
}

impl Wakeups {
    pub fn all(&self) {
        self.events.notify_one();
        self.deliveries.notify_one();
        self.config.notify_one();
    }
}

/// Keeps a LISTEN connection open until `shutdown`, reconnecting with backoff (100 ms doubling to
/// 5 s). Every (re)connection wakes everything, so events committed while it was away are found.
pub async fn listen(
    mut target: outbox_core::db::Target,
    wakeups: Arc<Wakeups>,
    shutdown: CancellationToken,
) {
    target.config.application_name("outbox-relay listener");
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    let mut failures = 0u32;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let result = session(&target, &wakeups, &shutdown, &mut first, &mut backoff).await;
        telemetry::listener_connected(false);
        match result {
            Ok(()) => return, // shut down
            Err(SessionError::Lost(e)) => {
                failures = 0;
                tracing::warn!(error = %e, "LISTEN connection lost; polling every poll_interval until it is back");
            }
            Err(SessionError::Open(e)) => {
                // Said on the first failure and then about once a minute, so a relay that cannot
                // get its LISTEN connection (e.g. max_connections reached) is never quietly slow.
                if failures.is_multiple_of(12) {
                    tracing::warn!(
                        error = %e,
                        failures = failures + 1,
                        "cannot open the LISTEN connection; polling every poll_interval meanwhile (outbox_listener_connected = 0)"
                    );
                }
                failures += 1;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Why a LISTEN session ended.
enum SessionError {
    /// The connection could not be opened, or LISTEN failed on it.
    Open(String),
    /// An established connection broke.
    Lost(String),
}

/// One connection's life. Returns Ok on shutdown, Err when the connection failed or broke.
async fn session(
    target: &outbox_core::db::Target,
    wakeups: &Arc<Wakeups>,
    shutdown: &CancellationToken,
    first: &mut bool,
    backoff: &mut Duration,
) -> Result<(), SessionError> {
    let (client, mut connection) = target
        .connect_raw()
        .await
        .map_err(|e| SessionError::Open(outbox_core::db::describe(&e)))?;
    // The connection must be polled for the LISTEN below to complete, and it is the only place
    // notifications surface, so drive it from its own task.
    let (closed_tx, mut closed_rx) = tokio::sync::oneshot::channel::<String>();
    let driver_wakeups = wakeups.clone();
    let driver = tokio::spawn(async move {
        let reason = loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    telemetry::listener_notification();
                    match n.channel() {
                        CHANNEL_EVENTS => driver_wakeups.events.notify_one(),
                        CHANNEL_DELIVERIES => driver_wakeups.deliveries.notify_one(),
                        CHANNEL_CONFIG => driver_wakeups.config.notify_one(),
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break outbox_core::db::describe(&e),
                None => break "connection closed".to_string(),
            }
        };
        let _ = closed_tx.send(reason);
    });

    let listened = client
        .batch_execute(&format!(
            "LISTEN {CHANNEL_EVENTS}; LISTEN {CHANNEL_DELIVERIES}; LISTEN {CHANNEL_CONFIG};"
        ))
        .await;
    if let Err(e) = listened {
        driver.abort();
        return Err(SessionError::Open(outbox_core::db::describe(&e)));
    }
    telemetry::listener_connected(true);
    if *first {
        tracing::debug!("listening for notifications");
    } else {
        telemetry::db_reconnect();
        tracing::info!("LISTEN connection re-established; rescanning");
    }
    *first = false;
    *backoff = Duration::from_millis(100);
    // Anything committed while we were not listening is found by a rescan.
    wakeups.all();

    tokio::select! {
        _ = shutdown.cancelled() => {
            driver.abort();
            Ok(())
        }
        reason = &mut closed_rx => Err(SessionError::Lost(
            reason.unwrap_or_else(|_| "connection driver stopped".into()),
        )),
    }
}
