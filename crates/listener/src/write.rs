//! Writing a page's deliveries, and setting aside the events that cannot be routed.
//!
//! A page's deliveries go into `outbox.deliveries` with one statement. When the database refuses
//! it because of some row's data (a duplicate `(event_id, webhook_id)` from a reused event id, an
//! `entity_id` too long for an index, ...), the page is written again in halves, each under a
//! savepoint, until the events to blame are found; those are set aside and the rest is routed. A
//! refusal that is not about data (connection, lock, timeout, privilege) is returned: the page is
//! retried whole later, and nothing is set aside for a fault that is not the event's.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use deadpool_postgres::Transaction;
use outbox_core::{Event, sql};

use crate::Error;
use crate::plan::{Plan, PlannedRow};

/// How a page's deliveries are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writing {
    /// One statement; a refusal because of some row fails the page (the common, cheap case).
    Whole,
    /// Under savepoints, halving what is refused until the events to blame are found.
    Isolating,
}

/// What writing a page did.
#[derive(Default)]
pub(crate) struct Written {
    pub created: usize,
    pub coalesced: usize,
    /// Deliveries created per webhook id: (name, count).
    pub created_by_webhook: HashMap<i64, (Arc<str>, u64)>,
    /// Events whose deliveries the database refused: index in the page, and why.
    pub refused: Vec<(usize, String)>,
}

/// An event set aside, and why.
#[derive(Debug, Clone)]
pub(crate) struct Unroutable {
    pub event_id: i64,
    pub event_type: String,
    pub entity: String,
    pub entity_id: String,
    pub reason: String,
}

impl Unroutable {
    pub fn of(event: &Event, reason: String) -> Unroutable {
        Unroutable {
            event_id: event.id,
            event_type: event.event_type.clone(),
            entity: event.entity.clone(),
            entity_id: event.entity_id.clone(),
            reason: format!("cannot route event {}: {reason}", event.id),
        }
    }

    /// From an event row that could not be read as a whole: whatever of it can be.
    pub fn from_row(row: &tokio_postgres::Row, reason: String) -> Unroutable {
        let text = |i: usize| {
            row.try_get::<_, String>(i)
                .unwrap_or_else(|_| "(unreadable)".into())
        };
        let event_id = row.try_get::<_, i64>(0).unwrap_or_default();
        Unroutable {
            event_id,
            event_type: text(1),
            entity: text(2),
            entity_id: text(3),
            reason: format!("cannot route event {event_id}: {reason}"),
        }
    }
}

