//! What an operator does to deliveries: re-queue them (named, or a selection of finished ones
//! counted first) and cancel pending ones (named, or a selection counted first).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::{FINISHED, Filter, show};
use crate::error::AdminError;
use crate::sql;

/// What a retry did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Retried {
    pub requeued: Vec<i64>,
    /// Selected but not re-queued: in flight, or their webhook was deleted meanwhile.
    pub skipped: Vec<i64>,
}

/// Re-queues deliveries; returns the ids that were re-queued.
async fn requeue(client: &impl GenericClient, ids: &[i64]) -> Result<Vec<i64>, AdminError> {
    let rows = client.query(outbox_core::sql::RETRY, &[&ids]).await?;
    // Wake the relays' senders.
    client
        .execute("SELECT pg_notify('outbox_deliveries', '')", &[])
        .await?;
    rows.iter()
        .map(|r| r.try_get(0).map_err(AdminError::from))
        .collect()
}

async fn requeue_all(client: &impl GenericClient, ids: &[i64]) -> Result<Retried, AdminError> {
    let mut requeued = Vec::new();
    for chunk in ids.chunks(1000) {
        requeued.extend(requeue(client, chunk).await?);
    }
    let skipped = ids
        .iter()
        .filter(|i| !requeued.contains(i))
        .copied()
        .collect();
    Ok(Retried { requeued, skipped })
}

/// Re-queues the named deliveries with a fresh attempt budget. They are checked first: an
/// unknown id, or one whose webhook was deleted, is an error and nothing is re-queued. One being
/// attempted right now is skipped (the others are re-queued).
pub async fn retry(client: &impl GenericClient, ids: &[i64]) -> Result<Retried, AdminError> {
    let rows = client.query(outbox_core::sql::RETRY_CHECK, &[&ids]).await?;
    let found: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut unknown: Vec<i64> = Vec::new();
    for id in ids {
        if !found.contains(id) && !unknown.contains(id) {
            unknown.push(*id);
        }
    }
    if !unknown.is_empty() {
        return Err(AdminError::NoDeliveries { ids: unknown });
    }
    let mut orphans = Vec::new();
    for r in &rows {
        if !r.try_get::<_, bool>(3)? {
            orphans.push((r.try_get(0)?, r.try_get(2)?));
        }
    }
    if !orphans.is_empty() {
        return Err(AdminError::WebhookDeleted {
            deliveries: orphans,
        });
    }
    let retried = requeue_all(client, ids).await?;
    tracing::info!(
        requeued = retried.requeued.len(),
        "deliveries re-queued by an operator"
    );
    Ok(retried)
}

/// Finished deliveries picked by what they are rather than by id (`deliveries retry --status`,
/// the console's "Retry" of a filtered queue).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// One of [`FINISHED`].
    pub status: String,
    pub webhook: Option<String>,
    pub entity: Option<String>,
    pub entity_id: Option<String>,
    /// Finished at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created at or after / before (the queue's time filter).
    pub created_since: Option<DateTime<Utc>>,
    pub created_until: Option<DateTime<Utc>>,
}

impl Selection {
    fn check(&self) -> Result<(), AdminError> {
        if !FINISHED.contains(&self.status.as_str()) {
            return Err(AdminError::bad(
                "status",
                format!(
                    "status {:?}: only finished deliveries (succeeded, dead, cancelled) can be re-queued by status",
                    self.status
                ),
            ));
        }
        Ok(())
    }
}

/// The ids a selection picks, oldest first.
pub async fn select(
    client: &impl GenericClient,
    selection: &Selection,
) -> Result<Vec<i64>, AdminError> {
    selection.check()?;
    let rows = client
        .query(
            "SELECT id FROM outbox.deliveries_done
             WHERE status = $1 AND ($2::text IS NULL OR webhook = $2)
               AND ($3::timestamptz IS NULL OR updated_at >= $3)
               AND ($4::text IS NULL OR entity = $4) AND ($5::text IS NULL OR entity_id = $5)
               AND ($6::timestamptz IS NULL OR created_at >= $6)
               AND ($7::timestamptz IS NULL OR created_at < $7)
             ORDER BY id",
            &[
                &selection.status,
                &selection.webhook,
                &selection.since,
                &selection.entity,
                &selection.entity_id,
                &selection.created_since,
                &selection.created_until,
            ],
        )
        .await?;
    rows.iter()
        .map(|r| r.try_get(0).map_err(AdminError::from))
        .collect()
}

