use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use outbox_core::{Event, sql, telemetry};

use crate::Error;
use crate::listen::CHANNEL_DELIVERIES;

/// A webhook an event is routed to, with the webhook settings that shape its delivery row.
#[derive(Debug, Clone)]
pub struct Target {
    pub webhook_id: i64,
    pub webhook: Arc<str>,
    pub priority: i32,
    pub coalesce: bool,
    pub ordered: bool,
}

/// Decides where events go. Implemented by the binary from the matcher and the live configuration.
pub trait Routing: Send + Sync {
    /// Appends to `out` every webhook `event` must be delivered to.
    fn route(&self, event: &Event, out: &mut Vec<Target>);

    /// The `outbox.config_version` this routing was built from, if it tracks one. A page whose
    /// events were read together with a newer version is not routed: the router reports
    /// [`PageOutcome::stale_config`] and changes nothing, so the caller can reload first.
    fn config_version(&self) -> Option<i64> {
        None
    }
}

/// What one routed page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageOutcome {
    /// Events routed (whether or not any webhook wanted them).
    pub events: usize,
    /// Delivery rows created.
    pub created: usize,
    /// Events folded into an existing delivery (coalescing webhooks).
    pub coalesced: usize,
    /// There may be more to route right away.
    pub more: bool,
    /// The configuration changed since `routing` was built; nothing was routed. Reload and retry.
    pub stale_config: bool,
    /// This page found nothing and switched producers back to NOTIFY: events committed by
    /// transactions that started before the switch may still arrive without a notification, so
    /// the caller should look again shortly.
    pub went_idle: bool,
}

/// Routes committed events into deliveries, one page per transaction.
pub struct Router {
    pool: Pool,
    page_size: i64,
    /// Whether to ask producers to NOTIFY while this router is idle (`notify = on`).
    producer_notify: bool,
    last_notify: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Router {
    /// `pool` should be the relay's own pool, whose sessions run with `synchronous_commit = off`
    /// (see `outbox_core::db::relay_pool`): a server crash may then lose the last page's commit,
    /// which is simply routed again, since its deliveries were lost with it.
    pub fn new(pool: Pool, page_size: usize) -> Router {
        Router {
            pool,
            page_size: page_size.max(1) as i64,
            producer_notify: true,
            last_notify: std::sync::Mutex::new(None),
        }
    }

    /// With `false` (`notify = off`), the router never asks producers to NOTIFY: the relay then
    /// finds new events by polling alone.
    pub fn with_producer_notify(mut self, on: bool) -> Router {
        self.producer_notify = on;
        self
    }

    /// Whether to NOTIFY other relays about new deliveries now (at most every 100 ms).
    fn notify_due(&self) -> bool {
        let mut last = self.last_notify.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < std::time::Duration::from_millis(100)) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Routes the next page of committed events. Returns `None` when another relay holds the
    /// routing cursor right now.
    ///
    /// Matching (patterns and CEL filters) runs on tokio's blocking pool, so however costly the
    /// filters of a page are, they never hold up the async reactor that the sender, the listener
    /// and the HTTP endpoint share.
    pub async fn route_page(
        &self,
        routing: Arc<dyn Routing>,
    ) -> Result<Option<PageOutcome>, Error> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let lock = tx.prepare_cached(sql::ROUTE_LOCK).await?;
        let Some(cursor) = tx.query_opt(&lock, &[]).await? else {
            return Ok(None);
        };
        let cursor_txid: String = cursor.try_get(0)?;
        let cursor_id: i64 = cursor.try_get(1)?;
        let prev: String = cursor.try_get(2)?;
        let cur: String = cursor.try_get(3)?;
        let notify_wanted: bool = cursor.try_get(4)?;

        // The rest of the current window; if it runs short, the window is exhausted: open the next
        // one (everything committed up to now) and fill the page from it, so a wake-up routes what
        // was committed before it, not only what was committed before the previous one.
        let page_stmt = tx.prepare_cached(sql::ROUTE_PAGE).await?;
        let mut rows = tx
            .query(
                &page_stmt,
                &[&cursor_txid, &cursor_id, &self.page_size, &prev, &cur],
            )
            .await?;
        let mut cursor = None;
        let exhausted = (rows.len() as i64) < self.page_size;
        if exhausted {
            let advance = tx.prepare_cached(sql::ROUTE_ADVANCE).await?;
            let next = tx.query_one(&advance, &[]).await?;
            let (prev, cur): (String, String) = (next.try_get(0)?, next.try_get(1)?);
            let room = self.page_size - rows.len() as i64;
            let fresh = tx
                .query(&page_stmt, &[&"0", &0i64, &room, &prev, &cur])
                .await?;
            if let Some(last) = fresh.last() {
                cursor = Some((last.try_get::<_, String>(8)?, last.try_get::<_, i64>(0)?));
            }
            rows.extend(fresh);
        } else if let Some(last) = rows.last() {
            cursor = Some((last.try_get::<_, String>(8)?, last.try_get::<_, i64>(0)?));
        }
        if let Some(version) = routing.config_version() {
            for row in &rows {
                if row.try_get::<_, i64>(9)? != version {
                    // Dropping the transaction rolls back the window advance too.
                    return Ok(Some(PageOutcome {
                        stale_config: true,
                        more: true,
                        ..PageOutcome::default()
                    }));
                }
            }
        }
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            events.push(Event::from_row(row, 0)?);
        }

