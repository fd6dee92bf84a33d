//! The pattern index selects exactly the webhooks a plain scan of every webhook's patterns would:
//! a property test over random patterns and event types, including the awkward ones (prefixes of
//! prefixes, empty segments, a trailing dot, a type equal to a prefix without its dot).

use outbox_core::Event;
use outbox_matcher::{Matcher, Pattern};
use proptest::prelude::*;

/// What a webhook's patterns say about one event type, checked one pattern at a time.
fn scan(patterns: &[Pattern], event_type: &str) -> bool {
    patterns.iter().any(|p| match p {
        Pattern::Any => true,
        Pattern::Exact(t) => t == event_type,
        Pattern::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
    })
}

fn event(event_type: &str) -> Event {
    Event {
        id: 1,
        event_type: event_type.into(),
        entity: "order".into(),
        entity_id: "1".into(),
        data: serde_json::json!({}),
        old: None,
        metadata: serde_json::json!({}),
        created_at: chrono::Utc::now(),
    }
}

/// Event types built from a few segments so that patterns and types often share prefixes.
fn event_type() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "ab", "order", "order_line", ""]),
        1..5,
    )
    .prop_map(|segments| segments.join("."))
}

/// A pattern as a user writes it: `*`, an exact type or `type.*`; what `Pattern::parse` refuses
/// is left out, as `apply` refuses it.
fn pattern() -> impl Strategy<Value = Option<Pattern>> {
    prop_oneof![
        1 => Just("*".to_string()),
        4 => event_type(),
        4 => event_type().prop_map(|t| format!("{t}.*")),
    ]
    .prop_map(|text| Pattern::parse(&text).ok())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_index_matches_what_a_scan_of_every_pattern_matches(
        webhooks in prop::collection::vec(prop::collection::vec(pattern(), 1..4), 1..25),
        types in prop::collection::vec(event_type(), 1..12),
    ) {
        let webhooks: Vec<Vec<Pattern>> = webhooks
            .into_iter()
            .map(|patterns| patterns.into_iter().flatten().collect())
            .collect();
        let mut matcher = Matcher::new();
        for (i, patterns) in webhooks.iter().enumerate() {
            matcher.insert(&format!("w{i}"), patterns, None, i);
        }
        for t in &types {
            let mut indexed = Vec::new();
            matcher.matches(&event(t), |&i| indexed.push(i), |_, _| {});
            let scanned: Vec<usize> = webhooks
                .iter()
                .enumerate()
                .filter(|(_, patterns)| scan(patterns, t))
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(indexed, scanned, "event type {:?}", t);
        }
    }
}
