//! The live configuration: every webhook and relation loaded, validated and compiled into what
//! the router (patterns + filters) and the sender (endpoints) work from, swapped in atomically.
//! Rows that do not validate are marked `valid = false` with the reason and left out; every other
//! webhook keeps working. Compiled webhooks are reused when their row did not change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use deadpool_postgres::Pool;
use futures_util::TryStreamExt;
use outbox_core::{Event, WebhookSpec, telemetry};
use outbox_listener::{Routing, Target};
use outbox_matcher::{FilterError, Matcher};
use outbox_sender::Directory;

use crate::error::CatalogError;
use crate::row::{WEBHOOK_COLUMNS, WebhookRow, webhook_row};
use crate::validate::{Compiled, compile, describe_errors};

/// When each webhook's filter last logged an error. Outlives reloads, so a failing filter logs at
/// most once a minute however often the configuration changes.
type FilterLogTimes = Arc<Mutex<HashMap<Arc<str>, Instant>>>;

/// How often a failing filter may log, per webhook.
const FILTER_LOG_EVERY: Duration = Duration::from_secs(60);

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
    pub async fn reload(&self, pool: &Pool) -> Result<Reloaded, CatalogError> {
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
        // Streamed: each row's raw buffer is freed as soon as it is read, so 10,000 webhooks are
        // never held twice (raw and read) while the old configuration is still live.
        let statement = snapshot
            .prepare(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM outbox.webhooks ORDER BY id"
            ))
            .await?;
        let stream = snapshot
            .query_raw(&statement, std::iter::empty::<i32>())
            .await?;
        futures_util::pin_mut!(stream);
        let mut rows = Vec::new();
        while let Some(row) = stream.try_next().await? {
            rows.push(webhook_row(&row)?);
        }
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
            .map_err(|e| CatalogError::Compile(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
