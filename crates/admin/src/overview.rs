//! The figures an operator looks at first: the queue by status, how long the oldest pending
//! delivery has waited, and per webhook what the last hour looked like — failing and switched-off
//! webhooks first.

use std::collections::HashMap;

use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::error::AdminError;
use crate::sql;
use crate::webhooks::{self, WebhookState};

/// Deliveries by status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueDepth {
    pub pending: i64,
    pub in_flight: i64,
    pub succeeded: i64,
    pub dead: i64,
    pub cancelled: i64,
}

/// One webhook over the last hour.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookHour {
    pub name: String,
    pub state: WebhookState,
    /// Why it is invalid or disabled.
    pub reason: Option<String>,
    pub attempts: i64,
    pub failed_attempts: i64,
    pub succeeded: i64,
    /// Successful deliveries per minute, averaged over the hour.
    pub per_minute: f64,
    /// Failed attempts / attempts (0 without attempts).
    pub failure_rate: f64,
    /// Dead deliveries kept for it (all time).
    pub dead: i64,
}

impl WebhookHour {
    /// Whether it needs a look: not running, or failing.
    pub fn needs_attention(&self) -> bool {
        self.state != WebhookState::Active || self.failed_attempts > 0 || self.dead > 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub queue: QueueDepth,
    /// Seconds the oldest pending delivery has waited since it was created.
    pub oldest_pending_age: Option<f64>,
    /// Every webhook: those that need attention first, then by name.
    pub webhooks: Vec<WebhookHour>,
}

pub async fn overview(client: &impl GenericClient) -> Result<Overview, AdminError> {
    let row = client.query_one(sql::QUEUE_DEPTH, &[]).await?;
    let queue = QueueDepth {
        pending: row.try_get(0)?,
        in_flight: row.try_get(1)?,
        succeeded: row.try_get(2)?,
        dead: row.try_get(3)?,
        cancelled: row.try_get(4)?,
    };
    let oldest_pending_age: Option<f64> = row.try_get(5)?;
    let mut hour: HashMap<String, (i64, i64, i64)> = HashMap::new();
    for r in client.query(sql::OVERVIEW, &[]).await? {
        hour.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
    }
    let mut dead: HashMap<String, i64> = HashMap::new();
    for r in client
        .query(
            "SELECT webhook, count(*)::bigint FROM outbox.deliveries_done WHERE status = 'dead' GROUP BY webhook",
            &[],
        )
        .await?
    {
        dead.insert(r.try_get(0)?, r.try_get(1)?);
    }
    let mut webhooks: Vec<WebhookHour> = webhooks::list(client)
        .await?
        .into_iter()
        .map(|w| {
            let (attempts, failed_attempts, succeeded) =
                hour.get(&w.name).copied().unwrap_or_default();
            let state = w.state();
            WebhookHour {
                reason: match state {
                    WebhookState::Invalid => w.error.clone(),
                    WebhookState::Disabled => w.disabled_reason.clone(),
                    _ => None,
                },
                state,
                attempts,
                failed_attempts,
                succeeded,
                per_minute: succeeded as f64 / 60.0,
                failure_rate: if attempts == 0 {
                    0.0
                } else {
                    failed_attempts as f64 / attempts as f64
                },
                dead: dead.get(&w.name).copied().unwrap_or_default(),
                name: w.name,
            }
        })
        .collect();
    webhooks.sort_by(|a, b| {
        b.needs_attention()
            .cmp(&a.needs_attention())
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(Overview {
        queue,
        oldest_pending_age,
        webhooks,
    })
}
