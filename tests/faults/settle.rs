//! After the last fault: wait (with a deadline) until every stored event is delivered and
//! recorded, then judge the receiver's record ([`crate::verdict`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::producers::Commits;
use crate::relay::RelayProcess;
use crate::rig::{RECOVERY, Rig};
use crate::verdict::{judge, key, succeeded};

/// The keys of the `order` events in the database: every event that exists, whoever wrote it.
async fn stored_keys(client: &tokio_postgres::Client) -> BTreeSet<String> {
    client
        .query(
            "SELECT entity_id FROM outbox.events WHERE entity = 'order'",
            &[],
        )
        .await
        .expect("reading outbox.events")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// How far the delivery log is: (succeeded `order` deliveries, deliveries still queued).
async fn recorded(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM outbox.delivery_log
                     WHERE entity = 'order' AND status = 'succeeded'),
                    (SELECT count(*) FROM outbox.deliveries)",
            &[],
        )
        .await
        .expect("reading the delivery log");
    (row.get(0), row.get(1))
}

/// Waits (at most [`RECOVERY`]) until every stored event was delivered and recorded, then asserts
/// 1-3 of the module docs, reporting every problem at once. Call it right after the last fault.
pub async fn settle_and_judge(rig: &Rig, commits: &Commits, relays: &[&RelayProcess]) {
    let client = rig.client().await;
    let leases: f64 = client
        .query_one(
            "SELECT coalesce(extract(epoch FROM max(lease_until) - now()), 0)::float8
             FROM outbox.deliveries WHERE status = 'in_flight'",
            &[],
        )
        .await
        .expect("reading the outstanding leases")
        .get(0);
    let bound = RECOVERY.max(Duration::from_secs_f64(leases.max(0.0)) + Duration::from_secs(30));
    let deadline = Instant::now() + bound;
    let mut problems = Vec::new();
    let stored = loop {
        let stored = stored_keys(&client).await;
        let delivered: BTreeSet<String> = rig
            .receiver
            .requests()
            .iter()
            .filter(|r| succeeded(r))
            .map(|r| key(r).to_string())
            .collect();
        let (done, queued) = recorded(&client).await;
        let all_delivered = stored.is_subset(&delivered);
        if all_delivered && queued == 0 && done == stored.len() as i64 {
            break stored;
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "not recovered {bound:?} after the last fault: {} events, {} delivered with a 2xx, \
                 {done} recorded succeeded, {queued} still queued",
                stored.len(),
                stored.intersection(&delivered).count(),
            ));
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let unacknowledged: Vec<&String> = commits.committed.difference(&stored).collect();
    if !unacknowledged.is_empty() {
        problems.push(format!(
            "{} commits acknowledged to producers are missing from outbox.events, e.g. {:?}",
            unacknowledged.len(),
            &unacknowledged[..unacknowledged.len().min(10)]
        ));
    }
    let requests = rig.receiver.requests();
    let faults = rig.faults();
    let verdict = judge(&requests, &stored, &faults);
    problems.extend(verdict.problems());
    eprintln!(
        "faults: {} events ({} commits acknowledged, {} unknown of which {} stored), {} requests, \
         {} faults, {} re-sends of a 2xx in flight at a fault (answered up to {} ms before it)",
        stored.len(),
        commits.committed.len(),
        commits.maybe.len(),
        commits.maybe.intersection(&stored).count(),
        requests.len(),
        faults.len(),
        verdict.excused,
        verdict.excused_lead.as_millis(),
    );
    if !problems.is_empty() {
        let logs: Vec<String> = relays
            .iter()
            .map(|r| format!("--- relay {} (last lines)\n{}", r.name(), r.log_tail(15)))
            .collect();
        panic!(
            "{}\n{}\n--- postgres (last lines)\n{}",
            problems.join("\n"),
            logs.join("\n"),
            rig.cluster.log_tail(10)
        );
    }
}
