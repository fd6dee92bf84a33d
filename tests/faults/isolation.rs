//! Poison pills: events the relay cannot decode or route, among many good ones. Each bad one is
//! set aside with its reason (listed by `outbox-relay events unrouted`, kept in
//! `outbox.unroutable_events`, counted in `outbox_events_unroutable_total`, announced by a
//! `relay.event.unroutable` event), and every other event keeps flowing. `/readyz` stays 200
//! meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::rig::{RECOVERY, Rig, one_at_a_time};

/// Nesting depth of the deep documents: past the 128 levels the relay's JSON parser allows.
const DEPTH: usize = 130;
const GOOD_BEFORE: usize = 200;
const GOOD_AFTER: usize = 200;

/// A JSON object nested `depth` levels deep: {"a":{"a":...{}...}}
fn nested(depth: usize) -> String {
    format!(
        "{}{{}}{}",
        r#"{"a":"#.repeat(depth - 1),
        "}".repeat(depth - 1)
    )
}

/// A bad event the test wrote, and what `events unrouted` should say of it.
#[derive(Debug)]
struct Poison {
    event_id: i64,
    /// (event_type, entity, entity_id) when they are unambiguous (not for a duplicated id).
    names: Option<(&'static str, &'static str, &'static str)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_are_set_aside_while_every_other_event_flows() {
    let _serial = one_at_a_time().await;
    let rig = Rig::new().await;
    let client = rig.client().await;
    client
        .batch_execute(
            "CREATE TABLE docs (id bigint PRIMARY KEY, body jsonb NOT NULL);
             CREATE TRIGGER docs_outbox AFTER INSERT OR UPDATE OR DELETE ON docs
                 FOR EACH ROW EXECUTE FUNCTION outbox.capture('doc');
             CREATE TABLE orders (id text PRIMARY KEY);
             CREATE TRIGGER orders_outbox AFTER INSERT OR UPDATE OR DELETE ON orders
                 FOR EACH ROW EXECUTE FUNCTION outbox.capture('order');",
        )
        .await
        .expect("creating the business tables");
    let relay = rig.relay("a").await;

    let mut good = BTreeSet::new();
    for i in 0..GOOD_BEFORE {
        good.insert(emit(&client, &format!("good-{i}")).await);
    }
    let mut poisons = Vec::new();
    // 1. Too deep for the relay's parser, through outbox.emit.
    let deep: i64 = client
        .query_one(
            "SELECT outbox.emit('order.created', 'order', 'deep-emit', $1::text::jsonb)",
            &[&nested(DEPTH)],
        )
        .await
        .expect("emitting a deep event")
        .get(0);
    poisons.push(Poison {
        event_id: deep,
        names: Some(("order.created", "order", "deep-emit")),
    });
    // 2. Too deep, through capture() of a business jsonb column.
    client
        .execute(
            "INSERT INTO docs VALUES (1, $1::text::jsonb)",
            &[&nested(DEPTH)],
        )
        .await
        .expect("capturing a deep document");
    let captured: i64 = client
        .query_one(
            "SELECT id FROM outbox.captured_events WHERE event_type = 'doc.created'",
            &[],
        )
        .await
        .expect("the captured deep document")
        .get(0);
    poisons.push(Poison {
        event_id: captured,
        names: Some(("doc.created", "doc", "1")),
    });
    // 3. An id used twice: an emitted event's id given to a row written straight into
    //    outbox.captured_events, in the same transaction (so both are routed together).
    if let Some(id) = duplicate(
        &client,
        &["SELECT outbox.emit('order.created', 'order', 'dup-emitted', '{}'::jsonb)"],
        "INSERT INTO outbox.captured_events (id, event_type, entity, entity_id, data)
         VALUES ($1, 'order.created', 'order', 'dup-side-door', '{}')",
    )
    .await
    {
        poisons.push(Poison {
            event_id: id,
            names: None,
        });
    }
    // 4. An id used twice: a captured event's id reused by an INSERT into outbox.events with
    //    OVERRIDING SYSTEM VALUE.
    if let Some(id) = duplicate(
        &client,
        &[
            "INSERT INTO orders VALUES ('dup-captured')",
            "SELECT id FROM outbox.captured_events WHERE entity_id = 'dup-captured'",
        ],
        "INSERT INTO outbox.events (id, event_type, entity, entity_id)
         OVERRIDING SYSTEM VALUE VALUES ($1, 'order.created', 'order', 'dup-overriding')",
    )
    .await
    {
        poisons.push(Poison {
            event_id: id,
            names: None,
        });
    }
    for i in 0..GOOD_AFTER {
        good.insert(emit(&client, &format!("good-{}", GOOD_BEFORE + i)).await);
    }

    // Every good event flows, before and after the poison.
    let deadline = Instant::now() + RECOVERY;
    loop {
        let delivered: BTreeSet<String> = rig
            .receiver
            .requests()
            .iter()
            .filter(|r| r.answered && (200..300).contains(&r.status))
            .map(|r| r.path.trim_start_matches('/').to_string())
            .collect();
        let missing: Vec<&String> = good.difference(&delivered).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} good events were not delivered within {RECOVERY:?} of the poison, e.g. \
             {:?}\n--- relay (last lines)\n{}",
            missing.len(),
            good.len(),
            &missing[..missing.len().min(5)],
            relay.log_tail(10)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, body) = relay.get("/readyz").await.expect("/readyz answers");
    assert_eq!(status, 200, "/readyz while good events flow: {body}");

