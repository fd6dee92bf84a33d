//! Turns commits into work: wake-ups in, routed deliveries out.
//!
//! Two halves:
//!
//! - [`listen`] keeps one dedicated `LISTEN` connection (never a pooled one: a pool's connection
//!   driver drops notifications) and turns `NOTIFY`s into [`Wakeups`]. A notification only wakes
//!   the relay; the poll interval is what guarantees progress, so a lost notification costs latency,
//!   never an event. After every reconnect all wake-ups fire, so work committed meanwhile is found.
//! - [`Router`] claims committed events in pages and writes one delivery per (event, webhook) in
//!   the same transaction. Events are never updated: the router hands them out by transaction
//!   snapshot windows (the technique of PgQ). A window is every event visible in the current
//!   snapshot and not in the previous one; `(txid, id)` order within it gives index range scans,
//!   and a one-row cursor records progress, so routing costs no write per event and concurrent
//!   relays route each event exactly once (the cursor row is locked `SKIP LOCKED`; whoever holds it
//!   routes, the others send).
//!
//! Which webhooks an event goes to is not decided here: the caller passes a [`Routing`], which the
//! binary builds from the matcher and the live configuration.
//!
//! ```no_run
//! # async fn f(pool: deadpool_postgres::Pool, routing: std::sync::Arc<dyn outbox_listener::Routing>) {
//! let router = outbox_listener::Router::new(pool, 1000);
//! while let Ok(Some(page)) = router.route_page(routing.clone()).await {
//!     if !page.more { break; }
//! }
//! # }
//! ```

mod error;
mod listen;
mod plan;
mod reroute;
mod router;
mod write;

pub use error::Error;
pub use listen::{CHANNEL_CONFIG, CHANNEL_DELIVERIES, CHANNEL_EVENTS, Wakeups, listen};
pub use reroute::{Rerouted, Unrouted, reroute, unrouted};
pub use router::{PageOutcome, Router, Routing, Target};
