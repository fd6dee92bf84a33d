//! Decides which webhooks an event goes to.
//!
//! A webhook subscribes with event type patterns — exact (`order.created`), prefix (`order.*`) or
//! everything (`*`) — and optionally a CEL filter over the event. The [`Matcher`] indexes webhooks
//! by exact type and by prefix, so the cost of matching an event depends on how many webhooks
//! *could* want it, not on how many exist; only those candidates' filters are evaluated.
//!
//! Inputs: an [`outbox_core::Event`]. Output: the payloads (the caller's description of each
//! webhook) of every webhook whose patterns match and whose filter holds. A filter that fails to
//! evaluate (a missing field, a type error) counts as "no match" and is reported to the caller,
//! never raised.
//!
//! A [`Filter`] is compiled once per webhook version. Because the `cel` crate parses and
//! evaluates recursively, compilation refuses what could overflow a stack — too long, too many
//! terms, brackets or tree levels, macros nested too deep, unknown names — and parses on a thread
//! of its own with a large stack (see the `filter` module for the measured figures). It also
//! refuses what is wrong before any event arrives: unknown functions, fields `event` does not
//! have, and results that can never be a bool. What it accepts evaluates on any thread, within a
//! budget of work and memory ([`MAX_FILTER_STEPS`] plus [`STEPS_PER_EVENT_VALUE`] per value of
//! the event): an evaluation over budget, like one that fails or panics, is that (event,
//! webhook) pair's filter error and counts as no match. An event is converted for CEL once, borrowing
//! its strings, and shared by the filters of all its candidates. `benches/filter.rs` measures it.
//!
//! ```
//! use outbox_matcher::{Filter, Matcher, Pattern};
//! let mut m = Matcher::new();
//! let filter = Filter::compile("event.data.carrier == 'dhl'").unwrap();
//! m.insert("dhl", &[Pattern::parse("shipment.*").unwrap()], Some(filter.into()), 1);
//! ```

mod budget;
mod check;
mod filter;
mod pattern;

use std::collections::HashMap;
use std::sync::Arc;

use outbox_core::Event;

pub use budget::{MAX_FILTER_STEPS, STEPS_PER_EVENT_VALUE};
pub use filter::{
    COMPILER_STACK, EVAL_STACK, Filter, FilterError, MAX_FILTER_DEPTH, MAX_FILTER_LEN,
    MAX_FILTER_LOOP_NESTING, MAX_FILTER_NESTING, MAX_FILTER_TERMS,
};
pub use pattern::Pattern;

struct Entry<T> {
    name: Arc<str>,
    filter: Option<Arc<Filter>>,
    payload: T,
}

/// Webhooks indexed by the event types they listen to.
pub struct Matcher<T> {
    entries: Vec<Entry<T>>,
    exact: HashMap<String, Vec<usize>>,
    /// Keyed by the prefix including its trailing dot: `order.*` is stored as `order.`.
    prefix: HashMap<String, Vec<usize>>,
    any: Vec<usize>,
}

impl<T> Default for Matcher<T> {
    fn default() -> Self {
        Matcher {
            entries: Vec::new(),
            exact: HashMap::new(),
            prefix: HashMap::new(),
            any: Vec::new(),
        }
    }
}

impl<T> Matcher<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a webhook named `name`, listening to `patterns`, with an optional filter.
    pub fn insert(
        &mut self,
        name: &str,
        patterns: &[Pattern],
        filter: Option<Arc<Filter>>,
        payload: T,
    ) {
        let index = self.entries.len();
        self.entries.push(Entry {
            name: name.into(),
            filter,
            payload,
        });
        for pattern in patterns {
            let slot = match pattern {
                Pattern::Any => &mut self.any,
                Pattern::Exact(t) => self.exact.entry(t.clone()).or_default(),
                Pattern::Prefix(p) => self.prefix.entry(p.clone()).or_default(),
            };
            if !slot.contains(&index) {
                slot.push(index);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Calls `on_match` with the payload of every webhook `event` goes to, in insertion order.
    /// `on_filter_error` hears about filters that failed to evaluate (they count as no match).
    pub fn matches<'a>(
        &'a self,
        event: &Event,
        mut on_match: impl FnMut(&'a T),
        mut on_filter_error: impl FnMut(&str, &FilterError),
    ) {
        let mut candidates: Vec<usize> = Vec::new();
        candidates.extend_from_slice(&self.any);
        if let Some(v) = self.exact.get(&event.event_type) {
            candidates.extend_from_slice(v);
        }
        if !self.prefix.is_empty() {
            for (i, _) in event.event_type.match_indices('.') {
                if let Some(v) = self.prefix.get(&event.event_type[..=i]) {
                    candidates.extend_from_slice(v);
                }
            }
        }
        if candidates.is_empty() {
            return;
        }
        candidates.sort_unstable();
        candidates.dedup();

        let mut activation = None;
        for index in candidates {
            let entry = &self.entries[index];
            let pass = match &entry.filter {
                None => true,
                Some(filter) => {
                    let vars = activation.get_or_insert_with(|| filter::Activation::new(event));
                    match filter.eval(vars, &entry.name) {
                        Ok(pass) => pass,
                        Err(e) => {
                            on_filter_error(&entry.name, &e);
                            false
                        }
                    }
                }
            };
            if pass {
                on_match(&entry.payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str) -> Event {
        Event {
            id: 1,
            event_type: event_type.into(),
            entity: "order".into(),
            entity_id: "1".into(),
            data: serde_json::json!({"qty": 3}),
            old: None,
            metadata: serde_json::json!({}),
            created_at: chrono::Utc::now(),
        }
    }

    fn matched(m: &Matcher<&'static str>, t: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        m.matches(&event(t), |p| out.push(*p), |_, _| {});
        out
    }

    #[test]
    fn patterns_select_webhooks() {
        let mut m = Matcher::new();
        let p = |s: &str| Pattern::parse(s).unwrap();
        m.insert("exact", &[p("order.created")], None, "exact");
        m.insert("prefix", &[p("order.*")], None, "prefix");
        m.insert("deep", &[p("order.line.*")], None, "deep");
        m.insert("all", &[p("*")], None, "all");
        m.insert("twice", &[p("order.*"), p("order.created")], None, "twice");
        assert_eq!(
            matched(&m, "order.created"),
            vec!["exact", "prefix", "all", "twice"]
        );
        assert_eq!(
            matched(&m, "order.line.added"),
            vec!["prefix", "deep", "all", "twice"]
        );
        assert_eq!(matched(&m, "orders.created"), vec!["all"]);
        assert_eq!(matched(&m, "order"), vec!["all"]);
    }

    #[test]
    fn only_the_filters_of_candidates_are_evaluated() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        // Fails on every event: had it been evaluated, its error would have been reported.
        let failing = Arc::new(Filter::compile("event.data.nope == 1").unwrap());
        let mut m = Matcher::new();
        for i in 0..10_000 {
            m.insert(
                &format!("other-{i}"),
                &[p(&format!("invoice{i}.created")), p(&format!("stock{i}.*"))],
                Some(failing.clone()),
                "other",
            );
        }
        let qty = Arc::new(Filter::compile("event.data.qty == 3").unwrap());
        m.insert("orders", &[p("order.*")], Some(qty), "orders");
        m.insert("failing", &[p("order.created")], Some(failing), "failing");
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        m.matches(
            &event("order.created"),
            |p| out.push(*p),
            |name, _| errors.push(name.to_string()),
        );
        assert_eq!(out, ["orders"]);
        assert_eq!(errors, ["failing"]);
    }
}
