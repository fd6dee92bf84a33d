//! The native `outbox.capture()` (extension/outbox_capture): it must write exactly what the
//! PL/pgSQL one writes, go through an INSERT where its fast path would write differently (see
//! native_fallback.rs for each schema change), need the privileges the INSERT needs, and leave
//! the indexes sound. The spine's capture tests run here against it too.

use outbox_core::Capture;
use outbox_testkit::TestDb;
use serde_json::Value;

use crate::support::*;
use crate::{capture_privileges, spine};

#[tokio::test]
async fn native_capture_delivers_committed_changes_once_each() {
    spine::changes_arrive_once_each(Capture::Native).await;
}

#[tokio::test]
async fn native_capture_rejects_bad_rows_and_misdeclared_triggers() {
    spine::bad_input_is_rejected(Capture::Native).await;
}

#[tokio::test]
async fn native_capture_notifies_only_while_the_router_asks_for_it() {
    spine::notify_only_when_asked(Capture::Native).await;
}

#[tokio::test]
async fn native_capture_works_for_a_producer_role_with_the_documented_grants() {
    capture_privileges::producer_role_privileges(Capture::Native).await;
}

#[tokio::test]
async fn native_capture_runs_a_producers_code_with_the_producers_rights() {
    capture_privileges::producer_code_runs_as_the_producer(Capture::Native).await;
}

#[tokio::test]
async fn native_capture_keeps_producers_working_after_the_upgrade_to_schema_5() {
    capture_privileges::upgrade_to_schema_5_keeps_producers(Capture::Native).await;
}

/// Row changes of many shapes: types that print differently in JSON, a dropped column, a value
/// stored out of line (TOAST), no-op updates, a key change, an upsert, a rolled-back savepoint,
/// a partitioned table with a row moving between partitions, several rows per statement.
const CHANGES: &str = "
    CREATE TABLE items (id bigint PRIMARY KEY, sku text, gone int, qty numeric, tags text[],
                        attrs jsonb, note text, ok boolean, at timestamptz);
    CREATE TRIGGER items_outbox AFTER INSERT OR UPDATE OR DELETE ON items
        FOR EACH ROW EXECUTE FUNCTION outbox.capture('item');
    ALTER TABLE items DROP COLUMN gone;
    CREATE TABLE parcels (code text NOT NULL, weight int) PARTITION BY RANGE (weight);
    CREATE TABLE parcels_light PARTITION OF parcels FOR VALUES FROM (0) TO (100);
    CREATE TABLE parcels_heavy PARTITION OF parcels FOR VALUES FROM (100) TO (MAXVALUE);
    CREATE TRIGGER parcels_outbox AFTER INSERT OR UPDATE OR DELETE ON parcels
        FOR EACH ROW EXECUTE FUNCTION outbox.capture('parcel', 'code');

    INSERT INTO items VALUES
        (1, 'a', 1.0, '{x,y}', '{\"k\": [1, {\"z\": null}], \"s\": \"\\u00e9\"}', NULL, true,
         '2026-01-01T00:00:00Z'),
        (2, 'ü ñ \"quoted\" \\ back', 2, NULL, NULL,
         (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i), NULL, NULL);
    UPDATE items SET qty = 1.00 WHERE id = 1;
    UPDATE items SET sku = sku;
    UPDATE items SET note = 'short', ok = false WHERE id = 2;
    UPDATE items SET id = 3 WHERE id = 1;
    INSERT INTO items (id, sku) VALUES (2, 'dup') ON CONFLICT (id) DO UPDATE SET sku = 'upserted';
    BEGIN;
    INSERT INTO items (id, sku) VALUES (10, 'kept');
    SAVEPOINT s;
    INSERT INTO items (id, sku) VALUES (11, 'undone');
    ROLLBACK TO s;
    UPDATE items SET qty = qty + 1 WHERE id IN (2, 3);
    COMMIT;
    INSERT INTO parcels VALUES ('P1', 5), ('P2', 500);
    UPDATE parcels SET weight = 150 WHERE code = 'P1';
    DELETE FROM items WHERE id = 3;
    DELETE FROM parcels;
