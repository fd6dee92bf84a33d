//! Related records of a claimed batch, loaded with one statement per relation, give every event
//! exactly what loading it on its own gives: values, nulls, missing and surplus rows, failures of
//! one event, queries that cannot be batched, undefined relations.

use std::time::Duration;

use outbox_core::Event;
use outbox_sender::related::{self, Batching, Lookup, Relations};
use outbox_testkit::TestDb;
use serde_json::{Value, json};

const TABLES: &str = "
    CREATE TABLE orders (id bigint PRIMARY KEY, code text NOT NULL);
    INSERT INTO orders SELECT i, 'SO-' || i FROM generate_series(1, 20) i;";

fn relations() -> Relations {
    [
        // jsonb, one row or none
        (
            "order",
            "SELECT to_jsonb(o) FROM orders o WHERE o.id = ($1->>'order_id')::bigint",
        ),
        // json rather than jsonb
        (
            "order_json",
            "SELECT row_to_json(o) FROM orders o WHERE o.id = ($1->>'order_id')::bigint;",
        ),
        // a NULL value
        ("nothing", "SELECT NULL::jsonb"),
        // the data itself, reshaped
        (
            "twice",
            "SELECT jsonb_build_object('id', $1->'id', 'twice', ($1->>'id')::int * 2)",
        ),
        // too many rows for some events
        (
            "lines",
            "SELECT to_jsonb(x) FROM generate_series(1, ($1->>'lines')::int) x",
        ),
        // fails for one event only (division by zero when id = 5)
        ("pace", "SELECT to_jsonb(100 / (($1->>'id')::int - 5))"),
        // not json: cannot be a batch function, fails per event
        ("number", "SELECT 1"),
        // writes: refused in the read-only transaction
        (
            "writer",
            "INSERT INTO orders VALUES (($1->>'id')::bigint + 100, 'x') RETURNING to_jsonb(id)",
        ),
    ]
    .into_iter()
    .map(|(name, query)| {
        (
            ("shipment".to_string(), name.to_string()),
            query.to_string(),
        )
    })
    .collect()
}

fn event(id: i64, data: Value) -> Event {
    Event {
        id,
        event_type: "shipment.created".into(),
        entity: "shipment".into(),
        entity_id: id.to_string(),
        data,
        old: None,
        metadata: json!({}),
        created_at: chrono::Utc::now(),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| n.to_string()).collect()
}

#[tokio::test]
async fn batched_related_records_equal_what_each_event_gets_alone() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    client.batch_execute(TABLES).await.unwrap();
    let relations = relations();
    let events: Vec<Event> = (1..=12)
        .map(|id| {
            // 11 has no order; 3 and 8 get several lines
            let order_id = if id == 11 { 999 } else { id };
            let lines = if id % 5 == 3 { 2 } else { 1 };
            event(id, json!({"id": id, "order_id": order_id, "lines": lines}))
        })
        .collect();
    let batchable = names(&["lines", "nothing", "order", "order_json", "twice"]);
    let everything = names(&[
        "lines",
        "nothing",
        "number",
        "order",
        "order_json",
        "pace",
        "twice",
        "writer",
    ]);
    let undefined = names(&["order", "zzz"]);
    let lookups: Vec<Lookup<'_>> = events
        .iter()
        .map(|e| Lookup {
            names: match e.id {
                1..=4 => &batchable,
                6 => &undefined,
                7 => &everything,
                _ => &batchable[2..], // order, order_json, twice
            },
            event: e,
        })
        .collect();
    let timeout = Duration::from_secs(5);
    let alone = related::load_many(&client, &relations, &lookups, timeout).await;
    let batching = Batching::default();
    for round in 0..2 {
        // the second round finds the functions already there
        let batched =
            related::load_batched(&client, 1, &relations, &lookups, timeout, &batching).await;
        assert_eq!(batched, alone, "round {round}");
    }
    // A pooler that resets sessions drops the functions behind the relay's back: made again.
    client.batch_execute("DISCARD TEMP").await.unwrap();
    let batched = related::load_batched(&client, 1, &relations, &lookups, timeout, &batching).await;
    assert_eq!(batched, alone, "after DISCARD TEMP");
    // Sanity of the expectation itself: values, a null, a missing row, too many rows, errors.
    assert_eq!(alone[0].as_ref().unwrap()["order"]["code"], "SO-1");
    assert_eq!(alone[0].as_ref().unwrap()["order_json"]["code"], "SO-1");
    assert_eq!(alone[0].as_ref().unwrap()["nothing"], Value::Null);
    assert_eq!(alone[1].as_ref().unwrap()["twice"]["twice"], 4);
    assert!(matches!(
        alone[2],
        Err(related::RelatedError::TooManyRows { rows: 2, .. })
    ));
    assert!(matches!(
        alone[5],
        Err(related::RelatedError::Undefined { .. })
    ));
    assert!(matches!(
        alone[10],
        Err(related::RelatedError::NoRow { .. })
    ));
    assert!(
        matches!(&alone[6], Err(related::RelatedError::Failed { name, .. }) if name == "number")
    );

    // Every relation that returns json or jsonb became a function of this session (the writer
    // too: Postgres refuses it only when it runs, and then its events ran alone); `number` not.
    let bodies: std::collections::BTreeSet<String> = client
        .query(
            "SELECT prosrc FROM pg_proc
             WHERE pronamespace = pg_my_temp_schema() AND proname LIKE 'outbox_relation_%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>(0).trim().to_string())
        .collect();
    let expected: std::collections::BTreeSet<String> = relations
        .iter()
        .filter(|((_, name), _)| name != "number")
        .map(|(_, query)| query.clone())
        .collect();
    assert_eq!(bodies, expected);
    // Nothing was written, and the connection is not left in a transaction.
    let orders: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 20);
    client
        .execute("UPDATE orders SET code = code", &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_batch_over_the_statement_timeout_falls_back_to_each_event_and_its_own_timeout() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    client.batch_execute(TABLES).await.unwrap();
    let relations: Relations = [(
        ("shipment".to_string(), "slow".to_string()),
        "SELECT to_jsonb(pg_sleep(CASE WHEN ($1->>'id')::int = 2 THEN 10 ELSE 0.05 END)::text)"
            .to_string(),
    )]
    .into_iter()
    .collect();
    let events: Vec<Event> = (1..=3).map(|id| event(id, json!({"id": id}))).collect();
    let slow = names(&["slow"]);
    let lookups: Vec<Lookup<'_>> = events
        .iter()
        .map(|e| Lookup {
            names: &slow,
            event: e,
        })
        .collect();
    let batched = related::load_batched(
        &client,
        1,
        &relations,
        &lookups,
        Duration::from_millis(1000),
        &Batching::default(),
    )
    .await;
    assert_eq!(batched[0].as_ref().unwrap()["slow"], "");
    assert_eq!(batched[2].as_ref().unwrap()["slow"], "");
    let text = batched[1].as_ref().unwrap_err().to_string();
    assert!(text.contains("statement timeout"), "{text}");
}
