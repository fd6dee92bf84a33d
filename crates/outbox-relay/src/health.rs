//! Readiness (`/readyz`): whether this relay can do its job right now, as users feel it.
//!
//! Not ready (503, with the reason) while:
//! - the database does not answer (within [`DB_ANSWER`]),
//! - the schema is missing, behind or ahead of this build,
//! - committed events wait and routing has made no progress for [`ROUTING_STALL`] — unless
//!   routing waits on purpose because the queue is full (backpressure; the senders are busy).
//!
//! The routing check reads the shared router row, so every relay reports a stall, whichever of
//! them holds the routing cursor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use outbox_core::{SchemaStatus, sql};

/// How long routing may make no progress while events wait.
pub const ROUTING_STALL: Duration = Duration::from_secs(30);
/// How long the readiness check waits for the database.
pub const DB_ANSWER: Duration = Duration::from_secs(5);

/// What the relay's tasks tell the readiness check.
#[derive(Debug, Default)]
pub struct Health {
    routing_paused: AtomicBool,
}

impl Health {
    /// The router pauses (or resumes) on purpose: the queue is full.
    pub fn set_routing_paused(&self, paused: bool) {
        self.routing_paused.store(paused, Ordering::Relaxed);
    }

    fn routing_paused(&self) -> bool {
        self.routing_paused.load(Ordering::Relaxed)
    }
}

/// The answer of `/readyz`.
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    Ready,
    NotReady(String),
}

/// Checks readiness now.
pub async fn check(pool: &Pool, health: &Health) -> Readiness {
    match tokio::time::timeout(DB_ANSWER, check_database(pool, health)).await {
        Ok(readiness) => readiness,
        Err(_) => Readiness::NotReady(format!(
            "database unreachable: no answer within {}s",
            DB_ANSWER.as_secs()
        )),
    }
}

async fn check_database(pool: &Pool, health: &Health) -> Readiness {
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => {
            return Readiness::NotReady(format!(
                "database unreachable: {}",
                outbox_core::Error::from(e)
            ));
        }
    };
    match outbox_core::schema_status(&client).await {
        Ok(SchemaStatus::Current) => {}
        Ok(SchemaStatus::Missing) | Ok(SchemaStatus::Behind { .. }) => {
            return Readiness::NotReady(
                "database schema is not current: run outbox-relay migrate".into(),
            );
        }
        Ok(SchemaStatus::Ahead { found }) => {
            return Readiness::NotReady(format!(
                "database schema version {found} is newer than this relay ({}); upgrade the relay",
                outbox_core::SCHEMA_VERSION
            ));
        }
        Err(e) => return Readiness::NotReady(format!("database unreachable: {e}")),
    }
    let row = match client.query_one(sql::ROUTING_HEALTH, &[]).await {
        Ok(row) => row,
        Err(e) => {
            return Readiness::NotReady(format!(
                "cannot read the routing state: {}",
                outbox_core::db::describe(&e)
            ));
        }
    };
    let waiting: bool = row.get(0);
    let since_progress: f64 = row.get::<_, Option<f64>>(1).unwrap_or(0.0);
    if waiting && since_progress > ROUTING_STALL.as_secs_f64() && !health.routing_paused() {
        return Readiness::NotReady(format!(
            "routing is stuck: committed events wait and no page has been routed for {since_progress:.0}s; the relay's log says why"
        ));
    }
    Readiness::Ready
}
