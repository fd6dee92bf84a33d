//! Retention reads only what it deletes: its statements reach the history through indexes, never
//! by scanning `outbox.deliveries_done`, `outbox.events` or `outbox.attempts` whole (which made each
//! batch cost as much as the table is long).

use chrono::{DateTime, Utc};
use outbox_core::sql;
use outbox_testkit::TestDb;
use serde_json::Value;

/// Tables that grow with the history: no retention statement may scan one of them.
const HISTORY: [&str; 4] = ["deliveries_done", "events", "captured_events", "attempts"];

/// `(node type, relation, index, under a Sort)` of every node of an `EXPLAIN (FORMAT JSON)` plan.
fn nodes(plan: &Value, sorted: bool, out: &mut Vec<Node>) {
    let text = |key: &str| plan[key].as_str().unwrap_or_default().to_string();
    let node = text("Node Type");
    let sorted = sorted || node == "Sort" || node == "Incremental Sort";
    out.push(Node {
        node,
        relation: text("Relation Name"),
        index: text("Index Name"),
        sorted,
    });
    for child in plan["Plans"].as_array().into_iter().flatten() {
        nodes(child, sorted, out);
    }
}

#[derive(Debug)]
struct Node {
    node: String,
    relation: String,
    index: String,
    /// Whether a Sort is above it: its rows are all read, then sorted.
    sorted: bool,
}

/// The plan of `statement` as the relay runs it (custom plans, the relay's parameter values).
async fn plan(
    client: &tokio_postgres::Client,
    statement: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<Node> {
    let explain = format!("EXPLAIN (FORMAT JSON) {statement}");
    let prepared = client.prepare(&explain).await.unwrap();
    // Bind as many of the values as the statement takes (they are listed in parameter order).
    let params = &params[..prepared.params().len()];
    let row = client.query_one(&prepared, params).await.unwrap();
    let json: Value = row.get(0);
    let mut out = Vec::new();
    nodes(&json[0]["Plan"], false, &mut out);
    out
}

/// Reads of a history table that are not bounded by the batch: whole-table scans, and scans whose
/// rows are all read to be sorted.
fn scans_of_history(plan: &[Node]) -> Vec<String> {
    plan.iter()
        .filter(|n| {
            HISTORY.contains(&n.relation.as_str())
                && (n.sorted
                    || matches!(
                        n.node.as_str(),
                        "Seq Scan" | "Bitmap Heap Scan" | "Tid Range Scan"
                    ))
        })
        .map(|n| {
            let sorted = if n.sorted { ", sorted" } else { "" };
            format!("{} on {}{sorted}", n.node, n.relation)
        })
        .collect()
}

#[tokio::test]
async fn retention_statements_read_the_history_through_indexes() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    // A history worth an index: 100,000 old events (half of them captured) with a finished
    // delivery and an attempt each (one in a hundred dead), and a few hundred deliveries queued.
    client
        .batch_execute(
            "INSERT INTO outbox.events (event_type, entity, entity_id, created_at)
             SELECT 'order.created', 'order', i::text, now() - interval '30 days' + i * interval '1 s'
             FROM generate_series(1, 50000) i;
             INSERT INTO outbox.captured_events (event_type, entity, entity_id, data, created_at)
             SELECT 'order.created', 'order', i::text, '{}', now() - interval '29 days' + i * interval '1 s'
             FROM generate_series(1, 50000) i;
             INSERT INTO outbox.deliveries_done (id, webhook_id, webhook, event_id, event_type, entity,
                 entity_id, status, attempts, priority, coalesced, created_at, updated_at)
             SELECT e.id, 1, 'w', e.id, e.event_type, e.entity, e.entity_id,
                    CASE WHEN e.id % 100 = 0 THEN 'dead' ELSE 'succeeded' END, 1, 0, 0,
                    e.created_at, e.created_at
             FROM outbox.events e WHERE e.id % 1000 <> 1;
             INSERT INTO outbox.attempts (delivery_id, attempt, started_at, outcome)
             SELECT d.id, 1, d.created_at, 'success' FROM outbox.deliveries_done d;
             INSERT INTO outbox.deliveries (webhook_id, webhook, event_id, event_type, entity, entity_id)
             SELECT 1, 'w', e.id, e.event_type, e.entity, e.entity_id
             FROM outbox.events e WHERE e.id % 1000 = 1;
             UPDATE outbox.router SET prev_snapshot = pg_current_snapshot(), cur_snapshot = pg_current_snapshot();
             ANALYZE outbox.events, outbox.captured_events, outbox.deliveries, outbox.deliveries_done, outbox.attempts;",
        )
        .await
        .unwrap();
    let cutoff: DateTime<Utc> = client
        .query_one("SELECT now() - interval '7 days'", &[])
        .await
        .unwrap()
        .get(0);
    let batch = outbox_relay::retention::BATCH;

    // A batch of deliveries, first and later: (cutoff, batch size, where the previous batch ended).
    let later: DateTime<Utc> = client
        .query_one("SELECT now() - interval '20 days'", &[])
        .await
        .unwrap()
        .get(0);
    for after in [None, Some(later)] {
        let deliveries = plan(
            &client,
            sql::RETENTION_DELIVERIES,
            &[&cutoff, &batch, &after, &50_000i64],
        )
        .await;
        assert_eq!(
            scans_of_history(&deliveries),
            Vec::<String>::new(),
            "a batch of deliveries scans the history: {deliveries:#?}"
        );
        assert!(
            deliveries.iter().any(|n| n.relation == "deliveries_done"
                && n.index == "deliveries_done_expiry"
                && !n.sorted),
            "a batch of deliveries does not read them in expiry order: {deliveries:#?}"
        );
    }
    // A batch of the event walk: (cutoff, last event examined, batch size).
    for after in [0i64, 50_000] {
        let events = plan(&client, sql::RETENTION_EVENTS, &[&cutoff, &after, &batch]).await;
        assert_eq!(
            scans_of_history(&events),
            Vec::<String>::new(),
            "a batch of the event walk scans the history: {events:#?}"
        );
    }
}
