use tokio_postgres::Client;

use crate::Error;
use crate::sql::MIGRATIONS;

/// The schema version this build of the relay creates and expects.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Advisory lock key serialising concurrent `migrate` runs ("outbox-relay migrate").
pub(crate) const MIGRATE_LOCK: i64 = 0x6f75_7462_6f78_6d67;

/// Creates or updates schema `outbox`. Idempotent; concurrent callers wait for each other on an
/// advisory lock, and each migration commits on its own with its version recorded.
/// Returns the versions it applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, Error> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .await?;
    let result = apply_pending(client).await;
    // The lock is released even if a migration failed; a broken connection releases it anyway.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK])
        .await;
    result
}

async fn apply_pending(client: &mut Client) -> Result<Vec<i32>, Error> {
    client
        .batch_execute(
            "SET client_min_messages = warning;
             CREATE SCHEMA IF NOT EXISTS outbox;
             CREATE TABLE IF NOT EXISTS outbox.schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );",
        )
        .await?;
    let current = current_version(client).await?;
    if current > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found: current,
            known: SCHEMA_VERSION,
        });
    }
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql)
            .await
            .map_err(|source| Error::Migration {
                version,
                name,
                source,
            })?;
        tx.execute(
            "INSERT INTO outbox.schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied migration");
        applied.push(version);
    }
    Ok(applied)
}

async fn current_version(client: &Client) -> Result<i32, Error> {
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM outbox.schema_migrations",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Where the database's schema stands relative to this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaStatus {
    /// Schema `outbox` does not exist yet: run `outbox-relay migrate`.
    Missing,
    /// Older than this build: run `outbox-relay migrate`.
    Behind {
        found: i32,
    },
    Current,
    /// Newer than this build: upgrade the relay.
    Ahead {
        found: i32,
    },
}

pub async fn schema_status(client: &Client) -> Result<SchemaStatus, Error> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('outbox.schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(SchemaStatus::Missing);
    }
    let found = current_version(client).await?;
    Ok(match found.cmp(&SCHEMA_VERSION) {
        std::cmp::Ordering::Less if found == 0 => SchemaStatus::Missing,
        std::cmp::Ordering::Less => SchemaStatus::Behind { found },
        std::cmp::Ordering::Equal => SchemaStatus::Current,
        std::cmp::Ordering::Greater => SchemaStatus::Ahead { found },
    })
}
