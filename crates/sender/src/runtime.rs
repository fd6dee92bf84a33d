use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use outbox_core::{Event, sql, telemetry};
use serde_json::{Map, Value};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Error;
use crate::endpoint::{Directory, Endpoint};
use crate::policy::{self, Outcome};
use crate::related;
use crate::request::{build_request, message_id};
use crate::transport::{Transport, TransportErrorKind};

/// Tuning of one relay's sender.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// Requests in flight at once, over all webhooks.
    pub concurrency: usize,
    /// Most deliveries claimed by one statement.
    pub claim_batch: usize,
    /// How often to look for due deliveries without a wake-up.
    pub poll_interval: Duration,
    /// How long a claim lives (at least the webhook's timeout plus 2 s, plus the relation timeout
    /// when its templates look up related records) before another relay may take it over.
    pub lease: Duration,
    /// Statement timeout of relation queries.
    pub relation_timeout: Duration,
}

impl Default for SenderOptions {
    fn default() -> Self {
        SenderOptions {
            concurrency: 256,
            claim_batch: 500,
            poll_interval: Duration::from_millis(500),
            lease: Duration::from_secs(60),
            relation_timeout: Duration::from_secs(5),
        }
    }
}

/// Claims, sends and records deliveries until shut down.
pub struct Sender {
    pool: Pool,
    directory: Arc<ArcSwap<Directory>>,
    transport: Arc<dyn Transport>,
    options: SenderOptions,
    owner: String,
    install_id: String,
    wakeup: Arc<Notify>,
}

/// Finished attempts waiting to be recorded, at most.
const COMPLETIONS_QUEUED: usize = 4096;

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

/// A claimed delivery.
struct Claimed {
    delivery_id: i64,
    webhook_id: i64,
    attempt: i32,
    attempts_base: i32,
    event: Event,
}

/// The result of one attempt, on its way to the completer.
struct Completion {
    delivery_id: i64,
    attempt: i32,
    next_state: &'static str,
    next_at: Option<DateTime<Utc>>,
    http_status: Option<i32>,
    error: Option<String>,
    response: Option<String>,
    started_at: DateTime<Utc>,
    duration_ms: i32,
    outcome: &'static str,
    webhook: Arc<str>,
    webhook_id: i64,
    event_created_at: DateTime<Utc>,
    /// 410 Gone: switch the webhook off.
    gone: bool,
}

impl Sender {
    /// `owner` names this relay in leases (and in the attempt log when its lease expires);
    /// `install_id` comes from `outbox.router` and goes into every `webhook-id`.
    pub fn new(
        pool: Pool,
        directory: Arc<ArcSwap<Directory>>,
        transport: Arc<dyn Transport>,
        options: SenderOptions,
        owner: String,
        install_id: String,
        wakeup: Arc<Notify>,
    ) -> Sender {
        Sender {
            pool,
            directory,
            transport,
            options,
            owner,
            install_id,
            wakeup,
        }
    }

    /// Runs until `shutdown`; then stops claiming, lets in-flight attempts finish (each bounded by
    /// its webhook's timeout), records them and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        // Bounded: if recording falls behind sending, senders wait (holding their slot) instead of
        // results piling up in memory.
        let (done_tx, done_rx) = mpsc::channel::<Completion>(COMPLETIONS_QUEUED);
        let completer = tokio::spawn(this.clone().complete_loop(done_rx));
        let rescuer_stop = CancellationToken::new();
        let rescuer = tokio::spawn(this.clone().rescue_loop(rescuer_stop.clone()));

        this.dispatch_loop(done_tx, shutdown).await;

