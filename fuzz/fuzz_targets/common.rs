//! Helpers shared by the fuzz targets (each target includes this file).

#![allow(dead_code)]

use chrono::{TimeZone, Utc};
use outbox_core::{Event, WebhookSpec};
use serde_json::{Map, Value, json};

/// An event with `data` as its data, like a row the router reads.
pub fn event(data: Value) -> Event {
    Event {
        id: 42,
        event_type: "order.updated".into(),
        entity: "order".into(),
        entity_id: "7".into(),
        old: Some(data.clone()),
        data,
        metadata: json!({"shop": "nl", "callback": "https://cb.example"}),
        created_at: Utc.with_ymd_and_hms(2025, 3, 14, 15, 9, 26).unwrap(),
    }
}

/// A webhook whose url, content type and body are given.
pub fn spec(url: &str, content_type: &str, body: Option<&str>) -> WebhookSpec {
    let mut spec: WebhookSpec =
        toml::from_str("name = \"w\"\nevents = [\"*\"]\nurl = \"http://x\"").expect("spec");
    spec.url = url.into();
    spec.content_type = content_type.into();
    spec.body = body.map(str::to_string);
    spec
}

/// Splits `data` at its first NUL byte.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Renders `templates` for `event`; checks what every rendered request must satisfy.
pub fn render(templates: &outbox_renderer::Templates, event: &Event) {
    let related = Map::new();
    let ctx = outbox_renderer::RenderContext {
        event,
        message_id: "msg_fuzz_1",
        delivery_id: 1,
        attempt: 1,
        webhook: "w",
        related: &related,
    };
    if let Ok(rendered) = templates.render(&ctx) {
        assert!(rendered.body.len() <= outbox_renderer::MAX_OUTPUT);
        assert!(rendered.url.len() <= outbox_renderer::MAX_OUTPUT);
        let scheme = rendered.url.get(..8).unwrap_or(&rendered.url).to_ascii_lowercase();
        assert!(
            scheme.starts_with("http://") || scheme.starts_with("https://"),
            "{:?}",
            rendered.url
        );
        for (_, value) in &rendered.headers {
            assert!(!value.contains(['\r', '\n']));
        }
    }
}
