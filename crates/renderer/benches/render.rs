//! Renders per second of typical templates, one thread: `cargo bench -p outbox-renderer`.
//!
//! Prints figures; asserts nothing about them.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::Utc;
use outbox_core::{Event, WebhookSpec};
use outbox_renderer::{RenderContext, Templates};
use serde_json::{Map, Value, json};

const XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<shipment id="{{ event.data.id }}" carrier="{{ event.data.carrier }}">
  <tracking>{{ event.data.tracking | default("") }}</tracking>
  <status>{{ event.data.status }}</status>
  <shipped>{{ event.created_at | date("%Y-%m-%d %H:%M") }}</shipped>
  <order code="{{ related.order.code }}" total="{{ related.order.total }}">
    <customer>{{ related.order.customer }}</customer>
    <street>{{ related.order.street }}</street>
    <city>{{ related.order.city }}</city>
  </order>
  <lines>{% for line in event.data.lines %}
    <line sku="{{ line.sku }}" qty="{{ line.qty }}">{{ line.name }}</line>{% endfor %}
  </lines>
</shipment>"#;

const JSON: &str = r#"{"Id": {{ delivery.message_id }}, "Attempt": {{ delivery.attempt }},
 "Notifications": [{"Action": {{ event.type }}, "Details": {"OrderNumber": {{ related.order.code }},
 "Carrier": {{ event.data.carrier }}, "Lines": {{ event.data.lines }}}}]}"#;

fn spec(content_type: &str, body: Option<&str>) -> WebhookSpec {
    let mut spec: WebhookSpec = toml::from_str(
        "name = \"bench\"\nevents = [\"*\"]\nurl = \"https://carrier.example/shipments/{{ id }}?order={{ related.order.code }}\"",
    )
    .expect("spec");
    spec.content_type = content_type.into();
    spec.body = body.map(str::to_string);
    spec.headers
        .insert("X-Shop".into(), "{{ event.metadata.shop }}".into());
    spec
}

fn measure(name: &str, templates: &Templates, ctx: &RenderContext<'_>) {
    let mut bytes = 0;
    for _ in 0..1_000 {
        bytes = templates.render(ctx).expect("renders").body.len();
    }
    let run = Duration::from_secs(3);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < run {
        for _ in 0..100 {
            black_box(templates.render(black_box(ctx)).expect("renders"));
        }
        n += 100;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{name:<28} {:>9.0} renders/s  ({:.1} µs each, body {bytes} bytes, url + 1 header + body)",
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}

fn main() {
    let lines: Vec<Value> = (1..=5)
        .map(|i| json!({"sku": format!("SKU-{i:04}"), "qty": i, "name": format!("Widget <{i}> & \"co\"")}))
        .collect();
    let event = Event {
        id: 123_456,
        event_type: "shipment.shipped".into(),
        entity: "shipment".into(),
        entity_id: "98765".into(),
        data: json!({"id": 98765, "order_id": 4321, "carrier": "dhl", "tracking": "3SABC123456789",
                     "status": "shipped", "weight": 2.5, "lines": lines}),
        old: Some(json!({"status": "packed"})),
        metadata: json!({"shop": "nl"}),
        created_at: Utc::now(),
    };
    let mut related = Map::new();
    related.insert(
        "order".into(),
        json!({"id": 4321, "code": "SO-4321", "customer": "Ada Lovelace", "street": "Main St 1",
               "city": "Amsterdam", "total": 119.95, "status": "paid"}),
    );
    let ctx = RenderContext {
        event: &event,
        message_id: "msg_abcdef123456_777",
        delivery_id: 777,
        attempt: 1,
        webhook: "bench",
        related: &related,
    };
    println!(
        "outbox-renderer, one thread, {} build",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for (name, content_type, body) in [
        ("XML shipment (typical)", "application/xml", Some(XML)),
        ("JSON envelope template", "application/json", Some(JSON)),
        ("default JSON body", "application/json", None),
    ] {
        let templates = Templates::compile(&spec(content_type, body)).expect("compiles");
        measure(name, &templates, &ctx);
    }
}