    // Each bad event is listed with its reason.
    let deadline = Instant::now() + RECOVERY;
    let listed = loop {
        let listed = unrouted(&rig.url);
        if let Ok(listed) = &listed
            && poisons.iter().all(|p| listed.contains_key(&p.event_id))
        {
            break listed.clone();
        }
        assert!(
            Instant::now() < deadline,
            "`events unrouted --json` does not list every poison {poisons:?} within {RECOVERY:?}: \
             {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for poison in &poisons {
        let entry = &listed[&poison.event_id];
        let reason = entry["reason"].as_str().unwrap_or_default();
        assert!(
            !reason.trim().is_empty(),
            "no reason for {poison:?}: {entry}"
        );
        let at = entry["set_aside_at"].as_str().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(at).is_ok(),
            "set_aside_at of {poison:?} is not RFC 3339: {entry}"
        );
        if let Some((event_type, entity, entity_id)) = poison.names {
            assert_eq!(
                (
                    entry["event_type"].as_str(),
                    entry["entity"].as_str(),
                    entry["entity_id"].as_str()
                ),
                (Some(event_type), Some(entity), Some(entity_id)),
                "{entry}"
            );
        }
    }
    let ids: Vec<i64> = poisons.iter().map(|p| p.event_id).collect();
    let kept: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox.unroutable_events WHERE event_id = ANY($1) AND reason <> ''",
            &[&ids],
        )
        .await
        .expect("reading outbox.unroutable_events")
        .get(0);
    assert_eq!(kept, poisons.len() as i64, "outbox.unroutable_events");
    let announced: BTreeSet<String> = client
        .query(
            "SELECT entity_id FROM outbox.events
             WHERE event_type = 'relay.event.unroutable' AND entity = 'event'
               AND data ? 'reason' AND data ? 'event_type'",
            &[],
        )
        .await
        .expect("reading relay.event.unroutable events")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in &ids {
        assert!(
            announced.contains(&id.to_string()),
            "no relay.event.unroutable event for event {id}; got {announced:?}"
        );
    }
    let counted = relay
        .metrics()
        .await
        .get("outbox_events_unroutable_total")
        .copied();
    assert!(
        counted >= Some(poisons.len() as f64),
        "outbox_events_unroutable_total = {counted:?}, {} events set aside",
        poisons.len()
    );
}

async fn emit(client: &tokio_postgres::Client, key: &str) -> String {
    client
        .execute(
            "SELECT outbox.emit('order.created', 'order', $1, '{}'::jsonb)",
            &[&key],
        )
        .await
        .expect("emitting a good event");
    key.to_string()
}

/// In one transaction: the statements of `first` (the last one returning an event id), then
/// `second` reusing that id. Returns the id, or `None` when the database refuses the second
/// insert (that door is closed: nothing bad was stored).
async fn duplicate(client: &tokio_postgres::Client, first: &[&str], second: &str) -> Option<i64> {
    client.batch_execute("BEGIN").await.expect("BEGIN");
    let (last, setup) = first.split_last().expect("a statement returning the id");
    for statement in setup {
        client.execute(*statement, &[]).await.expect(statement);
    }
    let id: i64 = client
        .query_one(*last, &[])
        .await
        .expect("the first event")
        .get(0);
    match client.execute(second, &[&id]).await {
        Ok(_) => {
            client.batch_execute("COMMIT").await.expect("COMMIT");
            Some(id)
        }
        Err(e) => {
            eprintln!("the database refused a duplicate event id ({e}); not expected unrouted");
            client.batch_execute("ROLLBACK").await.expect("ROLLBACK");
            None
        }
    }
}

/// `outbox-relay events unrouted --json`, by event id.
fn unrouted(url: &str) -> Result<BTreeMap<i64, serde_json::Value>, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .args(["events", "unrouted", "--json"])
        .env("DATABASE_URL", url)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let list: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("not a JSON array: {e}"))?;
    Ok(list
        .into_iter()
        .filter_map(|v| Some((v["event_id"].as_i64()?, v)))
        .collect())
}
