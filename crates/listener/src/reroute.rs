//! Events set aside as unroutable: listing them, and routing them again once the cause is fixed
//! (`outbox-relay events unrouted` / `events reroute`).
//!
//! A reroute routes each event on its own, in its own transaction, by the configuration passed in
//! (the webhooks as they are now), through the same planning and writing as the router. It never
//! creates a second delivery for a webhook that already has one of that event. An event that
//! still cannot be routed stays listed with the new reason; one that no longer exists leaves the
//! list.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use outbox_core::{Event, sql};
use tokio_postgres::Client;

use crate::Error;
use crate::listen::CHANNEL_DELIVERIES;
use crate::plan::plan_deliveries;
use crate::router::Routing;
use crate::write::{Writing, write_deliveries};

/// One event set aside as unroutable.
#[derive(Debug, Clone, PartialEq)]
pub struct Unrouted {
    pub event_id: i64,
    pub event_type: String,
    pub entity: String,
    pub entity_id: String,
    pub reason: String,
    pub set_aside_at: DateTime<Utc>,
}

/// What rerouting one event came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rerouted {
    /// Routed and off the list; `deliveries` were created (none when no webhook wants it now, or
    /// every webhook that does has a delivery of it already).
    Routed { deliveries: usize },
    /// Still cannot be routed: still listed, with this reason.
    StillUnroutable { reason: String },
    /// The event no longer exists: off the list.
    Gone,
    /// The event is not listed as unroutable.
    NotListed,
}

/// Every event set aside, oldest first.
pub async fn unrouted(client: &Client) -> Result<Vec<Unrouted>, Error> {
    let rows = client.query(sql::UNROUTED, &[]).await?;
    rows.iter()
        .map(|r| {
            Ok(Unrouted {
                event_id: r.try_get(0)?,
                event_type: r.try_get(1)?,
                entity: r.try_get(2)?,
                entity_id: r.try_get(3)?,
                reason: r.try_get(4)?,
                set_aside_at: r.try_get(5)?,
            })
        })
        .collect()
}

/// Routes the listed events `ids` again by `routing`, each in its own transaction.
pub async fn reroute(
    pool: &Pool,
    routing: Arc<dyn Routing>,
    ids: &[i64],
) -> Result<Vec<(i64, Rerouted)>, Error> {
    let mut client = pool.get().await?;
    let mut results = Vec::with_capacity(ids.len());
    for &id in ids {
        let result = reroute_one(&mut client, routing.as_ref(), id).await?;
        results.push((id, result));
    }
    Ok(results)
}

async fn reroute_one(
    client: &mut deadpool_postgres::Client,
    routing: &dyn Routing,
    id: i64,
) -> Result<Rerouted, Error> {
    let tx = client.transaction().await?;
    if tx.query_opt(sql::REROUTE_TAKE, &[&id]).await?.is_none() {
        return Ok(Rerouted::NotListed);
    }
    let rows = tx.query(sql::REROUTE_EVENTS, &[&id]).await?;
    let event = match rows.as_slice() {
        [] => {
            tx.execute(sql::REROUTE_DONE, &[&id]).await?;
            tx.commit().await?;
            return Ok(Rerouted::Gone);
        }
        [row] => Event::from_row(row, 0),
        more => {
            let reason = format!(
                "{} events share the id {id}; delete or renumber the ones that should not be there, then reroute",
                more.len()
            );
            return still_unroutable(tx, id, reason).await;
        }
    };
    let event = match event {
        Ok(event) => event,
        Err(e) => return still_unroutable(tx, id, format!("cannot route event {id}: {e}")).await,
    };
    let events = [event];
    let mut plan = plan_deliveries(&events, routing);
    if let Some((_, reason)) = plan.panicked.pop() {
        return still_unroutable(tx, id, format!("cannot route event {id}: {reason}")).await;
    }
    let existing: HashSet<i64> = tx
        .query(sql::REROUTE_EXISTING, &[&id])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    plan.rows
        .retain(|r| !existing.contains(&r.target.webhook_id));
    let written = write_deliveries(&tx, &plan, &events, Writing::Isolating)
        .await?
        .unwrap_or_default();
    if let Some((_, reason)) = written.refused.into_iter().next() {
        return still_unroutable(tx, id, format!("cannot route event {id}: {reason}")).await;
    }
    tx.execute(sql::REROUTE_DONE, &[&id]).await?;
    if written.created > 0 {
        tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL_DELIVERIES])
            .await?;
    }
    tx.commit().await?;
    for (name, n) in written.created_by_webhook.values() {
        outbox_core::telemetry::deliveries_created(name, *n);
    }
    Ok(Rerouted::Routed {
        deliveries: written.created + written.coalesced,
    })
}

async fn still_unroutable(tx: Transaction<'_>, id: i64, reason: String) -> Result<Rerouted, Error> {
    tx.execute(sql::REROUTE_FAILED, &[&id, &reason]).await?;
    tx.commit().await?;
    Ok(Rerouted::StillUnroutable { reason })
}
