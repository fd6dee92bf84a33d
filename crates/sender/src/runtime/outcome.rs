//! What an attempt comes to, on its way to the completer.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::policy::AttemptOutcome;

/// What becomes of a delivery after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A 2xx: the delivery is done.
    Succeeded,
    /// Failed; attempted again at `at`.
    Retry { at: DateTime<Utc> },
    /// Failed and its attempt budget is spent.
    Dead,
    /// The receiver answered `410 Gone`: the webhook is switched off. The delivery waits for it
    /// to be switched on again (`retry_at`), or is dead if its budget is spent.
    Gone { retry_at: Option<DateTime<Utc>> },
    /// Never sent: it could not have finished within its lease. The claim is released without
    /// using up an attempt.
    Abandoned,
}

/// The delivery state `complete.sql` moves a delivery to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextState {
    Pending,
    Succeeded,
    Dead,
    /// The claim is given back unused (attempt counter restored).
    Released,
}

impl NextState {
    pub fn label(self) -> &'static str {
        match self {
            NextState::Pending => "pending",
            NextState::Succeeded => "succeeded",
            NextState::Dead => "dead",
            NextState::Released => "released",
        }
    }
}

impl Outcome {
    /// The delivery's next state and, for a retry, when it is due.
    pub fn next(self) -> (NextState, Option<DateTime<Utc>>) {
        match self {
            Outcome::Succeeded => (NextState::Succeeded, None),
            Outcome::Retry { at } | Outcome::Gone { retry_at: Some(at) } => {
                (NextState::Pending, Some(at))
            }
            Outcome::Dead | Outcome::Gone { retry_at: None } => (NextState::Dead, None),
            Outcome::Abandoned => (NextState::Released, None),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead => "dead",
            Outcome::Gone { .. } => "gone",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// What an attempt's request did, as `outbox.attempts` records it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttemptRecord {
    pub outcome: AttemptOutcome,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub http_status: Option<i32>,
    pub error: Option<String>,
    /// The first 4 KiB of the response body.
    pub response: Option<String>,
    /// The request as sent, as JSON text ([`crate::record`]); `None` when none was made (it
    /// could not be rendered).
    pub request: Option<String>,
    /// The response's headers as JSON text ([`crate::record`]), when there was a response.
    pub response_headers: Option<String>,
}

/// One finished attempt, on its way to the completer.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub delivery_id: i64,
    pub attempt: i32,
    pub webhook_id: i64,
    pub webhook: Arc<str>,
    pub event_created_at: DateTime<Utc>,
    pub outcome: Outcome,
    /// `None` when nothing was sent ([`Outcome::Abandoned`]).
    pub record: Option<AttemptRecord>,
}

impl Completion {
    /// Texts as Postgres can store them: a response or error may carry NUL bytes, which a `text`
    /// column refuses.
    pub fn storable(mut self) -> Completion {
        if let Some(record) = &mut self.record {
            for text in [&mut record.error, &mut record.response]
                .into_iter()
                .flatten()
            {
                if text.contains('\0') {
                    *text = text.replace('\0', "\u{FFFD}");
                }
            }
        }
        self
    }
}
