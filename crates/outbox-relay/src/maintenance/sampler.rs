//! Samples the queue gauges `outbox_queue_depth{status}` and `outbox_oldest_pending_age_seconds`
//! every few seconds, so a scrape never touches the database.
//!
//! The sample is cheap at any queue size (see `sql/queries/queue_sample.sql`): counts are exact up
//! to [`EXACT_UP_TO`] rows and estimated from Postgres' statistics beyond that, and the oldest
//! pending delivery and the oldest unrouted event are single index probes. Every relay samples; the
//! gauges describe the shared queue, so dashboards take `max` over relays, not `sum`.

use std::time::Duration;

use deadpool_postgres::Pool;
use outbox_core::{sql, telemetry};
use tokio_util::sync::CancellationToken;

/// How often the gauges are refreshed.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Counts are exact up to this many rows; a larger pending count is an estimate.
pub const EXACT_UP_TO: i64 = 10_000;

/// One reading of the queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueSample {
    pub pending: f64,
    pub in_flight: f64,
    /// Seconds the oldest undelivered work has waited: the oldest pending delivery (waiting for
    /// its first attempt, a retry, or a paused webhook) or the oldest committed event not yet routed.
    pub oldest_pending_age: f64,
}

/// Reads the queue once.
pub async fn sample(pool: &Pool) -> Result<QueueSample, outbox_core::Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Every part of the query is an index scan that stops early; never let the planner pick a
    // sequential scan of a large queue instead.
    tx.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL statement_timeout = '5s'")
        .await?;
    let statement = tx.prepare_cached(sql::QUEUE_SAMPLE).await?;
    let row = tx.query_one(&statement, &[&EXACT_UP_TO]).await?;
    tx.commit().await?;
    let pending: i64 = row.try_get(0)?;
    let in_flight: i64 = row.try_get(1)?;
    let estimated_rows: Option<f64> = row.try_get(2)?;
    let oldest_delivery: Option<f64> = row.try_get(3)?;
    let oldest_unrouted: Option<f64> = row.try_get(4)?;
    let pending = if pending < EXACT_UP_TO {
        pending as f64
    } else {
        // At least EXACT_UP_TO; the table's estimated live rows minus those in flight otherwise.
        estimated_rows
            .map(|rows| (rows - in_flight as f64).round())
            .unwrap_or(0.0)
            .max(EXACT_UP_TO as f64)
    };
    let oldest = oldest_delivery
        .unwrap_or(0.0)
        .max(oldest_unrouted.unwrap_or(0.0))
        .max(0.0);
    Ok(QueueSample {
        pending,
        in_flight: in_flight as f64,
        oldest_pending_age: oldest,
    })
}

/// Refreshes the gauges every [`SAMPLE_EVERY`] until `shutdown`.
pub async fn run(pool: Pool, shutdown: CancellationToken) {
    let mut failures = 0u32;
    loop {
        match sample(&pool).await {
            Ok(s) => {
                failures = 0;
                telemetry::queue_depth("pending", s.pending);
                telemetry::queue_depth("in_flight", s.in_flight);
                telemetry::oldest_pending_age(s.oldest_pending_age);
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!(error = %e, "sampling the queue gauges failed; keeping the last values");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}