        rescuer_stop.cancel();
        let _ = rescuer.await;
        // The dispatcher dropped its sender after every task finished: the completer drains and ends.
        let _ = completer.await;
    }

    async fn dispatch_loop(
        self: &Arc<Self>,
        done: mpsc::Sender<Completion>,
        shutdown: CancellationToken,
    ) {
        let concurrency = self.options.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let in_flight: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
        let freed = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        let mut failures = 0u32;

        loop {
            if shutdown.is_cancelled() {
                break;
            }
            while tasks.try_join_next().is_some() {}
            let next = match self
                .claim_round(&slots, &in_flight, &freed, &done, &mut tasks)
                .await
            {
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
                _ = self.wakeup.notified() => {}
                _ = freed.notified(), if blocked => {
                    // Let a few more slots free up so the next claim is a batch, not a trickle.
                    let want = (concurrency.min(self.options.claim_batch) / 4).max(1);
                    let deadline = tokio::time::Instant::now() + Duration::from_millis(2);
                    while slots.available_permits() < want {
                        tokio::select! {
                            _ = freed.notified() => {}
                            _ = tokio::time::sleep_until(deadline) => break,
                        }
                    }
                }
                _ = tokio::time::sleep(self.options.poll_interval) => {}
            }
        }
        // Shutting down: no new claims; wait for what is in flight.
        while tasks.join_next().await.is_some() {}
        drop(done);
    }

    /// Claims what fits and starts a task per delivery. Says what to do next.
    async fn claim_round(
        self: &Arc<Self>,
        slots: &Arc<Semaphore>,
        in_flight: &Arc<Mutex<HashMap<i64, usize>>>,
        freed: &Arc<Notify>,
        done: &mpsc::Sender<Completion>,
        tasks: &mut JoinSet<()>,
    ) -> Result<Next, Error> {
        let free = slots.available_permits().min(self.options.claim_batch);
        if free == 0 {
            return Ok(Next::WaitForCapacity);
        }
        let directory = self.directory.load_full();
        let (ids, limits, leases, priorities) = {
            let counts = in_flight.lock().expect("in-flight counts");
            let mut ids = Vec::new();
            let mut limits = Vec::new();
            let mut leases = Vec::new();
            let mut priorities = Vec::new();
            for ep in &directory.sendable {
                let busy = counts.get(&ep.id).copied().unwrap_or(0);
                let room = ep.max_in_flight.saturating_sub(busy).min(free);
                if room > 0 {
                    ids.push(ep.id);
                    limits.push(room as i32);
                    // A claim must outlive the attempt it covers: related-record lookups,
                    // the request itself, and a margin for recording the result.
                    let lookups = if !ep.templates.needs_related() {
                        Duration::ZERO
                    } else {
                        self.options.relation_timeout
                    };
                    let lease = self
                        .options
                        .lease
                        .max(ep.timeout + lookups + Duration::from_secs(2));
                    leases.push(lease.as_secs_f64());
                    priorities.push(ep.priority);
                }
            }
            (ids, limits, leases, priorities)
        };
        if ids.is_empty() {
            // Every webhook is at its max_in_flight (or none is active).
            return Ok(if directory.sendable.is_empty() {
                Next::Idle
            } else {
                Next::WaitForCapacity
            });
        }
        let client = self.pool.get().await?;
        let claim = client.prepare_cached(sql::CLAIM).await?;
        let total = free as i64;
        let rows = client
            .query(
                &claim,
                &[&ids, &limits, &leases, &total, &self.owner, &priorities],
            )
            .await?;
        drop(client);

        let mut per_webhook: HashMap<i64, i32> = HashMap::new();
        for row in &rows {
            let claimed = Claimed {
                delivery_id: row.try_get(0)?,
                webhook_id: row.try_get(1)?,
                attempt: row.try_get(2)?,
                attempts_base: row.try_get(3)?,
                event: Event::from_row(row, 4)?,
            };
            *per_webhook.entry(claimed.webhook_id).or_default() += 1;
            let Some(endpoint) = directory.endpoints.get(&claimed.webhook_id).cloned() else {
                continue; // cannot happen: claims only name webhooks of this directory
            };
            let permit = match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => break, // cannot happen: we claimed no more than the free slots
            };
            *in_flight
                .lock()
                .expect("in-flight counts")
                .entry(endpoint.id)
                .or_default() += 1;
            let this = self.clone();
            let directory = directory.clone();
            let done = done.clone();
            let in_flight = in_flight.clone();
            let freed = freed.clone();
            let span = tracing::info_span!(
                "attempt",
                webhook = %endpoint.name,
                delivery = claimed.delivery_id,
                attempt = claimed.attempt
            );
            tasks.spawn(async move {
                let completion = this
                    .attempt(&endpoint, &directory, claimed)
                    .instrument(span)
                    .await;
                let _ = done.send(completion).await;
                drop(permit);
                if let Some(n) = in_flight
                    .lock()
                    .expect("in-flight counts")
                    .get_mut(&endpoint.id)
                {
                    *n = n.saturating_sub(1);
                }
                freed.notify_one();
            });
        }
        let filled_a_webhook = ids
            .iter()
            .zip(&limits)
            .any(|(id, limit)| per_webhook.get(id).copied().unwrap_or(0) >= *limit);
        Ok(
            if rows.len() as i64 >= total && slots.available_permits() > 0 {
                // The batch limit, not the queue, ended this claim.
                Next::Again
            } else if rows.len() as i64 >= total || filled_a_webhook {
                // Some webhook (or the whole relay) is at its limit and may have more due.
                Next::WaitForCapacity
            } else {
                Next::Idle
            },
        )
    }

    /// One attempt: related records, render, sign, send, classify.
    async fn attempt(&self, endpoint: &Endpoint, directory: &Directory, c: Claimed) -> Completion {
        let started_at = Utc::now();
        let clock = Instant::now();
        let id = message_id(&self.install_id, c.delivery_id);
        let mut completion = Completion {
            delivery_id: c.delivery_id,
            attempt: c.attempt,
            next_state: "pending",
            next_at: None,
            http_status: None,
            error: None,
            response: None,
            started_at,
            duration_ms: 0,
            outcome: Outcome::Success.label(),
            webhook: endpoint.name.clone(),
            webhook_id: endpoint.id,
            event_created_at: c.event.created_at,
            gone: false,
        };

        let mut retry_after = None;
        let outcome = match self.load_related(endpoint, directory, &c.event).await {
            Err(message) => {
                completion.error = Some(message);
                Outcome::RenderError
            }
            Ok(related) => {
                let timestamp = Utc::now().timestamp();
                match build_request(
                    endpoint,
                    &c.event,
                    c.delivery_id,
                    c.attempt,
                    &id,
                    timestamp,
                    &related,
                ) {
                    Err(e) => {
                        completion.error = Some(e.to_string());
                        Outcome::RenderError
                    }
                    Ok(request) => match self.transport.send(request).await {
                        Ok(response) => {
                            completion.http_status = Some(i32::from(response.status));
                            completion.response = Some(response.body);
                            if (200..300).contains(&response.status) {
                                Outcome::Success
                            } else {
                                completion.error = Some(status_error(response.status));
                                if response.status == 410 {
                                    completion.gone = true;
                                }
                                if matches!(response.status, 429 | 503) {
                                    retry_after = response.retry_after.as_deref().and_then(|v| {
                                        policy::retry_after(
                                            v,
                                            &endpoint.schedule,
                                            SystemTime::now(),
                                        )
                                    });
                                }
                                Outcome::HttpError
                            }
                        }
                        Err(e) => {
                            completion.error = Some(e.message);
                            match e.kind {
                                TransportErrorKind::Timeout => Outcome::Timeout,
                                TransportErrorKind::Connect => Outcome::ConnectError,
                                TransportErrorKind::Refused => Outcome::Refused,
                            }
                        }
                    },
                }
            }
        };

        let elapsed = clock.elapsed();
        completion.duration_ms = elapsed.as_millis().min(i32::MAX as u128) as i32;
        completion.outcome = outcome.label();
        telemetry::attempt_finished(&endpoint.name, outcome.label(), elapsed.as_secs_f64());

        let used = c.attempt - c.attempts_base;
        if outcome == Outcome::Success {
            completion.next_state = "succeeded";
        } else if used >= endpoint.max_attempts {
            completion.next_state = "dead";
        } else {
            let delay =
                retry_after.unwrap_or_else(|| policy::retry_delay(&endpoint.schedule, used));
            completion.next_at =
                Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
        }
        tracing::debug!(
            webhook = %endpoint.name,
            delivery = c.delivery_id,
            attempt = c.attempt,
            outcome = outcome.label(),
            status = completion.http_status,
            next = completion.next_state,
            "attempt finished"
        );
        completion
    }

    /// Loads the related records the webhook's templates use ([`related`]).
    async fn load_related(
        &self,
        endpoint: &Endpoint,
        directory: &Directory,
        event: &Event,
    ) -> Result<Map<String, Value>, String> {
        let names = related::wanted(&endpoint.templates, &directory.relations, &event.entity);
        if names.is_empty() {
            return Ok(Map::new());
        }
        let mut client = self.pool.get().await.map_err(|e| {
            format!(
                "cannot load related records: {}",
                outbox_core::Error::from(e)
            )
        })?;
        related::load(
            &mut client,
            &directory.relations,
            &names,
            event,
            self.options.relation_timeout,
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// Writes finished attempts in batches: whatever piled up while the previous batch was written.
    async fn complete_loop(self: Arc<Self>, mut done: mpsc::Receiver<Completion>) {
        let mut batch = Vec::with_capacity(1024);
        while let Some(first) = done.recv().await {
            batch.push(first);
            while batch.len() < 2000 {
                match done.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let mut failures = 0u32;
            loop {
                match self.flush(&batch).await {
                    Ok(()) => break,
                    Err(e) => {
                        failures += 1;
                        if failures >= 20 && !e.is_retryable() {
                            tracing::error!(error = %e, count = batch.len(), "cannot record attempts; their leases will expire and they will be retried");
                            break;
                        }
                        tracing::warn!(error = %e, count = batch.len(), "recording attempts failed; retrying");
                        tokio::time::sleep(Duration::from_millis(
                            100 * u64::from(failures.min(50)),
                        ))
                        .await;
                    }
                }
            }
            batch.clear();
        }
    }

    async fn flush(&self, batch: &[Completion]) -> Result<(), Error> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let complete = tx.prepare_cached(sql::COMPLETE).await?;
        let ids: Vec<i64> = batch.iter().map(|c| c.delivery_id).collect();
        let attempts: Vec<i32> = batch.iter().map(|c| c.attempt).collect();
        let states: Vec<&str> = batch.iter().map(|c| c.next_state).collect();
        let next_at: Vec<Option<DateTime<Utc>>> = batch.iter().map(|c| c.next_at).collect();
        let statuses: Vec<Option<i32>> = batch.iter().map(|c| c.http_status).collect();
        let errors: Vec<Option<&str>> = batch.iter().map(|c| c.error.as_deref()).collect();
        let responses: Vec<Option<&str>> = batch.iter().map(|c| c.response.as_deref()).collect();
        let started: Vec<DateTime<Utc>> = batch.iter().map(|c| c.started_at).collect();
        let durations: Vec<i32> = batch.iter().map(|c| c.duration_ms).collect();
        let outcomes: Vec<&str> = batch.iter().map(|c| c.outcome).collect();
        let changed = tx
            .query(
                &complete,
                &[
                    &ids,
                    &attempts,
                    &states,
                    &next_at,
                    &statuses,
                    &errors,
                    &responses,
                    &started,
                    &durations,
                    &outcomes,
                    &self.owner,
                ],
            )
            .await?;
        let applied: std::collections::HashSet<i64> = changed.iter().map(|r| r.get(0)).collect();
        // Records of ordered webhooks whose delivery finished: their next one may go. A statement
        // of its own, so it sees what a concurrent routing transaction parked (release_next.sql).
        let finished_ordered: Vec<&tokio_postgres::Row> =
            changed.iter().filter(|r| r.get::<_, bool>(1)).collect();
        if !finished_ordered.is_empty() {
            let webhooks: Vec<i64> = finished_ordered.iter().map(|r| r.get(2)).collect();
            let entities: Vec<&str> = finished_ordered.iter().map(|r| r.get(3)).collect();
            let entity_ids: Vec<&str> = finished_ordered.iter().map(|r| r.get(4)).collect();
            let release = tx.prepare_cached(sql::RELEASE_NEXT).await?;
            tx.execute(&release, &[&webhooks, &entities, &entity_ids])
                .await?;
        }
        let dead: Vec<i64> = batch
            .iter()
            .filter(|c| c.next_state == "dead" && applied.contains(&c.delivery_id))
            .map(|c| c.delivery_id)
            .collect();
        if !dead.is_empty() {
            tx.execute(sql::DEAD_ALERTS, &[&dead]).await?;
        }
        for c in batch.iter().filter(|c| c.gone) {
            tx.execute(
                "WITH off AS (
                     UPDATE outbox.webhooks SET active = false, updated_at = now(),
                            disabled_reason = 'receiver answered 410 Gone at ' || now()::text
                     WHERE id = $1 AND active RETURNING name)
                 INSERT INTO outbox.events (event_type, entity, entity_id, data)
                 SELECT 'relay.webhook.disabled', 'webhook', name,
                        jsonb_build_object('webhook', name, 'reason', '410 Gone', 'delivery_id', $2::bigint)
                 FROM off",
                &[&c.webhook_id, &c.delivery_id],
            )
            .await?;
        }
        tx.commit().await?;

        for c in batch.iter().filter(|c| applied.contains(&c.delivery_id)) {
            match c.next_state {
                "succeeded" => {
                    telemetry::delivery_completed(&c.webhook, "succeeded");
                    let latency = (Utc::now() - c.event_created_at)
                        .to_std()
                        .unwrap_or_default();
                    telemetry::delivery_latency(&c.webhook, latency.as_secs_f64());
                }
                "dead" => telemetry::delivery_completed(&c.webhook, "dead"),
                _ => {}
            }
        }
        if batch.iter().any(|c| c.gone) {
            tracing::warn!("a receiver answered 410 Gone; its webhook was switched off");
        }
        // Ordered webhooks may have released their next delivery; retries may be due at once.
        self.wakeup.notify_one();
        Ok(())
    }

    /// Requeues deliveries whose relay stopped reporting, and wakes parked ordered deliveries that
    /// a race left behind.
    async fn rescue_loop(self: Arc<Self>, stop: CancellationToken) {
        let every =
            (self.options.lease / 4).clamp(Duration::from_millis(500), Duration::from_secs(15));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.rescue().await {
                tracing::warn!(error = %e, "rescuing expired leases failed");
            }
        }
    }

    async fn rescue(&self) -> Result<(), Error> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = tx.query(sql::RESCUE, &[&500i64]).await?;
        let dead: Vec<i64> = rows
            .iter()
            .filter(|r| r.get::<_, bool>(1))
            .map(|r| r.get(0))
            .collect();
        if !dead.is_empty() {
            tx.execute(sql::DEAD_ALERTS, &[&dead]).await?;
        }
        let ordered: Vec<i64> = self
            .directory
            .load()
            .endpoints
            .values()
            .filter(|e| e.ordered)
            .map(|e| e.id)
            .collect();
        let released = if ordered.is_empty() {
            0
        } else {
            tx.execute(sql::RELEASE_PARKED, &[&ordered]).await?
        };
        tx.commit().await?;
        if !rows.is_empty() {
            tracing::warn!(
                requeued = rows.len() - dead.len(),
                dead = dead.len(),
                "took over deliveries whose relay stopped reporting"
            );
        }
        if !rows.is_empty() || released > 0 {
            self.wakeup.notify_one();
        }
        Ok(())
    }
}

fn status_error(status: u16) -> String {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let hint = match status {
        300..=399 => " (redirects are not followed; point the webhook at the final URL)",
        410 => " (the webhook was switched off)",
        _ => "",
    };
    format!("HTTP {status} {reason}{hint}")
        .trim_end()
        .to_string()
}
