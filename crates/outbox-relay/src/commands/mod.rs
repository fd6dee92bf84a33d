//! One module per command group; each function is a whole command.

pub mod apply;
pub mod deliveries;
pub mod demo;
pub mod events;
pub mod export;
pub mod fields;
pub mod leftovers;
pub mod test_cmd;
pub mod webhooks;

use crate::error::Failure;

/// The database URL a command should use, or a usage error saying how to give one.
pub fn database_url(flag: &Option<String>) -> Result<String, Failure> {
    flag.clone().ok_or_else(|| {
        Failure::invalid("no database given: pass --database-url or set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/shop)")
    })
}

/// Connects, naming the (redacted) URL on failure. A URL that cannot be parsed is bad input
/// (exit 2); a server that cannot be reached is a runtime failure (exit 1).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, Failure> {
    outbox_core::db::connect(url).await.map_err(|e| match e {
        outbox_core::Error::DatabaseUrl { .. } => Failure::invalid(format!(
            "{e}; give a URL such as postgres://user@host:5432/database (--database-url or DATABASE_URL)"
        )),
        e => Failure::runtime(format!(
            "cannot connect to the database at {}: {e}",
            outbox_core::db::redact_url(url)
        )),
    })
}

/// Connects and checks the schema exists.
pub async fn connect_migrated(url: &str) -> Result<tokio_postgres::Client, Failure> {
    let client = connect(url).await?;
    match outbox_core::schema_status(&client).await? {
        outbox_core::SchemaStatus::Missing => Err(Failure::runtime(
            "schema outbox does not exist in this database; run `outbox-relay migrate` first",
        )),
        _ => Ok(client),
    }
}
