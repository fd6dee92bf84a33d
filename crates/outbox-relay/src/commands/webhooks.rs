//! `webhooks list` and `webhooks show NAME`.

use serde_json::{Map, Value};

use crate::catalog::{WEBHOOK_COLUMNS, webhook_row};
use crate::error::Failure;
use crate::output;

/// Every configuration key (docs/webhooks.md), in this order; keys a webhook leaves out are shown as
/// null, so `--json` output always has the same shape.
const KEYS: [&str; 20] = [
    "name",
    "contact",
    "events",
    "filter",
    "url",
    "method",
    "headers",
    "content_type",
    "body",
    "priority",
    "coalesce",
    "ordered",
    "active",
    "timeout",
    "max_attempts",
    "retry_schedule",
    "max_in_flight",
    "auth",
    "signature",
    "tls",
];

/// One webhook as shown: every configuration key with secrets as `***`, then `valid`, `error`
/// (why the relay refuses to run it), `disabled_reason` (why it switched it off) and `config` (the
/// configuration keys again, as one object, null when the row cannot be read as a webhook).
pub struct Shown {
    pub name: String,
    /// The `active` column (also for a row that cannot be read as a webhook).
    pub active: bool,
    pub valid: bool,
    pub error: Option<String>,
    pub disabled_reason: Option<String>,
    /// The redacted configuration, or null when the row cannot be read as one.
    pub config: Value,
}

impl Shown {
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        for key in KEYS {
            out.insert(
                key.into(),
                self.config.get(key).cloned().unwrap_or(Value::Null),
            );
        }
        // Also for a row that cannot be read as a webhook (its config is null).
        out.insert("name".into(), Value::String(self.name.clone()));
        out.insert("active".into(), Value::Bool(self.active));
        out.insert("valid".into(), Value::Bool(self.valid));
        out.insert("error".into(), json_text(&self.error));
        out.insert("disabled_reason".into(), json_text(&self.disabled_reason));
        out.insert("config".into(), self.config.clone());
        Value::Object(out)
    }
}

fn json_text(text: &Option<String>) -> Value {
    text.clone().map(Value::String).unwrap_or(Value::Null)
}

/// Every webhook (or the one named), secrets redacted.
pub async fn load(
    client: &tokio_postgres::Client,
    name: Option<&str>,
) -> Result<Vec<Shown>, Failure> {
    let rows = client
        .query(
            &format!(
                "SELECT {WEBHOOK_COLUMNS} FROM outbox.webhooks WHERE $1::text IS NULL OR name = $1 ORDER BY name"
            ),
            &[&name],
        )
        .await?;
    let mut out = Vec::new();
    for row in &rows {
        let row = webhook_row(row)?;
        let config = match &row.spec {
            Ok(spec) => serde_json::to_value(spec.redacted()).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let error = match (&row.spec, row.error) {
            (Err(reason), _) => Some(reason.clone()),
            (Ok(_), e) => e,
        };
        out.push(Shown {
            name: row.name,
            active: row.active,
            valid: row.valid && row.spec.is_ok(),
            error,
            disabled_reason: row.disabled_reason,
            config,
        });
    }
    Ok(out)
}

pub async fn list(url: &str, json: bool) -> Result<(), Failure> {
    let client = super::connect_migrated(url).await?;
    let shown = load(&client, None).await?;
    if json {
        return output::json(&shown.iter().map(Shown::to_json).collect::<Vec<_>>());
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|w| {
            let c = &w.config;
            let events = c["events"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                w.name.clone(),
                if w.active { "yes" } else { "no" }.into(),
                if w.valid { "yes".into() } else { "NO".into() },
                events,
                output::clip(c["url"].as_str().unwrap_or(""), 60),
                output::clip(
                    w.error
                        .as_deref()
                        .or(w.disabled_reason.as_deref())
                        .unwrap_or(""),
                    80,
                ),
            ]
        })
        .collect();
    output::table(
        &["name", "active", "valid", "events", "url", "error"],
        &rows,
    );
    Ok(())
}

pub async fn show(url: &str, name: &str, json: bool) -> Result<(), Failure> {
    let client = super::connect_migrated(url).await?;
    let mut shown = load(&client, Some(name)).await?;
    let Some(w) = shown.pop() else {
        return Err(Failure::invalid(format!(
            "no webhook named {name:?}; `outbox-relay webhooks list` shows them all"
        )));
    };
    if json {
        return output::json(&w.to_json());
    }
    println!("name:   {}", w.name);
    println!("valid:  {}", if w.valid { "yes" } else { "NO" });
    if let Some(e) = &w.error {
        println!("error:  {e}");
    }
    if let Some(r) = &w.disabled_reason {
        println!("disabled: {r}");
    }
    if let Ok(text) = toml::to_string_pretty(&w.config) {
        println!("\n{text}");
    }
    Ok(())
}