/// Writes the planned deliveries. With [`Writing::Whole`], returns `None` when the database
/// refused some row's data: the transaction is then aborted and the caller starts over with
/// [`Writing::Isolating`].
pub(crate) async fn write_deliveries(
    tx: &Transaction<'_>,
    plan: &Plan,
    events: &[Event],
    writing: Writing,
) -> Result<Option<Written>, Error> {
    let mut written = Written::default();
    if plan.rows.is_empty() {
        return Ok(Some(written));
    }
    match writing {
        Writing::Whole => match insert(tx, &plan.rows, events).await {
            Ok(result) => count(&mut written, &plan.rows, &result)?,
            Err(e) if outbox_core::db::is_data_error(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        },
        Writing::Isolating => {
            // Ranges of rows still to write, first half on top so rows go in event order.
            let mut todo: Vec<Range<usize>> = Vec::new();
            todo.push(0..plan.rows.len());
            while let Some(range) = todo.pop() {
                let rows = &plan.rows[range.clone()];
                tx.batch_execute("SAVEPOINT route_rows").await?;
                match insert(tx, rows, events).await {
                    Ok(result) => {
                        tx.batch_execute("RELEASE SAVEPOINT route_rows").await?;
                        count(&mut written, rows, &result)?;
                    }
                    Err(e) if outbox_core::db::is_data_error(&e) => {
                        tx.batch_execute(
                            "ROLLBACK TO SAVEPOINT route_rows; RELEASE SAVEPOINT route_rows",
                        )
                        .await?;
                        match split(&plan.rows, range) {
                            Some((first, second)) => {
                                todo.push(second);
                                todo.push(first);
                            }
                            None => written.refused.push((
                                rows[0].event,
                                format!(
                                    "the database refused its deliveries: {}",
                                    outbox_core::db::describe(&e)
                                ),
                            )),
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(Some(written))
}

/// `range` cut in two at the event boundary nearest its middle, or `None` when all its rows
/// belong to one event.
fn split(rows: &[PlannedRow], range: Range<usize>) -> Option<(Range<usize>, Range<usize>)> {
    let first_event = rows[range.start].event;
    if rows[range.clone()].iter().all(|r| r.event == first_event) {
        return None;
    }
    let mut mid = range.start + range.len() / 2;
    while mid > range.start && rows[mid].event == rows[mid - 1].event {
        mid -= 1;
    }
    if mid == range.start {
        // The first event's rows reach past the middle: cut right after them.
        mid = range.start + 1;
        while rows[mid].event == first_event {
            mid += 1;
        }
    }
    Some((range.start..mid, mid..range.end))
}

async fn insert(
    tx: &Transaction<'_>,
    rows: &[PlannedRow],
    events: &[Event],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let event = |r: &PlannedRow| &events[r.event];
    let webhook_ids: Vec<i64> = rows.iter().map(|r| r.target.webhook_id).collect();
    let webhooks: Vec<&str> = rows.iter().map(|r| &*r.target.webhook).collect();
    let event_ids: Vec<i64> = rows.iter().map(|r| event(r).id).collect();
    let types: Vec<&str> = rows.iter().map(|r| event(r).event_type.as_str()).collect();
    let entities: Vec<&str> = rows.iter().map(|r| event(r).entity.as_str()).collect();
    let entity_ids: Vec<&str> = rows.iter().map(|r| event(r).entity_id.as_str()).collect();
    let priorities: Vec<i32> = rows.iter().map(|r| r.target.priority).collect();
    let coalescing: Vec<bool> = rows.iter().map(|r| r.target.coalesce).collect();
    let ordered: Vec<bool> = rows.iter().map(|r| r.target.ordered).collect();
    let folded: Vec<i32> = rows.iter().map(|r| r.folded).collect();
    let first_of_key: Vec<bool> = rows.iter().map(|r| r.first_of_key).collect();
    let statement = tx.prepare_cached(sql::ROUTE_INSERT).await?;
    tx.query(
        &statement,
        &[
            &webhook_ids,
            &webhooks,
            &event_ids,
            &types,
            &entities,
            &entity_ids,
            &priorities,
            &coalescing,
            &ordered,
            &folded,
            &first_of_key,
        ],
    )
    .await
}

/// Adds what one insert returned (a row per delivery: webhook id, created or coalesced).
fn count(
    written: &mut Written,
    rows: &[PlannedRow],
    result: &[tokio_postgres::Row],
) -> Result<(), Error> {
    let names: HashMap<i64, &Arc<str>> = rows
        .iter()
        .map(|r| (r.target.webhook_id, &r.target.webhook))
        .collect();
    for row in result {
        let webhook_id: i64 = row.try_get(0)?;
        if row.try_get::<_, bool>(1)? {
            written.created += 1;
            if let Some(name) = names.get(&webhook_id) {
                written
                    .created_by_webhook
                    .entry(webhook_id)
                    .or_insert_with(|| ((*name).clone(), 0))
                    .1 += 1;
            }
        } else {
            written.coalesced += 1;
        }
    }
    Ok(())
}

/// Records events as unroutable and raises `relay.event.unroutable` for each, in `tx`.
pub(crate) async fn set_aside(tx: &Transaction<'_>, events: &[Unroutable]) -> Result<(), Error> {
    let mut seen = HashSet::new();
    let unique: Vec<&Unroutable> = events.iter().filter(|u| seen.insert(u.event_id)).collect();
    let ids: Vec<i64> = unique.iter().map(|u| u.event_id).collect();
    let types: Vec<&str> = unique.iter().map(|u| u.event_type.as_str()).collect();
    let entities: Vec<&str> = unique.iter().map(|u| u.entity.as_str()).collect();
    let entity_ids: Vec<&str> = unique.iter().map(|u| u.entity_id.as_str()).collect();
    let reasons: Vec<&str> = unique.iter().map(|u| u.reason.as_str()).collect();
    let statement = tx.prepare_cached(sql::SET_ASIDE).await?;
    tx.execute(
        &statement,
        &[&ids, &types, &entities, &entity_ids, &reasons],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Target;

    fn rows(events: &[usize]) -> Vec<PlannedRow> {
        events
            .iter()
            .map(|&event| PlannedRow {
                event,
                target: Target {
                    webhook_id: 1,
                    webhook: "w".into(),
                    priority: 0,
                    coalesce: false,
                    ordered: false,
                },
                folded: 0,
                first_of_key: true,
            })
            .collect()
    }

    #[test]
    fn pages_are_split_between_events_never_inside_one() {
        let r = rows(&[0, 0, 1, 1, 1, 2]);
        assert_eq!(split(&r, 0..6), Some((0..2, 2..6)));
        assert_eq!(split(&r, 2..6), Some((2..5, 5..6)));
        assert_eq!(split(&r, 2..5), None);
        let r = rows(&[0, 0, 0, 0, 1]);
        assert_eq!(split(&r, 0..5), Some((0..4, 4..5)));
        assert_eq!(split(&r, 4..5), None);
    }
}
