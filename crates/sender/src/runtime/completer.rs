//! The completer: records finished attempts in batches (whatever piled up while the previous
//! batch was written), one transaction per batch, so commits do not grow with throughput.
//!
//! One row never blocks the rest:
//! - a batch holds each (delivery, attempt) once; should two results for one arrive, a success
//!   wins (the receiver got the request);
//! - a transient failure (connection lost, database restarting, lock conflict) retries the batch
//!   with backoff, as long as it takes while the relay runs, and for
//!   [`SenderOptions::record_grace`](super::SenderOptions::record_grace) after it was told to stop;
//! - a batch the database refuses because of some row's data is split in halves until the row is
//!   found; that row is recorded without its response text, request and response headers, and
//!   only if even that is refused it is dropped (logged), its lease then expires and the delivery is attempted again;
//! - any other failure (e.g. a privilege revoked) retries with backoff, loudly, rather than
//!   dropping results that could be recorded once it is fixed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox_core::{sql, telemetry};
use tokio::sync::mpsc;

use super::outcome::NextState;
use super::{Completion, Outcome, Shared};
use crate::Error;

/// Most results written by one statement.
const MAX_BATCH: usize = 2000;

pub(crate) struct Completer {
    shared: Arc<Shared>,
}

/// Results of finished attempts not yet recorded (nor given up on): counted when an attempt hands
/// its result over, so what waits in the channel counts too.
#[derive(Debug, Default)]
pub(crate) struct Unrecorded {
    results: AtomicUsize,
    succeeded: AtomicUsize,
}

/// A reading of [`Unrecorded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnrecordedCount {
    pub results: usize,
    /// Of which the receiver answered 2xx.
    pub succeeded: usize,
}