/// How many deliveries a selection picks (to say before re-queuing them).
pub async fn count_selection(
    client: &impl GenericClient,
    selection: &Selection,
) -> Result<usize, AdminError> {
    Ok(select(client, selection).await?.len())
}

/// Re-queues whatever the selection picks; what cannot be re-queued now is listed as skipped.
pub async fn retry_selection(
    client: &impl GenericClient,
    selection: &Selection,
) -> Result<Retried, AdminError> {
    let ids = select(client, selection).await?;
    let retried = requeue_all(client, &ids).await?;
    tracing::info!(
        requeued = retried.requeued.len(),
        status = %selection.status,
        "selected deliveries re-queued by an operator"
    );
    Ok(retried)
}

/// Cancels pending deliveries (those still pending when the statement runs); returns their ids.
async fn cancel_many(client: &impl GenericClient, ids: &[i64]) -> Result<Vec<i64>, AdminError> {
    let rows = client.query(sql::DELIVERIES_CANCEL, &[&ids]).await?;
    let mut cancelled = Vec::new();
    let (mut webhooks, mut entities, mut entity_ids) = (Vec::new(), Vec::new(), Vec::new());
    for row in &rows {
        cancelled.push(row.try_get::<_, i64>(0)?);
        if row.try_get::<_, bool>(4)? {
            webhooks.push(row.try_get::<_, i64>(1)?);
            entities.push(row.try_get::<_, String>(2)?);
            entity_ids.push(row.try_get::<_, String>(3)?);
        }
    }
    if !webhooks.is_empty() {
        // The records' next deliveries of ordered webhooks may go now.
        client
            .execute(
                outbox_core::sql::RELEASE_NEXT,
                &[&webhooks, &entities, &entity_ids],
            )
            .await?;
        client
            .execute("SELECT pg_notify('outbox_deliveries', '')", &[])
            .await?;
    }
    Ok(cancelled)
}

/// Cancels a pending delivery: it is not sent (again) and is kept as cancelled. A delivery being
/// attempted, or already finished, cannot be cancelled.
pub async fn cancel(client: &impl GenericClient, id: i64) -> Result<(), AdminError> {
    if cancel_many(client, &[id]).await?.is_empty() {
        let detail = show(client, id).await?;
        return Err(AdminError::NotCancellable {
            id,
            status: detail.delivery.status,
        });
    }
    tracing::info!(delivery = id, "delivery cancelled by an operator");
    Ok(())
}

/// What a cancel of a selection did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cancelled {
    pub cancelled: Vec<i64>,
    /// Selected but no longer pending when cancelled (being attempted, or finished meanwhile).
    pub skipped: Vec<i64>,
}

/// The pending deliveries `filter` picks (its status is ignored), oldest first.
async fn select_pending(
    client: &impl GenericClient,
    filter: &Filter,
) -> Result<Vec<i64>, AdminError> {
    let rows = client
        .query(
            "SELECT id FROM outbox.deliveries
             WHERE status = 'pending' AND ($1::text IS NULL OR webhook = $1)
               AND ($2::text IS NULL OR entity = $2) AND ($3::text IS NULL OR entity_id = $3)
               AND ($4::timestamptz IS NULL OR created_at >= $4)
               AND ($5::timestamptz IS NULL OR created_at < $5)
             ORDER BY id",
            &[
                &filter.webhook,
                &filter.entity,
                &filter.entity_id,
                &filter.since,
                &filter.until,
            ],
        )
        .await?;
    rows.iter()
        .map(|r| r.try_get(0).map_err(AdminError::from))
        .collect()
}

/// How many pending deliveries `filter` picks (to say before cancelling them).
pub async fn count_pending(
    client: &impl GenericClient,
    filter: &Filter,
) -> Result<usize, AdminError> {
    Ok(select_pending(client, filter).await?.len())
}

/// Cancels the pending deliveries `filter` picks (its status is ignored).
pub async fn cancel_selection(
    client: &impl GenericClient,
    filter: &Filter,
) -> Result<Cancelled, AdminError> {
    let ids = select_pending(client, filter).await?;
    let mut cancelled = Vec::new();
    for chunk in ids.chunks(1000) {
        cancelled.extend(cancel_many(client, chunk).await?);
    }
    let skipped = ids
        .iter()
        .filter(|i| !cancelled.contains(i))
        .copied()
        .collect();
    tracing::info!(
        cancelled = cancelled.len(),
        "pending deliveries cancelled by an operator"
    );
    Ok(Cancelled { cancelled, skipped })
}
