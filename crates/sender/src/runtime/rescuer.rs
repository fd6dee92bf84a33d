//! The rescuer: takes over deliveries whose relay stopped reporting (crashed, lost the database)
//! before its lease ran out, and wakes parked deliveries of ordered webhooks that a race between
//! a completion and a routing commit left behind.
//!
//! Every attempt taken over counts in `outbox_attempts_abandoned_total{webhook}`; a delivery whose
//! attempt budget is spent dies (and counts in `outbox_deliveries_completed_total{status="dead"}`,
//! with a `relay.delivery.dead` event), the others are queued again for their next attempt.

use std::sync::Arc;
use std::time::Duration;

use outbox_core::{sql, telemetry};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::Error;

/// Deliveries taken over per statement.
const BATCH: i64 = 500;

/// Rescues every quarter lease (between 0.5 and 15 s) until `stop`.
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let every =
        (shared.options.lease / 4).clamp(Duration::from_millis(500), Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = rescue(&shared).await {
            tracing::warn!(error = %e, "rescuing expired leases failed");
        }
    }
}

async fn rescue(shared: &Shared) -> Result<(), Error> {
    let mut client = shared.pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx.query(sql::RESCUE, &[&BATCH]).await?;
    let mut taken: Vec<(bool, String)> = Vec::with_capacity(rows.len());
    let mut dead: Vec<i64> = Vec::new();
    for row in &rows {
        let died: bool = row.try_get(1)?;
        if died {
            dead.push(row.try_get(0)?);
        }
        taken.push((died, row.try_get(2)?));
    }
    if !dead.is_empty() {
        tx.execute(sql::DEAD_ALERTS, &[&dead]).await?;
    }
    let ordered: Vec<i64> = shared
        .directory
        .load()
        .endpoints
        .values()
        .filter(|e| e.ordered)
        .map(|e| e.id)
        .collect();
    let released = if ordered.is_empty() {
        0
    } else {
        tx.execute(sql::RELEASE_PARKED, &[&ordered]).await?
    };
    tx.commit().await?;
    for (died, webhook) in &taken {
        telemetry::attempt_abandoned(webhook);
        if *died {
            telemetry::delivery_completed(webhook, "dead");
        }
    }
    if !taken.is_empty() {
        tracing::warn!(
            requeued = taken.len() - dead.len(),
            dead = dead.len(),
            "took over deliveries whose relay stopped reporting before its lease expired"
        );
    }
    if !taken.is_empty() || released > 0 {
        shared.wakeup.notify_one();
    }
    Ok(())
}
