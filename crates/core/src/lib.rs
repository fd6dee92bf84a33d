//! The pieces every other outbox-relay crate shares: the database schema and the SQL the relay
//! runs, the event and webhook types that flow between the crates, and Postgres plumbing.
//!
//! The data flow is `outbox.events → listener → matcher → outbox.deliveries → sender → attempts`.
//! This crate owns none of those steps; it owns the vocabulary they use:
//!
//! - [`sql`]: every migration and named query, loaded from the repository's `sql/` directory so the
//!   SQL is reviewed as SQL, in one copy.
//! - [`migrate`]: applies the migrations under an advisory lock, so concurrent relays may run it;
//!   [`set_capture`] switches `outbox.capture()` between PL/pgSQL and the native C library.
//! - [`Event`]: an event row as the matcher, renderer and sender see it.
//! - [`WebhookSpec`] / [`RelationSpec`]: a webhook's configuration exactly as a user writes it (TOML
//!   for `apply`, or the columns of `outbox.webhooks`).
//! - [`redact`]: credentials out of URLs and texts that quote them, wherever they are shown.
//! - [`db`]: connection pools; [`cluster`]: a private Postgres started from the local binaries, for
//!   `demo` and the tests.
//!
//! ```no_run
//! # async fn f() -> Result<(), outbox_core::Error> {
//! let pool = outbox_core::db::pool("postgres://postgres@127.0.0.1/shop", 4)?;
//! outbox_core::migrate(&mut *pool.get().await.map_err(outbox_core::Error::from)?).await?;
//! # Ok(()) }
//! ```

mod capture;
pub mod cluster;
pub mod db;
mod error;
mod event;
mod migrate;
pub mod redact;
mod spec;
pub mod sql;
pub mod telemetry;
pub mod tls;

pub use capture::{Capture, capture_in_use, set_capture};
pub use error::Error;
pub use event::{DecodeError, Event, MAX_JSON_DEPTH};
pub use migrate::{SCHEMA_VERSION, SchemaStatus, migrate, schema_status};
pub use spec::{
    AuthSpec, BasicAuth, RelationSpec, SignatureSpec, TlsSpec, WebhookSpec, parse_duration,
};
