//! The merge fields of a context: every path a template can use, with an example value.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::context::RenderContext;

/// Elements of one array looked at to find the fields its items have.
const ITEMS_SAMPLED: usize = 100;

/// One merge field: `event.data.lines[].sku` and a value it had.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergeField {
    /// The path as written in a template; `[]` marks "each item of this list".
    pub path: String,
    /// The value at this path in the context it was found in (the first non-null one for items of
    /// a list; a list itself shows its length as `[n items]`).
    pub example: Value,
}

/// Every merge field of `ctx`: leaves (strings, numbers, booleans, nulls), lists and empty
/// objects, in template order (`event`, `id`, `type`, ..., `related`).
pub fn merge_fields(ctx: &RenderContext<'_>) -> Vec<MergeField> {
    let context = serde_json::to_value(ctx.view()).unwrap_or(Value::Null);
    let mut found = Found::default();
    if let Value::Object(top) = &context {
        for (key, value) in top {
            found.walk(key.clone(), value);
        }
    }
    found.fields
}

#[derive(Default)]
struct Found {
    fields: Vec<MergeField>,
    index: HashMap<String, usize>,
}

impl Found {
    fn walk(&mut self, path: String, value: &Value) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    self.walk(join(&path, key), child);
                }
            }
            Value::Array(items) => {
                let each = format!("{path}[]");
                self.note(path, Value::String(format!("[{} items]", items.len())));
                for item in items.iter().take(ITEMS_SAMPLED) {
                    self.walk(each.clone(), item);
                }
            }
            leaf => self.note(path, leaf.clone()),
        }
    }

    /// Records `path`, or fills in its example when an earlier item had null there.
    fn note(&mut self, path: String, example: Value) {
        match self.index.get(&path) {
            Some(&i) => {
                let field = &mut self.fields[i];
                if field.example.is_null() && !example.is_null() {
                    field.example = example;
                }
            }
            None => {
                self.index.insert(path.clone(), self.fields.len());
                self.fields.push(MergeField { path, example });
            }
        }
    }
}

/// `a.b` for identifier-like keys, `a["odd key"]` otherwise.
fn join(path: &str, key: &str) -> String {
    let identifier = key
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_alphanumeric() || c == '_');
    if identifier {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", serde_json::to_string(key).unwrap_or_default())
    }
}
