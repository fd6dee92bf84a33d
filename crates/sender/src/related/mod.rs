//! Related records for templates: `related.<name>` runs the `outbox.relations` query of the
//! event's entity with the event's `data` as `$1` (jsonb).
//!
//! Only the relations a webhook's templates reference are loaded (the renderer finds them at
//! compile time), once per attempt, shared by the URL, header and body templates. The sender
//! loads those of a whole claimed batch at once ([`load_batched`]): one statement per relation
//! for the whole batch, in a read-only transaction with a statement timeout; what cannot be
//! answered that way runs per event ([`load_many`]: one round trip, each event's queries in a
//! read-only transaction of its own), so one failing event fails only itself.
//!
//! A relation must return one row with one json/jsonb column (a NULL value is `none` in
//! templates). A relation that is not defined, fails, times out, returns no row or several rows
//! fails the attempt with a [`RelatedError`] naming the entity, the relation and the reason.
//!
//! Results are deliberately not cached across deliveries: every attempt sees the related record
//! as it is when the attempt is made, which is what a retry hours later must send.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all};
use outbox_core::Event;
use outbox_renderer::Templates;
use serde_json::{Map, Value};
use tokio_postgres::types::{ToSql, Type};

mod batch;

pub use batch::{Batching, load_batched};

/// Relation queries by (entity, name), as in `outbox.relations`.
pub type Relations = HashMap<(String, String), String>;

/// Why related records could not be loaded (recorded as the attempt's error, outcome
/// `render_error`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RelatedError {
    #[error(
        "related.{name} is used by a template but no relation {name:?} is defined for entity {entity:?}; add a [[relation]] with entity = {entity:?} and name = {name:?}"
    )]
    Undefined { entity: String, name: String },
    #[error("relation {name:?} of entity {entity:?} failed: {reason}")]
    Failed {
        entity: String,
        name: String,
        reason: String,
    },
    #[error(
        "relation {name:?} of entity {entity:?} returned no row for this event; the related record is missing (write the query as SELECT (SELECT ...) to get null instead)"
    )]
    NoRow { entity: String, name: String },
    #[error(
        "relation {name:?} of entity {entity:?} returned {rows} rows; it must return one (add LIMIT 1, or aggregate with jsonb_agg)"
    )]
    TooManyRows {
        entity: String,
        name: String,
        rows: usize,
    },
    #[error("cannot load related records: {reason}")]
    Database { reason: String },
}

