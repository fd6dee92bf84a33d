use std::collections::HashSet;
use std::sync::Arc;

use deadpool_postgres::Pool;
use outbox_core::{Event, sql, telemetry};

use crate::Error;
use crate::listen::CHANNEL_DELIVERIES;
use crate::plan::{Plan, plan_deliveries};
use crate::write::{Unroutable, Writing, set_aside, write_deliveries};

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
    /// Events set aside as unroutable (listed in `outbox.unroutable_events`).
    pub unroutable: usize,
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
    ///
    /// One bad event never holds up the page: an event whose row cannot be read, that shares its
    /// id with another, whose matching panics, or whose deliveries the database refuses (found by
    /// writing the page again in halves, see [`crate::write`]) is set aside in
    /// `outbox.unroutable_events` with its reason, and the rest is routed.
    pub async fn route_page(
        &self,
        routing: Arc<dyn Routing>,
    ) -> Result<Option<PageOutcome>, Error> {
        match self
            .route_page_with(routing.clone(), Writing::Whole)
            .await?
        {
            Routed::Done(outcome) => Ok(outcome),
            // Some row of the page was refused; the transaction rolled back. Route the same page
            // again, writing it in parts until the rows to blame are found.
            Routed::Refused => match self.route_page_with(routing, Writing::Isolating).await? {
                Routed::Done(outcome) => Ok(outcome),
                Routed::Refused => Err(Error::Routing(
                    "the database refused a page of deliveries even when written in parts".into(),
                )),
            },
        }
    }

    async fn route_page_with(
        &self,
        routing: Arc<dyn Routing>,
        writing: Writing,
    ) -> Result<Routed, Error> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let lock = tx.prepare_cached(sql::ROUTE_LOCK).await?;
        let Some(cursor) = tx.query_opt(&lock, &[]).await? else {
            return Ok(Routed::Done(None));
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
                    return Ok(Routed::Done(Some(PageOutcome {
                        stale_config: true,
                        more: true,
                        ..PageOutcome::default()
                    })));
                }
            }
        }
        let (events, mut unroutable) = decode_page(&rows);

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
        for (i, reason) in &plan.panicked {
            unroutable.push(Unroutable::of(&events[*i], reason.clone()));
        }
        let mut outcome = PageOutcome {
            events: rows.len(),
            coalesced: plan.folded,
            ..PageOutcome::default()
        };
        let Some(written) = write_deliveries(&tx, &plan, &events, writing).await? else {
            return Ok(Routed::Refused);
        };
        outcome.created = written.created;
        outcome.coalesced += written.coalesced;
        for (i, reason) in written.refused {
            unroutable.push(Unroutable::of(&events[i], reason));
        }
        // Other relays' senders learn of new deliveries from a NOTIFY, at most ten times a
        // second: they poll anyway, and every NOTIFY serialises this commit with every other
        // NOTIFYing commit. This relay's own sender is woken directly by the caller.
        if outcome.created > 0 && self.notify_due() {
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL_DELIVERIES])
                .await?;
        }
        if !unroutable.is_empty() {
            set_aside(&tx, &unroutable).await?;
            outcome.unroutable = unroutable.len();
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
        for (name, n) in written.created_by_webhook.values() {
            telemetry::deliveries_created(name, *n);
        }
        if !unroutable.is_empty() {
            telemetry::events_unroutable(unroutable.len() as u64);
            for u in unroutable.iter().take(10) {
                tracing::warn!(
                    event_id = u.event_id,
                    event_type = %u.event_type,
                    reason = %u.reason,
                    "set an event aside as unroutable; every other event keeps flowing (see `outbox-relay events unrouted`)"
                );
            }
            if unroutable.len() > 10 {
                tracing::warn!(
                    more = unroutable.len() - 10,
                    "set more events of this page aside as unroutable"
                );
            }
        }
        Ok(Routed::Done(Some(outcome)))
    }
}

/// What one try at routing a page came to.
enum Routed {
    /// Routed (or nothing to do: `None` when another relay holds the cursor).
    Done(Option<PageOutcome>),
    /// Writing the page whole was refused because of some row; nothing was committed.
    Refused,
}

/// Reads the page's events. Rows that cannot be read, and every later row reusing an event id
/// already in the page, are returned to be set aside instead.
fn decode_page(rows: &[tokio_postgres::Row]) -> (Vec<Event>, Vec<Unroutable>) {
    let mut events = Vec::with_capacity(rows.len());
    let mut unroutable = Vec::new();
    let mut ids = HashSet::with_capacity(rows.len());
    for row in rows {
        match Event::from_row(row, 0) {
            Ok(event) if ids.insert(event.id) => events.push(event),
            Ok(event) => unroutable.push(Unroutable::of(
                &event,
                format!(
                    "another event has the same id {}; event ids must be unique (an INSERT that supplied its own id, e.g. with OVERRIDING SYSTEM VALUE, bypassed the sequence)",
                    event.id
                ),
            )),
            Err(e) => unroutable.push(Unroutable::from_row(row, e.to_string())),
        }
    }
    (events, unroutable)
}
