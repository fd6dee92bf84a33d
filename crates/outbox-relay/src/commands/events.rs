//! `events unrouted|reroute`: events the router set aside because it could not route them.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use outbox_listener::{Rerouted, Unrouted};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::cli::RerouteArgs;
use crate::error::Failure;
use crate::output;

#[derive(Debug, Serialize)]
pub struct UnroutedView {
    pub event_id: i64,
    pub event_type: String,
    pub entity: String,
    pub entity_id: String,
    pub reason: String,
    pub set_aside_at: DateTime<Utc>,
}

impl From<Unrouted> for UnroutedView {
    fn from(u: Unrouted) -> Self {
        UnroutedView {
            event_id: u.event_id,
            event_type: u.event_type,
            entity: u.entity,
            entity_id: u.entity_id,
            reason: u.reason,
            set_aside_at: u.set_aside_at,
        }
    }
}

/// What rerouting one event came to, as printed.
#[derive(Debug, Serialize)]
pub struct RerouteView {
    pub event_id: i64,
    /// `routed`, `unroutable`, `gone` or `not_listed`.
    pub result: &'static str,
    /// Deliveries created (for `routed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<usize>,
    /// Why it still cannot be routed (for `unroutable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl RerouteView {
    fn new(event_id: i64, rerouted: Rerouted) -> RerouteView {
        let (result, deliveries, reason) = match rerouted {
            Rerouted::Routed { deliveries } => ("routed", Some(deliveries), None),
            Rerouted::StillUnroutable { reason } => ("unroutable", None, Some(reason)),
            Rerouted::Gone => ("gone", None, None),
            Rerouted::NotListed => ("not_listed", None, None),
        };
        RerouteView {
            event_id,
            result,
            deliveries,
            reason,
        }
    }
}

/// `events unrouted`
pub async fn unrouted(url: &str, json: bool) -> Result<(), Failure> {
    let client = super::connect_migrated(url).await?;
    let events: Vec<UnroutedView> = outbox_listener::unrouted(&client)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?
        .into_iter()
        .map(UnroutedView::from)
        .collect();
    if json {
        return output::json(&events);
    }
    if events.is_empty() {
        println!("no unroutable events");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.event_id.to_string(),
                output::clip(&e.event_type, 40),
                output::clip(&e.entity, 30),
                output::clip(&e.entity_id, 30),
                e.set_aside_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                output::clip(&e.reason, 200),
            ]
        })
        .collect();
    output::table(
        &[
            "event",
            "type",
            "entity",
            "entity id",
            "set aside",
            "reason",
        ],
        &rows,
    );
    Ok(())
}

/// `events reroute ID... | --all`
pub async fn reroute(url: &str, args: &RerouteArgs) -> Result<(), Failure> {
    if args.ids.is_empty() && !args.all {
        return Err(Failure::invalid(
            "name the events to reroute (outbox-relay events reroute 42 43) or pass --all",
        ));
    }
    // Checks the connection and the schema with a clear message first.
    let client = super::connect_migrated(url).await?;
    let ids: Vec<i64> = if args.all {
        outbox_listener::unrouted(&client)
            .await
            .map_err(|e| Failure::runtime(e.to_string()))?
            .iter()
            .map(|u| u.event_id)
            .collect()
    } else {
        args.ids.clone()
    };
    drop(client);
    let pool = outbox_core::db::pool(url, 2)?;
    let catalog = Catalog::default();
    catalog.reload(&pool).await?;
    let routing: Arc<dyn outbox_listener::Routing> = catalog.routing.load_full();
    let results: Vec<RerouteView> = outbox_listener::reroute(&pool, routing, &ids)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?
        .into_iter()
        .map(|(id, r)| RerouteView::new(id, r))
        .collect();
    let not_listed: Vec<i64> = results
        .iter()
        .filter(|r| r.result == "not_listed")
        .map(|r| r.event_id)
        .collect();
    if args.json {
        output::json(&results)?;
    } else {
        if results.is_empty() {
            println!("no unroutable events");
        }
        for r in &results {
            match (r.result, r.deliveries, &r.reason) {
                ("routed", Some(n), _) => {
                    println!("event {}: routed ({n} deliveries)", r.event_id)
                }
                ("unroutable", _, Some(reason)) => {
                    println!("event {}: still unroutable: {reason}", r.event_id)
                }
                ("gone", _, _) => println!(
                    "event {}: no longer exists; removed from the list",
                    r.event_id
                ),
                _ => {}
            }
        }
    }
    if !not_listed.is_empty() {
        return Err(Failure::invalid(format!(
            "not listed as unroutable: {}; see `outbox-relay events unrouted`",
            not_listed
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}
