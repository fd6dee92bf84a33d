//! SIGTERM while Postgres is down: the relay stops claiming, lets what is in flight end within its
//! timeout, gives the results it cannot record a short grace, leaves them to their leases (logged)
//! and exits. Once Postgres is back, another relay sends those deliveries again after their leases;
//! they were in flight at the outage, so that is allowed.

use std::time::Duration;

use outbox_testkit::{Reply, wait_until};

use crate::producers::Producers;
use crate::rig::{RECOVERY, Rig, one_at_a_time};
use crate::settle::settle_and_judge;

/// How long the relay may take to exit after SIGTERM with the database down: in-flight attempts
/// end within the webhook's timeout (2 s), unrecorded results get a grace of at most about 10 s;
/// the rest is margin for a loaded machine.
const EXIT_BOUND: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_postgres_stopped_exits_within_a_bound() {
    let _serial = one_at_a_time().await;
    let rig = Rig::new().await;
    // Slow answers (within the 2 s timeout), so requests are in flight when Postgres goes away.
    rig.receiver
        .handle(|_| Reply::ok().delay(Duration::from_millis(1500)));
    let mut relay = rig.relay("a").await;
    let producers = Producers::start(&rig.url, 2, Duration::from_millis(5));
    wait_until(RECOVERY, "requests in flight", || async {
        let requests = rig.receiver.requests();
        (requests.iter().any(|r| r.answered) && requests.iter().any(|r| !r.answered)).then_some(())
    })
    .await;

    rig.crash_postgres();
    let commits = producers.stop().await;
    relay.terminate();
    let exited = relay.wait_exit(EXIT_BOUND).await;
    assert!(
        exited.is_some(),
        "the relay did not exit within {EXIT_BOUND:?} of SIGTERM while Postgres was down:\n{}",
        relay.log_tail(15)
    );

    rig.start_postgres();
    rig.receiver.handle(|_| Reply::ok());
    let relay = rig.relay("b").await;
    settle_and_judge(&rig, &commits, &[&relay]).await;
}
