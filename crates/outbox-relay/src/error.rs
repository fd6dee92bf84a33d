use std::fmt;

/// A command's failure: one clear sentence for stderr, and the exit code (1 runtime failure,
/// 2 bad usage or invalid input).
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    /// Bad usage or invalid input (exit 2).
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// Something failed at runtime (exit 1).
    pub fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<outbox_core::Error> for Failure {
    fn from(e: outbox_core::Error) -> Self {
        match e {
            outbox_core::Error::DatabaseUrl { .. } => Failure::invalid(e.to_string()),
            other => Failure::runtime(other.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::runtime(format!("database error: {}", outbox_core::db::describe(&e)))
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        outbox_core::Error::from(e).into()
    }
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

impl From<outbox_catalog::CatalogError> for Failure {
    fn from(e: outbox_catalog::CatalogError) -> Self {
        Failure::runtime(e.to_string())
    }
}

/// An admin action's error as a command reports it: what was asked for that is wrong or missing
/// is bad input (exit 2), anything that failed on the way a runtime failure (exit 1); messages
/// gain the hint a command-line user needs.
impl From<outbox_admin::AdminError> for Failure {
    fn from(e: outbox_admin::AdminError) -> Self {
        use outbox_admin::{AdminError, ErrorKind};
        let message = match &e {
            AdminError::NoWebhook { .. } | AdminError::NoWebhooks { .. } => {
                format!("{e}; `outbox-relay webhooks list` shows them all")
            }
            AdminError::NoDeliveries { .. } => {
                format!("{e}; nothing was re-queued (`outbox-relay deliveries list` shows the ids)")
            }
            AdminError::WebhookDeleted { .. } => format!("{e}; nothing was re-queued"),
            AdminError::InvalidWebhook { .. } => format!("{e}; fix it and apply it again"),
            // Options are named as the command's flags.
            AdminError::BadInput { field, message } if message.starts_with(field) => {
                format!("--{message}")
            }
            _ => e.to_string(),
        };
        match e.kind() {
            ErrorKind::NotFound | ErrorKind::Invalid | ErrorKind::Conflict => {
                Failure::invalid(message)
            }
            ErrorKind::Unavailable | ErrorKind::Failed => Failure::runtime(message),
        }
    }
}
