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

use crate::error::Failure;

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
    } else if spec.name.trim() != spec.name {
        errors.push(FieldError::new(
            "name",
            format!("{:?} must not start or end with spaces", spec.name),
        ));
    } else if spec.name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "name",
            "must not contain control characters (line breaks, tabs)",
        ));
    } else if spec.name.chars().count() > MAX_NAME_CHARS {
        errors.push(FieldError::new(
            "name",
            format!("is longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    if !is_media_type(&spec.content_type) {
        errors.push(FieldError::new(
            "content_type",
            format!(
                "{:?} is not a media type; write e.g. \"application/json\", \"application/xml\" or \"text/plain; charset=utf-8\"",
                spec.content_type
            ),
        ));
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

/// Longest webhook name accepted (names label metrics and appear in every listing).
const MAX_NAME_CHARS: usize = 200;

/// `type/subtype`, optionally followed by `; parameters`, as a `content-type` header needs.
fn is_media_type(text: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let essence = text.split(';').next().unwrap_or("").trim();
    !text.chars().any(char::is_control)
        && essence
            .split_once('/')
            .is_some_and(|(t, sub)| token(t) && token(sub))
}

/// `message` with the text of every double-quoted value replaced by `***`, for messages that may
/// quote a secret (serde's "invalid type: string \"…\", expected …").
pub fn hide_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let rest: Vec<&str> = parts.collect();
    for (i, part) in rest.iter().enumerate() {
        out.push('"');
        // Odd pieces are inside quotes, unless the last quote is unmatched.
        if i % 2 == 0 && i + 1 < rest.len() {
            out.push_str("***");
        } else {
            out.push_str(part);
        }
    }
    out
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

/// When each webhook's filter last logged an error. Outlives reloads, so a failing filter logs at
/// most once a minute however often the configuration changes.
type FilterLogTimes = Arc<Mutex<HashMap<Arc<str>, Instant>>>;

/// How often a failing filter may log, per webhook.
const FILTER_LOG_EVERY: Duration = Duration::from_secs(60);

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
    last_filter_log: FilterLogTimes,
    /// `outbox.config_version` as of the snapshot this was loaded from (None: never loaded).
    version: Option<i64>,
}

impl LiveRouting {
    fn new(
        matcher: Matcher<Target>,
        last_filter_log: FilterLogTimes,
        version: Option<i64>,
    ) -> LiveRouting {
        LiveRouting {
            matcher,
            last_filter_log,
            version,
        }
    }

    /// Whether a filter error of `webhook` at `now` may be logged (and if so, notes that it was).
    fn log_due(&self, webhook: &str, now: Instant) -> bool {
        let mut last = self
            .last_filter_log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = last
            .get(webhook)
            .is_none_or(|t| now.saturating_duration_since(*t) >= FILTER_LOG_EVERY);
        if due {
            last.insert(webhook.into(), now);
        }
        due
    }

    fn filter_failed(&self, webhook: &str, event: &Event, error: &FilterError) {
        telemetry::filter_error(webhook);
        if self.log_due(webhook, Instant::now()) {
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
    fn config_version(&self) -> Option<i64> {
        self.version
    }

    fn route(&self, event: &Event, out: &mut Vec<Target>) {
        self.matcher.matches(
            event,
            |t| out.push(t.clone()),
            |name, e| self.filter_failed(name, event, e),
        );
    }
}

/// Compiled webhooks by row id, with the configuration each was compiled from.
type CompiledById = HashMap<i64, (WebhookSpec, Arc<Compiled>)>;

/// The live, compiled configuration, shared by the router and the sender.
pub struct Catalog {
    pub directory: Arc<ArcSwap<Directory>>,
    pub routing: ArcSwap<LiveRouting>,
    cache: Mutex<CompiledById>,
    last_filter_log: FilterLogTimes,
}

impl Default for Catalog {
    fn default() -> Self {
        let last_filter_log = FilterLogTimes::default();
        Catalog {
            directory: Arc::new(ArcSwap::from_pointee(Directory::default())),
            routing: ArcSwap::from_pointee(LiveRouting::new(
                Matcher::new(),
                last_filter_log.clone(),
                None,
            )),
            cache: Mutex::new(HashMap::new()),
            last_filter_log,
        }
    }
}

/// What a reload found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub valid: usize,
    pub invalid: usize,
}

/// The outcome of validating and compiling every row.
struct Verdicts {
    compiled: CompiledById,
    /// Rows whose stored `valid`/`error` must change: (id, valid, error).
    changes: Vec<(i64, bool, Option<String>)>,
    summary: Reloaded,
}

/// Validates and compiles every row, reusing `cache` for rows that did not change. Pure CPU work
/// (CEL and template compilation): callers run it off the async reactor.
fn judge(rows: Vec<WebhookRow>, cache: CompiledById) -> Verdicts {
    let mut out = Verdicts {
        compiled: HashMap::new(),
        changes: Vec::new(),
        summary: Reloaded::default(),
    };
    for row in rows {
        let result = match &row.spec {
            Err(reason) => Err(reason.clone()),
            Ok(spec) => match cache.get(&row.id) {
                // Unchanged rows keep their compiled form (and HTTP client), unless a
                // certificate file they were built from changed on disk.
                Some((cached_spec, compiled))
                    if cached_spec == spec && !compiled.endpoint.tls_files_changed() =>
                {
                    Ok(compiled.clone())
                }
                _ => compile(row.id, spec)
                    .map(Arc::new)
                    .map_err(|errs| describe_errors(&errs)),
            },
        };
        match result {
            Ok(compiled) => {
                out.summary.valid += 1;
                if !row.valid || row.error.is_some() {
                    out.changes.push((row.id, true, None));
                }
                if let Ok(spec) = row.spec {
                    out.compiled.insert(row.id, (spec, compiled));
                }
            }
            Err(reason) => {
                out.summary.invalid += 1;
                if row.valid || row.error.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(webhook = %row.name, error = %reason, "webhook is invalid and will not run until fixed");
                    out.changes.push((row.id, false, Some(reason)));
                }
            }
        }
    }
    out
}

impl Catalog {
    /// Loads, validates and compiles every webhook and relation, records validity in the table and
    /// swaps the new configuration in. Compilation runs on the blocking pool.
    pub async fn reload(&self, pool: &Pool) -> Result<Reloaded, Failure> {
        let mut client = pool.get().await?;
        // Webhooks, relations and the configuration version from one snapshot, so the version
        // says exactly which configuration this is.
        let snapshot = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let version: i64 = snapshot
            .query_one(
                "SELECT version FROM outbox.config_version WHERE id = 1",
                &[],
            )
            .await?
            .get(0);
        let rows = snapshot
            .query(
                &format!("SELECT {WEBHOOK_COLUMNS} FROM outbox.webhooks ORDER BY id"),
                &[],
            )
            .await?
            .iter()
            .map(webhook_row)
            .collect::<Result<Vec<_>, _>>()?;
        let relations: HashMap<(String, String), String> = snapshot
            .query("SELECT entity, name, query FROM outbox.relations", &[])
            .await?
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect();
        snapshot.commit().await?;

        let cache = std::mem::take(&mut *self.cache.lock().unwrap_or_else(|p| p.into_inner()));
        let verdicts = tokio::task::spawn_blocking(move || judge(rows, cache))
            .await
            .map_err(|e| Failure::runtime(format!("compiling webhooks failed: {e}")))?;
        for (id, valid, error) in &verdicts.changes {
            client
                .execute(
                    "UPDATE outbox.webhooks SET valid = $2, error = $3 WHERE id = $1",
                    &[id, valid, error],
                )
                .await?;
        }

        let mut matcher = Matcher::new();
        let mut endpoints = Vec::new();
        let mut ids: Vec<&i64> = verdicts.compiled.keys().collect();
        ids.sort();
        for id in ids {
            let (spec, c) = &verdicts.compiled[id];
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
        self.routing.store(Arc::new(LiveRouting::new(
            matcher,
            self.last_filter_log.clone(),
            Some(version),
        )));
        self.directory
            .store(Arc::new(Directory::new(endpoints, relations)));
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = verdicts.compiled;
        Ok(verdicts.summary)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> WebhookSpec {
        toml::from_str(&format!(
            "name = \"w\"\nevents = [\"*\"]\nurl = \"https://example.com/\"\n{extra}"
        ))
        .unwrap()
    }

    fn fields(extra: &str) -> Vec<String> {
        match compile(1, &spec(extra)) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn filter_errors_log_once_a_minute_per_webhook_across_reloads() {
        let times = FilterLogTimes::default();
        let routing = LiveRouting::new(Matcher::new(), times.clone(), None);
        let t0 = Instant::now();
        assert!(routing.log_due("a", t0));
        assert!(!routing.log_due("a", t0 + Duration::from_secs(59)));
        assert!(routing.log_due("b", t0 + Duration::from_secs(1)));
        // A reload builds a new routing that shares the times.
        let reloaded = LiveRouting::new(Matcher::new(), times, None);
        assert!(!reloaded.log_due("a", t0 + Duration::from_secs(30)));
        assert!(reloaded.log_due("a", t0 + Duration::from_secs(60)));
    }

    #[test]
    fn quoted_values_can_be_hidden() {
        assert_eq!(
            hide_quoted(r#"invalid type: string "whsec_x", expected a sequence"#),
            r#"invalid type: string "***", expected a sequence"#
        );
        assert_eq!(hide_quoted("no quotes"), "no quotes");
        assert_eq!(hide_quoted(r#"a "b" c "d"#), r#"a "***" c "d"#);
    }

    #[test]
    fn content_types_must_be_media_types() {
        for ok in [
            "application/json",
            "application/xml",
            "text/plain; charset=utf-8",
            "application/vnd.api+json",
        ] {
            assert!(is_media_type(ok), "{ok}");
        }
        for bad in ["json", "", "text/", "/plain", "text/plain\r\nX: y", "a b/c"] {
            assert!(!is_media_type(bad), "{bad}");
        }
        assert_eq!(fields("content_type = \"xml\""), ["content_type"]);
    }

    #[test]
    fn names_are_checked() {
        let mut s = spec("");
        s.name = " w".into();
        let errors = compile(1, &s).err().unwrap();
        assert_eq!(errors[0].field, "name");
        s.name = "a\nb".into();
        assert!(compile(1, &s).is_err());
        s.name = "x".repeat(201);
        assert!(compile(1, &s).is_err());
    }

    #[test]
    fn every_problem_of_a_webhook_is_reported() {
        let mut s = spec(
            "filter = \"event.(\"\ntimeout = \"soon\"\nmax_attempts = 0\ncontent_type = \"json\"",
        );
        s.events = vec!["a*".into()];
        let got: Vec<String> = compile(1, &s)
            .err()
            .unwrap()
            .into_iter()
            .map(|e| e.field)
            .collect();
        for field in [
            "events[0]",
            "filter",
            "timeout",
            "max_attempts",
            "content_type",
        ] {
            assert!(
                got.iter().any(|f| f == field),
                "{field} missing from {got:?}"
            );
        }
    }
}
