use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Core(#[from] outbox_core::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl Error {
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Core(e) => e.is_retryable(),
            Error::Client(_) => false,
        }
    }

    /// Whether the database refused a statement because of the data of some row it wrote
    /// ([`outbox_core::db::is_data_error`]).
    pub fn is_data_error(&self) -> bool {
        match self {
            Error::Core(outbox_core::Error::Db(e)) => outbox_core::db::is_data_error(e),
            _ => false,
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Core(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::Core(e.into())
    }
}
