//! `pg_ctl stop -m immediate` and a restart, five times, while a relay drains a backlog of 3,000
//! events. The relay survives each crash and reconnects; the claims it acted on must have been
//! durable, and the results it could not record are recorded once the server is back, or sent
//! again only if they were in flight at the crash.
//!
//! No producer commits meanwhile, on purpose: a synchronous commit writes out the WAL before it,
//! so the relay's own asynchronous commits would be made durable by a busy producer's, and a relay
//! that does not make its claims durable itself would go unnoticed.

use std::collections::BTreeSet;

use outbox_testkit::wait_until;

use crate::producers::Commits;
use crate::rig::{Dice, RECOVERY, Rig, one_at_a_time};
use crate::settle::settle_and_judge;

const BACKLOG: usize = 3000;
const CRASHES: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_immediate_stop_while_draining_a_backlog() {
    let _serial = one_at_a_time().await;
    let mut dice = Dice::new("postgres_immediate_stop_while_draining_a_backlog");
    let rig = Rig::new().await;
    rig.client()
        .await
        .execute(
            "SELECT outbox.emit('order.created', 'order', 'backlog-' || i, '{}'::jsonb)
             FROM generate_series(1, $1::int) i",
            &[&(BACKLOG as i32)],
        )
        .await
        .expect("committing the backlog");
    let backlog: BTreeSet<String> = (1..=BACKLOG).map(|i| format!("backlog-{i}")).collect();

    let relay = rig.relay("a").await;
    // Crash at evenly spaced points of the drain, so every crash strikes while it is busy.
    for crash in 1..=CRASHES {
        let progress = crash * BACKLOG / (CRASHES + 1);
        wait_until(
            RECOVERY,
            &format!("{progress} deliveries answered"),
            || async {
                let answered = rig
                    .receiver
                    .requests()
                    .iter()
                    .filter(|r| r.answered)
                    .count();
                (answered >= progress).then_some(())
            },
        )
        .await;
        rig.crash_postgres();
        tokio::time::sleep(dice.millis(0..1000)).await;
        rig.start_postgres();
    }
    let commits = Commits {
        committed: backlog,
        ..Commits::default()
    };
    settle_and_judge(&rig, &commits, &[&relay]).await;
}
