//! The native `capture` after schema changes on the outbox tables (issue 13, item 10): where its
//! fast path cannot write the row the way an INSERT would, it goes through the INSERT itself, so
//! business writes behave exactly as with the PL/pgSQL capture. Each test runs the same steps
//! against a fresh database per implementation and compares what each step did and every event
//! stored (ids included).

use outbox_core::Capture;
use outbox_testkit::TestDb;
use serde_json::Value;

use crate::support::*;

/// What one run left: each step's outcome (the error message for a failed one), every event as JSON
/// without its transaction and timestamp, and the rows of `check` (one jsonb per row).
#[derive(Debug, PartialEq)]
struct Run {
    steps: Vec<Result<(), String>>,
    events: Vec<Value>,
    checked: Vec<Value>,
}

const ORDERS: &str = "CREATE TABLE orders (id int PRIMARY KEY, status text);
    CREATE TRIGGER orders_outbox AFTER INSERT OR UPDATE OR DELETE ON orders
        FOR EACH ROW EXECUTE FUNCTION outbox.capture('order');";

/// Business writes, each its own transaction; order 13 is the one the tests' additions refuse.
const WRITES: [&str; 6] = [
    "INSERT INTO orders VALUES (1, 'new'), (2, 'new')",
    "INSERT INTO orders VALUES (13, 'new')",
    "UPDATE orders SET status = 'paid' WHERE id = 1",
    "UPDATE orders SET status = status",
    "DELETE FROM orders WHERE id = 2",
    "INSERT INTO orders VALUES (2, 'again')",
];

