//! Reading rows of `outbox.webhooks`, which anyone may have written with SQL: a row whose columns
//! do not have the shape of a webhook is reported with the reason (secrets hidden), not rejected.

use outbox_core::WebhookSpec;
use serde_json::{Map, Value};

use crate::validate::hide_quoted;

pub const WEBHOOK_COLUMNS: &str = r#"id, name, contact, events, filter, url, method, headers, content_type, body,
    priority, "coalesce", ordered, active, timeout, max_attempts, retry_schedule, max_in_flight,
    auth, signature, tls, valid, error, disabled_reason"#;

/// A row of `outbox.webhooks` as read.
pub struct WebhookRow {
    pub id: i64,
    pub spec: Result<WebhookSpec, String>,
    pub name: String,
    /// The `active` column, also for a row that is not webhook-shaped.
    pub active: bool,
    pub valid: bool,
    pub error: Option<String>,
    pub disabled_reason: Option<String>,
}

/// Reads a row selected with [`WEBHOOK_COLUMNS`]. A row whose jsonb columns do not have the shape
/// of the configuration keys yields `spec: Err(reason)`.
pub fn webhook_row(row: &tokio_postgres::Row) -> Result<WebhookRow, tokio_postgres::Error> {
    let mut m = Map::new();
    let text = |m: &mut Map<String, Value>, key: &str, v: Option<String>| {
        if let Some(v) = v {
            m.insert(key.into(), Value::String(v));
        }
    };
    text(&mut m, "name", row.try_get("name")?);
    text(&mut m, "contact", row.try_get("contact")?);
    m.insert(
        "events".into(),
        serde_json::to_value(row.try_get::<_, Vec<String>>("events")?).unwrap_or_default(),
    );
    text(&mut m, "filter", row.try_get("filter")?);
    text(&mut m, "url", row.try_get("url")?);
    text(&mut m, "method", row.try_get("method")?);
    m.insert("headers".into(), row.try_get::<_, Value>("headers")?);
    text(&mut m, "content_type", row.try_get("content_type")?);
    text(&mut m, "body", row.try_get("body")?);
    m.insert("priority".into(), row.try_get::<_, i32>("priority")?.into());
    m.insert(
        "coalesce".into(),
        row.try_get::<_, bool>("coalesce")?.into(),
    );
    m.insert("ordered".into(), row.try_get::<_, bool>("ordered")?.into());
    m.insert("active".into(), row.try_get::<_, bool>("active")?.into());
    text(&mut m, "timeout", row.try_get("timeout")?);
    m.insert(
        "max_attempts".into(),
        row.try_get::<_, i32>("max_attempts")?.into(),
    );
    if let Some(s) = row.try_get::<_, Option<Vec<String>>>("retry_schedule")? {
        m.insert(
            "retry_schedule".into(),
            serde_json::to_value(s).unwrap_or_default(),
        );
    }
    m.insert(
        "max_in_flight".into(),
        row.try_get::<_, Option<i32>>("max_in_flight")?.into(),
    );
    let mut secrets = Vec::new();
    for key in ["auth", "signature", "tls"] {
        if let Some(v) = row.try_get::<_, Option<Value>>(key)? {
            string_leaves(&v, &mut secrets);
            m.insert(key.into(), v);
        }
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let name: String = row.try_get("name")?;
    let spec = serde_json::from_value::<WebhookSpec>(Value::Object(m)).map_err(|e| {
        // serde quotes offending values; those of auth/signature/tls may be secrets.
        let mut message = format!(
            "row does not have the shape of a webhook: {}",
            hide_quoted(&e.to_string())
        );
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            message = message.replace(secret.as_str(), "***");
        }
        message
    });
    Ok(WebhookRow {
        id: row.try_get("id")?,
        spec,
        name,
        active: row.try_get("active")?,
        valid: row.try_get("valid")?,
        error: row.try_get("error")?,
        disabled_reason: row.try_get("disabled_reason")?,
    })
}

/// Every string inside `value`.
fn string_leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| string_leaves(v, out)),
        Value::Object(map) => map.values().for_each(|v| string_leaves(v, out)),
        _ => {}
    }
}
