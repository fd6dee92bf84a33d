//! The webhook queue: deliveries listed (filtered, newest first, a page at a time), shown with
//! every attempt; re-queued and cancelled (named, or a selection counted first).

use chrono::{DateTime, Utc};
use outbox_core::Event;
use outbox_core::redact::redact_urls_in;
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::error::AdminError;

mod actions;
mod attempts;

pub use actions::{
    Cancelled, Retried, Selection, cancel, cancel_selection, count_pending, count_selection, retry,
    retry_selection, select,
};
pub use attempts::{AttemptView, NoRequest, SentRequest};

/// The statuses of a delivery, in the order of its life.
pub const STATUSES: [&str; 5] = ["pending", "in_flight", "succeeded", "dead", "cancelled"];

/// The statuses a selection may be re-queued by: finished ones.
pub const FINISHED: [&str; 3] = ["succeeded", "dead", "cancelled"];

/// The most deliveries one page lists.
pub const MAX_LIMIT: i64 = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub webhook: String,
    pub event_id: i64,
    pub event_type: String,
    pub entity: String,
    pub entity_id: String,
    pub status: String,
    pub attempts: i32,
    pub priority: i32,
    pub coalesced: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub last_response: Option<String>,
}

/// One delivery with every attempt (`deliveries show`, `GET /api/deliveries/{id}`): the fields of
/// [`DeliveryView`] in order, its attempt counter under `attempt_count`, then `attempts`, the list
/// of attempts. (Two keys named `attempts` would leave JSON readers with only the last.)
#[derive(Debug, Clone)]
pub struct DeliveryDetail {
    pub delivery: DeliveryView,
    pub attempts: Vec<AttemptView>,
}

impl Serialize for DeliveryDetail {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let fields = serde_json::to_value(&self.delivery).map_err(S::Error::custom)?;
        let mut map = serializer.serialize_map(None)?;
        for key in COLUMNS.split(',').map(str::trim) {
            let name = if key == "attempts" {
                "attempt_count"
            } else {
                key
            };
            map.serialize_entry(name, &fields[key])?;
        }
        map.serialize_entry("attempts", &self.attempts)?;
        map.end()
    }
}

const COLUMNS: &str = "id, webhook, event_id, event_type, entity, entity_id, status, attempts, priority, \
    coalesced, created_at, updated_at, next_attempt_at, last_status, last_error, last_response";

fn view(row: &tokio_postgres::Row) -> Result<DeliveryView, tokio_postgres::Error> {
    Ok(DeliveryView {
        id: row.try_get(0)?,
        webhook: row.try_get(1)?,
        event_id: row.try_get(2)?,
        event_type: row.try_get(3)?,
        entity: row.try_get(4)?,
        entity_id: row.try_get(5)?,
        status: row.try_get(6)?,
        attempts: row.try_get(7)?,
        priority: row.try_get(8)?,
        coalesced: row.try_get(9)?,
        created_at: row.try_get(10)?,
        updated_at: row.try_get(11)?,
        next_attempt_at: row.try_get(12)?,
        last_status: row.try_get(13)?,
        // Errors are redacted when recorded; rows recorded by older relays are redacted here.
        last_error: row
            .try_get::<_, Option<String>>(14)?
            .map(|e| redact_urls_in(&e)),
        last_response: row.try_get(15)?,
    })
}

/// Which deliveries to list (every field optional; all given must hold).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<String>,
    pub webhook: Option<String>,
    pub entity: Option<String>,
    pub entity_id: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    /// Checks the status is one of [`STATUSES`].
    fn check(&self) -> Result<(), AdminError> {
        if let Some(s) = self.status.as_deref()
            && !STATUSES.contains(&s)
        {
            return Err(AdminError::bad(
                "status",
                format!("unknown status {s:?}; use one of {}", STATUSES.join(", ")),
            ));
        }
        Ok(())
    }
}

/// One page of the queue, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub deliveries: Vec<DeliveryView>,
    /// The id to pass as `before` for the next (older) page, when there is one.
    pub next_before: Option<i64>,
}

/// Deliveries matching `filter`, newest first: at most `limit`, with ids below `before` when
/// given (keyset pagination: each page is one index range, however deep).
pub async fn list(
    client: &impl GenericClient,
    filter: &Filter,
    before: Option<i64>,
    limit: i64,
) -> Result<Page, AdminError> {
    filter.check()?;
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AdminError::bad(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM outbox.delivery_log
                 WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR webhook = $2)
                   AND ($3::text IS NULL OR entity = $3) AND ($4::text IS NULL OR entity_id = $4)
                   AND ($5::timestamptz IS NULL OR created_at >= $5)
                   AND ($6::timestamptz IS NULL OR created_at < $6)
                   AND ($7::bigint IS NULL OR id < $7)
                 ORDER BY id DESC LIMIT $8"
            ),
            &[
                &filter.status,
                &filter.webhook,
                &filter.entity,
                &filter.entity_id,
                &filter.since,
                &filter.until,
                &before,
                &(limit + 1),
            ],
        )
        .await?;
    let mut deliveries = rows.iter().map(view).collect::<Result<Vec<_>, _>>()?;
    let next_before = if deliveries.len() as i64 > limit {
        deliveries.truncate(limit as usize);
        deliveries.last().map(|d| d.id)
    } else {
        None
    };
    Ok(Page {
        deliveries,
        next_before,
    })
}

/// One delivery and its attempts (each with the request it sent, where recorded).
pub async fn show(client: &impl GenericClient, id: i64) -> Result<DeliveryDetail, AdminError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM outbox.delivery_log WHERE id = $1"),
            &[&id],
        )
        .await?
        .ok_or(AdminError::NoDelivery { id })?;
    let delivery = view(&row)?;
    let attempts = attempts::of(client, id).await?;
    Ok(DeliveryDetail { delivery, attempts })
}

/// The event a delivery carries, unless retention deleted it.
pub async fn event(client: &impl GenericClient, id: i64) -> Result<Option<Event>, AdminError> {
    let row = client
        .query_opt(
            "SELECT id, event_type, entity, entity_id, data, old, metadata, created_at
             FROM outbox.events WHERE id = $1",
            &[&id],
        )
        .await?;
    row.map(|r| Event::from_row(&r, 0))
        .transpose()
        .map_err(|e| AdminError::Render {
            message: format!("event {id} cannot be read: {e}"),
        })
}