";

/// (event_type, entity, entity_id, data, old, metadata, which transaction: 0 for the first seen)
type Captured = (String, String, String, Value, Option<Value>, Value, usize);

async fn captured(client: &tokio_postgres::Client) -> Vec<Captured> {
    let mut txids: Vec<String> = Vec::new();
    client
        .query(
            "SELECT event_type, entity, entity_id, data, old, metadata, txid::text
             FROM outbox.events ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let txid: String = r.get(6);
            let tx = txids.iter().position(|t| *t == txid).unwrap_or_else(|| {
                txids.push(txid);
                txids.len() - 1
            });
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                tx,
            )
        })
        .collect()
}

/// A database whose `capture` runs natively, with an `orders` table of `columns` captured as
/// `order`; None where the library is missing (outside CI, see [`use_capture`]).
async fn native_orders(columns: &str) -> Option<(TestDb, tokio_postgres::Client)> {
    let db = TestDb::new().await;
    if !use_capture(&db, Capture::Native) {
        return None;
    }
    let client = db.connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE orders ({columns});
             CREATE TRIGGER orders_outbox AFTER INSERT OR UPDATE OR DELETE ON orders
                 FOR EACH ROW EXECUTE FUNCTION outbox.capture('order');"
        ))
        .await
        .unwrap();
    Some((db, client))
}

/// Checks both btree indexes of captured_events against the table, every row included.
async fn assert_indexes_sound(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS amcheck;
             SELECT bt_index_check('outbox.captured_events_pkey', true);
             SELECT bt_index_check('outbox.captured_events_by_txid', true);",
        )
        .await
        .unwrap_or_else(|e| panic!("amcheck: {}", outbox_core::db::describe(&e)));
}

#[tokio::test]
async fn native_capture_writes_exactly_what_plpgsql_capture_writes() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    client.batch_execute(CHANGES).await.unwrap();
    let plpgsql = captured(&client).await;
    client
        .batch_execute("DROP TABLE items, parcels; DELETE FROM outbox.events")
        .await
        .unwrap();
    if !use_capture(&db, Capture::Native) {
        return;
    }
    client.batch_execute(CHANGES).await.unwrap();
    let native = captured(&client).await;

    assert!(plpgsql.len() >= 12, "the script captures: {plpgsql:#?}");
    assert_eq!(native.len(), plpgsql.len(), "{native:#?}");
    for (i, (n, p)) in native.iter().zip(&plpgsql).enumerate() {
        // (summarised: a data value is 13 kB)
        assert!(
            n == p,
            "event {i}: native {} {} tx {} / plpgsql {} {} tx {}; same data {}, old {}, metadata {}",
            n.0,
            n.2,
            n.6,
            p.0,
            p.2,
            p.6,
            n.3 == p.3,
            n.4 == p.4,
            n.5 == p.5
        );
    }
    // The out-of-line value arrived whole; the no-op updates and the undone savepoint did not.
    let long = plpgsql
        .iter()
        .find(|e| e.0 == "item.created" && e.2 == "2")
        .unwrap();
    assert_eq!(long.3["note"].as_str().unwrap().len(), 400 * 32);
    assert!(plpgsql.iter().all(|e| e.2 != "11"));
    let from_captured: i64 = client
        .query_one("SELECT count(*) FROM ONLY outbox.captured_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        from_captured as usize,
        native.len(),
        "all in captured_events"
    );
    assert_indexes_sound(&client).await;
}

