//! Related records for templates: `related.<name>` runs the `outbox.relations` query of the
//! event's entity with the event's `data` as `$1` (jsonb).
//!
//! Only the relations a webhook's templates reference are loaded (the renderer finds them at
//! compile time), once per attempt, shared by the URL, header and body templates. They run in one
//! read-only transaction with a statement timeout, pipelined: `BEGIN`, then `SET LOCAL
//! statement_timeout` and every query in one round trip, and the rollback is not waited for.
//!
//! A relation must return one row with one json/jsonb column (a NULL value is `none` in
//! templates). A relation that is not defined, fails, times out, returns no row or several rows
//! fails the attempt with a [`RelatedError`] naming the entity, the relation and the reason.
//!
//! Results are deliberately not cached across deliveries: every attempt sees the related record
//! as it is when the attempt is made, which is what a retry hours later must send.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::{join, join_all};
use outbox_core::Event;
use outbox_renderer::Templates;
use serde_json::{Map, Value};
use tokio_postgres::types::{ToSql, Type};

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
    let mut related = Map::new();
    if names.is_empty() {
        return Ok(related);
    }
    let mut queries = Vec::with_capacity(names.len());
    for name in names {
        match relations.get(&(event.entity.clone(), name.clone())) {
            Some(query) => queries.push((name, query.as_str())),
            None => {
                return Err(RelatedError::Undefined {
                    entity: event.entity.clone(),
                    name: name.clone(),
                });
            }
        }
    }
    let database = |e: tokio_postgres::Error| RelatedError::Database {
        reason: outbox_core::db::describe(&e),
    };
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(database)?;
    let timeout_ms = timeout.as_millis().max(1);
    let data: &(dyn ToSql + Sync) = &event.data;
    let params = [(data, Type::JSONB)];
    // One round trip: the timeout is set before the queries run (requests are sent in order).
    let (set, results) = join(
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {timeout_ms}")),
        join_all(
            queries
                .iter()
                .map(|(_, query)| tx.query_typed(query, &params)),
        ),
    )
    .await;
    set.map_err(database)?;
    for ((name, _), result) in queries.iter().zip(results) {
        let failed = |reason: String| RelatedError::Failed {
            entity: event.entity.clone(),
            name: (*name).clone(),
            reason,
        };
        let rows = result.map_err(|e| failed(describe_query_error(&e, timeout)))?;
        let row = match rows.as_slice() {
            [row] => row,
            [] => {
                return Err(RelatedError::NoRow {
                    entity: event.entity.clone(),
                    name: (*name).clone(),
                });
            }
            more => {
                return Err(RelatedError::TooManyRows {
                    entity: event.entity.clone(),
                    name: (*name).clone(),
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
        related.insert((*name).clone(), value.unwrap_or(Value::Null));
    }
    // Dropping the transaction rolls it back without waiting for the answer.
    drop(tx);
    Ok(related)
}

fn describe_query_error(e: &tokio_postgres::Error, timeout: Duration) -> String {
    let text = outbox_core::db::describe(e);
    if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
        format!("{text} (the relation statement timeout is {timeout:?})")
    } else {
        text
    }
}
