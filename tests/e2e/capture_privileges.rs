//! What a producer role needs to capture, and what it may not do (issue 13, item 5): capture
//! writes through the view `outbox.capture_sink`, producers hold INSERT on that view and no longer
//! on `outbox.captured_events`, and nothing of capture runs with another role's rights. Each is
//! also run with the native capture (native.rs).

use outbox_core::Capture;
use outbox_testkit::TestDb;

use crate::spine::{assert_rejected, schema_at_version, versions_after};
use crate::support::*;

#[tokio::test]
async fn a_producer_role_needs_insert_on_events_and_the_capture_sink_and_the_id_column() {
    producer_role_privileges(Capture::Plpgsql).await;
}

/// A producer role with the documented grants can capture and emit, and cannot write captured
/// events around capture.
pub async fn producer_role_privileges(capture: Capture) {
    let db = TestDb::new().await;
    if !use_capture(&db, capture) {
        return;
    }
    let client = db.connect().await;
    let role = format!("producer_{}", &db.name[12..]);
    client
        .batch_execute(&format!(
            "CREATE ROLE {role};
             GRANT USAGE ON SCHEMA outbox TO {role};
             GRANT INSERT, SELECT (id) ON outbox.events TO {role};
             GRANT INSERT ON outbox.capture_sink TO {role};
             CREATE TABLE orders (id int PRIMARY KEY);
             GRANT INSERT ON orders TO {role};
             CREATE TRIGGER orders_outbox AFTER INSERT ON orders
                 FOR EACH ROW EXECUTE FUNCTION outbox.capture('order');"
        ))
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for (n, wanted) in [(1, 1), (2, 0)] {
        outcomes.push(
            client
                .batch_execute(&format!(
                    "SELECT setval('outbox.notify_wanted', {wanted});
                     SET ROLE {role};
                     INSERT INTO orders VALUES ({n});
                     SELECT outbox.emit('order.note', 'order', '{n}');
                     RESET ROLE;"
                ))
                .await
                .map_err(|e| outbox_core::db::describe(&e)),
        );
        client.batch_execute("RESET ROLE").await.unwrap();
    }
    // No side door: not into the table (an id of its choosing would collide), and through the
    // view only what the producer checks of outbox.events allow.
    for (sql, expected) in [
        (
            "INSERT INTO outbox.captured_events (id, event_type, entity, entity_id)
             VALUES (1, 'order.created', 'order', '1')",
            "permission denied for table captured_events",
        ),
        (
            "INSERT INTO outbox.captured_events (event_type, entity, entity_id)
             VALUES ('order.created', 'order', '1')",
            "permission denied for table captured_events",
        ),
        (
            "INSERT INTO outbox.capture_sink (event_type, entity, entity_id)
             VALUES ('order.created', 'order', '')",
            "violates check option for view \"capture_sink\"",
        ),
        (
            "INSERT INTO outbox.capture_sink (event_type, entity, entity_id, data)
             VALUES ('order.created', 'order', '1', '[]')",
            "violates check option for view \"capture_sink\"",
        ),
    ] {
        assert_rejected(&client, &format!("SET ROLE {role}; {sql}"), expected).await;
        client.batch_execute("RESET ROLE").await.unwrap();
    }
    let events: i64 = client
        .query_one("SELECT count(*) FROM outbox.events", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .unwrap();
    assert_eq!(outcomes, [Ok(()), Ok(())]);
    assert_eq!(events, 4);
}

#[tokio::test]
async fn capture_runs_a_producers_code_with_the_producers_rights() {
    producer_code_runs_as_the_producer(Capture::Plpgsql).await;
}

/// `to_jsonb` of a row calls a cast to json that the owner of a column's type defined: that code
/// must run as the role whose statement fired capture, never as the outbox schema's owner (which
/// a SECURITY DEFINER capture would do).
pub async fn producer_code_runs_as_the_producer(capture: Capture) {
    let db = TestDb::new().await;
    if !use_capture(&db, capture) {
        return;
    }
    let client = db.connect().await;
    let role = format!("producer_{}", &db.name[12..]);
    client
        .batch_execute(&format!(
            "CREATE ROLE {role};
             CREATE SCHEMA shop AUTHORIZATION {role};
             GRANT USAGE ON SCHEMA outbox TO {role};
             GRANT INSERT ON outbox.events, outbox.capture_sink TO {role};"
        ))
        .await
        .unwrap();
    let produced = client
        .batch_execute(&format!(
            "SET ROLE {role};
             CREATE TYPE shop.mood AS ENUM ('calm');
             CREATE TABLE shop.seen (who text);
             CREATE FUNCTION shop.mood_json(shop.mood) RETURNS json LANGUAGE sql AS
                 'INSERT INTO shop.seen VALUES (current_user); SELECT to_json($1::text)';
             CREATE CAST (shop.mood AS json) WITH FUNCTION shop.mood_json(shop.mood);
             CREATE TABLE shop.orders (id int PRIMARY KEY, mood shop.mood);
             CREATE TRIGGER orders_outbox AFTER INSERT ON shop.orders
                 FOR EACH ROW EXECUTE FUNCTION outbox.capture('order');
             INSERT INTO shop.orders VALUES (1, 'calm');
             RESET ROLE;"
        ))
        .await
        .map_err(|e| outbox_core::db::describe(&e));
    client.batch_execute("RESET ROLE").await.unwrap();
    let seen: Vec<String> = match &produced {
        Ok(()) => client
            .query("SELECT who FROM shop.seen", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect(),
        Err(_) => Vec::new(),
    };
    let data: Vec<serde_json::Value> = client
        .query("SELECT data FROM outbox.events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    client
        .batch_execute(&format!(
            "DROP SCHEMA shop CASCADE; DROP OWNED BY {role}; DROP ROLE {role}"
        ))
        .await
        .unwrap();
    assert_eq!(produced, Ok(()));
    assert_eq!(seen, [role], "the cast ran once, as the producer");
    assert_eq!(data, [serde_json::json!({"id": 1, "mood": "calm"})]);
}

#[tokio::test]
async fn the_upgrade_to_schema_5_keeps_producers_capturing_and_closes_the_side_door() {
    upgrade_to_schema_5_keeps_producers(Capture::Plpgsql).await;
}

/// Producer roles granted what schema 3 asked for (INSERT on captured_events, or on the columns
/// capture fills) capture after the upgrade, and may no longer write captured_events directly.
pub async fn upgrade_to_schema_5_keeps_producers(capture: Capture) {
    let db = TestDb::empty().await;
    let mut client = db.connect().await;
    let table = format!("table_{}", &db.name[12..]);
    let columns = format!("columns_{}", &db.name[12..]);
    client
        .batch_execute(&format!(
            "{}
             CREATE ROLE {table}; CREATE ROLE {columns};
             GRANT USAGE ON SCHEMA outbox TO {table}, {columns};
             GRANT INSERT ON outbox.events TO {table}, {columns};
             GRANT INSERT ON outbox.captured_events TO {table};
             GRANT INSERT (event_type, entity, entity_id, data, old)
                 ON outbox.captured_events TO {columns};
             CREATE TABLE orders (id int PRIMARY KEY);
             GRANT INSERT ON orders TO {table}, {columns};
             CREATE TRIGGER orders_outbox AFTER INSERT ON orders
                 FOR EACH ROW EXECUTE FUNCTION outbox.capture('order');",
            schema_at_version(3)
        ))
        .await
        .unwrap();
    let applied = outbox_core::migrate(&mut client).await.unwrap();
    assert_eq!(applied, versions_after(3));
    if !use_capture(&db, capture) {
        return;
    }
    let mut outcomes = Vec::new();
    for (n, role) in [(1, &table), (2, &columns)] {
        outcomes.push(
            client
                .batch_execute(&format!(
                    "SET ROLE {role}; INSERT INTO orders VALUES ({n}); RESET ROLE;"
                ))
                .await
                .map_err(|e| outbox_core::db::describe(&e)),
        );
        client.batch_execute("RESET ROLE").await.unwrap();
    }
    let direct: Vec<bool> = client
        .query(
            "SELECT has_any_column_privilege(r, 'outbox.captured_events', 'INSERT')
             FROM unnest(ARRAY[$1, $2]) r",
            &[&table, &columns],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let events: i64 = client
        .query_one("SELECT count(*) FROM outbox.events", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(&format!(
            "DROP OWNED BY {table}, {columns}; DROP ROLE {table}, {columns}"
        ))
        .await
        .unwrap();
    assert_eq!(outcomes, [Ok(()), Ok(())]);
    assert_eq!(events, 2);
    assert_eq!(direct, [false, false], "no INSERT on captured_events left");
}
