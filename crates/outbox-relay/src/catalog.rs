//! The webhook catalog: `outbox.webhooks` and `outbox.relations` loaded, validated and compiled
//! into what the router (patterns + filters) and the sender (endpoints) work from. Rows that do
//! not validate are marked `valid = false` with the reason and left out; every other webhook keeps
//! working. A reload swaps the compiled configuration atomically; compiled webhooks are reused
//! when their row did not change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use deadpool_postgres::Pool;
use outbox_core::{Event, RelationSpec, WebhookSpec, telemetry};
use outbox_listener::{Routing, Target};
use outbox_matcher::{Filter, FilterError, Matcher, Pattern};
use outbox_sender::{Directory, Endpoint, FieldError};
use serde_json::{Map, Value};

/// A webhook compiled for routing and sending.
pub struct Compiled {
    pub patterns: Vec<Pattern>,
    pub filter: Option<Arc<Filter>>,
    pub endpoint: Arc<Endpoint>,
}

/// Validates and compiles one webhook, reporting every problem at once.
pub fn compile(id: i64, spec: &WebhookSpec) -> Result<Compiled, Vec<FieldError>> {
    let mut errors = Vec::new();
    if spec.name.trim().is_empty() {
        errors.push(FieldError::new("name", "must not be empty"));
    }
    if spec.events.is_empty() {
        errors.push(FieldError::new(
            "events",
            "must list at least one event type pattern, e.g. [\"order.created\"], [\"order.*\"] or [\"*\"]",
        ));
    }
    let mut patterns = Vec::new();
    for (i, text) in spec.events.iter().enumerate() {
        match Pattern::parse(text) {
            Ok(p) => patterns.push(p),
            Err(e) => errors.push(FieldError::new(format!("events[{i}]"), e)),
        }
    }
    let filter = match spec.filter.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(source) => match Filter::compile(source) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                errors.push(FieldError::new("filter", e.to_string()));
                None
            }
        },
    };
    let endpoint = match Endpoint::compile(id, spec) {
        Ok(e) => Some(Arc::new(e)),
        Err(errs) => {
            errors.extend(errs);
            None
        }
    };
    match (errors.is_empty(), endpoint) {
        (true, Some(endpoint)) => Ok(Compiled {
            patterns,
            filter,
            endpoint,
        }),
        _ => Err(errors),
    }
}

/// One line naming every problem.
pub fn describe_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

pub const WEBHOOK_COLUMNS: &str = r#"id, name, contact, events, filter, url, method, headers, content_type, body,
    priority, "coalesce", ordered, active, timeout, max_attempts, retry_schedule, max_in_flight,
    auth, signature, tls, valid, error, disabled_reason"#;

/// A row of `outbox.webhooks` as read.
pub struct WebhookRow {
    pub id: i64,
    pub spec: Result<WebhookSpec, String>,
    pub name: String,
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
        row.try_get::<_, i32>("max_in_flight")?.into(),
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
        let mut message = format!("row does not have the shape of a webhook: {e}");
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            message = message.replace(secret.as_str(), "***");
        }
        message
    });
    Ok(WebhookRow {
        id: row.try_get("id")?,
        spec,
        name,
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

/// Routes events with the matcher, logging filter errors at most once a minute per webhook.
pub struct LiveRouting {
    matcher: Matcher<Target>,
    last_filter_log: Mutex<HashMap<Arc<str>, Instant>>,
}

impl LiveRouting {
    fn new(matcher: Matcher<Target>) -> LiveRouting {
        LiveRouting {
            matcher,
            last_filter_log: Mutex::new(HashMap::new()),
        }
    }

    fn filter_failed(&self, webhook: &str, event: &Event, error: &FilterError) {
        telemetry::filter_error(webhook);
        let mut last = self.last_filter_log.lock().expect("filter log times");
        let now = Instant::now();
        let due = last
            .get(webhook)
            .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60));
        if due {
            last.insert(webhook.into(), now);
            tracing::warn!(
                webhook,
                event_id = event.id,
                event_type = %event.event_type,
                error = %error,
                "filter failed to evaluate; counted as no match (logged at most once a minute per webhook)"
            );
        }
    }
}

impl Routing for LiveRouting {
    fn route(&self, event: &Event, out: &mut Vec<Target>) {
        self.matcher.matches(
            event,
            |t| out.push(t.clone()),
            |name, e| self.filter_failed(name, event, e),
        );
    }
}

