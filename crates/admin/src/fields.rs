//! Merge fields: every value a template can use, with an example, taken from the latest event of
//! a type (or of one record), including the related records defined for its entity (their
//! queries run read-only).

use outbox_matcher::Pattern;
use outbox_renderer::{MergeField, RenderContext, merge_fields};
use outbox_sender::related;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::AdminError;
use crate::preview::{EventRef, RELATION_TIMEOUT, latest_event, relations_of};

/// The merge fields of one event.
#[derive(Debug, Clone, Serialize)]
pub struct Fields {
    pub event: EventRef,
    pub fields: Vec<MergeField>,
    /// Relations of the entity that could not be loaded for this event, with the reason.
    pub failed_relations: Vec<FailedRelation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedRelation {
    pub name: String,
    pub error: String,
}

/// Finds the latest event of `event_type` (a type, `prefix.*` or `*`), optionally of the record
/// `entity_id`, and lists its merge fields with every relation of its entity loaded.
pub async fn fields(
    client: &mut tokio_postgres::Client,
    event_type: &str,
    entity_id: Option<&str>,
) -> Result<Fields, AdminError> {
    let pattern = Pattern::parse(event_type).map_err(|e| AdminError::bad("event_type", e))?;
    let Some(event) = latest_event(client, None, entity_id, &[pattern]).await? else {
        return Err(AdminError::NoEvent {
            message: match entity_id {
                Some(id) => format!(
                    "no event of type {event_type} for entity id {id:?}; check the id, or leave out --entity-id to use the latest event of that type"
                ),
                None => format!(
                    "no event of type {event_type} yet; write a record that emits one (`outbox-relay fields` reads real events)"
                ),
            },
        });
    };
    of_event(client, event).await
}

/// The merge fields of the latest event of any of `patterns` (a webhook's event types),
/// optionally of the record `entity_id`; `None` when there is no such event yet.
pub async fn for_patterns(
    client: &mut tokio_postgres::Client,
    patterns: &[Pattern],
    entity_id: Option<&str>,
) -> Result<Option<Fields>, AdminError> {
    match latest_event(client, None, entity_id, patterns).await? {
        Some(event) => Ok(Some(of_event(client, event).await?)),
        None => Ok(None),
    }
}

/// The merge fields of `event`, with every relation of its entity loaded.
async fn of_event(
    client: &mut tokio_postgres::Client,
    event: outbox_core::Event,
) -> Result<Fields, AdminError> {
    let install_id: String = client
        .query_one("SELECT install_id FROM outbox.router WHERE id = 1", &[])
        .await?
        .get(0);

    let relations = relations_of(client, &event.entity).await?;
    let mut related = Map::new();
    let mut failed_relations = Vec::new();
    for name in related::defined_for(&relations, &event.entity) {
        // One at a time, so one failing relation does not hide the others.
        match related::load(
            client,
            &relations,
            std::slice::from_ref(&name),
            &event,
            RELATION_TIMEOUT,
        )
        .await
        {
            Ok(mut loaded) => {
                if let Some(value) = loaded.remove(&name) {
                    related.insert(name, value);
                }
            }
            Err(e) => {
                related.insert(name.clone(), Value::Null);
                failed_relations.push(FailedRelation {
                    name,
                    error: e.to_string(),
                });
            }
        }
    }

    let message_id = outbox_sender::message_id(&install_id, 1);
    let fields = merge_fields(&RenderContext {
        event: &event,
        message_id: &message_id,
        delivery_id: 1,
        attempt: 1,
        webhook: "(webhook name)",
        related: &related,
    });
    Ok(Fields {
        event: EventRef {
            id: event.id,
            event_type: event.event_type.clone(),
            entity: event.entity.clone(),
            entity_id: event.entity_id.clone(),
            created_at: event.created_at,
        },
        fields,
        failed_relations,
    })
}
