//! Related records of a whole claimed batch with one statement per relation.
//!
//! A relation's query takes one event's `data` as `$1`. To run it for many events at once without
//! rewriting the user's SQL, the query becomes the body of a temporary SQL function on the lookup
//! connection (`pg_temp.outbox_relation_<hash of the query>(jsonb)`, created with `CREATE OR
//! REPLACE` the first time that connection needs it, so no statement ever fails for want of it;
//! temporary objects need only the database's default `TEMP` privilege), and the batch runs
//!
//! ```sql
//! SELECT d.i, r.found, r.v
//! FROM unnest($1::jsonb[]) WITH ORDINALITY AS d(data, i)
//! LEFT JOIN LATERAL (SELECT true AS found, v FROM pg_temp.outbox_relation_x(d.data) AS v) r ON true
//! ```
//!
//! in a read-only transaction of its own with the statement timeout. The function is `STABLE`, so
//! Postgres inlines a plain `SELECT` body into the batch statement and plans it as one join.
//!
//! Whatever the batch statement cannot answer as a whole — the query does not return one json or
//! jsonb column, cannot become a function, or fails or times out for the batch — is loaded event by
//! event the old way ([`super::load_many`]), so every event gets exactly the result (or the error)
//! it would have got on its own. A query that cannot become a function is remembered for a while
//! so later batches do not try again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all};
use serde_json::{Map, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use super::{Lookup, RelatedError, Relations, load_many};

/// How long a query that could not become a function is loaded event by event before trying again
/// (its tables may appear, its privileges change).
const RETRY_UNBATCHABLE: Duration = Duration::from_secs(60);

/// What the relay remembers between batches: the relation queries that cannot be batched, and
/// which connection has which function already (so a batch never fails on a missing one first:
/// a failed statement is an `ERROR` line in the Postgres log).
#[derive(Debug, Default)]
pub struct Batching {
    unbatchable: Mutex<HashMap<u64, Instant>>,
    /// (connection, query key) of the functions created.
    created: Mutex<HashSet<(u64, u64)>>,
}

impl Batching {
    fn is_created(&self, connection: u64, key: u64) -> bool {
        self.created
            .lock()
            .expect("created functions")
            .contains(&(connection, key))
    }

    fn mark_created(&self, connection: u64, key: u64) {
        self.created
            .lock()
            .expect("created functions")
            .insert((connection, key));
    }

    fn is_unbatchable(&self, key: u64) -> bool {
        let mut known = self.unbatchable.lock().expect("unbatchable relations");
        match known.get(&key) {
            Some(since) if since.elapsed() < RETRY_UNBATCHABLE => true,
            Some(_) => {
                known.remove(&key);
                false
            }
            None => false,
        }
    }

    fn mark_unbatchable(&self, key: u64) {
        self.unbatchable
            .lock()
            .expect("unbatchable relations")
            .insert(key, Instant::now());
    }
}

/// One relation of the batch and the events that need it.
struct Group<'a> {
    entity: &'a str,
    name: &'a String,
    query: &'a str,
    key: u64,
    /// Indexes into the lookups.
    events: Vec<usize>,
}

/// How a group's batch statement ended.
enum Ran {
    /// One result per event of the group, in its order.
    Answered(Vec<Result<Value, RelatedError>>),
    /// The function does not exist on this connection yet.
    NoFunction,
    /// Anything else: load its events one by one.
    Failed,
}

