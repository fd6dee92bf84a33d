//! One attempt as a chain of small typed steps: [`Claimed`] → [`Prepared`] (related records,
//! rendered, signed) → [`Sent`] (what the receiver or the network said) → [`Outcome`] with the
//! [`AttemptRecord`] to log, which carries the request as sent (written once, before sending).
//! Every step keeps to the [`Deadline`] derived from the claim's lease: a request that could no
//! longer finish within the lease is not sent.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use chrono::{DateTime, Utc};
use outbox_core::{DecodeError, Event, telemetry};
use serde_json::Map;
use tracing::Instrument;

use super::lookups::{BatchLookup, Missing};
use super::outcome::AttemptRecord;
use super::{Completion, Deadline, Outcome, Shared};
use crate::endpoint::Endpoint;
use crate::policy::{self, AttemptOutcome};
use crate::record;
use crate::request::{build_request, message_id};
use crate::transport::{OutboundRequest, Response, TransportErrorKind};

/// A claimed delivery: the claim is committed (durably) and leased to this relay.
pub(crate) struct Claimed {
    pub delivery_id: i64,
    pub attempt: i32,
    pub attempts_base: i32,
    /// The event, or why its row could not be read.
    pub event: Result<Arc<Event>, DecodeError>,
    pub event_created_at: DateTime<Utc>,
    pub deadline: Deadline,
    /// Its batch's lookup of related records, if its templates use any.
    pub related: Option<BatchLookup>,
}

/// Rendered and signed: the exact request to send.
struct Prepared {
    request: OutboundRequest,
}

/// Why an attempt did not get as far as sending.
enum Unprepared {
    /// It failed (render error, related records): an attempt like any other.
    Failed(String),
    /// Its lease would not cover the request any more: nothing is sent.
    OutOfTime(String),
}

/// What sending came to.
enum Sent {
    Response(Response),
    Failed {
        outcome: AttemptOutcome,
        error: String,
    },
}

/// Runs one attempt, in a span of its own.
pub(crate) async fn run(shared: &Shared, endpoint: &Endpoint, claimed: Claimed) -> Completion {
    let span = tracing::info_span!(
        "attempt",
        webhook = %endpoint.name,
        delivery = claimed.delivery_id,
        attempt = claimed.attempt
    );
    attempt(shared, endpoint, claimed).instrument(span).await
}

async fn attempt(shared: &Shared, endpoint: &Endpoint, claimed: Claimed) -> Completion {
    let started_at = Utc::now();
    let clock = Instant::now();
    let (sent, request) = match prepare(shared, endpoint, &claimed).await {
        Ok(prepared) if claimed.deadline.may_send(Instant::now()) => {
            // What is stored of the request: written once, before it is handed to the transport.
            let request = record::request_json(
                &prepared.request,
                endpoint.signer.as_ref().map(|s| s.header()),
            );
            let sent = send(shared, prepared, &claimed.deadline).await;
            (sent, Some(request))
        }
        Ok(_) => {
            return abandon(
                endpoint,
                &claimed,
                "it was ready to send too late to finish within its lease",
            );
        }
        Err(Unprepared::OutOfTime(why)) => return abandon(endpoint, &claimed, &why),
        Err(Unprepared::Failed(error)) => (
            Sent::Failed {
                outcome: AttemptOutcome::RenderError,
                error,
            },
            None,
        ),
    };
    let elapsed = clock.elapsed();
    let (outcome, mut record) = decide(endpoint, &claimed, sent, started_at, elapsed);
    record.request = request;
    telemetry::attempt_finished(
        &endpoint.name,
        record.outcome.label(),
        elapsed.as_secs_f64(),
    );
    tracing::debug!(
        outcome = record.outcome.label(),
        status = record.http_status,
        next = outcome.label(),
        "attempt finished"
    );
    Completion {
        delivery_id: claimed.delivery_id,
        attempt: claimed.attempt,
        webhook_id: endpoint.id,
        webhook: endpoint.name.clone(),
        event_created_at: claimed.event_created_at,
        outcome,
        record: Some(record),
    }
}

