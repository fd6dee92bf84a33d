use thiserror::Error;

/// Why the live configuration could not be reloaded (the previous one stays in force).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// No connection could be had from the pool.
    #[error("{0}")]
    Unavailable(String),
    /// A query failed.
    #[error("database error: {0}")]
    Database(String),
    /// The compiling task failed.
    #[error("compiling webhooks failed: {0}")]
    Compile(String),
}

impl From<deadpool_postgres::PoolError> for CatalogError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        CatalogError::Unavailable(outbox_core::Error::from(e).to_string())
    }
}

impl From<tokio_postgres::Error> for CatalogError {
    fn from(e: tokio_postgres::Error) -> Self {
        CatalogError::Database(outbox_core::db::describe(&e))
    }
}
