//! The sender's tasks, one module each:
//!
//! - [`dispatch`]: claims due deliveries (one durable statement per round) and starts an attempt
//!   per claimed delivery, within `concurrency` and each webhook's `max_in_flight`;
//! - [`attempt`]: one attempt as a chain of typed steps, `Claimed → Prepared → Sent →`
//!   [`Outcome`], every step bounded by a [`Deadline`] derived from the lease;
//! - [`completer`]: records finished attempts in batches, never letting one row block the rest;
//! - [`rescuer`]: takes over deliveries whose relay stopped reporting before its lease ran out.

mod attempt;
mod completer;
mod deadline;
mod dispatch;
mod limit;
mod lookups;
mod outcome;
mod rescuer;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use deadpool_postgres::Pool;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::endpoint::Directory;
use crate::transport::Transport;

pub(crate) use deadline::Deadline;
pub(crate) use outcome::{Completion, Outcome};

/// Tuning of one relay's sender.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// Requests in flight at once, over all webhooks.
    pub concurrency: usize,
    /// Most deliveries claimed by one statement.
    pub claim_batch: usize,
    /// How often to look for due deliveries without a wake-up.
    pub poll_interval: Duration,
    /// How long a claim lives before another relay may take it over; extended per webhook to
    /// cover a whole attempt (see [`Deadline`]).
    pub lease: Duration,
    /// Statement timeout of relation queries.
    pub relation_timeout: Duration,
    /// On shutdown, how long results that cannot be recorded (the database is down) are retried
    /// before they are left to their leases.
    pub record_grace: Duration,
}

impl Default for SenderOptions {
    fn default() -> Self {
        SenderOptions {
            concurrency: 256,
            claim_batch: 500,
            poll_interval: Duration::from_millis(500),
            lease: Duration::from_secs(60),
            relation_timeout: Duration::from_secs(5),
            record_grace: Duration::from_secs(10),
        }
    }
}

/// The sender's database connections.
pub struct Pools {
    /// Claims, completions, rescues: the relay's own pool.
    pub relay: Pool,
    /// Related-record lookups only (read-only queries with a statement timeout), so a slow
    /// relation query never takes a connection that a claim or a completion needs.
    pub lookups: Pool,
}

/// Claims, sends and records deliveries until shut down.
pub struct Sender {
    shared: Arc<Shared>,
}

/// What the sender's tasks share.
pub(crate) struct Shared {
    pub pool: Pool,
    /// Connections for related-record lookups only, so slow relation queries never hold up
    /// claims and completions.
    pub lookups: Pool,
    /// The relation queries that cannot be loaded per batch (see [`crate::related::Batching`]).
    pub batching: crate::related::Batching,
    pub directory: Arc<ArcSwap<Directory>>,
    pub transport: Arc<dyn Transport>,
    pub options: SenderOptions,
    /// This relay's name in leases.
    pub owner: String,
    /// Part of every `webhook-id`.
    pub install_id: String,
    /// Wakes the dispatcher: new deliveries, released or rescued ones.
    pub wakeup: Arc<Notify>,
    /// Results of finished attempts not recorded yet.
    pub unrecorded: completer::Unrecorded,
}

/// Finished attempts waiting to be recorded, at most.
const COMPLETIONS_QUEUED: usize = 4096;

impl Sender {
    /// `owner` names this relay in leases (and in the attempt log when its lease expires);
    /// `install_id` comes from `outbox.router` and goes into every `webhook-id`.
    pub fn new(
        pools: Pools,
        directory: Arc<ArcSwap<Directory>>,
        transport: Arc<dyn Transport>,
        options: SenderOptions,
        owner: String,
        install_id: String,
        wakeup: Arc<Notify>,
    ) -> Sender {
        Sender {
            shared: Arc::new(Shared {
                pool: pools.relay,
                lookups: pools.lookups,
                batching: crate::related::Batching::default(),
                directory,
                transport,
                options,
                owner,
                install_id,
                wakeup,
                unrecorded: completer::Unrecorded::default(),
            }),
        }
    }

    /// Runs until `shutdown`; then stops claiming, lets in-flight attempts finish (each bounded by
    /// its deadline), records them and returns. Results that still cannot be recorded after
    /// [`SenderOptions::record_grace`] (the database is down) are logged and left to their
    /// leases: another relay, or this one after a restart, attempts them again.
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = self.shared;
        // Bounded: if recording falls behind sending, attempts wait (holding their slot) instead
        // of results piling up in memory.
        let (done_tx, done_rx) = mpsc::channel::<Completion>(COMPLETIONS_QUEUED);
        let mut completer = tokio::spawn(completer::Completer::new(shared.clone()).run(done_rx));
        let rescuer_stop = CancellationToken::new();
        let mut rescuer = tokio::spawn(rescuer::run(shared.clone(), rescuer_stop.clone()));

        dispatch::run(shared.clone(), done_tx, shutdown).await;

        rescuer_stop.cancel();
        // The dispatcher dropped its sender after every attempt finished: the completer drains
        // what is left and ends.
        if tokio::time::timeout(shared.options.record_grace, &mut completer)
            .await
            .is_err()
        {
            completer.abort();
            let left = shared.unrecorded.snapshot();
            tracing::warn!(
                results = left.results,
                succeeded = left.succeeded,
                "stopping without recording some attempt results (the database is unreachable); their deliveries are attempted again, with the same webhook-id, once their leases expire"
            );
        }
        if tokio::time::timeout(Duration::from_secs(2), &mut rescuer)
            .await
            .is_err()
        {
            rescuer.abort();
        }
    }
}