impl Unrecorded {
    pub fn add(&self, c: &Completion) {
        self.results.fetch_add(1, Ordering::Relaxed);
        if c.outcome == Outcome::Succeeded {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn done(&self, c: &Completion) {
        self.results.fetch_sub(1, Ordering::Relaxed);
        if c.outcome == Outcome::Succeeded {
            self.succeeded.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> UnrecordedCount {
        UnrecordedCount {
            results: self.results.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
        }
    }
}

impl Completer {
    pub fn new(shared: Arc<Shared>) -> Completer {
        Completer { shared }
    }

    /// Records results until every sender of `done` is gone and the channel is drained.
    pub async fn run(self, mut done: mpsc::Receiver<Completion>) {
        let mut batch = Vec::with_capacity(1024);
        while let Some(first) = done.recv().await {
            self.take(&mut batch, first);
            while batch.len() < MAX_BATCH {
                match done.try_recv() {
                    Ok(c) => self.take(&mut batch, c),
                    Err(_) => break,
                }
            }
            self.record(dedupe(std::mem::take(&mut batch))).await;
        }
    }

    fn take(&self, batch: &mut Vec<Completion>, c: Completion) {
        batch.push(c.storable());
    }

    /// Records a batch, splitting it where the database refuses some row's data.
    async fn record(&self, batch: Vec<Completion>) {
        let mut todo = vec![batch];
        while let Some(part) = todo.pop() {
            match self.flush_retrying(&part).await {
                Ok(()) => {}
                Err(_) if part.len() > 1 => {
                    let mut first = part;
                    let second = first.split_off(first.len() / 2);
                    todo.push(second);
                    todo.push(first);
                    continue;
                }
                Err(e) => self.refused(&part[0], &e).await,
            }
            for c in &part {
                self.shared.unrecorded.done(c);
            }
        }
    }

    /// One result the database refuses: recorded without its texts if possible, else dropped.
    async fn refused(&self, c: &Completion, e: &Error) {
        let mut bare = c.clone();
        if let Some(record) = &mut bare.record {
            record.response = None;
            record.request = None;
            record.response_headers = None;
            record.error = Some(format!(
                "{} (the attempt's own error and response could not be stored: {e})",
                record.outcome.label()
            ));
        }
        if let Err(again) = self.flush_retrying(std::slice::from_ref(&bare)).await {
            tracing::error!(
                delivery = c.delivery_id,
                attempt = c.attempt,
                outcome = c.outcome.label(),
                error = %again,
                "cannot record this attempt's result; its delivery is attempted again when the lease expires"
            );
        }
    }

    /// Writes `part`; retries while the failure is not about the data of some row. Returns a
    /// data error (to split on).
    async fn flush_retrying(&self, part: &[Completion]) -> Result<(), Error> {
        let mut failures = 0u32;
        loop {
            let e = match self.flush(part).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_data_error() => return Err(e),
                Err(e) => e,
            };
            failures += 1;
            if failures == 1 || failures.is_multiple_of(30) {
                if e.is_retryable() {
                    tracing::warn!(error = %e, count = part.len(), "recording attempts failed; retrying");
                } else {
                    tracing::error!(error = %e, count = part.len(), "recording attempts failed; retrying until it is fixed");
                }
            }
            tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50)))).await;
        }
    }

    async fn flush(&self, batch: &[Completion]) -> Result<(), Error> {
        let mut client = self.shared.pool.get().await?;
        let tx = client.transaction().await?;
        let complete = tx.prepare_cached(sql::COMPLETE).await?;
        let next: Vec<(NextState, Option<DateTime<Utc>>)> =
            batch.iter().map(|c| c.outcome.next()).collect();
        let ids: Vec<i64> = batch.iter().map(|c| c.delivery_id).collect();
        let attempts: Vec<i32> = batch.iter().map(|c| c.attempt).collect();
        let states: Vec<&str> = next.iter().map(|(s, _)| s.label()).collect();
        let next_at: Vec<Option<DateTime<Utc>>> = next.iter().map(|(_, at)| *at).collect();
        let statuses: Vec<Option<i32>> = batch
            .iter()
            .map(|c| c.record.as_ref().and_then(|r| r.http_status))
            .collect();
        let errors: Vec<Option<&str>> = batch
            .iter()
            .map(|c| c.record.as_ref().and_then(|r| r.error.as_deref()))
            .collect();
        let responses: Vec<Option<&str>> = batch
            .iter()
            .map(|c| c.record.as_ref().and_then(|r| r.response.as_deref()))
            .collect();
        let started: Vec<Option<DateTime<Utc>>> = batch
            .iter()
            .map(|c| c.record.as_ref().map(|r| r.started_at))
            .collect();
        let durations: Vec<Option<i32>> = batch
            .iter()
            .map(|c| c.record.as_ref().map(|r| r.duration_ms))
            .collect();
        let outcomes: Vec<Option<&str>> = batch
            .iter()
            .map(|c| c.record.as_ref().map(|r| r.outcome.label()))
            .collect();
        let requests: Vec<Option<&str>> = batch
            .iter()
            .map(|c| c.record.as_ref().and_then(|r| r.request.as_deref()))
            .collect();
        let response_headers: Vec<Option<&str>> = batch
            .iter()
            .map(|c| {
                c.record
                    .as_ref()
                    .and_then(|r| r.response_headers.as_deref())
            })
            .collect();
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
                    &self.shared.owner,
                    &requests,
                    &response_headers,
                ],
            )
            .await?;
        let applied: HashSet<i64> = changed
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        // Records of ordered webhooks whose delivery finished: their next one may go. A statement
        // of its own, so it sees what a concurrent routing transaction parked (release_next.sql).
        let mut webhooks: Vec<i64> = Vec::new();
        let mut entities: Vec<&str> = Vec::new();
        let mut entity_ids: Vec<&str> = Vec::new();
        for row in changed.iter().filter(|r| r.get::<_, bool>(1)) {
            webhooks.push(row.try_get(2)?);
            entities.push(row.try_get(3)?);
            entity_ids.push(row.try_get(4)?);
        }
        if !webhooks.is_empty() {
            let release = tx.prepare_cached(sql::RELEASE_NEXT).await?;
            tx.execute(&release, &[&webhooks, &entities, &entity_ids])
                .await?;
        }
        let dead: Vec<i64> = batch
            .iter()
            .filter(|c| next_is_dead(c) && applied.contains(&c.delivery_id))
            .map(|c| c.delivery_id)
            .collect();
        if !dead.is_empty() {
            tx.execute(sql::DEAD_ALERTS, &[&dead]).await?;
        }
        // 410 Gone switches the webhook off only while the result is still this relay's to
        // record: a late result must not act on a delivery another relay took over.
        let gone: Vec<&Completion> = batch
            .iter()
            .filter(|c| {
                matches!(c.outcome, Outcome::Gone { .. }) && applied.contains(&c.delivery_id)
            })
            .collect();
        for c in &gone {
            tx.execute(sql::WEBHOOK_GONE, &[&c.webhook_id, &c.delivery_id])
                .await?;
        }
        tx.commit().await?;

        for c in batch.iter().filter(|c| applied.contains(&c.delivery_id)) {
            if c.outcome == Outcome::Succeeded {
                telemetry::delivery_completed(&c.webhook, "succeeded");
                let latency = (Utc::now() - c.event_created_at)
                    .to_std()
                    .unwrap_or_default();
                telemetry::delivery_latency(&c.webhook, latency.as_secs_f64());
            } else if next_is_dead(c) {
                telemetry::delivery_completed(&c.webhook, "dead");
            }
        }
        let late = batch.len()
            - batch
                .iter()
                .filter(|c| applied.contains(&c.delivery_id))
                .count();
        if late > 0 {
            tracing::info!(
                results = late,
                "some results came after their delivery was taken over (lease expired, or a retry/cancel by an operator); only their attempts were logged"
            );
        }
        if !gone.is_empty() {
            tracing::warn!("a receiver answered 410 Gone; its webhook was switched off");
        }
        // Ordered webhooks may have released their next delivery; retries may be due at once.
        self.shared.wakeup.notify_one();
        Ok(())
    }
}

