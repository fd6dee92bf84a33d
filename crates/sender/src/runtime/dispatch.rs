//! The dispatcher: claims due deliveries and starts one attempt task per claimed delivery, within
//! the relay's `concurrency` and each webhook's `max_in_flight`.
//!
//! A claim is one statement (`sql/queries/claim.sql`) for every webhook with free slots. It
//! commits durably (the claim's WAL is flushed before the statement returns) before any request
//! is sent, so neither a relay crash nor a Postgres crash can forget a claim whose request went
//! out: a repeated attempt always carries a new attempt number.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use outbox_core::{Event, sql};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::attempt::{self, Claimed};
use super::limit::{Limit, Signal};
use super::lookups::{BatchLookup, Wanted};
use super::outcome::AttemptRecord;
use super::{Completion, Deadline, Shared};
use crate::Error;
use crate::policy::AttemptOutcome;
use crate::related;

/// What the dispatcher does after a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Claim again at once: more is due and there is room.
    Again,
    /// More may be due but slots are full: claim when a request finishes.
    WaitForCapacity,
    /// Nothing due: wait for a wake-up or the poll interval.
    Idle,
}

/// Up to this many sendable webhooks, every claim passes them all; beyond, only those with queued
/// work (one loose index scan first).
const PROBE_ALL_UP_TO: usize = 64;

/// How long the set of webhooks with queued work is reused by later claims. New work arrives with
/// a wake-up, which makes the next claim look again at once; this bounds how late work the
/// wake-ups do not announce (another relay's retries) is seen.
const QUEUED_REUSE: Duration = Duration::from_millis(50);

/// Requests in flight, and how many may be, per webhook id.
type InFlight = Arc<Mutex<HashMap<i64, Load>>>;

/// One webhook's requests in flight and its adaptive limit.
struct Load {
    busy: usize,
    limit: Limit,
    /// The last claim for this webhook stopped at its limit (more may have been due): answers
    /// count as the limit holding requests back, so it grows. Whether it held them back cannot be
    /// told from the requests in flight when an answer comes: a claim's requests are answered
    /// together, and all but the first answer see fewer in flight than the limit.
    held_back: bool,
}

/// Claims and starts attempts until `shutdown`; then waits for the attempts in flight and drops
/// `done`, so the completer drains and ends.
pub(crate) async fn run(
    shared: Arc<Shared>,
    done: mpsc::Sender<Completion>,
    shutdown: CancellationToken,
) {
    let concurrency = shared.options.concurrency.max(1);
    let mut d = Dispatcher {
        shared: shared.clone(),
        slots: Arc::new(Semaphore::new(concurrency)),
        in_flight: InFlight::default(),
        stopped_at: Vec::new(),
        queued: None,
        freed: Arc::new(Notify::new()),
        done,
        tasks: JoinSet::new(),
    };
    let mut failures = 0u32;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        while d.tasks.try_join_next().is_some() {}
        let next = match d.claim_round().await {
            Ok(next) => {
                failures = 0;
                next
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(error = %e, "claiming deliveries failed; retrying");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10)))) => {}
                }
                continue;
            }
        };
        if next == Next::Again {
            // More is due and there is room: claim again at once.
            tokio::task::yield_now().await;
            continue;
        }
        let blocked = next == Next::WaitForCapacity;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = shared.wakeup.notified() => d.queued = None,
            _ = d.freed.notified(), if blocked => {
                // Let a few more slots free up so the next claim is a batch, not a trickle.
                let want = (concurrency.min(shared.options.claim_batch) / 4).max(1);
                let deadline = tokio::time::Instant::now() + Duration::from_millis(2);
                while !d.room_for_a_batch(want) {
                    tokio::select! {
                        _ = d.freed.notified() => {}
                        _ = tokio::time::sleep_until(deadline) => break,
                    }
                }
            }
            _ = tokio::time::sleep(shared.options.poll_interval) => {}
        }
    }
    // Shutting down: no new claims; wait for what is in flight.
    while d.tasks.join_next().await.is_some() {}
}

struct Dispatcher {
    shared: Arc<Shared>,
    /// The webhooks the last claim stopped at (their limit, not the queue, ended their share).
    stopped_at: Vec<i64>,
    /// With many webhooks: those that had queued work when last looked (see [`QUEUED_REUSE`]).
    queued: Option<(HashSet<i64>, Instant)>,
    slots: Arc<Semaphore>,
    in_flight: InFlight,
    freed: Arc<Notify>,
    done: mpsc::Sender<Completion>,
    tasks: JoinSet<()>,
}

/// One webhook's share of a claim.
struct Want {
    /// Webhooks with no room left: not claimed for.
    at_limit: Vec<i64>,
    ids: Vec<i64>,
    limits: Vec<i32>,
    leases: Vec<f64>,
    priorities: Vec<i32>,
}