        let (events, plan) = if events.is_empty() {
            (events, Plan::default())
        } else {
            tokio::task::spawn_blocking(move || {
                let plan = plan_deliveries(&events, &*routing);
                (events, plan)
            })
            .await
            .map_err(|e| Error::Routing(e.to_string()))?
        };
        let mut outcome = PageOutcome {
            events: events.len(),
            coalesced: plan.folded,
            ..PageOutcome::default()
        };
        let mut created_by_webhook: HashMap<i64, (Arc<str>, u64)> = HashMap::new();
        if !plan.rows.is_empty() {
            let insert = tx.prepare_cached(sql::ROUTE_INSERT).await?;
            let p = &plan;
            let result = tx
                .query(
                    &insert,
                    &[
                        &p.col(|r| r.target.webhook_id),
                        &p.col(|r| &*r.target.webhook),
                        &p.col(|r| events[r.event].id),
                        &p.col(|r| events[r.event].event_type.as_str()),
                        &p.col(|r| events[r.event].entity.as_str()),
                        &p.col(|r| events[r.event].entity_id.as_str()),
                        &p.col(|r| r.target.priority),
                        &p.col(|r| r.target.coalesce),
                        &p.col(|r| r.target.ordered),
                        &p.col(|r| r.folded),
                        &p.col(|r| r.first_of_key),
                    ],
                )
                .await?;
            let names: HashMap<i64, &Arc<str>> = plan
                .rows
                .iter()
                .map(|r| (r.target.webhook_id, &r.target.webhook))
                .collect();
            for row in result {
                let webhook_id: i64 = row.try_get(0)?;
                if row.try_get::<_, bool>(1)? {
                    outcome.created += 1;
                    if let Some(name) = names.get(&webhook_id) {
                        created_by_webhook
                            .entry(webhook_id)
                            .or_insert_with(|| ((*name).clone(), 0))
                            .1 += 1;
                    }
                } else {
                    outcome.coalesced += 1;
                }
            }
            // Other relays' senders learn of new deliveries from a NOTIFY, at most ten times a
            // second: they poll anyway, and every NOTIFY serialises this commit with every other
            // NOTIFYing commit. This relay's own sender is woken directly by the caller.
            if outcome.created > 0 && self.notify_due() {
                tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL_DELIVERIES])
                    .await?;
            }
        }

        if let Some((txid, id)) = &cursor {
            let save = tx.prepare_cached(sql::ROUTE_CURSOR).await?;
            tx.execute(&save, &[txid, id]).await?;
        }
        // Busy (this page had events): producers need not NOTIFY, the caller polls. Dry: ask for
        // notifications again before going to sleep (unless notify = off: then never).
        let want = rows.is_empty() && self.producer_notify;
        if want != notify_wanted {
            let flag = tx.prepare_cached(sql::ROUTE_NOTIFY).await?;
            tx.execute(&flag, &[&want]).await?;
        }
        outcome.went_idle = want && !notify_wanted;
        // A full page means there may be more; a short one means everything committed before this
        // transaction has been routed.
        outcome.more = rows.len() as i64 >= self.page_size;
        tx.commit().await?;

        telemetry::events_routed(outcome.events as u64);
        for (name, n) in created_by_webhook.values() {
            telemetry::deliveries_created(name, *n);
        }
        Ok(Some(outcome))
    }
}