/// The live, compiled configuration, shared by the router and the sender.
pub struct Catalog {
    pub directory: Arc<ArcSwap<Directory>>,
    pub routing: ArcSwap<LiveRouting>,
    cache: Mutex<HashMap<i64, (WebhookSpec, Arc<Compiled>)>>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            directory: Arc::new(ArcSwap::from_pointee(Directory::default())),
            routing: ArcSwap::from_pointee(LiveRouting::new(Matcher::new())),
            cache: Mutex::new(HashMap::new()),
        }
    }
}

/// What a reload found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub valid: usize,
    pub invalid: usize,
}

impl Catalog {
    /// Loads, validates and compiles every webhook and relation, records validity in the table and
    /// swaps the new configuration in.
    pub async fn reload(&self, pool: &Pool) -> Result<Reloaded, outbox_core::Error> {
        let client = pool.get().await?;
        let rows = client
            .query(
                &format!("SELECT {WEBHOOK_COLUMNS} FROM outbox.webhooks ORDER BY id"),
                &[],
            )
            .await?;
        let relations: HashMap<(String, String), String> = client
            .query("SELECT entity, name, query FROM outbox.relations", &[])
            .await?
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect();

        let mut summary = Reloaded::default();
        let mut compiled_now: HashMap<i64, (WebhookSpec, Arc<Compiled>)> = HashMap::new();
        let mut verdicts: Vec<(i64, bool, Option<String>)> = Vec::new();
        {
            let cache = self.cache.lock().expect("catalog cache");
            for row in &rows {
                let row = webhook_row(row)?;
                let result = match &row.spec {
                    Err(reason) => Err(reason.clone()),
                    Ok(spec) => match cache.get(&row.id) {
                        Some((cached_spec, compiled)) if cached_spec == spec => {
                            Ok(compiled.clone())
                        }
                        _ => compile(row.id, spec)
                            .map(Arc::new)
                            .map_err(|errs| describe_errors(&errs)),
                    },
                };
                match result {
                    Ok(compiled) => {
                        summary.valid += 1;
                        if !row.valid || row.error.is_some() {
                            verdicts.push((row.id, true, None));
                        }
                        if let Ok(spec) = row.spec {
                            compiled_now.insert(row.id, (spec, compiled));
                        }
                    }
                    Err(reason) => {
                        summary.invalid += 1;
                        if row.valid || row.error.as_deref() != Some(reason.as_str()) {
                            tracing::warn!(webhook = %row.name, error = %reason, "webhook is invalid and will not run until fixed");
                            verdicts.push((row.id, false, Some(reason)));
                        }
                    }
                }
            }
        }
        for (id, valid, error) in &verdicts {
            client
                .execute(
                    "UPDATE outbox.webhooks SET valid = $2, error = $3 WHERE id = $1",
                    &[id, valid, error],
                )
                .await?;
        }

        let mut matcher = Matcher::new();
        let mut endpoints = Vec::new();
        let mut ids: Vec<&i64> = compiled_now.keys().collect();
        ids.sort();
        for id in ids {
            let (spec, c) = &compiled_now[id];
            telemetry::register_webhook(&spec.name);
            matcher.insert(
                &spec.name,
                &c.patterns,
                c.filter.clone(),
                Target {
                    webhook_id: *id,
                    webhook: c.endpoint.name.clone(),
                    priority: spec.priority,
                    coalesce: spec.coalesce,
                    ordered: spec.ordered,
                },
            );
            endpoints.push(c.endpoint.clone());
        }
        self.routing.store(Arc::new(LiveRouting::new(matcher)));
        self.directory
            .store(Arc::new(Directory::new(endpoints, relations)));
        *self.cache.lock().expect("catalog cache") = compiled_now;
        Ok(summary)
    }
}

/// Checks a relation's fields (not its SQL, which needs a database).
pub fn check_relation(relation: &RelationSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if relation.entity.trim().is_empty() {
        errors.push(FieldError::new("entity", "must not be empty"));
    }
    if relation.name.trim().is_empty() {
        errors.push(FieldError::new("name", "must not be empty"));
    } else if !relation
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        errors.push(FieldError::new(
            "name",
            format!(
                "{:?} must be letters, digits and _ only (templates use it as related.<name>)",
                relation.name
            ),
        ));
    }
    if relation.query.trim().is_empty() {
        errors.push(FieldError::new("query", "must not be empty"));
    }
    errors
}