/// Loads the related records of many events with one statement per relation (see the module
/// documentation). Results are in the order of `lookups`, and equal to what [`load_many`] gives.
/// `connection` identifies the session of `client` (a pooled connection's id): the functions are
/// created once per session.
pub async fn load_batched(
    client: &tokio_postgres::Client,
    connection: u64,
    relations: &Relations,
    lookups: &[Lookup<'_>],
    timeout: Duration,
    batching: &Batching,
) -> Vec<Result<Map<String, Value>, RelatedError>> {
    let mut results: Vec<Result<Map<String, Value>, RelatedError>> = Vec::new();
    let mut groups: BTreeMap<(&str, &String), Group<'_>> = BTreeMap::new();
    for (i, lookup) in lookups.iter().enumerate() {
        let entity = lookup.event.entity.as_str();
        let mut queries = Vec::with_capacity(lookup.names.len());
        for name in lookup.names {
            match relations.get(&(entity.to_string(), name.clone())) {
                Some(query) => queries.push((name, query.as_str())),
                None => break,
            }
        }
        if queries.len() < lookup.names.len() {
            results.push(Err(RelatedError::Undefined {
                entity: entity.to_string(),
                name: lookup.names[queries.len()].clone(),
            }));
            continue;
        }
        results.push(Ok(Map::new()));
        for (name, query) in queries {
            groups
                .entry((entity, name))
                .or_insert_with(|| Group {
                    entity,
                    name,
                    query,
                    key: key_of(query),
                    events: Vec::new(),
                })
                .events
                .push(i);
        }
    }
    let groups: Vec<Group<'_>> = groups.into_values().collect();

    // Every group's statement in one round trip; a group whose function is missing on this
    // connection gets it and runs again; the rest of what failed goes event by event.
    let mut answers: Vec<Option<Vec<Result<Value, RelatedError>>>> = Vec::new();
    answers.resize_with(groups.len(), || None);
    let mut batchable: Vec<usize> = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        if batching.is_unbatchable(group.key) {
            continue;
        }
        if !batching.is_created(connection, group.key) {
            if !create_function(client, group).await {
                batching.mark_unbatchable(group.key);
                continue;
            }
            batching.mark_created(connection, group.key);
        }
        batchable.push(g);
    }
    let ran = run_groups(client, &groups, &batchable, lookups, timeout).await;
    for (g, ran) in batchable.into_iter().zip(ran) {
        answers[g] = match ran {
            Ran::Answered(values) => Some(values),
            Ran::Failed => None,
            Ran::NoFunction => {
                // Created before, but gone (a pooler that resets sessions): once more.
                if create_function(client, &groups[g]).await {
                    match run_groups(client, &groups, &[g], lookups, timeout)
                        .await
                        .pop()
                    {
                        Some(Ran::Answered(values)) => Some(values),
                        _ => None,
                    }
                } else {
                    batching.mark_unbatchable(groups[g].key);
                    None
                }
            }
        };
    }

    // Event by event for the groups left, all pipelined together.
    let owners: Vec<(usize, usize)> = groups
        .iter()
        .enumerate()
        .filter(|(g, _)| answers[*g].is_none())
        .flat_map(|(g, group)| group.events.iter().map(move |&i| (g, i)))
        .collect(); // (group, event) of each single lookup
    let singles: Vec<[String; 1]> = owners
        .iter()
        .map(|&(g, _)| [groups[g].name.clone()])
        .collect();
    if !owners.is_empty() {
        let single_lookups: Vec<Lookup<'_>> = owners
            .iter()
            .zip(&singles)
            .map(|(&(_, i), names)| Lookup {
                names: names.as_slice(),
                event: lookups[i].event,
            })
            .collect();
        let loaded = load_many(client, relations, &single_lookups, timeout).await;
        let mut per_group: HashMap<usize, Vec<Result<Value, RelatedError>>> = HashMap::new();
        for (&(g, _), result) in owners.iter().zip(loaded) {
            let name = groups[g].name;
            let value = result.map(|mut map| map.remove(name).unwrap_or(Value::Null));
            per_group.entry(g).or_default().push(value);
        }
        for (g, values) in per_group {
            answers[g] = Some(values);
        }
    }

    // Each event takes its relations' values in name order; the first error is the one reported,
    // as when its relations run one after the other.
    let mut outcomes: HashMap<(usize, &String), Result<Value, RelatedError>> = HashMap::new();
    for (group, values) in groups.iter().zip(answers) {
        for (&i, value) in group.events.iter().zip(values.unwrap_or_default()) {
            outcomes.insert((i, group.name), value);
        }
    }
    for (i, lookup) in lookups.iter().enumerate() {
        let Ok(related) = &mut results[i] else {
            continue;
        };
        for name in lookup.names {
            match outcomes.remove(&(i, name)) {
                Some(Ok(value)) => {
                    related.insert(name.clone(), value);
                }
                Some(Err(e)) => {
                    results[i] = Err(e);
                    break;
                }
                None => {
                    results[i] = Err(RelatedError::Database {
                        reason: format!("relation {name:?} was not loaded"),
                    });
                    break;
                }
            }
        }
    }
    results
}

/// What one pipelined statement of [`run_groups`] answered.
enum Step {
    Begun(usize, Result<(), tokio_postgres::Error>),
    Rows(
        usize,
        Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
    ),
    RolledBack,
}

