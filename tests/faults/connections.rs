//! `pg_terminate_backend` of a relay's LISTEN connection, and of its pool's connections, again and
//! again while producers commit. Nothing crashes, so nothing may be repeated: a claim whose answer
//! was lost waits out its lease and goes out with the next attempt number, a result whose commit
//! was cut is written again on another connection. The LISTEN connection comes back each time.

use std::time::Duration;

use outbox_testkit::wait_until;

use crate::producers::Producers;
use crate::relay::sessions;
use crate::rig::{RECOVERY, Rig, one_at_a_time};
use crate::settle::settle_and_judge;

const LISTENER: &str = "outbox-relay listener";
const POOL: &str = "outbox-relay";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_listen_and_pool_connections_are_replaced_while_deliveries_flow() {
    let _serial = one_at_a_time().await;
    let rig = Rig::new().await;
    let relay = rig.relay("a").await;
    let producers = Producers::start(&rig.url, 2, Duration::from_millis(5));
    let admin = rig.client().await;
    let delivered = || {
        rig.receiver
            .requests()
            .iter()
            .filter(|r| r.answered)
            .count()
    };

    for round in 0..6 {
        // The LISTEN connection is back (after the previous round) before it is cut again.
        wait_until(
            RECOVERY,
            &format!("the LISTEN connection, round {round}"),
            || async { (sessions(&rig.url, LISTENER).await == 1).then_some(()) },
        )
        .await;
        let before = delivered();
        let mut names = vec![LISTENER];
        if round % 2 == 1 {
            names.push(POOL);
        }
        let cut: i64 = admin
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
                 FROM pg_stat_activity WHERE application_name = ANY($1)",
                &[&names],
            )
            .await
            .expect("terminating the relay's connections")
            .get(0);
        assert!(
            cut >= 1,
            "round {round}: no connection of {names:?} to terminate"
        );
        // Deliveries keep flowing.
        wait_until(
            RECOVERY,
            &format!("deliveries after round {round}"),
            || async { (delivered() >= before + 50).then_some(()) },
        )
        .await;
    }
    let commits = producers.stop().await;
    settle_and_judge(&rig, &commits, &[&relay]).await;

    wait_until(
        RECOVERY,
        "the LISTEN connection after the last round",
        || async { (sessions(&rig.url, LISTENER).await == 1).then_some(()) },
    )
    .await;
    // `outbox_listener_connected` (0/1) is being added to the relay with this suite: until it
    // exists, this assertion fails with "absent".
    let metrics = relay.metrics().await;
    assert_eq!(
        metrics.get("outbox_listener_connected"),
        Some(&1.0),
        "outbox_listener_connected should be 1 once the LISTEN connection is back (absent: the \
         gauge does not exist yet)"
    );
}