/// The relations to load for `event`: those the templates name, or every relation of the
/// entity when a template uses `related` as a whole.
pub fn wanted(templates: &Templates, relations: &Relations, entity: &str) -> Vec<String> {
    let mut names: Vec<String> = templates.relations().to_vec();
    if templates.uses_every_relation() {
        for (e, name) in relations.keys() {
            if e == entity && !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names.sort();
    names
}

/// Every relation defined for `entity`, by name.
pub fn defined_for(relations: &Relations, entity: &str) -> Vec<String> {
    let mut names: Vec<String> = relations
        .keys()
        .filter(|(e, _)| e == entity)
        .map(|(_, n)| n.clone())
        .collect();
    names.sort();
    names
}

/// Runs the relation queries `names` of `event.entity`, read-only, each limited to `timeout`.
pub async fn load(
    client: &mut tokio_postgres::Client,
    relations: &Relations,
    names: &[String],
    event: &Event,
    timeout: Duration,
) -> Result<Map<String, Value>, RelatedError> {
    let lookup = Lookup { names, event };
    load_many(client, relations, std::slice::from_ref(&lookup), timeout)
        .await
        .pop()
        .unwrap_or_else(|| Ok(Map::new()))
}

/// The related records one event needs: the relations `names` of `event.entity`.
pub struct Lookup<'a> {
    pub names: &'a [String],
    pub event: &'a Event,
}

/// Loads the related records of many events at once: one round trip for all of them. Each event's
/// relations run in a read-only transaction of their own (pipelined: `BEGIN READ ONLY` with the
/// statement timeout, its queries, `ROLLBACK`), so one that fails or times out fails only its
/// event. Results are in the order of `lookups`.
pub async fn load_many(
    client: &tokio_postgres::Client,
    relations: &Relations,
    lookups: &[Lookup<'_>],
    timeout: Duration,
) -> Vec<Result<Map<String, Value>, RelatedError>> {
    // What each event runs, or why it cannot run.
    let plans: Vec<Result<Vec<(&String, &str)>, RelatedError>> = lookups
        .iter()
        .map(|lookup| {
            lookup
                .names
                .iter()
                .map(|name| {
                    relations
                        .get(&(lookup.event.entity.clone(), name.clone()))
                        .map(|query| (name, query.as_str()))
                        .ok_or_else(|| RelatedError::Undefined {
                            entity: lookup.event.entity.clone(),
                            name: name.clone(),
                        })
                })
                .collect()
        })
        .collect();
    let begin = begin_read_only(timeout);
    let datas: Vec<&(dyn ToSql + Sync)> = lookups
        .iter()
        .map(|l| &l.event.data as &(dyn ToSql + Sync))
        .collect();
    let params: Vec<[(&(dyn ToSql + Sync), Type); 1]> =
        datas.iter().map(|d| [(*d, Type::JSONB)]).collect();
    // Every statement is queued before any answer is awaited (one round trip), in this order:
    // per event, BEGIN, its queries, ROLLBACK. join_all polls its futures in order, so they are
    // sent in order.
    let mut steps: Vec<BoxFuture<'_, Step<'_>>> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let Ok(plan) = plan else { continue };
        if plan.is_empty() {
            continue;
        }
        let begin = client.batch_execute(&begin);
        steps.push(async move { Step::Begun(i, begin.await) }.boxed());
        for (name, query) in plan {
            let rows = client.query_typed(query, &params[i]);
            steps.push(async move { Step::Answered(i, name, rows.await) }.boxed());
        }
        let rollback = client.batch_execute("ROLLBACK");
        steps.push(
            async move {
                let _ = rollback.await;
                Step::RolledBack
            }
            .boxed(),
        );
    }
    let done = join_all(steps).await;

    let mut results: Vec<Result<Map<String, Value>, RelatedError>> = plans
        .into_iter()
        .map(|plan| plan.map(|_| Map::new()))
        .collect();
    for step in done {
        match step {
            Step::Begun(i, Err(e)) => {
                results[i] = Err(RelatedError::Database {
                    reason: outbox_core::db::describe(&e),
                })
            }
            Step::Answered(i, name, rows) => {
                let Ok(related) = &mut results[i] else {
                    continue; // this event already failed: the first error is the one to report
                };
                match one_value(&lookups[i].event.entity, name, rows, timeout) {
                    Ok(value) => {
                        related.insert(name.clone(), value);
                    }
                    Err(e) => results[i] = Err(e),
                }
            }
            Step::Begun(_, Ok(())) | Step::RolledBack => {}
        }
    }
    results
}

/// Opens the read-only transaction relation queries run in, limited to `timeout`.
fn begin_read_only(timeout: Duration) -> String {
    format!(
        "BEGIN READ ONLY; SET LOCAL statement_timeout = {}",
        timeout.as_millis().max(1)
    )
}

/// What one pipelined statement of [`load_many`] answered.
enum Step<'a> {
    Begun(usize, Result<(), tokio_postgres::Error>),
    Answered(
        usize,
        &'a String,
        Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
    ),
    /// The event's transaction is over. (Its answer is not needed: the ROLLBACK is queued with
    /// the rest of the pipeline, so it runs even when nobody waits for the answers any more.)
    RolledBack,
}

/// The one json value a relation query must return.
fn one_value(
    entity: &str,
    name: &str,
    rows: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
    timeout: Duration,
) -> Result<Value, RelatedError> {
    let failed = |reason: String| RelatedError::Failed {
        entity: entity.to_string(),
        name: name.to_string(),
        reason,
    };
    let rows = rows.map_err(|e| failed(describe_query_error(&e, timeout)))?;
    let row = match rows.as_slice() {
        [row] => row,
        [] => {
            return Err(RelatedError::NoRow {
                entity: entity.to_string(),
                name: name.to_string(),
            });
        }
        more => {
            return Err(RelatedError::TooManyRows {
                entity: entity.to_string(),
                name: name.to_string(),
                rows: more.len(),
            });
        }
    };
    if row.len() != 1 {
        return Err(failed(format!(
            "it returned {} columns; it must return one json or jsonb value",
            row.len()
        )));
    }
    let value: Option<Value> = row.try_get(0).map_err(|_| {
        failed(format!(
            "it returned a column of type {}; it must return json or jsonb (wrap it in to_jsonb(...))",
            row.columns()[0].type_()
        ))
    })?;
    Ok(value.unwrap_or(Value::Null))
}

fn describe_query_error(e: &tokio_postgres::Error, timeout: Duration) -> String {
    let text = outbox_core::db::describe(e);
    if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
        format!("{text} (the relation statement timeout is {timeout:?})")
    } else {
        text
    }
}
