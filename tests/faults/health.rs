//! `/readyz` tells the truth: 503 with the reason while the database is unreachable, or while
//! events wait and routing has made no progress for 30 s; 200 again once that is over.

use std::time::Duration;

use outbox_testkit::wait_until;

use crate::relay::RelayProcess;
use crate::rig::{RECOVERY, Rig, one_at_a_time};

/// How long routing may be stuck before `/readyz` says so: 30 s, plus a margin for the relay to
/// notice.
const STUCK: Duration = Duration::from_secs(30 + 30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_with_a_reason_while_the_database_is_down() {
    let _serial = one_at_a_time().await;
    let rig = Rig::new().await;
    let relay = rig.relay("a").await;
    ready(&relay, "before the crash").await;

    rig.crash_postgres();
    let body = not_ready(&relay, RECOVERY, "with the database down").await;
    assert!(!body.trim().is_empty(), "/readyz gave no reason");

    rig.start_postgres();
    ready(&relay, "once the database is back").await;
}

/// A session holding the routing cursor's row lock (as a relay stuck mid-routing would) stops all
/// routing while events wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_while_events_wait_and_routing_is_stuck() {
    let _serial = one_at_a_time().await;
    let rig = Rig::new().await;
    let relay = rig.relay("a").await;
    let producer = rig.client().await;
    emit(&producer, "before").await;
    rig.receiver.wait_for(1, RECOVERY).await;
    ready(&relay, "while events flow").await;

    let stuck = rig.client().await;
    stuck
        .batch_execute("BEGIN; SELECT 1 FROM outbox.router WHERE id = 1 FOR UPDATE;")
        .await
        .expect("locking the routing cursor");
    emit(&producer, "waiting").await;
    let body = not_ready(&relay, STUCK, "while routing is stuck").await;
    assert!(!body.trim().is_empty(), "/readyz gave no reason");
    assert!(
        !rig.receiver.requests().iter().any(|r| r.path == "/waiting"),
        "the event was routed although routing was locked: the test locked the wrong thing"
    );

    stuck.batch_execute("ROLLBACK").await.expect("ROLLBACK");
    wait_until(RECOVERY, "the waiting event delivered", || async {
        rig.receiver
            .requests()
            .iter()
            .any(|r| r.path == "/waiting" && r.answered)
            .then_some(())
    })
    .await;
    ready(&relay, "once routing moves again").await;
}

async fn emit(client: &tokio_postgres::Client, key: &str) {
    client
        .execute(
            "SELECT outbox.emit('order.created', 'order', $1, '{}'::jsonb)",
            &[&key],
        )
        .await
        .expect("emitting an event");
}

async fn ready(relay: &RelayProcess, when: &str) {
    wait_until(RECOVERY, &format!("/readyz 200 {when}"), || async {
        let (status, _) = relay.get("/readyz").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
}

/// Waits for /readyz to answer 503; returns its body.
async fn not_ready(relay: &RelayProcess, within: Duration, when: &str) -> String {
    wait_until(within, &format!("/readyz 503 {when}"), || async {
        let (status, body) = relay.get("/readyz").await.ok()?;
        (status == 503).then_some(body)
    })
    .await
}
