//! Webhooks: listed and shown with secrets as `***`, created and changed through exactly the
//! checks of `apply`, paused, resumed and deleted.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use outbox_catalog::{WEBHOOK_COLUMNS, webhook_row};
use outbox_core::WebhookSpec;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use crate::error::AdminError;
use crate::sql;

/// Every configuration key (docs/webhooks.md), in this order; keys a webhook leaves out are shown as
/// null, so JSON output always has the same shape.
pub const KEYS: [&str; 20] = [
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
#[derive(Debug, Clone)]
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

/// Whether a webhook sends: a state an operator can read at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookState {
    /// Valid and active.
    Active,
    /// Set inactive by an operator: deliveries queue without being sent.
    Paused,
    /// Switched off by the relay (e.g. the receiver answered 410 Gone).
    Disabled,
    /// Its configuration does not validate; the relay does not run it.
    Invalid,
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

    pub fn state(&self) -> WebhookState {
        if !self.valid {
            WebhookState::Invalid
        } else if self.active {
            WebhookState::Active
        } else if self.disabled_reason.is_some() {
            WebhookState::Disabled
        } else {
            WebhookState::Paused
        }
    }

    /// The event type patterns, for a webhook that can be read as one.
    pub fn events(&self) -> Vec<String> {
        self.config["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn json_text(text: &Option<String>) -> Value {
    text.clone().map(Value::String).unwrap_or(Value::Null)
}

/// Every webhook (or the one named), secrets redacted, ordered by name.
pub async fn load(
    client: &impl GenericClient,
    name: Option<&str>,
) -> Result<Vec<Shown>, AdminError> {
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

/// Every webhook.
pub async fn list(client: &impl GenericClient) -> Result<Vec<Shown>, AdminError> {
    load(client, None).await
}

/// The webhook named `name`.
pub async fn show(client: &impl GenericClient, name: &str) -> Result<Shown, AdminError> {
    load(client, Some(name))
        .await?
        .pop()
        .ok_or_else(|| AdminError::NoWebhook { name: name.into() })
}

/// The stored configuration of `name`, secrets included: only for code that re-validates or
/// re-writes it, never for showing.
pub async fn stored(
    client: &impl GenericClient,
    name: &str,
) -> Result<(i64, Result<WebhookSpec, String>), AdminError> {
    let row = client
        .query_opt(
            &format!("SELECT {WEBHOOK_COLUMNS} FROM outbox.webhooks WHERE name = $1"),
            &[&name],
        )
        .await?
        .ok_or_else(|| AdminError::NoWebhook { name: name.into() })?;
    let row = webhook_row(&row)?;
    Ok((row.id, row.spec))
}

/// A webhook's deliveries by status and its latest attempts' times.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WebhookStats {
    pub pending: i64,
    pub in_flight: i64,
    pub succeeded: i64,
    pub dead: i64,
    pub cancelled: i64,
    pub last_success: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
}

/// [`WebhookStats`] of every webhook that has deliveries, by name.
pub async fn stats(
    client: &impl GenericClient,
) -> Result<HashMap<String, WebhookStats>, AdminError> {
    let mut out: HashMap<String, WebhookStats> = HashMap::new();
    for row in client.query(sql::WEBHOOK_STATS, &[]).await? {
        let entry = out.entry(row.try_get(0)?).or_default();
        match row.try_get::<_, Option<String>>(1)?.as_deref() {
            None => {
                entry.last_success = row.try_get(3)?;
                entry.last_failure = row.try_get(4)?;
            }
            Some(status) => {
                let n: i64 = row.try_get(2)?;
                match status {
                    "pending" => entry.pending = n,
                    "in_flight" => entry.in_flight = n,
                    "succeeded" => entry.succeeded = n,
                    "dead" => entry.dead = n,
                    "cancelled" => entry.cancelled = n,
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

/// The JSON-valued columns of a webhook row, serialized once for the upsert.
struct Stored<'a> {
    spec: &'a WebhookSpec,
    method: String,
    headers: Value,
    auth: Option<Value>,
    signature: Option<Value>,
    tls: Option<Value>,
}

impl<'a> Stored<'a> {
    fn of(spec: &'a WebhookSpec) -> Stored<'a> {
        let json = |v: Result<Value, serde_json::Error>| v.unwrap_or(Value::Null);
        Stored {
            spec,
            method: spec.method.to_ascii_uppercase(),
            headers: json(serde_json::to_value(&spec.headers)),
            auth: spec.auth.as_ref().map(|a| json(serde_json::to_value(a))),
            signature: spec
                .signature
                .as_ref()
                .map(|s| json(serde_json::to_value(s))),
            tls: spec.tls.as_ref().map(|t| json(serde_json::to_value(t))),
        }
    }

    /// The parameters of `sql/queries/webhook_upsert.sql`, in order.
    fn params(&self) -> [&(dyn ToSql + Sync); 20] {
        let spec = self.spec;
        [
            &spec.name,
            &spec.contact,
            &spec.events,
            &spec.filter,
            &spec.url,
            &self.method,
            &self.headers,
            &spec.content_type,
            &spec.body,
            &spec.priority,
            &spec.coalesce,
            &spec.ordered,
            &spec.active,
            &spec.timeout,
            &spec.max_attempts,
            &spec.retry_schedule,
            &spec.max_in_flight,
            &self.auth,
            &self.signature,
            &self.tls,
        ]
    }
}

/// Writes a validated webhook: creates it, or replaces the configuration of the webhook of that
/// name. Returns its id.
pub async fn upsert(client: &impl GenericClient, spec: &WebhookSpec) -> Result<i64, AdminError> {
    let stored = Stored::of(spec);
    let row = client
        .query_one(sql::WEBHOOK_UPSERT, &stored.params())
        .await?;
    Ok(row.try_get(0)?)
}

/// Writes many validated webhooks as [`upsert`] does, with one prepared statement whose
/// executions are pipelined on the connection: the wait is a few round trips, not one per webhook
/// (`apply` of 10,000 webhooks).
pub async fn upsert_many(
    client: &impl GenericClient,
    specs: &[&WebhookSpec],
) -> Result<(), AdminError> {
    if specs.is_empty() {
        return Ok(());
    }
    let statement = client.prepare(sql::WEBHOOK_UPSERT).await?;
    let stored: Vec<Stored> = specs.iter().map(|s| Stored::of(s)).collect();
    let params: Vec<_> = stored.iter().map(Stored::params).collect();
    futures_util::future::try_join_all(params.iter().map(|p| client.query_one(&statement, p)))
        .await?;
    Ok(())
}

/// Checks one webhook given as the table of an `apply` file's `[[webhook]]` (exactly as `apply`
/// checks it); every problem as `(field, message)`.
pub fn check(item: toml::Value) -> Result<WebhookSpec, AdminError> {
    let name = item
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_string();
    match outbox_catalog::check_webhook(item) {
        (Some(spec), problems) if problems.is_empty() => Ok(spec),
        (_, problems) => Err(AdminError::InvalidWebhook { name, problems }),
    }
}

/// Creates a webhook from the table of an `[[webhook]]` entry. Nothing is written when any check
/// fails, or when the name is taken.
pub async fn create(
    client: &impl GenericClient,
    item: toml::Value,
) -> Result<WebhookSpec, AdminError> {
    let spec = check(item)?;
    let taken = client
        .query_opt(
            "SELECT 1 FROM outbox.webhooks WHERE name = $1",
            &[&spec.name],
        )
        .await?
        .is_some();
    if taken {
        return Err(AdminError::InvalidWebhook {
            name: spec.name.clone(),
            problems: vec![(
                "name".into(),
                "a webhook with this name already exists; choose another name or edit that one"
                    .into(),
            )],
        });
    }
    upsert(client, &spec).await?;
    tracing::info!(webhook = %spec.name, "webhook created by an operator");
    Ok(spec)
}

/// Replaces the configuration of webhook `name` with the table of an `[[webhook]]` entry, which
/// must keep the name. Nothing is written when any check fails.
pub async fn update(
    client: &impl GenericClient,
    name: &str,
    item: toml::Value,
) -> Result<WebhookSpec, AdminError> {
    let (_id, _current) = stored(client, name).await?;
    let given = item
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    if given != name {
        let mut problems = match check(item) {
            Err(AdminError::InvalidWebhook { problems, .. }) => problems,
            _ => Vec::new(),
        };
        problems.retain(|(field, _)| field != "name");
        problems.insert(
            0,
            (
                "name".into(),
                format!(
                    "a webhook keeps its name (here {name:?}); create a new webhook to use another"
                ),
            ),
        );
        return Err(AdminError::InvalidWebhook {
            name: name.into(),
            problems,
        });
    }
    let spec = check(item)?;
    upsert(client, &spec).await?;
    tracing::info!(webhook = %spec.name, "webhook changed by an operator");
    Ok(spec)
}

/// Pauses a webhook (`active = false`): its deliveries queue without being sent.
pub async fn pause(client: &impl GenericClient, name: &str) -> Result<(), AdminError> {
    set_active(client, name, false).await
}

/// Resumes a paused or disabled webhook: what queued meanwhile is sent.
pub async fn resume(client: &impl GenericClient, name: &str) -> Result<(), AdminError> {
    set_active(client, name, true).await
}

async fn set_active(
    client: &impl GenericClient,
    name: &str,
    active: bool,
) -> Result<(), AdminError> {
    let changed = client
        .execute(
            "UPDATE outbox.webhooks
             SET active = $2, disabled_reason = CASE WHEN $2 THEN NULL ELSE disabled_reason END,
                 updated_at = now()
             WHERE name = $1",
            &[&name, &active],
        )
        .await?;
    if changed == 0 {
        return Err(AdminError::NoWebhook { name: name.into() });
    }
    tracing::info!(
        webhook = name,
        "webhook {} by an operator",
        if active { "resumed" } else { "paused" }
    );
    Ok(())
}

/// Deletes a webhook; what it still had queued is cancelled (by the table's trigger).
pub async fn delete(client: &impl GenericClient, name: &str) -> Result<(), AdminError> {
    let deleted = client
        .execute("DELETE FROM outbox.webhooks WHERE name = $1", &[&name])
        .await?;
    if deleted == 0 {
        return Err(AdminError::NoWebhook { name: name.into() });
    }
    tracing::info!(webhook = name, "webhook deleted by an operator");
    Ok(())
}