#[tokio::test]
async fn concurrent_native_captures_keep_ids_unique_and_the_indexes_sound() {
    let Some((db, client)) = native_orders("id int PRIMARY KEY, n int NOT NULL").await else {
        return;
    };
    client
        .batch_execute("INSERT INTO orders SELECT i, 0 FROM generate_series(1, 8) i")
        .await
        .unwrap();
    // Eight sessions update their own order and one shared order, so some wait on row locks.
    let mut tasks = Vec::new();
    for worker in 1..=8 {
        let session = db.connect().await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                session
                    .batch_execute(&format!(
                        "BEGIN; UPDATE orders SET n = n + 1 WHERE id = {worker};
                         UPDATE orders SET n = n + 1 WHERE id = 1; COMMIT;"
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT id),
                    count(*) FILTER (WHERE entity_id = '1'),
                    max((data->>'n')::int) FILTER (WHERE entity_id = '1')
             FROM outbox.events",
            &[],
        )
        .await
        .unwrap();
    let (events, distinct, shared, last): (i64, i64, i64, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(events, 8 + 8 * 50 * 2);
    assert_eq!(distinct, events, "every id unique");
    assert_eq!(
        shared,
        1 + 50 * 2 + 7 * 50,
        "every change of the shared order"
    );
    assert_eq!(last, 50 * 2 + 7 * 50);
    // The shared order's events are in the order its changes happened.
    let ns: Vec<i32> = client
        .query(
            "SELECT (data->>'n')::int FROM outbox.events WHERE entity_id = '1' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(ns.windows(2).all(|w| w[1] == w[0] + 1), "{ns:?}");
    assert_indexes_sound(&client).await;
}

#[tokio::test]
async fn native_capture_goes_through_an_insert_while_it_must_and_comes_back() {
    let Some((_db, client)) = native_orders("id int PRIMARY KEY").await else {
        return;
    };
    client
        .batch_execute(
            "CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'",
        )
        .await
        .unwrap();
    // In one session, so what it knows of captured_events must follow each change both ways.
    let obstacles = [
        (
            "ALTER TABLE outbox.captured_events ADD CONSTRAINT short CHECK (length(entity_id) < 9)",
            "ALTER TABLE outbox.captured_events DROP CONSTRAINT short",
        ),
        (
            "CREATE TRIGGER audit AFTER INSERT ON outbox.captured_events FOR EACH ROW EXECUTE FUNCTION audit()",
            "DROP TRIGGER audit ON outbox.captured_events",
        ),
        (
            "ALTER TABLE outbox.captured_events ENABLE ROW LEVEL SECURITY",
            "ALTER TABLE outbox.captured_events DISABLE ROW LEVEL SECURITY",
        ),
        (
            "CREATE INDEX lower_type ON outbox.captured_events (lower(event_type))",
            "DROP INDEX outbox.lower_type",
        ),
        (
            "ALTER TABLE outbox.events ADD COLUMN tenant text",
            "ALTER TABLE outbox.events DROP COLUMN tenant",
        ),
    ];
    for (n, (obstacle, removal)) in obstacles.into_iter().enumerate() {
        client.batch_execute(obstacle).await.unwrap();
        client
            .batch_execute(&format!("INSERT INTO orders VALUES ({})", n + 100))
            .await
            .unwrap_or_else(|e| panic!("{obstacle}: {}", outbox_core::db::describe(&e)));
        client.batch_execute(removal).await.unwrap();
        client
            .batch_execute(&format!("INSERT INTO orders VALUES ({})", n + 200))
            .await
            .unwrap_or_else(|e| panic!("after {removal}: {}", outbox_core::db::describe(&e)));
    }
    // A column added and dropped again leaves a dropped column behind, which it fills as NULL.
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM outbox.events),
                    (SELECT count(DISTINCT id) FROM outbox.events)",
            &[],
        )
        .await
        .unwrap();
    let counts: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(counts, (10, 10, 10));
    assert_indexes_sound(&client).await;
}

#[tokio::test]
async fn switching_capture_takes_a_superuser_and_goes_both_ways() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let (code, out, _) = cli(&db, &["migrate"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("runs the plpgsql implementation"), "{out}");

    // A role that owns the schema but is no superuser may not install C code.
    let role = format!("owner_{}", &db.name[12..]);
    client
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN;
             GRANT CREATE ON DATABASE {} TO {role};
             ALTER SCHEMA outbox OWNER TO {role};
             ALTER FUNCTION outbox.capture() OWNER TO {role};
             GRANT SELECT ON outbox.schema_migrations TO {role};",
            db.name
        ))
        .await
        .unwrap();
    // (trust authentication, as on the test servers: a `user` parameter overrides the URL's)
    let as_owner = format!(
        "{}{}user={role}",
        db.url,
        if db.url.contains('?') { '&' } else { '?' }
    );
    let (code, _, err) = cli(
        &db,
        &["migrate", "--capture", "native"],
        &[("DATABASE_URL", &as_owner)],
    );
    assert_ne!(code, 0);
    assert!(err.contains("needs a superuser"), "{err}");
    assert_eq!(language(&client).await, "plpgsql");

    if use_capture(&db, Capture::Native) {
        assert_eq!(language(&client).await, "c");
        let (code, out, err) = cli(&db, &["migrate"], &[]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("runs the native implementation"), "{out}");
        let (code, out, err) = cli(&db, &["migrate", "--capture", "plpgsql"], &[]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("runs the plpgsql implementation"), "{out}");
        assert_eq!(language(&client).await, "plpgsql");
    }
    // The probes each switch makes leave no event behind.
    let events: i64 = client
        .query_one("SELECT count(*) FROM outbox.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 0);
    client
        .batch_execute(&format!(
            "ALTER SCHEMA outbox OWNER TO CURRENT_USER;
             ALTER FUNCTION outbox.capture() OWNER TO CURRENT_USER;
             DROP OWNED BY {role}; DROP ROLE {role};"
        ))
        .await
        .unwrap();
}

