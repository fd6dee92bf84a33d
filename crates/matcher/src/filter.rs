use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cel::objects::Key;
use cel::{Context, Env, Program, Value};
use outbox_core::Event;
use thiserror::Error;

/// Longest filter source accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses, brackets and braces accepted.
pub const MAX_FILTER_NESTING: usize = 32;

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A compiled CEL filter.
pub struct Filter {
    program: Program,
}

#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum FilterError {
    #[error("filter is {len} bytes long; the limit is {MAX_FILTER_LEN}")]
    TooLong { len: usize },
    #[error("filter nests {depth} levels deep; the limit is {MAX_FILTER_NESTING}")]
    TooDeep { depth: usize },
    #[error("filter does not compile as CEL: {0}")]
    Compile(String),
    #[error("filter failed to evaluate: {0}")]
    Eval(String),
    #[error("filter returned {0}, not a bool")]
    NotBool(String),
}

impl Filter {
    /// Compiles a CEL expression, refusing sources too long or too deeply nested to evaluate safely.
    pub fn compile(source: &str) -> Result<Filter, FilterError> {
        if source.len() > MAX_FILTER_LEN {
            return Err(FilterError::TooLong { len: source.len() });
        }
        let depth = nesting(source);
        if depth > MAX_FILTER_NESTING {
            return Err(FilterError::TooDeep { depth });
        }
        let program = ENV
            .compile(source)
            .map_err(|e| FilterError::Compile(one_line(&e.to_string())))?;
        Ok(Filter { program })
    }

    /// Evaluates the filter for one event. Errors count as "no match" for the caller.
    pub(crate) fn eval(&self, vars: &Activation, webhook: &str) -> Result<bool, FilterError> {
        let mut context = Context::with_env(ENV.clone());
        context.add_variable_from_value("event", vars.event.clone());
        let mut w = HashMap::new();
        w.insert(
            Key::from("name"),
            Value::String(Arc::new(webhook.to_string())),
        );
        context.add_variable_from_value("webhook", Value::Map(w.into()));
        match self.program.execute(&context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(FilterError::NotBool(format!("{other:?}"))),
            Err(e) => Err(FilterError::Eval(e.to_string())),
        }
    }

    /// Evaluates the filter against one event (for tests and `apply --dry-run` style checks).
    pub fn matches(&self, event: &Event, webhook: &str) -> Result<bool, FilterError> {
        self.eval(&Activation::new(event), webhook)
    }
}

/// An event converted to CEL once, shared by every filter evaluated for it.
pub(crate) struct Activation {
    event: Value,
}

impl Activation {
    pub(crate) fn new(event: &Event) -> Activation {
        let mut m: HashMap<Key, Value> = HashMap::with_capacity(8);
        m.insert(Key::from("id"), Value::Int(event.id));
        m.insert(Key::from("type"), string(&event.event_type));
        m.insert(Key::from("entity"), string(&event.entity));
        m.insert(Key::from("entity_id"), string(&event.entity_id));
        m.insert(Key::from("data"), json(&event.data));
        m.insert(
            Key::from("old"),
            event.old.as_ref().map(json).unwrap_or(Value::Null),
        );
        m.insert(Key::from("metadata"), json(&event.metadata));
        m.insert(
            Key::from("created_at"),
            Value::Timestamp(event.created_at.fixed_offset()),
        );
        Activation {
            event: Value::Map(m.into()),
        }
    }
}

fn string(s: &str) -> Value {
    Value::String(Arc::new(s.to_string()))
}

/// JSON to CEL, with integers as `int` (so `event.data.qty + 1` works) and other numbers as `double`.
fn json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => match n.as_u64() {
                Some(u) => Value::UInt(u),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
        },
        serde_json::Value::String(s) => string(s),
        serde_json::Value::Array(a) => Value::List(Arc::new(a.iter().map(json).collect())),
        serde_json::Value::Object(o) => {
            let m: HashMap<Key, Value> = o
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), json(v)))
                .collect();
            Value::Map(m.into())
        }
    }
}

/// Deepest bracket nesting, ignoring brackets inside string literals.
fn nesting(source: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: serde_json::Value) -> Event {
        Event {
            id: 7,
            event_type: "shipment.updated".into(),
            entity: "shipment".into(),
            entity_id: "7".into(),
            data,
            old: Some(serde_json::json!({"status": "packed"})),
            metadata: serde_json::json!({"shop": "nl"}),
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn integers_are_cel_ints() {
        let f = Filter::compile("event.data.qty + 1 > 5").unwrap();
        assert!(
            f.matches(&event(serde_json::json!({"qty": 5})), "w")
                .unwrap()
        );
        assert!(
            !f.matches(&event(serde_json::json!({"qty": 4})), "w")
                .unwrap()
        );
    }

    #[test]
    fn transitions_and_metadata() {
        let f = Filter::compile(
            "event.old.status != event.data.status && event.data.status == 'shipped' && event.metadata.shop == 'nl'",
        )
        .unwrap();
        assert!(
            f.matches(&event(serde_json::json!({"status": "shipped"})), "w")
                .unwrap()
        );
    }

    #[test]
    fn missing_fields_are_errors_not_panics() {
        let f = Filter::compile("event.data.nope == 1").unwrap();
        assert!(f.matches(&event(serde_json::json!({})), "w").is_err());
    }

    #[test]
    fn hostile_sources_are_refused() {
        let deep = format!("{}true{}", "(".repeat(500), ")".repeat(500));
        assert!(matches!(
            Filter::compile(&deep),
            Err(FilterError::TooDeep { .. })
        ));
        let long = vec!["1 == 1"; 2000].join(" && ");
        assert!(matches!(
            Filter::compile(&long),
            Err(FilterError::TooLong { .. })
        ));
        assert!(matches!(
            Filter::compile("event.data.("),
            Err(FilterError::Compile(_))
        ));
    }
}