/// Runs `change` (DDL on the outbox tables, after the orders table and its trigger exist), then
/// `steps` (on connection 0 or 1 of two), then `check`, with `capture`; None where the native
/// library is missing (outside CI).
async fn run(capture: Capture, change: &str, steps: &[(usize, &str)], check: &str) -> Option<Run> {
    let db = TestDb::new().await;
    if !use_capture(&db, capture) {
        return None;
    }
    let sessions = [db.connect().await, db.connect().await];
    // (switching to native captured a probe row, which took an id)
    sessions[0]
        .batch_execute("SELECT setval(pg_get_serial_sequence('outbox.events', 'id'), 1, false)")
        .await
        .unwrap();
    sessions[0].batch_execute(ORDERS).await.unwrap();
    sessions[0]
        .batch_execute(change)
        .await
        .unwrap_or_else(|e| panic!("{change}: {}", outbox_core::db::describe(&e)));
    let mut outcomes = Vec::new();
    for (session, sql) in steps {
        outcomes.push(
            sessions[*session]
                .batch_execute(sql)
                .await
                // (the message alone: a failing row's detail holds its transaction id and time)
                .map_err(|e| match e.as_db_error() {
                    Some(db) => db.message().to_string(),
                    None => e.to_string(),
                }),
        );
    }
    let rows = |sql: String| {
        let client = &sessions[0];
        async move {
            client
                .query(&sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {}", outbox_core::db::describe(&e)))
                .iter()
                .map(|r| r.get::<_, Value>(0))
                .collect::<Vec<Value>>()
        }
    };
    let events =
        rows("SELECT to_jsonb(e) - 'txid' - 'created_at' FROM outbox.events e ORDER BY id".into())
            .await;
    let checked = if check.is_empty() {
        Vec::new()
    } else {
        rows(check.to_string()).await
    };
    Some(Run {
        steps: outcomes,
        events,
        checked,
    })
}

/// The steps' outcomes, events and checked rows with the native capture equal the PL/pgSQL
/// capture's; returns the PL/pgSQL run for the caller's own assertions on what happened.
async fn same_as_plpgsql(change: &str, steps: &[(usize, &str)], check: &str) -> Option<Run> {
    let plpgsql = run(Capture::Plpgsql, change, steps, check).await.unwrap();
    let native = run(Capture::Native, change, steps, check).await?;
    assert_eq!(native, plpgsql, "after {change}");
    Some(plpgsql)
}

fn writes() -> Vec<(usize, &'static str)> {
    WRITES.iter().map(|w| (0, *w)).collect()
}

/// The writes all succeeded except order 13's, which failed with `expected`; `events` captured.
fn refused_13(run: &Run, expected: &str, events: usize) {
    for (i, outcome) in run.steps.iter().enumerate() {
        match (i, outcome) {
            (1, Err(message)) => assert!(message.contains(expected), "{message}"),
            (1, Ok(())) => panic!("order 13 must be refused by {expected}"),
            (_, outcome) => assert_eq!(outcome, &Ok(()), "step {i}"),
        }
    }
    assert_eq!(run.events.len(), events, "{:#?}", run.events);
}

#[tokio::test]
async fn native_capture_obeys_a_check_on_captured_events() {
    let Some(run) = same_as_plpgsql(
        "ALTER TABLE outbox.captured_events ADD CONSTRAINT not_13 CHECK (entity_id <> '13')",
        &writes(),
        "",
    )
    .await
    else {
        return;
    };
    refused_13(&run, "not_13", 5);
}

#[tokio::test]
async fn native_capture_obeys_a_check_added_to_events_without_no_inherit() {
    let Some(run) = same_as_plpgsql(
        "ALTER TABLE outbox.events ADD CONSTRAINT not_13 CHECK (entity_id <> '13')",
        &writes(),
        "",
    )
    .await
    else {
        return;
    };
    refused_13(&run, "not_13", 5);
}

#[tokio::test]
async fn native_capture_fires_triggers_on_captured_events() {
    // A BEFORE trigger that changes the row, and an AFTER trigger that records it.
    let Some(run) = same_as_plpgsql(
        "CREATE TABLE audit (event_id bigint, event_type text);
         CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS
             'BEGIN NEW.metadata := jsonb_build_object(''stamped'', true); RETURN NEW; END';
         CREATE FUNCTION record() RETURNS trigger LANGUAGE plpgsql AS
             'BEGIN INSERT INTO audit VALUES (NEW.id, NEW.event_type); RETURN NULL; END';
         CREATE TRIGGER stamp BEFORE INSERT ON outbox.captured_events
             FOR EACH ROW EXECUTE FUNCTION stamp();
         CREATE TRIGGER record AFTER INSERT ON outbox.captured_events
             FOR EACH ROW EXECUTE FUNCTION record();",
        &writes(),
        "SELECT to_jsonb(a) FROM audit a ORDER BY event_id",
    )
    .await
    else {
        return;
    };
    assert_eq!(run.events.len(), 6);
    assert_eq!(
        run.checked.len(),
        6,
        "every event recorded: {:?}",
        run.checked
    );
    assert!(run.events.iter().all(|e| e["metadata"]["stamped"] == true));
}

#[tokio::test]
async fn native_capture_obeys_row_level_security_on_captured_events() {
    let Some(run) = same_as_plpgsql(
        "ALTER TABLE outbox.captured_events ENABLE ROW LEVEL SECURITY;
         ALTER TABLE outbox.captured_events FORCE ROW LEVEL SECURITY;
         CREATE POLICY everything ON outbox.captured_events USING (true);",
        &writes(),
        "",
    )
    .await
    else {
        return;
    };
    assert!(run.steps.iter().all(|s| s.is_ok()), "{:?}", run.steps);
    assert_eq!(run.events.len(), 6);
}

#[tokio::test]
async fn native_capture_applies_rules_on_captured_events() {
    let Some(run) = same_as_plpgsql(
        "CREATE TABLE ruled (entity_id text);
         CREATE RULE copy AS ON INSERT TO outbox.captured_events
             DO ALSO INSERT INTO ruled VALUES (NEW.entity_id);",
        &writes(),
        "SELECT to_jsonb(r) FROM ruled r ORDER BY entity_id",
    )
    .await
    else {
        return;
    };
    assert_eq!(run.checked.len(), 6, "{:?}", run.checked);
}

/// Events with an index of `definition` on captured_events: read through that index alone
/// (no sequential scans), `selects` must find `found` rows.
async fn with_index(definition: &str, selects: &str, found: i64) {
    let mut steps = writes();
    steps.push((0, "SET enable_seqscan = off"));
    let Some(run) = same_as_plpgsql(
        &format!("CREATE INDEX probe ON outbox.captured_events {definition};"),
        &steps,
        &format!(
            "SELECT jsonb_build_object('n', count(*)) FROM outbox.captured_events WHERE {selects}"
        ),
    )
    .await
    else {
        return;
    };
    assert_eq!(run.events.len(), 6);
    assert_eq!(run.checked, [serde_json::json!({ "n": found })]);
}

#[tokio::test]
async fn native_capture_writes_a_hash_index() {
    with_index("USING hash (entity_id)", "entity_id = '2'", 3).await;
}

#[tokio::test]
async fn native_capture_writes_a_gin_index() {
    with_index(
        "USING gin (data jsonb_path_ops)",
        "data @> '{\"status\": \"paid\"}'",
        1,
    )
    .await;
}

#[tokio::test]
async fn native_capture_writes_an_expression_index() {
    with_index(
        "(lower(event_type))",
        "lower(event_type) = 'order.created'",
        4,
    )
    .await;
}

#[tokio::test]
async fn native_capture_writes_a_partial_index() {
    with_index(
        "(entity_id) WHERE event_type = 'order.deleted'",
        "event_type = 'order.deleted' AND entity_id = '2'",
        1,
    )
    .await;
}

#[tokio::test]
async fn native_capture_obeys_a_unique_partial_index() {
    // Order 2 is created twice (step 6): refused as the INSERT refuses it.
    let Some(run) = same_as_plpgsql(
        "CREATE UNIQUE INDEX created_once ON outbox.captured_events (entity_id)
             WHERE event_type = 'order.created'",
        &writes(),
        "",
    )
    .await
    else {
        return;
    };
    assert!(
        matches!(&run.steps[5], Err(m) if m.contains("created_once")),
        "{:?}",
        run.steps
    );
    assert_eq!(run.events.len(), 5);
}

#[tokio::test]
async fn native_capture_fills_a_column_added_with_a_default_and_forgets_it_when_dropped() {
    let mut steps = writes();
    steps.extend([
        (0, "ALTER TABLE outbox.events DROP COLUMN tenant"),
        (0, "INSERT INTO orders VALUES (3, 'after')"),
    ]);
    let Some(run) = same_as_plpgsql(
        "ALTER TABLE outbox.events ADD COLUMN tenant text NOT NULL DEFAULT 'nl'",
        &steps,
        "",
    )
    .await
    else {
        return;
    };
    assert!(run.steps.iter().all(|s| s.is_ok()), "{:?}", run.steps);
    assert_eq!(run.events.len(), 7);
    // (read after the column was dropped again: only the last event proves the fast path is back)
    assert_eq!(run.events[6]["entity_id"], "3");
}

#[tokio::test]
async fn native_capture_follows_a_changed_id_default_and_a_recreated_id_sequence() {
    // Session 0 captures first, so anything it kept from then on would be stale; session 1
    // changes the schema under it.
    let steps = [
        (0, "INSERT INTO orders VALUES (1, 'new')"),
        // The identity sequence recreated (what a migration renumbering ids might do).
        (
            1,
            "BEGIN;
             ALTER TABLE outbox.captured_events ALTER COLUMN id DROP DEFAULT;
             ALTER TABLE outbox.events ALTER COLUMN id DROP IDENTITY;
             ALTER TABLE outbox.events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (START 7000);
             DO $$ BEGIN EXECUTE format(
                 'ALTER TABLE outbox.captured_events ALTER COLUMN id SET DEFAULT nextval(%L::regclass)',
                 pg_get_serial_sequence('outbox.events', 'id')); END $$;
             COMMIT;",
        ),
        (0, "INSERT INTO orders VALUES (2, 'new')"),
        // Another sequence in the default.
        (
            1,
            "CREATE SEQUENCE outbox.other START 9000;
             ALTER TABLE outbox.captured_events ALTER COLUMN id SET DEFAULT nextval('outbox.other')",
        ),
        (0, "INSERT INTO orders VALUES (3, 'new')"),
        // Dropped and created again under the same name.
        (
            1,
            "DROP SEQUENCE outbox.other CASCADE;
             CREATE SEQUENCE outbox.other START 5000;
             ALTER TABLE outbox.captured_events ALTER COLUMN id SET DEFAULT nextval('outbox.other')",
        ),
        (0, "INSERT INTO orders VALUES (4, 'new')"),
        // Another default for a column the fast path fills itself.
        (
            1,
            "ALTER TABLE outbox.captured_events ALTER COLUMN metadata SET DEFAULT '{\"via\": \"default\"}'",
        ),
        (0, "INSERT INTO orders VALUES (5, 'new')"),
    ];
    let Some(run) = same_as_plpgsql("", &steps, "").await else {
        return;
    };
    assert!(run.steps.iter().all(|s| s.is_ok()), "{:?}", run.steps);
    // (in id order: orders 1, 4, 5, 2, 3)
    let ids: Vec<i64> = run
        .events
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 5000, 5001, 7000, 9000]);
    assert_eq!(
        run.events[2]["metadata"]["via"], "default",
        "{:?}",
        run.events
    );
}
