//! Event JSON as the router decodes it: the bytes of a `jsonb` column (version byte + JSON text)
//! → `serde_json::Value` through tokio-postgres' `FromSql` → `outbox_core::Event` → the
//! matcher's CEL conversion (by evaluating filters) and the renderer's context.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use outbox_matcher::Filter;
use outbox_renderer::Templates;
use tokio_postgres::types::{FromSql, Type};

#[path = "common.rs"]
mod common;

static FILTERS: LazyLock<Vec<Filter>> = LazyLock::new(|| {
    [
        "event.data.carrier == 'dhl' && event.old.status != event.data.status",
        "event.data.lines.exists(l, l.qty > 1)",
        "has(event.data.x) || event.data.?y.orValue(1) == 1",
        "event.data == event.old",
    ]
    .iter()
    .map(|s| Filter::compile(s).expect("compiles"))
    .collect()
});

static TEMPLATES: LazyLock<Vec<Templates>> = LazyLock::new(|| {
    [
        common::spec("https://x.example/{{ id }}", "application/json", None),
        common::spec(
            "https://x.example/{{ event.data.id | default('') }}",
            "application/json",
            Some("{\"data\": {{ event.data }}, \"old\": {{ event.old | tojson }}}"),
        ),
        common::spec(
            "https://x.example/",
            "application/xml",
            Some("<o>{% for k, v in event.data | items %}<f k=\"{{ k }}\">{{ v }}</f>{% endfor %}</o>"),
        ),
    ]
    .iter()
    .map(|s| Templates::compile(s).expect("compiles"))
    .collect()
});

fuzz_target!(|data: &[u8]| {
    let Ok(value) = <serde_json::Value as FromSql>::from_sql(&Type::JSONB, data) else {
        return;
    };
    let event = common::event(value);
    for filter in FILTERS.iter() {
        let _ = filter.matches(&event, "w");
    }
    for templates in TEMPLATES.iter() {
        common::render(templates, &event);
    }
    let related = serde_json::Map::new();
    let _ = outbox_renderer::merge_fields(&outbox_renderer::RenderContext {
        event: &event,
        message_id: "msg_fuzz_1",
        delivery_id: 1,
        attempt: 1,
        webhook: "w",
        related: &related,
    });
});
