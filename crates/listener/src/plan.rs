//! Which delivery rows a page of events becomes: routing each event, folding coalesced events,
//! marking which deliveries of ordered webhooks must wait.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use outbox_core::Event;

use crate::router::{Routing, Target};

/// One delivery row to write.
pub(crate) struct PlannedRow {
    /// Index of its event in the page.
    pub event: usize,
    pub target: Target,
    /// Events of this page folded into this one (coalescing).
    pub folded: i32,
    /// First delivery of its (webhook, record) in this page (ordered webhooks park the rest).
    pub first_of_key: bool,
}

#[derive(Default)]
pub(crate) struct Plan {
    /// Sorted by event id; the rows of one event are next to each other.
    pub rows: Vec<PlannedRow>,
    pub folded: usize,
    /// Events whose routing panicked (a bug): index in the page, and the panic's message.
    pub panicked: Vec<(usize, String)>,
}

/// Routes every event of the page, folds coalescing duplicates within the page into the newest
/// event of each record, and orders rows by event id so ordered webhooks see events in order.
/// An event whose routing panics gets no rows and is reported in [`Plan::panicked`]: one event
/// never takes the page down with it.
pub(crate) fn plan_deliveries(events: &[Event], routing: &dyn Routing) -> Plan {
    let mut rows: Vec<PlannedRow> = Vec::new();
    let mut panicked = Vec::new();
    let mut targets = Vec::new();
    for (i, event) in events.iter().enumerate() {
        targets.clear();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| routing.route(event, &mut targets))) {
            panicked.push((i, panic_message(panic.as_ref())));
            continue;
        }
        rows.extend(targets.drain(..).map(|target| PlannedRow {
            event: i,
            target,
            folded: 0,
            first_of_key: true,
        }));
    }
    rows.sort_by_key(|r| events[r.event].id);

    // Coalescing: keep the newest event per (webhook, record); count the ones it replaces.
    let mut folded = 0;
    let mut newest: HashMap<(i64, &str, &str), usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if r.target.coalesce {
            let e = &events[r.event];
            newest.insert((r.target.webhook_id, &e.entity, &e.entity_id), i);
        }
    }
    if !newest.is_empty() {
        let mut keep = vec![true; rows.len()];
        let mut extra: HashMap<usize, i32> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            if r.target.coalesce {
                let e = &events[r.event];
                let winner =
                    newest[&(r.target.webhook_id, e.entity.as_str(), e.entity_id.as_str())];
                if winner != i {
                    keep[i] = false;
                    *extra.entry(winner).or_default() += 1;
                    folded += 1;
                }
            }
        }
        for (winner, n) in extra {
            rows[winner].folded = n;
        }
        let mut i = 0;
        rows.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }

    // Ordered: only the first row of each (webhook, record) may be sendable right away.
    let mut seen: HashMap<(i64, &str, &str), ()> = HashMap::new();
    for r in rows.iter_mut() {
        if r.target.ordered {
            let e = &events[r.event];
            r.first_of_key = seen
                .insert((r.target.webhook_id, &e.entity, &e.entity_id), ())
                .is_none();
        }
    }
    Plan {
        rows,
        folded,
        panicked,
    }
}

/// The text a panic was raised with.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("matching it to webhooks failed unexpectedly (a bug: {text})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    struct All(Vec<Target>);
    impl Routing for All {
        fn route(&self, event: &Event, out: &mut Vec<Target>) {
            if event.entity_id == "boom" {
                panic!("filter blew up");
            }
            out.extend(self.0.iter().cloned());
        }
    }

    fn event(id: i64, entity_id: &str) -> Event {
        Event {
            id,
            event_type: "order.updated".into(),
            entity: "order".into(),
            entity_id: entity_id.into(),
            data: serde_json::json!({}),
            old: None,
            metadata: serde_json::json!({}),
            created_at: Utc::now(),
        }
    }

    fn target(id: i64, coalesce: bool, ordered: bool) -> Target {
        Target {
            webhook_id: id,
            webhook: format!("w{id}").into(),
            priority: 0,
            coalesce,
            ordered,
        }
    }

    #[test]
    fn coalescing_keeps_the_newest_event_per_record() {
        let events = vec![event(3, "a"), event(1, "a"), event(2, "b"), event(4, "a")];
        let plan = plan_deliveries(&events, &All(vec![target(1, true, false)]));
        let kept: Vec<(i64, i32)> = plan
            .rows
            .iter()
            .map(|r| (events[r.event].id, r.folded))
            .collect();
        assert_eq!(kept, vec![(2, 0), (4, 2)]);
        assert_eq!(plan.folded, 2);
    }

    #[test]
    fn ordered_marks_only_the_first_of_each_record() {
        let events = vec![event(2, "a"), event(1, "a"), event(3, "b")];
        let plan = plan_deliveries(
            &events,
            &All(vec![target(1, false, true), target(2, false, false)]),
        );
        let marks: Vec<(i64, i64, bool)> = plan
            .rows
            .iter()
            .map(|r| (r.target.webhook_id, events[r.event].id, r.first_of_key))
            .collect();
        assert_eq!(
            marks,
            vec![
                (1, 1, true),
                (2, 1, true),
                (1, 2, false),
                (2, 2, true),
                (1, 3, true),
                (2, 3, true)
            ]
        );
    }

    #[test]
    fn an_event_whose_routing_panics_is_reported_and_the_rest_are_planned() {
        let events = vec![event(1, "a"), event(2, "boom"), event(3, "b")];
        let plan = plan_deliveries(&events, &All(vec![target(1, false, false)]));
        let planned: Vec<i64> = plan.rows.iter().map(|r| events[r.event].id).collect();
        assert_eq!(planned, vec![1, 3]);
        assert_eq!(plan.panicked.len(), 1);
        assert_eq!(plan.panicked[0].0, 1);
        assert!(
            plan.panicked[0].1.contains("filter blew up"),
            "{:?}",
            plan.panicked
        );
    }
}
