//! Vacuuming the hot queue, more often than autovacuum would.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

/// How often the relay vacuums the hot queue.
pub const EVERY: Duration = Duration::from_secs(5);

/// Vacuums the hot queue every [`EVERY`]. Every delivery leaves two dead rows behind (claimed,
/// finished) within seconds; autovacuum wakes up once a minute at most, and by then a busy relay
/// has left a million, which every claim would wade through. Vacuuming a small, mostly-dead table
/// often is cheap; `SKIP_LOCKED` lets concurrent relays take turns.
pub async fn run(pool: Pool, shutdown: CancellationToken) {
    let mut warned = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let result = async {
            let client = pool.get().await?;
            client
                .batch_execute("VACUUM (SKIP_LOCKED) outbox.deliveries")
                .await?;
            Ok::<_, outbox_core::Error>(())
        }
        .await;
        if let Err(e) = result
            && !warned
        {
            warned = true;
            tracing::warn!(error = %e, "cannot vacuum outbox.deliveries (autovacuum will, less often); the relay's database user should own the outbox schema");
        }
    }
}
