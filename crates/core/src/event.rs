use std::error::Error as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::{FromSql, Type};

/// One row of `outbox.events`, as the matcher filters it, the renderer renders it and the sender
/// sends it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub id: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub entity: String,
    pub entity_id: String,
    pub data: Value,
    pub old: Option<Value>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

/// Nesting the relay reads in an event's JSON (serde_json's limit); deeper values make the event
/// unroutable instead of exhausting the stack of whatever walks them later.
pub const MAX_JSON_DEPTH: usize = 128;

/// Why an event row could not be read. The event is then set aside (routing) or the attempt fails
/// (sending); it never stops the rows around it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error(
        "its {column} is nested {depth} levels deep; the relay reads JSON nested at most {MAX_JSON_DEPTH} levels"
    )]
    TooDeep { column: &'static str, depth: usize },
    #[error("its {column} is not valid JSON: {reason}")]
    InvalidJson {
        column: &'static str,
        reason: String,
    },
    #[error("its column {column} cannot be read: {reason}")]
    Column {
        column: &'static str,
        reason: String,
    },
}

/// The columns [`Event::from_row`] reads, in order.
const COLUMNS: [&str; 8] = [
    "id",
    "event_type",
    "entity",
    "entity_id",
    "data",
    "old",
    "metadata",
    "created_at",
];

impl Event {
    /// Reads the columns `id, event_type, entity, entity_id, data, old, metadata, created_at`
    /// starting at column `at`.
    pub fn from_row(row: &tokio_postgres::Row, at: usize) -> Result<Event, DecodeError> {
        Ok(Event {
            id: column(row, at, 0)?,
            event_type: column(row, at, 1)?,
            entity: column(row, at, 2)?,
            entity_id: column(row, at, 3)?,
            data: json(row, at, 4)?.unwrap_or(Value::Null),
            old: json(row, at, 5)?,
            metadata: json(row, at, 6)?.unwrap_or(Value::Null),
            created_at: column(row, at, 7)?,
        })
    }
}

fn column<'a, T: FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    at: usize,
    i: usize,
) -> Result<T, DecodeError> {
    row.try_get(at + i).map_err(|e| DecodeError::Column {
        column: COLUMNS[i],
        reason: e
            .source()
            .map(ToString::to_string)
            .unwrap_or_else(|| e.to_string()),
    })
}

/// A json/jsonb column read as raw JSON text, parsed by [`json`].
struct RawJson<'a>(&'a [u8]);

impl<'a> FromSql<'a> for RawJson<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            match raw.split_first() {
                Some((1, text)) => Ok(RawJson(text)),
                _ => Err("unsupported jsonb encoding version".into()),
            }
        } else {
            Ok(RawJson(raw))
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }
}

fn json(row: &tokio_postgres::Row, at: usize, i: usize) -> Result<Option<Value>, DecodeError> {
    let Some(RawJson(text)) = column::<Option<RawJson>>(row, at, i)? else {
        return Ok(None);
    };
    parse_json(COLUMNS[i], text).map(Some)
}

/// Parses one event column's JSON text, saying how deep it is when it is too deep.
pub fn parse_json(column: &'static str, text: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(text).map_err(|e| {
        let depth = nesting(text);
        if depth > MAX_JSON_DEPTH {
            DecodeError::TooDeep { column, depth }
        } else {
            DecodeError::InvalidJson {
                column,
                reason: e.to_string(),
            }
        }
    })
}

/// The deepest nesting of arrays and objects in JSON text (strings skipped).
fn nesting(text: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn json_deeper_than_the_limit_is_refused_with_its_depth() {
        assert!(parse_json("data", nested(MAX_JSON_DEPTH - 1).as_bytes()).is_ok());
        let err = parse_json("data", nested(300).as_bytes()).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooDeep {
                column: "data",
                depth: 300
            }
        );
        assert_eq!(
            err.to_string(),
            "its data is nested 300 levels deep; the relay reads JSON nested at most 128 levels"
        );
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        assert_eq!(nesting(br#"{"a": "[[[[\"{{{", "b": [1, {"c": []}]}"#), 4);
        let err = parse_json("metadata", b"{\"a\": ").unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::InvalidJson {
                    column: "metadata",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
