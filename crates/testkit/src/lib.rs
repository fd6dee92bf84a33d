//! Test harness for outbox-relay: a real Postgres for every test and a scriptable HTTP receiver.
//!
//! - [`TestDb::new`] creates a fresh database (and drops it afterwards) on the server named by
//!   `DATABASE_URL` (an admin URL), or on a private cluster started once per test process from the
//!   local `initdb`/`postgres` binaries. It is migrated by the product's own `migrate`.
//! - [`TestReceiver`] is an HTTP server on port 0 that records every request and answers as the
//!   test scripts it (status, delay, body, headers); [`TestReceiver::start_tls`] serves HTTPS
//!   with certificates from a [`tls::TestCa`], optionally requiring a client certificate.
//! - [`CrashableCluster`] is a private Postgres of one test's own, which it may crash
//!   (`pg_ctl stop -m immediate`), stop and start again on the same data directory and port.
//! - [`wait_until`] polls a condition with a deadline: tests never sleep to synchronise.

mod cluster;
mod db;
mod receiver;
pub mod tls;

pub use cluster::CrashableCluster;
pub use db::{TestDb, admin_url};
pub use receiver::{Received, Reply, TestReceiver};

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
