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
