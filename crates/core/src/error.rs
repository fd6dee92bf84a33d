use thiserror::Error;

/// Errors of the shared plumbing: database access, migrations and the private cluster.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    #[error("database error: {}", crate::db::describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("could not get a database connection from the pool: {0}")]
    Pool(String),
    #[error("invalid database URL {url:?}: {reason}")]
    DatabaseUrl { url: String, reason: String },
    #[error("migration {version} ({name}) failed: {}", crate::db::describe(.source))]
    Migration {
        version: i32,
        name: &'static str,
        source: tokio_postgres::Error,
    },
    #[error(
        "the database schema is version {found}, newer than this relay knows ({known}); upgrade outbox-relay"
    )]
    SchemaTooNew { found: i32, known: i32 },
    /// Switching `outbox.capture()` between its implementations failed; the text says why and what
    /// to do.
    #[error("{0}")]
    Capture(String),
    #[error("private Postgres: {0}")]
    Cluster(String),
}

impl Error {
    /// Whether retrying later may succeed (the database was unreachable or went away), as opposed to
    /// an error that repeats until someone changes something.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Db(e) => crate::db::is_connection_error(e),
            Error::Pool(_) => true,
            _ => false,
        }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Error::Db(e),
            other => Error::Pool(other.to_string()),
        }
    }
}
