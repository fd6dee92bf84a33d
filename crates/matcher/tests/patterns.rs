//! The matcher's index (exact types, prefixes, `*`) selects exactly the webhooks whose patterns
//! match, compared with matching every pattern of every webhook, over random patterns and types.

use outbox_core::Event;
use outbox_matcher::{Matcher, Pattern};

/// A small deterministic generator (no dependency, same cases every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }

    /// An event type of 1-4 segments from a small alphabet, so that types and patterns collide;
    /// the empty segment makes the awkward ones too (`a..b`, `order.`, `.a`).
    fn event_type(&mut self) -> String {
        const SEGMENTS: [&str; 7] = ["order", "line", "created", "a", "b", "order.x", ""];
        let n = 1 + self.next(4);
        (0..n)
            .map(|_| SEGMENTS[self.next(SEGMENTS.len())])
            .collect::<Vec<_>>()
            .join(".")
    }

    fn pattern(&mut self) -> String {
        match self.next(10) {
            0 => "*".into(),
            1..=4 => format!("{}.*", self.event_type()),
            _ => self.event_type(),
        }
    }
}

fn naive(patterns: &[Pattern], event_type: &str) -> bool {
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
        entity: "e".into(),
        entity_id: "1".into(),
        data: serde_json::json!({}),
        old: None,
        metadata: serde_json::json!({}),
        created_at: chrono::Utc::now(),
    }
}

#[test]
fn the_index_matches_exactly_what_every_pattern_matches() {
    let mut rng = Lcg(42);
    for round in 0..200 {
        let mut matcher = Matcher::new();
        let mut webhooks: Vec<Vec<Pattern>> = Vec::new();
        for i in 0..(1 + rng.next(40)) {
            // What `Pattern::parse` refuses (`.*`, an empty type) is left out, as `apply` refuses it.
            let patterns: Vec<Pattern> = (0..(1 + rng.next(3)))
                .filter_map(|_| Pattern::parse(&rng.pattern()).ok())
                .collect();
            matcher.insert(&format!("w{i}"), &patterns, None, i);
            webhooks.push(patterns);
        }
        for _ in 0..50 {
            let event_type = rng.event_type();
            let mut got = Vec::new();
            matcher.matches(&event(&event_type), |i| got.push(*i), |_, _| {});
            let want: Vec<usize> = (0..webhooks.len())
                .filter(|&i| naive(&webhooks[i], &event_type))
                .collect();
            assert_eq!(
                got, want,
                "round {round}, type {event_type:?}, webhooks {webhooks:?}"
            );
        }
    }
}