async fn language(client: &tokio_postgres::Client) -> String {
    client
        .query_one(
            "SELECT l.lanname::text FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
             WHERE p.oid = 'outbox.capture()'::regprocedure",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn both_captures_need_the_insert_privilege_an_insert_would() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let role = format!("columns_{}", &db.name[12..]);
    client
        .batch_execute(&format!(
            "CREATE ROLE {role};
             GRANT USAGE ON SCHEMA outbox TO {role};
             CREATE TABLE orders (id int PRIMARY KEY);
             GRANT INSERT ON orders TO {role};
             CREATE TRIGGER orders_outbox AFTER INSERT ON orders
                 FOR EACH ROW EXECUTE FUNCTION outbox.capture('order');"
        ))
        .await
        .unwrap();
    let insert_as_role =
        |n: i32| format!("SET ROLE {role}; INSERT INTO orders VALUES ({n}); RESET ROLE;");
    for (capture, base) in [(Capture::Plpgsql, 0), (Capture::Native, 10)] {
        if !use_capture(&db, capture) {
            break;
        }
        // Without INSERT on the sink, the business statement fails.
        let err = client
            .batch_execute(&insert_as_role(base + 1))
            .await
            .expect_err("no privilege on capture_sink");
        assert!(
            outbox_core::db::describe(&err).contains("permission denied for view capture_sink"),
            "{capture}: {}",
            outbox_core::db::describe(&err)
        );
        client.batch_execute("RESET ROLE").await.unwrap();
        // INSERT on the columns capture fills is enough, as for an INSERT naming them.
        client
            .batch_execute(&format!(
                "GRANT INSERT (event_type, entity, entity_id, data, old)
                     ON outbox.capture_sink TO {role}"
            ))
            .await
            .unwrap();
        client
            .batch_execute(&insert_as_role(base + 2))
            .await
            .unwrap_or_else(|e| panic!("{capture}: {}", outbox_core::db::describe(&e)));
        client
            .batch_execute(&format!(
                "REVOKE INSERT (event_type, entity, entity_id, data, old)
                     ON outbox.capture_sink FROM {role}"
            ))
            .await
            .unwrap();
    }
    let captured: Vec<String> = client
        .query("SELECT entity_id FROM outbox.events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    client
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .unwrap();
    assert!(
        captured == ["2", "12"] || captured == ["2"],
        "one capture per implementation tested: {captured:?}"
    );
}
