use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// One row of `outbox.events`, as the matcher filters it, the renderer renders it and the sender
/// sends it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub id: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub entity: String,
    pub entity_id: String,
    pub data: Value,
    pub old: Option<Value>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

impl Event {
    /// Reads the columns `id, event_type, entity, entity_id, data, old, metadata, created_at`
    /// starting at column `at`.
    pub fn from_row(row: &tokio_postgres::Row, at: usize) -> Result<Event, tokio_postgres::Error> {
        Ok(Event {
            id: row.try_get(at)?,
            event_type: row.try_get(at + 1)?,
            entity: row.try_get(at + 2)?,
            entity_id: row.try_get(at + 3)?,
            data: row.try_get(at + 4)?,
            old: row.try_get(at + 5)?,
            metadata: row.try_get(at + 6)?,
            created_at: row.try_get(at + 7)?,
        })
    }
}
