use outbox_core::Event;
use serde::Serialize;
use serde_json::{Map, Value};

/// Everything a template can see (the "merge fields").
pub struct RenderContext<'a> {
    pub event: &'a Event,
    /// The `webhook-id` of this delivery (identical on every attempt).
    pub message_id: &'a str,
    pub delivery_id: i64,
    /// 1-based attempt number.
    pub attempt: i32,
    pub webhook: &'a str,
    /// Related records loaded for this delivery, by relation name.
    pub related: &'a Map<String, Value>,
}

#[derive(Serialize)]
struct EventView<'a> {
    id: i64,
    #[serde(rename = "type")]
    event_type: &'a str,
    entity: &'a str,
    entity_id: &'a str,
    data: &'a Value,
    old: &'a Option<Value>,
    metadata: &'a Value,
    created_at: String,
}

#[derive(Serialize)]
struct DeliveryView<'a> {
    id: i64,
    attempt: i32,
    message_id: &'a str,
}

#[derive(Serialize)]
struct WebhookView<'a> {
    name: &'a str,
}

#[derive(Serialize)]
pub(crate) struct ContextView<'a> {
    event: EventView<'a>,
    /// Kladana-style shorthands: `id` is the record id, `type` the entity.
    id: &'a str,
    #[serde(rename = "type")]
    entity: &'a str,
    entity_id: &'a str,
    delivery: DeliveryView<'a>,
    webhook: WebhookView<'a>,
    related: &'a Map<String, Value>,
}

impl<'a> RenderContext<'a> {
    pub(crate) fn view(&self) -> ContextView<'a> {
        let e = self.event;
        ContextView {
            event: EventView {
                id: e.id,
                event_type: &e.event_type,
                entity: &e.entity,
                entity_id: &e.entity_id,
                data: &e.data,
                old: &e.old,
                metadata: &e.metadata,
                created_at: e
                    .created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            },
            id: &e.entity_id,
            entity: &e.entity,
            entity_id: &e.entity_id,
            delivery: DeliveryView {
                id: self.delivery_id,
                attempt: self.attempt,
                message_id: self.message_id,
            },
            webhook: WebhookView { name: self.webhook },
            related: self.related,
        }
    }
}