/// One delivery row to write.
struct PlannedRow {
    event: usize,
    target: Target,
    /// Events of this page folded into this one (coalescing).
    folded: i32,
    /// First delivery of its (webhook, record) in this page (ordered webhooks park the rest).
    first_of_key: bool,
}

#[derive(Default)]
struct Plan {
    rows: Vec<PlannedRow>,
    folded: usize,
}

impl Plan {
    fn col<'a, T>(&'a self, f: impl Fn(&'a PlannedRow) -> T) -> Vec<T> {
        self.rows.iter().map(f).collect()
    }
}

/// Routes every event of the page, folds coalescing duplicates within the page into the newest
/// event of each record, and orders rows by event id so ordered webhooks see events in order.
fn plan_deliveries(events: &[Event], routing: &dyn Routing) -> Plan {
    let mut rows: Vec<PlannedRow> = Vec::new();
    let mut targets = Vec::new();
    for (i, event) in events.iter().enumerate() {
        targets.clear();
        routing.route(event, &mut targets);
        rows.extend(targets.drain(..).map(|target| PlannedRow {
            event: i,
            target,
            folded: 0,
            first_of_key: true,
        }));
    }
    rows.sort_by_key(|r| events[r.event].id);

    // Coalescing: keep the newest event per (webhook, record); count the ones it replaces.
    let mut folded = 0;
    let mut newest: HashMap<(i64, &str, &str), usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if r.target.coalesce {
            let e = &events[r.event];
            newest.insert((r.target.webhook_id, &e.entity, &e.entity_id), i);
        }
    }
    if !newest.is_empty() {
        let mut keep = vec![true; rows.len()];
        let mut extra: HashMap<usize, i32> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            if r.target.coalesce {
                let e = &events[r.event];
                let winner =
                    newest[&(r.target.webhook_id, e.entity.as_str(), e.entity_id.as_str())];
                if winner != i {
                    keep[i] = false;
                    *extra.entry(winner).or_default() += 1;
                    folded += 1;
                }
            }
        }
        for (winner, n) in extra {
            rows[winner].folded = n;
        }
        let mut i = 0;
        rows.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }

    // Ordered: only the first row of each (webhook, record) may be sendable right away.
    let mut seen: HashMap<(i64, &str, &str), ()> = HashMap::new();
    for r in rows.iter_mut() {
        if r.target.ordered {
            let e = &events[r.event];
            r.first_of_key = seen
                .insert((r.target.webhook_id, &e.entity, &e.entity_id), ())
                .is_none();
        }
    }
    Plan { rows, folded }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    struct All(Vec<Target>);
    impl Routing for All {
        fn route(&self, _event: &Event, out: &mut Vec<Target>) {
            out.extend(self.0.iter().cloned());
        }
    }

    fn event(id: i64, entity_id: &str) -> Event {
        Event {
            id,
            event_type: "order.updated".into(),
            entity: "order".into(),
            entity_id: entity_id.into(),
            data: serde_json::json!({}),
            old: None,
            metadata: serde_json::json!({}),
            created_at: Utc::now(),
        }
    }

    fn target(id: i64, coalesce: bool, ordered: bool) -> Target {
        Target {
            webhook_id: id,
            webhook: format!("w{id}").into(),
            priority: 0,
            coalesce,
            ordered,
        }
    }

    #[test]
    fn coalescing_keeps_the_newest_event_per_record() {
        let events = vec![event(3, "a"), event(1, "a"), event(2, "b"), event(4, "a")];
        let plan = plan_deliveries(&events, &All(vec![target(1, true, false)]));
        let kept: Vec<(i64, i32)> = plan
            .rows
            .iter()
            .map(|r| (events[r.event].id, r.folded))
            .collect();
        assert_eq!(kept, vec![(2, 0), (4, 2)]);
        assert_eq!(plan.folded, 2);
    }

    #[test]
    fn ordered_marks_only_the_first_of_each_record() {
        let events = vec![event(2, "a"), event(1, "a"), event(3, "b")];
        let plan = plan_deliveries(
            &events,
            &All(vec![target(1, false, true), target(2, false, false)]),
        );
        let marks: Vec<(i64, i64, bool)> = plan
            .rows
            .iter()
            .map(|r| (r.target.webhook_id, events[r.event].id, r.first_of_key))
            .collect();
        assert_eq!(
            marks,
            vec![
                (1, 1, true),
                (2, 1, true),
                (1, 2, false),
                (2, 2, true),
                (1, 3, true),
                (2, 3, true)
            ]
        );
    }
}
