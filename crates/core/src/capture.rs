//! Which implementation `outbox.capture()` runs.
//!
//! Every migration defines `capture` in PL/pgSQL, which works on any Postgres, managed ones
//! included. The native implementation (`extension/outbox_capture`, a C library installed on the
//! database server) does the same and writes the same events at about half the cost to the
//! business transaction, because it stores the event row itself instead of running an INSERT
//! statement per captured row. Switching replaces the function's body in place, so every existing
//! capture trigger follows, and takes a superuser (a C function is untrusted code).

use std::fmt;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::Error;
use crate::migrate::MIGRATE_LOCK;
use crate::sql::MIGRATIONS;

/// An implementation of `outbox.capture()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// The PL/pgSQL function the migrations create.
    Plpgsql,
    /// The C function of the `outbox_capture` library in the server's `$libdir`.
    Native,
}

impl fmt::Display for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capture::Plpgsql => "plpgsql",
            Capture::Native => "native",
        })
    }
}

/// The library's entry point for schema 5 and later: one built before `outbox.capture_sink`
/// existed lacks it (and would refuse every producer there), so switching to it fails cleanly.
const NATIVE: &str = "CREATE OR REPLACE FUNCTION outbox.capture() RETURNS trigger LANGUAGE c
    AS '$libdir/outbox_capture', 'outbox_capture_schema5'";

/// Before a switch commits, one captured row proves the new function works against this schema;
/// the savepoint takes the row (and any NOTIFY) back.
const PROBE: &str = "SAVEPOINT capture_probe;
    CREATE TEMP TABLE outbox_capture_probe (id int);
    CREATE TRIGGER probe_outbox AFTER INSERT ON outbox_capture_probe
        FOR EACH ROW EXECUTE FUNCTION outbox.capture('outbox_capture_probe');
    INSERT INTO outbox_capture_probe VALUES (1);";

/// The implementation `outbox.capture()` runs now.
pub async fn capture_in_use(client: &Client) -> Result<Capture, Error> {
    let language: String = client
        .query_one(
            "SELECT l.lanname::text FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
             WHERE p.oid = 'outbox.capture()'::regprocedure",
            &[],
        )
        .await?
        .get(0);
    Ok(if language == "c" {
        Capture::Native
    } else {
        Capture::Plpgsql
    })
}

/// Makes `outbox.capture()` run `to`, in one transaction: the switch commits only once a probe
/// row was captured through it. Needs schema `outbox` at this build's version; waits for a
/// concurrent `migrate`.
pub async fn set_capture(client: &mut Client, to: Capture) -> Result<(), Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await?;
    let define = match to {
        Capture::Plpgsql => plpgsql_definition(),
        Capture::Native => NATIVE,
    };
    tx.batch_execute(define).await.map_err(native_error)?;
    tx.batch_execute(PROBE).await.map_err(native_error)?;
    let captured: i64 = tx
        .query_one(
            "SELECT count(*) FROM outbox.captured_events
             WHERE entity = 'outbox_capture_probe' AND txid = pg_current_xact_id()",
            &[],
        )
        .await?
        .get(0);
    if captured != 1 {
        return Err(Error::Capture(format!(
            "the {to} outbox.capture wrote {captured} events for one probe row instead of 1; nothing was changed"
        )));
    }
    tx.batch_execute("ROLLBACK TO SAVEPOINT capture_probe")
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The PL/pgSQL `CREATE OR REPLACE FUNCTION outbox.capture()` of the newest migration that has one.
fn plpgsql_definition() -> &'static str {
    const START: &str = "CREATE OR REPLACE FUNCTION outbox.capture()";
    const END: &str = "\n$$;";
    MIGRATIONS
        .iter()
        .rev()
        .find_map(|(_, _, sql)| {
            let start = sql.find(START)?;
            let len = sql[start..].find(END)? + END.len();
            Some(&sql[start..start + len])
        })
        .expect("a migration defines outbox.capture()")
}

/// Says what a failed switch to the native library means and what to do about it.
fn native_error(e: tokio_postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        return Error::Db(e);
    };
    let message = db.message();
    let what = if db.code() == &SqlState::INSUFFICIENT_PRIVILEGE && message.contains("language c") {
        "switching outbox.capture to the native library needs a superuser (a C function is untrusted code); run it as one"
            .to_string()
    } else if db.code() == &SqlState::UNDEFINED_FILE {
        "the outbox_capture library is not installed on the database server: build and install extension/outbox_capture there (see docs/operations.md, \"Native capture\")"
            .to_string()
    } else if message.contains("incompatible library") {
        format!(
            "the installed outbox_capture library was built for another Postgres major version ({message}); rebuild it on the database server"
        )
    } else if db.code() == &SqlState::UNDEFINED_FUNCTION {
        format!(
            "the installed outbox_capture library does not have the function this relay needs ({message}); install the one from this release"
        )
    } else {
        return Error::Capture(format!(
            "switching outbox.capture failed, nothing was changed: {}",
            crate::db::describe(&e)
        ));
    };
    Error::Capture(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plpgsql_definition_is_the_newest_migrations_whole_statement() {
        let sql = plpgsql_definition();
        assert!(sql.starts_with(
            "CREATE OR REPLACE FUNCTION outbox.capture() RETURNS trigger LANGUAGE plpgsql"
        ));
        assert!(sql.ends_with("END\n$$;"), "{sql}");
        assert!(
            sql.contains("INSERT INTO outbox.capture_sink"),
            "schema 5's capture writes through the sink"
        );
        assert_eq!(sql.matches("$$").count(), 2, "one function body: {sql}");
    }
}
