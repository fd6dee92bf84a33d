//! A delivery's attempts as the log keeps them: outcome, status, error, the response (body
//! excerpt and headers) and the request as it was sent (stored by the sender since schema
//! version 8, secrets as `***`; attempts recorded before have none).

use chrono::{DateTime, Utc};
use outbox_core::redact::{is_secret_header, redact_url, redact_urls_in};
use outbox_sender::{AttemptOutcome, record};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::error::AdminError;
use crate::preview::Header;

/// One attempt.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: Option<i32>,
    pub status: Option<i32>,
    pub outcome: String,
    pub error: Option<String>,
    /// The first 4 KiB of the response body.
    pub response: Option<String>,
    /// The response's headers (credential-like ones as `***`), when there was a response and it
    /// was recorded.
    pub response_headers: Option<Vec<Header>>,
    /// The request as it was sent, when the attempt recorded one (see [`AttemptView::request_kept`]).
    pub request: Option<SentRequest>,
}

/// A request as the sender sent it and stored it with the attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentRequest {
    pub method: String,
    /// The URL, with any password and secret-looking query values as `***`.
    pub url: String,
    /// Every header in sending order; authorization, signatures and secret-looking headers `***`.
    pub headers: Vec<Header>,
    /// The body's first 4 KiB.
    pub body: String,
    /// The size of the whole body as sent.
    pub body_bytes: u64,
    /// Whether `body` is only the first part of it.
    pub body_truncated: bool,
}

/// Why an attempt has no stored request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRequest {
    /// It failed before a request was made (its templates or related records failed).
    NotMade,
    /// It was recorded without one: before requests were stored, or taken over from a relay
    /// that stopped reporting (`abandoned`). What the relay would send now can be rendered
    /// again instead ([`crate::sent`]).
    NotRecorded,
}

impl AttemptView {
    /// The stored request, or why there is none.
    pub fn request_kept(&self) -> Result<&SentRequest, NoRequest> {
        match &self.request {
            Some(r) => Ok(r),
            None if AttemptOutcome::from_label(&self.outcome)
                == Some(AttemptOutcome::RenderError) =>
            {
                Err(NoRequest::NotMade)
            }
            None => Err(NoRequest::NotRecorded),
        }
    }
}

/// Every attempt of delivery `id`, in order.
pub async fn of(client: &impl GenericClient, id: i64) -> Result<Vec<AttemptView>, AdminError> {
    let rows = client
        .query(
            "SELECT attempt, started_at, duration_ms, status, outcome, error, response,
                    request::text, response_headers::text
             FROM outbox.attempts WHERE delivery_id = $1 ORDER BY attempt",
            &[&id],
        )
        .await?;
    let mut attempts = Vec::with_capacity(rows.len());
    for r in &rows {
        let attempt: i32 = r.try_get(0)?;
        let request: Option<String> = r.try_get(7)?;
        let headers: Option<String> = r.try_get(8)?;
        attempts.push(AttemptView {
            attempt,
            started_at: r.try_get(1)?,
            duration_ms: r.try_get(2)?,
            status: r.try_get(3)?,
            outcome: r.try_get(4)?,
            // Errors are redacted when recorded; rows recorded by older relays are redacted here.
            error: r
                .try_get::<_, Option<String>>(5)?
                .map(|e| redact_urls_in(&e)),
            response: r.try_get(6)?,
            response_headers: headers.and_then(|h| {
                record::parse_headers(&h)
                    .map_err(|e| unreadable(id, attempt, "response headers", &e))
                    .ok()
                    .map(|pairs| pairs.into_iter().map(header).collect())
            }),
            request: request.and_then(|text| {
                record::parse_request(&text)
                    .map_err(|e| unreadable(id, attempt, "request", &e))
                    .ok()
                    .map(SentRequest::from)
            }),
        });
    }
    Ok(attempts)
}

/// A stored value that is not in the shape the sender writes (changed by hand): left out.
fn unreadable(id: i64, attempt: i32, what: &str, e: &serde_json::Error) {
    tracing::warn!(
        delivery = id,
        attempt,
        error = %e,
        "the attempt's stored {what} cannot be read; it is not shown"
    );
}

fn header((name, value): (String, String)) -> Header {
    Header { name, value }
}

impl From<record::RecordedRequest> for SentRequest {
    fn from(r: record::RecordedRequest) -> Self {
        SentRequest {
            body_truncated: r.body_truncated(),
            method: r.method,
            // Stored redacted; hiding again covers rows written by hand.
            url: redact_url(&r.url),
            headers: r
                .headers
                .into_iter()
                .map(|(name, value)| Header {
                    value: if is_secret_header(&name, None) {
                        "***".into()
                    } else {
                        value
                    },
                    name,
                })
                .collect(),
            body: r.body,
            body_bytes: r.body_bytes,
        }
    }
}
