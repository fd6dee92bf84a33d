//! `outbox-relay fields EVENT_TYPE [--entity-id ID]`: every merge field a template can use, with
//! an example value, taken from the latest event of that type (or of that record), including the
//! related records defined for its entity (their queries run read-only).

use chrono::{DateTime, Utc};
use outbox_matcher::Pattern;
use outbox_renderer::{MergeField, RenderContext, merge_fields};
use outbox_sender::related;
use serde::Serialize;
use serde_json::{Map, Value};

use super::test_cmd::{EventRef, RELATION_TIMEOUT, latest_event, relations_of};
use crate::error::Failure;
use crate::output;

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
) -> Result<Fields, Failure> {
    let pattern = Pattern::parse(event_type).map_err(Failure::invalid)?;
    let Some(event) = latest_event(client, None, entity_id, &[pattern]).await? else {
        return Err(Failure::invalid(match entity_id {
            Some(id) => format!(
                "no event of type {event_type} for entity id {id:?}; check the id, or leave out --entity-id to use the latest event of that type"
            ),
            None => format!(
                "no event of type {event_type} yet; write a record that emits one (`outbox-relay fields` reads real events)"
            ),
        }));
    };
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

/// The command.
pub async fn run(
    url: &str,
    event_type: &str,
    entity_id: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let mut client = super::connect_migrated(url).await?;
    let found = fields(&mut client, event_type, entity_id).await?;
    if json {
        return output::json(&found);
    }
    let e = &found.event;
    println!(
        "# merge fields from event {} {} ({} {}) of {}",
        e.id,
        e.event_type,
        e.entity,
        e.entity_id,
        at(&e.created_at)
    );
    let rows: Vec<Vec<String>> = found
        .fields
        .iter()
        .map(|f| vec![f.path.clone(), output::clip(&example(&f.example), 70)])
        .collect();
    output::table(&["path", "example"], &rows);
    for failed in &found.failed_relations {
        eprintln!(
            "warning: related.{} is not available: {}",
            failed.name, failed.error
        );
    }
    Ok(())
}

fn example(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn at(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
