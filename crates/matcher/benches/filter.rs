//! Filter throughput on one core: `cargo bench -p outbox-matcher --bench filter`.
//!
//! Prints evaluations per second of a typical filter (the design's example), with and without
//! converting the event for CEL, and the cost of matching one event among many webhooks.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use outbox_core::Event;
use outbox_matcher::{Filter, Matcher, Pattern};
use serde_json::json;

const TYPICAL: &str = r#"event.data.carrier == "dhl" && event.old.status != event.data.status"#;

fn shipment() -> Event {
    let row = json!({
        "id": 7, "order_id": 42, "code": "SH-2025-000007", "carrier": "dhl", "status": "shipped",
        "parcel_type": "box", "weight_kg": 2.5, "warehouse": "GreenWarehouse",
        "tracking_code": "JJD000390007", "address": {"name": "Anna", "city": "Utrecht", "country": "NL"},
        "lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
        "created_at": "2025-03-14T15:09:26Z", "updated_at": "2025-03-14T16:00:00Z"
    });
    let mut old = row.clone();
    old["status"] = json!("packed");
    Event {
        id: 1,
        event_type: "shipment.updated".into(),
        entity: "shipment".into(),
        entity_id: "7".into(),
        data: row,
        old: Some(old),
        metadata: json!({"shop": "nl"}),
        created_at: Utc::now(),
    }
}

/// Runs `f` repeatedly for about `time`; returns calls per second.
fn rate(time: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..1000 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < time {
        for _ in 0..1000 {
            f();
        }
        n += 1000;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let time = Duration::from_secs(2);
    let event = shipment();
    let p = |s: &str| Pattern::parse(s).unwrap();

    let compile = rate(Duration::from_millis(500), || {
        black_box(Filter::compile(black_box(TYPICAL)).unwrap());
    });
    println!(
        "compile (incl. compiler thread):           {:>12.0} /s",
        compile
    );

    let filter = Arc::new(Filter::compile(TYPICAL).unwrap());
    assert_eq!(filter.matches(&event, "w"), Ok(true));
    let single = rate(time, || {
        black_box(filter.matches(black_box(&event), "w").unwrap());
    });
    println!(
        "event conversion + 1 evaluation:           {:>12.0} /s",
        single
    );

    // 10 webhooks on the event's type, one conversion shared by their 10 evaluations.
    let mut ten = Matcher::new();
    for i in 0..10 {
        ten.insert(
            &format!("w{i}"),
            &[p("shipment.*")],
            Some(filter.clone()),
            i,
        );
    }
    let per_event = rate(time, || {
        let mut n = 0;
        ten.matches(black_box(&event), |_| n += 1, |_, _| {});
        assert_eq!(n, 10);
    });
    let conversion = 1.0 / single;
    let per_eval = ((1.0 / per_event) - conversion) / 9.0;
    println!(
        "event + 10 filters (shared conversion):    {:>12.0} events/s",
        per_event
    );
    println!(
        "  => one evaluation alone:                 {:>12.0} /s  ({:.2} µs)",
        1.0 / per_eval,
        per_eval * 1e6
    );

    // 10,000 webhooks, each on its own event type; the event has 1 candidate.
    let mut many = Matcher::new();
    for i in 0..10_000 {
        many.insert(
            &format!("w{i}"),
            &[p(&format!("type{i}.*"))],
            Some(filter.clone()),
            i,
        );
    }
    many.insert(
        "shipments",
        &[p("shipment.updated")],
        Some(filter.clone()),
        10_000,
    );
    let among_many = rate(time, || {
        let mut n = 0;
        many.matches(black_box(&event), |_| n += 1, |_, _| {});
        assert_eq!(n, 1);
    });
    println!(
        "1 candidate among 10,001 webhooks:         {:>12.0} events/s",
        among_many
    );
}