fn next_is_dead(c: &Completion) -> bool {
    c.outcome.next().0 == NextState::Dead
}

/// Each (delivery, attempt) once, in arrival order; a success wins over another result of the
/// same attempt (two results for one attempt mean it was sent twice; the receiver got it).
fn dedupe(batch: Vec<Completion>) -> Vec<Completion> {
    let mut index: HashMap<(i64, i32), usize> = HashMap::with_capacity(batch.len());
    let mut out: Vec<Completion> = Vec::with_capacity(batch.len());
    for c in batch {
        match index.get(&(c.delivery_id, c.attempt)) {
            Some(&i) => {
                if c.outcome == Outcome::Succeeded && out[i].outcome != Outcome::Succeeded {
                    out[i] = c;
                }
            }
            None => {
                index.insert((c.delivery_id, c.attempt), out.len());
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(delivery_id: i64, attempt: i32, outcome: Outcome) -> Completion {
        Completion {
            delivery_id,
            attempt,
            webhook_id: 1,
            webhook: "w".into(),
            event_created_at: Utc::now(),
            outcome,
            record: None,
        }
    }

    #[test]
    fn one_result_per_attempt_and_a_success_wins() {
        let retry = Outcome::Retry { at: Utc::now() };
        let batch = vec![
            completion(1, 1, retry),
            completion(2, 1, Outcome::Succeeded),
            completion(1, 1, Outcome::Succeeded),
            completion(1, 2, retry),
            completion(2, 1, Outcome::Dead),
        ];
        let kept: Vec<(i64, i32, &str)> = dedupe(batch)
            .iter()
            .map(|c| (c.delivery_id, c.attempt, c.outcome.label()))
            .collect();
        assert_eq!(
            kept,
            vec![(1, 1, "succeeded"), (2, 1, "succeeded"), (1, 2, "retry")]
        );
    }
}
