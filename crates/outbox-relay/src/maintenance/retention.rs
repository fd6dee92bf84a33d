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
//!
//! **Cost per deleted row.** Both walks go in index order and resume where they stopped, so a batch
//! reads what it deletes and little else, however long the history: succeeded deliveries by
//! `(updated_at, id)` (index `deliveries_done_expiry`), events by id. A [`Retention`] remembers
//! both positions from one pass to the next: an event the walk passed because a delivery still
//! needed it is not examined again, but deleted with its last delivery. The positions live in the
//! relay's memory; a relay that starts walks the events from the beginning once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use outbox_core::sql;
use tokio_util::sync::CancellationToken;

/// Rows deleted per transaction.
pub const BATCH: i64 = 1000;
/// Advisory lock key ("outbox retention"), taken per batch with `pg_try_advisory_xact_lock`.
pub const LOCK: i64 = 0x6f75_7462_6f78_7274;
/// How often a relay looks for expired rows.
pub const EVERY: Duration = Duration::from_secs(60);

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub deliveries: i64,
    pub attempts: i64,
    pub events: i64,
}

/// What one pass deleted and what it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub purged: Purged,
    /// Transactions (batches) the pass ran.
    pub batches: i64,
    /// Events the walk examined (older than the cutoff and routed); those it did not delete, it
    /// leaves for good.
    pub events_examined: i64,
}

/// Where the walks of one relay got to, kept from pass to pass.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// `(updated_at, id)` of the last succeeded delivery deleted.
    deliveries_after: Option<(DateTime<Utc>, i64)>,
    /// The last event examined.
    events_after: i64,
}

impl Retention {
    pub fn new() -> Self {
        Self::default()
    }

    /// Deletes everything that expired, batch by batch, until nothing is left or `stop` is
    /// cancelled. Returns `None` when another relay was deleting.
    pub async fn pass(
        &mut self,
        pool: &Pool,
        retention: Duration,
        stop: &CancellationToken,
    ) -> Result<Option<Pass>, outbox_core::Error> {
        let client = pool.get().await?;
        let cutoff: DateTime<Utc> = client
            .query_one(
                "SELECT now() - make_interval(secs => $1)",
                &[&retention.as_secs_f64()],
            )
            .await?
            .try_get(0)?;
        drop(client);
        self.pass_before(pool, cutoff, stop).await
    }

    /// [`Retention::pass`] with an explicit cutoff: what finished (deliveries) or was created
    /// (events) before `cutoff` has expired. Later cutoffs must not go back in time.
    pub async fn pass_before(
        &mut self,
        pool: &Pool,
        cutoff: DateTime<Utc>,
        stop: &CancellationToken,
    ) -> Result<Option<Pass>, outbox_core::Error> {
        let mut pass = Pass::default();
        loop {
            if stop.is_cancelled() {
                return Ok(Some(pass));
            }
            let (after_at, after_id) = match self.deliveries_after {
                Some((at, id)) => (Some(at), id),
                None => (None, 0),
            };
            let Some(row) = locked_batch(
                pool,
                sql::RETENTION_DELIVERIES,
                &[&cutoff, &BATCH, &after_at, &after_id],
            )
            .await?
            else {
                return Ok(None);
            };
            pass.batches += 1;
            let deliveries: i64 = row.try_get(0)?;
            pass.purged.deliveries += deliveries;
            pass.purged.attempts += row.try_get::<_, i64>(1)?;
            pass.purged.events += row.try_get::<_, i64>(2)?;
            if let (Some(at), Some(id)) = (row.try_get(3)?, row.try_get(4)?) {
                self.deliveries_after = Some((at, id));
            }
            if deliveries < BATCH {
                break;
            }
        }
        loop {
            if stop.is_cancelled() {
                break;
            }
            let Some(row) = locked_batch(
                pool,
                sql::RETENTION_EVENTS,
                &[&cutoff, &self.events_after, &BATCH],
            )
            .await?
            else {
                return Ok(None);
            };
            pass.batches += 1;
            if let Some(last) = row.try_get::<_, Option<i64>>(0)? {
                self.events_after = last;
            }
            let blocked: bool = row.try_get(1)?;
            pass.events_examined += row.try_get::<_, i64>(2)?;
            let read: i64 = row.try_get(3)?;
            pass.purged.events += row.try_get::<_, i64>(4)?;
            if blocked || read < BATCH {
                break; // at events newer than the cutoff or not routed yet, or at the end
            }
        }
        Ok(Some(pass))
    }
}

/// One pass from the beginning (as a relay's first): deletes everything that expired. Returns
/// `None` when another relay was deleting.
pub async fn purge(
    pool: &Pool,
    retention: Duration,
    stop: &CancellationToken,
) -> Result<Option<Purged>, outbox_core::Error> {
    Ok(Retention::new()
        .pass(pool, retention, stop)
        .await?
        .map(|pass| pass.purged))
}

/// Runs one retention statement in its own short transaction, if this relay gets the lock.
async fn locked_batch(
    pool: &Pool,
    query: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<tokio_postgres::Row>, outbox_core::Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Custom plans: a generic plan knows neither the cutoff nor the batch size, and may choose to
    // read a whole table where the index reads a batch.
    tx.batch_execute(
        "SET LOCAL lock_timeout = '2s'; \
         SET LOCAL statement_timeout = '60s'; \
         SET LOCAL plan_cache_mode = force_custom_plan",
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
    let mut state = Retention::new();
    let mut wait = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = EVERY;
        match state.pass(&pool, retention, &shutdown).await {
            Ok(Some(p)) if p.purged != Purged::default() => tracing::info!(
                deliveries = p.purged.deliveries,
                attempts = p.purged.attempts,
                events = p.purged.events,
                batches = p.batches,
                "retention: deleted expired rows"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "retention: deleting expired rows failed; trying again later")
            }
        }
    }
}
