//! kill -9 of a relay at random moments while producers commit: alone, and beside one or two
//! other relays. Whatever it had claimed waits out its lease and is sent again by whichever relay
//! takes it over, with the same `webhook-id` and the next `webhook-attempt`.

use std::time::Duration;

use crate::producers::Producers;
use crate::rig::{Dice, RECOVERY, Rig, one_at_a_time};
use crate::settle::settle_and_judge;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_relay_in_a_loop_while_producers_commit() {
    let _serial = one_at_a_time().await;
    let mut dice = Dice::new("kill_9_of_the_relay_in_a_loop_while_producers_commit");
    let rig = Rig::new().await;
    let mut relay = rig.relay("a").await;
    let producers = Producers::start(&rig.url, 2, Duration::from_millis(5));
    for _ in 0..5 {
        tokio::time::sleep(dice.millis(500..2500)).await;
        rig.kill_and_restart(&mut relay).await;
    }
    more_deliveries(&rig).await;
    let commits = producers.stop().await;
    settle_and_judge(&rig, &commits, &[&relay]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_one_of_them_killed_repeatedly() {
    relays_with_one_killed_repeatedly("two_relays_one_of_them_killed_repeatedly", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_one_of_them_killed_repeatedly() {
    relays_with_one_killed_repeatedly("three_relays_one_of_them_killed_repeatedly", 3).await;
}

async fn relays_with_one_killed_repeatedly(test: &str, count: usize) {
    let _serial = one_at_a_time().await;
    let mut dice = Dice::new(test);
    let rig = Rig::new().await;
    let mut relays = Vec::new();
    for name in ["a", "b", "c"].into_iter().take(count) {
        relays.push(rig.relay(name).await);
    }
    let producers = Producers::start(&rig.url, 2, Duration::from_millis(5));
    for _ in 0..4 {
        tokio::time::sleep(dice.millis(500..2500)).await;
        rig.kill_and_restart(&mut relays[0]).await;
    }
    more_deliveries(&rig).await;
    let commits = producers.stop().await;
    settle_and_judge(&rig, &commits, &relays.iter().collect::<Vec<_>>()).await;
}

/// Lets the relays work a little after the last kill, with the producers still committing.
async fn more_deliveries(rig: &Rig) {
    let before = rig.receiver.count();
    rig.receiver.wait_for(before + 100, RECOVERY).await;
}