/// Related records, then the request rendered and signed.
async fn prepare(
    shared: &Shared,
    endpoint: &Endpoint,
    claimed: &Claimed,
) -> Result<Prepared, Unprepared> {
    let event = claimed.event.as_ref().map_err(|e| {
        Unprepared::Failed(format!(
            "cannot read event {} of this delivery: {e}",
            claimed.delivery_id
        ))
    })?;
    let related = match &claimed.related {
        None => Map::new(),
        Some(lookup) => lookup
            .get(claimed.delivery_id, claimed.deadline.send_by)
            .await
            .map_err(|missing| match missing {
                Missing::Failed(reason) => Unprepared::Failed(reason),
                Missing::OutOfTime => Unprepared::OutOfTime(
                    "its related records did not arrive before its lease would no longer cover the request"
                        .into(),
                ),
            })?,
    };
    let id = message_id(&shared.install_id, claimed.delivery_id);
    build_request(
        endpoint,
        event,
        claimed.delivery_id,
        claimed.attempt,
        &id,
        Utc::now().timestamp(),
        &related,
    )
    .map(|request| Prepared { request })
    .map_err(|e| Unprepared::Failed(e.to_string()))
}

/// Sends the request; it must be over by the deadline whatever the transport does.
async fn send(shared: &Shared, prepared: Prepared, deadline: &Deadline) -> Sent {
    let done_by = tokio::time::Instant::from_std(deadline.done_by);
    match tokio::time::timeout_at(done_by, shared.transport.send(prepared.request)).await {
        Ok(Ok(response)) => Sent::Response(response),
        Ok(Err(e)) => Sent::Failed {
            outcome: match e.kind {
                TransportErrorKind::Timeout => AttemptOutcome::Timeout,
                TransportErrorKind::Connect => AttemptOutcome::ConnectError,
                TransportErrorKind::Refused => AttemptOutcome::Refused,
            },
            error: e.message,
        },
        Err(_) => Sent::Failed {
            outcome: AttemptOutcome::Timeout,
            error: "no complete response before the attempt's lease ran out".into(),
        },
    }
}

/// The attempt's record and what becomes of the delivery.
fn decide(
    endpoint: &Endpoint,
    claimed: &Claimed,
    sent: Sent,
    started_at: DateTime<Utc>,
    elapsed: std::time::Duration,
) -> (Outcome, AttemptRecord) {
    let mut record = AttemptRecord {
        outcome: AttemptOutcome::Success,
        started_at,
        duration_ms: elapsed.as_millis().min(i32::MAX as u128) as i32,
        http_status: None,
        error: None,
        response: None,
        request: None,
        response_headers: None,
    };
    let budget_spent = claimed.attempt - claimed.attempts_base >= endpoint.max_attempts;
    let retry_at = |asked: Option<std::time::Duration>| {
        let used = claimed.attempt - claimed.attempts_base;
        let delay = asked.unwrap_or_else(|| policy::retry_delay(&endpoint.schedule, used));
        Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()
    };
    let failed = |asked| {
        if budget_spent {
            Outcome::Dead
        } else {
            Outcome::Retry {
                at: retry_at(asked),
            }
        }
    };
    let outcome = match sent {
        Sent::Response(response) => {
            record.http_status = Some(i32::from(response.status));
            record.response_headers = Some(record::response_headers_json(&response.headers));
            record.response = Some(response.body);
            if (200..300).contains(&response.status) {
                Outcome::Succeeded
            } else {
                record.outcome = AttemptOutcome::HttpError;
                record.error = Some(status_error(response.status));
                let asked = match response.status {
                    429 | 503 => response.retry_after.as_deref().and_then(|v| {
                        policy::retry_after(v, &endpoint.schedule, SystemTime::now())
                    }),
                    _ => None,
                };
                match (response.status, failed(asked)) {
                    (410, Outcome::Retry { at }) => Outcome::Gone { retry_at: Some(at) },
                    (410, _) => Outcome::Gone { retry_at: None },
                    (_, outcome) => outcome,
                }
            }
        }
        Sent::Failed { outcome, error } => {
            record.outcome = outcome;
            record.error = Some(error);
            failed(None)
        }
    };
    (outcome, record)
}

/// Gives the claim back unused: nothing was sent.
fn abandon(endpoint: &Endpoint, claimed: &Claimed, why: &str) -> Completion {
    tracing::warn!(
        reason = why,
        "not sending: the claim is released and the delivery queued again without using an attempt"
    );
    Completion {
        delivery_id: claimed.delivery_id,
        attempt: claimed.attempt,
        webhook_id: endpoint.id,
        webhook: endpoint.name.clone(),
        event_created_at: claimed.event_created_at,
        outcome: Outcome::Abandoned,
        record: None,
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
