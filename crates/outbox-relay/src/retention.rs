//! Retention (`retention`, default 7 days): what the relay deletes so its tables do not grow
//! without bound.
//!
//! - Succeeded deliveries (in `outbox.deliveries_done`) that finished more than `retention` ago,
//!   with their attempts. Dead and cancelled deliveries are kept: an operator may still retry them.
//! - Events older than `retention` that have been routed and that no delivery (hot or finished)
//!   refers to any more.
//!
//! Work is done in batches of [`BATCH`] rows, each its own short transaction, so no lock is held for
//! long and vacuum can keep up. A transaction-level advisory lock makes sure only one relay deletes
//! at any moment; the others skip the round. The queries are in `sql/queries/retention_*.sql`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use outbox_core::sql;
use tokio_util::sync::CancellationToken;

/// Rows deleted per transaction.
pub const BATCH: i64 = 1000;
/// Advisory lock key: "outbox retention".
const LOCK: i64 = 0x6f75_7462_6f78_7274;
/// How often a relay looks for expired rows.
pub const EVERY: Duration = Duration::from_secs(60);

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub deliveries: i64,
    pub attempts: i64,
    pub events: i64,
}

/// Deletes everything that expired, batch by batch, until nothing is left or `stop` is cancelled.
/// Returns `None` when another relay was deleting.
pub async fn purge(
    pool: &Pool,
    retention: Duration,
    stop: &CancellationToken,
) -> Result<Option<Purged>, outbox_core::Error> {
    let client = pool.get().await?;
    let cutoff: DateTime<Utc> = client
        .query_one(
            "SELECT now() - make_interval(secs => $1)",
            &[&retention.as_secs_f64()],
        )
        .await?
        .try_get(0)?;
    drop(client);

    let mut purged = Purged::default();
    loop {
        if stop.is_cancelled() {
            return Ok(Some(purged));
        }
        let Some(row) = locked_batch(pool, sql::RETENTION_DELIVERIES, &[&cutoff, &BATCH]).await?
        else {
            return Ok(None);
        };
        let deliveries: i64 = row.try_get(0)?;
        purged.deliveries += deliveries;
        purged.attempts += row.try_get::<_, i64>(1)?;
        if deliveries < BATCH {
            break;
        }
    }
    let mut after: i64 = 0;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let Some(row) =
            locked_batch(pool, sql::RETENTION_EVENTS, &[&cutoff, &after, &BATCH]).await?
        else {
            return Ok(None);
        };
        let last: Option<i64> = row.try_get(0)?;
        let too_new: i64 = row.try_get(1)?;
        purged.events += row.try_get::<_, i64>(2)?;
        match last {
            Some(last) if too_new == 0 => after = last,
            _ => break, // reached the end, or events newer than the cutoff
        }
    }
    Ok(Some(purged))
}

/// Runs one retention statement in its own short transaction, if this relay gets the lock.
async fn locked_batch(
    pool: &Pool,
    query: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<tokio_postgres::Row>, outbox_core::Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(
        "SET LOCAL lock_timeout = '2s'; \
         SET LOCAL statement_timeout = '60s'",
    )
    .await?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LOCK])
        .await?
        .try_get(0)?;
    if !locked {
        return Ok(None);
    }
    let statement = tx.prepare_cached(query).await?;
    let row = tx.query_one(&statement, params).await?;
    tx.commit().await?;
    Ok(Some(row))
}

/// Purges once shortly after start and then every [`EVERY`], until `shutdown`.
pub async fn run(pool: Pool, retention: Duration, shutdown: CancellationToken) {
    let mut wait = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = EVERY;
        match purge(&pool, retention, &shutdown).await {
            Ok(Some(p)) if p != Purged::default() => tracing::info!(
                deliveries = p.deliveries,
                attempts = p.attempts,
                events = p.events,
                "retention: deleted expired rows"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "retention: deleting expired rows failed; trying again later")
            }
        }
    }
}