/// Runs the batch statement of each group in `which`, all in one round trip, each in a read-only
/// transaction of its own with the statement timeout. One result per entry of `which`.
async fn run_groups(
    client: &tokio_postgres::Client,
    groups: &[Group<'_>],
    which: &[usize],
    lookups: &[Lookup<'_>],
    timeout: Duration,
) -> Vec<Ran> {
    let begin = super::begin_read_only(timeout);
    let statements: Vec<String> = which
        .iter()
        .map(|&g| {
            format!(
                "SELECT d.i, r.found, r.v FROM unnest($1::jsonb[]) WITH ORDINALITY AS d(data, i) \
                 LEFT JOIN LATERAL (SELECT true AS found, v FROM pg_temp.{}(d.data) AS v) r ON true",
                function_name(groups[g].key)
            )
        })
        .collect();
    let datas: Vec<Vec<&Value>> = which
        .iter()
        .map(|&g| {
            groups[g]
                .events
                .iter()
                .map(|&i| &lookups[i].event.data)
                .collect()
        })
        .collect();
    let params: Vec<[(&(dyn ToSql + Sync), Type); 1]> = datas
        .iter()
        .map(|d| [(d as &(dyn ToSql + Sync), Type::JSONB_ARRAY)])
        .collect();
    // Queued in order before any answer is awaited: join_all polls its futures in order.
    let mut steps: Vec<BoxFuture<'_, Step>> = Vec::new();
    for (k, statement) in statements.iter().enumerate() {
        let begin = client.batch_execute(&begin);
        steps.push(async move { Step::Begun(k, begin.await) }.boxed());
        let rows = client.query_typed(statement, &params[k]);
        steps.push(async move { Step::Rows(k, rows.await) }.boxed());
        let rollback = client.batch_execute("ROLLBACK");
        steps.push(
            async move {
                let _ = rollback.await;
                Step::RolledBack
            }
            .boxed(),
        );
    }
    let mut ran: Vec<Ran> = which.iter().map(|_| Ran::Failed).collect();
    let mut begun = vec![false; which.len()];
    for step in join_all(steps).await {
        match step {
            Step::Begun(k, result) => begun[k] = result.is_ok(),
            Step::Rows(k, _) if !begun[k] => {}
            Step::Rows(k, Ok(rows)) => {
                let group = &groups[which[k]];
                ran[k] =
                    answers(group, group.events.len(), &rows).map_or(Ran::Failed, Ran::Answered);
            }
            Step::Rows(k, Err(e)) => {
                // No such function yet, or no temporary schema yet on this connection.
                if e.code() == Some(&SqlState::UNDEFINED_FUNCTION)
                    || e.code() == Some(&SqlState::INVALID_SCHEMA_NAME)
                {
                    ran[k] = Ran::NoFunction;
                }
            }
            Step::RolledBack => {}
        }
    }
    ran
}

/// Each event's value from the batch statement's rows (`i`, `found`, `v`), judged as one event's
/// rows are: no row, one row, or too many. `None` if the rows are not what the statement returns.
fn answers(
    group: &Group<'_>,
    events: usize,
    rows: &[tokio_postgres::Row],
) -> Option<Vec<Result<Value, RelatedError>>> {
    let mut found = vec![0usize; events];
    let mut values: Vec<Option<Value>> = vec![None; events];
    for row in rows {
        let i: i64 = row.try_get(0).ok()?;
        let slot = usize::try_from(i)
            .ok()?
            .checked_sub(1)
            .filter(|&s| s < events)?;
        let hit: Option<bool> = row.try_get(1).ok()?;
        if hit == Some(true) {
            found[slot] += 1;
            let value: Option<Value> = row.try_get(2).ok()?;
            values[slot] = Some(value.unwrap_or(Value::Null));
        }
    }
    Some(
        found
            .into_iter()
            .zip(values)
            .map(|(found, value)| match found {
                0 => Err(RelatedError::NoRow {
                    entity: group.entity.to_string(),
                    name: group.name.clone(),
                }),
                1 => Ok(value.unwrap_or(Value::Null)),
                rows => Err(RelatedError::TooManyRows {
                    entity: group.entity.to_string(),
                    name: group.name.clone(),
                    rows,
                }),
            })
            .collect(),
    )
}

/// Creates the group's function on this connection. False when its query cannot be one: it does
/// not take one jsonb and return one json or jsonb column, or Postgres refuses the function.
async fn create_function(client: &tokio_postgres::Client, group: &Group<'_>) -> bool {
    let Ok(statement) = client.prepare_typed(group.query, &[Type::JSONB]).await else {
        return false;
    };
    let returns = match statement.columns() {
        [column] if *column.type_() == Type::JSONB => "jsonb",
        [column] if *column.type_() == Type::JSON => "json",
        _ => return false,
    };
    if statement.params().len() != 1 {
        return false;
    }
    let name = function_name(group.key);
    let tag = format!("${name}$");
    if group.query.contains(&tag) {
        return false;
    }
    let create = format!(
        "CREATE OR REPLACE FUNCTION pg_temp.{name}(jsonb) RETURNS SETOF {returns} \
         LANGUAGE sql STABLE AS {tag}\n{}\n{tag}",
        group.query
    );
    let created = client.batch_execute(&create).await;
    if let Err(e) = &created {
        tracing::debug!(
            entity = group.entity,
            relation = %group.name,
            error = %outbox_core::db::describe(e),
            "relation cannot be loaded per batch; loading it per event"
        );
    }
    created.is_ok()
}

fn key_of(query: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    query.hash(&mut hasher);
    hasher.finish()
}

fn function_name(key: u64) -> String {
    format!("outbox_relation_{key:016x}")
}
