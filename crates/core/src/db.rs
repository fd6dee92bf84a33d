//! Postgres connections: a pool for the relay's short transactions, plain connections for the rest.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{Client, Config, Socket};

use crate::Error;
use crate::tls::{self, MakeRustls, RustlsStream};

/// A parsed database URL: its connection settings and the TLS connector for its `sslmode`
/// (see [`crate::tls`]).
#[derive(Clone)]
pub struct Target {
    pub config: Config,
    pub tls: MakeRustls,
}

/// A connection's driver, whatever its `sslmode`.
pub type Connection = tokio_postgres::Connection<Socket, RustlsStream<Socket>>;

impl Target {
    /// Opens one connection; the caller drives the returned [`Connection`].
    pub async fn connect_raw(&self) -> Result<(Client, Connection), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

/// Parses a `postgres://` URL (or key=value connection string), naming the URL on error.
pub fn target(url: &str) -> Result<Target, Error> {
    let refuse = |reason: String| Error::DatabaseUrl {
        url: redact_url(url),
        reason,
    };
    let (rest, options) = tls::split_options(url).map_err(refuse)?;
    let mut config = Config::from_str(&rest).map_err(|e| refuse(e.to_string()))?;
    config.ssl_mode(options.mode);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("outbox-relay");
    }
    config.keepalives(true);
    let tls = tls::connector(&options).map_err(refuse)?;
    Ok(Target { config, tls })
}

/// A pool of at most `size` connections. Connections are opened lazily and replaced when broken;
/// each replacement of a lost connection counts in `outbox_db_reconnects_total`.
pub fn pool(url: &str, size: usize) -> Result<Pool, Error> {
    pool_from(target(url)?, size)
}

fn pool_from(target: Target, size: usize) -> Result<Pool, Error> {
    let manager = Manager::from_config(
        target.config,
        target.tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(15)))
        .pre_recycle(Hook::sync_fn(|client, _| {
            if client.is_closed() {
                // The server closed it (restart, failover, pg_terminate_backend, network): the pool
                // drops it and opens a new connection in its place.
                crate::telemetry::db_reconnect();
                return Err(HookError::message("connection closed"));
            }
            Ok(())
        }))
        .build()
        .map_err(|e| Error::Pool(e.to_string()))
}

/// The relay's own pool. Its sessions commit asynchronously (`synchronous_commit = off`): the
/// relay's bookkeeping (routing pages, claims, attempt records) then does not wait for a WAL flush
/// per transaction. A crash of the *database server* may forget the last fraction of a second of
/// that bookkeeping; the forgotten claims and results are redone, and the receivers see at most a
/// repeated attempt with the same `webhook-id`, which at-least-once delivery allows. Producers'
/// transactions are never affected.
pub fn relay_pool(url: &str, size: usize) -> Result<Pool, Error> {
    let mut target = target(url)?;
    let options = match target.config.get_options() {
        Some(existing) => format!("{existing} -c synchronous_commit=off"),
        None => "-c synchronous_commit=off".to_string(),
    };
    target.config.options(&options);
    pool_from(target, size)
}

/// One connection of its own, its driver running on the current runtime.
pub async fn connect(url: &str) -> Result<Client, Error> {
    connect_with(&target(url)?).await
}

pub async fn connect_with(target: &Target) -> Result<Client, Error> {
    let (client, connection) = target.connect_raw().await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// The message, detail and hint of a server error, or the client error, in one line.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(detail) = db.detail() {
                s.push_str(" (");
                s.push_str(detail);
                s.push(')');
            }
            if let Some(hint) = db.hint() {
                s.push_str("; hint: ");
                s.push_str(hint);
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                s.push_str(": ");
                s.push_str(&cause.to_string());
                source = cause.source();
            }
            s
        }
    }
}

/// Whether the error means the connection is gone (so reconnecting may help).
pub fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let c = code.code();
            // 08: connection exception, 57P0x: admin/crash shutdown, cannot connect now.
            c.starts_with("08") || c.starts_with("57P")
        }
        None => e.as_db_error().is_none(),
    }
}

/// Whether the statement failed because of the data of some row it wrote (a data exception, an
/// integrity constraint, a value too large for an index), so that writing the other rows alone
/// may succeed: classes 22, 23 and 54 of SQLSTATE. Connection, lock, timeout and privilege errors
/// are not: they say nothing about any one row.
pub fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|code| matches!(&code.code()[..2], "22" | "23" | "54"))
}

/// `url` (a `postgres://` URL or a key=value connection string) with its database replaced.
pub fn with_database(url: &str, database: &str) -> String {
    if !url.contains("://") {
        return format!("{url} dbname={database}");
    }
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// The URL with any password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[scheme_end + 3 + at..]
                );
            }
        }
        return url.to_string();
    }
    // key=value form: hide password=...
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn database_names_are_replaced() {
        use super::with_database;
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("host=h user=u", "x"),
            "host=h user=u dbname=x"
        );
    }

    #[test]
    fn tls_settings_come_from_sslmode_and_sslrootcert() {
        use crate::tls::{Check, split_options};
        use tokio_postgres::config::SslMode;
        let cases = [
            (
                "postgres://u@db/shop",
                "postgres://u@db/shop",
                SslMode::Disable,
                Check::Nothing,
            ),
            (
                "postgres://u@db/shop?sslmode=require&application_name=x",
                "postgres://u@db/shop?application_name=x",
                SslMode::Require,
                Check::Nothing,
            ),
            (
                "postgres://u@db/shop?sslmode=verify-full",
                "postgres://u@db/shop",
                SslMode::Require,
                Check::Full,
            ),
            (
                "postgres://u@db/shop?sslmode=require&sslrootcert=%2Fetc%2Fca.pem",
                "postgres://u@db/shop",
                SslMode::Require,
                Check::Chain,
            ),
            (
                "host=db sslmode=prefer user=u",
                "host=db  user=u",
                SslMode::Prefer,
                Check::Nothing,
            ),
            (
                "host=db password='a  b' sslmode=require",
                "host=db password='a  b'",
                SslMode::Require,
                Check::Nothing,
            ),
            (
                "host=db sslmode='verify-ca'",
                "host=db",
                SslMode::Require,
                Check::Chain,
            ),
        ];
        for (url, rest, mode, check) in cases {
            let (got_rest, options) = split_options(url).unwrap();
            assert_eq!(got_rest, rest, "{url}");
            assert_eq!((options.mode, options.check), (mode, check), "{url}");
        }
        let (_, options) =
            split_options("postgres://db/x?sslrootcert=%2Fetc%2Fca.pem&sslmode=verify-ca").unwrap();
        assert_eq!(options.root_cert.as_deref(), Some("/etc/ca.pem"));
        let (_, options) = split_options("postgres://db/x?sslrootcert=%C3%A9%zz%").unwrap();
        assert_eq!(options.root_cert.as_deref(), Some("é%zz%"));

        let err = super::target("postgres://relay:s3cret@db/shop?sslmode=always")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("sslmode=always is not one of"), "{err}");
        let err = super::target("host=db sslmode=verify-full sslcert=/etc/client.pem")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("sslcert: client certificates"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err =
            super::target("postgres://db/shop?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
                .err()
                .unwrap()
                .to_string();
        assert!(
            err.contains("sslrootcert: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://relay:s3cret@db:5432/shop"),
            "postgres://relay:***@db:5432/shop"
        );
        assert_eq!(
            redact_url("postgres://relay@db/shop"),
            "postgres://relay@db/shop"
        );
        assert_eq!(
            redact_url("host=db password=s3cret user=x"),
            "host=db password=*** user=x"
        );
    }
}
