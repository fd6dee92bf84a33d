use thiserror::Error;

/// What went wrong with an operator's action. Each face (CLI, JSON API, console) decides from the
/// variant — never from the message — how to answer: an exit code, an HTTP status, a page.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No webhook has this name.
    #[error("no webhook named {name:?}")]
    NoWebhook { name: String },
    /// Several names given, and these are not webhooks.
    #[error("no webhook named {}", quoted(names))]
    NoWebhooks { names: Vec<String> },
    /// No delivery has this id.
    #[error("no delivery with id {id}")]
    NoDelivery { id: i64 },
    /// None of these ids is a delivery (nothing was done).
    #[error("no deliver{} with id {}", plural_y(ids.len()), joined(ids))]
    NoDeliveries { ids: Vec<i64> },
    /// The record (or event type) asked about has no suitable event to work from.
    #[error("{message}")]
    NoEvent { message: String },
    /// A value given by the operator is not acceptable: `field` names it.
    #[error("{message}")]
    BadInput {
        field: &'static str,
        message: String,
    },
    /// A webhook's configuration does not validate: every problem as (field, message).
    #[error("webhook {name:?} is invalid: {}", describe(problems))]
    InvalidWebhook {
        name: String,
        problems: Vec<(String, String)>,
    },
    /// Creating a webhook whose name is taken.
    #[error("a webhook named {name:?} already exists")]
    WebhookExists { name: String },
    /// A stored webhook cannot be used (its row is not webhook-shaped or does not compile).
    #[error("webhook {name:?} cannot be used: {reason}")]
    UnusableWebhook { name: String, reason: String },
    /// Deliveries that cannot be re-queued because their webhook was deleted.
    #[error(
        "cannot re-queue deliver{} {}: the webhook was deleted",
        plural_y(deliveries.len()),
        deliveries.iter().map(|(id, w)| format!("{id} (webhook {w:?})")).collect::<Vec<_>>().join(", ")
    )]
    WebhookDeleted { deliveries: Vec<(i64, String)> },
    /// Deliveries being attempted right now.
    #[error("deliver{} {} {} being attempted right now", plural_y(ids.len()), joined(ids), if ids.len() == 1 { "is" } else { "are" })]
    InFlight { ids: Vec<i64> },
    /// A delivery that is not waiting in the queue cannot be cancelled.
    #[error("delivery {id} is {status}; only pending deliveries can be cancelled")]
    NotCancellable { id: i64, status: String },
    /// Rendering a request failed.
    #[error("{message}")]
    Render { message: String },
    /// No database connection could be had.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed.
    #[error("database error: {0}")]
    Database(String),
}

/// The broad class of an [`AdminError`], for mapping it onto exit codes and HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// What was asked about does not exist.
    NotFound,
    /// The request itself is wrong.
    Invalid,
    /// The request is fine but the state of things does not allow it now.
    Conflict,
    /// The database cannot be reached.
    Unavailable,
    /// Something failed on the way.
    Failed,
}

impl AdminError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            AdminError::NoWebhook { .. }
            | AdminError::NoWebhooks { .. }
            | AdminError::NoDelivery { .. }
            | AdminError::NoDeliveries { .. }
            | AdminError::NoEvent { .. } => ErrorKind::NotFound,
            AdminError::BadInput { .. }
            | AdminError::InvalidWebhook { .. }
            | AdminError::UnusableWebhook { .. } => ErrorKind::Invalid,
            AdminError::WebhookExists { .. }
            | AdminError::WebhookDeleted { .. }
            | AdminError::InFlight { .. }
            | AdminError::NotCancellable { .. } => ErrorKind::Conflict,
            AdminError::Unavailable(_) => ErrorKind::Unavailable,
            AdminError::Render { .. } | AdminError::Database(_) => ErrorKind::Failed,
        }
    }

    pub(crate) fn bad(field: &'static str, message: impl Into<String>) -> AdminError {
        AdminError::BadInput {
            field,
            message: message.into(),
        }
    }
}

impl From<tokio_postgres::Error> for AdminError {
    fn from(e: tokio_postgres::Error) -> Self {
        AdminError::Database(outbox_core::db::describe(&e))
    }
}

impl From<deadpool_postgres::PoolError> for AdminError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        AdminError::Unavailable(outbox_core::Error::from(e).to_string())
    }
}

impl From<outbox_core::Error> for AdminError {
    fn from(e: outbox_core::Error) -> Self {
        AdminError::Database(e.to_string())
    }
}

fn plural_y(n: usize) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}

/// `1 2 3`
pub(crate) fn joined(ids: &[i64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(problems: &[(String, String)]) -> String {
    problems
        .iter()
        .map(|(f, m)| {
            if f.is_empty() {
                m.clone()
            } else {
                format!("{f}: {m}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
