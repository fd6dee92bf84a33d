//! Producers: tasks that commit events (`outbox.emit`, one transaction each) while faults strike,
//! and remember which commits the database acknowledged.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

/// What the producers committed. Every event's `entity_id` is its producer's own key (`p<n>-<seq>`),
/// which is also the path it is delivered to.
#[derive(Debug, Default)]
pub struct Commits {
    /// Keys whose commit the database acknowledged: they must exist and be delivered.
    pub committed: BTreeSet<String>,
    /// Keys whose commit failed without an answer (the server crashed or the connection broke
    /// mid-statement): the event may or may not exist. Those that exist must be delivered.
    pub maybe: BTreeSet<String>,
}

pub struct Producers {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Commits>>,
}

impl Producers {
    /// `count` producers on `url`, each committing an `order.created` event every `pause`.
    pub fn start(url: &str, count: usize, pause: Duration) -> Producers {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..count)
            .map(|n| tokio::spawn(produce(url.to_string(), n, pause, stop.clone())))
            .collect();
        Producers { stop, tasks }
    }

    /// Stops producing; returns what was committed.
    pub async fn stop(self) -> Commits {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Commits::default();
        for task in self.tasks {
            let commits = task.await.expect("a producer task");
            all.committed.extend(commits.committed);
            all.maybe.extend(commits.maybe);
        }
        all
    }
}

async fn produce(url: String, n: usize, pause: Duration, stop: Arc<AtomicBool>) -> Commits {
    let mut commits = Commits::default();
    let mut client: Option<tokio_postgres::Client> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let Some(producer) = &client else {
            // The server is down or restarting: try again shortly.
            match tokio_postgres::connect(&url, NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    client = Some(c);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
            continue;
        };
        let key = format!("p{n}-{seq}");
        seq += 1;
        match producer
            .query_one(
                "SELECT outbox.emit('order.created', 'order', $1, '{}'::jsonb)",
                &[&key],
            )
            .await
        {
            Ok(_) => {
                commits.committed.insert(key);
            }
            Err(_) => {
                commits.maybe.insert(key);
                client = None;
            }
        }
        tokio::time::sleep(pause).await;
    }
    commits
}