impl Dispatcher {
    /// Whether enough has finished for the next claim to be a batch: `global` of the relay's
    /// slots are free, and a webhook the last claim stopped at has a quarter of its limit free.
    /// Without the second, a webhook held by its own limit below the relay's concurrency would be
    /// claimed for one delivery at a time. Only the webhooks the claim stopped at are looked at,
    /// however many are configured.
    fn room_for_a_batch(&self, global: usize) -> bool {
        if self.slots.available_permits() < global {
            return false;
        }
        if self.stopped_at.is_empty() {
            return true;
        }
        let loads = self.in_flight.lock().expect("in-flight counts");
        self.stopped_at.iter().any(|id| {
            loads.get(id).is_none_or(|l| {
                let limit = l.limit.current();
                limit.saturating_sub(l.busy) >= (limit / 4).max(1)
            })
        })
    }

    /// Claims what fits and starts a task per delivery. Says what to do next.
    async fn claim_round(&mut self) -> Result<Next, Error> {
        let free = self
            .slots
            .available_permits()
            .min(self.shared.options.claim_batch);
        if free == 0 {
            return Ok(Next::WaitForCapacity);
        }
        let directory = self.shared.directory.load_full();
        let client = self.shared.pool.get().await?;
        // With many webhooks configured, claim only for those with queued work: the claim probes
        // every webhook it is given. The set is reused for a moment while claims keep finding work.
        let queued = if directory.sendable.len() > PROBE_ALL_UP_TO {
            match self.queued.take() {
                Some((ids, at)) if at.elapsed() < QUEUED_REUSE => Some((ids, at)),
                _ => {
                    let statement = client.prepare_cached(sql::QUEUED_WEBHOOKS).await?;
                    let rows = client.query(&statement, &[]).await?;
                    let ids = rows
                        .iter()
                        .map(|r| r.try_get(0))
                        .collect::<Result<HashSet<i64>, _>>()?;
                    Some((ids, Instant::now()))
                }
            }
        } else {
            None
        };
        let mut want = self.want(&directory, free, queued.as_ref().map(|(ids, _)| ids));
        self.stopped_at = std::mem::take(&mut want.at_limit);
        if want.ids.is_empty() {
            // Every webhook is at its max_in_flight (or none is active).
            let idle = directory.sendable.is_empty()
                || queued.as_ref().is_some_and(|(ids, _)| ids.is_empty());
            if !idle {
                self.queued = queued;
            }
            return Ok(if idle {
                Next::Idle
            } else {
                Next::WaitForCapacity
            });
        }
        let total = free as i64;
        // Read before the claim is sent: never later than the database's start of the lease.
        let claimed_at = Instant::now();
        let rows = {
            let claim = client.prepare_cached(sql::CLAIM).await?;
            client
                .query(
                    &claim,
                    &[
                        &want.ids,
                        &want.limits,
                        &want.leases,
                        &total,
                        &self.shared.owner,
                        &want.priorities,
                    ],
                )
                .await?
        };
        drop(client);

        let leases: HashMap<i64, f64> = want
            .ids
            .iter()
            .copied()
            .zip(want.leases.iter().copied())
            .collect();
        let concurrency = self.shared.options.concurrency.max(1);
        let mut per_webhook: HashMap<i64, i32> = HashMap::new();
        let mut batch = Vec::with_capacity(rows.len());
        for row in &rows {
            let webhook_id: i64 = row.try_get(1)?;
            *per_webhook.entry(webhook_id).or_default() += 1;
            let Some(endpoint) = directory.endpoints.get(&webhook_id).cloned() else {
                continue; // cannot happen: claims only name webhooks of this directory
            };
            let lease = Duration::from_secs_f64(leases.get(&webhook_id).copied().unwrap_or(0.0));
            let claimed = Claimed {
                delivery_id: row.try_get(0)?,
                attempt: row.try_get(2)?,
                attempts_base: row.try_get(3)?,
                event: Event::from_row(row, 4).map(Arc::new),
                event_created_at: row.try_get(11).unwrap_or_else(|_| Utc::now()),
                deadline: Deadline::new(claimed_at, lease, endpoint.timeout),
                related: None,
            };
            batch.push((endpoint, claimed));
        }
        // The related records of the whole batch, in one lookup its attempts share.
        let wanted: Vec<Wanted> = batch
            .iter()
            .filter_map(|(endpoint, claimed)| {
                let event = claimed.event.as_ref().ok()?;
                let names =
                    related::wanted(&endpoint.templates, &directory.relations, &event.entity);
                (!names.is_empty()).then(|| Wanted {
                    delivery_id: claimed.delivery_id,
                    names,
                    event: event.clone(),
                })
            })
            .collect();
        let needs: HashSet<i64> = wanted.iter().map(|w| w.delivery_id).collect();
        let lookup = BatchLookup::new(self.shared.clone(), directory.clone(), wanted);
        for (endpoint, mut claimed) in batch {
            if needs.contains(&claimed.delivery_id) {
                claimed.related = lookup.clone();
            }
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                break; // cannot happen: we claimed no more than the free slots
            };
            self.in_flight
                .lock()
                .expect("in-flight counts")
                .entry(endpoint.id)
                .or_insert_with(|| Load {
                    busy: 0,
                    limit: Limit::adaptive(ceiling(&endpoint, concurrency)),
                    held_back: false,
                })
                .busy += 1;
            let shared = self.shared.clone();
            let done = self.done.clone();
            let in_flight = self.in_flight.clone();
            let freed = self.freed.clone();
            self.tasks.spawn(async move {
                let completion = attempt::run(&shared, &endpoint, claimed).await;
                let signal = signal(&completion);
                shared.unrecorded.add(&completion);
                let _ = done.send(completion).await;
                drop(permit);
                if let Some(load) = in_flight
                    .lock()
                    .expect("in-flight counts")
                    .get_mut(&endpoint.id)
                {
                    // Whether the limit held requests back: the last claim stopped at it, or
                    // (judged now, this request still counted) the webhook is at it.
                    let busy = if load.held_back {
                        load.limit.current()
                    } else {
                        load.busy
                    };
                    load.busy = load.busy.saturating_sub(1);
                    load.limit.learn(signal, busy, Instant::now());
                }
                freed.notify_one();
            });
        }
        let at_limit_before = self.stopped_at.len();
        {
            let mut loads = self.in_flight.lock().expect("in-flight counts");
            for (id, room) in want.ids.iter().zip(&want.limits) {
                let filled = per_webhook.get(id).copied().unwrap_or(0) >= *room;
                if filled {
                    self.stopped_at.push(*id);
                }
                if let Some(load) = loads.get_mut(id) {
                    load.held_back = filled;
                }
            }
        }
        let filled_a_webhook = self.stopped_at.len() > at_limit_before;
        let next = if rows.len() as i64 >= total && self.slots.available_permits() > 0 {
            // The batch limit, not the queue, ended this claim.
            Next::Again
        } else if rows.len() as i64 >= total || filled_a_webhook {
            // Some webhook (or the whole relay) is at its limit and may have more due.
            Next::WaitForCapacity
        } else {
            Next::Idle
        };
        if next != Next::Idle {
            // Claims still find work: the next one may reuse the set of webhooks with work.
            self.queued = queued;
        }
        Ok(next)
    }

    /// Which webhooks to claim for, how many each, with which lease.
    fn want(
        &self,
        directory: &crate::endpoint::Directory,
        free: usize,
        queued: Option<&HashSet<i64>>,
    ) -> Want {
        let mut loads = self.in_flight.lock().expect("in-flight counts");
        let mut want = Want {
            at_limit: Vec::new(),
            ids: Vec::new(),
            limits: Vec::new(),
            leases: Vec::new(),
            priorities: Vec::new(),
        };
        let concurrency = self.shared.options.concurrency.max(1);
        // Those with queued work, in the order of `sendable` (highest priority first, then id):
        // visiting only them keeps this proportional to the work, not to the webhooks configured.
        let candidates: Vec<&Arc<crate::endpoint::Endpoint>> = match queued {
            Some(queued) => {
                let mut found: Vec<_> = queued
                    .iter()
                    .filter_map(|id| directory.endpoints.get(id))
                    .filter(|ep| ep.active)
                    .collect();
                found.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
                found
            }
            None => directory.sendable.iter().collect(),
        };
        for ep in candidates {
            let ceiling = ceiling(ep, concurrency);
            let load = loads.entry(ep.id).or_insert_with(|| Load {
                busy: 0,
                limit: Limit::adaptive(ceiling),
                held_back: false,
            });
            load.limit.set_ceiling(ceiling);
            let room = load.limit.current().saturating_sub(load.busy).min(free);
            if room == 0 {
                want.at_limit.push(ep.id);
                continue;
            }
            let lookups = if ep.templates.needs_related() {
                self.shared.options.relation_timeout
            } else {
                Duration::ZERO
            };
            want.ids.push(ep.id);
            want.limits.push(room as i32);
            want.leases.push(
                Deadline::lease_for(self.shared.options.lease, ep.timeout, lookups).as_secs_f64(),
            );
            want.priorities.push(ep.priority);
        }
        want
    }
}

/// The most requests a webhook may have in flight: its `max_in_flight`, else (adaptive) the
/// relay's `concurrency`.
fn ceiling(endpoint: &crate::endpoint::Endpoint, concurrency: usize) -> usize {
    endpoint
        .max_in_flight
        .unwrap_or(concurrency)
        .min(concurrency)
}

/// What an attempt says about its receiver's capacity.
fn signal(c: &Completion) -> Signal {
    let Some(AttemptRecord {
        outcome,
        http_status,
        duration_ms,
        ..
    }) = &c.record
    else {
        return Signal::Nothing;
    };
    let answered = Signal::Answered {
        rtt: Duration::from_millis(u64::try_from(*duration_ms).unwrap_or(0)),
    };
    match outcome {
        AttemptOutcome::Success => answered,
        AttemptOutcome::HttpError => match http_status {
            Some(429) | Some(500..) => Signal::Overloaded,
            _ => answered,
        },
        AttemptOutcome::Timeout | AttemptOutcome::ConnectError => Signal::Overloaded,
        AttemptOutcome::RenderError | AttemptOutcome::Refused => Signal::Nothing,
    }
}
